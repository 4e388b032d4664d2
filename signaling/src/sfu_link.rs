//! The QUIC control link to SFU nodes: signaling listens, each node dials in, opens one
//! long-lived bidirectional stream and registers with the shared node secret. Messages are
//! length-prefixed frames ([`haven_proto::framing`]).
//!
//! [`NodeLink`] is the handle the rest of the service uses: `request` sends a control
//! message with a fresh id and waits (with a timeout) for the reply carrying that id;
//! everything the node sends on its own (heartbeats, rosters, speaking, participants
//! leaving) goes to `voice::on_node_message`. When the connection ends, every session on
//! that node is ended with `node_lost` (the clients rejoin and are placed elsewhere).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haven_proto::control::{
    ControlBody, ControlError, ControlMessage, ErrorCode, NodeRegister, CONTROL_PROTOCOL_VERSION,
};
use haven_proto::framing::{encode_frame, FrameDecoder, FrameError};
use haven_proto::NodeId;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::app::App;
use crate::metrics::inc;

/// A node must open its stream and register within this time.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages waiting to be written to one node before requests fail fast.
const OUTBOX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the SFU node {0} is not connected")]
    Closed(NodeId),
    #[error("the SFU node {0} did not answer in time")]
    Timeout(NodeId),
    #[error("the SFU node {0} is overloaded (control queue full)")]
    Busy(NodeId),
}

/// One connected, registered node.
#[derive(Debug)]
pub struct NodeLink {
    pub node: NodeId,
    pub media_addr: SocketAddr,
    /// Distinguishes this connection from a later one of the same node.
    pub generation: u64,
    out: mpsc::Sender<ControlMessage>,
    pending: Mutex<HashMap<u64, oneshot::Sender<ControlBody>>>,
    next_id: AtomicU64,
    closed: CancellationToken,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl NodeLink {
    /// A link whose outgoing messages go to `out` (the writer task, or a test).
    pub fn new(node: NodeId, media_addr: SocketAddr, out: mpsc::Sender<ControlMessage>) -> Self {
        Self {
            node,
            media_addr,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            out,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: CancellationToken::new(),
        }
    }

    /// Sends `body` and waits for the node's reply.
    pub async fn request(
        &self,
        body: ControlBody,
        timeout: Duration,
    ) -> Result<ControlBody, LinkError> {
        if self.closed.is_cancelled() {
            return Err(LinkError::Closed(self.node.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        let sent = self.out.try_send(ControlMessage::new(id, body));
        let forget = || {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
        };
        match sent {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                forget();
                return Err(LinkError::Busy(self.node.clone()));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                forget();
                return Err(LinkError::Closed(self.node.clone()));
            }
        }
        tokio::select! {
            r = tokio::time::timeout(timeout, rx) => match r {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(_)) => Err(LinkError::Closed(self.node.clone())),
                Err(_) => {
                    forget();
                    Err(LinkError::Timeout(self.node.clone()))
                }
            },
            _ = self.closed.cancelled() => {
                forget();
                Err(LinkError::Closed(self.node.clone()))
            }
        }
    }

    /// Routes a reply to its waiting request; false when nobody waits for `id`.
    pub fn complete(&self, id: u64, body: ControlBody) -> bool {
        let waiter = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(body);
                true
            }
            None => false,
        }
    }

    /// Sends a message that expects no reply (replies to the node's own requests).
    pub fn send(&self, msg: ControlMessage) {
        let _ = self.out.try_send(msg);
    }

    /// Marks the link dead: pending and future requests fail at once.
    pub fn close(&self) {
        self.closed.cancel();
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

/// Accepts node connections on `endpoint` until `stop` is cancelled.
pub async fn serve(endpoint: quinn::Endpoint, app: Arc<App>, stop: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let app = Arc::clone(&app);
        let stop = stop.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    if let Err(e) = handle_node(conn, app, stop).await {
                        warn!(%remote, error = %e, "SFU node connection ended");
                    }
                }
                Err(e) => debug!(%remote, error = %e, "SFU node handshake failed"),
            }
        });
    }
    endpoint.close(0u32.into(), b"signaling shutting down");
}

#[derive(Debug, thiserror::Error)]
enum NodeConnError {
    #[error("registration: {0}")]
    Register(String),
    #[error("stream: {0}")]
    Stream(String),
}

async fn read_message(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<Result<ControlMessage, FrameError>>, NodeConnError> {
    loop {
        if let Some(m) = decoder.next_message() {
            return Ok(Some(m));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return Ok(None),
            Err(e) => return Err(NodeConnError::Stream(e.to_string())),
        }
    }
}

async fn handle_node(
    conn: quinn::Connection,
    app: Arc<App>,
    stop: CancellationToken,
) -> Result<(), NodeConnError> {
    let remote = conn.remote_address();
    let (mut send, mut recv) = tokio::time::timeout(REGISTER_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| NodeConnError::Register("no control stream opened in time".into()))?
        .map_err(|e| NodeConnError::Register(e.to_string()))?;
    let mut decoder = FrameDecoder::new();

    // First message: NodeRegister with the right secret, or we hang up.
    let first = tokio::time::timeout(REGISTER_TIMEOUT, read_message(&mut recv, &mut decoder))
        .await
        .map_err(|_| NodeConnError::Register("no registration in time".into()))??;
    let (id, reg): (u64, NodeRegister) = match first {
        Some(Ok(ControlMessage {
            id,
            body: ControlBody::NodeRegister(reg),
            ..
        })) if reg.secret.matches(&app.node_secret) => (id, reg),
        other => {
            let id = match &other {
                Some(Ok(m)) => m.id,
                _ => 0,
            };
            let refusal = ControlMessage::new(
                id,
                ControlBody::Error(ControlError {
                    code: ErrorCode::Unauthorized,
                    message: "first message must be node_register with the node secret".into(),
                }),
            );
            if let Ok(frame) = encode_frame(&refusal) {
                let _ = send.write_all(&frame).await;
                let _ = send.finish();
            }
            // Give the refusal a moment to leave before the connection goes.
            tokio::time::sleep(Duration::from_millis(100)).await;
            conn.close(1u32.into(), b"unauthorized");
            return Err(NodeConnError::Register(format!(
                "refused registration from {remote}"
            )));
        }
    };

    let (out_tx, mut out_rx) = mpsc::channel::<ControlMessage>(OUTBOX);
    let link = Arc::new(NodeLink::new(reg.node_id.clone(), reg.media_addr, out_tx));
    info!(node = %reg.node_id, %remote, capacity = reg.capacity, "SFU node registered");
    link.send(ControlMessage::new(id, ControlBody::Ack));
    crate::voice::on_node_registered(&app, Arc::clone(&link), &reg);

    // Writer: frames from the outbox onto the stream.
    let writer_link = Arc::clone(&link);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            match encode_frame(&msg) {
                Ok(frame) => {
                    if send.write_all(&frame).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    warn!(node = %writer_link.node, error = %e, "dropping an unsendable control message")
                }
            }
        }
        let _ = send.finish();
    });

    let result = loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            m = read_message(&mut recv, &mut decoder) => m,
        };
        match next {
            Ok(Some(Ok(msg))) => {
                if msg.v != CONTROL_PROTOCOL_VERSION {
                    continue;
                }
                let is_reply = matches!(
                    msg.body,
                    ControlBody::Answer(_) | ControlBody::Ack | ControlBody::Error(_)
                );
                if is_reply && msg.id != 0 {
                    if !link.complete(msg.id, msg.body) {
                        debug!(node = %link.node, id = msg.id, "late or unknown reply dropped");
                    }
                    continue;
                }
                let ack = msg.id != 0;
                crate::voice::on_node_message(&app, &link, msg.body);
                if ack {
                    link.send(ControlMessage::new(msg.id, ControlBody::Ack));
                }
            }
            Ok(Some(Err(e))) if !e.is_fatal() => {
                inc(&app.metrics.sfu_requests_failed);
                warn!(node = %link.node, error = %e, "unreadable control message");
                link.send(ControlMessage::new(
                    0,
                    ControlBody::Error(ControlError {
                        code: ErrorCode::BadMessage,
                        message: e.to_string(),
                    }),
                ));
            }
            Ok(Some(Err(e))) => break Err(NodeConnError::Stream(e.to_string())),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    link.close();
    writer.abort();
    conn.close(0u32.into(), b"bye");
    crate::voice::on_node_lost(&app, &link);
    result
}
