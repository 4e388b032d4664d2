//! Haven's local stack, as a library: a real PostgreSQL server with the Supabase shim,
//! migrations and seed applied, plus the description of a running stack that tests and
//! tools read (`stack.json`).
//!
//! `cargo xtask up` and `cargo xtask test` start the stack through this crate and
//! export `HAVEN_STACK_FILE`; integration tests call [`StackInfo::from_env`] to find it,
//! so every test talks to the same real services a user runs.

pub mod ports;
pub mod postgres;
pub mod process;
pub mod schema;
pub mod stack;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use postgres::{PgCluster, PgOptions};
pub use process::Service;
pub use schema::{ApplyReport, SupabaseProject};
pub use stack::{LocalStack, StackOptions};

/// Everything that can go wrong while bringing the stack up.
#[derive(Debug, thiserror::Error)]
pub enum DevStackError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}):\n{stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("migration {file} failed:\n{stderr}")]
    Migration { file: PathBuf, stderr: String },
    #[error("migration file name must be <digits>_<name>.sql: {0}")]
    BadMigrationName(PathBuf),
    #[error("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql), or set HAVEN_PG_BINDIR")]
    PostgresNotInstalled,
    #[error("running as root but there is no `postgres` system user (apt-get install postgresql)")]
    NoPostgresUser,
    #[error("{name} exited early ({status}); last log lines:\n{log_tail}")]
    ServiceDied {
        name: String,
        status: String,
        log_tail: String,
    },
    #[error("timed out waiting for {what}; last log lines:\n{log_tail}")]
    Timeout { what: String, log_tail: String },
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stack file {path}: {message}")]
    StackFile { path: PathBuf, message: String },
}

/// Environment variable naming the running stack's `stack.json`.
pub const STACK_FILE_ENV: &str = "HAVEN_STACK_FILE";

/// Description of a running local stack, written by xtask and read by tests and tools.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackInfo {
    /// Superuser URL of the database with migrations and seed applied.
    pub database_url: String,
    /// Base URL of the local Supabase API (`/auth/v1`, `/rest/v1`), when running.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Anon key (a JWT with role `anon`).
    #[serde(default)]
    pub anon_key: Option<String>,
    /// Service-role key (a JWT with role `service_role`).
    #[serde(default)]
    pub service_role_key: Option<String>,
    /// JWKS URL of the local auth service.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// `iss` of tokens issued by the local auth service.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Base URL of the signaling service (`ws://.../v1/ws` for clients), when running.
    #[serde(default)]
    pub signaling_url: Option<String>,
    /// `/metrics` URL of the SFU node, when running.
    #[serde(default)]
    pub sfu_metrics_url: Option<String>,
    /// Process id of the SFU node (the load harness reads its CPU from /proc).
    #[serde(default)]
    pub sfu_pid: Option<u32>,
}

impl StackInfo {
    /// Reads the stack named by `HAVEN_STACK_FILE`, else `.haven/stack.json` of a
    /// running `cargo xtask up` in `workspace_root`.
    pub fn from_env(workspace_root: &Path) -> Result<Self, DevStackError> {
        let path = std::env::var_os(STACK_FILE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root.join(".haven/stack.json"));
        Self::read(&path)
    }

    /// Reads a stack file.
    pub fn read(path: &Path) -> Result<Self, DevStackError> {
        let text = std::fs::read_to_string(path).map_err(|e| DevStackError::StackFile {
            path: path.to_path_buf(),
            message: format!(
                "{e}; start the stack with `cargo xtask up`, or run the tests with `cargo xtask test`"
            ),
        })?;
        serde_json::from_str(&text).map_err(|e| DevStackError::StackFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Writes the stack file atomically (tests may be reading it).
    pub fn write(&self, path: &Path) -> Result<(), DevStackError> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| DevStackError::StackFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// The workspace root, found from this crate's manifest directory at compile time.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where cargo puts this workspace's debug binaries (`CARGO_TARGET_DIR` respected), for
/// tests and tools that run another package's binary.
pub fn debug_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debug")
}
