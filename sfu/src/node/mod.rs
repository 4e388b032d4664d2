//! The IO shell around the sans-IO engine: what turns [`crate::SfuEngine`] into a running
//! media node.
//!
//! - [`worker`]: one thread per core, each with its own engine (its rooms) and its own UDP
//!   socket on its own port; the answer's ICE candidate is that worker's address, so a
//!   client's datagrams arrive at the thread that owns its room with no routing at all.
//! - [`udp`]: batched socket IO (`recvmmsg`/`sendmmsg` on Linux) and the worker's `poll`.
//! - [`placement`]: which worker owns which room and session (hash maps).
//! - [`controller`]: the control task: link to signaling, request routing, heartbeats,
//!   graceful drain.
//! - [`control_link`] + [`pinning`] + [`quic_runtime`]: the QUIC link (quinn, rustls/ring)
//!   with signaling's certificate pinned by SHA-256, on timers that do not wake for nothing.
//! - [`http`] + [`metrics`] + [`stats`] + [`cpu`]: `/healthz`, `/metrics`, CPU accounting.
//!
//! [`SfuNode::start`] binds everything (so the ready file can list real ports), then
//! [`SfuNode::run`] serves until drained.

pub mod control_link;
pub mod controller;
pub mod cpu;
pub mod http;
pub mod metrics;
pub mod pinning;
pub mod placement;
pub mod quic_runtime;
pub mod stats;
pub mod udp;
pub mod worker;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_proto::control::NodeSecret;
use haven_proto::grant::GrantVerifier;
use haven_proto::NodeId;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::node::control_link::LinkConfig;
use crate::node::controller::{Controller, ControllerConfig};
use crate::node::pinning::CertPin;
use crate::node::stats::NodeStats;
use crate::node::udp::MediaSocket;
use crate::node::worker::{WorkerHandle, WorkerReport, WorkerSetup};
use crate::SfuConfig;

/// Everything the node is configured with (the binary builds it from its flags).
#[derive(Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Address the media sockets bind to.
    pub media_bind: IpAddr,
    /// Port of worker 0; worker i binds `base + i`. 0: every worker takes a free port.
    pub media_port_base: u16,
    /// Address put in ICE candidates when the node is behind 1:1 NAT (ports must map
    /// unchanged). Default: `media_bind`.
    pub public_ip: Option<IpAddr>,
    pub workers: usize,
    /// New rooms fill the first worker until it holds this many participants (or its CPU
    /// passes `pack_cpu_permille`), then the next; 0 spreads rooms over all workers from the
    /// start. See `placement.rs` for why.
    pub pack_participants: u32,
    /// A worker above this share of one core (‰, over its last second) takes no new rooms
    /// while another can.
    pub pack_cpu_permille: u32,
    pub link: LinkConfig,
    pub secret: NodeSecret,
    pub grant_verifier: GrantVerifier,
    pub capacity: u32,
    pub default_slots: u8,
    pub http_listen: SocketAddr,
    pub drain_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub room_stats_interval: Duration,
    /// Kernel socket buffer size asked for, each way, per worker socket.
    pub udp_buffer_bytes: usize,
}

impl NodeConfig {
    /// Defaults for everything but identity, addresses and keys.
    pub fn new(
        node_id: NodeId,
        signaling_addr: String,
        pin: CertPin,
        secret: NodeSecret,
        grant_verifier: GrantVerifier,
    ) -> Self {
        Self {
            node_id,
            media_bind: IpAddr::from([127, 0, 0, 1]),
            media_port_base: 0,
            public_ip: None,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pack_participants: 1000,
            pack_cpu_permille: 500,
            link: LinkConfig {
                signaling_addr,
                server_name: "haven-signaling".into(),
                pin,
                connect_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(10),
                keep_alive: Duration::from_secs(3),
            },
            secret,
            grant_verifier,
            capacity: 2000,
            default_slots: 3,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9300)),
            drain_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            room_stats_interval: Duration::from_secs(5),
            udp_buffer_bytes: 4 << 20,
        }
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("node_id", &self.node_id)
            .field("media_bind", &self.media_bind)
            .field("media_port_base", &self.media_port_base)
            .field("public_ip", &self.public_ip)
            .field("workers", &self.workers)
            .field("pack_participants", &self.pack_participants)
            .field("pack_cpu_permille", &self.pack_cpu_permille)
            .field("link", &self.link)
            .field("capacity", &self.capacity)
            .field("http_listen", &self.http_listen)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("--public-ip is required when media binds to the unspecified address {0}")]
    NeedPublicIp(IpAddr),
    #[error("binding media socket {addr}: {source}")]
    BindMedia {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("media port {0} + {1} workers exceeds 65535")]
    PortRange(u16, usize),
    #[error("starting worker {index}: {source}")]
    Worker {
        index: usize,
        source: worker::WorkerError,
    },
    #[error("binding HTTP {addr}: {source}")]
    BindHttp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("writing the ready file {path}: {source}")]
    ReadyFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The addresses a started node listens on, as the ready file lists them.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyInfo {
    pub node_id: String,
    pub pid: u32,
    /// The `/healthz` + `/metrics` listener.
    pub http: SocketAddr,
    /// Per worker: the address in its ICE candidates.
    pub media: Vec<SocketAddr>,
    /// Per worker: the address its socket is bound to.
    pub media_bound: Vec<SocketAddr>,
}

/// A node whose sockets are bound and workers running, not yet serving control.
pub struct SfuNode {
    cfg: NodeConfig,
    epoch: Instant,
    stats: Arc<NodeStats>,
    workers: Vec<WorkerHandle>,
    reports: mpsc::UnboundedReceiver<WorkerReport>,
    http: tokio::net::TcpListener,
    http_addr: SocketAddr,
}

impl SfuNode {
    /// Bind the media sockets and the HTTP listener, start the workers. Must be called
    /// inside a tokio runtime.
    pub async fn start(cfg: NodeConfig) -> Result<Self, NodeError> {
        let advertised = match cfg.public_ip {
            Some(ip) => ip,
            None if cfg.media_bind.is_unspecified() => {
                return Err(NodeError::NeedPublicIp(cfg.media_bind))
            }
            None => cfg.media_bind,
        };
        let workers_n = cfg.workers.max(1);
        if cfg.media_port_base != 0 && usize::from(cfg.media_port_base) + workers_n - 1 > 65535 {
            return Err(NodeError::PortRange(cfg.media_port_base, workers_n));
        }
        let epoch = Instant::now();
        let stats = Arc::new(NodeStats::new(workers_n, cfg.capacity));
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let mut workers = Vec::with_capacity(workers_n);
        for index in 0..workers_n {
            let port = if cfg.media_port_base == 0 {
                0
            } else {
                cfg.media_port_base + index as u16
            };
            let bind = SocketAddr::new(cfg.media_bind, port);
            let socket = MediaSocket::bind(bind, cfg.udp_buffer_bytes)
                .map_err(|source| NodeError::BindMedia { addr: bind, source })?;
            let media_addr = SocketAddr::new(advertised, socket.local_addr().port());
            let mut engine = SfuConfig::new(cfg.node_id.clone(), media_addr);
            engine.capacity = cfg.capacity;
            engine.default_slots = cfg.default_slots;
            let handle = worker::spawn(WorkerSetup {
                index,
                engine,
                verifier: cfg.grant_verifier.clone(),
                socket,
                stats: Arc::clone(&stats.workers[index]),
                reports: reports_tx.clone(),
                room_stats_interval: cfg.room_stats_interval,
                epoch,
            })
            .map_err(|source| NodeError::Worker { index, source })?;
            workers.push(handle);
        }
        let http = tokio::net::TcpListener::bind(cfg.http_listen)
            .await
            .map_err(|source| NodeError::BindHttp {
                addr: cfg.http_listen,
                source,
            })?;
        let http_addr = http.local_addr().map_err(|source| NodeError::BindHttp {
            addr: cfg.http_listen,
            source,
        })?;
        Ok(Self {
            cfg,
            epoch,
            stats,
            workers,
            reports,
            http,
            http_addr,
        })
    }

    pub fn ready_info(&self) -> ReadyInfo {
        ReadyInfo {
            node_id: self.cfg.node_id.to_string(),
            pid: std::process::id(),
            http: self.http_addr,
            media: self.workers.iter().map(|w| w.media_addr).collect(),
            media_bound: self.workers.iter().map(|w| w.bound_addr).collect(),
        }
    }

    pub fn stats(&self) -> Arc<NodeStats> {
        Arc::clone(&self.stats)
    }

    /// Write [`ReadyInfo`] as JSON, atomically (a reader never sees half a file).
    pub fn write_ready_file(&self, path: &Path) -> Result<(), NodeError> {
        let err = |source| NodeError::ReadyFile {
            path: path.to_path_buf(),
            source,
        };
        let json = serde_json::to_vec_pretty(&self.ready_info())
            .map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Serve until drained: `drain` starts the graceful drain (SIGTERM), `force` ends it at
    /// once (a second signal).
    pub async fn run(self, drain: CancellationToken, force: CancellationToken) {
        let info = self.ready_info();
        info!(
            node = %info.node_id,
            http = %info.http,
            media = ?info.media,
            signaling = %self.cfg.link.signaling_addr,
            "haven-sfu ready"
        );
        let http_stop = CancellationToken::new();
        let http = tokio::spawn(http::serve(
            self.http,
            Arc::clone(&self.stats),
            self.epoch,
            http_stop.clone(),
        ));
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        let media_addr = self
            .workers
            .first()
            .map_or(SocketAddr::new(self.cfg.media_bind, 0), |w| w.media_addr);
        let controller = Controller::new(
            ControllerConfig {
                node_id: self.cfg.node_id.clone(),
                secret: self.cfg.secret.clone(),
                capacity: self.cfg.capacity,
                media_addr,
                link: self.cfg.link.clone(),
                heartbeat_interval: self.cfg.heartbeat_interval,
                pack_participants: self.cfg.pack_participants,
                pack_cpu_permille: self.cfg.pack_cpu_permille,
                drain_timeout: self.cfg.drain_timeout,
                reconnect_min: Duration::from_millis(250),
                reconnect_max: Duration::from_secs(10),
            },
            self.workers,
            Arc::clone(&self.stats),
            link_tx,
        );
        controller.run(self.reports, link_rx, drain, force).await;
        http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    }
}
