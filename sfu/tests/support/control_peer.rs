//! A stand-in for signaling's end of the QUIC control link, for tests and the loopback
//! bench: a quinn server with a self-signed certificate (the node pins its fingerprint) that
//! checks the node's registration and then speaks the real protocol through haven-proto's
//! framing. Blocking API over its own tokio runtime, so sync test code can use it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haven_proto::control::{
    ControlBody, ControlError, ControlMessage, ErrorCode, NodeRegister, CONTROL_ALPN,
};
use haven_proto::framing::{encode_frame, FrameDecoder};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{mpsc, oneshot};

#[derive(Default)]
struct Shared {
    /// Registrations accepted (one per connection).
    registrations: Vec<NodeRegister>,
    /// Registrations refused.
    refused: u32,
    /// Everything the node sent on its own (events, heartbeats), in order.
    log: Vec<ControlMessage>,
    out: Option<mpsc::UnboundedSender<ControlMessage>>,
    connection: Option<quinn::Connection>,
    pending: HashMap<u64, oneshot::Sender<ControlBody>>,
    next_id: u64,
    connected: bool,
}

pub struct ControlPeer {
    rt: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    /// Hex SHA-256 of the certificate, for `--signaling-cert-sha256`.
    pub fingerprint: String,
    shared: Arc<Mutex<Shared>>,
}

impl ControlPeer {
    /// Listen on a free loopback port; accept nodes presenting `secret`.
    pub fn start(secret: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let certified =
            rcgen::generate_simple_self_signed(vec!["haven-signaling".into(), "localhost".into()])
                .expect("certificate");
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let fingerprint = haven_sfu::node::pinning::CertPin::of_der(cert.as_ref()).to_hex();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_no_client_auth()
            .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key))
            .expect("server cert");
        tls.alpn_protocols = vec![CONTROL_ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic tls");
        let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = {
            let _guard = rt.enter();
            quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).expect("endpoint")
        };
        let addr = endpoint.local_addr().expect("addr");
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
        Self {
            rt,
            addr,
            fingerprint,
            shared,
        }
    }

    /// Poll `check` on the shared state every 10 ms until it yields or `timeout` passes.
    fn wait<T>(&self, timeout: Duration, mut check: impl FnMut(&Shared) -> Option<T>) -> Option<T> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = check(&self.shared.lock().unwrap()) {
                return Some(v);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `n`-th accepted registration (1-based), waiting for it.
    pub fn wait_registration(&self, n: usize, timeout: Duration) -> Option<NodeRegister> {
        self.wait(timeout, |s| s.registrations.get(n - 1).cloned())
    }

    pub fn refused(&self) -> u32 {
        self.shared.lock().unwrap().refused
    }

    pub fn is_connected(&self) -> bool {
        self.shared.lock().unwrap().connected
    }

    /// Send a request and wait for the node's reply.
    pub fn request(&self, body: ControlBody, timeout: Duration) -> Option<ControlBody> {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.shared.lock().unwrap();
            let id = s.next_id;
            s.next_id += 1;
            s.pending.insert(id, tx);
            s.out.as_ref()?.send(ControlMessage::new(id, body)).ok()?;
        }
        self.rt
            .block_on(async { tokio::time::timeout(timeout, rx).await })
            .ok()?
            .ok()
    }

    /// The first logged message (from `since` on) matching `pred`, waiting for it.
    pub fn wait_event<T>(
        &self,
        since: usize,
        timeout: Duration,
        mut pred: impl FnMut(&ControlMessage) -> Option<T>,
    ) -> Option<T> {
        self.wait(timeout, |s| s.log.iter().skip(since).find_map(&mut pred))
    }

    /// Messages logged so far (use as `since`).
    pub fn log_len(&self) -> usize {
        self.shared.lock().unwrap().log.len()
    }

    pub fn log(&self) -> Vec<ControlMessage> {
        self.shared.lock().unwrap().log.clone()
    }

    /// Close the current connection, as a restarting signaling would.
    pub fn drop_connection(&self) {
        if let Some(c) = self.shared.lock().unwrap().connection.take() {
            c.close(0u32.into(), b"signaling restart");
        }
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
            shared.lock().unwrap().refused += 1;
            let refusal = first.reply(ControlBody::Error(ControlError {
                code: ErrorCode::Unauthorized,
                message: "bad secret".into(),
            }));
            let _ = send.write_all(&encode_frame(&refusal).unwrap()).await;
            let _ = send.finish();
            tokio::time::sleep(Duration::from_millis(100)).await;
            conn.close(1u32.into(), b"unauthorized");
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<ControlMessage>();
    {
        let mut s = shared.lock().unwrap();
        s.registrations.push(reg);
        s.out = Some(tx.clone());
        s.connection = Some(conn.clone());
        s.connected = true;
    }
    let _ = tx.send(first.reply(ControlBody::Ack));
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if send.write_all(&encode_frame(&m).unwrap()).await.is_err() {
                break;
            }
        }
    });
    while let Some(msg) = read_message(&mut recv, &mut decoder).await {
        let mut s = shared.lock().unwrap();
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
        if msg.id != 0 {
            let _ = tx.send(msg.reply(ControlBody::Ack));
        }
        s.log.push(msg);
    }
    let mut s = shared.lock().unwrap();
    if s.out.as_ref().is_some_and(|o| o.same_channel(&tx)) {
        s.connected = false;
        s.out = None;
    }
}
