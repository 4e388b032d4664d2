//! Test harness for signaling's end-to-end tests against the real local stack (Postgres,
//! the local Supabase API) found through `HAVEN_STACK_FILE`.
//!
//! The SFU peer is [`FakeNode`]: a test double of an SFU node that speaks the real control
//! protocol (real quinn over loopback, the certificate pinned by fingerprint, the real
//! framing and message types) and answers offers after verifying the join grant with the
//! real `GrantVerifier`. It stands in for the SFU binary, which does not exist yet; when it
//! does, the same tests can point at it instead.

#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use haven_devstack::StackInfo;
use haven_proto::client::{ClientMessage, ClientRequest, ServerEvent, ServerMessage};
use haven_proto::control::{
    Answer, ControlBody, ControlError, ControlMessage, ErrorCode, NodeLoad, NodeRegister,
    NodeSecret,
};
use haven_proto::framing::{encode_frame, FrameDecoder};
use haven_proto::grant::GrantVerifier;
use haven_proto::NodeId;
use haven_signaling::{Config, RunningServer};
use haven_supabase::{
    ChannelKind, HavenClient, NewChannel, OverwriteFlags, ProjectConfig, ServiceClient,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub const NODE_SECRET: &str = "test-node-secret-0123456789";

pub fn stack() -> StackInfo {
    StackInfo::from_env(&haven_devstack::workspace_root())
        .unwrap_or_else(|e| panic!("no local stack: {e}"))
}

pub fn config(stack: &StackInfo) -> Config {
    let api = stack.api_url.clone().expect("stack runs the local API");
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        node_listen: "127.0.0.1:0".parse().unwrap(),
        supabase_url: api,
        supabase_anon_key: stack.anon_key.clone().expect("anon key"),
        jwt_secret: None,
        jwks_url: stack.jwks_url.clone(),
        jwt_issuer: stack.issuer.clone(),
        database_url: stack.database_url.clone(),
        node_secret: NODE_SECRET.into(),
        grant_key_file: None,
        state_dir: temp_dir("signaling-state"),
        node_heartbeat_timeout_secs: 15,
        voice_grace_secs: 1,
        max_connections_per_user: 8,
        send_queue: 256,
        ws_rate: 10.0,
        ws_burst: 30,
        join_rate: 0.5,
        join_burst: 5,
        db_pool: 4,
        log_json: false,
        ready_file: None,
    }
}

pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("haven-test-{what}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A signed-in test account.
#[derive(Clone)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub token: String,
}

pub struct Harness {
    pub stack: StackInfo,
    pub server: RunningServer,
    pub client: HavenClient,
    pub service: ServiceClient,
    pub pg: tokio_postgres::Client,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        init_logs();
        let stack = stack();
        let mut cfg = config(&stack);
        tweak(&mut cfg);
        let server = haven_signaling::start(cfg).await.expect("signaling starts");
        let api = stack.api_url.clone().unwrap();
        let client = HavenClient::new(
            ProjectConfig::new(api.clone(), stack.anon_key.clone().unwrap()).unwrap(),
        )
        .unwrap();
        let service = ServiceClient::new(&api, stack.service_role_key.as_deref().unwrap()).unwrap();
        let (pg, conn) = tokio_postgres::connect(&stack.database_url, tokio_postgres::NoTls)
            .await
            .expect("database");
        tokio::spawn(conn);
        // Let the LISTEN connection come up before tests make events.
        for _ in 0..100 {
            if listener_ready(&pg, &server.app.listener_name).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            stack,
            server,
            client,
            service,
            pg,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.server.http_addr)
    }

    /// A new confirmed account, signed in.
    pub async fn account(&self, name: &str) -> Account {
        let tag = &Uuid::new_v4().simple().to_string()[..10];
        let email = format!("{name}-{tag}@signaling.test");
        let password = "signaling-test-password";
        let user = self
            .service
            .create_user(&email, password, Some(&format!("{name}_{tag}")))
            .await
            .expect("create user");
        let session = self
            .client
            .sign_in_with_password(&email, password)
            .await
            .expect("sign in");
        Account {
            id: user.id,
            email,
            token: session.access_token,
        }
    }

    /// A WebSocket, authenticated as `account` (waits for `ready`).
    pub async fn connect(&self, account: &Account) -> Ws {
        let mut ws = Ws::connect(&self.ws_url()).await;
        ws.send_request(
            Some(1),
            ClientRequest::Auth {
                access_token: account.token.clone(),
            },
        )
        .await;
        let ready = ws.recv().await;
        assert!(
            matches!(ready.body, ServerEvent::Ready { .. }),
            "expected ready, got {ready:?}"
        );
        ws
    }

    pub async fn fake_node(&self, name: &str) -> FakeNode {
        FakeNode::connect(
            self.server.node_addr,
            &self.server.node_fingerprint,
            name,
            NODE_SECRET,
            &self.server.grant_public_key_pem,
        )
        .await
        .expect("fake node registers")
    }

    /// A community with an owner, a moderator, a member, `general`, `Lounge` and a
    /// `mods-only` text channel (@everyone denied view, Moderator allowed).
    pub async fn community(&self) -> Community {
        let owner = self.account("owner").await;
        let moderator = self.account("mod").await;
        let member = self.account("member").await;
        let api = self.client.as_user(&owner.token);
        let id = api
            .create_community(
                &format!("sig-{}", &Uuid::new_v4().simple().to_string()[..8]),
                None,
            )
            .await
            .expect("create community");
        let channels = api.list_channels(id).await.unwrap();
        let find = |name: &str| channels.iter().find(|c| c.name == name).unwrap().id;
        let (general, lounge) = (find("general"), find("Lounge"));
        let roles = self
            .pg
            .query(
                "select id, name from public.roles where community_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let role = |name: &str| -> Uuid {
            roles
                .iter()
                .find(|r| r.get::<_, String>(1) == name)
                .map(|r| r.get(0))
                .unwrap()
        };
        let (everyone, moderator_role) = (role("@everyone"), role("Moderator"));
        let mods_only = api
            .create_channel(
                id,
                &NewChannel {
                    name: "mods-only".into(),
                    kind: ChannelKind::Text,
                    topic: None,
                    group_id: None,
                    position: None,
                },
            )
            .await
            .unwrap();
        self.role_overwrite(
            &owner,
            mods_only,
            everyone,
            OverwriteFlags {
                can_view: Some(false),
                ..Default::default()
            },
        )
        .await;
        self.role_overwrite(
            &owner,
            mods_only,
            moderator_role,
            OverwriteFlags {
                can_view: Some(true),
                ..Default::default()
            },
        )
        .await;
        let invite = api
            .create_invite(id, None, Default::default())
            .await
            .unwrap();
        for a in [&moderator, &member] {
            self.client
                .as_user(&a.token)
                .redeem_invite(&invite.code)
                .await
                .unwrap();
        }
        api.assign_role(id, moderator.id, moderator_role)
            .await
            .unwrap();
        Community {
            id,
            owner,
            moderator,
            member,
            general,
            lounge,
            mods_only,
            invite_code: invite.code,
        }
    }

    /// `set_channel_role_overwrite` as `as_user`. Through SQL with the user's claims (exactly
    /// what PostgREST does) because the local REST stand-in currently turns JSON `null`
    /// booleans into `''` (22P02) for this RPC.
    pub async fn role_overwrite(
        &self,
        as_user: &Account,
        channel: Uuid,
        role: Uuid,
        f: OverwriteFlags,
    ) {
        self.sql_as(
            as_user,
            "select public.set_channel_role_overwrite($1, $2, $3, $4, $5, $6)",
            &[
                &channel,
                &role,
                &f.can_view,
                &f.can_send,
                &f.can_connect,
                &f.can_speak,
            ],
        )
        .await;
    }

    /// `set_channel_member_overwrite` as `as_user` (see [`Self::role_overwrite`]).
    pub async fn member_overwrite(
        &self,
        as_user: &Account,
        channel: Uuid,
        user: Uuid,
        f: OverwriteFlags,
    ) {
        self.sql_as(
            as_user,
            "select public.set_channel_member_overwrite($1, $2, $3, $4, $5, $6)",
            &[
                &channel,
                &user,
                &f.can_view,
                &f.can_send,
                &f.can_connect,
                &f.can_speak,
            ],
        )
        .await;
    }

    async fn sql_as(
        &self,
        as_user: &Account,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) {
        let (mut pg, conn) =
            tokio_postgres::connect(&self.stack.database_url, tokio_postgres::NoTls)
                .await
                .expect("database");
        tokio::spawn(conn);
        let tx = pg.transaction().await.unwrap();
        let claims = serde_json::json!({"sub": as_user.id, "role": "authenticated"}).to_string();
        tx.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
            &[&claims],
        )
        .await
        .unwrap();
        tx.query(sql, params).await.expect("RPC as user");
        tx.commit().await.unwrap();
    }

    /// Joins an extra account to the community through its invite.
    pub async fn join_community(&self, c: &Community, account: &Account) {
        self.client
            .as_user(&account.token)
            .redeem_invite(&c.invite_code)
            .await
            .unwrap();
    }
}

async fn listener_ready(pg: &tokio_postgres::Client, name: &str) -> bool {
    pg.query_one(
        "select count(*) from pg_stat_activity where application_name = $1 and query ilike 'LISTEN%'",
        &[&name],
    )
    .await
    .map(|r| r.get::<_, i64>(0) > 0)
    .unwrap_or(false)
}

pub struct Community {
    pub id: Uuid,
    pub owner: Account,
    pub moderator: Account,
    pub member: Account,
    pub general: Uuid,
    pub lounge: Uuid,
    pub mods_only: Uuid,
    pub invite_code: String,
}

/// A WebSocket client speaking the client protocol.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Self { stream }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_string()))
            .await
            .expect("ws send");
    }

    pub async fn send_request(&mut self, id: Option<u64>, body: ClientRequest) {
        let text = ClientMessage::new(id, body).encode();
        self.send_text(&text).await;
    }

    /// The next protocol message (5 s timeout).
    pub async fn recv(&mut self) -> ServerMessage {
        self.try_recv(Duration::from_secs(5))
            .await
            .expect("a message within 5 s")
    }

    /// The next protocol message within `timeout`, if any.
    pub async fn try_recv(&mut self, timeout: Duration) -> Option<ServerMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.stream.next())
                .await
                .ok()??;
            match frame {
                Ok(Message::Text(t)) => {
                    return Some(ServerMessage::decode(t.as_str()).expect("server JSON"))
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Waits for a message matching `pred`, skipping others.
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ServerMessage) -> bool,
    ) -> Option<ServerMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.try_recv(left).await?;
            if pred(&m) {
                return Some(m);
            }
        }
    }

    /// The reply to request `id`, skipping pushed events.
    pub async fn reply(&mut self, id: u64) -> ServerMessage {
        self.recv_until(Duration::from_secs(10), |m| m.id == Some(id))
            .await
            .unwrap_or_else(|| panic!("no reply to request {id}"))
    }

    /// Everything that arrives within `window`.
    pub async fn drain(&mut self, window: Duration) -> Vec<ServerMessage> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(m) = self
            .try_recv(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            out.push(m);
        }
        out
    }
}

pub fn error_code(m: &ServerMessage) -> Option<haven_proto::client::ErrorCode> {
    match &m.body {
        ServerEvent::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// A test double of an SFU node on the real control link.
pub struct FakeNode {
    pub node_id: NodeId,
    /// Every message signaling sent, with its arrival time.
    pub received: mpsc::UnboundedReceiver<(Instant, ControlMessage)>,
    out: mpsc::UnboundedSender<ControlMessage>,
    pub conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

#[derive(Debug)]
struct PinnedCert {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if haven_signaling::node_tls::fingerprint(end_entity.as_ref()) == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate fingerprint mismatch".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl FakeNode {
    pub async fn connect(
        addr: SocketAddr,
        fingerprint: &str,
        name: &str,
        secret: &str,
        grant_public_key_pem: &str,
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                fingerprint: fingerprint.to_string(),
                provider,
            }))
            .with_no_client_auth();
        tls.alpn_protocols = vec![haven_signaling::node_tls::CONTROL_ALPN.to_vec()];
        let quic =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let conn = endpoint
            .connect(addr, "haven-signaling")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let node_id = NodeId::new(name);
        let register = ControlMessage::new(
            1,
            ControlBody::NodeRegister(NodeRegister {
                node_id: node_id.clone(),
                media_addr: "127.0.0.1:3478".parse().unwrap(),
                capacity: 1000,
                load: NodeLoad::default(),
                secret: NodeSecret::new(secret),
            }),
        );
        send.write_all(&encode_frame(&register).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let mut decoder = FrameDecoder::new();
        let reply = loop {
            if let Some(m) = decoder.next_message() {
                break m.map_err(|e| e.to_string())?;
            }
            match recv.read_chunk(65536, true).await {
                Ok(Some(c)) => decoder.push(&c.bytes),
                Ok(None) => return Err("stream closed before the registration reply".into()),
                Err(e) => return Err(e.to_string()),
            }
        };
        match reply.body {
            ControlBody::Ack if reply.id == 1 => {}
            other => return Err(format!("registration refused: {other:?}")),
        }
        let verifier =
            GrantVerifier::from_public_key_pem(grant_public_key_pem).map_err(|e| e.to_string())?;
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ControlMessage>();
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if send.write_all(&encode_frame(&m).unwrap()).await.is_err() {
                    break;
                }
            }
        });
        let replies = out_tx.clone();
        let me = node_id.clone();
        tokio::spawn(async move {
            loop {
                while let Some(m) = decoder.next_message() {
                    let Ok(m) = m else { continue };
                    let _ = seen_tx.send((Instant::now(), m.clone()));
                    let body = match &m.body {
                        ControlBody::Offer(o) => {
                            let now = haven_signaling::voice::unix_now();
                            match verifier.verify(&o.grant, now) {
                                Ok(c) if c.room == o.room && c.node == me => {
                                    ControlBody::Answer(Answer {
                                        session: c.sid,
                                        sdp: format!("v=0\r\ns=fake-answer-for-{}\r\n", c.sid),
                                    })
                                }
                                Ok(_) => ControlBody::Error(ControlError {
                                    code: ErrorCode::GrantWrongRoom,
                                    message: "grant for another room or node".into(),
                                }),
                                Err(e) => ControlBody::Error(ControlError {
                                    code: ErrorCode::GrantInvalid,
                                    message: e.to_string(),
                                }),
                            }
                        }
                        ControlBody::Leave(_)
                        | ControlBody::Kick(_)
                        | ControlBody::ServerMute(_)
                        | ControlBody::SelfMute(_)
                        | ControlBody::Deafen(_) => ControlBody::Ack,
                        _ => continue,
                    };
                    let _ = replies.send(m.reply(body));
                }
                match recv.read_chunk(65536, true).await {
                    Ok(Some(c)) => decoder.push(&c.bytes),
                    _ => break,
                }
            }
        });
        Ok(Self {
            node_id,
            received: seen_rx,
            out: out_tx,
            conn,
            _endpoint: endpoint,
        })
    }

    /// Sends an unsolicited message (id 0) to signaling.
    pub fn send_event(&self, body: ControlBody) {
        let _ = self.out.send(ControlMessage::new(0, body));
    }

    /// The next message matching `pred` within `timeout`.
    pub async fn expect(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ControlMessage) -> bool,
    ) -> Option<(Instant, ControlMessage)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (t, m) = tokio::time::timeout(left, self.received.recv())
                .await
                .ok()??;
            if pred(&m) {
                return Some((t, m));
            }
        }
    }

    pub fn close(&self) {
        self.conn.close(0u32.into(), b"test closes");
    }
}

/// A minimal offer; the fake node does not parse SDP.
pub const OFFER_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
