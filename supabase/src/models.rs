//! The shapes the RPCs take and return (supabase/API.md), as Rust types.
//!
//! Field names are the SQL column / JSON key names, so serde maps them without renames. Unknown
//! enum values from a newer schema deserialize to `Unknown` variants instead of failing the
//! whole call.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A community the caller belongs to (row of `public.communities`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Community {
    /// Community id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Creator (null once the account is deleted).
    pub created_by: Option<Uuid>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A channel group (row of `public.channel_groups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelGroup {
    /// Group id.
    pub id: Uuid,
    /// Its community.
    pub community_id: Uuid,
    /// Name.
    pub name: String,
    /// Order among groups.
    pub position: i32,
}

/// Text or voice channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Messages.
    Text,
    /// Voice room.
    Voice,
}

impl ChannelKind {
    /// The SQL value.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Text => "text",
            ChannelKind::Voice => "voice",
        }
    }
}

/// A channel the caller can view, as `list_channels` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSummary {
    /// Channel id.
    pub id: Uuid,
    /// Its community.
    pub community_id: Uuid,
    /// Name.
    pub name: String,
    /// Topic.
    pub topic: Option<String>,
    /// Text or voice.
    pub kind: ChannelKind,
    /// Order within its group.
    pub position: i32,
    /// Channel group, if grouped.
    pub group_id: Option<Uuid>,
    /// Whether the caller may send messages.
    pub can_send: bool,
    /// Whether the caller may join voice.
    pub can_connect: bool,
    /// Whether the caller may speak in voice.
    pub can_speak: bool,
}

/// A row of `public.messages` (what `send_message` / `edit_message` return).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Message id.
    pub id: Uuid,
    /// Community (always the channel's).
    pub community_id: Uuid,
    /// Channel.
    pub channel_id: Uuid,
    /// Author (null once the account is deleted).
    pub author_id: Option<Uuid>,
    /// Text.
    pub content: String,
    /// Replied-to message.
    pub reply_to: Option<Uuid>,
    /// Sent at.
    pub created_at: DateTime<Utc>,
    /// Last edit.
    pub edited_at: Option<DateTime<Utc>>,
    /// Soft-delete time.
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
    /// Hidden by a ban.
    #[serde(default)]
    pub is_hidden: bool,
}

/// A message in history, with the author's display fields joined server-side (never trusted
/// from the author).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// Message id.
    pub id: Uuid,
    /// Community.
    pub community_id: Uuid,
    /// Channel.
    pub channel_id: Uuid,
    /// Author.
    pub author_id: Option<Uuid>,
    /// Author's username.
    pub author_username: Option<String>,
    /// Nickname in the community, else username.
    pub author_display_name: Option<String>,
    /// Text.
    pub content: String,
    /// Replied-to message.
    pub reply_to: Option<Uuid>,
    /// Sent at.
    pub created_at: DateTime<Utc>,
    /// Last edit.
    pub edited_at: Option<DateTime<Utc>>,
}

impl MessageView {
    /// The cursor that continues history below this message.
    pub fn cursor(&self) -> MessageCursor {
        MessageCursor {
            before_created_at: self.created_at,
            before_id: self.id,
        }
    }
}

/// Keyset cursor for `list_channel_messages`: messages strictly older than this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageCursor {
    /// `created_at` of the last message seen.
    pub before_created_at: DateTime<Utc>,
    /// `id` of the last message seen (tie-breaker).
    pub before_id: Uuid,
}

/// A row of `public.invites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Invite id.
    pub id: Uuid,
    /// Community.
    pub community_id: Uuid,
    /// The 10-character code to share.
    pub code: String,
    /// Creator.
    pub created_by: Option<Uuid>,
    /// Use limit.
    pub max_uses: Option<i32>,
    /// Uses so far.
    pub uses: i32,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// When a new invite stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteExpiry {
    /// After this many hours.
    AfterHours(i32),
    /// Never.
    Never,
}

impl Default for InviteExpiry {
    /// The RPC's default: 24 hours.
    fn default() -> Self {
        InviteExpiry::AfterHours(24)
    }
}

/// How `redeem_invite` went. Failures are returned, not raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedeemStatus {
    /// Joined the community.
    Joined,
    /// Was already a member (no use consumed).
    AlreadyMember,
    /// No such code.
    Invalid,
    /// Past its expiry.
    Expired,
    /// Max uses reached.
    UsedUp,
    /// Revoked.
    Revoked,
    /// Caller is banned from the community.
    Banned,
    /// The community turned invites off.
    InvitesDisabled,
    /// A status this client does not know yet.
    #[serde(other)]
    Unknown,
}

/// Result of `redeem_invite`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemOutcome {
    /// What happened.
    pub status: RedeemStatus,
    /// The community, when the code was valid.
    pub community_id: Option<Uuid>,
    /// Whether the caller became a member now.
    pub joined: bool,
}

/// A row of `public.community_bans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// Ban id.
    pub id: Uuid,
    /// Community.
    pub community_id: Uuid,
    /// Banned user.
    pub user_id: Uuid,
    /// Who banned.
    pub banned_by: Option<Uuid>,
    /// Reason.
    pub reason: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When lifted (history is kept).
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who lifted it.
    pub revoked_by: Option<Uuid>,
}

/// What `authorize_voice_join` grants: the signaling service turns it into an SFU grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceJoinGrant {
    /// Community.
    pub community_id: Uuid,
    /// Voice channel.
    pub channel_id: Uuid,
    /// Stable opaque room key.
    pub room: String,
    /// Whether the caller may speak (else listen only).
    pub can_speak: bool,
    /// Name to show in the room.
    pub display_name: String,
    /// The caller.
    pub user_id: Uuid,
}

/// Moderation action in voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoiceModerationAction {
    /// Server mute (needs `mute_members`).
    Mute,
    /// Disconnect (needs `move_members`).
    Disconnect,
}

impl VoiceModerationAction {
    /// The SQL value.
    pub fn as_str(self) -> &'static str {
        match self {
            VoiceModerationAction::Mute => "mute",
            VoiceModerationAction::Disconnect => "disconnect",
        }
    }
}

/// What `authorize_voice_moderation` grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceModerationGrant {
    /// Room of the channel.
    pub room: String,
    /// Who may be acted on.
    pub target_user_id: Uuid,
}

/// A user's current voice rights in a channel (`voice_access_as`, service role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceAccess {
    /// May be in the room.
    pub can_connect: bool,
    /// May speak.
    pub can_speak: bool,
}

/// Tri-state channel overwrite flags: `Some(true)` allow, `Some(false)` deny, `None` inherit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OverwriteFlags {
    /// View the channel.
    pub can_view: Option<bool>,
    /// Send messages.
    pub can_send: Option<bool>,
    /// Join voice.
    pub can_connect: Option<bool>,
    /// Speak in voice.
    pub can_speak: Option<bool>,
}

/// A new role.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRole {
    /// Name (1–50, unique per community, case-insensitive).
    pub name: String,
    /// `#rrggbb`.
    pub color: Option<String>,
    /// Position; default is just below the caller.
    pub position: Option<i32>,
    /// Permission keys (each must be held by a non-owner caller).
    pub permissions: Vec<String>,
}

/// A new channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChannel {
    /// Name (1–80).
    pub name: String,
    /// Text or voice.
    pub kind: ChannelKind,
    /// Topic.
    pub topic: Option<String>,
    /// Group.
    pub group_id: Option<Uuid>,
    /// Position; default is last.
    pub position: Option<i32>,
}

impl NewChannel {
    /// A channel with just a name and kind.
    pub fn new(name: impl Into<String>, kind: ChannelKind) -> Self {
        Self {
            name: name.into(),
            kind,
            topic: None,
            group_id: None,
            position: None,
        }
    }
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelUpdate {
    /// New name.
    pub name: Option<String>,
    /// New topic.
    pub topic: Option<String>,
    /// New position.
    pub position: Option<i32>,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleUpdate {
    /// New name.
    pub name: Option<String>,
    /// New color.
    pub color: Option<String>,
    /// New position.
    pub position: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redeem_outcomes_parse_including_unknown_statuses() {
        let joined: RedeemOutcome = serde_json::from_str(
            r#"{"status":"joined","community_id":"5f0c8c5e-4f6a-4c43-9a43-2d8e2f4b9a10","joined":true}"#,
        )
        .unwrap();
        assert_eq!(joined.status, RedeemStatus::Joined);
        let odd: RedeemOutcome =
            serde_json::from_str(r#"{"status":"cosmic_rays","community_id":null,"joined":false}"#)
                .unwrap();
        assert_eq!(odd.status, RedeemStatus::Unknown);
        let disabled: RedeemOutcome = serde_json::from_str(
            r#"{"status":"invites_disabled","community_id":null,"joined":false}"#,
        )
        .unwrap();
        assert_eq!(disabled.status, RedeemStatus::InvitesDisabled);
    }

    #[test]
    fn channel_rows_parse() {
        let row: ChannelSummary = serde_json::from_str(
            r#"{"can_connect":true,"can_send":true,"can_speak":true,"community_id":"2571b945-175f-4ef9-bf38-beaece62a178","group_id":null,"id":"4e6119a6-50fe-433d-8dda-535789b98342","kind":"voice","name":"Lounge","position":1,"topic":null}"#,
        )
        .unwrap();
        assert_eq!(row.kind, ChannelKind::Voice);
        assert_eq!(row.name, "Lounge");
    }
}
