//! Where the client connects and where it keeps its files: the Supabase project (URL + anon
//! key), the signaling WebSocket URL, and the per-user config directory.

use std::path::PathBuf;

use crate::core::error::CoreError;

/// Connection settings of one client instance.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Supabase project URL (hosted or the local stand-in).
    pub supabase_url: String,
    /// The project's anon key.
    pub anon_key: String,
    /// `ws://` / `wss://` URL of signaling's `/v1/ws`, when voice and live events are wanted.
    pub signaling_url: Option<String>,
    /// Directory holding `session.json` and `settings.json`.
    pub config_dir: PathBuf,
}

impl ClientConfig {
    /// A config using the user's standard config directory ([`default_config_dir`]).
    pub fn new(
        supabase_url: impl Into<String>,
        anon_key: impl Into<String>,
    ) -> Result<Self, CoreError> {
        Ok(Self {
            supabase_url: supabase_url.into(),
            anon_key: anon_key.into(),
            signaling_url: None,
            config_dir: default_config_dir()?,
        })
    }

    /// The typed Supabase client for this config.
    pub fn supabase(&self) -> Result<haven_supabase::HavenClient, CoreError> {
        let project = haven_supabase::ProjectConfig::new(&self.supabase_url, &self.anon_key)?;
        Ok(haven_supabase::HavenClient::new(project)?)
    }
}

/// `$XDG_CONFIG_HOME/haven` when set (tests and sandboxes point it elsewhere), else the
/// platform's config directory for Haven (`~/.config/haven` on Linux).
pub fn default_config_dir() -> Result<PathBuf, CoreError> {
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("haven"));
    }
    directories::ProjectDirs::from("", "", "haven")
        .map(|dirs| dirs.config_dir().to_path_buf())
        .ok_or_else(|| CoreError::Config("no home directory to keep the session in".into()))
}

/// The client WebSocket URL for a signaling address as `stack.json` gives it
/// (`http://host:port` → `ws://host:port/v1/ws`, `https` → `wss`); a `ws://`/`wss://` URL is
/// taken as the WebSocket URL already.
pub fn signaling_ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.starts_with("ws://") || base.starts_with("wss://") {
        return base.to_string();
    }
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| format!("ws://{base}"));
    format!("{rest}/v1/ws")
}

#[cfg(test)]
mod tests {
    use super::signaling_ws_url;

    #[test]
    fn stack_signaling_urls_become_websocket_urls() {
        assert_eq!(
            signaling_ws_url("http://127.0.0.1:4000"),
            "ws://127.0.0.1:4000/v1/ws"
        );
        assert_eq!(
            signaling_ws_url("https://sig.example/"),
            "wss://sig.example/v1/ws"
        );
        assert_eq!(signaling_ws_url("ws://h:1/v1/ws"), "ws://h:1/v1/ws");
    }
}
