//! `haven-sfu`: the media node binary. Parses flags (each with a `HAVEN_SFU_*` environment
//! fallback), sets up logging, starts a [`haven_sfu::node::SfuNode`] and turns SIGTERM/SIGINT
//! into a graceful drain (a second signal stops at once). Everything else is in the library.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use haven_proto::control::NodeSecret;
use haven_proto::grant::GrantVerifier;
use haven_proto::NodeId;
use haven_sfu::node::pinning::CertPin;
use haven_sfu::node::{NodeConfig, SfuNode};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// mimalloc, not glibc's malloc: it keeps objects of one size class together in their own
/// pages, so each kind of per-participant state a forwarded packet reads (subscriber
/// entries' slots, SRTP keys, buffers) sits densely instead of between the ~10 KB `Rtc`s
/// and str0m's buffers that were allocated beside it at join. That cut the node's CPU per
/// forwarded packet by ~8 % at 100 and 500 participants (docs/benchmarks.md, session 6),
/// for ~60 % more resident memory per participant. The library and its tests keep the
/// system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Haven SFU media node: forwards Opus RTP between the participants of voice rooms, under
/// the control of the signaling service (QUIC control link).
#[derive(Debug, Parser)]
#[command(name = "haven-sfu", version)]
struct Args {
    /// This node's id; join grants name the node they are valid on.
    #[arg(long, env = "HAVEN_SFU_NODE_ID")]
    node_id: String,

    /// IP address the media (UDP) sockets bind to.
    #[arg(long, env = "HAVEN_SFU_MEDIA_BIND", default_value = "127.0.0.1")]
    media_bind: IpAddr,

    /// UDP port of worker 0; worker i uses base + i. 0 lets every worker take a free port.
    #[arg(long, env = "HAVEN_SFU_MEDIA_PORT_BASE", default_value_t = 0)]
    media_port_base: u16,

    /// IP address clients reach the node at, put in ICE candidates (1:1 NAT, ports
    /// unchanged). Required when --media-bind is 0.0.0.0 or ::. Default: --media-bind.
    #[arg(long, env = "HAVEN_SFU_PUBLIC_IP")]
    public_ip: Option<IpAddr>,

    /// Media worker threads, each with its own rooms and UDP port. Default: one per core.
    #[arg(long, env = "HAVEN_SFU_WORKERS")]
    workers: Option<usize>,

    /// New rooms fill the first worker until it holds this many participants (or is past
    /// --pack-cpu-permille), then the next: fewer wake-ups per packet at light load. 0
    /// spreads rooms over all workers from the start.
    #[arg(long, env = "HAVEN_SFU_PACK_PARTICIPANTS", default_value_t = 1000)]
    pack_participants: u32,

    /// A worker above this share of one core (per mille) takes no new rooms while another can.
    #[arg(long, env = "HAVEN_SFU_PACK_CPU_PERMILLE", default_value_t = 500)]
    pack_cpu_permille: u32,

    /// Signaling's QUIC control endpoint, host:port.
    #[arg(long, env = "HAVEN_SFU_SIGNALING_ADDR")]
    signaling_addr: String,

    /// SHA-256 fingerprint of signaling's control certificate (hex, colons allowed), as
    /// signaling prints it at start-up.
    #[arg(long, env = "HAVEN_SFU_SIGNALING_CERT_SHA256")]
    signaling_cert_sha256: String,

    /// TLS server name sent to signaling (verification pins the certificate instead).
    #[arg(
        long,
        env = "HAVEN_SFU_SIGNALING_SERVER_NAME",
        default_value = "haven-signaling"
    )]
    signaling_server_name: String,

    /// Shared node secret (signaling's HAVEN_NODE_SECRET). Prefer --node-secret-file.
    #[arg(long, env = "HAVEN_SFU_NODE_SECRET", hide_env_values = true)]
    node_secret: Option<String>,

    /// File holding the shared node secret (trailing whitespace ignored).
    #[arg(
        long,
        env = "HAVEN_SFU_NODE_SECRET_FILE",
        conflicts_with = "node_secret"
    )]
    node_secret_file: Option<PathBuf>,

    /// Signaling's join-grant public key: a PEM `PUBLIC KEY` block, inline or as a file path.
    #[arg(long, env = "HAVEN_SFU_GRANT_PUBLIC_KEY")]
    grant_public_key: String,

    /// Most participants the node accepts.
    #[arg(long, env = "HAVEN_SFU_CAPACITY", default_value_t = 2000)]
    capacity: u32,

    /// Receive slots of a room whose first offer does not ask for a number.
    #[arg(long, env = "HAVEN_SFU_SLOTS", default_value_t = 3)]
    slots: u8,

    /// Address of the /healthz and /metrics HTTP listener (port 0: any free port).
    #[arg(long, env = "HAVEN_SFU_HTTP_LISTEN", default_value = "127.0.0.1:9300")]
    http_listen: SocketAddr,

    /// Seconds a drain (SIGTERM) waits for rooms to empty before handing them back.
    #[arg(long, env = "HAVEN_SFU_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    drain_timeout_secs: u64,

    /// Milliseconds between heartbeats to signaling.
    #[arg(long, env = "HAVEN_SFU_HEARTBEAT_MS", default_value_t = 5000)]
    heartbeat_ms: u64,

    /// Seconds between per-room statistics reports to signaling.
    #[arg(long, env = "HAVEN_SFU_ROOM_STATS_SECS", default_value_t = 5)]
    room_stats_secs: u64,

    /// Kernel buffer size asked for each media socket, each way (bytes).
    #[arg(long, env = "HAVEN_SFU_UDP_BUFFER_BYTES", default_value_t = 4 << 20)]
    udp_buffer_bytes: usize,

    /// Write the bound addresses as JSON here once the node is ready.
    #[arg(long, env = "HAVEN_SFU_READY_FILE")]
    ready_file: Option<PathBuf>,

    /// Log as JSON lines (filter with RUST_LOG, default `info`).
    #[arg(long, env = "HAVEN_SFU_LOG_JSON", default_value_t = false)]
    log_json: bool,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn node_config(args: &Args) -> Result<NodeConfig> {
    let secret = match (&args.node_secret, &args.node_secret_file) {
        (Some(s), None) => s.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the node secret from {}", path.display()))?
            .trim_end()
            .to_owned(),
        _ => bail!("give the node secret with --node-secret or --node-secret-file"),
    };
    if secret.is_empty() {
        bail!("the node secret is empty");
    }
    let pem = if args.grant_public_key.trim_start().starts_with("-----BEGIN") {
        args.grant_public_key.clone()
    } else {
        std::fs::read_to_string(&args.grant_public_key).with_context(|| {
            format!(
                "reading the grant public key from {}",
                args.grant_public_key
            )
        })?
    };
    let verifier = GrantVerifier::from_public_key_pem(&pem).context("the grant public key")?;
    let pin = CertPin::parse(&args.signaling_cert_sha256).context("--signaling-cert-sha256")?;
    let mut cfg = NodeConfig::new(
        NodeId::new(args.node_id.clone()),
        args.signaling_addr.clone(),
        pin,
        NodeSecret::new(secret),
        verifier,
    );
    cfg.media_bind = args.media_bind;
    cfg.media_port_base = args.media_port_base;
    cfg.public_ip = args.public_ip;
    if let Some(w) = args.workers {
        if w == 0 {
            bail!("--workers must be at least 1");
        }
        cfg.workers = w;
    }
    cfg.pack_participants = args.pack_participants;
    cfg.pack_cpu_permille = args.pack_cpu_permille;
    cfg.link.server_name = args.signaling_server_name.clone();
    cfg.capacity = args.capacity;
    cfg.default_slots = args.slots.max(1);
    cfg.http_listen = args.http_listen;
    cfg.drain_timeout = Duration::from_secs(args.drain_timeout_secs);
    cfg.heartbeat_interval = Duration::from_millis(args.heartbeat_ms.max(50));
    cfg.room_stats_interval = Duration::from_secs(args.room_stats_secs.max(1));
    cfg.udp_buffer_bytes = args.udp_buffer_bytes;
    Ok(cfg)
}

/// First SIGTERM/SIGINT: drain. Second: stop now.
async fn watch_signals(drain: CancellationToken, force: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        seen += 1;
        if seen == 1 {
            info!("shutdown requested: draining (signal again to stop at once)");
            drain.cancel();
        } else {
            warn!("second shutdown signal");
            force.cancel();
            return Ok(());
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    let cfg = node_config(&args)?;
    // The media path runs on its own threads; the runtime only carries control and HTTP.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let node = SfuNode::start(cfg).await?;
        if let Some(path) = &args.ready_file {
            node.write_ready_file(path)?;
        }
        let drain = CancellationToken::new();
        let force = CancellationToken::new();
        let signals = tokio::spawn(watch_signals(drain.clone(), force.clone()));
        node.run(drain, force).await;
        signals.abort();
        Ok(())
    })
}
