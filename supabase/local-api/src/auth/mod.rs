//! `/auth/v1`: the project's dev-only subset of the GoTrue (Supabase Auth) HTTP API.
//!
//! Real GoTrue cannot be installed here, and the desktop client, signaling service and tests
//! need sign-up, sign-in and refresh against the same contract they use in production. What the
//! subset does not implement is listed in supabase/local-api/README.md.

mod error;
mod handlers;
mod password;
mod rate_limit;
mod store;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

pub use error::AuthError;
pub use store::AuthStore;
pub use tokens::AccessClaims;

use crate::signing::SigningKey;
use rate_limit::FailureLimiter;

/// Failed password sign-ins allowed per email per window.
const MAX_FAILED_SIGN_INS: usize = 30;
const FAILED_SIGN_IN_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Shared state of the auth endpoints.
pub struct AuthState {
    store: AuthStore,
    key: Arc<SigningKey>,
    issuer: String,
    jwt_expiry_secs: u64,
    bcrypt_cost: u32,
    max_body_bytes: usize,
    limiter: FailureLimiter,
}

/// How the auth service is set up.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `iss` of issued tokens.
    pub issuer: String,
    /// Access token lifetime.
    pub jwt_expiry_secs: u64,
    /// bcrypt cost of new hashes.
    pub bcrypt_cost: u32,
    /// Largest accepted body.
    pub max_body_bytes: usize,
}

impl AuthState {
    /// State over `store`, signing with `key`.
    pub fn new(store: AuthStore, key: Arc<SigningKey>, settings: AuthSettings) -> Self {
        Self {
            store,
            key,
            issuer: settings.issuer,
            jwt_expiry_secs: settings.jwt_expiry_secs,
            bcrypt_cost: settings.bcrypt_cost,
            max_body_bytes: settings.max_body_bytes,
            limiter: FailureLimiter::new(MAX_FAILED_SIGN_INS, FAILED_SIGN_IN_WINDOW),
        }
    }
}

/// The routes, to be nested at `/auth/v1`.
pub fn router(state: Arc<AuthState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/signup", post(handlers::signup))
        .route("/token", post(handlers::token))
        .route("/user", get(handlers::user))
        .route("/logout", post(handlers::logout))
        .route("/.well-known/jwks.json", get(handlers::jwks))
        .route("/health", get(handlers::health))
        .route("/admin/users", post(handlers::admin_create_user))
        .route("/admin/users/{id}", delete(handlers::admin_delete_user))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
