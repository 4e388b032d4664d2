//! Haven's SFU media node: selective forwarding of Opus RTP with str0m.
//!
//! The core is sans-IO: [`SfuEngine`] owns many participants' str0m `Rtc`s and their rooms
//! and is driven only by datagrams, control requests and `Instant`s. Sockets, threads, the
//! QUIC control link and the HTTP surface are a thin shell around it in [`node`], and the
//! `haven-sfu` binary (`src/main.rs`) only parses flags and runs a [`node::SfuNode`].
//!
//! Code map:
//! - [`node`]: the IO shell: workers, batched UDP, control link, metrics, drain.
//! - [`engine`]: the engine: demux, timers, admission, forwarding, events.
//! - [`participant`]: one participant's `Rtc` and the drive/drain discipline.
//! - [`egress`]: the lean egress path: RTP headers and SRTP for forwarded packets.
//! - [`ingress`]: the lean ingress path: publishers' SRTP opened without str0m.
//! - [`room`]: a voice room: members, speaker selection, counters.
//! - [`speakers`]: which speakers go into the N receive slots (pure logic).
//! - [`slots`]: one receive slot's SSRC/sequence/timestamp continuity (pure logic).
//! - level smoothing and speaking detection live in `haven_proto::speaking` (shared with the
//!   client, which runs the same meter on what it hears).
//! - [`admission`]: join grant checks and the replay cache.
//! - `negotiation`: answering an offer and checking what it asks for.
//! - [`offer`]: the m-line layout of a client offer (publish track, slots).
//! - [`demux`]: classifying datagrams (RFC 7983) and reading the STUN ufrag.
//! - [`timers`]: the deadline heap.
//! - [`counters`]: drop reasons and traffic counters.
//! - [`media`]: the str0m configuration every Haven peer uses.
//! - [`config`]: engine settings.

pub mod admission;
pub mod config;
pub mod counters;
pub mod demux;
pub mod egress;
pub mod engine;
pub mod ingress;
pub mod media;
mod negotiation;
pub mod node;
pub mod offer;
pub mod participant;
pub mod room;
pub mod slots;
pub mod speakers;
pub mod stun;
pub mod timers;

pub use config::SfuConfig;
pub use counters::{Counters, DropReason};
pub use engine::{EngineError, JoinError, SfuEngine, SfuEvent, UnknownSession};
pub use participant::{ParticipantId, Transmit};
