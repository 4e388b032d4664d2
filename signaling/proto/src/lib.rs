//! Wire protocol shared by the client, signaling and the SFU.
//!
//! - [`client`]: the client ↔ signaling WebSocket protocol.
//! - [`control`]: the signaling ↔ SFU control link (versioned JSON envelope).
//! - [`framing`]: length-prefixed frames for control messages on the QUIC stream.
//! - [`grant`]: join grants, the ES256 tokens signaling mints and the SFU verifies.
//! - [`datachannel`]: what the SFU tells each client over its data channel.
//! - [`ids`]: typed ids used by all of the above.
//! - [`speaking`]: audio level → speaking, the same on the SFU and in the client.
//! - `media` (feature `media`): the str0m media profile every Haven peer builds from.
//!
//! Kept free of networking and async code so every side can depend on it cheaply.

pub mod client;
pub mod control;
pub mod datachannel;
pub mod framing;
pub mod grant;
pub mod ids;
#[cfg(feature = "media")]
pub mod media;
pub mod speaking;

pub use ids::{NodeId, RoomId, SessionId, UserId};
