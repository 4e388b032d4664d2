//! The node's end of the QUIC control link to signaling: dial, verify signaling's pinned
//! certificate, open the one long-lived bidirectional stream, register with the node secret,
//! then carry length-prefixed [`ControlMessage`] frames both ways.
//!
//! Each established link is two tasks (a reader that decodes frames into [`LinkEvent`]s and
//! a writer fed by a channel), so the controller only ever deals with channels and never
//! holds a half-read stream across a `select!`. A link is identified by a generation number;
//! messages of an older generation are ignored by the controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use haven_proto::control::{ControlBody, ControlMessage, ErrorCode, NodeRegister, CONTROL_ALPN};
use haven_proto::framing::{encode_frame, FrameDecoder};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::node::pinning::{CertPin, PinnedCertVerifier};
use crate::node::quic_runtime::PromptTimers;

/// The request id of the registration (replies carry it back).
const REGISTER_ID: u64 = 1;
/// Messages queued for the writer before senders see the link as congested.
pub const LINK_OUTBOX: usize = 4096;

#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `host:port` of signaling's QUIC control endpoint (resolved at every attempt).
    pub signaling_addr: String,
    /// TLS server name sent in the handshake (irrelevant to verification, which pins).
    pub server_name: String,
    pub pin: CertPin,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("resolving {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("control stream: {0}")]
    Stream(String),
    #[error("signaling did not answer the registration in time")]
    Timeout,
    #[error("signaling refused the registration: {0}")]
    Refused(String),
    #[error("unexpected reply to the registration: {0}")]
    Protocol(String),
}

impl LinkError {
    /// The secret is wrong: retrying soon will not help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

/// What the link tasks tell the controller.
#[derive(Debug)]
pub enum LinkEvent {
    /// Registered; send on `out`.
    Up {
        generation: u64,
        out: mpsc::Sender<ControlMessage>,
        connection: quinn::Connection,
        /// Kept alive as long as the link is.
        endpoint: quinn::Endpoint,
        /// The writer task: ends once `out` is dropped and everything queued has been
        /// written, the stream finished and its data acknowledged (or after a timeout).
        writer: tokio::task::JoinHandle<()>,
    },
    /// The connection attempt failed.
    Failed { generation: u64, error: LinkError },
    Message {
        generation: u64,
        msg: ControlMessage,
    },
    /// The established link ended.
    Down { generation: u64, reason: String },
}

fn client_config(cfg: &LinkConfig) -> Result<quinn::ClientConfig, LinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertVerifier::new(cfg.pin, provider.clone()));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| LinkError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![CONTROL_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| LinkError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(cfg.idle_timeout)
                .map_err(|e| LinkError::Tls(e.to_string()))?,
        ))
        .keep_alive_interval(Some(cfg.keep_alive));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

async fn resolve(addr: &str) -> Result<SocketAddr, LinkError> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| LinkError::Resolve(addr.to_owned(), e))?
        .next()
        .ok_or_else(|| LinkError::NoAddress(addr.to_owned()))
}

/// Dial and register; on success start the link tasks and report [`LinkEvent::Up`].
pub async fn connect(
    cfg: LinkConfig,
    register: NodeRegister,
    generation: u64,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    let event = match tokio::time::timeout(cfg.connect_timeout, establish(&cfg, register)).await {
        Ok(Ok((endpoint, connection, send, recv, decoder))) => {
            let (out, writer) = start_link_tasks(
                connection.clone(),
                send,
                recv,
                decoder,
                generation,
                events.clone(),
            );
            LinkEvent::Up {
                generation,
                out,
                connection,
                endpoint,
                writer,
            }
        }
        Ok(Err(error)) => LinkEvent::Failed { generation, error },
        Err(_) => LinkEvent::Failed {
            generation,
            error: LinkError::Timeout,
        },
    };
    let _ = events.send(event);
}

type Established = (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    FrameDecoder,
);

async fn establish(cfg: &LinkConfig, register: NodeRegister) -> Result<Established, LinkError> {
    let remote = resolve(&cfg.signaling_addr).await?;
    let bind: SocketAddr = if remote.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind).map_err(LinkError::Endpoint)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(PromptTimers),
    )
    .map_err(LinkError::Endpoint)?;
    let connection = endpoint
        .connect_with(client_config(cfg)?, remote, &cfg.server_name)
        .map_err(|e| LinkError::Connect(e.to_string()))?
        .await
        .map_err(|e| LinkError::Connect(e.to_string()))?;
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| LinkError::Stream(e.to_string()))?;
    let frame = encode_frame(&ControlMessage::new(
        REGISTER_ID,
        ControlBody::NodeRegister(register),
    ))
    .map_err(|e| LinkError::Protocol(e.to_string()))?;
    send.write_all(&frame)
        .await
        .map_err(|e| LinkError::Stream(e.to_string()))?;
    let mut decoder = FrameDecoder::new();
    let reply = loop {
        if let Some(m) = decoder.next_message() {
            break m.map_err(|e| LinkError::Protocol(e.to_string()))?;
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return Err(LinkError::Refused("signaling closed the stream".into())),
            Err(e) => return Err(LinkError::Stream(e.to_string())),
        }
    };
    match reply.body {
        ControlBody::Ack if reply.id == REGISTER_ID => {
            Ok((endpoint, connection, send, recv, decoder))
        }
        ControlBody::Error(e) if e.code == ErrorCode::Unauthorized => {
            connection.close(0u32.into(), b"refused");
            Err(LinkError::Refused(e.message))
        }
        other => {
            connection.close(0u32.into(), b"protocol error");
            Err(LinkError::Protocol(format!("{other:?}")))
        }
    }
}

/// How long a finished link waits for signaling to acknowledge the last messages.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The reader and writer of an established link; returns the writer's inbox and task.
fn start_link_tasks(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut decoder: FrameDecoder,
    generation: u64,
    events: mpsc::UnboundedSender<LinkEvent>,
) -> (mpsc::Sender<ControlMessage>, tokio::task::JoinHandle<()>) {
    let (out_tx, mut out_rx) = mpsc::channel::<ControlMessage>(LINK_OUTBOX);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            match encode_frame(&msg) {
                Ok(frame) => {
                    if let Err(e) = send.write_all(&frame).await {
                        debug!(error = %e, "control link write failed");
                        break;
                    }
                }
                Err(e) => warn!(error = %e, "dropping an unsendable control message"),
            }
        }
        // Closing the connection would discard unsent data: finish the stream and wait
        // for the peer to acknowledge it first.
        if send.finish().is_ok() {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stopped()).await;
        }
    });
    tokio::spawn(async move {
        let reason = loop {
            // Registration may have read past its reply: deliver what is buffered first.
            while let Some(m) = decoder.next_message() {
                match m {
                    Ok(msg) => {
                        let _ = events.send(LinkEvent::Message { generation, msg });
                    }
                    Err(e) if e.is_fatal() => {
                        connection.close(0u32.into(), b"bad frame");
                        let _ = events.send(LinkEvent::Down {
                            generation,
                            reason: e.to_string(),
                        });
                        return;
                    }
                    Err(e) => warn!(error = %e, "unreadable control message from signaling"),
                }
            }
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => decoder.push(&chunk.bytes),
                Ok(None) => break "signaling finished the control stream".to_owned(),
                Err(e) => break e.to_string(),
            }
        };
        let _ = events.send(LinkEvent::Down { generation, reason });
    });
    (out_tx, writer)
}
