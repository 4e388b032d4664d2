//! Connects the window's callbacks to the core. Each callback starts an async core
//! operation on the tokio runtime; the operation updates the shared [`AppModel`] and pokes
//! the UI thread, which re-renders on its next [`AppController::apply_pending`] (a Slint
//! timer in the app, a direct call in tests). The UI thread never waits on the network.

use std::rc::Rc;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use haven_supabase::{ChannelKind, InviteExpiry};
use slint::ComponentHandle;
use tokio::runtime::Handle;
use uuid::Uuid;

use crate::core::channels::load_channel_tree;
use crate::core::messages::{LiveMessageEvent, PAGE_SIZE};
use crate::core::{
    ClientConfig, Communities, CoreError, MessageStore, Messages, PermissionSnapshot,
    SessionManager, Settings,
};
use crate::signaling::socket::{self, SignalingCommand, SignalingHandle};
use crate::signaling::SignalingEvent;
use crate::ui::view::{self, AppModel, Compose, Me, Screen};
use crate::ui::{AppWindow, BannerKind};
use crate::voice::session::{ActiveCall, CallCommand, PendingCall, SessionReport};
use crate::voice::state::{left_reason_text, InputMode, VoiceState};
use crate::voice::CallEvent;

/// The UI's controller. Create it on the UI thread, after the window.
pub struct AppController {
    model: Arc<Mutex<AppModel>>,
    session: SessionManager,
    config: ClientConfig,
    runtime: Handle,
    changed: Sender<()>,
    pending: Receiver<()>,
    window: slint::Weak<AppWindow>,
    signaling: Arc<Mutex<Option<SignalingHandle>>>,
    calls: Arc<Mutex<Calls>>,
}

fn lock(model: &Arc<Mutex<AppModel>>) -> MutexGuard<'_, AppModel> {
    // A panic while holding the lock leaves the model usable: take it anyway.
    model
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What an async operation needs, cloneable into tasks.
#[derive(Clone)]
struct Ctx {
    model: Arc<Mutex<AppModel>>,
    session: SessionManager,
    config: ClientConfig,
    changed: Sender<()>,
    signaling: Arc<Mutex<Option<SignalingHandle>>>,
    runtime: Handle,
    calls: Arc<Mutex<Calls>>,
}

/// The call being set up (offer sent) and the call running.
#[derive(Default)]
struct Calls {
    pending: Option<PendingCall>,
    active: Option<ActiveCall>,
}

impl Ctx {
    fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hang up whatever call there is.
    fn hang_up(&self) {
        let mut calls = self.calls();
        calls.pending = None;
        calls.active = None;
    }

    /// Tell the running call what the voice model now says (transmit, deafen).
    fn sync_call(&self) {
        let (transmit, deafened) = {
            let m = lock(&self.model);
            (m.voice.transmitting(), m.voice.deafened())
        };
        if let Some(active) = self.calls().active.as_ref() {
            active.send(CallCommand::Transmit(transmit));
            active.send(CallCommand::Deafen(deafened));
        }
    }

    /// Build an offer for `channel` and ask signaling to join with it.
    fn offer_and_join(&self, channel: Uuid) {
        let Some(url) = self.config.signaling_url.clone() else {
            return;
        };
        let (me, can_speak, noise) = {
            let m = lock(&self.model);
            (
                m.me.as_ref().map(|me| me.id),
                m.perms.can_speak_in(channel),
                m.settings.noise_suppression,
            )
        };
        let Some(me) = me else { return };
        self.hang_up();
        match PendingCall::prepare(me.into(), &url, can_speak, noise) {
            Ok((pending, sdp)) => {
                self.calls().pending = Some(pending);
                self.update(|m| m.voice.joining(channel));
                self.signaling(SignalingCommand::Join {
                    channel_id: channel,
                    sdp,
                });
            }
            Err(e) => self.update(|m| {
                m.voice.refused(channel, e.to_string());
                m.banner = Some((BannerKind::Error, format!("Could not start voice: {e}")));
            }),
        }
    }

    /// Signaling accepted the join: run the call.
    fn start_call(&self, answer: &str) {
        let Some(pending) = self.calls().pending.take() else {
            return;
        };
        let (input, output) = {
            let m = lock(&self.model);
            (
                m.settings.input_device.clone(),
                m.settings.output_device.clone(),
            )
        };
        let ctx = self.clone();
        let report = move |r: SessionReport| match r {
            SessionReport::Level(level) => ctx.update(|m| {
                m.input_level = level.meter;
                m.voice.set_self_speaking(level.speaking);
            }),
            SessionReport::Event(CallEvent::Speaking { user, on }) => {
                ctx.update(|m| m.voice.set_speaking(user, on))
            }
            SessionReport::Event(CallEvent::Disconnected) => {
                ctx.signaling(SignalingCommand::MediaFailed)
            }
            SessionReport::Event(_) => {}
            SessionReport::Failed(e) => {
                ctx.update(|m| m.banner = Some((BannerKind::Error, format!("Voice failed: {e}"))))
            }
        };
        match pending.start(answer, input, output, report) {
            Ok(active) => self.calls().active = Some(active),
            Err(e) => {
                self.update(|m| m.banner = Some((BannerKind::Error, format!("Voice failed: {e}"))))
            }
        }
        self.sync_call();
    }
    fn update(&self, f: impl FnOnce(&mut AppModel)) {
        f(&mut lock(&self.model));
        let _ = self.changed.send(());
    }

    fn fail(&self, e: CoreError) {
        tracing::warn!("{e}");
        self.update(|m| {
            m.busy = false;
            m.show_error(&e);
        });
    }

    fn signaling(&self, command: SignalingCommand) {
        if let Some(h) = self
            .signaling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            h.send(command);
        }
    }
}

impl AppController {
    /// Wire `window` to the core. `runtime` runs the network work.
    pub fn new(
        window: &AppWindow,
        session: SessionManager,
        config: ClientConfig,
        runtime: Handle,
    ) -> Rc<Self> {
        let (changed, pending) = channel();
        let settings = Settings::load(&config.config_dir);
        let model = AppModel {
            settings,
            ..AppModel::default()
        };
        let this = Rc::new(Self {
            model: Arc::new(Mutex::new(model)),
            session,
            config,
            runtime,
            changed,
            pending,
            window: window.as_weak(),
            signaling: Arc::new(Mutex::new(None)),
            calls: Arc::new(Mutex::new(Calls::default())),
        });
        this.wire(window);
        let _ = this.changed.send(());
        this
    }

    /// The shared model (tests and the screenshot tool read or seed it).
    pub fn model(&self) -> Arc<Mutex<AppModel>> {
        self.model.clone()
    }

    /// Re-render if anything changed since the last call; returns whether it did.
    pub fn apply_pending(&self) -> bool {
        let mut any = false;
        while self.pending.try_recv().is_ok() {
            any = true;
        }
        if any {
            if let Some(w) = self.window.upgrade() {
                view::render(&mut lock(&self.model), &w);
            }
        }
        any
    }

    /// Note that the model was changed directly (tests, screenshots): render on the next
    /// `apply_pending`.
    pub fn mark_changed(&self) {
        let _ = self.changed.send(());
    }

    /// Set the audio device lists shown in settings.
    pub fn set_devices(&self, inputs: Vec<String>, outputs: Vec<String>) {
        self.ctx().update(|m| {
            m.input_devices = inputs;
            m.output_devices = outputs;
        });
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            model: self.model.clone(),
            session: self.session.clone(),
            config: self.config.clone(),
            changed: self.changed.clone(),
            signaling: self.signaling.clone(),
            runtime: self.runtime.clone(),
            calls: self.calls.clone(),
        }
    }

    /// Resume a saved session, if there is one.
    pub fn restore_session(&self) {
        let ctx = self.ctx();
        self.runtime.spawn(async move {
            match ctx.session.restore().await {
                Ok(Some(_)) => after_sign_in(ctx).await,
                Ok(None) => {}
                Err(e) => ctx.fail(e),
            }
        });
    }

    /// Sign in (the `--demo` flag uses this with the demo account).
    pub fn sign_in(&self, email: String, password: String) {
        let ctx = self.ctx();
        ctx.update(|m| {
            m.busy = true;
            m.auth_error.clear();
        });
        self.runtime.spawn(async move {
            match ctx.session.sign_in(&email, &password).await {
                Ok(_) => after_sign_in(ctx).await,
                Err(e) => ctx.fail(e),
            }
        });
    }

    fn wire(self: &Rc<Self>, w: &AppWindow) {
        let this = Rc::downgrade(self);
        let with = move |f: &dyn Fn(&AppController)| {
            if let Some(c) = this.upgrade() {
                f(&c);
            }
        };
        macro_rules! on {
            ($setter:ident, |$c:ident $(, $arg:ident : $t:ty)*| $body:expr) => {{
                let with = with.clone();
                w.$setter(move |$($arg: $t),*| with(&|$c: &AppController| { $(let $arg = $arg.clone();)* $body; }));
            }};
        }
        on!(
            on_sign_in,
            |c, email: slint::SharedString, password: slint::SharedString| c
                .sign_in(email.to_string(), password.to_string())
        );
        on!(
            on_sign_up,
            |c,
             email: slint::SharedString,
             password: slint::SharedString,
             username: slint::SharedString| {
                let ctx = c.ctx();
                ctx.update(|m| {
                    m.busy = true;
                    m.auth_error.clear();
                });
                let (email, password, username) = (
                    email.to_string(),
                    password.to_string(),
                    username.to_string(),
                );
                c.runtime.spawn(async move {
                    let name = username.trim();
                    match ctx
                        .session
                        .sign_up(&email, &password, (!name.is_empty()).then_some(name))
                        .await
                    {
                        Ok(_) => after_sign_in(ctx).await,
                        Err(e) => ctx.fail(e),
                    }
                })
            }
        );
        on!(on_sign_out, |c| {
            let ctx = c.ctx();
            ctx.signaling(SignalingCommand::Stop);
            ctx.hang_up();
            c.runtime.spawn(async move {
                let result = ctx.session.sign_out().await;
                ctx.update(|m| m.reset_to_sign_in());
                if let Err(e) = result {
                    ctx.fail(e);
                }
            })
        });
        on!(on_sign_in_again, |c| {
            let ctx = c.ctx();
            ctx.signaling(SignalingCommand::Stop);
            c.runtime.spawn(async move {
                let _ = ctx.session.sign_out().await;
                ctx.update(|m| m.reset_to_sign_in());
            })
        });
        on!(on_select_community, |c, id: slint::SharedString| {
            if let Ok(id) = Uuid::parse_str(&id) {
                let ctx = c.ctx();
                c.runtime.spawn(open_community(ctx, id));
            }
        });
        on!(on_select_channel, |c, id: slint::SharedString| {
            if let Ok(id) = Uuid::parse_str(&id) {
                let ctx = c.ctx();
                c.runtime.spawn(open_channel(ctx, id));
            }
        });
        on!(on_load_older, |c| {
            let ctx = c.ctx();
            c.runtime.spawn(async move {
                let Some(mut store) = lock(&ctx.model).store.clone() else {
                    return;
                };
                match Messages::new(ctx.session.clone())
                    .load_older(&mut store, PAGE_SIZE)
                    .await
                {
                    Ok(_) => ctx.update(|m| {
                        if m.channel == Some(store.channel_id()) {
                            m.store = Some(store);
                        }
                    }),
                    Err(e) => ctx.fail(e),
                }
            })
        });
        on!(on_send_message, |c, text: slint::SharedString| c
            .send_message(text.to_string()));
        on!(on_start_reply, |c, id: slint::SharedString| {
            if let Ok(id) = Uuid::parse_str(&id) {
                c.ctx().update(|m| m.compose = Compose::Reply(id));
            }
        });
        on!(on_start_edit, |c, id: slint::SharedString| {
            if let Ok(id) = Uuid::parse_str(&id) {
                c.ctx().update(|m| {
                    let content = m
                        .store
                        .as_ref()
                        .and_then(|s| s.get(id))
                        .map(|msg| msg.content.clone());
                    if let Some(content) = content {
                        m.compose = Compose::Edit(id);
                        m.composer_set = Some(content);
                    }
                });
            }
        });
        on!(on_cancel_compose, |c| c.ctx().update(|m| {
            if matches!(m.compose, Compose::Edit(_)) {
                m.composer_set = Some(String::new());
            }
            m.compose = Compose::New;
        }));
        on!(on_delete_message, |c, id: slint::SharedString| {
            if let Ok(id) = Uuid::parse_str(&id) {
                let ctx = c.ctx();
                c.runtime.spawn(async move {
                    match Messages::new(ctx.session.clone()).delete(id).await {
                        Ok(()) => ctx.update(|m| {
                            if let Some(s) = m.store.as_mut() {
                                s.remove(id);
                            }
                        }),
                        Err(e) => ctx.fail(e),
                    }
                });
            }
        });
        on!(on_create_community, |c, name: slint::SharedString| {
            let ctx = c.ctx();
            let name = name.to_string();
            c.runtime.spawn(async move {
                match Communities::new(ctx.session.clone())
                    .create(name.trim(), None)
                    .await
                {
                    Ok(id) => {
                        refresh_communities(&ctx).await;
                        open_community(ctx, id).await;
                    }
                    Err(e) => ctx.fail(e),
                }
            })
        });
        on!(on_join_invite, |c, code: slint::SharedString| {
            let ctx = c.ctx();
            let code = code.to_string();
            c.runtime.spawn(async move {
                match Communities::new(ctx.session.clone())
                    .join_with_invite(&code)
                    .await
                {
                    Ok(id) => {
                        refresh_communities(&ctx).await;
                        open_community(ctx, id).await;
                    }
                    Err(e) => ctx.fail(e),
                }
            })
        });
        on!(on_create_invite, |c| {
            let ctx = c.ctx();
            c.runtime.spawn(async move {
                let Some(community) = lock(&ctx.model).community else {
                    return;
                };
                match Communities::new(ctx.session.clone())
                    .create_invite(community, None, InviteExpiry::default())
                    .await
                {
                    Ok(invite) => ctx.update(|m| m.invite_code = Some(invite.code)),
                    Err(e) => ctx.fail(e),
                }
            })
        });
        on!(on_leave_community, |c| {
            let ctx = c.ctx();
            c.runtime.spawn(async move {
                let Some(community) = lock(&ctx.model).community else {
                    return;
                };
                match Communities::new(ctx.session.clone()).leave(community).await {
                    Ok(()) => {
                        ctx.update(|m| {
                            m.community = None;
                            m.channel = None;
                            m.store = None;
                            m.tree = Default::default();
                        });
                        refresh_communities(&ctx).await;
                        let first = lock(&ctx.model).communities.first().map(|c| c.id);
                        if let Some(id) = first {
                            open_community(ctx, id).await;
                        }
                    }
                    Err(e) => ctx.fail(e),
                }
            })
        });
        on!(on_join_voice, |c, id: slint::SharedString| {
            if let Ok(id) = Uuid::parse_str(&id) {
                c.join_voice(id);
            }
        });
        on!(on_leave_voice, |c| {
            let ctx = c.ctx();
            ctx.signaling(SignalingCommand::Leave);
            ctx.hang_up();
            ctx.update(|m| m.voice.leave());
        });
        on!(on_toggle_mute, |c| {
            let ctx = c.ctx();
            let mut muted = false;
            let mut deafened = false;
            ctx.update(|m| {
                let was_deaf = m.voice.deafened();
                muted = m.voice.set_muted(!m.voice.self_muted());
                deafened = m.voice.deafened();
                if was_deaf != deafened {
                    ctx.signaling(SignalingCommand::Deafen(deafened));
                }
            });
            ctx.signaling(SignalingCommand::Mute(muted));
            ctx.sync_call();
        });
        on!(on_toggle_deafen, |c| {
            let ctx = c.ctx();
            let mut state = (false, false);
            ctx.update(|m| state = m.voice.set_deafened(!m.voice.deafened()));
            ctx.signaling(SignalingCommand::Deafen(state.1));
            ctx.signaling(SignalingCommand::Mute(state.0));
            ctx.sync_call();
        });
        on!(on_push_to_talk_changed, |c, held: bool| {
            let ctx = c.ctx();
            ctx.update(|m| m.voice.set_ptt(held));
            ctx.sync_call();
        });
        on!(on_set_volume, |c, user: slint::SharedString, gain: f32| {
            if let Ok(user) = Uuid::parse_str(&user) {
                let ctx = c.ctx();
                let mut applied = gain;
                ctx.update(|m| {
                    applied = m.voice.set_volume(user.into(), gain);
                    m.settings.volumes.insert(user, applied);
                });
                if let Some(active) = ctx.calls().active.as_ref() {
                    active.send(CallCommand::Volume(user.into(), applied));
                };
            }
        });
        on!(on_open_settings, |c| c
            .ctx()
            .update(|m| m.screen = Screen::Settings));
        on!(on_close_settings, |c| c
            .ctx()
            .update(|m| m.screen = Screen::Main));
        on!(on_apply_settings, |c| c.apply_settings());
        on!(on_dismiss_banner, |c| c.ctx().update(|m| m.banner = None));
    }

    fn send_message(&self, text: String) {
        let ctx = self.ctx();
        let (channel, compose, my_name) = {
            let m = lock(&self.model);
            (
                m.channel,
                m.compose,
                m.me.as_ref().map(|me| me.name.clone()).unwrap_or_default(),
            )
        };
        let Some(channel) = channel else { return };
        let text = text.trim().to_string();
        if text.is_empty() {
            return;
        }
        self.runtime.spawn(async move {
            let messages = Messages::new(ctx.session.clone());
            let result = match compose {
                Compose::Edit(id) => messages.edit(id, &text, &my_name).await,
                Compose::Reply(id) => messages.send(channel, &text, Some(id), &my_name).await,
                Compose::New => messages.send(channel, &text, None, &my_name).await,
            };
            match result {
                Ok(msg) => ctx.update(|m| {
                    if let Some(s) = m.store.as_mut() {
                        s.upsert(msg);
                    }
                    m.compose = Compose::New;
                    m.composer_set = Some(String::new());
                    m.scroll_tick += 1;
                }),
                Err(e) => ctx.fail(e),
            }
        });
    }

    fn apply_settings(&self) {
        let Some(w) = self.window.upgrade() else {
            return;
        };
        let ctx = self.ctx();
        ctx.update(|m| {
            let pick = |list: &[String], index: i32| -> Option<String> {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| list.get(i).cloned())
            };
            m.settings.input_device = pick(&m.input_devices, w.get_input_index());
            m.settings.output_device = pick(&m.output_devices, w.get_output_index());
            m.settings.push_to_talk = w.get_push_to_talk();
            let key = w.get_ptt_key().to_string();
            if !key.is_empty() {
                m.settings.ptt_key = key;
            }
            m.settings.noise_suppression = w.get_noise_suppression();
            m.voice.set_input_mode(if m.settings.push_to_talk {
                InputMode::PushToTalk
            } else {
                InputMode::VoiceActivity
            });
            if let Err(e) = m.settings.save(&ctx.config.config_dir) {
                m.show_error(&e);
            }
        });
        let noise = lock(&self.model).settings.noise_suppression;
        if let Some(active) = ctx.calls().active.as_ref() {
            active.send(CallCommand::NoiseSuppression(noise));
        }
        ctx.sync_call();
    }

    fn join_voice(&self, channel: Uuid) {
        let ctx = self.ctx();
        let connected = ctx
            .signaling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !connected {
            ctx.update(|m| {
                m.voice.refused(channel, "voice needs the signaling service");
                m.banner = Some((
                    BannerKind::Error,
                    "Voice is unavailable: this client has no signaling service configured (--signaling-url).".into(),
                ));
            });
            return;
        }
        ctx.offer_and_join(channel);
    }
}

async fn refresh_communities(ctx: &Ctx) {
    match Communities::new(ctx.session.clone()).list_mine().await {
        Ok(list) => ctx.update(|m| m.communities = list),
        Err(e) => ctx.fail(e),
    }
}

async fn after_sign_in(ctx: Ctx) {
    let Some(session) = ctx.session.current().await else {
        return;
    };
    let name = session
        .user
        .user_metadata
        .get("username")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            session
                .user
                .email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "me".into());
    let me = session.user.id;
    ctx.update(|m| {
        m.busy = false;
        m.auth_error.clear();
        m.me = Some(Me { id: me, name });
        m.voice = VoiceState::new(me.into());
        for (user, gain) in m.settings.volumes.clone() {
            m.voice.set_volume(user.into(), gain);
        }
        m.voice.set_input_mode(if m.settings.push_to_talk {
            InputMode::PushToTalk
        } else {
            InputMode::VoiceActivity
        });
        m.screen = Screen::Main;
        m.banner = None;
    });
    if let Some(url) = ctx.config.signaling_url.clone() {
        start_signaling(&ctx, url, session.access_token.clone());
    }
    keep_session_fresh(ctx.clone());
    refresh_communities(&ctx).await;
    let first = {
        let m = lock(&ctx.model);
        let mut list = m.communities.clone();
        list.sort_by_key(|c| c.name.to_lowercase());
        list.iter()
            .find(|c| c.name == "Haven Demo")
            .or(list.first())
            .map(|c| c.id)
    };
    if let Some(id) = first {
        open_community(ctx, id).await;
    }
}

/// Refresh the access token before it expires, for as long as the user stays signed in, and
/// hand the fresh token to signaling (which otherwise warns with `token_expiring`).
fn keep_session_fresh(ctx: Ctx) {
    ctx.runtime.clone().spawn(async move {
        let mut user = ctx.session.user_id().await;
        while let Some(due) = ctx.session.refresh_due_in().await {
            tokio::time::sleep(due.max(std::time::Duration::from_secs(1))).await;
            // Signed out, or another user signed in meanwhile: this loop is done.
            let now = ctx.session.user_id().await;
            if now.is_none() || now != user {
                return;
            }
            user = now;
            match ctx.session.valid_session().await {
                Ok(s) => ctx.signaling(SignalingCommand::SetToken(s.access_token)),
                Err(e) => return ctx.fail(e),
            }
        }
    });
}

async fn open_community(ctx: Ctx, community: Uuid) {
    let tree = match load_channel_tree(&ctx.session, community).await {
        Ok(t) => t,
        Err(e) => return ctx.fail(e),
    };
    let perms = match PermissionSnapshot::load(&ctx.session, community, &tree).await {
        Ok(p) => p,
        Err(e) => return ctx.fail(e),
    };
    let first_text = tree.first_text().map(|c| c.id);
    ctx.update(|m| {
        m.community = Some(community);
        m.tree = tree;
        m.perms = perms;
        m.channel = None;
        m.store = None;
    });
    if let Some(channel) = first_text {
        open_channel(ctx, channel).await;
    }
}

/// Reload the open community's channels and permissions, keeping the open channel if it is
/// still visible.
async fn reload_community(ctx: &Ctx, community: Uuid) {
    let tree = match load_channel_tree(&ctx.session, community).await {
        Ok(t) => t,
        Err(e) => return ctx.fail(e),
    };
    let perms = match PermissionSnapshot::load(&ctx.session, community, &tree).await {
        Ok(p) => p,
        Err(e) => return ctx.fail(e),
    };
    ctx.update(|m| {
        if m.community != Some(community) {
            return;
        }
        if m.channel.is_some_and(|c| tree.find(c).is_none()) {
            m.channel = None;
            m.store = None;
        }
        m.tree = tree;
        m.perms = perms;
    });
}

async fn open_channel(ctx: Ctx, channel: Uuid) {
    let kind = lock(&ctx.model).tree.find(channel).map(|c| c.kind);
    ctx.update(|m| {
        m.channel = Some(channel);
        m.compose = Compose::New;
        if kind == Some(ChannelKind::Voice) {
            m.store = None;
        }
    });
    if kind != Some(ChannelKind::Text) {
        return;
    }
    let mut store = MessageStore::new(channel);
    match Messages::new(ctx.session.clone())
        .load_older(&mut store, PAGE_SIZE)
        .await
    {
        Ok(_) => ctx.update(|m| {
            if m.channel == Some(channel) {
                m.store = Some(store);
                m.scroll_tick += 1;
            }
        }),
        Err(e) => ctx.fail(e),
    }
}

fn start_signaling(ctx: &Ctx, url: String, token: String) {
    let _guard = ctx.runtime.enter();
    let (handle, mut events) = socket::spawn(url);
    handle.send(SignalingCommand::Start(token));
    *ctx.signaling.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    let ctx = ctx.clone();
    ctx.runtime.clone().spawn(async move {
        while let Some(event) = events.recv().await {
            on_signaling_event(&ctx, event).await;
        }
    });
}

async fn on_signaling_event(ctx: &Ctx, event: SignalingEvent) {
    match event {
        SignalingEvent::Ready { .. } => ctx.update(|m| {
            if matches!(m.banner, Some((BannerKind::Offline, _))) {
                m.banner = None;
            }
        }),
        SignalingEvent::Disconnected { retry_in } => ctx.update(|m| {
            // The call's media may still flow; the rejoin after reconnecting replaces it.
            m.voice.reconnecting();
            m.banner = Some((
                BannerKind::Offline,
                format!(
                    "Lost the connection to Haven; reconnecting in {} s…",
                    retry_in.as_secs().max(1)
                ),
            ));
        }),
        SignalingEvent::AuthFailed { .. } | SignalingEvent::TokenExpiring => {
            match ctx.session.refresh_now().await {
                Ok(s) => ctx.signaling(SignalingCommand::SetToken(s.access_token)),
                Err(e) => ctx.fail(e),
            }
        }
        SignalingEvent::Live {
            kind,
            community_id,
            channel_id,
            user_id,
            message_id,
            message,
        } => {
            if let Some(live) =
                LiveMessageEvent::from_event(&kind, channel_id, message_id, message.as_ref())
            {
                ctx.update(|m| {
                    if let Some(s) = m.store.as_mut() {
                        if s.apply(&live) {
                            m.scroll_tick += 1;
                        }
                    }
                });
                return;
            }
            let (me, open) = {
                let m = lock(&ctx.model);
                (m.me.as_ref().map(|me| me.id), m.community)
            };
            let about_me = user_id.is_some() && user_id == me;
            match kind.as_str() {
                // I was removed from a community: drop it, say why, move on.
                "member.kicked" | "member.banned" | "member.left" if about_me => {
                    let why = match kind.as_str() {
                        "member.kicked" => "You were kicked from a community.",
                        "member.banned" => "You were banned from a community.",
                        _ => "You left a community.",
                    };
                    ctx.update(|m| {
                        m.communities.retain(|c| c.id != community_id);
                        if m.community == Some(community_id) {
                            m.community = None;
                            m.channel = None;
                            m.store = None;
                            m.tree = Default::default();
                        }
                        if kind != "member.left" {
                            m.banner = Some((BannerKind::Info, why.into()));
                        }
                    });
                    if open == Some(community_id) {
                        let next = lock(&ctx.model).communities.first().map(|c| c.id);
                        if let Some(next) = next {
                            open_community(ctx.clone(), next).await;
                        }
                    }
                }
                "member.joined" if about_me => refresh_communities(ctx).await,
                "community.updated" | "community.deleted" => refresh_communities(ctx).await,
                // What I may see or do in the open community changed: reload its channels and
                // permissions (the open channel stays if it is still visible).
                k if open == Some(community_id)
                    && (k.starts_with("channel.")
                        || k.starts_with("role.")
                        || k == "overwrite.changed"
                        || (k == "member.roles_changed" && about_me)) =>
                {
                    reload_community(ctx, community_id).await
                }
                _ => {}
            }
        }
        SignalingEvent::VoiceState {
            channel_id,
            participants,
            ..
        } => ctx.update(|m| m.voice.apply_voice_state(channel_id, &participants)),
        SignalingEvent::Joined {
            channel_id,
            can_speak,
            sdp,
            ..
        } => {
            ctx.update(|m| m.voice.joined(channel_id, can_speak));
            ctx.start_call(&sdp);
        }
        SignalingEvent::JoinRefused {
            channel_id,
            message,
            ..
        } => ctx.update(|m| {
            ctx.hang_up();
            m.voice.refused(channel_id, message.clone());
            m.banner = Some((
                BannerKind::Denied,
                format!("Could not join voice: {message}"),
            ));
        }),
        SignalingEvent::Left { channel_id, reason } => ctx.update(|m| {
            ctx.hang_up();
            m.voice.left(channel_id, reason);
            if reason != haven_proto::client::LeftReason::Left {
                m.banner = Some((BannerKind::Info, left_reason_text(reason).into()));
            }
        }),
        SignalingEvent::RejoinVoice { channel_id } => ctx.offer_and_join(channel_id),
        SignalingEvent::RequestFailed { message, .. } => {
            ctx.update(|m| m.banner = Some((BannerKind::Error, message)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haven_proto::client::{ErrorCode, LeftReason};
    use std::time::Duration;

    fn ctx(runtime: &tokio::runtime::Runtime) -> (Ctx, Receiver<()>) {
        let mut config = ClientConfig::new("http://127.0.0.1:9", "anon").unwrap();
        config.config_dir = std::env::temp_dir().join(format!("haven-ctl-{}", Uuid::new_v4()));
        let session = SessionManager::new(config.supabase().unwrap(), None);
        let (changed, pending) = channel();
        let ctx = Ctx {
            model: Arc::new(Mutex::new(AppModel {
                screen: Screen::Main,
                ..AppModel::default()
            })),
            session,
            config,
            changed,
            signaling: Arc::new(Mutex::new(None)),
            runtime: runtime.handle().clone(),
            calls: Arc::new(Mutex::new(Calls::default())),
        };
        (ctx, pending)
    }

    #[test]
    fn signaling_events_reach_the_model_with_reasons() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (ctx, pending) = ctx(&runtime);
        let me = Uuid::new_v4();
        let channel = Uuid::new_v4();
        ctx.update(|m| {
            m.me = Some(Me {
                id: me,
                name: "me".into(),
            });
            m.voice = VoiceState::new(me.into());
            m.voice.joined(channel, true);
            m.store = Some(MessageStore::new(channel));
        });
        runtime.block_on(async {
            on_signaling_event(&ctx, SignalingEvent::Disconnected { retry_in: Duration::from_secs(2) }).await;
            assert!(matches!(lock(&ctx.model).banner, Some((BannerKind::Offline, _))));
            assert!(matches!(lock(&ctx.model).voice.phase(), crate::voice::VoicePhase::Reconnecting { .. }));
            on_signaling_event(&ctx, SignalingEvent::Ready { user_id: me.into() }).await;
            assert!(lock(&ctx.model).banner.is_none(), "reconnected: the offline banner goes");

            on_signaling_event(&ctx, SignalingEvent::Left { channel_id: channel, reason: LeftReason::Banned }).await;
            {
                let m = lock(&ctx.model);
                assert_eq!(m.banner.as_ref().map(|b| b.1.as_str()), Some("You were banned from the community."));
                assert!(matches!(m.voice.phase(), crate::voice::VoicePhase::Removed { reason: LeftReason::Banned, .. }));
            }
            on_signaling_event(
                &ctx,
                SignalingEvent::JoinRefused { channel_id: channel, code: ErrorCode::Forbidden, message: "not permitted".into() },
            )
            .await;
            assert!(matches!(lock(&ctx.model).banner, Some((BannerKind::Denied, ref t)) if t.contains("not permitted")));

            let message = serde_json::json!({
                "id": Uuid::new_v4(), "channel_id": channel, "author_display_name": "alice",
                "content": "live!", "created_at": "2026-11-25T11:50:00Z"
            });
            on_signaling_event(
                &ctx,
                SignalingEvent::Live {
                    kind: "message.created".into(),
                    community_id: Uuid::nil(),
                    channel_id: Some(channel),
                    user_id: None,
                    message_id: None,
                    message: Some(message),
                },
            )
            .await;
            assert_eq!(lock(&ctx.model).store.as_ref().map(MessageStore::len), Some(1));
            // Kinds nobody handles, about other communities, are ignored.
            on_signaling_event(
                &ctx,
                SignalingEvent::Live {
                    kind: "role.created".into(),
                    community_id: Uuid::new_v4(),
                    channel_id: None,
                    user_id: None,
                    message_id: None,
                    message: None,
                },
            )
            .await;
        });
        assert!(pending.try_recv().is_ok(), "the UI was told to re-render");
    }
}
