//! What Supabase's API gateway does in front of REST and Auth: the `apikey` check and a request
//! body limit.
//!
//! Without the apikey check, a client that forgets the header works locally and fails against
//! a hosted project; with it, the stand-in fails the same way. The body limit answers 413 from
//! `Content-Length` before any handler buffers the body (chunked bodies are cut off by each
//! surface's own limit).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api_keys::ApiKeys;
use crate::auth::AuthError;

/// Configuration of [`require_apikey`] for one surface.
#[derive(Debug, Clone)]
pub struct ApiKeyGate {
    /// The valid keys.
    pub keys: Arc<ApiKeys>,
    /// Use the apikey as the bearer token when the request has no `Authorization` (the gateway
    /// does this for REST, which is how `curl -H "apikey: ..."` alone runs as `anon`).
    pub apikey_as_bearer: bool,
    /// Paths (below the mount) reachable without a key, e.g. the JWKS.
    pub open_paths: &'static [&'static str],
}

/// Refuse requests without a valid `apikey` header, with the gateway's 401 bodies.
pub async fn require_apikey(
    State(gate): State<ApiKeyGate>,
    mut request: Request,
    next: Next,
) -> Response {
    // CORS preflights never carry credentials.
    if request.method() == Method::OPTIONS || gate.open_paths.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Some(apikey) = request
        .headers()
        .get("apikey")
        .and_then(|v| v.to_str().ok())
    else {
        return gateway_refusal(
            "No API key found in request",
            "No `apikey` request header or url param was found.",
        );
    };
    if !gate.keys.is_known(apikey.trim()) {
        return gateway_refusal(
            "Invalid API key",
            "Double check your Supabase `anon` or `service_role` API key.",
        );
    }
    if gate.apikey_as_bearer && !request.headers().contains_key(header::AUTHORIZATION) {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", apikey.trim())) {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
    }
    next.run(request).await
}

fn gateway_refusal(message: &str, hint: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "message": message, "hint": hint })),
    )
        .into_response()
}

/// Body limit: `(bytes, path prefix that gets GoTrue-shaped errors)`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    /// Largest accepted body.
    pub max_bytes: usize,
}

/// Answer 413 for a body over the limit, in the error shape of the surface it was sent to.
///
/// A declared `Content-Length` is checked without reading anything. A chunked body is buffered
/// here up to the limit, because postrust reports an over-long chunked body as a 400.
pub async fn limit_body(State(limit): State<BodyLimit>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit.max_bytes as u64 => {
            too_large(request.uri().path(), limit.max_bytes)
        }
        Some(_) => next.run(request).await,
        None if headers.contains_key(header::TRANSFER_ENCODING) => {
            let path = request.uri().path().to_string();
            let (parts, body) = request.into_parts();
            match axum::body::to_bytes(body, limit.max_bytes).await {
                Ok(bytes) => {
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
                // Over the limit, or the client hung up mid-body; the former is what this
                // guards against, and the latter has nobody left to read the answer.
                Err(_) => too_large(&path, limit.max_bytes),
            }
        }
        None => next.run(request).await,
    }
}

fn too_large(path: &str, max: usize) -> Response {
    if path.starts_with("/auth/") {
        return AuthError::too_large(max).into_response();
    }
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(json!({
            "code": null,
            "message": "Payload Too Large",
            "details": format!("the request body is larger than {max} bytes"),
            "hint": null,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt;

    fn keys() -> Arc<ApiKeys> {
        Arc::new(ApiKeys {
            anon: "anon-key".into(),
            service_role: "service-key".into(),
        })
    }

    fn app() -> Router {
        let rest = Router::new()
            .route(
                "/echo",
                get(|headers: axum::http::HeaderMap| async move {
                    headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string()
                }),
            )
            .route("/open", get(|| async { "open" }))
            .route(
                "/upload",
                post(|body: String| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn_with_state(
                ApiKeyGate {
                    keys: keys(),
                    apikey_as_bearer: true,
                    open_paths: &["/open"],
                },
                require_apikey,
            ));
        Router::new()
            .nest("/rest/v1", rest)
            .route("/auth/v1/signup", post(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                BodyLimit { max_bytes: 16 },
                limit_body,
            ))
    }

    async fn send(req: Request) -> (StatusCode, String) {
        let res = app().oneshot(req).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn get_req(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn missing_or_wrong_apikey_is_401_with_gateway_body() {
        let (status, body) = send(get_req("/rest/v1/echo", &[])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("No API key found"), "{body}");
        let (status, body) = send(get_req("/rest/v1/echo", &[("apikey", "nope")])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("Invalid API key"), "{body}");
    }

    #[tokio::test]
    async fn apikey_becomes_the_bearer_only_when_none_was_sent() {
        let (_, body) = send(get_req("/rest/v1/echo", &[("apikey", "anon-key")])).await;
        assert_eq!(body, "Bearer anon-key");
        let (_, body) = send(get_req(
            "/rest/v1/echo",
            &[
                ("apikey", "anon-key"),
                ("authorization", "Bearer user-token"),
            ],
        ))
        .await;
        assert_eq!(body, "Bearer user-token");
    }

    #[tokio::test]
    async fn open_paths_and_preflights_need_no_key() {
        assert_eq!(send(get_req("/rest/v1/open", &[])).await.0, StatusCode::OK);
        let preflight = Request::builder()
            .method(Method::OPTIONS)
            .uri("/rest/v1/echo")
            .body(Body::empty())
            .unwrap();
        assert_ne!(send(preflight).await.0, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn declared_bodies_over_the_limit_are_413_in_the_surface_shape() {
        let big = "x".repeat(17);
        let req = Request::builder()
            .method(Method::POST)
            .uri("/rest/v1/upload")
            .header("apikey", "anon-key")
            .header(header::CONTENT_LENGTH, big.len())
            .body(Body::from(big.clone()))
            .unwrap();
        let (status, body) = send(req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.contains("Payload Too Large"), "{body}");
        let req = Request::builder()
            .method(Method::POST)
            .uri("/auth/v1/signup")
            .header(header::CONTENT_LENGTH, big.len())
            .body(Body::from(big))
            .unwrap();
        let (status, body) = send(req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.contains("request_too_large"), "{body}");
        // A chunked body over the limit is refused as well (no Content-Length to check).
        // (The header is what the middleware goes by; the in-memory body stands in for chunks.)
        let chunks = Body::from("x".repeat(40));
        let req = Request::builder()
            .method(Method::POST)
            .uri("/rest/v1/upload")
            .header("apikey", "anon-key")
            .header(header::TRANSFER_ENCODING, "chunked")
            .body(chunks)
            .unwrap();
        assert_eq!(send(req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        // At the limit is fine.
        let ok = "x".repeat(16);
        let req = Request::builder()
            .method(Method::POST)
            .uri("/rest/v1/upload")
            .header("apikey", "anon-key")
            .header(header::CONTENT_LENGTH, ok.len())
            .body(Body::from(ok))
            .unwrap();
        assert_eq!(send(req).await, (StatusCode::OK, "16".to_string()));
    }
}
