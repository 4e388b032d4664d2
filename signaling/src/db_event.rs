//! The database's NOTIFY payloads (`haven_events`, supabase/API.md "Realtime events") as a
//! typed value.
//!
//! Payloads carry ids only. Parsing is strict about ids (a payload without its community is
//! dropped and counted) and lenient about kinds: a kind added to the schema later is carried
//! as [`EventKind::Other`] so it is still forwarded to the community's members.

use serde::Deserialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    MessageCreated,
    MessageUpdated,
    MessageDeleted,
    ChannelCreated,
    ChannelUpdated,
    ChannelDeleted,
    OverwriteChanged,
    MemberJoined,
    MemberLeft,
    MemberKicked,
    MemberBanned,
    MemberUnbanned,
    MemberRolesChanged,
    MemberUpdated,
    RoleCreated,
    RoleUpdated,
    RoleDeleted,
    RolePermissionsChanged,
    CommunityUpdated,
    CommunityDeleted,
    Other(String),
}

impl EventKind {
    pub fn parse(kind: &str) -> Self {
        match kind {
            "message.created" => Self::MessageCreated,
            "message.updated" => Self::MessageUpdated,
            "message.deleted" => Self::MessageDeleted,
            "channel.created" => Self::ChannelCreated,
            "channel.updated" => Self::ChannelUpdated,
            "channel.deleted" => Self::ChannelDeleted,
            "overwrite.changed" => Self::OverwriteChanged,
            "member.joined" => Self::MemberJoined,
            "member.left" => Self::MemberLeft,
            "member.kicked" => Self::MemberKicked,
            "member.banned" => Self::MemberBanned,
            "member.unbanned" => Self::MemberUnbanned,
            "member.roles_changed" => Self::MemberRolesChanged,
            "member.updated" => Self::MemberUpdated,
            "role.created" => Self::RoleCreated,
            "role.updated" => Self::RoleUpdated,
            "role.deleted" => Self::RoleDeleted,
            "role.permissions_changed" => Self::RolePermissionsChanged,
            "community.updated" => Self::CommunityUpdated,
            "community.deleted" => Self::CommunityDeleted,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::MessageCreated => "message.created",
            Self::MessageUpdated => "message.updated",
            Self::MessageDeleted => "message.deleted",
            Self::ChannelCreated => "channel.created",
            Self::ChannelUpdated => "channel.updated",
            Self::ChannelDeleted => "channel.deleted",
            Self::OverwriteChanged => "overwrite.changed",
            Self::MemberJoined => "member.joined",
            Self::MemberLeft => "member.left",
            Self::MemberKicked => "member.kicked",
            Self::MemberBanned => "member.banned",
            Self::MemberUnbanned => "member.unbanned",
            Self::MemberRolesChanged => "member.roles_changed",
            Self::MemberUpdated => "member.updated",
            Self::RoleCreated => "role.created",
            Self::RoleUpdated => "role.updated",
            Self::RoleDeleted => "role.deleted",
            Self::RolePermissionsChanged => "role.permissions_changed",
            Self::CommunityUpdated => "community.updated",
            Self::CommunityDeleted => "community.deleted",
            Self::Other(s) => s,
        }
    }

    /// Events after which someone's right to be in a voice room may be gone.
    pub fn may_revoke_voice(&self) -> bool {
        matches!(
            self,
            Self::MemberKicked
                | Self::MemberBanned
                | Self::MemberLeft
                | Self::OverwriteChanged
                | Self::RolePermissionsChanged
                | Self::RoleDeleted
                | Self::MemberRolesChanged
                | Self::ChannelDeleted
                | Self::CommunityDeleted
        )
    }
}

/// One NOTIFY payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEvent {
    pub kind: EventKind,
    pub community_id: Uuid,
    pub channel_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub role_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    pub author_id: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventParseError {
    #[error("payload is not an event: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl DbEvent {
    pub fn parse(payload: &str) -> Result<Self, EventParseError> {
        #[derive(Deserialize)]
        struct Raw {
            kind: String,
            community_id: Uuid,
            #[serde(default)]
            channel_id: Option<Uuid>,
            #[serde(default)]
            user_id: Option<Uuid>,
            #[serde(default)]
            role_id: Option<Uuid>,
            #[serde(default)]
            message_id: Option<Uuid>,
            #[serde(default)]
            author_id: Option<Uuid>,
        }
        let raw: Raw = serde_json::from_str(payload)?;
        Ok(Self {
            kind: EventKind::parse(&raw.kind),
            community_id: raw.community_id,
            channel_id: raw.channel_id,
            user_id: raw.user_id,
            role_id: raw.role_id,
            message_id: raw.message_id,
            author_id: raw.author_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_payloads_the_triggers_send() {
        let e = DbEvent::parse(
            r#"{"kind":"message.created","community_id":"00000000-0000-4000-8000-000000000001",
                "channel_id":"00000000-0000-4000-8000-000000000002",
                "message_id":"00000000-0000-4000-8000-000000000003",
                "author_id":null}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::MessageCreated);
        assert!(e.message_id.is_some() && e.author_id.is_none() && e.user_id.is_none());
        let e = DbEvent::parse(
            r#"{"kind":"member.banned","community_id":"00000000-0000-4000-8000-000000000001","user_id":"00000000-0000-4000-8000-000000000004"}"#,
        )
        .unwrap();
        assert!(e.kind.may_revoke_voice());
        let e = DbEvent::parse(
            r#"{"kind":"thing.new","community_id":"00000000-0000-4000-8000-000000000001"}"#,
        )
        .unwrap();
        assert_eq!(e.kind.as_str(), "thing.new");
        assert!(DbEvent::parse(r#"{"kind":"member.left"}"#).is_err());
        assert!(DbEvent::parse("nope").is_err());
    }

    #[test]
    fn kind_names_round_trip() {
        for k in [
            "message.created",
            "message.updated",
            "message.deleted",
            "channel.created",
            "channel.updated",
            "channel.deleted",
            "overwrite.changed",
            "member.joined",
            "member.left",
            "member.kicked",
            "member.banned",
            "member.unbanned",
            "member.roles_changed",
            "member.updated",
            "role.created",
            "role.updated",
            "role.deleted",
            "role.permissions_changed",
            "community.updated",
            "community.deleted",
        ] {
            let kind = EventKind::parse(k);
            assert!(!matches!(kind, EventKind::Other(_)), "{k}");
            assert_eq!(kind.as_str(), k);
        }
    }
}
