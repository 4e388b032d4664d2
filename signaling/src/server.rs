//! Wires the service together and runs it until shutdown: the HTTP listener, the QUIC node
//! endpoint, the LISTEN connection, the event fan-out and the roster broadcaster.
//!
//! Graceful shutdown: one `CancellationToken` reaches every task. On cancel, axum stops
//! accepting and drains, WebSockets are closed with 1001 (going away), the node endpoint is
//! closed, the listener disconnects; [`RunningServer::wait`] returns when all have stopped
//! (or after a deadline).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::{App, AppError};
use crate::config::Config;
use crate::node_tls::{NodeTls, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("writing the ready file {path}: {source}")]
    ReadyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started service.
pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub node_addr: SocketAddr,
    /// SHA-256 of the node endpoint's certificate, for nodes to pin.
    pub node_fingerprint: String,
    /// Public key the SFU verifies grants with.
    pub grant_public_key_pem: String,
    pub app: Arc<App>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Asks every part to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every part stopped (at most 10 s after shutdown was asked).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.app.hub.kill_all();
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            warn!("some tasks did not stop within 10 s");
        }
    }
}

/// Starts everything and returns once listening.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    let shutdown = CancellationToken::new();
    let app = Arc::new(App::from_config(&config, shutdown.clone()).await?);
    let mut tasks = Vec::new();

    let tls = NodeTls::load_or_generate(&config.state_dir)?;
    let endpoint = quinn::Endpoint::server(
        tls.server_config(Duration::from_secs(15))?,
        config.node_listen,
    )
    .map_err(|source| ServerError::Bind {
        addr: config.node_listen,
        source,
    })?;
    let node_addr = endpoint.local_addr().map_err(|source| ServerError::Bind {
        addr: config.node_listen,
        source,
    })?;
    info!(%node_addr, fingerprint = %tls.fingerprint(), "SFU control endpoint listening");
    tasks.push(tokio::spawn(crate::sfu_link::serve(
        endpoint,
        Arc::clone(&app),
        shutdown.clone(),
    )));

    let (events_tx, events_rx) = mpsc::channel(1024);
    tasks.push(tokio::spawn(crate::events::run_listener(
        config.database_url.clone(),
        app.listener_name.clone(),
        events_tx,
        Arc::clone(&app.metrics),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::fanout::run(
        Arc::clone(&app),
        events_rx,
    )));
    tasks.push(tokio::spawn(crate::fanout::run_roster_broadcaster(
        Arc::clone(&app),
    )));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    info!(%http_addr, "HTTP listening (/v1/ws, /healthz, /metrics)");
    let router = crate::http::router(Arc::clone(&app));
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            stop.cancelled().await;
        });
        if let Err(e) = serve.await {
            warn!(error = %e, "HTTP server stopped with an error");
        }
    }));

    let grant_public_key_pem = app.grants.public_key_pem().unwrap_or_default();
    Ok(RunningServer {
        http_addr,
        node_addr,
        node_fingerprint: tls.fingerprint(),
        grant_public_key_pem,
        app,
        shutdown,
        tasks,
    })
}

/// Runs until `signal` resolves, then shuts down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), ServerError> {
    let ready_file = config.ready_file.clone();
    let server = start(config).await?;
    if let Some(path) = ready_file {
        let ready = serde_json::json!({
            "http_addr": server.http_addr.to_string(),
            "node_addr": server.node_addr.to_string(),
            "node_fingerprint": server.node_fingerprint,
            "grant_public_key_pem": server.grant_public_key_pem,
        });
        // Written whole then renamed, so a reader never sees half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, ready.to_string())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| ServerError::ReadyFile { path, source })?;
    }
    signal.await;
    info!("shutting down");
    server.shutdown();
    server.wait().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
