//! The HTTP surface: the client WebSocket, `/healthz` for load balancers and `/metrics` for
//! Prometheus.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// 200 when the database answers, 503 otherwise; always lists the SFU nodes.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let db = tokio::time::timeout(std::time::Duration::from_secs(2), app.db.ping()).await;
    let db_ok = matches!(db, Ok(Ok(())));
    let nodes: Vec<_> = app
        .hub
        .lock()
        .placement
        .statuses(Instant::now())
        .into_iter()
        .map(|n| {
            json!({
                "id": n.id, "media_addr": n.media_addr.to_string(), "capacity": n.capacity,
                "participants": n.participants, "healthy": n.healthy,
            })
        })
        .collect();
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "database": if db_ok { "ok" } else { "unreachable" },
        "sfu_nodes": nodes,
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
