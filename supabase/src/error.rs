//! One typed error for every way a Supabase call can fail, keyed on what the server *means*
//! (SQLSTATE, GoTrue `error_code`, HTTP status), never on message text.
//!
//! The SQLSTATE is the database contract (supabase/API.md); messages differ between PostgREST
//! and the local stand-in, so matching on them would break against one or the other.

use std::time::Duration;

use serde::Deserialize;

/// What the server said about a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorDetail {
    /// HTTP status.
    pub status: u16,
    /// SQLSTATE or PostgREST code (`42501`, `PGRST303`) for REST; GoTrue `error_code` for Auth.
    pub code: Option<String>,
    /// Human-readable message.
    pub message: String,
    /// PostgREST `details` (e.g. `retry after 3 seconds` for PT429).
    pub details: Option<String>,
    /// PostgREST `hint`; the migrations put stable machine keys here (`owner_cannot_leave`).
    pub hint: Option<String>,
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " [{code}]")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(details) = &self.details {
            write!(f, " ({details})")?;
        }
        Ok(())
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not permitted (SQLSTATE 42501; HTTP 403 with a user token, 401 without). Also used for
    /// "does not exist" where existence is secret.
    #[error("permission denied: {0}")]
    PermissionDenied(ErrorDetail),
    /// Bad input: SQLSTATE class 22 (22023 invalid value, 22001 too long, 22P02 wrong type),
    /// check violations, PostgREST request errors, GoTrue validation errors.
    #[error("invalid input: {0}")]
    InvalidInput(ErrorDetail),
    /// Not found where existence is not secret (P0002, unknown function or user).
    #[error("not found: {0}")]
    NotFound(ErrorDetail),
    /// Duplicate or conflicting state (23505, 23503, GoTrue `user_already_exists`).
    #[error("conflict: {0}")]
    Conflict(ErrorDetail),
    /// Wrong email or password.
    #[error("invalid credentials: {0}")]
    InvalidCredentials(ErrorDetail),
    /// The access token expired or the session/refresh token is no longer valid: sign in again
    /// (or refresh, if the refresh token is still good).
    #[error("session expired: {0}")]
    SessionExpired(ErrorDetail),
    /// No valid credentials: missing or invalid API key, forged or malformed token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(ErrorDetail),
    /// Rate limited (PT429 / HTTP 429).
    #[error("rate limited: {detail}")]
    RateLimited {
        /// Parsed from the `retry after N seconds` detail when present.
        retry_after: Option<Duration>,
        /// The raw error.
        detail: ErrorDetail,
    },
    /// Request body over the server's limit (413).
    #[error("request too large: {0}")]
    PayloadTooLarge(ErrorDetail),
    /// Any other failure the server reported (5xx, unmapped codes).
    #[error("server error: {0}")]
    Server(ErrorDetail),
    /// The request did not complete (connection refused, timeout, TLS).
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// A success response whose body did not have the expected shape.
    #[error("unexpected response from {endpoint}: {reason}")]
    UnexpectedResponse {
        /// Which call.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// The client was configured with something unusable (bad URL, missing variable).
    #[error("configuration: {0}")]
    Config(String),
    /// A service-role call through supabase_rs failed without a server error body.
    #[error("service-role call: {0}")]
    Admin(String),
}

/// PostgREST's error body.
#[derive(Debug, Deserialize, Default)]
struct RestErrorBody {
    code: Option<String>,
    message: Option<String>,
    details: Option<String>,
    hint: Option<String>,
}

/// GoTrue's error body, in its current (`code`/`error_code`/`msg`) and older
/// (`error`/`error_description`) shapes, plus the API gateway's `{message}`.
#[derive(Debug, Deserialize, Default)]
struct AuthErrorBody {
    error_code: Option<String>,
    msg: Option<String>,
    message: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl Error {
    /// The SQLSTATE / PostgREST code / GoTrue error code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.detail().and_then(|d| d.code.as_deref())
    }

    /// HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.detail().map(|d| d.status)
    }

    /// The server's hint (a stable machine key for some of our RPC errors).
    pub fn hint(&self) -> Option<&str> {
        self.detail().and_then(|d| d.hint.as_deref())
    }

    /// The server's report, when there was one.
    pub fn detail(&self) -> Option<&ErrorDetail> {
        match self {
            Error::PermissionDenied(d)
            | Error::InvalidInput(d)
            | Error::NotFound(d)
            | Error::Conflict(d)
            | Error::InvalidCredentials(d)
            | Error::SessionExpired(d)
            | Error::Unauthenticated(d)
            | Error::PayloadTooLarge(d)
            | Error::Server(d) => Some(d),
            Error::RateLimited { detail, .. } => Some(detail),
            Error::Transport(_)
            | Error::UnexpectedResponse { .. }
            | Error::Config(_)
            | Error::Admin(_) => None,
        }
    }

    /// Map a failed `/rest/v1` response.
    pub fn from_rest(status: u16, body: &[u8]) -> Self {
        let parsed: RestErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let detail = ErrorDetail {
            status,
            code: parsed.code,
            message: parsed.message.unwrap_or_else(|| body_text(body)),
            details: parsed.details,
            hint: parsed.hint,
        };
        classify_rest(detail)
    }

    /// Map a failed `/auth/v1` response.
    pub fn from_auth(status: u16, body: &[u8]) -> Self {
        let parsed: AuthErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let detail = ErrorDetail {
            status,
            code: parsed.error_code.or_else(|| parsed.error.clone()),
            message: parsed
                .msg
                .or(parsed.message)
                .or(parsed.error_description)
                .or(parsed.error)
                .unwrap_or_else(|| body_text(body)),
            details: None,
            hint: None,
        };
        classify_auth(detail)
    }

    /// Map an error from supabase_rs (service-role calls), keeping the server's report.
    pub fn from_service(error: supabase_rs::errors::Error) -> Self {
        match error {
            supabase_rs::errors::Error::Api(api) => classify_rest(ErrorDetail {
                status: api.status,
                code: api.code,
                message: api.message,
                details: api.details,
                hint: api.hint,
            }),
            other => Error::Admin(other.to_string()),
        }
    }
}

fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)])
        .trim()
        .to_string();
    if text.is_empty() {
        "(empty response body)".to_string()
    } else {
        text
    }
}

/// `retry after N seconds` → N seconds.
pub(crate) fn parse_retry_after(details: Option<&str>) -> Option<Duration> {
    let text = details?;
    let rest = &text[text.find("retry after")? + "retry after".len()..];
    let number: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    number.parse().ok().map(Duration::from_secs)
}

fn classify_rest(detail: ErrorDetail) -> Error {
    let code = detail.code.clone().unwrap_or_default();
    match code.as_str() {
        "42501" => return Error::PermissionDenied(detail),
        "P0002" | "PGRST116" | "PGRST202" | "PGRST205" | "42883" | "42P01" => {
            return Error::NotFound(detail)
        }
        "23505" | "23503" => return Error::Conflict(detail),
        "PT429" => {
            return Error::RateLimited {
                retry_after: parse_retry_after(detail.details.as_deref()),
                detail,
            }
        }
        // Expired token; PostgREST says 401 PGRST303.
        "PGRST303" => return Error::SessionExpired(detail),
        // Malformed or forged token, or a token without a role.
        "PGRST300" | "PGRST301" | "PGRST302" => return Error::Unauthenticated(detail),
        _ => {}
    }
    let expired = detail.message.to_ascii_lowercase().contains("jwt expired");
    if code.starts_with("22") || code == "23502" || code == "23514" || code == "P0001" {
        return Error::InvalidInput(detail);
    }
    if code.starts_with("PGRST1") {
        // PGRST1xx: the request itself could not be parsed (bad JSON, wrong params).
        return Error::InvalidInput(detail);
    }
    match detail.status {
        401 if expired => Error::SessionExpired(detail),
        401 => Error::Unauthenticated(detail),
        403 => Error::PermissionDenied(detail),
        404 => Error::NotFound(detail),
        409 => Error::Conflict(detail),
        413 => Error::PayloadTooLarge(detail),
        429 => Error::RateLimited {
            retry_after: parse_retry_after(detail.details.as_deref()),
            detail,
        },
        400 | 422 => Error::InvalidInput(detail),
        _ => Error::Server(detail),
    }
}

fn classify_auth(detail: ErrorDetail) -> Error {
    let code = detail.code.clone().unwrap_or_default();
    match code.as_str() {
        "invalid_credentials" | "invalid_grant" => Error::InvalidCredentials(detail),
        "refresh_token_not_found"
        | "refresh_token_already_used"
        | "session_not_found"
        | "session_expired" => Error::SessionExpired(detail),
        "bad_jwt" if detail.message.contains("expired") => Error::SessionExpired(detail),
        "bad_jwt" | "no_authorization" => Error::Unauthenticated(detail),
        "not_admin" => Error::PermissionDenied(detail),
        "user_already_exists" | "email_exists" | "conflict" => Error::Conflict(detail),
        "user_not_found" => Error::NotFound(detail),
        "over_request_rate_limit" | "over_email_send_rate_limit" => Error::RateLimited {
            retry_after: None,
            detail,
        },
        "weak_password" | "validation_failed" | "bad_json" | "email_address_invalid" => {
            Error::InvalidInput(detail)
        }
        "request_too_large" => Error::PayloadTooLarge(detail),
        _ => match detail.status {
            401 => Error::Unauthenticated(detail),
            403 => Error::PermissionDenied(detail),
            404 => Error::NotFound(detail),
            409 => Error::Conflict(detail),
            413 => Error::PayloadTooLarge(detail),
            429 => Error::RateLimited {
                retry_after: None,
                detail,
            },
            400 | 422 => Error::InvalidInput(detail),
            _ => Error::Server(detail),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(status: u16, body: &str) -> Error {
        Error::from_rest(status, body.as_bytes())
    }

    #[test]
    fn rest_errors_map_on_sqlstate_first() {
        assert!(matches!(
            rest(
                403,
                r#"{"code":"42501","message":"not permitted","details":null,"hint":null}"#
            ),
            Error::PermissionDenied(_)
        ));
        // 42501 without a token is 401 and still a permission error.
        assert!(matches!(
            rest(401, r#"{"code":"42501","message":"x"}"#),
            Error::PermissionDenied(_)
        ));
        let e = rest(
            400,
            r#"{"code":"22023","message":"owner cannot leave","hint":"owner_cannot_leave"}"#,
        );
        assert!(matches!(e, Error::InvalidInput(_)));
        assert_eq!(e.hint(), Some("owner_cannot_leave"));
        assert!(matches!(
            rest(400, r#"{"code":"22001","message":"too long"}"#),
            Error::InvalidInput(_)
        ));
        assert!(matches!(
            rest(400, r#"{"code":"22P02","message":"bad uuid"}"#),
            Error::InvalidInput(_)
        ));
        assert!(matches!(
            rest(409, r#"{"code":"23505","message":"dup"}"#),
            Error::Conflict(_)
        ));
        // PostgREST answers P0002 with 500; the SQLSTATE still says not found.
        assert!(matches!(
            rest(500, r#"{"code":"P0002","message":"nope"}"#),
            Error::NotFound(_)
        ));
        assert!(matches!(
            rest(404, r#"{"code":"PGRST202","message":"no fn"}"#),
            Error::NotFound(_)
        ));
    }

    #[test]
    fn rate_limits_carry_the_wait() {
        match rest(
            429,
            r#"{"code":"PT429","message":"rate limited","details":"retry after 4 seconds"}"#,
        ) {
            Error::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(4)))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_retry_after(Some("nothing")), None);
    }

    #[test]
    fn token_problems_are_told_apart() {
        assert!(matches!(
            rest(401, r#"{"code":"PGRST303","message":"JWT expired"}"#),
            Error::SessionExpired(_)
        ));
        assert!(matches!(
            rest(401, r#"{"code":"PGRST301","message":"JWT invalid"}"#),
            Error::Unauthenticated(_)
        ));
        assert!(matches!(
            rest(401, r#"{"message":"Invalid API key"}"#),
            Error::Unauthenticated(_)
        ));
    }

    #[test]
    fn non_json_and_empty_bodies_still_map_by_status() {
        let e = rest(413, "");
        assert!(matches!(e, Error::PayloadTooLarge(_)));
        assert_eq!(
            e.detail().map(|d| d.message.as_str()),
            Some("(empty response body)")
        );
        assert!(matches!(
            rest(502, "<html>bad gateway</html>"),
            Error::Server(_)
        ));
    }

    #[test]
    fn auth_errors_map_on_error_code() {
        let auth = |status: u16, body: &str| Error::from_auth(status, body.as_bytes());
        assert!(matches!(
            auth(
                400,
                r#"{"code":400,"error_code":"invalid_credentials","msg":"Invalid login credentials"}"#
            ),
            Error::InvalidCredentials(_)
        ));
        let reused = auth(
            400,
            r#"{"code":400,"error_code":"refresh_token_already_used","msg":"Invalid Refresh Token: Already Used"}"#,
        );
        assert!(matches!(reused, Error::SessionExpired(_)));
        assert_eq!(reused.code(), Some("refresh_token_already_used"));
        assert!(matches!(
            auth(
                422,
                r#"{"code":422,"error_code":"user_already_exists","msg":"User already registered"}"#
            ),
            Error::Conflict(_)
        ));
        assert!(matches!(
            auth(
                403,
                r#"{"code":403,"error_code":"bad_jwt","msg":"invalid JWT: token is expired"}"#
            ),
            Error::SessionExpired(_)
        ));
        assert!(matches!(
            auth(
                403,
                r#"{"code":403,"error_code":"bad_jwt","msg":"invalid JWT: signature is invalid"}"#
            ),
            Error::Unauthenticated(_)
        ));
        // Older GoTrue shape.
        assert!(matches!(
            auth(
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid login credentials"}"#
            ),
            Error::InvalidCredentials(_)
        ));
    }
}
