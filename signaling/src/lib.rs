//! Haven's signaling service: verifies Supabase access tokens, authorizes voice joins
//! through row-level-security RPCs as the user, places rooms on SFU nodes and drives them
//! over a QUIC control link, and fans out live database events to the users who may see them.
//!
//! Code map (sans-IO cores first, then the IO shells around them):
//! - [`session`]: one WebSocket connection's protocol state (auth, limits), no IO.
//! - [`rate_limit`]: token buckets with time as an input.
//! - [`rooms`]: who is in which voice room, in which state.
//! - [`placement`]: SFU node registry and room → node placement.
//! - [`visibility`]: the fan-out filter cache with epoch-checked invalidation.
//! - [`db_event`]: typed NOTIFY payloads.
//! - [`jwt`]: access-token verification against a key ring; [`jwks`] keeps it current.
//! - [`hub`]: shared state (connections, memberships, registries) and bounded delivery.
//! - [`voice`]: join/leave/mute/moderation flows and SFU node reports.
//! - [`revocation`]: removing people from voice when events take their rights away.
//! - [`fanout`]: per-user event delivery and roster broadcasting.
//! - [`events`]: the Postgres LISTEN connection (reconnects with backoff).
//! - [`service_db`]: service-role queries (`*_as` functions, message content).
//! - [`sfu_link`]: the QUIC server SFU nodes dial; [`node_tls`] its pinned certificate.
//! - [`ws`], [`http`]: the WebSocket endpoint, `/healthz`, `/metrics`.
//! - [`app`], [`config`], [`server`], [`metrics`]: wiring, flags, lifecycle, Prometheus.

pub mod app;
pub mod config;
pub mod db_event;
pub mod events;
pub mod fanout;
pub mod http;
pub mod hub;
pub mod jwks;
pub mod jwt;
pub mod metrics;
pub mod node_tls;
pub mod placement;
pub mod rate_limit;
pub mod revocation;
pub mod rooms;
pub mod server;
pub mod service_db;
pub mod session;
pub mod sfu_link;
pub mod visibility;
pub mod voice;
pub mod ws;

pub use config::Config;
pub use server::{start, RunningServer};
