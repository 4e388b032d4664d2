//! The UI-free core: everything the client knows and does against Supabase, as plain async
//! functions and data structures that tests drive against the real local stack.

pub mod channels;
pub mod communities;
pub mod config;
pub mod error;
pub mod messages;
pub mod permissions;
pub mod session;
pub mod settings;

pub use channels::{ChannelSection, ChannelTree};
pub use communities::Communities;
pub use config::ClientConfig;
pub use error::{BannerKind, CoreError};
pub use messages::{ChatMessage, MessageStore, Messages};
pub use permissions::PermissionSnapshot;
pub use session::{SessionFile, SessionManager};
pub use settings::Settings;
