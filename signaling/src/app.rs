//! Everything a request handler needs, built once from the configuration: the shared hub,
//! the token verifier, the Supabase client (RPCs as the user), the service-role database,
//! the grant signer and the tunables.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use haven_proto::grant::{GrantError, GrantSigner};
use haven_supabase::{HavenClient, ProjectConfig};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hub::Hub;
use crate::jwks::{TokenVerifier, DEFAULT_REFETCH_COOLDOWN};
use crate::jwt::KeyRing;
use crate::metrics::Metrics;
use crate::placement::Placement;
use crate::service_db::ServiceDb;
use crate::session::SessionConfig;

/// Timings of the voice path.
#[derive(Debug, Clone, Copy)]
pub struct VoiceSettings {
    /// How long a control request to a node may take.
    pub node_request_timeout: Duration,
    /// Lifetime of a join grant (≤ 60 s).
    pub grant_lifetime: Duration,
    /// A voice session outlives its user's last connection by this much.
    pub grace: Duration,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        Self {
            node_request_timeout: Duration::from_secs(5),
            grant_lifetime: Duration::from_secs(30),
            grace: Duration::from_secs(15),
        }
    }
}

pub struct App {
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub verifier: Arc<TokenVerifier>,
    pub supabase: HavenClient,
    pub db: ServiceDb,
    pub grants: GrantSigner,
    pub node_secret: String,
    pub session: SessionConfig,
    pub voice: VoiceSettings,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
    /// `application_name` of this instance's LISTEN connection.
    pub listener_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("Supabase client: {0}")]
    Supabase(#[from] haven_supabase::Error),
    #[error("grant key {path}: {reason}")]
    GrantKey { path: String, reason: String },
}

impl App {
    pub async fn from_config(
        config: &Config,
        shutdown: CancellationToken,
    ) -> Result<Self, AppError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let mut ring = KeyRing::new(Some(config.issuer()));
        if let Some(secret) = config.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
            ring = ring.with_hs256_secret(secret.as_bytes());
        }
        let verifier = match config.jwks_url.as_deref().filter(|s| !s.is_empty()) {
            Some(url) => {
                TokenVerifier::with_jwks(
                    ring,
                    url.to_string(),
                    DEFAULT_REFETCH_COOLDOWN,
                    Arc::clone(&metrics),
                )
                .await
            }
            None => TokenVerifier::fixed(ring, Arc::clone(&metrics)),
        };
        let verifier = Arc::new(verifier);
        verifier.spawn_periodic_refresh(Duration::from_secs(600), shutdown.clone());
        let supabase = HavenClient::new(ProjectConfig::new(
            config.supabase_url.clone(),
            config.supabase_anon_key.clone(),
        )?)?;
        let grants = load_grant_key(config)?;
        let hub = Hub::new(
            Placement::new(Duration::from_secs(
                config.node_heartbeat_timeout_secs.max(1),
            )),
            Arc::clone(&metrics),
            config.send_queue.max(8),
            config.max_connections_per_user.max(1),
        );
        Ok(Self {
            hub,
            metrics,
            verifier,
            supabase,
            db: ServiceDb::new(config.database_url.clone(), config.db_pool),
            grants,
            node_secret: config.node_secret.clone(),
            session: SessionConfig {
                messages: crate::rate_limit::RateLimit::new(config.ws_burst.max(1), config.ws_rate),
                joins: crate::rate_limit::RateLimit::new(
                    config.join_burst.max(1),
                    config.join_rate,
                ),
                ..SessionConfig::default()
            },
            voice: VoiceSettings {
                grace: Duration::from_secs(config.voice_grace_secs),
                ..VoiceSettings::default()
            },
            shutdown,
            listener_name: format!(
                "haven-signaling listener {}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        })
    }
}

/// The configured key, or one generated once in the state directory (its public half is
/// written next to it, `grant-public-key.pem`, for the SFU's configuration).
fn load_grant_key(config: &Config) -> Result<GrantSigner, AppError> {
    let err = |path: &Path, reason: String| AppError::GrantKey {
        path: path.display().to_string(),
        reason,
    };
    let signer = match &config.grant_key_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| err(path, e.to_string()))?;
            GrantSigner::from_private_key_pem(&pem)
                .map_err(|e: GrantError| err(path, e.to_string()))?
        }
        None => {
            let path = config.state_dir.join("grant-key.pem");
            if path.exists() {
                let pem = std::fs::read_to_string(&path).map_err(|e| err(&path, e.to_string()))?;
                GrantSigner::from_private_key_pem(&pem)
                    .map_err(|e: GrantError| err(&path, e.to_string()))?
            } else {
                let signer =
                    GrantSigner::generate().map_err(|e: GrantError| err(&path, e.to_string()))?;
                std::fs::create_dir_all(&config.state_dir)
                    .map_err(|e| err(&config.state_dir, e.to_string()))?;
                write_private(&path, signer.to_pkcs8_pem().as_bytes())
                    .map_err(|e| err(&path, e.to_string()))?;
                signer
            }
        }
    };
    let public = config.state_dir.join("grant-public-key.pem");
    if let Ok(pem) = signer.public_key_pem() {
        if std::fs::create_dir_all(&config.state_dir).is_ok() {
            let _ = std::fs::write(&public, pem);
        }
    }
    Ok(signer)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}
