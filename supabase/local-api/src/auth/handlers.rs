//! The HTTP endpoints of the GoTrue subset, with GoTrue's request and response shapes.
//!
//! Request bodies are taken as bytes and parsed here rather than with axum's `Json` extractor,
//! so that malformed JSON, wrong types and oversized bodies come back in GoTrue's error shape
//! instead of axum's plain-text rejections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::AuthError;
use super::password;
use super::store::{LogoutScope, NewUser, Rotation, SessionRecord, StoreError, UserRecord};
use super::tokens::{new_refresh_token, refresh_token_digest, user_token_validation, AccessClaims};
use super::AuthState;

type AuthResult<T> = Result<T, AuthError>;

#[derive(Debug, Deserialize)]
struct SignupBody {
    email: Option<String>,
    password: Option<String>,
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct PasswordGrant {
    email: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RefreshGrant {
    refresh_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AdminCreateUser {
    email: Option<String>,
    password: Option<String>,
    #[serde(default)]
    email_confirm: bool,
    user_metadata: Option<Value>,
    app_metadata: Option<Value>,
}

/// `POST /auth/v1/signup`: create an account and, as with autoconfirm on, sign it in.
pub async fn signup(
    State(state): State<Arc<AuthState>>,
    body: Result<Bytes, BytesRejection>,
) -> AuthResult<Response> {
    let body: SignupBody = parse_body(body, state.max_body_bytes)?;
    let email = normalize_email(body.email.as_deref())?;
    let password = body
        .password
        .ok_or_else(|| AuthError::validation("Signup requires a valid password"))?;
    password::check_policy(&password)?;
    let user_metadata = metadata_object(body.data, "data")?;
    let password_hash = password::hash(password, state.bcrypt_cost).await?;
    let refresh = new_refresh_token();
    let new = NewUser {
        email,
        password_hash,
        user_metadata,
        app_metadata: default_app_metadata(),
        confirmed: true,
        signed_in: true,
    };
    let (user, session) = match state
        .store
        .create_user(&new, Some(&refresh_token_digest(&refresh)))
        .await
    {
        Ok(created) => created,
        Err(StoreError::EmailTaken) => return Err(AuthError::user_already_exists()),
        Err(StoreError::Db(e)) => {
            // Typically a trigger on auth.users (the profile trigger) refusing the row; hosted
            // Auth reports that with exactly this message.
            tracing::warn!("signup insert failed: {e}");
            return Err(AuthError::unexpected("Database error saving new user"));
        }
    };
    let session = session.ok_or_else(|| AuthError::unexpected("session was not created"))?;
    Ok(Json(session_body(&state, &user, session, refresh)?).into_response())
}

/// `POST /auth/v1/token?grant_type=password|refresh_token`.
pub async fn token(
    State(state): State<Arc<AuthState>>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> AuthResult<Response> {
    match query.get("grant_type").map(String::as_str) {
        Some("password") => password_grant(&state, parse_body(body, state.max_body_bytes)?).await,
        Some("refresh_token") => {
            refresh_grant(&state, parse_body(body, state.max_body_bytes)?).await
        }
        _ => Err(AuthError::unsupported_grant_type()),
    }
}

async fn password_grant(state: &AuthState, body: PasswordGrant) -> AuthResult<Response> {
    let email = normalize_email(body.email.as_deref())?;
    let password = body.password.unwrap_or_default();
    if !state.limiter.allows(&email, Instant::now()) {
        return Err(AuthError::rate_limited());
    }
    let user = state.store.user_by_email(&email).await.map_err(db_error)?;
    let stored = user.as_ref().and_then(|u| u.encrypted_password.clone());
    // Always run bcrypt, even for unknown emails: equal timing, no account-existence oracle.
    let matches = password::verify(password, stored).await;
    let Some(user) = user.filter(|_| matches) else {
        state.limiter.record_failure(&email, Instant::now());
        return Err(AuthError::invalid_credentials());
    };
    state.limiter.clear(&email);
    let refresh = new_refresh_token();
    let session = state
        .store
        .sign_in(user.id, &refresh_token_digest(&refresh))
        .await
        .map_err(db_error)?;
    // Re-read for the fresh last_sign_in_at.
    let user = state
        .store
        .user_by_id(user.id)
        .await
        .map_err(db_error)?
        .unwrap_or(user);
    Ok(Json(session_body(state, &user, session, refresh)?).into_response())
}

async fn refresh_grant(state: &AuthState, body: RefreshGrant) -> AuthResult<Response> {
    let presented = body
        .refresh_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::validation("refresh_token required"))?;
    let next = new_refresh_token();
    match state
        .store
        .rotate(
            &refresh_token_digest(&presented),
            &refresh_token_digest(&next),
        )
        .await
        .map_err(db_error)?
    {
        Rotation::Rotated { user, session } => {
            Ok(Json(session_body(state, &user, session, next)?).into_response())
        }
        Rotation::NotFound => Err(AuthError::refresh_token_not_found()),
        Rotation::Reused => {
            tracing::warn!("refresh token reused; its session was revoked");
            Err(AuthError::refresh_token_already_used())
        }
    }
}

/// `GET /auth/v1/user`: the signed-in user.
pub async fn user(State(state): State<Arc<AuthState>>, headers: HeaderMap) -> AuthResult<Response> {
    let claims = authenticate(&state, &headers).await?;
    let user = state
        .store
        .user_by_id(claims.sub)
        .await
        .map_err(db_error)?
        .ok_or_else(AuthError::user_not_found)?;
    Ok(Json(user_json(&user)).into_response())
}

/// `POST /auth/v1/logout?scope=global|local|others`: end sessions (refresh tokens die with
/// them). Access tokens already issued stay valid at the REST layer until they expire, as on a
/// hosted project.
pub async fn logout(
    State(state): State<Arc<AuthState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> AuthResult<Response> {
    let scope = match query.get("scope").map(String::as_str) {
        None | Some("global") => LogoutScope::Global,
        Some("local") => LogoutScope::Local,
        Some("others") => LogoutScope::Others,
        Some(other) => {
            return Err(AuthError::validation(format!(
                "Unsupported logout scope {other:?}"
            )))
        }
    };
    let claims = authenticate(&state, &headers).await?;
    state
        .store
        .logout(claims.sub, claims.session_id, scope)
        .await
        .map_err(db_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /auth/v1/.well-known/jwks.json`: the public signing key.
pub async fn jwks(State(state): State<Arc<AuthState>>) -> Response {
    Json(state.key.jwks()).into_response()
}

/// `GET /auth/v1/health`.
pub async fn health() -> Response {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "name": "haven-local-auth",
        "description": "Dev-only subset of the GoTrue API"
    }))
    .into_response()
}

/// `POST /auth/v1/admin/users` (service role): create a user, for seeding and bulk test users.
pub async fn admin_create_user(
    State(state): State<Arc<AuthState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AuthResult<Response> {
    require_service_role(&state, &headers)?;
    let body: AdminCreateUser = parse_body(body, state.max_body_bytes)?;
    let email = normalize_email(body.email.as_deref())?;
    let password = body
        .password
        .ok_or_else(|| AuthError::validation("Password is required"))?;
    password::check_policy(&password)?;
    let mut app_metadata = default_app_metadata();
    if let (Value::Object(extra), Value::Object(base)) = (
        metadata_object(body.app_metadata, "app_metadata")?,
        &mut app_metadata,
    ) {
        base.extend(extra);
    }
    let new = NewUser {
        email,
        password_hash: password::hash(password, state.bcrypt_cost).await?,
        user_metadata: metadata_object(body.user_metadata, "user_metadata")?,
        app_metadata,
        confirmed: body.email_confirm,
        signed_in: false,
    };
    match state.store.create_user(&new, None).await {
        Ok((user, _)) => Ok(Json(user_json(&user)).into_response()),
        Err(StoreError::EmailTaken) => Err(AuthError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error_code: "email_exists",
            msg: "A user with this email address has already been registered".into(),
        }),
        Err(StoreError::Db(e)) => {
            tracing::warn!("admin create user failed: {e}");
            Err(AuthError::unexpected("Database error creating new user"))
        }
    }
}

/// `DELETE /auth/v1/admin/users/{id}` (service role).
pub async fn admin_delete_user(
    State(state): State<Arc<AuthState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AuthResult<Response> {
    require_service_role(&state, &headers)?;
    let id = Uuid::parse_str(&id).map_err(|_| AuthError::validation("user id must be a UUID"))?;
    if state.store.delete_user(id).await.map_err(db_error)? {
        Ok(Json(json!({})).into_response())
    } else {
        Err(AuthError::user_not_found())
    }
}

/// Anything else under `/auth/v1`.
pub async fn not_found() -> AuthError {
    AuthError::not_found()
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> AuthError {
    AuthError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        error_code: "method_not_allowed",
        msg: "Method not allowed".into(),
    }
}

// --- helpers ---------------------------------------------------------------------------------

fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> AuthResult<T> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AuthError::too_large(limit)
        } else {
            AuthError::bad_json(rejection.body_text())
        }
    })?;
    if bytes.is_empty() {
        return Err(AuthError::bad_json("request body is empty"));
    }
    serde_json::from_slice(&bytes).map_err(AuthError::bad_json)
}

/// Lower-cased, trimmed, and plausibly an address. GoTrue's own check is a regex of the same
/// strictness; deliverability is not checked (no email is ever sent).
fn normalize_email(raw: Option<&str>) -> AuthResult<String> {
    let email = raw.map(str::trim).unwrap_or_default().to_lowercase();
    if email.is_empty() {
        return Err(AuthError::validation("An email address is required"));
    }
    let valid = email.len() <= 255
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Ok(email)
    } else {
        Err(AuthError::invalid_email())
    }
}

fn metadata_object(value: Option<Value>, field: &str) -> AuthResult<Value> {
    match value {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(map)) => Ok(Value::Object(map)),
        Some(_) => Err(AuthError::validation(format!(
            "{field} must be a JSON object"
        ))),
    }
}

fn default_app_metadata() -> Value {
    json!({ "provider": "email", "providers": ["email"] })
}

fn db_error(e: StoreError) -> AuthError {
    tracing::error!("auth database error: {e}");
    AuthError::unexpected("Database error")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Verify the caller's access token and that its session is still open.
async fn authenticate(state: &AuthState, headers: &HeaderMap) -> AuthResult<AccessClaims> {
    let token = bearer(headers).ok_or_else(AuthError::no_authorization)?;
    let claims: AccessClaims = state
        .key
        .verify(token, &user_token_validation(&state.issuer))
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => {
                AuthError::bad_jwt("token has invalid claims: token is expired")
            }
            ErrorKind::InvalidAudience
            | ErrorKind::InvalidIssuer
            | ErrorKind::MissingRequiredClaim(_) => {
                AuthError::bad_jwt(format!("token has invalid claims: {e}"))
            }
            _ => AuthError::bad_jwt("token is malformed or its signature is invalid"),
        })?;
    if !state
        .store
        .session_active(claims.session_id, claims.sub)
        .await
        .map_err(db_error)?
    {
        return Err(AuthError::session_not_found());
    }
    Ok(claims)
}

fn require_service_role(state: &AuthState, headers: &HeaderMap) -> AuthResult<()> {
    let token = bearer(headers).ok_or_else(AuthError::no_authorization)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_aud = false;
    let claims: Value = state
        .key
        .verify(token, &validation)
        .map_err(|_| AuthError::bad_jwt("token is malformed or its signature is invalid"))?;
    if claims.get("role").and_then(Value::as_str) == Some("service_role") {
        Ok(())
    } else {
        Err(AuthError::not_admin())
    }
}

/// GoTrue's user object.
pub fn user_json(user: &UserRecord) -> Value {
    json!({
        "id": user.id,
        "aud": user.aud,
        "role": user.role,
        "email": user.email,
        "email_confirmed_at": user.email_confirmed_at,
        "phone": "",
        "confirmed_at": user.email_confirmed_at,
        "last_sign_in_at": user.last_sign_in_at,
        "app_metadata": user.app_metadata,
        "user_metadata": user.user_metadata,
        "identities": [],
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "is_anonymous": user.is_anonymous,
    })
}

/// GoTrue's session object: a fresh access token for `session` plus the new refresh token.
fn session_body(
    state: &AuthState,
    user: &UserRecord,
    session: SessionRecord,
    refresh_token: String,
) -> AuthResult<Value> {
    let now = chrono::Utc::now().timestamp();
    let claims = AccessClaims::for_user(
        user,
        session.id,
        &state.issuer,
        now,
        state.jwt_expiry_secs,
        session.created_at.timestamp(),
    );
    let access_token = state.key.sign(&claims).map_err(|e| {
        tracing::error!("signing failed: {e}");
        AuthError::unexpected("could not sign the access token")
    })?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": state.jwt_expiry_secs,
        "expires_at": claims.exp,
        "refresh_token": refresh_token,
        "user": user_json(user),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_validated() {
        assert_eq!(
            normalize_email(Some("  Demo@Haven.Local ")).unwrap(),
            "demo@haven.local"
        );
        for bad in [
            "", "no-at", "a@b", "@x.y", "a b@x.y", "a@@x.y", "a@x.", "a@.x",
        ] {
            assert!(normalize_email(Some(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            normalize_email(None).unwrap_err().error_code,
            "validation_failed"
        );
    }

    #[test]
    fn bodies_that_are_not_json_or_mistyped_are_bad_json() {
        let err = parse_body::<SignupBody>(Ok(Bytes::from_static(b"{not json")), 10).unwrap_err();
        assert_eq!(
            (err.status, err.error_code),
            (StatusCode::BAD_REQUEST, "bad_json")
        );
        let err =
            parse_body::<SignupBody>(Ok(Bytes::from_static(br#"{"email": 5}"#)), 10).unwrap_err();
        assert_eq!(err.error_code, "bad_json");
        let err = parse_body::<SignupBody>(Ok(Bytes::new()), 10).unwrap_err();
        assert_eq!(err.error_code, "bad_json");
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert_eq!(metadata_object(None, "data").unwrap(), json!({}));
        assert!(metadata_object(Some(json!([1])), "data").is_err());
        assert_eq!(
            metadata_object(Some(json!({"username": "a"})), "data").unwrap()["username"],
            "a"
        );
    }

    #[test]
    fn bearer_is_case_insensitive_and_rejects_empty() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
