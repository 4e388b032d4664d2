//! Haven desktop client: a UI-free core and a Slint UI that is a thin layer over it.
//!
//! The core is split so every piece can be tested without a display or a sound card:
//! - [`core`]: session (sign up/in, refresh, persisted 0600 session file), communities,
//!   channels, messages (keyset paging + a live-merging store), the permission snapshot.
//! - [`signaling`]: the client side of haven-proto's WebSocket protocol as a sans-IO state
//!   machine (reconnect with backoff, rejoin voice) plus a thin tokio-tungstenite driver.
//! - [`voice`]: the voice model (roster, speaking, mute/deafen/PTT) and the sans-IO voice
//!   engine (resample → denoise → Opus → RTP; jitter buffer → decode/PLC/FEC → mix), the
//!   str0m media wrapper, and audio devices behind a `cpal::Host`.
//! - [`headless`]: the core pieces as a UI-free voice client (bots, end-to-end tests).
//! - [`ui`]: binds the Slint components (ui/*.slint) to the core; no logic of its own.

pub mod core;
pub mod headless;
pub mod signaling;
pub mod ui;
pub mod voice;

pub use crate::core::error::CoreError;
