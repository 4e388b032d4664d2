//! The anon and service-role API keys, and `<state-dir>/api.json` that hands them to tools.
//!
//! Supabase's legacy API keys are long-lived JWTs whose only meaningful claim is `role`
//! (`anon` or `service_role`); the REST layer switches to that role. Ours are the same shape,
//! signed with the stack's ES256 key. They are kept in `<state-dir>/api-keys.json` and reused
//! across restarts: ECDSA signatures are randomised, so re-signing would change the strings
//! people exported. (api.json is an output that launchers delete before a start, so it cannot
//! be the store.)

use std::path::Path;

use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use crate::signing::{write_private, KeyError, SigningKey};

/// File name of the stack description inside the state directory.
pub const API_FILE: &str = "api.json";
/// File name of the persisted API keys inside the state directory.
pub const KEYS_FILE: &str = "api-keys.json";

/// Ten years: the keys are configuration, not sessions.
const KEY_LIFETIME_SECS: i64 = 10 * 365 * 24 * 3600;

/// The two API keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeys {
    /// Public key clients embed (role `anon`).
    pub anon: String,
    /// Admin key that bypasses RLS (role `service_role`); never shipped to clients.
    pub service_role: String,
}

/// What `api.json` holds: everything a client, test or tool needs to reach the stack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiInfo {
    /// Base URL (`SUPABASE_URL`).
    pub url: String,
    /// `SUPABASE_ANON_KEY`.
    pub anon_key: String,
    /// `SUPABASE_SERVICE_ROLE_KEY`.
    pub service_role_key: String,
    /// Where the public signing keys are published.
    pub jwks_url: String,
    /// `iss` of user access tokens.
    pub issuer: String,
}

#[derive(Serialize, Deserialize)]
struct StoredKeys {
    anon_key: String,
    service_role_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyClaims {
    iss: String,
    #[serde(rename = "ref")]
    project_ref: String,
    role: String,
    iat: i64,
    exp: i64,
}

impl ApiKeys {
    /// Reuse the keys in `<state_dir>/api.json` if this signing key still verifies them,
    /// otherwise sign new ones.
    pub fn load_or_issue(state_dir: &Path, key: &SigningKey) -> Result<Self, KeyError> {
        let path = state_dir.join(KEYS_FILE);
        if let Some(stored) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<StoredKeys>(&text).ok())
        {
            let keys = ApiKeys {
                anon: stored.anon_key,
                service_role: stored.service_role_key,
            };
            if keys.verify(key) {
                return Ok(keys);
            }
        }
        let keys = Self::issue(key)?;
        let stored = StoredKeys {
            anon_key: keys.anon.clone(),
            service_role_key: keys.service_role.clone(),
        };
        let text = serde_json::to_string_pretty(&stored).map_err(|e| KeyError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_private(&path, text.as_bytes()).map_err(|source| KeyError::Io { path, source })?;
        Ok(keys)
    }

    /// Sign a fresh pair.
    pub fn issue(key: &SigningKey) -> Result<Self, KeyError> {
        let now = chrono::Utc::now().timestamp();
        let sign = |role: &str| {
            key.sign(&KeyClaims {
                iss: "supabase".into(),
                project_ref: "haven-local".into(),
                role: role.into(),
                iat: now,
                exp: now + KEY_LIFETIME_SECS,
            })
        };
        Ok(ApiKeys {
            anon: sign("anon")?,
            service_role: sign("service_role")?,
        })
    }

    fn verify(&self, key: &SigningKey) -> bool {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        let role_of = |token: &str| {
            key.verify::<KeyClaims>(token, &validation)
                .ok()
                .map(|c| c.role)
        };
        role_of(&self.anon).as_deref() == Some("anon")
            && role_of(&self.service_role).as_deref() == Some("service_role")
    }

    /// Whether `candidate` is one of the two keys (the `apikey` header check).
    pub fn is_known(&self, candidate: &str) -> bool {
        // Not secret-dependent timing worth defending: both keys are printed at start.
        candidate == self.anon || candidate == self.service_role
    }
}

/// Write api.json (0600: it holds the service-role key).
pub fn write_api_info(state_dir: &Path, info: &ApiInfo) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(info).map_err(std::io::Error::other)?;
    text.push('\n');
    write_private(&state_dir.join(API_FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_role_and_are_reused_across_restarts() {
        let dir = std::env::temp_dir().join(format!("haven-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = SigningKey::load_or_generate(&dir).unwrap();
        let keys = ApiKeys::load_or_issue(&dir, &key).unwrap();
        assert!(keys.verify(&key));
        // api.json is only an output: deleting it (as launchers do) must not change the keys.
        let info = ApiInfo {
            url: "http://127.0.0.1:1".into(),
            anon_key: keys.anon.clone(),
            service_role_key: keys.service_role.clone(),
            jwks_url: String::new(),
            issuer: String::new(),
        };
        write_api_info(&dir, &info).unwrap();
        std::fs::remove_file(dir.join(API_FILE)).unwrap();
        let again = ApiKeys::load_or_issue(&dir, &key).unwrap();
        assert_eq!(keys, again);
        // A new signing key invalidates the stored pair, which is then re-issued.
        let other = SigningKey::ephemeral().unwrap();
        let reissued = ApiKeys::load_or_issue(&dir, &other).unwrap();
        assert_ne!(reissued, keys);
        assert!(reissued.is_known(&reissued.anon) && !reissued.is_known(&keys.anon));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
