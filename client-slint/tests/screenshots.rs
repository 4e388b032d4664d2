//! Renders each main screen of the real UI headless (software renderer, no display) and
//! checks the pictures are not blank. With `HAVEN_UPDATE_SCREENSHOTS=1` the PNGs are written
//! to client-slint/docs/screenshots/ (referenced from the README); otherwise to a temp dir.

use std::path::PathBuf;

use chrono::{Duration, Utc};
use haven_client::core::ChatMessage;
use haven_client::core::{
    ChannelTree, ClientConfig, MessageStore, PermissionSnapshot, SessionManager,
};
use haven_client::ui::controller::AppController;
use haven_client::ui::headless::HeadlessWindow;
use haven_client::ui::view::{AppModel, Me, Screen};
use haven_client::ui::{AppWindow, BannerKind};
use haven_client::voice::state::VoiceState;
use haven_proto::client::VoiceParticipant;
use haven_supabase::{ChannelGroup, ChannelKind, ChannelSummary, Community};
use slint::ComponentHandle;
use uuid::Uuid;

fn channel(
    community: Uuid,
    name: &str,
    kind: ChannelKind,
    group: Option<Uuid>,
    topic: Option<&str>,
) -> ChannelSummary {
    ChannelSummary {
        id: Uuid::new_v4(),
        community_id: community,
        name: name.into(),
        topic: topic.map(str::to_string),
        kind,
        position: 0,
        group_id: group,
        can_send: true,
        can_connect: true,
        can_speak: true,
    }
}

struct Demo {
    general: Uuid,
    lounge: Uuid,
}

fn seed(m: &mut AppModel) -> Demo {
    let me = Uuid::new_v4();
    let alice = Uuid::new_v4();
    let bob = Uuid::new_v4();
    let now = Utc::now();
    let community = |name: &str| Community {
        id: Uuid::new_v4(),
        name: name.into(),
        description: None,
        created_by: None,
        created_at: now,
        updated_at: now,
    };
    let demo = community("Haven Demo");
    m.communities = vec![
        demo.clone(),
        community("Book Club"),
        community("Rust Gamers"),
    ];
    m.community = Some(demo.id);
    let games = ChannelGroup {
        id: Uuid::new_v4(),
        community_id: demo.id,
        name: "Games".into(),
        position: 1,
    };
    let general = channel(
        demo.id,
        "general",
        ChannelKind::Text,
        None,
        Some("Say hi! Be kind."),
    );
    let mods = channel(demo.id, "mods-only", ChannelKind::Text, None, None);
    let lounge = channel(
        demo.id,
        "Lounge",
        ChannelKind::Voice,
        None,
        Some("Hang out and talk"),
    );
    let stage = channel(demo.id, "Stage", ChannelKind::Voice, None, None);
    let lfg = channel(
        demo.id,
        "looking-for-group",
        ChannelKind::Text,
        Some(games.id),
        None,
    );
    let raid = channel(
        demo.id,
        "Raid night",
        ChannelKind::Voice,
        Some(games.id),
        None,
    );
    let ids = Demo {
        general: general.id,
        lounge: lounge.id,
    };
    m.tree = ChannelTree::build(
        vec![general.clone(), mods, lounge.clone(), stage, lfg, raid],
        vec![games],
    );
    let all_keys = [
        "manage_invites",
        "manage_messages",
        "send_messages",
        "connect_voice",
        "speak",
    ];
    m.perms = PermissionSnapshot::new(
        demo.id,
        all_keys.iter().map(|k| k.to_string()).collect(),
        m.tree.channels(),
    );
    m.me = Some(Me {
        id: me,
        name: "demo".into(),
    });
    m.screen = Screen::Main;
    m.channel = Some(general.id);

    let mut store = MessageStore::new(general.id);
    let lines = [
        (alice, "alice", "Welcome to Haven! Voice is in the Lounge whenever you want to talk."),
        (bob, "bob", "Hi all, just set up my mic."),
        (me, "demo", "Great to see you here. The screenshots are rendered headless by the software renderer."),
        (alice, "alice", "Push-to-talk is in Settings, and so is noise suppression."),
        (bob, "bob", "Does anyone want to try the voice channel at 8?"),
        (me, "demo", "Count me in!"),
    ];
    let mut first = None;
    for (i, (author, name, text)) in lines.iter().enumerate() {
        let msg = ChatMessage {
            id: Uuid::new_v4(),
            channel_id: general.id,
            author_id: Some(*author),
            author_name: name.to_string(),
            content: text.to_string(),
            reply_to: if i == 5 { first } else { None },
            created_at: now - Duration::minutes(30 - 4 * i as i64),
            edited_at: if i == 3 { Some(now) } else { None },
        };
        if i == 4 {
            first = Some(msg.id);
        }
        store.upsert(msg);
    }
    m.store = Some(store);

    let mut voice = VoiceState::new(me.into());
    voice.joined(lounge.id, true);
    let person = |id: Uuid, name: &str, muted: bool| VoiceParticipant {
        user_id: id.into(),
        display_name: name.into(),
        muted,
        deafened: false,
        server_muted: false,
        speaking: false,
    };
    voice.apply_voice_state(
        lounge.id,
        &[
            person(me, "demo", false),
            person(alice, "alice", false),
            person(bob, "bob", true),
        ],
    );
    voice.set_speaking(alice.into(), true);
    voice.set_self_speaking(true);
    voice.set_volume(bob.into(), 1.4);
    m.voice = voice;
    m.input_level = 0.62;
    m.input_devices = vec!["Built-in Microphone".into(), "USB Headset".into()];
    m.output_devices = vec!["Built-in Speakers".into(), "USB Headset".into()];
    m.settings.input_device = Some("USB Headset".into());
    ids
}

fn out_dir() -> PathBuf {
    if std::env::var_os("HAVEN_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        std::env::temp_dir().join(format!("haven-screenshots-{}", std::process::id()))
    }
}

fn save(headless: &HeadlessWindow, name: &str, scale: f32) -> PathBuf {
    let (w, h, pixels) = headless.render(1200, 760, scale);
    // Not blank: many distinct colours.
    let mut colours: Vec<(u8, u8, u8)> =
        pixels.iter().step_by(97).map(|p| (p.r, p.g, p.b)).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 20, "{name}: only {} colours", colours.len());
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    let file = std::fs::File::create(&path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    let bytes: Vec<u8> = pixels.iter().flat_map(|p| [p.r, p.g, p.b]).collect();
    writer.write_image_data(&bytes).unwrap();
    path
}

#[test]
fn render_every_main_screen() {
    let headless = HeadlessWindow::install().expect("headless platform");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = ClientConfig::new("http://127.0.0.1:9", "anon").unwrap();
    config.config_dir =
        std::env::temp_dir().join(format!("haven-shots-config-{}", std::process::id()));
    let session = SessionManager::new(config.supabase().unwrap(), None);
    let window = AppWindow::new().unwrap();
    let controller = AppController::new(&window, session, config, runtime.handle().clone());
    window.show().unwrap();
    let model = controller.model();

    // 1. Sign-in.
    window.set_email("demo@haven.local".into());
    controller.apply_pending();
    save(&headless, "01-sign-in", 1.0);

    // 2. Community + chat.
    let ids = seed(&mut model.lock().unwrap());
    window.set_composer("Sounds good, see you there".into());
    let _ = controller.apply_pending() || {
        view_render(&controller);
        true
    };
    save(&headless, "02-community-chat", 1.0);
    save(&headless, "06-community-chat-200", 2.0);

    // 3. Voice channel with roster and speaking.
    model.lock().unwrap().channel = Some(ids.lounge);
    view_render(&controller);
    save(&headless, "03-voice-channel", 1.0);

    // 4. Settings.
    model.lock().unwrap().screen = Screen::Settings;
    view_render(&controller);
    save(&headless, "04-settings", 1.0);

    // 5. Error banner.
    {
        let mut m = model.lock().unwrap();
        m.screen = Screen::Main;
        m.channel = Some(ids.general);
        m.banner = Some((
            BannerKind::Expired,
            "Your session has expired. Please sign in again.".into(),
        ));
    }
    view_render(&controller);
    save(&headless, "05-error-banner", 1.0);
    println!("screenshots in {}", out_dir().display());
}

/// Force a render (the model was changed directly, not through the controller).
fn view_render(controller: &AppController) {
    controller.mark_changed();
    controller.apply_pending();
}
