//! The core's typed errors, mapped from haven-supabase's by SQLSTATE class, so the UI can
//! decide which banner to show (offline, permission denied, session expired) without ever
//! looking at message text.

use std::time::Duration;

use haven_supabase::RedeemStatus;

/// Why a core operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// No session: sign in first.
    #[error("not signed in")]
    NotSignedIn,
    /// The session ended (refresh token spent or revoked): sign in again.
    #[error("your session expired; please sign in again")]
    SessionExpired,
    /// Wrong email or password.
    #[error("wrong email or password")]
    InvalidCredentials,
    /// The server refused (SQLSTATE 42501). `hint` is the server's machine key, if any.
    #[error("you are not allowed to do that")]
    PermissionDenied {
        /// e.g. `missing_permission:manage_invites`.
        hint: Option<String>,
    },
    /// Bad input (empty, too long, wrong kind, owner cannot leave, ...).
    #[error("{message}")]
    InvalidInput {
        /// The server's text, for a tooltip or banner.
        message: String,
        /// Stable machine key (`owner_cannot_leave`, `invalid_reply`, ...).
        hint: Option<String>,
    },
    /// Something that does not exist (where existence is not secret).
    #[error("not found")]
    NotFound,
    /// A duplicate (email already registered, name taken, already banned).
    #[error("already exists: {0}")]
    Conflict(String),
    /// Too many requests; retry after the given wait when known.
    #[error("slow down{}", retry_after.map(|d| format!(" (retry in {} s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The server could not be reached (connection refused, timeout, DNS).
    #[error("offline: {0}")]
    Offline(String),
    /// The server failed or answered something we do not understand.
    #[error("server error: {0}")]
    Server(String),
    /// An invite code did not work, and why.
    #[error("invite refused: {}", redeem_reason(*.0))]
    InviteRefused(RedeemStatus),
    /// The persisted session file could not be read or written.
    #[error("session file {path}: {reason}")]
    SessionFile {
        /// Where.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Unusable configuration (bad URL, missing key).
    #[error("configuration: {0}")]
    Config(String),
}

/// Which banner the UI shows for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BannerKind {
    /// Network down or server unreachable.
    Offline,
    /// The server said no.
    PermissionDenied,
    /// Sign in again.
    SessionExpired,
    /// Anything else worth telling the user.
    Error,
}

impl CoreError {
    /// The banner for this error.
    pub fn banner(&self) -> BannerKind {
        match self {
            CoreError::Offline(_) => BannerKind::Offline,
            CoreError::PermissionDenied { .. } => BannerKind::PermissionDenied,
            CoreError::SessionExpired | CoreError::NotSignedIn => BannerKind::SessionExpired,
            _ => BannerKind::Error,
        }
    }

    /// The server's machine hint, when there was one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            CoreError::PermissionDenied { hint } | CoreError::InvalidInput { hint, .. } => {
                hint.as_deref()
            }
            _ => None,
        }
    }
}

fn redeem_reason(status: RedeemStatus) -> &'static str {
    match status {
        RedeemStatus::Joined | RedeemStatus::AlreadyMember => "already a member",
        RedeemStatus::Invalid => "no such invite code",
        RedeemStatus::Expired => "the invite expired",
        RedeemStatus::UsedUp => "the invite has been used up",
        RedeemStatus::Revoked => "the invite was revoked",
        RedeemStatus::Banned => "you are banned from that community",
        RedeemStatus::InvitesDisabled => "that community does not accept invites",
        RedeemStatus::Unknown => "the server refused the invite",
    }
}

impl From<haven_supabase::Error> for CoreError {
    fn from(e: haven_supabase::Error) -> Self {
        use haven_supabase::Error as E;
        let hint = e.hint().map(str::to_string);
        match e {
            E::PermissionDenied(_) => CoreError::PermissionDenied { hint },
            E::InvalidInput(d) | E::PayloadTooLarge(d) => CoreError::InvalidInput {
                message: d.message,
                hint,
            },
            E::NotFound(_) => CoreError::NotFound,
            E::Conflict(d) => CoreError::Conflict(d.message),
            E::InvalidCredentials(_) => CoreError::InvalidCredentials,
            E::SessionExpired(_) | E::Unauthenticated(_) => CoreError::SessionExpired,
            E::RateLimited { retry_after, .. } => CoreError::RateLimited { retry_after },
            E::Transport(t) => CoreError::Offline(t.to_string()),
            E::Server(d) => CoreError::Server(d.to_string()),
            E::UnexpectedResponse { endpoint, reason } => {
                CoreError::Server(format!("{endpoint}: {reason}"))
            }
            E::Config(c) => CoreError::Config(c),
            E::Admin(a) => CoreError::Server(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_pick_the_right_banner() {
        let denied: CoreError = haven_supabase::Error::from_rest(
            403,
            br#"{"code":"42501","hint":"missing_permission:manage_invites"}"#,
        )
        .into();
        assert_eq!(denied.banner(), BannerKind::PermissionDenied);
        assert_eq!(denied.hint(), Some("missing_permission:manage_invites"));
        let expired: CoreError = haven_supabase::Error::from_rest(
            401,
            br#"{"code":"PGRST303","message":"JWT expired"}"#,
        )
        .into();
        assert_eq!(expired.banner(), BannerKind::SessionExpired);
        let limited: CoreError = haven_supabase::Error::from_rest(
            429,
            br#"{"code":"PT429","details":"retry after 3 seconds"}"#,
        )
        .into();
        assert!(
            matches!(limited, CoreError::RateLimited { retry_after: Some(d) } if d.as_secs() == 3)
        );
        let junk: CoreError = haven_supabase::Error::from_rest(502, b"<html>").into();
        assert_eq!(junk.banner(), BannerKind::Error);
    }
}
