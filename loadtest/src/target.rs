//! What the simulated participants join: the seam that lets the same load run against
//! different SFUs and topologies.
//!
//! A target takes join requests (an SDP offer plus who is joining) and answers each one,
//! asynchronously, through a [`ReplyTo`] that wakes the asking worker; it also says which
//! process (or thread) to measure and, when it can, how many packets the SFU forwarded.
//!
//! Kinds:
//! - `engine-thread`: haven-sfu's `SfuEngine` in a thread of this process, over real loopback
//!   UDP (see `engine_shell.rs`); grants minted here with a `GrantSigner`, as signaling would.
//! - `engine-process`: the same engine in a child process (`haven-loadtest serve-engine`), so
//!   its CPU and RSS are its own (the default).
//! - `haven-sfu`: the real binary, with the harness as its control peer (`sfu_node.rs`).
//! - `stack`: haven-signaling + haven-sfu + local Supabase, joins over the signaling
//!   WebSocket with real user JWTs (`stack_target.rs`).
//! - mesh runs need no target: workers connect the peers to each other.

use std::fmt;
use std::str::FromStr;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use haven_proto::{RoomId, SessionId, UserId};

use crate::procstat::ProcTarget;

/// One participant asks to join.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub room: RoomId,
    /// Receive slots the room is created with.
    pub slots: u8,
    pub user: UserId,
    pub session: SessionId,
    pub display_name: String,
    pub can_speak: bool,
    pub sdp: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinFailure {
    /// Short machine-readable kind (error counters are keyed by it).
    pub kind: String,
    pub message: String,
}

impl JoinFailure {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// The SDP answer, or why not.
pub type JoinResult = Result<String, JoinFailure>;

/// Where a join's answer goes: the asking worker's channel, plus a wake-up of its poll loop.
pub struct ReplyTo {
    pub client: usize,
    pub tx: Sender<(usize, JoinResult)>,
    pub waker: Arc<mio::Waker>,
}

impl ReplyTo {
    pub fn send(self, result: JoinResult) {
        // The worker may have finished already; then nobody needs the answer.
        if self.tx.send((self.client, result)).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// Counters the SFU itself keeps, when the target can read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SfuCounters {
    /// RTP packets sent to subscribers (the denominator of CPU per forwarded packet).
    pub forwarded: u64,
    pub rtp_in: u64,
    pub udp_in: u64,
    pub udp_out: u64,
    pub send_errors: u64,
    pub participants: u64,
}

pub trait SfuTarget: Send + Sync {
    fn name(&self) -> String;
    /// Answer asynchronously through `reply`; never block the caller for long.
    fn join(&self, req: JoinRequest, reply: ReplyTo);
    /// The process or thread whose CPU and memory are "the SFU's".
    fn measured(&self) -> Option<ProcTarget>;
    /// True when `measured` is a whole process of its own (so its RSS is the SFU's).
    fn rss_is_own(&self) -> bool;
    fn counters(&self) -> Option<SfuCounters>;
    /// Stop the target. For a process of its own: whether it exited by itself with status 0
    /// (`false`: it failed or had to be killed); `None` for in-process targets and on a
    /// second call.
    fn shutdown(&self) -> Option<bool>;
}

/// The targets `--target` / `--compare` accept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    EngineThread,
    EngineProcess,
    HavenSfu,
    Stack,
    Mesh,
}

impl TargetKind {
    pub fn is_mesh(&self) -> bool {
        matches!(self, Self::Mesh)
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EngineThread => "engine-thread",
            Self::EngineProcess => "engine-process",
            Self::HavenSfu => "haven-sfu",
            Self::Stack => "stack",
            Self::Mesh => "mesh",
        })
    }
}

impl FromStr for TargetKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "engine-thread" | "thread" => Self::EngineThread,
            "engine-process" | "engine" | "sfu" => Self::EngineProcess,
            "haven-sfu" => Self::HavenSfu,
            "stack" => Self::Stack,
            "mesh" => Self::Mesh,
            other => {
                return Err(format!(
                    "unknown target `{other}` (engine, engine-thread, haven-sfu, stack, mesh)"
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip() {
        for k in [
            TargetKind::EngineThread,
            TargetKind::EngineProcess,
            TargetKind::HavenSfu,
            TargetKind::Stack,
            TargetKind::Mesh,
        ] {
            assert_eq!(k.to_string().parse::<TargetKind>().unwrap(), k);
        }
        assert_eq!(
            "sfu".parse::<TargetKind>().unwrap(),
            TargetKind::EngineProcess
        );
        assert!("nope".parse::<TargetKind>().is_err());
    }
}
