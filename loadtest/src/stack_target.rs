//! The whole local stack as a load target (`--target stack`): haven-signaling + haven-sfu +
//! the local Supabase API and Postgres, joined the way the desktop client joins.
//!
//! Before the run (not timed): the stack is the one `HAVEN_STACK_FILE` / `.haven/stack.json`
//! describes, else one started here with `LocalStack::start` in a temp state dir on free
//! ports (stopped at the end). Users are created in bulk through the service role; each
//! room group becomes one community (its first participant owns it and creates one voice
//! channel per room; the others redeem an invite), with the `create_community` and
//! `create_invite` rate limits raised through the service role for the run and restored
//! after. Every participant signs in (a real JWT), opens the signaling WebSocket and sends
//! `auth`, and waits there.
//!
//! During the run a join is one `join` frame on that participant's authenticated socket;
//! the `joined` SDP is the answer. The socket stays open (closing it would leave voice)
//! and its other traffic (rosters, pings) is drained. CPU and RSS are the SFU process's
//! (`/proc/<sfu_pid>`); forwarded packets come from the SFU's `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use haven_devstack::{LocalStack, StackInfo, StackOptions};
use haven_proto::client::{ClientMessage, ClientRequest, ServerEvent, ServerMessage};
use haven_proto::{RoomId, UserId};
use haven_supabase::{
    ChannelKind, HavenClient, InviteExpiry, NewChannel, ProjectConfig, RedeemStatus, ServiceClient,
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::procstat::ProcTarget;
use crate::scenario::{Plan, Scenario};
use crate::sfu_node::{parse_metrics_url, scrape};
use crate::target::{JoinFailure, JoinRequest, ReplyTo, SfuCounters, SfuTarget};
use crate::LoadError;

/// Rate limits raised for the run (action, max events, window s), restored afterwards.
const RAISED_LIMITS: [(&str, i32, i32); 2] = [
    ("create_community", 100_000, 60),
    ("create_invite", 100_000, 60),
];
/// Concurrent setup requests (sign-ins, redemptions, socket opens).
const SETUP_CONCURRENCY: usize = 8;
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
const PASSWORD: &str = "loadtest-password-1";

fn err(what: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Target(format!("stack: {what}: {e}"))
}

/// A join for one participant's socket task.
struct JoinCmd {
    channel: Uuid,
    sdp: String,
    reply: ReplyTo,
}

/// The stack, its provisioned users and their authenticated signaling sockets.
pub struct StackTarget {
    rt: tokio::runtime::Runtime,
    /// Present when this target started the stack (stopped on shutdown).
    own: Mutex<Option<LocalStack>>,
    info: StackInfo,
    service: ServiceClient,
    restore: Vec<(String, i32, i32)>,
    channels: HashMap<RoomId, Uuid>,
    sockets: Mutex<HashMap<UserId, mpsc::UnboundedSender<JoinCmd>>>,
    metrics: Option<(SocketAddr, String)>,
}

/// Where the stack is: `HAVEN_STACK_FILE` / `.haven/stack.json` if it names a running stack
/// with signaling and an SFU (unless `own`), else a fresh one.
fn find_or_start_stack(own: bool) -> Result<(StackInfo, Option<LocalStack>), LoadError> {
    let root = haven_devstack::workspace_root();
    if !own {
        if let Ok(info) = StackInfo::from_env(&root) {
            if stack_is_up(&info) {
                return Ok((info, None));
            }
        }
    }
    let state_dir = std::env::temp_dir().join(format!(
        "haven-loadtest-stack-{}-{}",
        std::process::id(),
        Uuid::new_v4().simple()
    ));
    let stack = LocalStack::start(
        &root,
        &StackOptions {
            state_dir,
            pg_port: Some(haven_devstack::ports::free_port()?),
            api_port: Some(haven_devstack::ports::free_port()?),
            signaling_port: Some(haven_devstack::ports::free_port()?),
            seed: true,
        },
    )
    .map_err(|e| err("starting the local stack", e))?;
    Ok((stack.info.clone(), Some(stack)))
}

/// A stack file can outlive its stack: check the SFU process and signaling's port.
fn stack_is_up(info: &StackInfo) -> bool {
    let (Some(pid), Some(_), Some(sig)) = (info.sfu_pid, &info.api_url, &info.signaling_url) else {
        return false;
    };
    let sfu_alive =
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "haven-sfu");
    let signaling_up = parse_metrics_url(sig).is_ok_and(|(addr, _)| {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    });
    sfu_alive && signaling_up
}

fn required<'a>(v: &'a Option<String>, what: &str) -> Result<&'a str, LoadError> {
    v.as_deref()
        .ok_or_else(|| LoadError::Target(format!("stack: the stack file has no {what}")))
}

impl StackTarget {
    pub fn start(plan: &Plan, scenario: &Scenario, own_stack: bool) -> Result<Self, LoadError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stack-target")
            .enable_all()
            .build()?;
        let (info, own) = find_or_start_stack(own_stack)?;
        let api = required(&info.api_url, "api_url")?.to_owned();
        let service = ServiceClient::new(&api, required(&info.service_role_key, "service key")?)
            .map_err(|e| err("service client", e))?;
        let config = ProjectConfig::new(&api, required(&info.anon_key, "anon key")?)
            .map_err(|e| err("project config", e))?;
        let anon = HavenClient::new(config).map_err(|e| err("client", e))?;
        let ws_url = format!(
            "{}/v1/ws",
            required(&info.signaling_url, "signaling_url")?
                .trim_end_matches('/')
                .replacen("http://", "ws://", 1)
                .replacen("https://", "wss://", 1)
        );
        let metrics = match &info.sfu_metrics_url {
            Some(u) => Some(parse_metrics_url(u)?),
            None => None,
        };
        let mut target = Self {
            rt,
            own: Mutex::new(own),
            info,
            service,
            restore: Vec::new(),
            channels: HashMap::new(),
            sockets: Mutex::new(HashMap::new()),
            metrics,
        };
        // Any error from here on drops `target`, which restores limits and stops the stack.
        target.restore = target.rt.block_on(raise_limits(&target.service))?;
        let (channels, sockets) =
            target
                .rt
                .block_on(provision(&target.service, &anon, &ws_url, plan, scenario))?;
        target.channels = channels;
        if let Ok(mut s) = target.sockets.lock() {
            *s = sockets;
        }
        Ok(target)
    }

    fn restore_limits(&mut self) {
        let restore = std::mem::take(&mut self.restore);
        let service = self.service.clone();
        self.rt.block_on(async move {
            for (action, max, window) in restore {
                let _ = service.set_rate_limit(&action, max, window).await;
            }
        });
    }
}

async fn raise_limits(service: &ServiceClient) -> Result<Vec<(String, i32, i32)>, LoadError> {
    let mut restore = Vec::new();
    for (action, max, window) in RAISED_LIMITS {
        let rows = service
            .tables()
            .select("rate_limit_settings")
            .eq("action", action)
            .execute()
            .await
            .map_err(|e| err("reading rate limits", e))?;
        let old = rows.first().and_then(|r| {
            let m = i32::try_from(r.get("max_events")?.as_i64()?).ok()?;
            let w = i32::try_from(r.get("window_seconds")?.as_i64()?).ok()?;
            Some((m, w))
        });
        if let Some((m, w)) = old {
            service
                .set_rate_limit(action, max, window)
                .await
                .map_err(|e| err("raising a rate limit", e))?;
            restore.push((action.to_owned(), m, w));
        }
    }
    Ok(restore)
}

type Provisioned = (
    HashMap<RoomId, Uuid>,
    HashMap<UserId, mpsc::UnboundedSender<JoinCmd>>,
);

async fn provision(
    service: &ServiceClient,
    anon: &HavenClient,
    ws_url: &str,
    plan: &Plan,
    scenario: &Scenario,
) -> Result<Provisioned, LoadError> {
    let prefix = format!("lt{}", &Uuid::new_v4().simple().to_string()[..10]);
    let users = service
        .create_test_users(
            &prefix,
            "loadtest.haven.invalid",
            plan.clients.len(),
            PASSWORD,
        )
        .await
        .map_err(|e| err("creating users", e))?;
    // Sign everyone in (real JWTs), a few at a time.
    let sessions: Vec<_> = futures_util::stream::iter(
        users
            .iter()
            .map(|u| async move { anon.sign_in_with_password(&u.email, &u.password).await }),
    )
    .buffered(SETUP_CONCURRENCY)
    .collect()
    .await;
    let mut tokens = Vec::with_capacity(sessions.len());
    for s in sessions {
        tokens.push(s.map_err(|e| err("signing in", e))?.access_token);
    }
    // One community per room group; plan rooms are laid out group by group.
    let mut channels = HashMap::new();
    let mut room = 0usize;
    for (g, group) in scenario.groups.iter().enumerate() {
        let rooms: Vec<_> = plan
            .rooms
            .iter()
            .skip(room)
            .take(group.count as usize)
            .collect();
        room += group.count as usize;
        let members: Vec<usize> = rooms.iter().flat_map(|r| r.members.clone()).collect();
        let Some(&owner) = members.first() else {
            continue;
        };
        let owner_api = anon.as_user(&tokens[owner]);
        let community = owner_api
            .create_community(&format!("loadtest {prefix} group {g}"), None)
            .await
            .map_err(|e| err("creating a community", e))?;
        for r in &rooms {
            let channel = NewChannel {
                name: format!("room-{}", r.index),
                kind: ChannelKind::Voice,
                topic: None,
                group_id: None,
                position: None,
            };
            let id = owner_api
                .create_channel(community, &channel)
                .await
                .map_err(|e| err("creating a voice channel", e))?;
            channels.insert(r.id, id);
        }
        let invite = owner_api
            .create_invite(community, None, InviteExpiry::AfterHours(2))
            .await
            .map_err(|e| err("creating an invite", e))?;
        let code = invite.code.as_str();
        let outcomes: Vec<_> = futures_util::stream::iter(members.iter().skip(1).map(|&m| {
            let token = tokens[m].as_str();
            async move { anon.as_user(token).redeem_invite(code).await }
        }))
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
        for o in outcomes {
            let o = o.map_err(|e| err("redeeming the invite", e))?;
            if !matches!(o.status, RedeemStatus::Joined | RedeemStatus::AlreadyMember) {
                return Err(err("redeeming the invite", format!("{:?}", o.status)));
            }
        }
    }
    // Open and authenticate every participant's signaling socket.
    let opened: Vec<_> = futures_util::stream::iter(plan.clients.iter().map(|c| {
        let token = tokens[c.id].clone();
        async move {
            tokio::time::timeout(SETUP_TIMEOUT, open_socket(ws_url, token))
                .await
                .map_err(|_| err("signaling socket", "auth timed out"))?
                .map(|tx| (c.user, tx))
        }
    }))
    .buffered(SETUP_CONCURRENCY)
    .collect()
    .await;
    let mut sockets = HashMap::new();
    for o in opened {
        let (user, tx) = o?;
        sockets.insert(user, tx);
    }
    Ok((channels, sockets))
}

/// Connect, `auth`, wait for `ready`; then serve joins on that socket in a task.
async fn open_socket(
    url: &str,
    token: String,
) -> Result<mpsc::UnboundedSender<JoinCmd>, LoadError> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| err("connecting to signaling", e))?;
    let auth = ClientMessage::new(
        Some(1),
        ClientRequest::Auth {
            access_token: token,
        },
    );
    ws.send(Message::text(auth.encode()))
        .await
        .map_err(|e| err("sending auth", e))?;
    loop {
        let frame = ws
            .next()
            .await
            .ok_or_else(|| err("auth", "socket closed"))?
            .map_err(|e| err("auth", e))?;
        let Message::Text(text) = frame else {
            continue;
        };
        match ServerMessage::decode(text.as_str()).map(|m| m.body) {
            Ok(ServerEvent::Ready { .. }) => break,
            Ok(ServerEvent::Error { code, message }) => {
                return Err(err("auth refused", format!("{code:?}: {message}")))
            }
            _ => continue,
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<JoinCmd>();
    tokio::spawn(async move {
        let mut next_id = 2u64;
        let mut waiting: HashMap<u64, ReplyTo> = HashMap::new();
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    // The target is gone: close the socket (leaves voice).
                    let Some(cmd) = cmd else { break };
                    let id = next_id;
                    next_id += 1;
                    let join = ClientMessage::new(
                        Some(id),
                        ClientRequest::Join { channel_id: cmd.channel, sdp: cmd.sdp },
                    );
                    match ws.send(Message::text(join.encode())).await {
                        Ok(()) => {
                            waiting.insert(id, cmd.reply);
                        }
                        Err(e) => cmd.reply.send(Err(JoinFailure::new("ws_send", e.to_string()))),
                    }
                }
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => break,
                    };
                    let Ok(msg) = ServerMessage::decode(text.as_str()) else { continue };
                    let Some(reply) = msg.id.and_then(|id| waiting.remove(&id)) else {
                        continue;
                    };
                    reply.send(match msg.body {
                        ServerEvent::Joined { sdp, .. } => Ok(sdp),
                        ServerEvent::Error { code, message } => {
                            Err(JoinFailure::new(format!("signaling_{code:?}"), message))
                        }
                        other => Err(JoinFailure::new("signaling_unexpected", format!("{other:?}"))),
                    });
                }
            }
        }
        for (_, reply) in waiting.drain() {
            reply.send(Err(JoinFailure::new(
                "ws_closed",
                "signaling socket closed",
            )));
        }
        let _ = ws.close(None).await;
    });
    Ok(tx)
}

impl SfuTarget for StackTarget {
    fn name(&self) -> String {
        format!(
            "stack (signaling {}, sfu pid {})",
            self.info.signaling_url.as_deref().unwrap_or("?"),
            self.info.sfu_pid.unwrap_or(0)
        )
    }

    fn join(&self, req: JoinRequest, reply: ReplyTo) {
        let Some(&channel) = self.channels.get(&req.room) else {
            return reply.send(Err(JoinFailure::new("no_channel", "room not provisioned")));
        };
        let tx = self
            .sockets
            .lock()
            .ok()
            .and_then(|s| s.get(&req.user).cloned());
        let Some(tx) = tx else {
            return reply.send(Err(JoinFailure::new(
                "no_socket",
                "participant not signed in",
            )));
        };
        if let Err(mpsc::error::SendError(cmd)) = tx.send(JoinCmd {
            channel,
            sdp: req.sdp,
            reply,
        }) {
            cmd.reply.send(Err(JoinFailure::new(
                "ws_closed",
                "signaling socket closed",
            )));
        }
    }

    fn measured(&self) -> Option<ProcTarget> {
        self.info.sfu_pid.map(ProcTarget::process)
    }

    fn rss_is_own(&self) -> bool {
        true
    }

    fn counters(&self) -> Option<SfuCounters> {
        let (addr, path) = self.metrics.as_ref()?;
        scrape(*addr, path)
    }

    fn shutdown(&self) -> Option<bool> {
        // Closing the sockets leaves voice.
        if let Ok(mut s) = self.sockets.lock() {
            s.clear();
        }
        None
    }
}

impl Drop for StackTarget {
    fn drop(&mut self) {
        self.shutdown();
        self.restore_limits();
        // Give the socket tasks a moment to close cleanly before the stack goes away.
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(mut own) = self.own.lock() {
            if let Some(stack) = own.take() {
                let dir: PathBuf = stack.state_dir.clone();
                drop(stack);
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
