//! haven-loadtest: the voice-room load harness (issue 5).
//!
//! Simulated participants are real clients: str0m peers negotiated from the same
//! `haven_rtc_config()` as the SFU, on their own UDP sockets, sending real Opus encoded once
//! with libopus. They join a target (the SFU engine in a thread or a child process, the real
//! `haven-sfu` binary, or the full stack over the signaling WebSocket) or each other (mesh),
//! and the harness measures what performance.md defines.
//!
//! Code map:
//! - [`scenario`]: flags, scenario file, the seeded plan (rooms, participants, join times).
//! - [`audio`]: speech-like audio → Opus frame table (once per run).
//! - [`client`]: one participant's peers, streams and slot map.
//! - [`fleet`]: a worker thread driving many participants (mio + timer heap, sans-IO).
//! - [`latency`]: matching received payloads to their send time.
//! - [`stats`]: RFC 3550 loss/jitter, late packets, histograms.
//! - [`impair`]: seeded loss/jitter/reorder on the clients' datagram paths.
//! - [`procstat`]: /proc CPU and RSS sampling, steady-window arithmetic.
//! - [`target`]: what participants join (trait + kinds); [`engine_shell`] the engine over UDP;
//!   [`sfu_node`] the real `haven-sfu` binary (with [`control_peer`] as its signaling);
//!   [`stack_target`] the whole local stack, joined over the signaling WebSocket.
//! - [`echo`]: the plain UDP echo baseline for SFU-added latency; [`relay`]: the plain UDP
//!   relay baseline for CPU per forwarded packet.
//! - [`run`]: one run from start to figures; [`report`]: table, JSON, HTML/SVG.

pub mod audio;
pub mod client;
pub mod control_peer;
pub mod echo;
pub mod engine_shell;
pub mod fleet;
pub mod impair;
pub mod latency;
pub mod procstat;
pub mod relay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sfu_node;
pub mod stack_target;
pub mod stats;
pub mod target;

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("audio: {0}")]
    Audio(#[from] audio::AudioError),
    #[error("scenario: {0}")]
    Scenario(String),
    #[error("target: {0}")]
    Target(String),
    #[error("report: {0}")]
    Report(String),
}
