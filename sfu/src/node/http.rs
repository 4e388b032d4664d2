//! The node's HTTP surface for operators: `/healthz` (are the media workers turning, what
//! is the control link doing) and `/metrics` (Prometheus text). Separate from media and
//! control traffic, on its own listener.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::node::metrics;
use crate::node::stats::{NodeStats, WorkerStats};

/// A worker that has not published for this long is considered stuck.
const WORKER_STALE: Duration = Duration::from_secs(3);

#[derive(Clone)]
struct HttpState {
    stats: Arc<NodeStats>,
    epoch: Instant,
}

pub fn router(stats: Arc<NodeStats>, epoch: Instant) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(HttpState { stats, epoch })
}

/// Serve until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    stats: Arc<NodeStats>,
    epoch: Instant,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(stats, epoch))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    let now_ms = s.epoch.elapsed().as_millis() as u64;
    let alive = s
        .stats
        .workers
        .iter()
        .filter(|w| {
            !w.stopped.load(Ordering::Relaxed)
                && now_ms.saturating_sub(WorkerStats::get(&w.gauges.alive_at_ms))
                    < WORKER_STALE.as_millis() as u64
        })
        .count();
    let healthy = alive == s.stats.workers.len();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "workers": s.stats.workers.len(),
        "workers_alive": alive,
        "control_link": s.stats.link_state().as_str(),
        "draining": s.stats.is_draining(),
        "participants": s.stats.participants(),
        "rooms": s.stats.rooms(),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics_text(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&s.stats),
    )
}
