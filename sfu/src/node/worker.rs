//! One media worker: a thread that owns an [`SfuEngine`] (its rooms) and a UDP socket on
//! its own port, and drives the engine with str0m's discipline: datagrams and due timers in,
//! then every transmit out (batched) and every event up to the control link.
//!
//! The loop: `poll` on the socket and a wake-up pipe until the engine's next deadline →
//! control commands → up to a few `recvmmsg` batches, each fed to `handle_udp` with the
//! batch's receive `Instant` and answered with one `sendmmsg` → `handle_timeout` if due →
//! events → stats. Only this thread touches the engine.
//!
//! Isolation: the engine already contains a panic inside one participant. A panic anywhere
//! else in the engine is caught here; the engine is rebuilt empty, its participants are
//! reported as failed, and the worker (and the node) carry on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use haven_proto::control::{ControlBody, ControlMessage, LeaveReason, ParticipantLeft, RoomRoster};
use haven_proto::grant::GrantVerifier;
use haven_proto::{RoomId, SessionId, UserId};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, info, warn};

use crate::node::cpu::{thread_cpu_time, CpuMeter};
use crate::node::stats::{CounterTotals, IoTotals, WorkerSnapshot, WorkerStats};
use crate::node::udp::{self, MediaSocket, RecvBatch, WakeReceiver, Waker, MAX_BATCH};
use crate::participant::Transmit;
use crate::{EngineError, SfuConfig, SfuEngine, SfuEvent};

/// Longest the worker sleeps with nothing due: the pulse for stats and room reports when
/// no packet or timer wakes it anyway.
const IDLE_WAKE: Duration = Duration::from_millis(500);
/// The pulse of a worker without participants (with packing, every worker but the first
/// at moderate load): its counters do not move, so it only proves it is alive, inside
/// `/healthz`'s 3 s staleness limit. At 500 ms this idle thread was ~4 % of a 10-person
/// node's CPU.
const EMPTY_WAKE: Duration = Duration::from_secs(2);
/// How late a timer may run so that it shares a wake-up with packets. Nothing on a
/// worker's timers needs better (ICE consent, SCTP and DTLS retransmission, speaking holds
/// of 400 ms); at 500 participants a timer of one of the ~500 `Rtc`s fell due every few
/// milliseconds and woke the worker between packet batches (554 → 477 sleeps/s, ~3 % CPU).
const TIMER_SLACK: Duration = Duration::from_millis(10);
/// How often counters are copied to the shared stats while the worker is awake anyway.
/// Publishing never wakes the worker by itself (that cost ~10 wake-ups/s per worker, a
/// sixth of all wake-ups at 10 participants), so when idle they are up to `IDLE_WAKE` old.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Receive batches handled before timers get a look-in.
const BATCHES_PER_TURN: usize = 8;
/// How often the command channel is read without a wake-up asking for it (see `run`).
const COMMAND_CHECK: Duration = Duration::from_millis(100);
/// Speaking events and room statistics wait up to this long to travel to the control task
/// together: each report wakes it and costs a QUIC packet, and at 500 participants the
/// ~80 speaking changes a second made the control thread a twentieth of the node's CPU.
/// Signaling uses speaking only for the roster people outside the call see (those in it
/// meter what they hear, see `haven_proto::speaking`), where a fifth of a second is not
/// noticed. Anything else (replies, joins, leaves, rosters) goes at once, after what waits.
const NOTIFY_BATCH: Duration = Duration::from_millis(200);

/// What the control task asks of a worker.
#[derive(Debug)]
pub enum WorkerCommand {
    /// A request from signaling (`id` rewritten to the controller's tag); answered by a
    /// [`WorkerReport::Reply`] with the same id, after any events it caused.
    Control(ControlMessage),
    /// Report the roster of every room (after the control link reconnects).
    ReportRosters,
    /// Close every participant politely, flush, and stop.
    Shutdown,
    /// Panic inside the engine (outside any participant), to test the rebuild.
    #[cfg(feature = "fault-injection")]
    InjectEnginePanic,
}

/// What a worker tells the control task.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerReport {
    Reply {
        worker: usize,
        reply: ControlMessage,
    },
    Joined {
        worker: usize,
        room: RoomId,
        session: SessionId,
    },
    Left {
        worker: usize,
        left: ParticipantLeft,
    },
    /// Rosters, speaking changes or room statistics for signaling, in order.
    Notify {
        worker: usize,
        bodies: Vec<ControlBody>,
    },
    Stopped {
        worker: usize,
    },
}

/// Everything a worker needs; built (and its socket bound) before the thread starts so that
/// bind errors surface at start-up.
pub struct WorkerSetup {
    pub index: usize,
    pub engine: SfuConfig,
    pub verifier: GrantVerifier,
    pub socket: MediaSocket,
    pub stats: Arc<WorkerStats>,
    pub reports: UnboundedSender<WorkerReport>,
    pub room_stats_interval: Duration,
    /// When the node started (liveness timestamps are relative to it).
    pub epoch: Instant,
}

/// The control task's handle on a running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    pub index: usize,
    /// The address in this worker's ICE candidates.
    pub media_addr: SocketAddr,
    /// The address its socket is bound to.
    pub bound_addr: SocketAddr,
    commands: mpsc::Sender<WorkerCommand>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Queue a command and wake the worker; false if the worker is gone.
    pub fn send(&self, cmd: WorkerCommand) -> bool {
        let ok = self.commands.send(cmd).is_ok();
        self.waker.wake();
        ok
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Wait for the thread to end (after [`WorkerCommand::Shutdown`]).
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("media engine: {0}")]
    Engine(#[from] EngineError),
    #[error("worker thread: {0}")]
    Io(#[from] std::io::Error),
}

/// Start a worker thread.
pub fn spawn(setup: WorkerSetup) -> Result<WorkerHandle, WorkerError> {
    let engine = SfuEngine::new(setup.engine.clone(), setup.verifier.clone())?;
    let (waker, wake_rx) = udp::waker()?;
    let (tx, rx) = mpsc::channel();
    let index = setup.index;
    let media_addr = setup.engine.media_addr;
    let bound_addr = setup.socket.local_addr();
    let slot = (setup.engine.max_datagram + 1).max(2048);
    let now = Instant::now();
    let worker = Worker {
        engine,
        totals: CounterTotals::default(),
        io: IoTotals::default(),
        rx_batch: RecvBatch::new(MAX_BATCH, slot),
        tx_batch: Vec::with_capacity(MAX_BATCH),
        commands: rx,
        wake: wake_rx,
        sessions: HashMap::new(),
        rosters: Vec::new(),
        cpu: CpuMeter::new(Duration::ZERO, now),
        next_publish: now,
        next_room_stats: now + setup.room_stats_interval,
        notes: Notes::default(),
        setup,
    };
    let thread = std::thread::Builder::new()
        .name(format!("sfu-worker-{index}"))
        .spawn(move || worker.run())?;
    Ok(WorkerHandle {
        index,
        media_addr,
        bound_addr,
        commands: tx,
        waker,
        thread: Some(thread),
    })
}

struct Worker {
    setup: WorkerSetup,
    engine: SfuEngine,
    /// Counters of engines replaced after a failure.
    totals: CounterTotals,
    io: IoTotals,
    rx_batch: RecvBatch,
    tx_batch: Vec<Transmit>,
    commands: mpsc::Receiver<WorkerCommand>,
    wake: WakeReceiver,
    /// Who is on this worker, from the engine's events: enough to report them as failed if
    /// the engine has to be rebuilt.
    sessions: HashMap<SessionId, (RoomId, UserId)>,
    /// Rooms whose roster changed during the current drain of events.
    rosters: Vec<RoomId>,
    cpu: CpuMeter,
    next_publish: Instant,
    next_room_stats: Instant,
    notes: Notes,
}

/// Notifications for the control task: some go at once, some wait up to [`NOTIFY_BATCH`]
/// to travel together; order is kept either way.
#[derive(Debug, Default)]
struct Notes {
    waiting: Vec<ControlBody>,
    due: Option<Instant>,
}

impl Notes {
    /// Queue `body` to go by `now + NOTIFY_BATCH` at the latest.
    fn later(&mut self, body: ControlBody, now: Instant) {
        self.waiting.push(body);
        self.due.get_or_insert(now + NOTIFY_BATCH);
    }

    /// Everything waiting, in order (nothing if nothing waits).
    fn take(&mut self) -> Option<Vec<ControlBody>> {
        self.due = None;
        (!self.waiting.is_empty()).then(|| std::mem::take(&mut self.waiting))
    }

    /// Everything waiting if its time has come.
    fn take_due(&mut self, now: Instant) -> Option<Vec<ControlBody>> {
        if self.due.is_some_and(|t| t <= now) {
            self.take()
        } else {
            None
        }
    }
}

impl Worker {
    fn run(mut self) {
        let index = self.setup.index;
        info!(worker = index, addr = %self.setup.socket.local_addr(), "media worker started");
        self.cpu = CpuMeter::new(thread_cpu_time(), Instant::now());
        // The clock is read twice per wake-up with packets (as a batch arrives and once it
        // is sent) and reused for the rest of the turn and the next sleep's timeout: at 10
        // participants every packet is a wake-up of its own on a cold core, and five reads
        // a turn were ~2 % of the node.
        let mut now = Instant::now();
        let mut next_command_check = now;
        loop {
            let idle_wake = if self.sessions.is_empty() {
                EMPTY_WAKE
            } else {
                IDLE_WAKE
            };
            // Sleep until a deadline plus `TIMER_SLACK`: a timer that falls due while
            // packets keep coming runs on the next packet's wake-up instead of its own.
            let timeout = self
                .engine
                .next_timeout()
                .into_iter()
                .chain(self.notes.due)
                .min()
                .map_or(idle_wake, |t| {
                    let wait = t.saturating_duration_since(now);
                    if wait.is_zero() {
                        wait
                    } else {
                        wait + TIMER_SLACK
                    }
                })
                .min(idle_wake);
            let ready = udp::wait(&self.setup.socket, &self.wake, timeout);
            self.io.wakeups += 1;
            if ready.wake {
                self.wake.drain();
            }
            // Every command comes with a wake-up; the channel is also looked at now and then
            // so that a control task that went away (dropping its end without a wake-up) is
            // noticed under steady traffic too. Not on every packet's wake-up: its lines
            // were cold each time.
            if ready.wake || now >= next_command_check {
                next_command_check = now + COMMAND_CHECK;
                if !self.handle_commands() {
                    break;
                }
            }
            // A timer-only wake-up skips the read (an `EAGAIN` syscall); anything that
            // arrived meanwhile makes the next `poll` return at once.
            now = match ready.socket.then(|| self.receive()).flatten() {
                Some(sent_at) => sent_at,
                None => Instant::now(),
            };
            if self.engine.next_timeout().is_some_and(|t| t <= now) {
                self.io.timer_runs += 1;
                self.guarded(|e| e.handle_timeout(now));
                self.flush(None);
                self.drain_events();
            }
            self.periodic(now);
        }
        self.publish(Instant::now());
        self.send_notes();
        self.setup.stats.stopped.store(true, Ordering::Relaxed);
        let _ = self
            .setup
            .reports
            .send(WorkerReport::Stopped { worker: index });
        info!(worker = index, "media worker stopped");
    }

    /// False when the worker must stop.
    fn handle_commands(&mut self) -> bool {
        loop {
            let cmd = match self.commands.try_recv() {
                Ok(cmd) => cmd,
                Err(mpsc::TryRecvError::Empty) => return true,
                // The control task is gone: nobody can reach these participants any more.
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.shutdown();
                    return false;
                }
            };
            match cmd {
                WorkerCommand::Control(msg) => {
                    let now = Instant::now();
                    let wall = SystemTime::now();
                    let reply = self.guarded(|e| e.handle_control(now, wall, &msg));
                    self.flush(None);
                    // Events first: the controller learns a join before its answer.
                    self.drain_events();
                    let reply = reply.flatten().unwrap_or_else(|| {
                        msg.reply(ControlBody::Error(haven_proto::control::ControlError {
                            code: haven_proto::control::ErrorCode::Internal,
                            message: "the request failed on the media worker".into(),
                        }))
                    });
                    self.report(WorkerReport::Reply {
                        worker: self.setup.index,
                        reply,
                    });
                }
                WorkerCommand::ReportRosters => {
                    let rooms: Vec<RoomId> = self.engine.rooms().collect();
                    for room in rooms {
                        if let Some(r) = self.engine.roster(room) {
                            self.notify(ControlBody::Roster(r));
                        }
                    }
                }
                WorkerCommand::Shutdown => {
                    self.shutdown();
                    return false;
                }
                #[cfg(feature = "fault-injection")]
                WorkerCommand::InjectEnginePanic => {
                    self.guarded(|_| panic!("injected engine fault"));
                }
            }
        }
    }

    /// Read and handle up to [`BATCHES_PER_TURN`] batches; when the last batch's answers
    /// were sent, if any batch came.
    fn receive(&mut self) -> Option<Instant> {
        let mut sent_at = None;
        for _ in 0..BATCHES_PER_TURN {
            let n = match self.setup.socket.recv_batch(&mut self.rx_batch) {
                Ok(n) => n,
                Err(e) => {
                    self.io.recv_errors += 1;
                    if self.io.recv_errors.is_power_of_two() {
                        warn!(worker = self.setup.index, error = %e, count = self.io.recv_errors, "receive failed");
                    }
                    // A socket stuck in an error state must not turn the loop into a spin.
                    std::thread::sleep(Duration::from_millis(1));
                    return sent_at;
                }
            };
            if n == 0 {
                return sent_at;
            }
            let received_at = Instant::now();
            self.io.recv_batches += 1;
            self.io.datagrams_in += n as u64;
            self.io.bytes_in += self.rx_batch.bytes();
            let local = self.setup.engine.media_addr;
            let batch = &self.rx_batch;
            let engine = &mut self.engine;
            let ok = catch_unwind(AssertUnwindSafe(|| {
                for (source, bytes) in batch.iter() {
                    engine.handle_udp(received_at, source, local, bytes);
                }
            }))
            .is_ok();
            if !ok {
                self.reset_engine();
            }
            sent_at = self.flush(Some((received_at, n as u64)));
            self.drain_events();
            if n < self.rx_batch.capacity() {
                break;
            }
        }
        sent_at
    }

    /// Run `f` on the engine; a panic rebuilds it (see the module docs).
    fn guarded<T>(&mut self, f: impl FnOnce(&mut SfuEngine) -> T) -> Option<T> {
        let engine = &mut self.engine;
        match catch_unwind(AssertUnwindSafe(|| f(engine))) {
            Ok(v) => Some(v),
            Err(_) => {
                self.reset_engine();
                None
            }
        }
    }

    fn reset_engine(&mut self) {
        error!(
            worker = self.setup.index,
            participants = self.sessions.len(),
            "media engine failed outside a participant; rebuilding it"
        );
        self.io.engine_resets += 1;
        self.totals.add(self.engine.counters());
        match SfuEngine::new(self.setup.engine.clone(), self.setup.verifier.clone()) {
            Ok(e) => self.engine = e,
            // The same configuration built an engine at start-up; keep the old one.
            Err(e) => error!(worker = self.setup.index, error = %e, "rebuilding the engine failed"),
        }
        for (session, (room, user)) in std::mem::take(&mut self.sessions) {
            self.report(WorkerReport::Left {
                worker: self.setup.index,
                left: ParticipantLeft {
                    room,
                    session,
                    user,
                    reason: LeaveReason::Failed,
                },
            });
        }
    }

    /// Send everything the engine wants sent, in batches. With `received` (a batch's
    /// arrival and size), record its lateness and return when its answers were sent.
    fn flush(&mut self, received: Option<(Instant, u64)>) -> Option<Instant> {
        loop {
            self.tx_batch.clear();
            while self.tx_batch.len() < MAX_BATCH {
                match self.engine.poll_transmit() {
                    Some(t) => self.tx_batch.push(t),
                    None => break,
                }
            }
            if self.tx_batch.is_empty() {
                break;
            }
            let o = self.setup.socket.send_batch(&self.tx_batch);
            self.io.datagrams_out += o.sent;
            self.io.bytes_out += o.bytes;
            self.io.send_errors += o.errors;
            self.io.send_dropped += o.dropped;
            let full = self.tx_batch.len() == MAX_BATCH;
            for t in self.tx_batch.drain(..) {
                self.engine.recycle(t.contents);
            }
            if !full {
                break;
            }
        }
        received.map(|(at, n)| {
            let sent_at = Instant::now();
            self.setup.stats.lateness.observe(sent_at - at, n);
            sent_at
        })
    }

    fn drain_events(&mut self) {
        let worker = self.setup.index;
        while let Some(event) = self.engine.poll_event() {
            match event {
                SfuEvent::Joined {
                    room,
                    session,
                    user,
                } => {
                    self.sessions.insert(session, (room, user));
                    self.report(WorkerReport::Joined {
                        worker,
                        room,
                        session,
                    });
                }
                SfuEvent::Left(left) => {
                    self.sessions.remove(&left.session);
                    self.report(WorkerReport::Left { worker, left });
                }
                SfuEvent::RosterChanged { room } => {
                    if !self.rosters.contains(&room) {
                        self.rosters.push(room);
                    }
                }
                SfuEvent::Speaking(s) => self.notify_later(ControlBody::Speaking(s)),
                SfuEvent::Connected { .. } => {}
            }
        }
        // One roster per room per drain, however many changes it saw.
        for room in std::mem::take(&mut self.rosters) {
            let roster = self.engine.roster(room).unwrap_or(RoomRoster {
                room,
                participants: Vec::new(),
            });
            self.notify(ControlBody::Roster(roster));
        }
    }

    /// Send `body` now, after any notifications waiting.
    fn notify(&mut self, body: ControlBody) {
        self.notes.waiting.push(body);
        self.send_notes();
    }

    /// Send `body` within [`NOTIFY_BATCH`], with whatever else comes meanwhile.
    fn notify_later(&mut self, body: ControlBody) {
        self.notes.later(body, Instant::now());
    }

    fn send_notes(&mut self) {
        if let Some(bodies) = self.notes.take() {
            self.send_notify(bodies);
        }
    }

    fn send_notify(&self, bodies: Vec<ControlBody>) {
        // The control task only goes away at shutdown.
        let _ = self.setup.reports.send(WorkerReport::Notify {
            worker: self.setup.index,
            bodies,
        });
    }

    /// Send `r` now; notifications waiting go first, so signaling sees events in order.
    fn report(&mut self, r: WorkerReport) {
        self.send_notes();
        let _ = self.setup.reports.send(r);
    }

    fn periodic(&mut self, now: Instant) {
        if let Some(bodies) = self.notes.take_due(now) {
            self.send_notify(bodies);
        }
        if now >= self.next_publish {
            self.publish(now);
            self.next_publish = now + PUBLISH_EVERY;
        }
        if now >= self.next_room_stats {
            let rooms: Vec<RoomId> = self.engine.rooms().collect();
            for room in rooms {
                if let Some(s) = self.engine.room_stats(room) {
                    self.notify_later(ControlBody::RoomStats(s));
                }
            }
            self.next_room_stats = now + self.setup.room_stats_interval;
        }
    }

    fn publish(&mut self, now: Instant) {
        let cpu = thread_cpu_time();
        let permille = self.cpu.update(cpu, now, Duration::from_secs(1));
        let totals = self.totals.plus(self.engine.counters());
        self.setup.stats.publish(WorkerSnapshot {
            engine: &totals,
            io: &self.io,
            rooms: self.engine.rooms().count(),
            participants: self.engine.participant_count(),
            cpu,
            cpu_permille: permille,
            alive_at: now.saturating_duration_since(self.setup.epoch),
        });
    }

    /// Say goodbye (DTLS close) to everyone still here and send it out.
    fn shutdown(&mut self) {
        let now = Instant::now();
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        for s in sessions {
            self.guarded(|e| {
                let _ = e.leave(now, s);
            });
        }
        self.flush(None);
        self.drain_events();
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use std::net::UdpSocket;

    use haven_proto::control::Offer;
    use haven_proto::grant::{GrantSigner, JoinGrant};
    use haven_proto::{NodeId, SessionId, UserId};
    use str0m::media::{Direction, MediaKind};
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    use super::*;
    use crate::counters::DropReason;
    use crate::media::haven_rtc_config;

    fn offer_sdp() -> String {
        let mut rtc = haven_rtc_config().build(Instant::now());
        let addr = "127.0.0.1:40000".parse().unwrap();
        rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").unwrap());
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, _) = change.apply().unwrap();
        offer.to_sdp_string()
    }

    fn offer(signer: &GrantSigner, room: RoomId) -> (SessionId, ControlMessage) {
        let session = SessionId::new_random();
        let grant = JoinGrant {
            user: UserId::new_random(),
            display_name: "w".into(),
            room,
            can_speak: true,
            session,
            node: NodeId::new("n"),
        };
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = signer.mint(&grant, now, Duration::from_secs(30)).unwrap();
        let msg = ControlMessage::new(
            7,
            ControlBody::Offer(Offer {
                room,
                grant: token,
                sdp: offer_sdp(),
                slots: None,
            }),
        );
        (session, msg)
    }

    fn next(rx: &mut UnboundedReceiver<WorkerReport>) -> WorkerReport {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = rx.try_recv() {
                return r;
            }
            assert!(Instant::now() < end, "no report from the worker");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The next report that is not a roster/speaking/stats notification.
    fn next_significant(rx: &mut UnboundedReceiver<WorkerReport>) -> WorkerReport {
        loop {
            match next(rx) {
                WorkerReport::Notify { .. } => continue,
                r => return r,
            }
        }
    }

    /// Commands come with a wake-up, so packet wake-ups skip the channel; a control task
    /// that went away without a word must still be noticed while packets keep coming.
    #[test]
    fn a_worker_stops_when_its_control_task_is_gone_even_under_traffic() {
        let socket = MediaSocket::bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let addr = socket.local_addr();
        let signer = GrantSigner::generate().unwrap();
        let (tx, mut rx) = unbounded_channel();
        let handle = spawn(WorkerSetup {
            index: 1,
            engine: SfuConfig::new(NodeId::new("n"), addr),
            verifier: signer.verifier(),
            socket,
            stats: Arc::new(WorkerStats::default()),
            reports: tx,
            room_stats_interval: Duration::from_secs(60),
            epoch: Instant::now(),
        })
        .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let traffic = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let _ = s.send_to(&[0xff; 40], addr);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        // The command sender and the waker go away; no wake-up says so.
        drop(handle);
        let stopped = loop {
            match next(&mut rx) {
                WorkerReport::Stopped { worker } => break worker,
                _ => continue,
            }
        };
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap();
        assert_eq!(stopped, 1);
    }

    #[test]
    fn a_worker_answers_counts_garbage_and_survives_an_engine_panic() {
        let socket = MediaSocket::bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let addr = socket.local_addr();
        let signer = GrantSigner::generate().unwrap();
        let stats = Arc::new(WorkerStats::default());
        let (tx, mut rx) = unbounded_channel();
        let mut handle = spawn(WorkerSetup {
            index: 3,
            engine: SfuConfig::new(NodeId::new("n"), addr),
            verifier: signer.verifier(),
            socket,
            stats: Arc::clone(&stats),
            reports: tx,
            room_stats_interval: Duration::from_secs(60),
            epoch: Instant::now(),
        })
        .unwrap();
        assert_eq!(handle.media_addr, addr);

        let room = RoomId::new_random();
        let (session, msg) = offer(&signer, room);
        assert!(handle.send(WorkerCommand::Control(msg)));
        // The join is reported before the answer, which keeps the request id.
        assert_eq!(
            next_significant(&mut rx),
            WorkerReport::Joined {
                worker: 3,
                room,
                session
            }
        );
        match next_significant(&mut rx) {
            WorkerReport::Reply { worker: 3, reply } => {
                assert_eq!(reply.id, 7);
                assert!(matches!(reply.body, ControlBody::Answer(ref a) if a.session == session));
            }
            other => panic!("expected the answer, got {other:?}"),
        }

        // Garbage on the socket is dropped and counted.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..20 {
            s.send_to(&[0xff; 40], addr).unwrap();
        }
        let garbage = DropReason::ALL
            .iter()
            .position(|r| *r == DropReason::Garbage)
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while WorkerStats::get(&stats.drops[garbage]) < 20 {
            assert!(Instant::now() < end, "garbage not counted");
            std::thread::sleep(Duration::from_millis(10));
        }

        // A panic in the engine itself: rebuilt, its participant reported as failed.
        assert!(handle.send(WorkerCommand::InjectEnginePanic));
        match next_significant(&mut rx) {
            WorkerReport::Left { worker: 3, left } => {
                assert_eq!(left.session, session);
                assert_eq!(left.reason, LeaveReason::Failed);
            }
            other => panic!("expected the failed participant, got {other:?}"),
        }
        // The new engine serves, and counters did not go backwards.
        let (session2, msg) = offer(&signer, room);
        handle.send(WorkerCommand::Control(msg));
        assert!(matches!(
            next_significant(&mut rx),
            WorkerReport::Joined { session, .. } if session == session2
        ));
        let end = Instant::now() + Duration::from_secs(10);
        while WorkerStats::get(&stats.gauges.engine_resets) < 1
            || WorkerStats::get(&stats.gauges.joins_accepted) < 2
        {
            assert!(Instant::now() < end, "reset and joins not published");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(WorkerStats::get(&stats.drops[garbage]) >= 20);
        assert_eq!(WorkerStats::get(&stats.gauges.joins_accepted), 2);

        handle.send(WorkerCommand::Shutdown);
        loop {
            if let WorkerReport::Stopped { worker } = next(&mut rx) {
                assert_eq!(worker, 3);
                break;
            }
        }
        handle.join();
        assert!(handle.is_finished());
        assert!(stats.stopped.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod notes_tests {
    use haven_proto::control::{ControlBody, RoomRoster, SpeakingEvent};
    use haven_proto::{RoomId, SessionId, UserId};

    use super::{Notes, NOTIFY_BATCH};

    fn speaking(on: bool) -> ControlBody {
        ControlBody::Speaking(SpeakingEvent {
            room: RoomId::new_random(),
            session: SessionId::new_random(),
            user: UserId::new_random(),
            speaking: on,
        })
    }

    #[test]
    fn deferred_notes_wait_for_the_batch_and_keep_their_order() {
        let t0 = std::time::Instant::now();
        let mut notes = Notes::default();
        assert_eq!(notes.take_due(t0), None);
        let (a, b) = (speaking(true), speaking(false));
        notes.later(a.clone(), t0);
        // A later note does not push the deadline back.
        notes.later(b.clone(), t0 + NOTIFY_BATCH / 2);
        assert_eq!(notes.due, Some(t0 + NOTIFY_BATCH));
        assert_eq!(notes.take_due(t0 + NOTIFY_BATCH / 2), None);
        assert_eq!(notes.take_due(t0 + NOTIFY_BATCH), Some(vec![a, b]));
        assert_eq!(notes.due, None);
        assert_eq!(notes.take_due(t0 + 10 * NOTIFY_BATCH), None);
    }

    #[test]
    fn an_urgent_note_takes_what_waits_along_first() {
        let t0 = std::time::Instant::now();
        let mut notes = Notes::default();
        let a = speaking(false);
        notes.later(a.clone(), t0);
        let roster = ControlBody::Roster(RoomRoster {
            room: RoomId::new_random(),
            participants: Vec::new(),
        });
        notes.waiting.push(roster.clone());
        assert_eq!(notes.take(), Some(vec![a, roster]));
        assert_eq!(notes.due, None);
        assert_eq!(notes.take(), None);
    }
}
