//! Where the Supabase project is: its URL and anon key, the only two things a client needs,
//! whether the project is hosted or the local stand-in (`cargo xtask up`).

use crate::error::Error;

/// A Supabase project's public coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectConfig {
    url: String,
    anon_key: String,
}

impl ProjectConfig {
    /// `url` like `https://<ref>.supabase.co` or `http://127.0.0.1:54321`, and the anon key.
    pub fn new(url: impl Into<String>, anon_key: impl Into<String>) -> Result<Self, Error> {
        let url = url.into().trim().trim_end_matches('/').to_string();
        let anon_key = anon_key.into().trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "project URL must be http(s)://..., got {url:?}"
            )));
        }
        if anon_key.is_empty() {
            return Err(Error::Config("the anon key is empty".into()));
        }
        // It travels in a header; anything else would fail (or panic in postgrest-rs) later.
        if !is_header_safe(&anon_key) {
            return Err(Error::Config(
                "the anon key contains characters not allowed in a header".into(),
            ));
        }
        Ok(Self { url, anon_key })
    }

    /// From `SUPABASE_URL` and `SUPABASE_ANON_KEY`.
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| Error::Config(format!("{name} is not set")))
        };
        Self::new(var("SUPABASE_URL")?, var("SUPABASE_ANON_KEY")?)
    }

    /// The project URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The anon (public) API key.
    pub fn anon_key(&self) -> &str {
        &self.anon_key
    }

    /// `<url>/rest/v1`.
    pub fn rest_url(&self) -> String {
        format!("{}/rest/v1", self.url)
    }

    /// `<url>/auth/v1`.
    pub fn auth_url(&self) -> String {
        format!("{}/auth/v1", self.url)
    }
}

/// Visible ASCII only: what JWTs and API keys consist of, and always a valid header value.
pub(crate) fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        let c = ProjectConfig::new("http://127.0.0.1:54321/", " key ").unwrap();
        assert_eq!(c.rest_url(), "http://127.0.0.1:54321/rest/v1");
        assert_eq!(c.auth_url(), "http://127.0.0.1:54321/auth/v1");
        assert_eq!(c.anon_key(), "key");
        assert!(ProjectConfig::new("127.0.0.1:54321", "k").is_err());
        assert!(ProjectConfig::new("http://x", "").is_err());
        assert!(ProjectConfig::new("http://x", "a\nb").is_err());
    }
}
