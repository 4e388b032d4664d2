//! Supabase Auth (GoTrue) calls: sign up, sign in, refresh, sign out, current user.
//!
//! Plain HTTP with GoTrue's JSON shapes, because no maintained Rust GoTrue client fits our
//! dependency budget; the same code talks to a hosted project and to the local stand-in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client::HavenClient;
use crate::error::Error;

/// A Supabase Auth user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// User id (`auth.uid()`).
    pub id: Uuid,
    /// Audience (`authenticated`).
    #[serde(default)]
    pub aud: String,
    /// Postgres role of the user's tokens.
    #[serde(default)]
    pub role: String,
    /// Email.
    #[serde(default)]
    pub email: Option<String>,
    /// When the email was confirmed.
    #[serde(default)]
    pub email_confirmed_at: Option<DateTime<Utc>>,
    /// Last password sign-in.
    #[serde(default)]
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// Provider metadata (not user-editable).
    #[serde(default)]
    pub app_metadata: Value,
    /// Signup `data` (e.g. `username`).
    #[serde(default)]
    pub user_metadata: Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// Anonymous sign-in.
    #[serde(default)]
    pub is_anonymous: bool,
}

/// A signed-in session.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// JWT for REST and signaling.
    pub access_token: String,
    /// `bearer`.
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    /// Expiry (unix seconds).
    pub expires_at: i64,
    /// Single-use token for [`HavenClient::refresh_session`]; it rotates on every refresh.
    pub refresh_token: String,
    /// The user.
    pub user: User,
}

impl std::fmt::Debug for Session {
    // Tokens are credentials: keep them out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Whether the access token expires within `margin_secs` of `now` (refresh before then).
    pub fn expires_within(&self, margin_secs: i64, now: DateTime<Utc>) -> bool {
        self.expires_at - now.timestamp() <= margin_secs
    }
}

/// Which sessions [`HavenClient::sign_out`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignOutScope {
    /// Every session of the user (GoTrue's default).
    #[default]
    Global,
    /// Only this session.
    Local,
    /// Every other session.
    Others,
}

impl SignOutScope {
    fn as_str(self) -> &'static str {
        match self {
            SignOutScope::Global => "global",
            SignOutScope::Local => "local",
            SignOutScope::Others => "others",
        }
    }
}

impl HavenClient {
    /// Create an account. With email confirmation off (our projects), this also signs in.
    /// `user_metadata` becomes `raw_user_meta_data`; `{"username": ...}` names the profile.
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        user_metadata: Option<Value>,
    ) -> Result<Session, Error> {
        let mut body = json!({ "email": email, "password": password });
        if let Some(data) = user_metadata {
            body["data"] = data;
        }
        self.auth_post("signup", &body, None).await
    }

    /// Sign in with email and password.
    pub async fn sign_in_with_password(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Session, Error> {
        self.auth_post(
            "token?grant_type=password",
            &json!({ "email": email, "password": password }),
            None,
        )
        .await
    }

    /// Trade a refresh token for a new session. The old refresh token is spent; presenting it
    /// again fails with [`Error::SessionExpired`] and ends the session.
    pub async fn refresh_session(&self, refresh_token: &str) -> Result<Session, Error> {
        self.auth_post(
            "token?grant_type=refresh_token",
            &json!({ "refresh_token": refresh_token }),
            None,
        )
        .await
    }

    /// The user the access token belongs to (also checks the session is still open).
    pub async fn get_user(&self, access_token: &str) -> Result<User, Error> {
        let url = format!("{}/user", self.config().auth_url());
        let response = self
            .http()
            .get(&url)
            .header("apikey", self.config().anon_key())
            .bearer_auth(access_token)
            .send()
            .await?;
        decode_auth(response, "GET /auth/v1/user").await
    }

    /// End sessions. Refresh tokens of the ended sessions stop working at once; access tokens
    /// already issued stay valid at the REST layer until they expire (as on hosted Supabase).
    pub async fn sign_out(&self, access_token: &str, scope: SignOutScope) -> Result<(), Error> {
        let url = format!(
            "{}/logout?scope={}",
            self.config().auth_url(),
            scope.as_str()
        );
        let response = self
            .http()
            .post(&url)
            .header("apikey", self.config().anon_key())
            .bearer_auth(access_token)
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.bytes().await?;
        Err(Error::from_auth(status.as_u16(), &body))
    }

    async fn auth_post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        bearer: Option<&str>,
    ) -> Result<T, Error> {
        let url = format!("{}/{path}", self.config().auth_url());
        let mut request = self
            .http()
            .post(&url)
            .header("apikey", self.config().anon_key())
            .json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        decode_auth(response, &format!("POST /auth/v1/{path}")).await
    }
}

/// Status checked first; only a 2xx body is decoded as `T`.
pub(crate) async fn decode_auth<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    endpoint: &str,
) -> Result<T, Error> {
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        return Err(Error::from_auth(status.as_u16(), &body));
    }
    serde_json::from_slice(&body).map_err(|e| Error::UnexpectedResponse {
        endpoint: endpoint.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_parse_from_gotrue_json_and_hide_tokens_in_debug() {
        let session: Session = serde_json::from_str(
            r#"{"access_token":"secret.jwt.x","token_type":"bearer","expires_in":3600,"expires_at":1795609278,
                "refresh_token":"r1","user":{"id":"975ab4ef-78db-45a9-aa69-b4526fa332ec","aud":"authenticated",
                "role":"authenticated","email":"a@example.com","app_metadata":{"provider":"email"},
                "user_metadata":{"username":"alice"},"identities":[],"created_at":"2026-11-25T11:21:18.979282Z",
                "updated_at":"2026-11-25T11:21:18.979282Z","is_anonymous":false,"phone":""}}"#,
        )
        .unwrap();
        assert_eq!(session.user.user_metadata["username"], "alice");
        let printed = format!("{session:?}");
        assert!(
            !printed.contains("secret") && !printed.contains("r1"),
            "{printed}"
        );
        let now = DateTime::from_timestamp(1_795_609_278 - 30, 0).unwrap();
        assert!(session.expires_within(60, now));
        assert!(!session.expires_within(10, now));
    }
}
