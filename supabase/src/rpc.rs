//! Typed wrappers for every RPC in supabase/API.md, called through postgrest-rs with the
//! user's JWT so that RLS and `auth.uid()` see the caller.
//!
//! Every call checks the HTTP status before decoding (postgrest-rs returns the raw response),
//! and maps error bodies to [`Error`] by SQLSTATE. Optional arguments are omitted when `None`
//! so the SQL defaults apply; arguments where `null` itself means something (clearing a
//! nickname, "never expires", "inherit") are always sent.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::client::HavenClient;
use crate::config::is_header_safe;
use crate::error::Error;
use crate::models::{
    Ban, ChannelGroup, ChannelKind, ChannelSummary, ChannelUpdate, Community, Invite, InviteExpiry,
    Message, MessageCursor, MessageView, NewChannel, NewRole, OverwriteFlags, RedeemOutcome,
    RoleUpdate, VoiceJoinGrant, VoiceModerationAction, VoiceModerationGrant,
};

/// Per-request timeout of REST calls.
const REST_TIMEOUT: Duration = Duration::from_secs(30);

/// JSON arguments of one RPC call.
#[derive(Debug, Default, Clone)]
pub struct RpcArgs(Map<String, Value>);

impl RpcArgs {
    /// No arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Always send `name` (`null` when `value` serializes to null).
    pub fn arg(mut self, name: &str, value: impl serde::Serialize) -> Self {
        // Serializing plain data (ids, strings, numbers, Vec<String>) cannot fail.
        self.0.insert(
            name.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// Send `name` only when `value` is `Some`, so the SQL default applies otherwise.
    pub fn opt(self, name: &str, value: Option<impl serde::Serialize>) -> Self {
        match value {
            Some(value) => self.arg(name, value),
            None => self,
        }
    }

    fn into_body(self) -> String {
        Value::Object(self.0).to_string()
    }
}

/// The RPCs, called as one signed-in user. Cheap to create per call.
#[derive(Clone, Copy)]
pub struct UserApi<'a> {
    client: &'a HavenClient,
    access_token: &'a str,
}

impl std::fmt::Debug for UserApi<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserApi").finish_non_exhaustive()
    }
}

impl<'a> UserApi<'a> {
    pub(crate) fn new(client: &'a HavenClient, access_token: &'a str) -> Self {
        Self {
            client,
            access_token,
        }
    }

    /// Call any RPC and decode its result as `T`. The typed methods below are built on this.
    pub async fn call<T: DeserializeOwned>(
        &self,
        function: &str,
        args: RpcArgs,
    ) -> Result<T, Error> {
        let body = self.send(function, args).await?;
        // `void` functions answer with an empty body; let `()`/`Option` decode that as null.
        let body: &[u8] = if body.is_empty() { b"null" } else { &body };
        serde_json::from_slice(body).map_err(|e| Error::UnexpectedResponse {
            endpoint: format!("rpc/{function}"),
            reason: e.to_string(),
        })
    }

    /// Call an RPC that returns `void`.
    pub async fn call_void(&self, function: &str, args: RpcArgs) -> Result<(), Error> {
        self.send(function, args).await.map(|_| ())
    }

    async fn send(&self, function: &str, args: RpcArgs) -> Result<Vec<u8>, Error> {
        self.execute(self.client.rest().rpc(function, args.into_body()))
            .await
    }

    /// Send a postgrest-rs request as this user; the status is checked before anything else.
    async fn execute(&self, request: postgrest::Builder) -> Result<Vec<u8>, Error> {
        // postgrest-rs panics on a token that is not a valid header value; refuse it here.
        if !is_header_safe(self.access_token) {
            return Err(Error::Unauthenticated(crate::error::ErrorDetail {
                status: 0,
                code: None,
                message: "access token contains characters not allowed in a header".into(),
                details: None,
                hint: None,
            }));
        }
        let response = request
            .auth(self.access_token)
            .build()
            .timeout(REST_TIMEOUT)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(Error::from_rest(status.as_u16(), &body));
        }
        Ok(body.to_vec())
    }

    /// Read rows of a table or view the caller may see (RLS applies), as `T`.
    async fn select<T: DeserializeOwned>(
        &self,
        table: &str,
        columns: &str,
        filter: Option<(&str, String)>,
        order: &str,
    ) -> Result<Vec<T>, Error> {
        let mut request = self.client.rest().from(table).select(columns).order(order);
        if let Some((column, value)) = filter {
            request = request.eq(column, value);
        }
        let body = self.execute(request).await?;
        serde_json::from_slice(&body).map_err(|e| Error::UnexpectedResponse {
            endpoint: table.to_string(),
            reason: e.to_string(),
        })
    }

    // --- reads (tables under RLS; not RPCs) -------------------------------------------------

    /// Communities the caller is a member of, oldest first.
    pub async fn list_my_communities(&self) -> Result<Vec<Community>, Error> {
        self.select(
            "communities",
            "id,name,description,created_by,created_at,updated_at",
            None,
            "created_at.asc,id.asc",
        )
        .await
    }

    /// Channel groups of a community the caller is a member of, by position.
    pub async fn list_channel_groups(
        &self,
        community_id: Uuid,
    ) -> Result<Vec<ChannelGroup>, Error> {
        self.select(
            "channel_groups",
            "id,community_id,name,position",
            Some(("community_id", community_id.to_string())),
            "position.asc,name.asc",
        )
        .await
    }

    // --- permissions ------------------------------------------------------------------------

    /// Whether the caller holds `key` in the community.
    pub async fn user_has_permission(&self, community_id: Uuid, key: &str) -> Result<bool, Error> {
        self.call(
            "user_has_permission",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_key", key),
        )
        .await
    }

    /// Whether the caller can view the channel.
    pub async fn can_view_channel(&self, channel_id: Uuid) -> Result<bool, Error> {
        self.call(
            "can_view_channel",
            RpcArgs::new().arg("p_channel_id", channel_id),
        )
        .await
    }

    /// Whether the caller can send in the channel.
    pub async fn can_send_in_channel(&self, channel_id: Uuid) -> Result<bool, Error> {
        self.call(
            "can_send_in_channel",
            RpcArgs::new().arg("p_channel_id", channel_id),
        )
        .await
    }

    /// Whether the caller can join the voice channel.
    pub async fn can_connect_voice(&self, channel_id: Uuid) -> Result<bool, Error> {
        self.call(
            "can_connect_voice",
            RpcArgs::new().arg("p_channel_id", channel_id),
        )
        .await
    }

    /// Whether the caller can speak in the voice channel.
    pub async fn can_speak_in_channel(&self, channel_id: Uuid) -> Result<bool, Error> {
        self.call(
            "can_speak_in_channel",
            RpcArgs::new().arg("p_channel_id", channel_id),
        )
        .await
    }

    /// A member's rank (owner = `i32::MAX`, non-member = `None`).
    pub async fn member_rank(
        &self,
        community_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<i32>, Error> {
        self.call(
            "member_rank",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_user_id", user_id),
        )
        .await
    }

    /// The caller's permission keys in the community (42501 for non-members).
    pub async fn my_permissions(&self, community_id: Uuid) -> Result<Vec<String>, Error> {
        let keys: Option<Vec<String>> = self
            .call(
                "my_permissions",
                RpcArgs::new().arg("p_community_id", community_id),
            )
            .await?;
        Ok(keys.unwrap_or_default())
    }

    // --- communities and membership ---------------------------------------------------------

    /// Create a community (seeded with roles, `general` and `Lounge`); returns its id.
    pub async fn create_community(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<Uuid, Error> {
        self.call(
            "create_community",
            RpcArgs::new()
                .arg("p_name", name)
                .opt("p_description", description),
        )
        .await
    }

    /// Rename / re-describe (`manage_server`); `None` keeps a field.
    pub async fn update_community(
        &self,
        community_id: Uuid,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), Error> {
        self.call_void(
            "update_community",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .opt("p_name", name)
                .opt("p_description", description),
        )
        .await
    }

    /// Delete the community (owner only).
    pub async fn delete_community(&self, community_id: Uuid) -> Result<(), Error> {
        self.call_void(
            "delete_community",
            RpcArgs::new().arg("p_community_id", community_id),
        )
        .await
    }

    /// Turn invites on or off (`manage_server`).
    pub async fn update_community_settings(
        &self,
        community_id: Uuid,
        allow_invites: bool,
    ) -> Result<(), Error> {
        self.call_void(
            "update_community_settings",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_allow_invites", allow_invites),
        )
        .await
    }

    /// Leave (the owner gets [`Error::InvalidInput`] with hint `owner_cannot_leave`).
    pub async fn leave_community(&self, community_id: Uuid) -> Result<(), Error> {
        self.call_void(
            "leave_community",
            RpcArgs::new().arg("p_community_id", community_id),
        )
        .await
    }

    /// Hand ownership to another member (owner only).
    pub async fn transfer_ownership(
        &self,
        community_id: Uuid,
        new_owner_id: Uuid,
    ) -> Result<(), Error> {
        self.call_void(
            "transfer_ownership",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_new_owner_id", new_owner_id),
        )
        .await
    }

    /// Set (or with `None`, clear) the caller's nickname.
    pub async fn set_nickname(
        &self,
        community_id: Uuid,
        nickname: Option<&str>,
    ) -> Result<(), Error> {
        self.call_void(
            "set_nickname",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_nickname", nickname),
        )
        .await
    }

    // --- roles ------------------------------------------------------------------------------

    /// Create a role (`manage_roles`); returns its id.
    pub async fn create_role(&self, community_id: Uuid, role: &NewRole) -> Result<Uuid, Error> {
        self.call(
            "create_role",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_name", &role.name)
                .opt("p_color", role.color.as_deref())
                .opt("p_position", role.position)
                .arg("p_permissions", &role.permissions),
        )
        .await
    }

    /// Change a role; `None` keeps a field.
    pub async fn update_role(&self, role_id: Uuid, update: &RoleUpdate) -> Result<(), Error> {
        self.call_void(
            "update_role",
            RpcArgs::new()
                .arg("p_role_id", role_id)
                .opt("p_name", update.name.as_deref())
                .opt("p_color", update.color.as_deref())
                .opt("p_position", update.position),
        )
        .await
    }

    /// Delete a role (never @everyone or a system role).
    pub async fn delete_role(&self, role_id: Uuid) -> Result<(), Error> {
        self.call_void("delete_role", RpcArgs::new().arg("p_role_id", role_id))
            .await
    }

    /// Replace a role's permission set.
    pub async fn set_role_permissions(
        &self,
        role_id: Uuid,
        permissions: &[String],
    ) -> Result<(), Error> {
        self.call_void(
            "set_role_permissions",
            RpcArgs::new()
                .arg("p_role_id", role_id)
                .arg("p_permissions", permissions),
        )
        .await
    }

    /// Give a member a role.
    pub async fn assign_role(
        &self,
        community_id: Uuid,
        user_id: Uuid,
        role_id: Uuid,
    ) -> Result<(), Error> {
        self.call_void(
            "assign_role",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_user_id", user_id)
                .arg("p_role_id", role_id),
        )
        .await
    }

    /// Take a role from a member (never @everyone).
    pub async fn remove_role(
        &self,
        community_id: Uuid,
        user_id: Uuid,
        role_id: Uuid,
    ) -> Result<(), Error> {
        self.call_void(
            "remove_role",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_user_id", user_id)
                .arg("p_role_id", role_id),
        )
        .await
    }

    // --- channels ---------------------------------------------------------------------------

    /// Create a channel (`create_channels`); returns its id.
    pub async fn create_channel(
        &self,
        community_id: Uuid,
        channel: &NewChannel,
    ) -> Result<Uuid, Error> {
        self.call(
            "create_channel",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_name", &channel.name)
                .arg("p_kind", channel.kind.as_str())
                .opt("p_topic", channel.topic.as_deref())
                .opt("p_group_id", channel.group_id)
                .opt("p_position", channel.position),
        )
        .await
    }

    /// Change a channel (`manage_channels`); `None` keeps a field.
    pub async fn update_channel(
        &self,
        channel_id: Uuid,
        update: &ChannelUpdate,
    ) -> Result<(), Error> {
        self.call_void(
            "update_channel",
            RpcArgs::new()
                .arg("p_channel_id", channel_id)
                .opt("p_name", update.name.as_deref())
                .opt("p_topic", update.topic.as_deref())
                .opt("p_position", update.position),
        )
        .await
    }

    /// Move a channel into a group (`None` ungroups).
    pub async fn set_channel_group(
        &self,
        channel_id: Uuid,
        group_id: Option<Uuid>,
    ) -> Result<(), Error> {
        self.call_void(
            "set_channel_group",
            RpcArgs::new()
                .arg("p_channel_id", channel_id)
                .arg("p_group_id", group_id),
        )
        .await
    }

    /// Delete a channel.
    pub async fn delete_channel(&self, channel_id: Uuid) -> Result<(), Error> {
        self.call_void(
            "delete_channel",
            RpcArgs::new().arg("p_channel_id", channel_id),
        )
        .await
    }

    /// Create a channel group; returns its id.
    pub async fn create_channel_group(
        &self,
        community_id: Uuid,
        name: &str,
        position: Option<i32>,
    ) -> Result<Uuid, Error> {
        self.call(
            "create_channel_group",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_name", name)
                .opt("p_position", position),
        )
        .await
    }

    /// Delete a channel group (its channels become ungrouped).
    pub async fn delete_channel_group(&self, group_id: Uuid) -> Result<(), Error> {
        self.call_void(
            "delete_channel_group",
            RpcArgs::new().arg("p_group_id", group_id),
        )
        .await
    }

    /// Set a role's overwrite in a channel; all-`None` flags delete it.
    pub async fn set_channel_role_overwrite(
        &self,
        channel_id: Uuid,
        role_id: Uuid,
        flags: OverwriteFlags,
    ) -> Result<(), Error> {
        self.call_void(
            "set_channel_role_overwrite",
            overwrite_args(
                RpcArgs::new()
                    .arg("p_channel_id", channel_id)
                    .arg("p_role_id", role_id),
                flags,
            ),
        )
        .await
    }

    /// Set a member's overwrite in a channel; all-`None` flags delete it.
    pub async fn set_channel_member_overwrite(
        &self,
        channel_id: Uuid,
        user_id: Uuid,
        flags: OverwriteFlags,
    ) -> Result<(), Error> {
        self.call_void(
            "set_channel_member_overwrite",
            overwrite_args(
                RpcArgs::new()
                    .arg("p_channel_id", channel_id)
                    .arg("p_user_id", user_id),
                flags,
            ),
        )
        .await
    }

    /// Channels the caller can view, ordered by group then position.
    pub async fn list_channels(&self, community_id: Uuid) -> Result<Vec<ChannelSummary>, Error> {
        self.call(
            "list_channels",
            RpcArgs::new().arg("p_community_id", community_id),
        )
        .await
    }

    /// The first voice channel called `name` the caller can see (e.g. `Lounge`).
    pub async fn find_voice_channel(
        &self,
        community_id: Uuid,
        name: &str,
    ) -> Result<Option<ChannelSummary>, Error> {
        Ok(self
            .list_channels(community_id)
            .await?
            .into_iter()
            .find(|c| c.kind == ChannelKind::Voice && c.name == name))
    }

    // --- messages ---------------------------------------------------------------------------

    /// Send a message (rate limited per channel).
    pub async fn send_message(
        &self,
        channel_id: Uuid,
        content: &str,
        reply_to: Option<Uuid>,
    ) -> Result<Message, Error> {
        self.call(
            "send_message",
            RpcArgs::new()
                .arg("p_channel_id", channel_id)
                .arg("p_content", content)
                .opt("p_reply_to", reply_to),
        )
        .await
    }

    /// Edit one's own message.
    pub async fn edit_message(&self, message_id: Uuid, content: &str) -> Result<Message, Error> {
        self.call(
            "edit_message",
            RpcArgs::new()
                .arg("p_message_id", message_id)
                .arg("p_content", content),
        )
        .await
    }

    /// Delete a message (author, owner or `manage_messages`).
    pub async fn delete_message(&self, message_id: Uuid) -> Result<(), Error> {
        self.call_void(
            "delete_message",
            RpcArgs::new().arg("p_message_id", message_id),
        )
        .await
    }

    /// A page of history, newest first; pass the last message's cursor to continue.
    /// `limit` is clamped to 1..=100 by the server.
    pub async fn list_channel_messages(
        &self,
        channel_id: Uuid,
        limit: Option<i32>,
        before: Option<MessageCursor>,
    ) -> Result<Vec<MessageView>, Error> {
        self.call(
            "list_channel_messages",
            RpcArgs::new()
                .arg("p_channel_id", channel_id)
                .opt("p_limit", limit)
                .opt("p_before_created_at", before.map(|c| c.before_created_at))
                .opt("p_before_id", before.map(|c| c.before_id)),
        )
        .await
    }

    // --- invites, kicks, bans ---------------------------------------------------------------

    /// Create an invite (`manage_invites`).
    pub async fn create_invite(
        &self,
        community_id: Uuid,
        max_uses: Option<i32>,
        expiry: InviteExpiry,
    ) -> Result<Invite, Error> {
        let hours = match expiry {
            InviteExpiry::AfterHours(hours) => Some(hours),
            InviteExpiry::Never => None,
        };
        self.call(
            "create_invite",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .opt("p_max_uses", max_uses)
                .arg("p_expires_in_hours", hours),
        )
        .await
    }

    /// Revoke an invite.
    pub async fn revoke_invite(&self, invite_id: Uuid) -> Result<(), Error> {
        self.call_void(
            "revoke_invite",
            RpcArgs::new().arg("p_invite_id", invite_id),
        )
        .await
    }

    /// Redeem a code. Failures come back as a status, not an error (except PT429 after too
    /// many failures).
    pub async fn redeem_invite(&self, code: &str) -> Result<RedeemOutcome, Error> {
        self.call("redeem_invite", RpcArgs::new().arg("p_code", code))
            .await
    }

    /// Kick a member below the caller.
    pub async fn kick_member(&self, community_id: Uuid, user_id: Uuid) -> Result<(), Error> {
        self.call_void(
            "kick_member",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_user_id", user_id),
        )
        .await
    }

    /// Ban a member below the caller.
    pub async fn ban_member(
        &self,
        community_id: Uuid,
        user_id: Uuid,
        reason: Option<&str>,
    ) -> Result<(), Error> {
        self.call_void(
            "ban_member",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_user_id", user_id)
                .opt("p_reason", reason),
        )
        .await
    }

    /// Lift a ban (history is kept).
    pub async fn unban_member(&self, community_id: Uuid, user_id: Uuid) -> Result<(), Error> {
        self.call_void(
            "unban_member",
            RpcArgs::new()
                .arg("p_community_id", community_id)
                .arg("p_user_id", user_id),
        )
        .await
    }

    /// Active and revoked bans (`manage_bans`).
    pub async fn list_bans(&self, community_id: Uuid) -> Result<Vec<Ban>, Error> {
        self.call(
            "list_bans",
            RpcArgs::new().arg("p_community_id", community_id),
        )
        .await
    }

    // --- voice ------------------------------------------------------------------------------

    /// Ask to join a voice channel. 42501 ([`Error::PermissionDenied`]) for any lack of access,
    /// including "no such channel"; 22023 with hint `not_voice_channel` for a text channel.
    pub async fn authorize_voice_join(&self, channel_id: Uuid) -> Result<VoiceJoinGrant, Error> {
        self.call(
            "authorize_voice_join",
            RpcArgs::new().arg("p_channel_id", channel_id),
        )
        .await
    }

    /// Ask to mute or disconnect someone in voice.
    pub async fn authorize_voice_moderation(
        &self,
        channel_id: Uuid,
        target_user_id: Uuid,
        action: VoiceModerationAction,
    ) -> Result<VoiceModerationGrant, Error> {
        self.call(
            "authorize_voice_moderation",
            RpcArgs::new()
                .arg("p_channel_id", channel_id)
                .arg("p_target_user_id", target_user_id)
                .arg("p_action", action.as_str()),
        )
        .await
    }
}

fn overwrite_args(args: RpcArgs, flags: OverwriteFlags) -> RpcArgs {
    // Always sent: null is "inherit", not "use the default".
    args.arg("p_can_view", flags.can_view)
        .arg("p_can_send", flags.can_send)
        .arg("p_can_connect", flags.can_connect)
        .arg("p_can_speak", flags.can_speak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_args_are_omitted_and_meaningful_nulls_are_sent() {
        let body = RpcArgs::new()
            .arg("p_nickname", Option::<&str>::None)
            .opt("p_description", Option::<&str>::None)
            .opt("p_limit", Some(10))
            .into_body();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["p_nickname"], Value::Null);
        assert!(v.get("p_description").is_none());
        assert_eq!(v["p_limit"], 10);
    }

    #[test]
    fn overwrite_flags_always_send_all_four() {
        let body = overwrite_args(
            RpcArgs::new(),
            OverwriteFlags {
                can_view: Some(false),
                ..Default::default()
            },
        )
        .into_body();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["p_can_view"], false);
        for key in ["p_can_send", "p_can_connect", "p_can_speak"] {
            assert_eq!(v[key], Value::Null, "{key}");
        }
    }
}
