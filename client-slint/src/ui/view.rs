//! The view model: everything the window shows, as plain data the controller updates, and
//! the one function that pushes it into the Slint properties. Keeping the state here (not in
//! the .slint files) means the UI is a pure function of it, which is also what the headless
//! screenshots render.

use chrono::{DateTime, Local, Utc};
use haven_supabase::{ChannelKind, Community};
use slint::{Model, ModelRc, SharedString, VecModel};
use uuid::Uuid;

use crate::core::{
    BannerKind as CoreBanner, ChannelTree, CoreError, MessageStore, PermissionSnapshot, Settings,
};
use crate::ui::{AppWindow, BannerKind, ChannelRow, CommunityItem, MessageItem, RosterItem};
use crate::voice::state::{VoicePhase, VoiceState};

/// Which screen is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Screen {
    /// Sign in / sign up.
    #[default]
    SignIn,
    /// Communities, channels, chat.
    Main,
    /// Voice settings.
    Settings,
}

/// What the composer does on Enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compose {
    /// A new message.
    #[default]
    New,
    /// A reply to this message.
    Reply(Uuid),
    /// Replace this message's text.
    Edit(Uuid),
}

/// The signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// User id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
}

/// Everything the window shows.
#[derive(Debug, Default)]
pub struct AppModel {
    /// Current screen.
    pub screen: Screen,
    /// A sign-in/sign-up request is in flight.
    pub busy: bool,
    /// Error under the sign-in form.
    pub auth_error: String,
    /// The banner, if any.
    pub banner: Option<(BannerKind, String)>,
    /// Me, once signed in.
    pub me: Option<Me>,
    /// My communities.
    pub communities: Vec<Community>,
    /// The open community.
    pub community: Option<Uuid>,
    /// Its channels.
    pub tree: ChannelTree,
    /// My permissions there.
    pub perms: PermissionSnapshot,
    /// The open channel.
    pub channel: Option<Uuid>,
    /// Messages of the open text channel.
    pub store: Option<MessageStore>,
    /// Composer mode.
    pub compose: Compose,
    /// Text to put into the composer at the next render (then cleared).
    pub composer_set: Option<String>,
    /// Bumped to scroll the chat to the end.
    pub scroll_tick: i32,
    /// Invite code to show in a dialog (shown once).
    pub invite_code: Option<String>,
    /// The voice model.
    pub voice: VoiceState,
    /// My input level (0..1).
    pub input_level: f32,
    /// Preferences.
    pub settings: Settings,
    /// Input device names.
    pub input_devices: Vec<String>,
    /// Output device names.
    pub output_devices: Vec<String>,
}

impl AppModel {
    /// Show an error in the banner (or under the sign-in form).
    pub fn show_error(&mut self, error: &CoreError) {
        if self.screen == Screen::SignIn && !matches!(error, CoreError::Offline(_)) {
            self.auth_error = error.to_string();
            return;
        }
        let kind = match error.banner() {
            CoreBanner::Offline => BannerKind::Offline,
            CoreBanner::PermissionDenied => BannerKind::Denied,
            CoreBanner::SessionExpired => BannerKind::Expired,
            CoreBanner::Error => BannerKind::Error,
        };
        let text = match error {
            CoreError::Offline(_) => {
                "Can't reach the Haven server. Check your connection; retrying.".to_string()
            }
            CoreError::PermissionDenied { .. } => {
                "You don't have permission to do that here.".to_string()
            }
            CoreError::SessionExpired | CoreError::NotSignedIn => {
                "Your session has expired. Please sign in again.".to_string()
            }
            other => other.to_string(),
        };
        self.banner = Some((kind, text));
    }

    /// The open channel's summary.
    pub fn open_channel(&self) -> Option<&haven_supabase::ChannelSummary> {
        self.channel.and_then(|id| self.tree.find(id))
    }

    /// Forget everything about the signed-in user (sign-out, expired session).
    pub fn reset_to_sign_in(&mut self) {
        let settings = std::mem::take(&mut self.settings);
        let (inputs, outputs) = (
            std::mem::take(&mut self.input_devices),
            std::mem::take(&mut self.output_devices),
        );
        *self = AppModel {
            settings,
            input_devices: inputs,
            output_devices: outputs,
            ..AppModel::default()
        };
    }
}

/// Initials for a name: first letters of the first two words.
pub fn initials(name: &str) -> String {
    let letters: String = name
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .collect();
    if letters.is_empty() {
        "?".into()
    } else {
        letters.to_uppercase()
    }
}

fn time_label(at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&Local);
    if local.date_naive() == Local::now().date_naive() {
        local.format("%H:%M").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// Sidebar rows: group headers, channels, and the people in each voice channel.
pub fn channel_rows(
    tree: &ChannelTree,
    selected: Option<Uuid>,
    voice: &VoiceState,
) -> Vec<ChannelRow> {
    let mut rows = Vec::new();
    for section in &tree.sections {
        if let Some(group) = &section.group {
            rows.push(ChannelRow {
                kind: "header".into(),
                id: group.id.to_string().into(),
                name: group.name.to_uppercase().into(),
                ..Default::default()
            });
        }
        for c in section.text.iter().chain(section.voice.iter()) {
            let voice_channel = c.kind == ChannelKind::Voice;
            rows.push(ChannelRow {
                kind: if voice_channel { "voice" } else { "text" }.into(),
                id: c.id.to_string().into(),
                name: c.name.clone().into(),
                selected: Some(c.id) == selected,
                enabled: true,
                speaking: false,
                muted: false,
                deafened: false,
            });
            if voice_channel {
                for p in voice.roster(c.id) {
                    rows.push(ChannelRow {
                        kind: "member".into(),
                        id: p.user_id.to_string().into(),
                        name: p.display_name.into(),
                        selected: false,
                        speaking: p.speaking,
                        muted: p.muted || p.server_muted,
                        deafened: p.deafened,
                        enabled: true,
                    });
                }
            }
        }
    }
    rows
}

/// Chat rows with the controls my permissions allow.
pub fn message_items(
    store: &MessageStore,
    me: Option<Uuid>,
    perms: &PermissionSnapshot,
) -> Vec<MessageItem> {
    store
        .messages()
        .map(|m| {
            let reply_preview = m
                .reply_to
                .map(|id| match store.get(id) {
                    Some(r) => format!(
                        "{}: {}",
                        r.author_name,
                        r.content.chars().take(80).collect::<String>()
                    ),
                    None => "an earlier message".to_string(),
                })
                .unwrap_or_default();
            MessageItem {
                id: m.id.to_string().into(),
                author: m.author_name.clone().into(),
                initial: initials(&m.author_name)
                    .chars()
                    .next()
                    .map(String::from)
                    .unwrap_or_default()
                    .into(),
                time: time_label(m.created_at).into(),
                content: m.content.clone().into(),
                edited: m.edited_at.is_some(),
                reply_preview: reply_preview.into(),
                can_edit: me.is_some_and(|me| perms.can_edit(m, me)),
                can_delete: me.is_some_and(|me| perms.can_delete(m, me)),
                mine: me.is_some() && m.author_id == me,
            }
        })
        .collect()
}

/// Participant tiles for a voice channel.
pub fn roster_items(voice: &VoiceState, channel: Uuid) -> Vec<RosterItem> {
    voice
        .roster(channel)
        .into_iter()
        .map(|p| RosterItem {
            id: p.user_id.to_string().into(),
            initial: initials(&p.display_name)
                .chars()
                .next()
                .map(String::from)
                .unwrap_or_default()
                .into(),
            name: p.display_name.into(),
            speaking: p.speaking,
            muted: p.muted || p.server_muted,
            deafened: p.deafened,
            volume: voice.volume(p.user_id),
        })
        .collect()
}

fn model<T: Clone + 'static>(items: Vec<T>) -> ModelRc<T> {
    ModelRc::new(VecModel::from(items))
}

/// Bring `current` in line with `new` in place, touching only rows that changed, so the
/// elements of unchanged rows (and the keyboard focus inside them, and the scroll position)
/// survive a re-render. Returns a fresh model only when `current` is not one of ours.
fn sync<T: Clone + PartialEq + 'static>(current: ModelRc<T>, new: Vec<T>) -> Option<ModelRc<T>> {
    let Some(vec) = current.as_any().downcast_ref::<VecModel<T>>() else {
        return Some(model(new));
    };
    for (i, item) in new.iter().enumerate() {
        match vec.row_data(i) {
            Some(old) if old == *item => {}
            Some(_) => vec.set_row_data(i, item.clone()),
            None => vec.push(item.clone()),
        }
    }
    while vec.row_count() > new.len() {
        vec.remove(vec.row_count() - 1);
    }
    None
}

macro_rules! set_model {
    ($w:expr, $get:ident, $set:ident, $items:expr) => {
        if let Some(fresh) = sync($w.$get(), $items) {
            $w.$set(fresh);
        }
    };
}

/// Push the model into the window.
pub fn render(m: &mut AppModel, w: &AppWindow) {
    w.set_screen(
        match m.screen {
            Screen::SignIn => "signin",
            Screen::Main => "main",
            Screen::Settings => "settings",
        }
        .into(),
    );
    let (kind, text) = m
        .banner
        .clone()
        .unwrap_or((BannerKind::None, String::new()));
    w.set_banner_kind(kind);
    w.set_banner_text(text.into());
    w.set_busy(m.busy);
    w.set_auth_error(m.auth_error.clone().into());
    w.set_my_name(
        m.me.as_ref()
            .map(|me| me.name.clone())
            .unwrap_or_default()
            .into(),
    );
    w.set_my_id(
        m.me.as_ref()
            .map(|me| me.id.to_string())
            .unwrap_or_default()
            .into(),
    );

    let mut communities = m.communities.clone();
    communities.sort_by_key(|c| c.name.to_lowercase());
    set_model!(
        w,
        get_communities,
        set_communities,
        communities
            .iter()
            .map(|c| CommunityItem {
                id: c.id.to_string().into(),
                name: c.name.clone().into(),
                initials: initials(&c.name).into()
            })
            .collect()
    );
    let community = m
        .community
        .and_then(|id| m.communities.iter().find(|c| c.id == id));
    w.set_community_id(
        community
            .map(|c| c.id.to_string())
            .unwrap_or_default()
            .into(),
    );
    w.set_community_name(community.map(|c| c.name.clone()).unwrap_or_default().into());
    w.set_can_invite(community.is_some() && m.perms.can_create_invites());

    set_model!(
        w,
        get_channels,
        set_channels,
        channel_rows(&m.tree, m.channel, &m.voice)
    );
    let open = m.open_channel().cloned();
    w.set_channel_id(
        open.as_ref()
            .map(|c| c.id.to_string())
            .unwrap_or_default()
            .into(),
    );
    w.set_channel_name(
        open.as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default()
            .into(),
    );
    w.set_channel_topic(
        open.as_ref()
            .and_then(|c| c.topic.clone())
            .unwrap_or_default()
            .into(),
    );
    let is_voice = open.as_ref().is_some_and(|c| c.kind == ChannelKind::Voice);
    w.set_channel_is_voice(is_voice);
    w.set_can_join_voice(open.as_ref().is_some_and(|c| m.perms.can_join_voice(c.id)));

    let me = m.me.as_ref().map(|me| me.id);
    match (&m.store, is_voice) {
        (Some(store), false) => {
            set_model!(
                w,
                get_messages,
                set_messages,
                message_items(store, me, &m.perms)
            );
            w.set_has_older(!store.reached_start());
        }
        _ => {
            set_model!(w, get_messages, set_messages, Vec::new());
            w.set_has_older(false);
        }
    }
    w.set_can_send(open.as_ref().is_some_and(|c| m.perms.can_send_in(c.id)) && !is_voice);
    let context = match m.compose {
        Compose::New => String::new(),
        Compose::Reply(id) => format!(
            "Replying to {}",
            m.store
                .as_ref()
                .and_then(|s| s.get(id))
                .map(|r| r.author_name.clone())
                .unwrap_or_else(|| "a message".into())
        ),
        Compose::Edit(_) => "Editing your message".to_string(),
    };
    w.set_compose_context(context.into());
    if let Some(text) = m.composer_set.take() {
        w.set_composer(text.into());
    }
    w.set_scroll_to_bottom_tick(m.scroll_tick);
    if let Some(code) = m.invite_code.take() {
        w.set_dialog_text(code.into());
        w.set_dialog("show-invite".into());
    }

    // Voice.
    let phase = m.voice.phase().clone();
    let voice_channel = phase.channel();
    w.set_in_voice(voice_channel.is_some());
    w.set_voice_channel_name(
        voice_channel
            .and_then(|id| m.tree.find(id))
            .map(|c| c.name.clone())
            .unwrap_or_default()
            .into(),
    );
    let (status, ok) = match phase {
        VoicePhase::Connected {
            can_speak: true, ..
        } => ("Voice connected", true),
        VoicePhase::Connected {
            can_speak: false, ..
        } => ("Voice connected (listen only)", true),
        VoicePhase::Joining { .. } => ("Connecting…", false),
        VoicePhase::Reconnecting { .. } => ("Reconnecting…", false),
        _ => ("", true),
    };
    w.set_voice_status(status.into());
    w.set_voice_ok(ok);
    w.set_muted(m.voice.self_muted());
    w.set_deafened(m.voice.deafened());
    w.set_can_speak(!matches!(
        phase,
        VoicePhase::Connected {
            can_speak: false,
            ..
        }
    ));
    w.set_ptt_held(m.voice.ptt_held());
    let me_user = m.voice.me();
    w.set_self_speaking(me_user.is_some_and(|u| m.voice.is_speaking(u)));
    w.set_input_level(m.input_level);
    set_model!(
        w,
        get_roster,
        set_roster,
        open.filter(|c| c.kind == ChannelKind::Voice)
            .map(|c| roster_items(&m.voice, c.id))
            .unwrap_or_default()
    );

    // Settings.
    let names = |list: &[String]| -> Vec<SharedString> {
        std::iter::once(SharedString::from("System default"))
            .chain(list.iter().map(|n| n.clone().into()))
            .collect()
    };
    set_model!(
        w,
        get_input_devices,
        set_input_devices,
        names(&m.input_devices)
    );
    set_model!(
        w,
        get_output_devices,
        set_output_devices,
        names(&m.output_devices)
    );
    let index = |list: &[String], chosen: &Option<String>| -> i32 {
        chosen
            .as_ref()
            .and_then(|c| list.iter().position(|n| n == c))
            .map(|i| i as i32 + 1)
            .unwrap_or(0)
    };
    w.set_input_index(index(&m.input_devices, &m.settings.input_device));
    w.set_output_index(index(&m.output_devices, &m.settings.output_device));
    w.set_push_to_talk(m.settings.push_to_talk);
    w.set_ptt_key(m.settings.ptt_key.clone().into());
    w.set_noise_suppression(m.settings.noise_suppression);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_are_short_and_upper_case() {
        assert_eq!(initials("Haven Demo"), "HD");
        assert_eq!(initials("book club of friends"), "BC");
        assert_eq!(initials("  "), "?");
        assert_eq!(initials("ärger"), "Ä");
    }
}
