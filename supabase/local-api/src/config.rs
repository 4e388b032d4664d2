//! Command-line flags (with environment fallbacks) and the checks that make them safe to run.
//!
//! The stand-in serves unauthenticated signups and prints a service-role key, so it must never
//! be reachable from another machine: a non-loopback listen address is refused here, before
//! anything binds.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Flags of `haven-local-api`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "haven-local-api",
    // A later flag overrides an earlier one (and its env fallback), so wrappers can append.
    args_override_self = true,
    about = "Local Supabase stand-in: REST (postrust-server) under /rest/v1 and a dev-only GoTrue subset under /auth/v1"
)]
pub struct Args {
    /// Address to serve on. Loopback only; port 0 picks a free port (the chosen URL is written
    /// to <state-dir>/api.json).
    #[arg(long, env = "HAVEN_API_LISTEN", default_value = "127.0.0.1:54321")]
    pub listen: SocketAddr,

    /// Postgres URI the REST layer connects with, as the `authenticator` role (like PostgREST).
    #[arg(long, env = "PGRST_DB_URI")]
    pub rest_db_uri: String,

    /// Postgres URI the auth service connects with: the database owner, which may write the
    /// `auth.*` tables (GoTrue's own connection on a hosted project).
    #[arg(long, env = "HAVEN_AUTH_DB_URI")]
    pub auth_db_uri: String,

    /// Directory for the ES256 signing key (kept across restarts, so issued tokens stay valid)
    /// and for api.json (URL, keys, JWKS URL, issuer).
    #[arg(long, env = "HAVEN_API_STATE_DIR", default_value = ".haven/api")]
    pub state_dir: PathBuf,

    /// Lifetime of issued access tokens, in seconds (GoTrue's `JWT_EXP`).
    #[arg(long, env = "HAVEN_JWT_EXPIRY_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=7 * 24 * 3600))]
    pub jwt_expiry_secs: u64,

    /// `iss` claim of issued tokens. Defaults to `http://<listen address>/auth/v1`, as GoTrue's
    /// `API_EXTERNAL_URL` + `/auth/v1` on a hosted project.
    #[arg(long, env = "HAVEN_SITE_ISSUER")]
    pub site_issuer: Option<String>,

    /// Largest request body accepted on any route, in bytes; larger ones get 413.
    #[arg(long, env = "HAVEN_API_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// bcrypt cost for new passwords (GoTrue uses 10). Lower only to speed up bulk test users.
    #[arg(long, env = "HAVEN_BCRYPT_COST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(4..=16))]
    pub bcrypt_cost: u32,

    /// Connections in the REST pool (PostgREST's `db-pool`).
    #[arg(long, env = "PGRST_DB_POOL", default_value_t = 10)]
    pub rest_pool_size: u32,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "HAVEN_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

/// Why the flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The listen address is not a loopback address.
    #[error("refusing to listen on {0}: the local API binds to loopback addresses (127.0.0.1, ::1) only")]
    NotLoopback(SocketAddr),
}

impl Args {
    /// Refuse anything that would expose the stand-in beyond this machine.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_loopback(self.listen)
    }
}

/// Loopback only: the stand-in has no rate limiting worth the name and prints admin keys.
pub fn check_loopback(addr: SocketAddr) -> Result<(), ConfigError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ConfigError::NotLoopback(addr))
    }
}

/// The issuer a token carries when none is configured: the URL clients reach auth at.
pub fn default_issuer(bound: SocketAddr) -> String {
    format!("http://{bound}/auth/v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        for ok in ["127.0.0.1:54321", "[::1]:1", "127.0.0.2:0"] {
            assert!(check_loopback(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "0.0.0.0:54321",
            "[::]:54321",
            "192.168.1.10:80",
            "10.0.0.1:54321",
        ] {
            assert!(check_loopback(bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_issuer_names_the_bound_port() {
        assert_eq!(
            default_issuer("127.0.0.1:54391".parse().unwrap()),
            "http://127.0.0.1:54391/auth/v1"
        );
    }

    #[test]
    fn flags_parse_with_defaults() {
        let args = Args::try_parse_from([
            "haven-local-api",
            "--rest-db-uri",
            "postgres://authenticator@127.0.0.1/x",
            "--auth-db-uri",
            "postgres://postgres@127.0.0.1/x",
        ])
        .unwrap();
        assert_eq!(args.jwt_expiry_secs, 3600);
        assert_eq!(args.max_body_bytes, 1024 * 1024);
        assert!(args.validate().is_ok());
    }
}
