//! haven-sfu's sans-IO `SfuEngine` behind a real loopback UDP socket, so the harness can
//! load the SFU core end to end before the `haven-sfu` binary exists, and keep a reference
//! point once it does.
//!
//! One thread, one socket, one engine (like one worker of the real node): read every
//! datagram into `handle_udp`, wake due timers, send every transmit, drop the events
//! (nobody listens to them here). Offers come in over a channel, with a callback for the
//! answer. The loop is the minimal shell, not the real node's (no recvmmsg/sendmmsg, no
//! QUIC): numbers from it are "the engine over plain syscalls".
//!
//! Two ways to run it: [`EngineThreadTarget`] (a thread of the harness) and
//! [`EngineProcessTarget`] (a child process `haven-loadtest serve-engine` speaking JSON lines
//! on stdin/stdout, so its CPU and RSS can be measured apart from the clients').

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haven_proto::control::Offer;
use haven_proto::grant::{GrantSigner, GrantVerifier, JoinGrant};
use haven_proto::NodeId;
use haven_sfu::{SfuConfig, SfuEngine};
use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Deserialize, Serialize};

use crate::procstat::{current_tid, ProcTarget};
use crate::target::{JoinFailure, JoinRequest, JoinResult, ReplyTo, SfuCounters, SfuTarget};
use crate::LoadError;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
const GRANT_LIFETIME: Duration = Duration::from_secs(30);

type AnswerFn = Box<dyn FnOnce(JoinResult) + Send>;
type ControlItem = (Offer, AnswerFn);

/// Counters published by the shell loop (relaxed atomics, read by the sampler).
#[derive(Default)]
pub struct ShellCounters {
    forwarded: AtomicU64,
    rtp_in: AtomicU64,
    udp_in: AtomicU64,
    udp_out: AtomicU64,
    send_errors: AtomicU64,
    participants: AtomicU64,
}

impl ShellCounters {
    pub fn snapshot(&self) -> SfuCounters {
        SfuCounters {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            rtp_in: self.rtp_in.load(Ordering::Relaxed),
            udp_in: self.udp_in.load(Ordering::Relaxed),
            udp_out: self.udp_out.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            participants: self.participants.load(Ordering::Relaxed),
        }
    }
}

/// A running shell.
pub struct EngineShell {
    pub media_addr: SocketAddr,
    control: Mutex<Sender<ControlItem>>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    pub counters: Arc<ShellCounters>,
    tid: Arc<AtomicU32>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EngineShell {
    pub fn spawn(node: NodeId, verifier: GrantVerifier) -> Result<Self, LoadError> {
        let std_socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        std_socket.set_nonblocking(true)?;
        // Room for bursts: one speaker's packet fans out to many subscribers at once.
        set_socket_buffers(&std_socket, 4 << 20);
        let media_addr = std_socket.local_addr()?;
        let engine = SfuEngine::new(SfuConfig::new(node, media_addr), verifier)
            .map_err(|e| LoadError::Target(format!("SfuEngine: {e}")))?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(ShellCounters::default());
        let tid = Arc::new(AtomicU32::new(0));
        let thread = {
            let (stop, counters, tid) = (stop.clone(), counters.clone(), tid.clone());
            std::thread::Builder::new()
                .name("sfu-engine".into())
                .spawn(move || {
                    tid.store(current_tid(), Ordering::Relaxed);
                    let socket = mio::net::UdpSocket::from_std(std_socket);
                    run_shell(poll, socket, media_addr, engine, rx, &stop, &counters);
                })?
        };
        // Wait (bounded) until the thread has published its id, so CPU sampling can start.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tid.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Self {
            media_addr,
            control: Mutex::new(tx),
            waker,
            stop,
            counters,
            tid,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn submit(&self, offer: Offer, answer: AnswerFn) {
        let sent = self
            .control
            .lock()
            .map(|tx| tx.send((offer, answer)).is_ok())
            .unwrap_or(false);
        if sent {
            let _ = self.waker.wake();
        }
    }

    pub fn tid(&self) -> u32 {
        self.tid.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for EngineShell {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Raise SO_RCVBUF/SO_SNDBUF (the kernel caps it at rmem_max/wmem_max).
pub fn set_socket_buffers(socket: &UdpSocket, bytes: i32) {
    use std::os::fd::AsRawFd;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: valid fd, pointer to an i32 of the stated length.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }
}

fn run_shell(
    mut poll: Poll,
    mut socket: mio::net::UdpSocket,
    local: SocketAddr,
    mut engine: SfuEngine,
    control: Receiver<ControlItem>,
    stop: &AtomicBool,
    counters: &ShellCounters,
) {
    if poll
        .registry()
        .register(&mut socket, SOCKET, Interest::READABLE)
        .is_err()
    {
        return;
    }
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 2048];
    let (mut udp_out, mut send_errors) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Ok((offer, answer)) = control.try_recv() {
            let result = engine
                .accept_offer(now, SystemTime::now(), &offer)
                .map(|a| a.sdp)
                .map_err(|e| JoinFailure::new(format!("{:?}", e.code()), e.to_string()));
            answer(result);
        }
        if engine.next_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }
        flush(&mut engine, &socket, &mut udp_out, &mut send_errors);
        let c = engine.counters();
        counters.forwarded.store(c.rtp_forwarded, Ordering::Relaxed);
        counters.rtp_in.store(c.rtp_in, Ordering::Relaxed);
        counters.udp_in.store(c.udp_in, Ordering::Relaxed);
        counters.udp_out.store(udp_out, Ordering::Relaxed);
        counters.send_errors.store(send_errors, Ordering::Relaxed);
        counters
            .participants
            .store(engine.participant_count() as u64, Ordering::Relaxed);

        let timeout = engine
            .next_timeout()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(100));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return;
            }
        }
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, src)) => {
                    engine.handle_udp(Instant::now(), src, local, &buf[..n]);
                    flush(&mut engine, &socket, &mut udp_out, &mut send_errors);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Anything else: poll again (the next datagram re-arms the edge).
                Err(_) => break,
            }
        }
    }
}

fn flush(engine: &mut SfuEngine, socket: &mio::net::UdpSocket, out: &mut u64, errors: &mut u64) {
    while let Some(t) = engine.poll_transmit() {
        match socket.send_to(&t.contents, t.destination) {
            Ok(_) => *out += 1,
            Err(_) => *errors += 1,
        }
    }
    while engine.poll_event().is_some() {}
}

/// Plays signaling's part for the engine targets: mints a join grant for each request.
pub(crate) struct GrantMinter {
    pub(crate) signer: GrantSigner,
    pub(crate) node: NodeId,
}

impl GrantMinter {
    pub(crate) fn offer(&self, req: &JoinRequest) -> Result<Offer, JoinFailure> {
        let grant = JoinGrant {
            user: req.user,
            display_name: req.display_name.clone(),
            room: req.room,
            can_speak: req.can_speak,
            session: req.session,
            node: self.node.clone(),
        };
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = self
            .signer
            .mint(&grant, now_unix, GRANT_LIFETIME)
            .map_err(|e| JoinFailure::new("grant", e.to_string()))?;
        Ok(Offer {
            room: req.room,
            grant: token,
            sdp: req.sdp.clone(),
            slots: Some(req.slots),
        })
    }
}

/// The engine in a thread of this process.
pub struct EngineThreadTarget {
    shell: EngineShell,
    minter: GrantMinter,
}

impl EngineThreadTarget {
    pub fn start() -> Result<Self, LoadError> {
        let signer = GrantSigner::generate().map_err(|e| LoadError::Target(e.to_string()))?;
        let node = NodeId::new("loadtest-engine");
        let shell = EngineShell::spawn(node.clone(), signer.verifier())?;
        Ok(Self {
            shell,
            minter: GrantMinter { signer, node },
        })
    }
}

impl SfuTarget for EngineThreadTarget {
    fn name(&self) -> String {
        format!("engine-thread ({})", self.shell.media_addr)
    }

    fn join(&self, req: JoinRequest, reply: ReplyTo) {
        match self.minter.offer(&req) {
            Ok(offer) => self.shell.submit(offer, Box::new(move |r| reply.send(r))),
            Err(e) => reply.send(Err(e)),
        }
    }

    fn measured(&self) -> Option<ProcTarget> {
        Some(ProcTarget::own_thread(self.shell.tid()))
    }

    fn rss_is_own(&self) -> bool {
        false
    }

    fn counters(&self) -> Option<SfuCounters> {
        Some(self.shell.counters.snapshot())
    }

    fn shutdown(&self) -> Option<bool> {
        self.shell.stop();
        None
    }
}

/// Lines the parent sends to `serve-engine`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToChild {
    Offer { id: u64, offer: Offer },
}

/// Lines `serve-engine` sends back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FromChild {
    Ready {
        media_addr: SocketAddr,
        pid: u32,
    },
    Answer {
        id: u64,
        sdp: String,
    },
    Refused {
        id: u64,
        kind: String,
        message: String,
    },
    Stats(SfuCounters),
}

/// The engine in a child process of its own.
pub struct EngineProcessTarget {
    child: Mutex<Child>,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    pid: u32,
    media_addr: SocketAddr,
    minter: GrantMinter,
    pending: Arc<Mutex<HashMap<u64, ReplyTo>>>,
    next_id: AtomicU64,
    latest: Arc<Mutex<Option<SfuCounters>>>,
}

impl EngineProcessTarget {
    /// `exe` is this harness binary (it has the `serve-engine` subcommand).
    pub fn start(exe: PathBuf) -> Result<Self, LoadError> {
        let signer = GrantSigner::generate().map_err(|e| LoadError::Target(e.to_string()))?;
        let public_pem = signer
            .public_key_pem()
            .map_err(|e| LoadError::Target(e.to_string()))?;
        let mut child = Command::new(&exe)
            .arg("serve-engine")
            .env("HAVEN_GRANT_PUBLIC_KEY_PEM", public_pem)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| LoadError::Target(format!("{}: {e}", exe.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LoadError::Target("child stdout".into()))?;
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .transpose()?
            .ok_or_else(|| LoadError::Target("serve-engine exited before it was ready".into()))?;
        let (media_addr, pid) = match serde_json::from_str(&first) {
            Ok(FromChild::Ready { media_addr, pid }) => (media_addr, pid),
            _ => return Err(LoadError::Target(format!("serve-engine said: {first}"))),
        };
        let pending: Arc<Mutex<HashMap<u64, ReplyTo>>> = Arc::default();
        let latest: Arc<Mutex<Option<SfuCounters>>> = Arc::default();
        {
            let (pending, latest) = (pending.clone(), latest.clone());
            std::thread::Builder::new()
                .name("engine-stdout".into())
                .spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        match serde_json::from_str::<FromChild>(&line) {
                            Ok(FromChild::Stats(c)) => {
                                if let Ok(mut l) = latest.lock() {
                                    *l = Some(c);
                                }
                            }
                            Ok(FromChild::Answer { id, sdp }) => {
                                let r = pending.lock().ok().and_then(|mut p| p.remove(&id));
                                if let Some(r) = r {
                                    r.send(Ok(sdp));
                                }
                            }
                            Ok(FromChild::Refused { id, kind, message }) => {
                                let r = pending.lock().ok().and_then(|mut p| p.remove(&id));
                                if let Some(r) = r {
                                    r.send(Err(JoinFailure::new(kind, message)));
                                }
                            }
                            _ => {}
                        }
                    }
                })?;
        }
        Ok(Self {
            child: Mutex::new(child),
            stdin: Arc::new(Mutex::new(stdin)),
            pid,
            media_addr,
            minter: GrantMinter {
                signer,
                node: NodeId::new("loadtest-engine"),
            },
            pending,
            next_id: AtomicU64::new(1),
            latest,
        })
    }
}

impl SfuTarget for EngineProcessTarget {
    fn name(&self) -> String {
        format!("engine-process (pid {}, {})", self.pid, self.media_addr)
    }

    fn join(&self, req: JoinRequest, reply: ReplyTo) {
        let offer = match self.minter.offer(&req) {
            Ok(o) => o,
            Err(e) => return reply.send(Err(e)),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = match serde_json::to_string(&ToChild::Offer { id, offer }) {
            Ok(l) => l,
            Err(e) => return reply.send(Err(JoinFailure::new("encode", e.to_string()))),
        };
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, reply);
        }
        let written = self
            .stdin
            .lock()
            .ok()
            .and_then(|mut s| {
                let s = s.as_mut()?;
                writeln!(s, "{line}").and_then(|_| s.flush()).ok()
            })
            .is_some();
        if !written {
            let r = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
            if let Some(r) = r {
                r.send(Err(JoinFailure::new(
                    "control",
                    "serve-engine stdin closed",
                )));
            }
        }
    }

    fn measured(&self) -> Option<ProcTarget> {
        Some(ProcTarget::process(self.pid))
    }

    fn rss_is_own(&self) -> bool {
        true
    }

    fn counters(&self) -> Option<SfuCounters> {
        self.latest.lock().ok().and_then(|l| *l)
    }

    fn shutdown(&self) -> Option<bool> {
        // Closing stdin tells the child to exit; wait for it (bounded), then make sure.
        let closed = self.stdin.lock().ok()?.take().is_some();
        let mut child = self.child.lock().ok()?;
        let left = haven_devstack::process::wait_for_exit(&mut child, Duration::from_secs(3));
        if left.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        closed.then_some(left.is_some_and(|s| s.success()))
    }
}

impl Drop for EngineProcessTarget {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The `serve-engine` subcommand: run one engine shell, take offers on stdin, answer and
/// report counters (every 50 ms) on stdout; exit when stdin closes.
pub fn serve_engine_stdio() -> Result<(), LoadError> {
    let pem = std::env::var("HAVEN_GRANT_PUBLIC_KEY_PEM")
        .map_err(|_| LoadError::Target("HAVEN_GRANT_PUBLIC_KEY_PEM is not set".into()))?;
    let verifier =
        GrantVerifier::from_public_key_pem(&pem).map_err(|e| LoadError::Target(e.to_string()))?;
    let shell = Arc::new(EngineShell::spawn(
        NodeId::new("loadtest-engine"),
        verifier,
    )?);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = {
        let out = out.clone();
        move |m: &FromChild| {
            if let (Ok(line), Ok(mut o)) = (serde_json::to_string(m), out.lock()) {
                let _ = writeln!(o, "{line}");
                let _ = o.flush();
            }
        }
    };
    say(&FromChild::Ready {
        media_addr: shell.media_addr,
        pid: std::process::id(),
    });
    let done = Arc::new(AtomicBool::new(false));
    let stats = {
        let (shell, done, say) = (shell.clone(), done.clone(), say.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                say(&FromChild::Stats(shell.counters.snapshot()));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let Ok(ToChild::Offer { id, offer }) = serde_json::from_str::<ToChild>(&line) else {
            continue;
        };
        let say = say.clone();
        shell.submit(
            offer,
            Box::new(move |r| match r {
                Ok(sdp) => say(&FromChild::Answer { id, sdp }),
                Err(e) => say(&FromChild::Refused {
                    id,
                    kind: e.kind,
                    message: e.message,
                }),
            }),
        );
    }
    done.store(true, Ordering::Relaxed);
    let _ = stats.join();
    shell.stop();
    Ok(())
}
