//! Command-line flags of `haven-signaling`, each with an environment fallback, and the
//! checks that must pass before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Flags (and environment variables) of the signaling service.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "haven-signaling",
    version,
    about = "Haven signaling: client WebSocket (/v1/ws), voice-join authorization, SFU placement and control, live events"
)]
pub struct Config {
    /// HTTP address for /v1/ws, /healthz and /metrics.
    #[arg(long, env = "HAVEN_SIGNALING_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// UDP address of the QUIC control endpoint SFU nodes dial.
    #[arg(long, env = "HAVEN_NODE_LISTEN", default_value = "127.0.0.1:4433")]
    pub node_listen: SocketAddr,

    /// Supabase project URL (REST RPCs are called as each user through it).
    #[arg(long, env = "SUPABASE_URL")]
    pub supabase_url: String,

    /// Supabase anon key (sent as `apikey`; the user's JWT is the bearer).
    #[arg(long, env = "SUPABASE_ANON_KEY", hide_env_values = true)]
    pub supabase_anon_key: String,

    /// Legacy HS256 project JWT secret. Give this, --jwks-url, or both.
    #[arg(long, env = "SUPABASE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// JWKS URL of the project's asymmetric signing keys (ES256/RS256), e.g.
    /// `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`.
    #[arg(long, env = "SUPABASE_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Expected `iss` of access tokens. Defaults to `<SUPABASE_URL>/auth/v1`.
    #[arg(long, env = "SUPABASE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Postgres URL for LISTEN and service-role checks (a role that may `SET ROLE
    /// service_role`, e.g. the project's `postgres` user).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Shared secret SFU nodes present when they register.
    #[arg(long, env = "HAVEN_NODE_SECRET", hide_env_values = true)]
    pub node_secret: String,

    /// PEM file with the P-256 key that signs join grants (PKCS#8 or SEC1). Without it, a
    /// key is generated once in --state-dir.
    #[arg(long, env = "HAVEN_GRANT_KEY_FILE")]
    pub grant_key_file: Option<PathBuf>,

    /// Where the node TLS certificate (pinned by nodes) and a generated grant key are kept.
    #[arg(
        long,
        env = "HAVEN_SIGNALING_STATE_DIR",
        default_value = ".haven/signaling"
    )]
    pub state_dir: PathBuf,

    /// Seconds without a heartbeat after which a node gets no new rooms.
    #[arg(long, env = "HAVEN_NODE_HEARTBEAT_TIMEOUT_SECS", default_value_t = 15)]
    pub node_heartbeat_timeout_secs: u64,

    /// Seconds a voice session survives after its user's last WebSocket closed.
    #[arg(long, env = "HAVEN_VOICE_GRACE_SECS", default_value_t = 15)]
    pub voice_grace_secs: u64,

    /// Most simultaneous connections of one user.
    #[arg(long, env = "HAVEN_MAX_CONNECTIONS_PER_USER", default_value_t = 8)]
    pub max_connections_per_user: usize,

    /// Messages queued per connection before it counts as a slow consumer and is closed.
    #[arg(long, env = "HAVEN_SEND_QUEUE", default_value_t = 256)]
    pub send_queue: usize,

    /// Client messages per second (sustained) per connection.
    #[arg(long, env = "HAVEN_WS_RATE", default_value_t = 10.0)]
    pub ws_rate: f64,

    /// Client message burst per connection.
    #[arg(long, env = "HAVEN_WS_BURST", default_value_t = 30)]
    pub ws_burst: u32,

    /// Voice joins per second (sustained) per connection.
    #[arg(long, env = "HAVEN_JOIN_RATE", default_value_t = 0.5)]
    pub join_rate: f64,

    /// Voice join burst per connection.
    #[arg(long, env = "HAVEN_JOIN_BURST", default_value_t = 5)]
    pub join_burst: u32,

    /// Service-role database connections.
    #[arg(long, env = "HAVEN_DB_POOL", default_value_t = 4)]
    pub db_pool: usize,

    /// Log as JSON lines.
    #[arg(long, env = "HAVEN_LOG_JSON", default_value_t = false)]
    pub log_json: bool,

    /// Once listening, write `{http_addr, node_addr, node_fingerprint, grant_public_key_pem}`
    /// as JSON to this file, for supervisors (xtask, the load harness) that start SFU nodes.
    #[arg(long, env = "HAVEN_SIGNALING_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "give the project's JWT secret (SUPABASE_JWT_SECRET) or its JWKS URL (SUPABASE_JWKS_URL)"
    )]
    NoTokenKeys,
    #[error("the node secret must be at least 16 characters")]
    WeakNodeSecret,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt_secret.as_deref().is_none_or(str::is_empty)
            && self.jwks_url.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::NoTokenKeys);
        }
        if self.node_secret.len() < 16 {
            return Err(ConfigError::WeakNodeSecret);
        }
        Ok(())
    }

    /// The issuer tokens must carry.
    pub fn issuer(&self) -> String {
        self.jwt_issuer
            .clone()
            .unwrap_or_else(|| format!("{}/auth/v1", self.supabase_url.trim_end_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let mut args = vec![
            "haven-signaling",
            "--supabase-url",
            "http://127.0.0.1:54321/",
            "--supabase-anon-key",
            "anon",
            "--database-url",
            "postgres://x",
        ];
        if !extra.contains(&"--node-secret") {
            args.extend_from_slice(&["--node-secret", "0123456789abcdef"]);
        }
        args.extend_from_slice(extra);
        Config::try_parse_from(args)
    }

    #[test]
    fn needs_a_way_to_verify_tokens() {
        let c = parse(&[]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::NoTokenKeys)));
        let c = parse(&[
            "--jwks-url",
            "http://127.0.0.1:54321/auth/v1/.well-known/jwks.json",
        ])
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.issuer(), "http://127.0.0.1:54321/auth/v1");
        let c = parse(&["--jwt-secret", "s", "--node-secret", "short"]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::WeakNodeSecret)));
    }
}
