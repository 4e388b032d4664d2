//! The communities I belong to: list, create, join with an invite code, create invites (when
//! allowed), leave. Thin calls over the RPCs; the server decides every permission.

use haven_supabase::{Community, Invite, InviteExpiry, RedeemStatus};
use uuid::Uuid;

use crate::core::error::CoreError;
use crate::core::session::SessionManager;

/// Community operations as the signed-in user.
#[derive(Debug, Clone)]
pub struct Communities {
    session: SessionManager,
}

impl Communities {
    /// Operations for the user of `session`.
    pub fn new(session: SessionManager) -> Self {
        Self { session }
    }

    /// Communities I am a member of, by name.
    pub async fn list_mine(&self) -> Result<Vec<Community>, CoreError> {
        let token = self.session.access_token().await?;
        Ok(self
            .session
            .api()
            .as_user(&token)
            .list_my_communities()
            .await?)
    }

    /// Create a community (I become its owner); returns its id.
    pub async fn create(&self, name: &str, description: Option<&str>) -> Result<Uuid, CoreError> {
        let token = self.session.access_token().await?;
        Ok(self
            .session
            .api()
            .as_user(&token)
            .create_community(name, description)
            .await?)
    }

    /// Join with an invite code; returns the community. A refused code is
    /// [`CoreError::InviteRefused`] with the reason (expired, used up, banned, ...).
    pub async fn join_with_invite(&self, code: &str) -> Result<Uuid, CoreError> {
        let code = normalize_invite_code(code);
        let token = self.session.access_token().await?;
        let outcome = self
            .session
            .api()
            .as_user(&token)
            .redeem_invite(&code)
            .await?;
        match (outcome.status, outcome.community_id) {
            (RedeemStatus::Joined | RedeemStatus::AlreadyMember, Some(id)) => Ok(id),
            (status, _) => Err(CoreError::InviteRefused(status)),
        }
    }

    /// Create an invite (needs `manage_invites`; the UI shows the button only then).
    pub async fn create_invite(
        &self,
        community_id: Uuid,
        max_uses: Option<i32>,
        expiry: InviteExpiry,
    ) -> Result<Invite, CoreError> {
        let token = self.session.access_token().await?;
        Ok(self
            .session
            .api()
            .as_user(&token)
            .create_invite(community_id, max_uses, expiry)
            .await?)
    }

    /// Leave a community (the owner gets `InvalidInput` with hint `owner_cannot_leave`).
    pub async fn leave(&self, community_id: Uuid) -> Result<(), CoreError> {
        let token = self.session.access_token().await?;
        Ok(self
            .session
            .api()
            .as_user(&token)
            .leave_community(community_id)
            .await?)
    }
}

/// Codes are shared by hand: accept a pasted invite link or code with stray spaces or
/// capitals (codes are stored lower-case).
pub fn normalize_invite_code(input: &str) -> String {
    let trimmed = input.trim();
    let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
    last.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_codes_are_normalized() {
        assert_eq!(normalize_invite_code("  Q75C5Q3VGY "), "q75c5q3vgy");
        assert_eq!(
            normalize_invite_code("https://haven.example/invite/q75c5q3vgy"),
            "q75c5q3vgy"
        );
    }
}
