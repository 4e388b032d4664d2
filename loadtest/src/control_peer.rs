//! Signaling's end of the QUIC control link, played by the harness for `--target haven-sfu`:
//! a quinn server with a self-signed certificate (the node pins its SHA-256 fingerprint) that
//! accepts the node's registration when it presents the node secret, acks its events and
//! heartbeats, and sends it offers, pairing each answer with its request by id.
//!
//! Adapted from haven-sfu's test support (`sfu/tests/support/control_peer.rs`) with typed
//! errors and an asynchronous request API (the answer goes to a callback, so a worker is
//! never blocked on the link). Runs on its own small tokio runtime.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use haven_proto::control::{
    ControlBody, ControlError, ControlMessage, ErrorCode, NodeRegister, CONTROL_ALPN,
};
use haven_proto::framing::{encode_frame, FrameDecoder};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{mpsc, oneshot};

use crate::LoadError;

#[derive(Default)]
struct Shared {
    registrations: Vec<NodeRegister>,
    refused: u32,
    out: Option<mpsc::UnboundedSender<ControlMessage>>,
    pending: HashMap<u64, oneshot::Sender<ControlBody>>,
    next_id: u64,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a request to the node got no reply body.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no node is connected")]
    NotConnected,
    #[error("the node did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the control link closed before the answer")]
    Closed,
}

pub struct ControlPeer {
    rt: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    /// Hex SHA-256 of the certificate, for `--signaling-cert-sha256`.
    pub fingerprint: String,
    shared: Arc<Mutex<Shared>>,
}

fn target_err(what: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Target(format!("control peer: {what}: {e}"))
}

impl ControlPeer {
    /// Listen on a free loopback port; accept nodes presenting `secret`.
    pub fn start(secret: &str) -> Result<Self, LoadError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("control-peer")
            .enable_all()
            .build()?;
        let certified =
            rcgen::generate_simple_self_signed(vec!["haven-signaling".into(), "localhost".into()])
                .map_err(|e| target_err("certificate", e))?;
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let fingerprint = haven_sfu::node::pinning::CertPin::of_der(cert.as_ref()).to_hex();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| target_err("tls", e))?
            .with_no_client_auth()
            .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key))
            .map_err(|e| target_err("server certificate", e))?;
        tls.alpn_protocols = vec![CONTROL_ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| target_err("quic tls", e))?;
        let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = {
            let _guard = rt.enter();
            quinn::Endpoint::server(server, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?
        };
        let addr = endpoint.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            next_id: 1000,
            ..Default::default()
        }));
        let secret = secret.to_owned();
        let s = Arc::clone(&shared);
        rt.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let s = Arc::clone(&s);
                let secret = secret.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        serve_node(conn, s, secret).await;
                    }
                });
            }
        });
        Ok(Self {
            rt,
            addr,
            fingerprint,
            shared,
        })
    }

    /// Wait (bounded) until a node has registered; its registration.
    pub fn wait_registration(&self, timeout: Duration) -> Option<NodeRegister> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(r) = lock(&self.shared).registrations.first().cloned() {
                return Some(r);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn refused(&self) -> u32 {
        lock(&self.shared).refused
    }

    /// Send a request; `done` gets the node's reply (on the peer's runtime).
    pub fn request(
        &self,
        body: ControlBody,
        timeout: Duration,
        done: impl FnOnce(Result<ControlBody, RequestError>) + Send + 'static,
    ) {
        let (tx, rx) = oneshot::channel();
        let sent = {
            let mut s = lock(&self.shared);
            let id = s.next_id;
            s.next_id += 1;
            let ok = s
                .out
                .as_ref()
                .is_some_and(|o| o.send(ControlMessage::new(id, body)).is_ok());
            if ok {
                s.pending.insert(id, tx);
            }
            ok
        };
        if !sent {
            done(Err(RequestError::NotConnected));
            return;
        }
        self.rt.spawn(async move {
            let r = match tokio::time::timeout(timeout, rx).await {
                Err(_) => Err(RequestError::Timeout(timeout)),
                Ok(Err(_)) => Err(RequestError::Closed),
                Ok(Ok(body)) => Ok(body),
            };
            done(r);
        });
    }
}

async fn read_message(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Option<ControlMessage> {
    loop {
        match decoder.next_message() {
            Some(Ok(m)) => return Some(m),
            Some(Err(e)) if e.is_fatal() => return None,
            Some(Err(_)) => continue,
            None => {}
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            _ => return None,
        }
    }
}

async fn serve_node(conn: quinn::Connection, shared: Arc<Mutex<Shared>>, secret: String) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut decoder = FrameDecoder::new();
    let Some(first) = read_message(&mut recv, &mut decoder).await else {
        return;
    };
    let reg = match &first.body {
        ControlBody::NodeRegister(reg) if reg.secret.matches(&secret) => reg.clone(),
        _ => {
            lock(&shared).refused += 1;
            let refusal = first.reply(ControlBody::Error(ControlError {
                code: ErrorCode::Unauthorized,
                message: "bad secret".into(),
            }));
            if let Ok(frame) = encode_frame(&refusal) {
                let _ = send.write_all(&frame).await;
            }
            let _ = send.finish();
            tokio::time::sleep(Duration::from_millis(100)).await;
            conn.close(1u32.into(), b"unauthorized");
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<ControlMessage>();
    {
        let mut s = lock(&shared);
        s.registrations.push(reg);
        s.out = Some(tx.clone());
    }
    let _ = tx.send(first.reply(ControlBody::Ack));
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let Ok(frame) = encode_frame(&m) else {
                continue;
            };
            if send.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    while let Some(msg) = read_message(&mut recv, &mut decoder).await {
        let mut s = lock(&shared);
        let is_reply = matches!(
            msg.body,
            ControlBody::Answer(_) | ControlBody::Ack | ControlBody::Error(_)
        );
        if is_reply && msg.id != 0 {
            if let Some(w) = s.pending.remove(&msg.id) {
                let _ = w.send(msg.body);
            }
            continue;
        }
        // Events and heartbeats: acknowledged, otherwise unused by the harness.
        if msg.id != 0 {
            let _ = tx.send(msg.reply(ControlBody::Ack));
        }
    }
    let mut s = lock(&shared);
    if s.out.as_ref().is_some_and(|o| o.same_channel(&tx)) {
        s.out = None;
    }
    // Requests still waiting will never be answered: fail them now.
    s.pending.clear();
}
