//! The client side of the signaling WebSocket (haven-proto `client`): a sans-IO state
//! machine that decides what to send and when to reconnect ([`SignalingMachine`]), and a thin
//! tokio-tungstenite task that moves its frames ([`socket`]).

pub mod backoff;
pub mod machine;
pub mod socket;

pub use backoff::Backoff;
pub use machine::{ConnectionPhase, SignalingEvent, SignalingMachine};
