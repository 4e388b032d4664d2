//! UI tests with Slint's testing backend: the real window and controller, driven the way a
//! person would (type, click, press keys), checked through what the window shows.
//!
//! One test function on purpose: the Slint platform is per process and its UI lives on one
//! thread. The signed-in flows use the real local stack (HAVEN_STACK_FILE, as `cargo xtask
//! test` sets it).

use std::time::{Duration, Instant};

use haven_client::core::{ClientConfig, SessionManager};
use haven_client::ui::controller::AppController;
use haven_client::ui::view::Screen;
use haven_client::ui::{AppWindow, BannerKind};
use haven_client::voice::state::VoiceState;
use haven_devstack::StackInfo;
use i_slint_backend_testing::{AccessibleRole, ElementHandle};
use slint::platform::WindowEvent;
use slint::{ComponentHandle, Model};
use uuid::Uuid;

/// Activate the button labelled `label` (labels of plain text are skipped).
fn click(window: &AppWindow, label: &str) {
    let element = ElementHandle::find_by_accessible_label(window, label)
        .find(|e| e.accessible_role() == Some(AccessibleRole::Button))
        .unwrap_or_else(|| panic!("no button labelled {label:?}"));
    element.invoke_accessible_default_action();
}

/// Type into the text input labelled `label`.
fn type_into(window: &AppWindow, label: &str, text: &str) {
    let element = ElementHandle::find_by_accessible_label(window, label)
        .find(|e| e.accessible_role() == Some(AccessibleRole::TextInput))
        .unwrap_or_else(|| panic!("no input labelled {label:?}"));
    element.set_accessible_value(text);
}

/// Pump the controller until `done` or the timeout (network work runs on tokio threads).
fn wait_for(
    controller: &AppController,
    window: &AppWindow,
    what: &str,
    done: impl Fn(&AppWindow) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        controller.apply_pending();
        i_slint_backend_testing::mock_elapsed_time(Duration::from_millis(16));
        if done(window) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn press(window: &AppWindow, key: &str, down: bool) {
    let text: slint::SharedString = key.into();
    window.window().dispatch_event(if down {
        WindowEvent::KeyPressed { text }
    } else {
        WindowEvent::KeyReleased { text }
    });
}

fn new_app(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    anon: &str,
) -> (AppWindow, std::rc::Rc<AppController>) {
    let mut config = ClientConfig::new(url, anon).unwrap();
    config.config_dir = std::env::temp_dir().join(format!("haven-ui-test-{}", Uuid::new_v4()));
    let session = SessionManager::new(config.supabase().unwrap(), None);
    let window = AppWindow::new().unwrap();
    let controller = AppController::new(&window, session, config, runtime.handle().clone());
    window.show().unwrap();
    controller.apply_pending();
    (window, controller)
}

#[test]
fn main_flows() {
    i_slint_backend_testing::init_integration_test_with_mock_time();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stack = StackInfo::from_env(&haven_devstack::workspace_root())
        .expect("a running local stack (cargo xtask test)");
    let url = stack.api_url.expect("api url");
    let anon = stack.anon_key.expect("anon key");

    // --- Wrong password: the error shows under the form. ---------------------------------------
    let (window, controller) = new_app(&runtime, &url, &anon);
    assert_eq!(window.get_screen(), "signin");
    type_into(&window, "Email", "demo@haven.local");
    type_into(&window, "Password", "not-the-password");
    click(&window, "Sign in");
    wait_for(&controller, &window, "the sign-in error", |w| {
        !w.get_auth_error().is_empty()
    });
    assert_eq!(window.get_auth_error(), "wrong email or password");
    assert_eq!(window.get_screen(), "signin");

    // --- Sign in as demo: community, channels, history. ----------------------------------------
    type_into(&window, "Password", "haven-demo-password");
    click(&window, "Sign in");
    wait_for(&controller, &window, "the chat", |w| {
        w.get_screen() == "main" && w.get_channel_name() == "general"
    });
    assert_eq!(window.get_community_name(), "Haven Demo");
    assert!(window.get_can_invite(), "the owner may invite");
    let channels: Vec<String> = window
        .get_channels()
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    for name in ["general", "mods-only", "Lounge", "Stage"] {
        assert!(channels.iter().any(|c| c == name), "{name} in {channels:?}");
    }
    assert!(window.get_can_send());

    // --- Send a message with the composer (Enter), then edit and delete it. --------------------
    let text = format!("hello from the UI test {}", Uuid::new_v4().simple());
    type_into(&window, "Message", &text);
    click(&window, "Send");
    wait_for(&controller, &window, "my message", |w| {
        w.get_messages().iter().any(|m| m.content == text.as_str())
    });
    assert_eq!(
        window.get_composer(),
        "",
        "the composer clears after sending"
    );
    let mine = window
        .get_messages()
        .iter()
        .find(|m| m.content == text.as_str())
        .unwrap();
    assert!(mine.mine && mine.can_edit && mine.can_delete);
    window.invoke_start_edit(mine.id.clone());
    wait_for(&controller, &window, "edit mode", |w| {
        w.get_compose_context() == "Editing your message"
    });
    assert_eq!(
        window.get_composer(),
        text.as_str(),
        "editing puts the text back in the composer"
    );
    let edited = format!("{text} (edited in the UI)");
    type_into(&window, "Message", &edited);
    click(&window, "Send");
    wait_for(&controller, &window, "the edit", |w| {
        w.get_messages()
            .iter()
            .any(|m| m.content == edited.as_str() && m.edited)
    });
    window.invoke_delete_message(mine.id.clone());
    wait_for(&controller, &window, "the delete", |w| {
        !w.get_messages().iter().any(|m| m.id == mine.id)
    });

    // --- Open a voice channel: roster view with a join button. ---------------------------------
    let lounge = window
        .get_channels()
        .iter()
        .find(|c| c.name == "Lounge")
        .unwrap();
    click(&window, "Lounge");
    wait_for(&controller, &window, "the voice channel", |w| {
        w.get_channel_is_voice()
    });
    assert_eq!(window.get_channel_id(), lounge.id);
    assert!(window.get_can_join_voice());
    // No signaling configured here: joining explains why it cannot work, never hangs.
    click(&window, "Join voice");
    wait_for(&controller, &window, "the voice error banner", |w| {
        w.get_banner_kind() == BannerKind::Error
    });
    assert!(window.get_banner_text().contains("signaling"));
    click(&window, "Dismiss");
    wait_for(&controller, &window, "the banner to go", |w| {
        w.get_banner_kind() == BannerKind::None
    });

    // --- In voice (state as signaling would set it): mute, deafen, push-to-talk, leave. -------
    {
        let model = controller.model();
        let mut m = model.lock().unwrap();
        let me = m.me.as_ref().unwrap().id;
        let lounge_id = Uuid::parse_str(&lounge.id).unwrap();
        m.voice = VoiceState::new(me.into());
        m.voice.joined(lounge_id, true);
        m.settings.push_to_talk = true;
        m.voice
            .set_input_mode(haven_client::voice::InputMode::PushToTalk);
    }
    controller.mark_changed();
    wait_for(&controller, &window, "the voice bar", |w| w.get_in_voice());
    assert_eq!(window.get_voice_status(), "Voice connected");
    click(&window, "Mute");
    wait_for(&controller, &window, "mute", |w| w.get_muted());
    click(&window, "Deafen");
    wait_for(&controller, &window, "deafen", |w| {
        w.get_deafened() && w.get_muted()
    });
    click(&window, "Undeafen");
    wait_for(&controller, &window, "undeafen restores mute", |w| {
        !w.get_deafened() && w.get_muted()
    });
    click(&window, "Unmute");
    wait_for(&controller, &window, "unmute", |w| !w.get_muted());
    // Keyboard focus inside the main screen (a real click on the channel row gives it).
    ElementHandle::find_by_accessible_label(&window, "Lounge")
        .find(|e| e.accessible_role() == Some(AccessibleRole::Button))
        .unwrap()
        .mock_single_click(slint::platform::PointerEventButton::Left);
    controller.apply_pending();
    press(&window, "`", true);
    wait_for(&controller, &window, "push-to-talk held", |w| {
        w.get_ptt_held()
    });
    assert!(controller.model().lock().unwrap().voice.transmitting());
    press(&window, "`", false);
    wait_for(&controller, &window, "push-to-talk released", |w| {
        !w.get_ptt_held()
    });
    assert!(!controller.model().lock().unwrap().voice.transmitting());
    click(&window, "Leave voice");
    wait_for(&controller, &window, "leaving voice", |w| !w.get_in_voice());

    // --- Settings open and close; choices persist in the model. --------------------------------
    controller.set_devices(
        vec!["Mic A".into(), "Mic B".into()],
        vec!["Speakers".into()],
    );
    click(&window, "Settings");
    wait_for(&controller, &window, "settings", |w| {
        w.get_screen() == "settings"
    });
    assert_eq!(
        window.get_input_devices().row_count(),
        3,
        "system default + 2"
    );
    window.set_input_index(2);
    window.set_noise_suppression(false);
    window.invoke_apply_settings();
    click(&window, "Close");
    wait_for(&controller, &window, "main again", |w| {
        w.get_screen() == "main"
    });
    {
        let model = controller.model();
        let m = model.lock().unwrap();
        assert_eq!(m.settings.input_device.as_deref(), Some("Mic B"));
        assert!(!m.settings.noise_suppression);
        assert_eq!(m.screen, Screen::Main);
    }

    // --- Keyboard: Tab moves from Lounge to the next channel, Enter opens it. -------------------
    ElementHandle::find_by_accessible_label(&window, "Lounge")
        .find(|e| e.accessible_role() == Some(AccessibleRole::Button))
        .unwrap()
        .mock_single_click(slint::platform::PointerEventButton::Left);
    wait_for(&controller, &window, "Lounge", |w| {
        w.get_channel_name() == "Lounge"
    });
    press(&window, "\t", true);
    press(&window, "\t", false);
    press(&window, "\n", true);
    press(&window, "\n", false);
    wait_for(
        &controller,
        &window,
        "Stage opened from the keyboard",
        |w| w.get_channel_name() == "Stage",
    );

    // --- Sign out returns to the sign-in screen. -----------------------------------------------
    click(&window, "Sign out");
    wait_for(&controller, &window, "the sign-in screen", |w| {
        w.get_screen() == "signin"
    });

    // --- Sign up a new account, create a community, make an invite. ----------------------------
    click(&window, "Create an account");
    let email = format!("ui-{}@client-test.local", Uuid::new_v4().simple());
    type_into(&window, "Email", &email);
    type_into(&window, "Password", "ui-test-password");
    type_into(&window, "Username", "ui_tester");
    click(&window, "Create account");
    wait_for(&controller, &window, "the signed-up user", |w| {
        w.get_screen() == "main" && w.get_my_name() == "ui_tester"
    });
    assert_eq!(
        window.get_communities().row_count(),
        0,
        "a new account belongs to no community"
    );
    let name = format!("UI test {}", &Uuid::new_v4().simple().to_string()[..6]);
    click(&window, "Create a community");
    wait_for(&controller, &window, "the dialog", |w| {
        w.get_dialog() == "create-community"
    });
    type_into(&window, "Community name", &name);
    click(&window, "Create");
    wait_for(&controller, &window, "the new community", |w| {
        w.get_community_name() == name.as_str() && w.get_channel_name() == "general"
    });
    click(&window, "Invite");
    wait_for(&controller, &window, "the invite code", |w| {
        w.get_dialog() == "show-invite" && w.get_dialog_text().len() == 10
    });
    click(&window, "Done");
    // The owner cannot leave: the server says so and the banner shows it.
    click(&window, "Leave community");
    wait_for(&controller, &window, "the refusal", |w| {
        w.get_banner_kind() == BannerKind::Error
    });
    click(&window, "Sign out");
    wait_for(&controller, &window, "signed out", |w| {
        w.get_screen() == "signin"
    });
    drop(controller);
    drop(window);

    // --- Offline: a server that is not there shows the offline banner-free form error. ---------
    let (window, controller) = new_app(&runtime, "http://127.0.0.1:9", "anon");
    type_into(&window, "Email", "someone@example.com");
    type_into(&window, "Password", "whatever");
    click(&window, "Sign in");
    wait_for(&controller, &window, "the offline banner", |w| {
        w.get_banner_kind() == BannerKind::Offline
    });
    assert!(!window.get_busy(), "the form is usable again");
}
