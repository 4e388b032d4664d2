//! The client ↔ signaling WebSocket protocol (`/v1/ws`): JSON text frames, one message
//! each, with a protocol version and an optional request id that replies echo.
//!
//! Documented with an example of every message in `signaling/docs/protocol.md`; the tests
//! below parse those examples so the document cannot drift from the code.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{SessionId, UserId};

/// Version spoken by this build.
pub const CLIENT_PROTOCOL_VERSION: u16 = 1;
/// Larger frames are refused without parsing (an SDP offer is a few KiB).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;

/// A message from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientMessage {
    pub v: u16,
    /// Echoed in the reply (`ok`, `error`, `joined`), so clients can pair them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub body: ClientRequest,
}

/// What a client can ask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientRequest {
    /// First message on a connection, and again whenever the access token is refreshed.
    Auth {
        access_token: String,
    },
    /// Join a voice channel with an SDP offer (one send track if allowed to speak, N
    /// receive slots, one data channel). Leaves any voice channel the user is in.
    Join {
        channel_id: Uuid,
        sdp: String,
    },
    /// Leave the current voice channel.
    Leave,
    /// Self-mute (the SFU stops forwarding this user's audio).
    Mute {
        muted: bool,
    },
    /// Self-deafen (the SFU stops forwarding audio to this user).
    Deafen {
        deafened: bool,
    },
    /// Server-mute another participant (needs `mute_members`, target ranked below).
    ServerMute {
        channel_id: Uuid,
        user_id: Uuid,
        muted: bool,
    },
    /// Disconnect another participant from voice (needs `move_members`, target ranked below).
    Disconnect {
        channel_id: Uuid,
        user_id: Uuid,
    },
    Ping,
}

/// A message from signaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerMessage {
    pub v: u16,
    /// The request this answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub body: ServerEvent,
}

/// What signaling tells a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Authenticated (first `auth`) or token replaced (later `auth`).
    Ready {
        user_id: UserId,
        expires_at: u64,
    },
    /// A request without another reply succeeded.
    Ok,
    Error {
        code: ErrorCode,
        message: String,
    },
    /// The voice join succeeded: apply `sdp` as the answer.
    Joined {
        channel_id: Uuid,
        session_id: SessionId,
        can_speak: bool,
        sdp: String,
    },
    /// The user is no longer in the voice channel, and why. Sent to every connection of the
    /// user; `session_id` names the voice session that ended, so a device whose own session
    /// is another one (a second device, or a newer join) knows it is not about it. Absent
    /// from servers older than this field.
    Left {
        channel_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
        reason: LeftReason,
    },
    /// Who is in a voice channel of one of the user's communities (full state).
    VoiceState {
        community_id: Uuid,
        channel_id: Uuid,
        participants: Vec<VoiceParticipant>,
    },
    /// A database change the user may see (`kind` as in `supabase/API.md`). `message` is
    /// present for `message.created` and `message.updated`: fetched once by signaling and
    /// delivered only to users who may read it (channel visibility; hidden messages only to
    /// `view_ban_hidden` holders).
    Event {
        kind: String,
        community_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_id: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<serde_json::Value>,
    },
    /// The access token expires within a minute: send a fresh one with `auth`.
    TokenExpiring {
        expires_at: u64,
    },
    Pong,
}

/// One participant of a voice channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceParticipant {
    pub user_id: UserId,
    pub display_name: String,
    pub muted: bool,
    pub deafened: bool,
    pub server_muted: bool,
    pub speaking: bool,
}

/// Why a user left voice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    /// They asked to.
    Left,
    /// They joined another voice channel.
    Moved,
    /// A moderator disconnected them.
    Disconnected,
    Kicked,
    Banned,
    /// They lost `connect_voice` or the channel's visibility.
    PermissionLost,
    /// The SFU node they were on went away.
    NodeLost,
    /// Their media connection failed or timed out.
    ConnectionLost,
}

/// Machine-readable error codes; `message` is for humans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No valid `auth` yet, or the token was refused.
    Unauthenticated,
    TokenExpired,
    /// The database said no (SQLSTATE 42501).
    Forbidden,
    NotVoiceChannel,
    NotInVoice,
    RateLimited,
    BadMessage,
    TooLarge,
    UnsupportedVersion,
    /// Postgres, the API or every SFU node is unreachable right now; retry later.
    Unavailable,
    /// The SFU refused the offer (bad SDP, ...).
    MediaRefused,
    Internal,
}

/// Why a client frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientDecodeError {
    #[error("message of {0} bytes exceeds the limit of {MAX_CLIENT_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl ClientDecodeError {
    /// The code to send back.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            Self::Malformed(_) => ErrorCode::BadMessage,
        }
    }
}

impl ClientMessage {
    pub fn new(id: Option<u64>, body: ClientRequest) -> Self {
        Self {
            v: CLIENT_PROTOCOL_VERSION,
            id,
            body,
        }
    }

    /// Parses one text frame; also returns the request id when the frame was JSON with an
    /// `id` even if the rest was wrong, so the error reply can name it.
    pub fn decode(text: &str) -> Result<Self, (Option<u64>, ClientDecodeError)> {
        if text.len() > MAX_CLIENT_MESSAGE_BYTES {
            return Err((None, ClientDecodeError::TooLarge(text.len())));
        }
        #[derive(Deserialize)]
        struct Head {
            v: u16,
            #[serde(default)]
            id: Option<u64>,
        }
        let head: Head = serde_json::from_str(text).map_err(|e| (None, e.into()))?;
        if head.v != CLIENT_PROTOCOL_VERSION {
            return Err((head.id, ClientDecodeError::UnsupportedVersion(head.v)));
        }
        serde_json::from_str(text).map_err(|e| (head.id, e.into()))
    }

    pub fn encode(&self) -> String {
        // Plain structs with string keys: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ServerMessage {
    pub fn new(id: Option<u64>, body: ServerEvent) -> Self {
        Self {
            v: CLIENT_PROTOCOL_VERSION,
            id,
            body,
        }
    }

    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(
            id,
            ServerEvent::Error {
                code,
                message: message.into(),
            },
        )
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_reads_like_the_docs() {
        let m = ClientMessage::decode(
            r#"{"v":1,"id":3,"type":"join","channel_id":"00000000-0000-4000-8000-000000000001","sdp":"v=0"}"#,
        )
        .unwrap();
        assert_eq!(m.id, Some(3));
        assert!(matches!(m.body, ClientRequest::Join { ref sdp, .. } if sdp == "v=0"));
        assert_eq!(ClientMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn unit_requests_have_only_a_type() {
        let m = ClientMessage::new(None, ClientRequest::Leave);
        assert_eq!(m.encode(), r#"{"v":1,"type":"leave"}"#);
        let m = ClientMessage::decode(r#"{"v":1,"type":"ping"}"#).unwrap();
        assert_eq!(m.body, ClientRequest::Ping);
    }

    #[test]
    fn bad_frames_keep_the_request_id_when_they_can() {
        let (id, e) = ClientMessage::decode(r#"{"v":1,"id":9,"type":"join"}"#).unwrap_err();
        assert_eq!(id, Some(9));
        assert_eq!(e.code(), ErrorCode::BadMessage);
        let (id, e) = ClientMessage::decode(r#"{"v":2,"id":4,"type":"ping"}"#).unwrap_err();
        assert_eq!((id, e.code()), (Some(4), ErrorCode::UnsupportedVersion));
        let (id, e) = ClientMessage::decode("not json").unwrap_err();
        assert_eq!((id, e.code()), (None, ErrorCode::BadMessage));
        let (_, e) = ClientMessage::decode(r#"{"v":1,"type":"mute","muted":"yes"}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadMessage);
        let big = format!(
            r#"{{"v":1,"type":"auth","access_token":"{}"}}"#,
            "a".repeat(70_000)
        );
        let (_, e) = ClientMessage::decode(&big).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TooLarge);
        let (_, e) = ClientMessage::decode(r#"{"v":1,"type":"launch_missiles"}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadMessage);
    }

    /// Every example in `signaling/docs/protocol.md` parses, and every message type has one.
    #[test]
    fn docs_examples_parse() {
        let doc = include_str!("../../docs/protocol.md");
        let mut client_types = std::collections::BTreeSet::new();
        let mut server_types = std::collections::BTreeSet::new();
        for (tag, block) in json_blocks(doc) {
            let value: serde_json::Value =
                serde_json::from_str(&block).unwrap_or_else(|e| panic!("{e}: {block}"));
            match tag.as_str() {
                "client" => {
                    let m = ClientMessage::decode(&block)
                        .unwrap_or_else(|(_, e)| panic!("{e}: {block}"));
                    assert_eq!(
                        serde_json::to_value(&m).unwrap(),
                        value,
                        "round trip: {block}"
                    );
                    client_types.insert(value["type"].as_str().unwrap().to_string());
                }
                "server" => {
                    let m =
                        ServerMessage::decode(&block).unwrap_or_else(|e| panic!("{e}: {block}"));
                    assert_eq!(
                        serde_json::to_value(&m).unwrap(),
                        value,
                        "round trip: {block}"
                    );
                    server_types.insert(value["type"].as_str().unwrap().to_string());
                }
                "control" => {
                    crate::control::ControlMessage::decode(block.as_bytes())
                        .unwrap_or_else(|e| panic!("{e}: {block}"));
                }
                other => panic!("json block tagged {other:?}; use client, server or control"),
            }
        }
        let want_client = [
            "auth",
            "join",
            "leave",
            "mute",
            "deafen",
            "server_mute",
            "disconnect",
            "ping",
        ];
        let want_server = [
            "ready",
            "ok",
            "error",
            "joined",
            "left",
            "voice_state",
            "event",
            "token_expiring",
            "pong",
        ];
        assert_eq!(
            client_types,
            want_client.iter().map(|s| s.to_string()).collect()
        );
        assert_eq!(
            server_types,
            want_server.iter().map(|s| s.to_string()).collect()
        );
    }

    /// The ```json <tag> blocks of a markdown document.
    pub(crate) fn json_blocks(doc: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut current: Option<(String, String)> = None;
        for line in doc.lines() {
            match (&mut current, line.strip_prefix("```")) {
                (None, Some(info)) if info.starts_with("json") => {
                    let tag = info.trim_start_matches("json").trim().to_string();
                    current = Some((tag, String::new()));
                }
                (Some(_), Some(_)) => out.extend(current.take()),
                (Some((_, body)), None) => {
                    body.push_str(line);
                    body.push('\n');
                }
                (None, _) => {}
            }
        }
        out
    }

    #[test]
    fn server_events_round_trip() {
        let msgs = [
            ServerMessage::error(Some(1), ErrorCode::Forbidden, "not permitted"),
            ServerMessage::new(
                None,
                ServerEvent::Left {
                    channel_id: Uuid::nil(),
                    session_id: Some(SessionId::new_random()),
                    reason: LeftReason::Banned,
                },
            ),
            ServerMessage::new(
                None,
                ServerEvent::Left {
                    channel_id: Uuid::nil(),
                    session_id: None,
                    reason: LeftReason::Moved,
                },
            ),
            ServerMessage::new(
                None,
                ServerEvent::Event {
                    kind: "message.created".into(),
                    community_id: Uuid::nil(),
                    channel_id: Some(Uuid::nil()),
                    user_id: None,
                    message_id: Some(Uuid::nil()),
                    message: Some(serde_json::json!({"content": "hi"})),
                },
            ),
        ];
        for m in msgs {
            assert_eq!(ServerMessage::decode(&m.encode()).unwrap(), m);
        }
        let text = ServerMessage::error(Some(1), ErrorCode::RateLimited, "slow down").encode();
        assert_eq!(
            text,
            r#"{"v":1,"id":1,"type":"error","code":"rate_limited","message":"slow down"}"#
        );
    }
}
