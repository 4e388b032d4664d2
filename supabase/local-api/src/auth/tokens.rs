//! Access-token claims as Supabase Auth issues them, and opaque refresh tokens.
//!
//! The claim set matters beyond this crate: RLS reads `sub` and `role` through `auth.uid()` /
//! `auth.role()`, and the signaling service verifies `aud`, `iss` and `exp`. Refresh tokens are
//! random strings; only their SHA-256 is stored, so a database dump cannot mint sessions.

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::store::UserRecord;

/// `aud` of user access tokens.
pub const AUDIENCE: &str = "authenticated";

/// One entry of `amr` (authentication methods reference).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AmrEntry {
    /// `password` (the only method of the subset).
    pub method: String,
    /// When the session was authenticated (unix seconds).
    pub timestamp: i64,
}

/// The claims of a user access token, as GoTrue issues them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    /// Issuer (`<API URL>/auth/v1`).
    pub iss: String,
    /// User id.
    pub sub: Uuid,
    /// Always `authenticated`.
    pub aud: String,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// User email.
    pub email: String,
    /// Phone (always empty in the subset).
    pub phone: String,
    /// `raw_app_meta_data`.
    pub app_metadata: serde_json::Value,
    /// `raw_user_meta_data`.
    pub user_metadata: serde_json::Value,
    /// Postgres role the REST layer switches to (`authenticated`).
    pub role: String,
    /// Authenticator assurance level (`aal1`: no MFA in the subset).
    pub aal: String,
    /// How the session was authenticated.
    pub amr: Vec<AmrEntry>,
    /// The session this token belongs to; signing out ends it.
    pub session_id: Uuid,
    /// Anonymous sign-ins are not part of the subset, so always false.
    pub is_anonymous: bool,
}

impl AccessClaims {
    /// Claims for `user` in `session_id`, valid for `expiry_secs` from `now`.
    pub fn for_user(
        user: &UserRecord,
        session_id: Uuid,
        issuer: &str,
        now: i64,
        expiry_secs: u64,
        authenticated_at: i64,
    ) -> Self {
        Self {
            iss: issuer.to_string(),
            sub: user.id,
            aud: AUDIENCE.to_string(),
            exp: now.saturating_add(i64::try_from(expiry_secs).unwrap_or(i64::MAX)),
            iat: now,
            email: user.email.clone(),
            phone: String::new(),
            app_metadata: user.app_metadata.clone(),
            user_metadata: user.user_metadata.clone(),
            role: user.role.clone(),
            aal: "aal1".to_string(),
            amr: vec![AmrEntry {
                method: "password".to_string(),
                timestamp: authenticated_at,
            }],
            session_id,
            is_anonymous: user.is_anonymous,
        }
    }
}

/// What a user endpoint checks beyond the signature: expiry, audience and issuer.
pub fn user_token_validation(issuer: &str) -> Validation {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    // GoTrue allows no clock skew on its own tokens either; the client refreshes early.
    validation.leeway = 0;
    validation
}

/// A new opaque refresh token: 32 random bytes, base64url.
pub fn new_refresh_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for a refresh token (hex SHA-256).
pub fn refresh_token_digest(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;

    fn user() -> UserRecord {
        UserRecord {
            id: Uuid::new_v4(),
            aud: "authenticated".into(),
            role: "authenticated".into(),
            email: "a@example.test".into(),
            encrypted_password: None,
            email_confirmed_at: None,
            app_metadata: serde_json::json!({"provider": "email", "providers": ["email"]}),
            user_metadata: serde_json::json!({"username": "alice"}),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            last_sign_in_at: None,
            is_anonymous: false,
        }
    }

    #[test]
    fn access_tokens_carry_supabase_claims_and_verify() {
        let key = SigningKey::ephemeral().unwrap();
        let user = user();
        let session = Uuid::new_v4();
        let now = chrono::Utc::now().timestamp();
        let claims =
            AccessClaims::for_user(&user, session, "http://127.0.0.1:1/auth/v1", now, 60, now);
        let token = key.sign(&claims).unwrap();
        let raw: serde_json::Value = key
            .verify(&token, &user_token_validation("http://127.0.0.1:1/auth/v1"))
            .unwrap();
        for field in [
            "sub",
            "aud",
            "role",
            "exp",
            "iat",
            "iss",
            "email",
            "app_metadata",
            "user_metadata",
            "session_id",
            "aal",
            "amr",
            "is_anonymous",
        ] {
            assert!(raw.get(field).is_some(), "missing claim {field}");
        }
        assert_eq!(raw["aud"], "authenticated");
        assert_eq!(raw["role"], "authenticated");
        assert_eq!(raw["sub"], user.id.to_string());
        assert_eq!(raw["session_id"], session.to_string());
        assert_eq!(raw["exp"].as_i64(), Some(now + 60));
    }

    #[test]
    fn expired_or_foreign_issuer_tokens_are_refused() {
        let key = SigningKey::ephemeral().unwrap();
        let now = chrono::Utc::now().timestamp();
        let old = AccessClaims::for_user(&user(), Uuid::new_v4(), "iss", now - 120, 60, now - 120);
        let token = key.sign(&old).unwrap();
        let err = key
            .verify::<AccessClaims>(&token, &user_token_validation("iss"))
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &jsonwebtoken::errors::ErrorKind::ExpiredSignature
        );
        let other = AccessClaims::for_user(&user(), Uuid::new_v4(), "elsewhere", now, 60, now);
        let token = key.sign(&other).unwrap();
        assert!(key
            .verify::<AccessClaims>(&token, &user_token_validation("iss"))
            .is_err());
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_as_digests() {
        let a = new_refresh_token();
        let b = new_refresh_token();
        assert_ne!(a, b);
        assert!(a.len() >= 43);
        let digest = refresh_token_digest(&a);
        assert_eq!(digest.len(), 64);
        assert_eq!(digest, refresh_token_digest(&a));
        assert_ne!(digest, a);
    }
}
