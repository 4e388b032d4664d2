//! Assembles the stand-in on one port (REST and Auth, as Supabase's gateway does) and runs it
//! until shutdown.
//!
//! Order matters: bind first (so port 0 works and the issuer names the real port), then load
//! the key and connect, then write api.json, so a reader of api.json can rely on the server
//! being ready to answer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use crate::api_keys::{write_api_info, ApiInfo, ApiKeys};
use crate::auth::{self, AuthSettings, AuthState, AuthStore};
use crate::config::{default_issuer, Args, ConfigError};
use crate::gates::{self, ApiKeyGate, BodyLimit};
use crate::rest::{self, RestError, RestSettings};
use crate::signing::{KeyError, SigningKey};

/// Why the stand-in did not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Refused configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Could not bind the listen address.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Signing key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// REST layer did not start.
    #[error(transparent)]
    Rest(#[from] RestError),
    /// Auth database unreachable or missing the shim's tables.
    #[error("auth database: {0}")]
    AuthDb(String),
    /// Could not write api.json.
    #[error("could not write {path}: {source}")]
    StateFile {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// The running stand-in's description, as written to api.json.
pub type Started = ApiInfo;

/// Run until `shutdown` resolves. `on_start` gets the description once the server is ready.
pub async fn serve(
    args: Args,
    on_start: impl FnOnce(&Started),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    args.validate()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: args.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: args.listen,
        source,
    })?;
    let url = format!("http://{bound}");
    let issuer = args
        .site_issuer
        .clone()
        .unwrap_or_else(|| default_issuer(bound));

    let key = Arc::new(SigningKey::load_or_generate(&args.state_dir)?);
    let keys = Arc::new(ApiKeys::load_or_issue(&args.state_dir, &key)?);

    let pool = PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&args.auth_db_uri)
        .await
        .map_err(|e| ServeError::AuthDb(format!("could not connect: {e}")))?;
    // Fail at start, not at the first signup, when the shim was not applied.
    sqlx::query("select 1 from auth.users, auth.sessions, auth.refresh_tokens limit 0")
        .execute(&pool)
        .await
        .map_err(|e| {
            ServeError::AuthDb(format!(
                "auth.users/sessions/refresh_tokens are not usable (apply supabase/local-shim.sql): {e}"
            ))
        })?;
    let rest = rest::router(
        &RestSettings {
            db_uri: args.rest_db_uri.clone(),
            jwks_json: key.jwks().to_string(),
            pool_size: args.rest_pool_size,
            max_body_bytes: args.max_body_bytes,
        },
        pool.clone(),
    )
    .await?;
    let auth_state = Arc::new(AuthState::new(
        AuthStore::new(pool),
        key.clone(),
        AuthSettings {
            issuer: issuer.clone(),
            jwt_expiry_secs: args.jwt_expiry_secs,
            bcrypt_cost: args.bcrypt_cost,
            max_body_bytes: args.max_body_bytes,
        },
    ));

    let app = app(
        rest,
        auth::router(auth_state),
        keys.clone(),
        args.max_body_bytes,
    );

    let info = ApiInfo {
        url: url.clone(),
        anon_key: keys.anon.clone(),
        service_role_key: keys.service_role.clone(),
        jwks_url: format!("{url}/auth/v1/.well-known/jwks.json"),
        issuer,
    };
    write_api_info(&args.state_dir, &info).map_err(|source| ServeError::StateFile {
        path: args
            .state_dir
            .join(crate::api_keys::API_FILE)
            .display()
            .to_string(),
        source,
    })?;
    on_start(&info);

    axum::serve(postrust_server::lenient_uri::LenientListener(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve)
}

/// The whole surface: `/rest/v1`, `/auth/v1` and a key-less `/healthz` for readiness probes.
pub fn app(rest: Router, auth: Router, keys: Arc<ApiKeys>, max_body_bytes: usize) -> Router {
    let rest_gate = ApiKeyGate {
        keys: keys.clone(),
        apikey_as_bearer: true,
        open_paths: &[],
    };
    let auth_gate = ApiKeyGate {
        keys,
        apikey_as_bearer: false,
        open_paths: &["/.well-known/jwks.json", "/health"],
    };
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .nest(
            "/rest/v1",
            rest.layer(axum::middleware::from_fn_with_state(
                rest_gate,
                gates::require_apikey,
            )),
        )
        .nest(
            "/auth/v1",
            auth.layer(axum::middleware::from_fn_with_state(
                auth_gate,
                gates::require_apikey,
            )),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"message": "no route; the API is under /rest/v1 and /auth/v1"})),
            )
                .into_response()
        })
        .layer(axum::middleware::from_fn_with_state(
            BodyLimit {
                max_bytes: max_body_bytes,
            },
            gates::limit_body,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
