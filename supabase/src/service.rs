//! Service-role operations: seeding, bulk test users, and the `*_as` checks the signaling
//! service runs on behalf of users (fan-out filtering, voice revocation).
//!
//! Table and RPC calls go through supabase_rs, which always sends its key as the bearer, so
//! it is used only here, with the service-role key (it cannot act as a user). User accounts
//! are created through GoTrue's admin endpoint, which supabase_rs does not cover. Never give
//! this type the service-role key in a desktop client.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{decode_auth, User};
use crate::config::{is_header_safe, ProjectConfig};
use crate::error::Error;
use crate::models::VoiceAccess;

/// Client holding the service-role key (bypasses RLS).
#[derive(Clone)]
pub struct ServiceClient {
    config: ProjectConfig,
    service_role_key: String,
    http: reqwest::Client,
    rest: supabase_rs::SupabaseClient,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("url", &self.config.url())
            .finish_non_exhaustive()
    }
}

/// A test account created by [`ServiceClient::create_test_users`].
#[derive(Clone)]
pub struct TestUser {
    /// The account.
    pub user: User,
    /// Its email.
    pub email: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for TestUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestUser")
            .field("email", &self.email)
            .field("id", &self.user.id)
            .finish()
    }
}

impl ServiceClient {
    /// A service-role client for the project at `url`.
    pub fn new(url: &str, service_role_key: &str) -> Result<Self, Error> {
        // The anon slot of ProjectConfig carries the service key here: every request of this
        // client uses it as both `apikey` and bearer.
        let config = ProjectConfig::new(url, service_role_key)?;
        if !is_header_safe(service_role_key) {
            return Err(Error::Config(
                "service-role key is not a valid header value".into(),
            ));
        }
        let rest = supabase_rs::SupabaseClient::new(config.url(), service_role_key)
            .map_err(|e| Error::Config(format!("supabase_rs: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            config,
            service_role_key: service_role_key.to_string(),
            http,
            rest,
        })
    }

    /// From `SUPABASE_URL` and `SUPABASE_SERVICE_ROLE_KEY`.
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| Error::Config(format!("{name} is not set")))
        };
        Self::new(&var("SUPABASE_URL")?, &var("SUPABASE_SERVICE_ROLE_KEY")?)
    }

    /// The underlying supabase_rs client, for seeding tables directly.
    pub fn tables(&self) -> &supabase_rs::SupabaseClient {
        &self.rest
    }

    // --- accounts (GoTrue admin API) --------------------------------------------------------

    /// Create a confirmed account (`POST /auth/v1/admin/users`). `username` names the profile.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        username: Option<&str>,
    ) -> Result<User, Error> {
        let mut metadata = json!({});
        if let Some(username) = username {
            metadata["username"] = json!(username);
        }
        let response = self
            .http
            .post(format!("{}/admin/users", self.config.auth_url()))
            .header("apikey", &self.service_role_key)
            .bearer_auth(&self.service_role_key)
            .json(&json!({
                "email": email,
                "password": password,
                "email_confirm": true,
                "user_metadata": metadata,
            }))
            .send()
            .await?;
        decode_auth(response, "POST /auth/v1/admin/users").await
    }

    /// Delete an account and everything that cascades from it.
    pub async fn delete_user(&self, user_id: Uuid) -> Result<(), Error> {
        let response = self
            .http
            .delete(format!("{}/admin/users/{user_id}", self.config.auth_url()))
            .header("apikey", &self.service_role_key)
            .bearer_auth(&self.service_role_key)
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.bytes().await?;
        Err(Error::from_auth(status.as_u16(), &body))
    }

    /// Create `count` confirmed accounts `<prefix>-<i>@<domain>` sharing one password.
    /// Sequential on purpose: each creation is a bcrypt hash on the server, so parallel calls
    /// mostly queue behind each other and only make failures harder to attribute.
    pub async fn create_test_users(
        &self,
        prefix: &str,
        domain: &str,
        count: usize,
        password: &str,
    ) -> Result<Vec<TestUser>, Error> {
        let mut users = Vec::with_capacity(count);
        for i in 0..count {
            let email = format!("{prefix}-{i}@{domain}");
            let username = format!("{prefix}_{i}");
            let user = self.create_user(&email, password, Some(&username)).await?;
            users.push(TestUser {
                user,
                email,
                password: password.to_string(),
            });
        }
        Ok(users)
    }

    // --- service-role RPCs (supabase_rs) ----------------------------------------------------

    /// A user's current voice rights in a channel (`voice_access_as`).
    pub async fn voice_access_as(
        &self,
        user_id: Uuid,
        channel_id: Uuid,
    ) -> Result<VoiceAccess, Error> {
        let value = self
            .rpc_value(
                "voice_access_as",
                json!({ "p_user_id": user_id, "p_channel_id": channel_id }),
            )
            .await?;
        decode("voice_access_as", value)
    }

    /// `can_view_channel_as`: whether the user may see the channel (event fan-out filter).
    pub async fn can_view_channel_as(
        &self,
        user_id: Uuid,
        channel_id: Uuid,
    ) -> Result<bool, Error> {
        self.bool_as("can_view_channel_as", user_id, channel_id)
            .await
    }

    /// `can_send_in_channel_as`.
    pub async fn can_send_in_channel_as(
        &self,
        user_id: Uuid,
        channel_id: Uuid,
    ) -> Result<bool, Error> {
        self.bool_as("can_send_in_channel_as", user_id, channel_id)
            .await
    }

    /// `can_connect_voice_as`.
    pub async fn can_connect_voice_as(
        &self,
        user_id: Uuid,
        channel_id: Uuid,
    ) -> Result<bool, Error> {
        self.bool_as("can_connect_voice_as", user_id, channel_id)
            .await
    }

    /// `can_speak_in_channel_as`.
    pub async fn can_speak_in_channel_as(
        &self,
        user_id: Uuid,
        channel_id: Uuid,
    ) -> Result<bool, Error> {
        self.bool_as("can_speak_in_channel_as", user_id, channel_id)
            .await
    }

    /// `user_has_permission_as`.
    pub async fn user_has_permission_as(
        &self,
        user_id: Uuid,
        community_id: Uuid,
        key: &str,
    ) -> Result<bool, Error> {
        let value = self
            .rpc_value(
                "user_has_permission_as",
                json!({ "p_user_id": user_id, "p_community_id": community_id, "p_key": key }),
            )
            .await?;
        decode("user_has_permission_as", value)
    }

    /// Change a rate limit (`rate_limit_settings`); tests and the load harness raise them.
    pub async fn set_rate_limit(
        &self,
        action: &str,
        max_events: i32,
        window_seconds: i32,
    ) -> Result<(), Error> {
        let done = self
            .rest
            .update_with_column_name(
                "rate_limit_settings",
                "action",
                action,
                json!({ "max_events": max_events, "window_seconds": window_seconds }),
            )
            .await
            .map_err(Error::from_service)?;
        if done.affected == 0 {
            return Err(Error::Admin(format!("no rate limit named {action:?}")));
        }
        Ok(())
    }

    async fn bool_as(
        &self,
        function: &str,
        user_id: Uuid,
        channel_id: Uuid,
    ) -> Result<bool, Error> {
        let value = self
            .rpc_value(
                function,
                json!({ "p_user_id": user_id, "p_channel_id": channel_id }),
            )
            .await?;
        decode(function, value)
    }

    async fn rpc_value(&self, function: &str, params: Value) -> Result<Value, Error> {
        self.rest
            .rpc(function, params)
            .execute_single()
            .await
            .map_err(Error::from_service)
    }
}

fn decode<T: serde::de::DeserializeOwned>(function: &str, value: Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::UnexpectedResponse {
        endpoint: format!("rpc/{function}"),
        reason: e.to_string(),
    })
}
