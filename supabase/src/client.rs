//! The entry point: one `HavenClient` per project, shared by every signed-in user of a process
//! (the signaling service holds one and calls RPCs with each user's own JWT).

use std::time::Duration;

use crate::config::ProjectConfig;
use crate::error::Error;
use crate::rpc::UserApi;

/// Client for one Supabase project (hosted, or the local stand-in).
#[derive(Clone)]
pub struct HavenClient {
    config: ProjectConfig,
    http: reqwest::Client,
    rest: postgrest::Postgrest,
}

impl std::fmt::Debug for HavenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HavenClient")
            .field("url", &self.config.url())
            .finish_non_exhaustive()
    }
}

impl HavenClient {
    /// A client for `config`, with a 30 s request timeout.
    pub fn new(config: ProjectConfig) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self::with_http_client(config, http))
    }

    /// A client using `http` for Auth calls (its timeouts and pool). REST calls go through
    /// postgrest-rs, which keeps a client of its own; they get a per-request timeout instead.
    pub fn with_http_client(config: ProjectConfig, http: reqwest::Client) -> Self {
        // The gateway of a hosted project refuses requests without `apikey`; the user's JWT
        // replaces the anon key as the bearer per call. (ProjectConfig checked the key is a
        // valid header value; postgrest-rs would panic otherwise.)
        let rest =
            postgrest::Postgrest::new(config.rest_url()).insert_header("apikey", config.anon_key());
        Self { config, http, rest }
    }

    /// From `SUPABASE_URL` and `SUPABASE_ANON_KEY`.
    pub fn from_env() -> Result<Self, Error> {
        Self::new(ProjectConfig::from_env()?)
    }

    /// The project this client talks to.
    pub fn config(&self) -> &ProjectConfig {
        &self.config
    }

    /// RPCs as the user whose access token this is (RLS applies as that user).
    pub fn as_user<'a>(&'a self, access_token: &'a str) -> UserApi<'a> {
        UserApi::new(self, access_token)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn rest(&self) -> &postgrest::Postgrest {
        &self.rest
    }
}
