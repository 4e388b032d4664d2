//! A worker thread that drives many simulated participants sans-IO: one mio poll over all
//! their UDP sockets, one timer heap for every `Rtc` deadline, frame tick and join, and the
//! impairment stages on both paths. Rooms are assigned whole to a worker, so a publisher and
//! its subscribers share the worker's [`SendLog`] (latency without touching payloads).
//!
//! str0m discipline: every mutation of an `Rtc` (input, `write_rtp`, answer) is followed by
//! draining `poll_output` until a future `Timeout`; only `Rtc`s whose deadline is due get
//! `Input::Timeout`.
//!
//! The worker also sends the plain-UDP echo probes that SFU-added latency is measured
//! against, from this same loop.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_proto::datachannel::DATA_CHANNEL_LABEL;
use haven_proto::UserId;
use haven_sfu::media::{haven_rtc_config, OPUS_PT};
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::crypto::CryptoProvider;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::audio::{FrameTable, FRAME_MS, FRAME_SAMPLES};
use crate::client::{ClientWindow, Peer, Phase, RecvStream, SimClient};
use crate::echo::{parse_probe, probe, ProbeClock};
use crate::impair::{ImpairCounters, ImpairStage, Impairment};
use crate::latency::{Match, SendLog};
use crate::procstat::{current_tid, CpuDelta, ProcTarget};
use crate::scenario::{Plan, Topology};
use crate::stats::{DurationHistogram, LossTotals, StreamStats};
use crate::target::{JoinRequest, JoinResult, ReplyTo, SfuTarget};

const WAKER: Token = Token(usize::MAX - 1);
const PROBE: Token = Token(usize::MAX - 2);
/// Tokens of the clients' shadow sockets (relay baseline): `SHADOW + client index`.
const SHADOW: usize = usize::MAX / 2;
const FRAME: Duration = Duration::from_millis(FRAME_MS);
const RTP_CLOCK: u32 = 48_000;

/// Absolute instants of one run.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    pub start: Instant,
    pub steady_start: Instant,
    pub steady_end: Instant,
    pub hard_end: Instant,
}

impl Timeline {
    pub fn in_steady(&self, t: Instant) -> bool {
        t >= self.steady_start && t < self.steady_end
    }
}

/// Counters the main thread reads while the run goes (progress bar, time series).
#[derive(Default)]
pub struct LiveCounters {
    pub tx_packets: AtomicU64,
    /// Datagrams the `--relay-baseline` relay forwarded to the clients' shadow sockets.
    pub relay_rx: AtomicU64,
    pub rx_packets: AtomicU64,
    pub joined: AtomicU64,
    pub errors: AtomicU64,
}

pub struct WorkerConfig {
    pub index: usize,
    pub topology: Topology,
    pub plan: Arc<Plan>,
    /// Rooms (plan indices) this worker owns.
    pub rooms: Vec<usize>,
    pub timeline: Timeline,
    pub impair: Impairment,
    pub seed: u64,
    pub table: Arc<FrameTable>,
    pub target: Option<Arc<dyn SfuTarget>>,
    pub echo: Option<SocketAddr>,
    /// `--relay-baseline`: copy every RTP datagram sent to the SFU to this relay.
    pub relay: Option<SocketAddr>,
    pub late_after: Duration,
    pub join_timeout: Duration,
    pub live: Arc<LiveCounters>,
    pub tid: Arc<AtomicU32>,
}

/// What a worker measured.
#[derive(Default)]
pub struct WorkerReport {
    pub join: DurationHistogram,
    pub join_connect: DurationHistogram,
    pub join_answer: DurationHistogram,
    pub latency: DurationHistogram,
    pub echo: DurationHistogram,
    pub loss: LossTotals,
    pub errors: BTreeMap<String, u64>,
    pub latency_unmatched: u64,
    pub slot_map_stale: u64,
    pub slot_map_updates: u64,
    pub clients: Vec<ClientWindow>,
    pub impair_up: ImpairCounters,
    pub impair_down: ImpairCounters,
    /// This thread's CPU over the steady window.
    pub cpu: Option<CpuDelta>,
    pub participants: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Join,
    JoinDeadline,
    Rtc(u16),
    Frame,
}

struct Outbound {
    client: usize,
    dest: SocketAddr,
    bytes: Vec<u8>,
}

struct Inbound {
    client: usize,
    src: SocketAddr,
    bytes: Vec<u8>,
}

/// A non-blocking UDP socket on a free loopback port, registered readable as `token`.
fn loopback_socket(poll: &Poll, token: Token) -> std::io::Result<mio::net::UdpSocket> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    s.set_nonblocking(true)?;
    let mut s = mio::net::UdpSocket::from_std(s);
    poll.registry()
        .register(&mut s, token, Interest::READABLE)?;
    Ok(s)
}

pub struct Worker {
    cfg: WorkerConfig,
    poll: Poll,
    waker: Arc<Waker>,
    crypto: Arc<CryptoProvider>,
    clients: Vec<SimClient>,
    /// Local client indices per owned room.
    room_members: HashMap<usize, Vec<usize>>,
    user_local: HashMap<UserId, usize>,
    heap: BinaryHeap<Reverse<(Instant, usize, Due)>>,
    up: ImpairStage<Outbound>,
    down: ImpairStage<Inbound>,
    probe_up: ImpairStage<Vec<u8>>,
    probe_down: ImpairStage<Vec<u8>>,
    replies_tx: Sender<(usize, JoinResult)>,
    replies: Receiver<(usize, JoinResult)>,
    send_log: SendLog,
    probe_socket: Option<mio::net::UdpSocket>,
    probe_clock: ProbeClock,
    probe_seq: u64,
    next_probe: Instant,
    report: WorkerReport,
    buf: Vec<u8>,
    steady_started: bool,
    steady_ended: bool,
    cpu_at_start: Option<crate::procstat::CpuReading>,
    peers_total: usize,
    /// Whether the relay's copy of the next RTP datagram goes before the SFU's.
    relay_turn: bool,
}

impl Worker {
    pub fn new(cfg: WorkerConfig) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut clients = Vec::new();
        let mut room_members: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut user_local = HashMap::new();
        for &r in &cfg.rooms {
            for &cid in &cfg.plan.rooms[r].members {
                let p = &cfg.plan.clients[cid];
                let local = clients.len();
                clients.push(SimClient::new(
                    cid,
                    r,
                    p.speaker,
                    p.expects_media,
                    p.user,
                    p.frame_offset,
                ));
                room_members.entry(r).or_default().push(local);
                user_local.insert(p.user, local);
            }
        }
        let mut heap = BinaryHeap::new();
        for (i, c) in clients.iter().enumerate() {
            let at = cfg.timeline.start + cfg.plan.clients[c.plan_id].join_offset;
            heap.push(Reverse((at, i, Due::Join)));
        }
        let dir = cfg.impair.per_direction();
        let seed = cfg.seed ^ ((cfg.index as u64 + 1) * 0x9e37_79b9_7f4a_7c15);
        let probe_socket = match cfg.echo {
            Some(_) => Some(loopback_socket(&poll, PROBE)?),
            None => None,
        };
        let (replies_tx, replies) = channel();
        let send_log = SendLog::new(cfg.timeline.start, cfg.table.len(), clients.len());
        let n = clients.len();
        Ok(Self {
            next_probe: cfg.timeline.start,
            poll,
            waker,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            clients,
            room_members,
            user_local,
            heap,
            up: ImpairStage::new(dir, seed ^ 1),
            down: ImpairStage::new(dir, seed ^ 2),
            probe_up: ImpairStage::new(dir, seed ^ 3),
            probe_down: ImpairStage::new(dir, seed ^ 4),
            replies_tx,
            replies,
            send_log,
            probe_socket,
            probe_clock: ProbeClock::default(),
            probe_seq: 0,
            report: WorkerReport {
                participants: n,
                ..Default::default()
            },
            buf: vec![0u8; 2048],
            steady_started: false,
            steady_ended: false,
            cpu_at_start: None,
            peers_total: 0,
            relay_turn: false,
            cfg,
        })
    }

    fn error(&mut self, kind: &str) {
        *self.report.errors.entry(kind.to_owned()).or_default() += 1;
        self.cfg.live.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn run(mut self) -> WorkerReport {
        self.cfg.tid.store(current_tid(), Ordering::Relaxed);
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if now >= self.cfg.timeline.hard_end {
                break;
            }
            self.marks(now);
            if self.steady_ended {
                break;
            }
            while let Ok((client, result)) = self.replies.try_recv() {
                self.on_answer(client, result);
            }
            self.run_due(now);
            self.release_impaired(now);
            self.probe_tick(now);

            let mut next = self.cfg.timeline.hard_end.min(self.cfg.timeline.steady_end);
            if !self.steady_started {
                next = next.min(self.cfg.timeline.steady_start);
            }
            for t in [
                self.heap.peek().map(|Reverse((t, _, _))| *t),
                self.up.next_due(),
                self.down.next_due(),
                self.probe_up.next_due(),
                self.probe_down.next_due(),
                self.probe_socket.as_ref().map(|_| self.next_probe),
            ]
            .into_iter()
            .flatten()
            {
                next = next.min(t);
            }
            let timeout = next.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.error("poll");
                    break;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    PROBE => self.read_probe(),
                    Token(t) if t >= SHADOW => self.read_shadow(t - SHADOW),
                    Token(i) => self.read_client(i),
                }
            }
        }
        self.finish()
    }

    /// Snapshots at the edges of the steady window.
    fn marks(&mut self, now: Instant) {
        let tl = self.cfg.timeline;
        if !self.steady_started && now >= tl.steady_start {
            self.steady_started = true;
            for c in &mut self.clients {
                c.traffic_at_steady_start = Some(c.traffic);
            }
            self.cpu_at_start = ProcTarget::own_thread(current_tid()).sample().ok();
        }
        if !self.steady_ended && now >= tl.steady_end {
            self.steady_ended = true;
            for c in &mut self.clients {
                c.traffic_at_steady_end = Some(c.traffic);
            }
            if let (Some(a), Ok(b)) = (
                self.cpu_at_start,
                ProcTarget::own_thread(current_tid()).sample(),
            ) {
                self.report.cpu = Some(CpuDelta::between(&a, &b));
            }
        }
    }

    fn run_due(&mut self, now: Instant) {
        while let Some(Reverse((at, i, due))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            match due {
                Due::Join => self.start_join(now, i),
                Due::JoinDeadline => {
                    let c = &self.clients[i];
                    let done = if c.expects_media {
                        c.times.first_media.is_some()
                    } else {
                        c.times.connected.is_some()
                    };
                    if !done && c.phase != Phase::Failed {
                        self.clients[i].phase = Phase::Failed;
                        self.error("join_timeout");
                    }
                }
                Due::Rtc(p) => {
                    let p = usize::from(p);
                    let Some(peer) = self.clients[i].peers.get_mut(p) else {
                        continue;
                    };
                    if peer.scheduled != Some(at) {
                        continue; // stale entry
                    }
                    peer.scheduled = None;
                    if peer.rtc.handle_input(Input::Timeout(now)).is_err() {
                        self.error("rtc_timeout");
                    }
                    self.drain(now, i, p);
                }
                Due::Frame => {
                    if self.clients[i].publisher.map(|p| p.next_frame) == Some(at) {
                        self.send_frame(now, i);
                    }
                }
            }
        }
        // Lazy deletion leaves stale entries; rebuild when they dominate.
        if self.heap.len() > 8 * (self.peers_total + self.clients.len()) + 4096 {
            self.rebuild_heap();
        }
    }

    fn rebuild_heap(&mut self) {
        let keep: Vec<_> = self
            .heap
            .drain()
            .filter(|Reverse((at, i, due))| match due {
                Due::Rtc(p) => self.clients[*i]
                    .peers
                    .get(usize::from(*p))
                    .is_some_and(|peer| peer.scheduled == Some(*at)),
                Due::Frame => self.clients[*i].publisher.map(|p| p.next_frame) == Some(*at),
                _ => true,
            })
            .collect();
        self.heap.extend(keep);
    }

    fn schedule_rtc(&mut self, i: usize, p: usize, at: Instant) {
        let peer = &mut self.clients[i].peers[p];
        peer.deadline = at;
        if peer.scheduled != Some(at) {
            peer.scheduled = Some(at);
            self.heap.push(Reverse((at, i, Due::Rtc(p as u16))));
        }
    }

    fn new_rtc(&self, now: Instant, local: SocketAddr) -> Option<Rtc> {
        let mut rtc = haven_rtc_config()
            .set_crypto_provider(self.crypto.clone())
            .build(now);
        let cand = Candidate::host(local, "udp").ok()?;
        rtc.add_local_candidate(cand);
        Some(rtc)
    }

    fn open_socket(&mut self, i: usize) -> Option<SocketAddr> {
        let s = loopback_socket(&self.poll, Token(i)).ok()?;
        let local = s.local_addr().ok()?;
        let c = &mut self.clients[i];
        c.socket = Some(s);
        c.local = Some(local);
        if let Some(relay) = self.cfg.relay {
            let room = c.room;
            let s = loopback_socket(&self.poll, Token(SHADOW + i)).ok()?;
            s.send_to(&crate::relay::join_datagram(room), relay).ok()?;
            self.clients[i].shadow = Some(s);
        }
        Some(local)
    }

    /// Read and count what the relay forwarded to client `i`'s shadow socket.
    fn read_shadow(&mut self, i: usize) {
        let Some(s) = self.clients.get(i).and_then(|c| c.shadow.as_ref()) else {
            return;
        };
        loop {
            match s.recv_from(&mut self.buf) {
                Ok(_) => {
                    self.cfg.live.relay_rx.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn start_join(&mut self, now: Instant, i: usize) {
        if self.clients[i].phase != Phase::Waiting {
            return;
        }
        let Some(local) = self.open_socket(i) else {
            self.clients[i].phase = Phase::Failed;
            self.error("socket");
            return;
        };
        self.clients[i].times.requested = Some(now);
        self.heap
            .push(Reverse((now + self.cfg.join_timeout, i, Due::JoinDeadline)));
        match self.cfg.topology {
            Topology::Sfu => self.join_sfu(now, i, local),
            Topology::Mesh => self.join_mesh(now, i, local),
        }
    }

    fn join_sfu(&mut self, now: Instant, i: usize, local: SocketAddr) {
        let Some(target) = self.cfg.target.clone() else {
            self.error("no_target");
            return;
        };
        let Some(mut rtc) = self.new_rtc(now, local) else {
            self.error("rtc");
            return;
        };
        let room = &self.cfg.plan.rooms[self.clients[i].room];
        let plan = &self.cfg.plan.clients[self.clients[i].plan_id];
        let mut api = rtc.sdp_api();
        // Every member may speak, so every offer has a send track (like the real client).
        let send = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let slots: Vec<_> = (0..room.slots)
            .map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
            .collect();
        let channel = api.add_channel(DATA_CHANNEL_LABEL.to_owned());
        let Some((offer, pending)) = api.apply() else {
            self.error("offer");
            return;
        };
        let req = JoinRequest {
            room: room.id,
            slots: room.slots,
            user: plan.user,
            session: plan.session,
            display_name: plan.name.clone(),
            can_speak: true,
            sdp: offer.to_sdp_string(),
        };
        let mut peer = Peer::new(rtc, now);
        peer.send_mid = Some(send);
        peer.recv_mids = slots;
        peer.channel = Some(channel);
        peer.pending = Some(pending);
        let c = &mut self.clients[i];
        c.slot_users = vec![None; peer.recv_mids.len()];
        c.peers.push(peer);
        c.phase = Phase::Offered;
        self.peers_total += 1;
        target.join(
            req,
            ReplyTo {
                client: i,
                tx: self.replies_tx.clone(),
                waker: self.waker.clone(),
            },
        );
    }

    fn on_answer(&mut self, i: usize, result: JoinResult) {
        let now = Instant::now();
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        if c.phase != Phase::Offered {
            return;
        }
        let sdp = match result {
            Ok(sdp) => sdp,
            Err(e) => {
                c.phase = Phase::Failed;
                self.error(&format!("join_refused_{}", e.kind.to_lowercase()));
                return;
            }
        };
        let Some(peer) = c.peers.get_mut(0) else {
            return;
        };
        let accepted = match (SdpAnswer::from_sdp_string(&sdp), peer.pending.take()) {
            (Ok(answer), Some(pending)) => {
                peer.rtc.sdp_api().accept_answer(pending, answer).is_ok()
            }
            _ => false,
        };
        if !accepted {
            c.phase = Phase::Failed;
            self.error("bad_answer");
            return;
        }
        c.phase = Phase::Answered;
        c.times.answered = Some(now);
        if let Some(req) = c.times.requested {
            self.report.join_answer.record(now - req);
        }
        self.drain(now, i, 0);
    }

    /// Mesh: connect to every member that joined before, negotiating in-process.
    fn join_mesh(&mut self, now: Instant, i: usize, local: SocketAddr) {
        let room = self.clients[i].room;
        let earlier: Vec<usize> = self.room_members[&room]
            .iter()
            .copied()
            .filter(|&j| j != i && self.clients[j].local.is_some())
            .collect();
        self.clients[i].phase = Phase::Answered;
        for j in earlier {
            let Some(j_local) = self.clients[j].local else {
                continue;
            };
            match self.pair(now, local, j_local) {
                Some((a, b)) => {
                    let pi = self.add_peer(i, a, j, j_local);
                    let pj = self.add_peer(j, b, i, local);
                    self.drain(now, i, pi);
                    self.drain(now, j, pj);
                }
                None => self.error("mesh_negotiation"),
            }
        }
    }

    fn pair(&self, now: Instant, a_addr: SocketAddr, b_addr: SocketAddr) -> Option<(Peer, Peer)> {
        let mut a = self.new_rtc(now, a_addr)?;
        let mut b = self.new_rtc(now, b_addr)?;
        let mut api = a.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply()?;
        let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).ok()?;
        let answer = b.sdp_api().accept_offer(offer).ok()?;
        a.sdp_api().accept_answer(pending, answer).ok()?;
        let mut pa = Peer::new(a, now);
        let mut pb = Peer::new(b, now);
        for p in [&mut pa, &mut pb] {
            p.send_mid = Some(mid);
            p.recv_mids = vec![mid];
        }
        Some((pa, pb))
    }

    fn add_peer(
        &mut self,
        i: usize,
        mut peer: Peer,
        remote: usize,
        remote_addr: SocketAddr,
    ) -> usize {
        peer.remote_client = Some(remote);
        let c = &mut self.clients[i];
        c.peers.push(peer);
        let p = c.peers.len() - 1;
        c.by_remote.insert(remote_addr, p);
        self.peers_total += 1;
        p
    }

    /// Drain one `Rtc` until it wants to be woken in the future.
    fn drain(&mut self, now: Instant, i: usize, p: usize) {
        loop {
            let out = match self.clients[i].peers.get_mut(p) {
                Some(peer) => peer.rtc.poll_output(),
                None => return,
            };
            match out {
                Ok(Output::Timeout(t)) => {
                    // str0m may ask to be woken "now" again; never schedule in the past.
                    self.schedule_rtc(i, p, t.max(now));
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let o = Outbound {
                        client: i,
                        dest: t.destination,
                        bytes: t.contents.into(),
                    };
                    if let Some(o) = self.up.submit(now, o) {
                        self.send_datagram(o);
                    }
                }
                Ok(Output::Event(e)) => self.on_event(now, i, p, e),
                Err(_) => {
                    self.error("rtc_output");
                    self.schedule_rtc(i, p, now + Duration::from_millis(10));
                    return;
                }
            }
        }
    }

    fn send_datagram(&mut self, o: Outbound) {
        let c = &mut self.clients[o.client];
        let Some(s) = c.socket.as_ref() else {
            return;
        };
        // The relay baseline gets the same RTP at the same moment, first every other time:
        // whichever of the two is sent to second tends to find its core taken by the first
        // and wakes later, to more packets at once. With the SFU always first it slept
        // ~345 times a second against the relay's ~190 at 100 participants; the other way
        // round, 260 against 210.
        let shadow = match (self.cfg.relay, c.shadow.as_ref()) {
            (Some(relay), Some(shadow)) if crate::relay::is_rtp(&o.bytes) => Some((shadow, relay)),
            _ => None,
        };
        self.relay_turn = !self.relay_turn;
        let relay_first = self.relay_turn;
        if let (true, Some((shadow, relay))) = (relay_first, shadow) {
            let _ = shadow.send_to(&o.bytes, relay);
        }
        match s.send_to(&o.bytes, o.dest) {
            Ok(n) => {
                c.traffic.tx_packets += 1;
                c.traffic.tx_bytes += n as u64;
                self.cfg.live.tx_packets.fetch_add(1, Ordering::Relaxed);
                if let (false, Some((shadow, relay))) = (relay_first, shadow) {
                    let _ = shadow.send_to(&o.bytes, relay);
                }
            }
            Err(_) => self.error("send"),
        }
    }

    fn read_client(&mut self, i: usize) {
        loop {
            let Some(s) = self.clients.get(i).and_then(|c| c.socket.as_ref()) else {
                return;
            };
            match s.recv_from(&mut self.buf) {
                Ok((n, src)) => {
                    let now = Instant::now();
                    let c = &mut self.clients[i];
                    c.traffic.rx_packets += 1;
                    c.traffic.rx_bytes += n as u64;
                    self.cfg.live.rx_packets.fetch_add(1, Ordering::Relaxed);
                    let d = Inbound {
                        client: i,
                        src,
                        bytes: self.buf[..n].to_vec(),
                    };
                    if let Some(d) = self.down.submit(now, d) {
                        self.deliver(now, d);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // ICMP port unreachable after a peer left, etc.
                    self.error("recv");
                    return;
                }
            }
        }
    }

    fn deliver(&mut self, now: Instant, d: Inbound) {
        let c = &mut self.clients[d.client];
        let Some(local) = c.local else {
            return;
        };
        let p = match self.cfg.topology {
            Topology::Sfu => 0,
            Topology::Mesh => match c.by_remote.get(&d.src) {
                Some(&p) => p,
                None => return,
            },
        };
        let Some(peer) = c.peers.get_mut(p) else {
            return;
        };
        let Ok(r) = Receive::new(Protocol::Udp, d.src, local, &d.bytes) else {
            self.error("unparsable_datagram");
            return;
        };
        if peer.rtc.handle_input(Input::Receive(now, r)).is_err() {
            self.error("rtc_input");
        }
        self.drain(now, d.client, p);
    }

    fn release_impaired(&mut self, now: Instant) {
        while let Some(o) = self.up.pop_due(now) {
            self.send_datagram(o);
        }
        while let Some(d) = self.down.pop_due(now) {
            self.deliver(now, d);
        }
        while let Some(b) = self.probe_up.pop_due(now) {
            self.send_probe_bytes(&b);
        }
        while let Some(b) = self.probe_down.pop_due(now) {
            self.on_probe(now, &b);
        }
    }

    fn on_event(&mut self, now: Instant, i: usize, p: usize, e: Event) {
        match e {
            Event::Connected => {
                let c = &mut self.clients[i];
                c.peers[p].connected = true;
                if c.times.connected.is_none() {
                    c.times.connected = Some(now);
                    if let Some(req) = c.times.requested {
                        self.report.join_connect.record(now - req);
                    }
                    if !c.expects_media {
                        self.cfg.live.joined.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if c.speaker && c.publisher.is_none() {
                    c.start_publishing(now);
                    if let Some(pb) = c.publisher {
                        self.heap.push(Reverse((pb.next_frame, i, Due::Frame)));
                    }
                }
            }
            Event::ChannelData(d) => {
                self.clients[i].on_channel_message(p, &d.data);
            }
            Event::RtpPacket(pkt) => self.on_rtp(now, i, p, pkt),
            _ => {}
        }
    }

    fn on_rtp(&mut self, now: Instant, i: usize, p: usize, pkt: RtpPacket) {
        let topology = self.cfg.topology;
        let late_after = self.cfg.late_after;
        let c = &mut self.clients[i];
        let ssrc = pkt.header.ssrc;
        let stream = match c.peers[p].ssrc_stream.get(&ssrc) {
            Some(&s) => s,
            None => {
                let peer = &mut c.peers[p];
                let mid = peer.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                let slot = match topology {
                    Topology::Sfu => mid.and_then(|m| peer.recv_mids.iter().position(|x| *x == m)),
                    Topology::Mesh => Some(0),
                };
                let Some(slot) = slot else {
                    self.error("unknown_stream");
                    return;
                };
                c.streams.push(RecvStream {
                    peer: p,
                    slot,
                    stats: StreamStats::new(RTP_CLOCK, late_after),
                });
                let s = c.streams.len() - 1;
                c.peers[p].ssrc_stream.insert(ssrc, s);
                s
            }
        };
        c.traffic.rx_rtp += 1;
        if c.times.first_media.is_none() {
            c.times.first_media = Some(now);
            if let Some(req) = c.times.requested {
                self.report.join.record(now - req);
            }
            self.cfg.live.joined.fetch_add(1, Ordering::Relaxed);
        }
        if !self.cfg.timeline.in_steady(now) {
            return;
        }
        let since = now.saturating_duration_since(self.cfg.timeline.start);
        let st = &mut c.streams[stream];
        st.stats
            .on_packet(pkt.header.sequence_number, pkt.header.timestamp, since);
        let slot = st.slot;
        let expected = match topology {
            Topology::Sfu => c
                .slot_users
                .get(slot)
                .copied()
                .flatten()
                .and_then(|u| self.user_local.get(&u).copied()),
            Topology::Mesh => c.peers[p].remote_client,
        };
        let positions = self.cfg.table.positions_of(&pkt.payload);
        let others: &[usize] = self.room_members.get(&c.room).map_or(&[], |v| v.as_slice());
        match self.send_log.match_packet(expected, others, positions, now) {
            Match::Expected(l) => self.report.latency.record(l),
            Match::Other { latency, .. } => {
                self.report.latency.record(latency);
                self.report.slot_map_stale += 1;
            }
            Match::Unmatched => self.report.latency_unmatched += 1,
        }
    }

    fn send_frame(&mut self, now: Instant, i: usize) {
        let table = self.cfg.table.clone();
        let c = &mut self.clients[i];
        let Some(mut pb) = c.publisher else {
            return;
        };
        let pos = pb.pos;
        let frame = table.frame(pos);
        pb.pos += 1;
        pb.next_frame += FRAME;
        let ts = pb.ts;
        pb.ts = pb.ts.wrapping_add(FRAME_SAMPLES as u32);
        if !frame.transmit {
            pb.spurt_start = true;
            c.publisher = Some(pb);
            self.heap.push(Reverse((pb.next_frame, i, Due::Frame)));
            return;
        }
        let marker = pb.spurt_start;
        pb.spurt_start = false;
        let seq = pb.seq;
        pb.seq += 1;
        c.publisher = Some(pb);
        self.heap.push(Reverse((pb.next_frame, i, Due::Frame)));
        let exts = ExtensionValues {
            audio_level: Some(-(frame.level.min(127) as i8)),
            voice_activity: Some(frame.voice),
            ..Default::default()
        };
        self.send_log.record(i, pos, now);
        for p in 0..c.peers.len() {
            let peer = &mut c.peers[p];
            let (Some(mid), true) = (peer.send_mid, peer.connected) else {
                continue;
            };
            let mut api = peer.rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(mid, None) else {
                continue;
            };
            stream.write_rtp(
                RtpWrite::new(OPUS_PT, seq.into(), ts, now, frame.payload.clone())
                    .marker(marker)
                    .ext_vals(exts.clone()),
            );
            c.traffic.tx_rtp += 1;
        }
        for p in 0..self.clients[i].peers.len() {
            if self.clients[i].peers[p].connected {
                self.drain(now, i, p);
            }
        }
    }

    fn probe_tick(&mut self, now: Instant) {
        if self.probe_socket.is_none() || now < self.next_probe {
            return;
        }
        // Probes only around the measured window (plus a little before, to warm up).
        let tl = self.cfg.timeline;
        self.next_probe += FRAME;
        if self.next_probe < now {
            self.next_probe = now + FRAME;
        }
        if now + Duration::from_secs(1) < tl.steady_start {
            return;
        }
        self.probe_seq += 1;
        let bytes = probe(self.probe_seq);
        self.probe_clock.sent(self.probe_seq, now);
        if let Some(b) = self.probe_up.submit(now, bytes) {
            self.send_probe_bytes(&b);
        }
    }

    fn send_probe_bytes(&mut self, b: &[u8]) {
        if let (Some(s), Some(dest)) = (self.probe_socket.as_ref(), self.cfg.echo) {
            if s.send_to(b, dest).is_err() {
                self.error("probe_send");
            }
        }
    }

    fn read_probe(&mut self) {
        loop {
            let Some(s) = self.probe_socket.as_ref() else {
                return;
            };
            match s.recv_from(&mut self.buf) {
                Ok((n, _)) => {
                    let now = Instant::now();
                    let b = self.buf[..n].to_vec();
                    if let Some(b) = self.probe_down.submit(now, b) {
                        self.on_probe(now, &b);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn on_probe(&mut self, now: Instant, b: &[u8]) {
        let Some(seq) = parse_probe(b) else {
            return;
        };
        if let Some(rtt) = self.probe_clock.returned(seq, now) {
            if self.cfg.timeline.in_steady(now) {
                self.report.echo.record(rtt);
            }
        }
    }

    fn finish(mut self) -> WorkerReport {
        let window = self
            .cfg
            .timeline
            .steady_end
            .saturating_duration_since(self.cfg.timeline.steady_start);
        let now = Instant::now();
        for i in 0..self.clients.len() {
            let c = &self.clients[i];
            if c.phase == Phase::Waiting {
                self.error("never_joined");
            } else if c.expects_media && c.times.first_media.is_none() && c.phase != Phase::Failed {
                self.error("join_timeout");
            }
            let c = &self.clients[i];
            for s in &c.streams {
                self.report.loss.add(&s.stats);
            }
            if let Some(w) = c.window(window) {
                self.report.clients.push(w);
            }
            self.report.slot_map_updates += c.slot_map_updates;
        }
        // Say goodbye (DTLS close alert) so a real SFU frees the participants at once.
        for i in 0..self.clients.len() {
            for p in 0..self.clients[i].peers.len() {
                self.clients[i].peers[p].rtc.disconnect();
                self.drain(now, i, p);
            }
            self.clients[i].phase = Phase::Left;
        }
        self.report.impair_up = self.up.counters;
        self.report.impair_down = self.down.counters;
        self.report
    }
}

/// Spread rooms over `threads` workers, biggest rooms first (greedy by participants).
pub fn assign_rooms(plan: &Plan, threads: usize) -> Vec<Vec<usize>> {
    let threads = threads.max(1);
    let mut order: Vec<usize> = (0..plan.rooms.len()).collect();
    order.sort_by_key(|&r| Reverse(plan.rooms[r].members.len()));
    let mut load = vec![0usize; threads];
    let mut out = vec![Vec::new(); threads];
    for r in order {
        let w = (0..threads).min_by_key(|&w| load[w]).unwrap_or(0);
        load[w] += plan.rooms[r].members.len();
        out[w].push(r);
    }
    out
}
