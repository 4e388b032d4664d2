//! The signaling ↔ SFU control protocol: what travels over the QUIC control link.
//!
//! Every message is a [`ControlMessage`] envelope with a protocol version and a request id,
//! encoded as JSON. On the QUIC stream each message travels as one length-prefixed frame
//! ([`crate::framing`]); the streams and connections belong to the link, not to this crate.
//!
//! Session of a node: it dials signaling (QUIC, certificate pinned by SHA-256 fingerprint),
//! opens one bidirectional stream and sends [`ControlBody::NodeRegister`] (with the shared
//! node secret) as its first message; signaling answers `Ack` or `Error(Unauthorized)` and
//! from then on both sides send requests (id > 0, answered with the same id) and events
//! (id 0) on that stream.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, RoomId, SessionId, UserId};

/// Version spoken by this build. A peer with a different major version is refused.
pub const CONTROL_PROTOCOL_VERSION: u16 = 1;
/// TLS ALPN of the QUIC control link, version 1 (both ends must offer exactly this).
pub const CONTROL_ALPN: &[u8] = b"haven-control/1";
/// Encoded messages larger than this are refused by [`ControlMessage::decode`]; an SDP offer
/// with a few dozen m-lines is well under 64 KiB.
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlMessage {
    pub v: u16,
    /// Pairs a reply with its request; `0` for unsolicited events.
    pub id: u64,
    pub body: ControlBody,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ControlBody {
    // ----- node → signaling -----
    NodeRegister(NodeRegister),
    Heartbeat(Heartbeat),
    /// Reply to [`ControlBody::Offer`].
    Answer(Answer),
    ParticipantLeft(ParticipantLeft),
    Roster(RoomRoster),
    Speaking(SpeakingEvent),
    RoomStats(RoomStats),

    // ----- signaling → node -----
    Offer(Offer),
    Leave(Leave),
    Kick(Kick),
    ServerMute(ServerMute),
    /// The participant muted themselves: stop forwarding their audio.
    SelfMute(SelfMute),
    /// The participant deafened themselves: stop forwarding audio to them.
    Deafen(Deafen),

    // ----- either way -----
    /// Success reply to a request that has no other reply.
    Ack,
    Error(ControlError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegister {
    pub node_id: NodeId,
    /// Where clients send media (the address in ICE candidates).
    pub media_addr: SocketAddr,
    /// Most participants the node accepts.
    pub capacity: u32,
    pub load: NodeLoad,
    /// The shared node secret signaling was configured with; proves the node is ours.
    pub secret: NodeSecret,
}

/// A shared secret that must never reach a log: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeSecret(pub String);

impl NodeSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// Compares in time independent of where the first difference is, so the secret cannot
    /// be guessed byte by byte from response times.
    pub fn matches(&self, expected: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), expected.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSecret(***)")
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub participants: u32,
    pub rooms: u32,
    /// Process CPU over the last interval, per mille of one core.
    pub cpu_permille: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: NodeId,
    pub load: NodeLoad,
    /// The node is shutting down: it refuses new offers (`NodeFull`) and waits for its rooms
    /// to empty; place new rooms elsewhere. Absent (false) from older nodes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub draining: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A client's SDP offer, with the grant that admits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The room signaling means to join; must equal the grant's room.
    pub room: RoomId,
    /// Compact JWT, see [`crate::grant`].
    pub grant: String,
    pub sdp: String,
    /// Receive slots for the room (default 3). Fixed when the room is created on the node;
    /// later offers cannot change it because nobody renegotiates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub session: SessionId,
    pub sdp: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    pub session: SessionId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kick {
    pub session: SessionId,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMute {
    pub session: SessionId,
    pub muted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfMute {
    pub session: SessionId,
    pub muted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deafen {
    pub session: SessionId,
    pub deafened: bool,
}

/// Why a participant is no longer on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// Signaling asked (the user left).
    Left,
    Kicked,
    /// A newer join with the same session id took over.
    Replaced,
    /// ICE lost and not regained within the grace period.
    Disconnected,
    /// ICE/DTLS never completed.
    ConnectTimeout,
    /// The peer closed DTLS/SCTP.
    Closed,
    /// Processing this participant hit a bug; the node isolated and dropped it.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantLeft {
    pub room: RoomId,
    pub session: SessionId,
    pub user: UserId,
    pub reason: LeaveReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub session: SessionId,
    pub user: UserId,
    pub display_name: String,
    pub can_speak: bool,
    pub server_muted: bool,
    pub connected: bool,
    pub speaking: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRoster {
    pub room: RoomId,
    pub participants: Vec<RosterEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakingEvent {
    pub room: RoomId,
    pub session: SessionId,
    pub user: UserId,
    pub speaking: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomStats {
    pub room: RoomId,
    pub participants: u32,
    pub speaking: u32,
    pub rtp_in: u64,
    pub rtp_forwarded: u64,
    pub rtp_dropped: u64,
}

/// Machine-readable refusal reasons; `message` is for humans and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    GrantInvalid,
    GrantExpired,
    GrantWrongRoom,
    GrantWrongNode,
    GrantReplayed,
    BadSdp,
    NodeFull,
    UnknownSession,
    UnsupportedVersion,
    BadMessage,
    Internal,
    /// The node's registration was refused (wrong secret, or no registration first).
    Unauthorized,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlDecodeError {
    #[error("control message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("unsupported control protocol version {0}")]
    UnsupportedVersion(u16),
    #[error("malformed control message: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl ControlDecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            Self::TooLarge(_) | Self::Malformed(_) => ErrorCode::BadMessage,
        }
    }
}

impl ControlMessage {
    pub fn new(id: u64, body: ControlBody) -> Self {
        Self {
            v: CONTROL_PROTOCOL_VERSION,
            id,
            body,
        }
    }

    /// A reply carrying `body` for the request `self`.
    pub fn reply(&self, body: ControlBody) -> Self {
        Self::new(self.id, body)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain structs to a Vec cannot fail (no maps with non-string
        // keys, no custom Serialize impls that error).
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ControlDecodeError> {
        if bytes.len() > MAX_CONTROL_MESSAGE_BYTES {
            return Err(ControlDecodeError::TooLarge(bytes.len()));
        }
        // Read the version first so a newer peer gets "unsupported version", not a
        // confusing parse error about a body variant we do not know.
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u16,
        }
        let VersionOnly { v } = serde_json::from_slice(bytes)?;
        if v != CONTROL_PROTOCOL_VERSION {
            return Err(ControlDecodeError::UnsupportedVersion(v));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_round_trips_and_reads_like_the_docs() {
        let room = RoomId::new_random();
        let msg = ControlMessage::new(
            7,
            ControlBody::Offer(Offer {
                room,
                grant: "a.b.c".into(),
                sdp: "v=0".into(),
                slots: None,
            }),
        );
        let bytes = msg.encode();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"v":1,"id":7,"body":{"type":"offer","data":{"room":""#));
        assert_eq!(ControlMessage::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn every_body_round_trips() {
        let s = SessionId::new_random();
        let r = RoomId::new_random();
        let u = UserId::new_random();
        let load = NodeLoad {
            participants: 3,
            rooms: 1,
            cpu_permille: 120,
        };
        let bodies = vec![
            ControlBody::NodeRegister(NodeRegister {
                node_id: NodeId::new("n1"),
                media_addr: "192.0.2.1:3478".parse().unwrap(),
                capacity: 1000,
                load,
                secret: NodeSecret::new("s3cret"),
            }),
            ControlBody::Heartbeat(Heartbeat {
                node_id: NodeId::new("n1"),
                load,
                draining: false,
            }),
            ControlBody::Heartbeat(Heartbeat {
                node_id: NodeId::new("n1"),
                load,
                draining: true,
            }),
            ControlBody::Answer(Answer {
                session: s,
                sdp: "v=0".into(),
            }),
            ControlBody::ParticipantLeft(ParticipantLeft {
                room: r,
                session: s,
                user: u,
                reason: LeaveReason::Kicked,
            }),
            ControlBody::Roster(RoomRoster {
                room: r,
                participants: vec![RosterEntry {
                    session: s,
                    user: u,
                    display_name: "Ada".into(),
                    can_speak: true,
                    server_muted: false,
                    connected: true,
                    speaking: false,
                }],
            }),
            ControlBody::Speaking(SpeakingEvent {
                room: r,
                session: s,
                user: u,
                speaking: true,
            }),
            ControlBody::RoomStats(RoomStats {
                room: r,
                participants: 2,
                speaking: 1,
                rtp_in: 10,
                rtp_forwarded: 20,
                rtp_dropped: 0,
            }),
            ControlBody::Leave(Leave { session: s }),
            ControlBody::Kick(Kick {
                session: s,
                reason: "spam".into(),
            }),
            ControlBody::ServerMute(ServerMute {
                session: s,
                muted: true,
            }),
            ControlBody::SelfMute(SelfMute {
                session: s,
                muted: true,
            }),
            ControlBody::Deafen(Deafen {
                session: s,
                deafened: false,
            }),
            ControlBody::Ack,
            ControlBody::Error(ControlError {
                code: ErrorCode::GrantReplayed,
                message: "used".into(),
            }),
        ];
        for body in bodies {
            let msg = ControlMessage::new(1, body);
            assert_eq!(ControlMessage::decode(&msg.encode()).unwrap(), msg);
        }
    }

    #[test]
    fn heartbeats_without_the_draining_flag_still_decode() {
        let old = br#"{"v":1,"id":0,"body":{"type":"heartbeat","data":{"node_id":"n1","load":{"participants":1,"rooms":1,"cpu_permille":5}}}}"#;
        match ControlMessage::decode(old).unwrap().body {
            ControlBody::Heartbeat(h) => assert!(!h.draining),
            other => panic!("not a heartbeat: {other:?}"),
        }
        let busy = ControlMessage::new(
            0,
            ControlBody::Heartbeat(Heartbeat {
                node_id: NodeId::new("n1"),
                load: NodeLoad::default(),
                draining: false,
            }),
        );
        assert!(!String::from_utf8(busy.encode())
            .unwrap()
            .contains("draining"));
    }

    #[test]
    fn node_secrets_stay_out_of_logs_and_compare_exactly() {
        let secret = NodeSecret::new("hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "NodeSecret(***)");
        assert!(secret.matches("hunter2-hunter2"));
        assert!(!secret.matches("hunter2-hunter3"));
        assert!(!secret.matches("hunter2"));
        assert!(!NodeSecret::new("").matches("x"));
    }

    #[test]
    fn refuses_other_versions_garbage_and_huge_input() {
        let newer = br#"{"v":2,"id":1,"body":{"type":"warp","data":{}}}"#;
        assert!(matches!(
            ControlMessage::decode(newer),
            Err(ControlDecodeError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            ControlMessage::decode(b"\x00\xff"),
            Err(ControlDecodeError::Malformed(_))
        ));
        let unknown = br#"{"v":1,"id":1,"body":{"type":"warp","data":{}}}"#;
        assert_eq!(
            ControlMessage::decode(unknown).unwrap_err().code(),
            ErrorCode::BadMessage
        );
        let huge = vec![b' '; MAX_CONTROL_MESSAGE_BYTES + 1];
        assert!(matches!(
            ControlMessage::decode(&huge),
            Err(ControlDecodeError::TooLarge(_))
        ));
    }
}
