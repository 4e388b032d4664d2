//! `/rest/v1`: postrust-server used as a library, plus the wrapper that closes its gaps against
//! PostgREST: the three in local-stack.md (mount path, `+` in query values, 403 for 42501) and a
//! fourth found while building the client: postrust binds a JSON `null` RPC argument as the
//! empty string, so `{"p_group_id": null}` fails with 22P02 where PostgREST passes SQL NULL.
//!
//! Everything else (RLS identity per request, RPC shapes, error bodies) is postrust's; this file
//! only configures it the way Supabase configures PostgREST and fixes what clients would notice.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use sqlx::PgPool;

use crate::null_args::{self, NullArgs};

/// Role PostgREST falls back to without a token, and the one Supabase's anon key carries.
pub const ANON_ROLE: &str = "anon";

/// Largest error body the 42501 fix will buffer; PostgREST error bodies are a few hundred bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How to configure postrust.
#[derive(Debug, Clone)]
pub struct RestSettings {
    /// Connects as `authenticator`.
    pub db_uri: String,
    /// JWKS JSON (public keys) tokens are verified with.
    pub jwks_json: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Body limit postrust applies to what it reads itself.
    pub max_body_bytes: usize,
}

/// Why the REST layer did not start.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// postrust refused the configuration.
    #[error("REST configuration: {0}")]
    Config(String),
    /// postrust could not connect or load the schema cache.
    #[error("REST layer did not start: {0}")]
    Build(String),
}

/// The PostgREST settings Supabase runs with, in PostgREST's own variable names.
fn postrust_vars(settings: &RestSettings) -> Vec<(String, String)> {
    [
        ("PGRST_DB_URI", settings.db_uri.clone()),
        ("PGRST_DB_SCHEMAS", "public".to_string()),
        ("PGRST_DB_ANON_ROLE", ANON_ROLE.to_string()),
        (
            "PGRST_DB_EXTRA_SEARCH_PATH",
            "public,extensions".to_string(),
        ),
        ("PGRST_DB_POOL", settings.pool_size.to_string()),
        // PostgREST-shaped RPC results (bare object/scalar, arrays for sets) at the root.
        ("PGRST_COMPAT_MODE", "true".to_string()),
        // `NOTIFY pgrst, 'reload schema'` after migrations reloads the cache (SIGUSR1 would kill
        // the whole process here).
        ("PGRST_DB_CHANNEL_ENABLED", "true".to_string()),
        ("PGRST_DB_CHANNEL", "pgrst".to_string()),
        ("PGRST_JWT_SECRET", settings.jwks_json.clone()),
        ("PGRST_MAX_BODY_SIZE", settings.max_body_bytes.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Build postrust's router (connects and loads the schema cache) with the wrapper middlewares,
/// ready to be nested at `/rest/v1`. `catalog` is any pool on the same database; it is used to
/// read RPC parameter defaults for the null-argument fix.
pub async fn router(settings: &RestSettings, catalog: PgPool) -> Result<Router, RestError> {
    // Only our variables: a stray PGRST_* in the developer's shell must not change the stack.
    let config = postrust_core::AppConfig::try_from_vars(postrust_vars(settings))
        .map_err(|e| RestError::Config(e.to_string()))?;
    let app = postrust_server::Builder::new(config, postrust_server::Host::SERVER)
        .build()
        .await
        .map_err(|e| RestError::Build(format!("{e:#}")))?;
    let nulls = NullArgs::new(app.state.clone(), catalog, settings.max_body_bytes);
    Ok(app
        .router
        .layer(middleware::from_fn_with_state(
            nulls,
            null_args::null_arguments,
        ))
        .layer(middleware::from_fn(forbid_when_authenticated))
        .layer(middleware::map_request(plus_as_space)))
}

/// Gap 2: postgrest-rs (and browsers' form encoding) send spaces in query values as `+`, which
/// PostgREST decodes as a space and postrust keeps literally.
async fn plus_as_space(mut request: Request) -> Request {
    if let Some(query) = request.uri().query() {
        if query.contains('+') {
            let rewritten = format!("{}?{}", request.uri().path(), query.replace('+', "%20"));
            if let Ok(uri) = rewritten.parse::<Uri>() {
                *request.uri_mut() = uri;
            }
        }
    }
    request
}

/// Gap 3: PostgREST answers SQLSTATE 42501 with 403 when the request ran as a role other than
/// the anon role (the caller proved who they are and is still not allowed), and 401 only for
/// anonymous requests; postrust always answers 401.
async fn forbid_when_authenticated(request: Request, next: Next) -> Response {
    let authenticated = claimed_role(request.headers()).is_some_and(|role| role != ANON_ROLE);
    let response = next.run(request).await;
    if !authenticated || response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!("could not buffer a 401 body from the REST layer: {e}");
            return Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Body::empty())
                .unwrap_or_default();
        }
    };
    if is_insufficient_privilege(&bytes) {
        parts.status = StatusCode::FORBIDDEN;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The `role` claim of the bearer token, read without verifying it. Safe for choosing between
/// 401 and 403 only: an unverifiable token never reaches the database, so it never produces a
/// 42501 in the first place.
pub fn claimed_role(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("role")?.as_str().map(str::to_string)
}

fn is_insufficient_privilege(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(|c| c == "42501"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    fn bearer(claims: serde_json::Value) -> String {
        let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "Bearer {}.{}.sig",
            enc(br#"{"alg":"ES256"}"#),
            enc(claims.to_string().as_bytes())
        )
    }

    /// A stand-in for postrust: echoes the query it received, or answers a fixed error.
    fn fake_rest() -> Router {
        Router::new()
            .route(
                "/echo",
                get(|uri: Uri| async move { uri.query().unwrap_or_default().to_string() }),
            )
            .route(
                "/denied",
                get(|| async {
                    (
                        StatusCode::UNAUTHORIZED,
                        r#"{"code":"42501","message":"not permitted","details":null,"hint":null}"#,
                    )
                }),
            )
            .route(
                "/expired",
                get(|| async {
                    (
                        StatusCode::UNAUTHORIZED,
                        r#"{"code":"PGRST303","message":"JWT expired"}"#,
                    )
                }),
            )
            .layer(middleware::from_fn(forbid_when_authenticated))
            .layer(middleware::map_request(plus_as_space))
    }

    async fn call(uri: &str, auth: Option<String>) -> (StatusCode, String) {
        let mut req = Request::builder().uri(uri);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let app = Router::new().nest("/rest/v1", fake_rest());
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn plus_in_query_values_reaches_the_api_as_an_encoded_space() {
        let (status, query) = call("/rest/v1/echo?name=eq.hello+world&x=a%2Bb", None).await;
        assert_eq!(status, StatusCode::OK);
        // `%2B` (a real plus) is left alone; `+` becomes a space.
        assert_eq!(query, "name=eq.hello%20world&x=a%2Bb");
    }

    #[tokio::test]
    async fn insufficient_privilege_is_403_for_an_authenticated_role() {
        let user = bearer(serde_json::json!({"role": "authenticated", "sub": "u"}));
        let (status, body) = call("/rest/v1/denied", Some(user)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("42501"), "body is kept: {body}");
    }

    #[tokio::test]
    async fn insufficient_privilege_stays_401_when_anonymous() {
        let anon = bearer(serde_json::json!({"role": "anon"}));
        assert_eq!(
            call("/rest/v1/denied", Some(anon)).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call("/rest/v1/denied", None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn other_401s_are_left_alone() {
        let user = bearer(serde_json::json!({"role": "authenticated"}));
        assert_eq!(
            call("/rest/v1/expired", Some(user)).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn claimed_role_tolerates_garbage() {
        let mut headers = HeaderMap::new();
        assert_eq!(claimed_role(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer not-a-jwt".parse().unwrap());
        assert_eq!(claimed_role(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer a.!!!.c".parse().unwrap());
        assert_eq!(claimed_role(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            bearer(serde_json::json!({"role": "service_role"}))
                .parse()
                .unwrap(),
        );
        assert_eq!(claimed_role(&headers).as_deref(), Some("service_role"));
    }

    #[test]
    fn postrust_gets_supabase_settings() {
        let vars = postrust_vars(&RestSettings {
            db_uri: "postgres://authenticator@127.0.0.1/db".into(),
            jwks_json: r#"{"keys":[]}"#.into(),
            pool_size: 4,
            max_body_bytes: 1024,
        });
        let config = postrust_core::AppConfig::try_from_vars(vars).unwrap();
        assert!(config.compat_mode && config.db_channel_enabled);
        assert_eq!(config.db_anon_role.as_deref(), Some("anon"));
        assert_eq!(config.max_body_size, 1024);
    }
}
