//! Typed client for Haven's Supabase project: Auth (sign up, sign in, refresh, sign out) and
//! every RPC of supabase/API.md, plus service-role operations for seeding and admin jobs.
//!
//! The same code talks to a hosted project (its URL and anon key) and to the local stand-in
//! started by `cargo xtask up`; the contract tests in `tests/` run against both. Errors are
//! typed on SQLSTATE and HTTP status ([`Error`]), never on message text.
//!
//! ```no_run
//! # async fn demo() -> Result<(), haven_supabase::Error> {
//! use haven_supabase::{HavenClient, ProjectConfig};
//! let client = HavenClient::new(ProjectConfig::from_env()?)?;
//! let session = client.sign_in_with_password("demo@haven.local", "haven-demo-password").await?;
//! let me = client.as_user(&session.access_token);
//! let community = me.create_community("Book club", None).await?;
//! if let Some(lounge) = me.find_voice_channel(community, "Lounge").await? {
//!     let grant = me.authorize_voice_join(lounge.id).await?;
//!     println!("join room {}", grant.room);
//! }
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod config;
mod error;
pub mod models;
mod rpc;
mod service;

pub use auth::{Session, SignOutScope, User};
pub use client::HavenClient;
pub use config::ProjectConfig;
pub use error::{Error, ErrorDetail};
pub use models::*;
pub use rpc::{RpcArgs, UserApi};
pub use service::{ServiceClient, TestUser};
