//! Auth errors in GoTrue's wire shape: `{"code": <status>, "error_code": "...", "msg": "..."}`
//! plus the `x-sb-error-code` header, so client code written against hosted Supabase Auth
//! branches on the same fields here.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An auth request that failed, as GoTrue would report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {error_code}: {msg}")]
pub struct AuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// GoTrue's machine-readable `error_code`.
    pub error_code: &'static str,
    /// Human-readable message (GoTrue's wording where it matters to clients).
    pub msg: String,
}

impl AuthError {
    fn new(status: StatusCode, error_code: &'static str, msg: impl Into<String>) -> Self {
        Self {
            status,
            error_code,
            msg: msg.into(),
        }
    }

    /// Body is not JSON or not the expected shape.
    pub fn bad_json(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("Could not parse request body as JSON: {detail}"),
        )
    }

    /// A field is missing or malformed.
    pub fn validation(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", msg)
    }

    /// The email is not an email.
    pub fn invalid_email() -> Self {
        Self::validation("Unable to validate email address: invalid format")
    }

    /// Password too short (GoTrue's default minimum is 6).
    pub fn weak_password(min: usize) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
            format!("Password should be at least {min} characters."),
        )
    }

    /// bcrypt ignores everything past 72 bytes; GoTrue refuses rather than truncating.
    pub fn password_too_long() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "Password cannot be longer than 72 characters",
        )
    }

    /// Signup with an email that already has an account.
    pub fn user_already_exists() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_already_exists",
            "User already registered",
        )
    }

    /// Wrong email or password (one message for both: no account-existence oracle).
    pub fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_credentials",
            "Invalid login credentials",
        )
    }

    /// Unknown refresh token.
    pub fn refresh_token_not_found() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        )
    }

    /// A refresh token presented a second time (its session is revoked as a result).
    pub fn refresh_token_already_used() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "refresh_token_already_used",
            "Invalid Refresh Token: Already Used",
        )
    }

    /// `grant_type` other than `password` / `refresh_token`.
    pub fn unsupported_grant_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "unsupported_grant_type",
        )
    }

    /// No bearer token on an endpoint that needs one.
    pub fn no_authorization() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "no_authorization",
            "This endpoint requires a valid Bearer token",
        )
    }

    /// The bearer token is forged, malformed or expired (GoTrue answers 403 for all of them).
    pub fn bad_jwt(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "bad_jwt",
            format!("invalid JWT: unable to parse or verify signature, {detail}"),
        )
    }

    /// The token's session was signed out or revoked.
    pub fn session_not_found() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        )
    }

    /// The token's user was deleted.
    pub fn user_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "user_not_found", "User not found")
    }

    /// Admin endpoint called without the service-role key.
    pub fn not_admin() -> Self {
        Self::new(StatusCode::FORBIDDEN, "not_admin", "User not allowed")
    }

    /// Too many failed attempts.
    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "over_request_rate_limit",
            "Request rate limit reached",
        )
    }

    /// Route does not exist in the subset.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found")
    }

    /// Body over the configured limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("Request body is larger than {limit} bytes"),
        )
    }

    /// Database or crypto failure; details go to the log, not the client.
    pub fn unexpected(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "unexpected_failure", msg)
    }

    /// The JSON body GoTrue sends.
    pub fn body(&self) -> serde_json::Value {
        json!({ "code": self.status.as_u16(), "error_code": self.error_code, "msg": self.msg })
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Ok(value) = HeaderValue::from_str(self.error_code) {
            response.headers_mut().insert("x-sb-error-code", value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_gotrue_shape() {
        let body = AuthError::invalid_credentials().body();
        assert_eq!(
            body,
            json!({"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"})
        );
        let response = AuthError::refresh_token_already_used().into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()["x-sb-error-code"],
            "refresh_token_already_used"
        );
    }
}
