//! An in-memory world for the SFU's end-to-end tests: real str0m client peers and one
//! `SfuEngine`, joined by a simulated network with seeded loss and jitter, driven by
//! simulated time. No sockets, no threads, no sleeps; str0m's own tests/common.rs does the
//! same for two peers.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use haven_proto::control::{Answer, Offer};
use haven_proto::datachannel::{SfuToClient, SfuToClientBody, DATA_CHANNEL_LABEL};
use haven_proto::grant::{GrantSigner, JoinGrant};
use haven_proto::{NodeId, RoomId, SessionId, UserId};
use haven_sfu::media::{haven_rtc_config, OPUS_PT};
use haven_sfu::{JoinError, SfuConfig, SfuEngine, SfuEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::crypto::CryptoProvider;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub const FRAME: Duration = Duration::from_millis(20);
const PAYLOAD_LEN: usize = 80;
const MAGIC: &[u8; 4] = b"HVN1";

/// Network impairments applied to every datagram in both directions.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub loss: f64,
    pub delay: Duration,
    pub jitter: Duration,
}

impl Impairment {
    pub fn clean() -> Self {
        Self {
            loss: 0.0,
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
        }
    }
}

/// What a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Talk {
    /// Nothing at all.
    Quiet,
    /// A speech packet every 20 ms at this -dBov level.
    Speech(u8),
    /// Opus DTX: a silent packet every 400 ms.
    Dtx,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub slot: usize,
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// Index of the client that sent the packet (from the payload).
    pub speaker: usize,
    /// That client's own sequence counter.
    pub speaker_seq: u64,
    pub level: Option<i8>,
}

pub struct Client {
    pub index: usize,
    pub user: UserId,
    pub session: SessionId,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub publish_mid: Option<Mid>,
    pub slot_mids: Vec<Mid>,
    pub channel: Option<ChannelId>,
    pub channel_open: bool,
    pub connected: bool,
    /// Times the client's own ICE agent went to disconnected (its checks went unanswered).
    pub ice_disconnects: u32,
    pub deadline: Instant,
    pub talk: Talk,
    next_send: Option<Instant>,
    seq: u64,
    ts: u32,
    /// (time, own seq) of every packet written.
    pub sent: Vec<(Instant, u64)>,
    pub received: Vec<Received>,
    pub messages: Vec<SfuToClient>,
    ssrc_slot: HashMap<Ssrc, usize>,
    pending: Option<SdpPendingOffer>,
}

struct Datagram {
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

/// The simulated network: a time-ordered queue of datagrams in flight.
struct Net {
    queue: BTreeMap<(Instant, u64), Datagram>,
    seq: u64,
    rng: StdRng,
    impairment: Impairment,
}

impl Net {
    fn send(&mut self, now: Instant, d: Datagram) {
        if self.rng.gen_bool(self.impairment.loss.clamp(0.0, 1.0)) {
            return;
        }
        let jitter_us = self.impairment.jitter.as_micros() as u64;
        let extra = if jitter_us > 0 {
            self.rng.gen_range(0..=jitter_us)
        } else {
            0
        };
        let at = now + self.impairment.delay + Duration::from_micros(extra);
        self.seq += 1;
        self.queue.insert((at, self.seq), d);
    }

    fn next_at(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }
}

pub struct World {
    pub start: Instant,
    pub now: Instant,
    wall_start: SystemTime,
    pub sfu: SfuEngine,
    pub sfu_addr: SocketAddr,
    pub signer: GrantSigner,
    pub node: NodeId,
    pub room: RoomId,
    pub clients: Vec<Client>,
    pub events: Vec<(Instant, SfuEvent)>,
    net: Net,
    crypto: Arc<CryptoProvider>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Clients whose network is cut: everything to or from them is lost.
    cut: HashSet<SocketAddr>,
    /// A NAT in front of some clients: their address → the address the SFU sees.
    nat_out: HashMap<SocketAddr, SocketAddr>,
    nat_in: HashMap<SocketAddr, SocketAddr>,
    /// Time spent inside the SFU engine's calls (for the forwarding bench).
    pub sfu_busy: Duration,
    /// RTCP datagrams the SFU sent (RFC 5761 demux on the clear header).
    pub sfu_rtcp_out: usize,
    /// `handle_timeout` calls made on the SFU (each is a worker wake-up on a real node).
    pub sfu_timeouts: usize,
}

impl World {
    pub fn new(seed: u64, impairment: Impairment) -> Self {
        Self::with_config(seed, impairment, |_| {})
    }

    pub fn with_config(
        seed: u64,
        impairment: Impairment,
        tweak: impl FnOnce(&mut SfuConfig),
    ) -> Self {
        let node = NodeId::new("sfu-test");
        let sfu_addr: SocketAddr = (Ipv4Addr::new(10, 0, 0, 1), 3478).into();
        let mut cfg = SfuConfig::new(node.clone(), sfu_addr);
        tweak(&mut cfg);
        let signer = GrantSigner::generate().expect("key");
        let sfu = SfuEngine::new(cfg, signer.verifier()).expect("engine");
        let now = Instant::now();
        Self {
            start: now,
            now,
            wall_start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            sfu,
            sfu_addr,
            signer,
            node,
            room: RoomId::new_random(),
            clients: Vec::new(),
            events: Vec::new(),
            net: Net {
                queue: BTreeMap::new(),
                seq: 0,
                rng: StdRng::seed_from_u64(seed),
                impairment,
            },
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            by_addr: HashMap::new(),
            cut: HashSet::new(),
            nat_out: HashMap::new(),
            nat_in: HashMap::new(),
            sfu_busy: Duration::ZERO,
            sfu_rtcp_out: 0,
            sfu_timeouts: 0,
        }
    }

    /// Cut a client off the network (it vanishes without saying goodbye).
    pub fn cut(&mut self, index: usize) {
        self.cut.insert(self.clients[index].addr);
    }

    /// A NAT rebinding: from now on the client's datagrams reach the SFU from a new
    /// public port (the client does not know), and only that port leads back to it.
    pub fn rebind(&mut self, index: usize, port: u16) {
        let real = self.clients[index].addr;
        let public = SocketAddr::new(real.ip(), port);
        self.nat_in.retain(|_, r| *r != real);
        self.nat_out.insert(real, public);
        self.nat_in.insert(public, real);
    }

    pub fn wall(&self) -> SystemTime {
        self.wall_start + (self.now - self.start)
    }

    pub fn unix_now(&self) -> u64 {
        self.wall()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs()
    }

    pub fn set_impairment(&mut self, impairment: Impairment) {
        self.net.impairment = impairment;
    }

    pub fn grant(&self, user: UserId, session: SessionId, can_speak: bool) -> JoinGrant {
        JoinGrant {
            user,
            display_name: format!("user-{}", &user.to_string()[..8]),
            room: self.room,
            can_speak,
            session,
            node: self.node.clone(),
        }
    }

    pub fn mint(&self, grant: &JoinGrant) -> String {
        self.signer
            .mint(grant, self.unix_now(), Duration::from_secs(30))
            .expect("mint")
    }

    /// A new client peer with an offer for `slots` receive slots (and a send track if
    /// `offer_send`), not yet submitted.
    pub fn new_client(&mut self, offer_send: bool, slots: usize) -> (usize, String) {
        let index = self.clients.len();
        let addr: SocketAddr = (
            Ipv4Addr::new(10, 1, (index / 200) as u8, (index % 200) as u8 + 2),
            40_000 + index as u16,
        )
            .into();
        let mut rtc = haven_rtc_config()
            .set_crypto_provider(self.crypto.clone())
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut change = rtc.sdp_api();
        let publish_mid = offer_send
            .then(|| change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let slot_mids: Vec<Mid> = (0..slots)
            .map(|_| change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
            .collect();
        let channel = change.add_channel(DATA_CHANNEL_LABEL.to_owned());
        let (offer, pending) = change.apply().expect("offer");
        let client = Client {
            index,
            user: UserId::new_random(),
            session: SessionId::new_random(),
            addr,
            rtc,
            publish_mid,
            slot_mids,
            channel: Some(channel),
            channel_open: false,
            connected: false,
            ice_disconnects: 0,
            deadline: self.now,
            talk: Talk::Quiet,
            next_send: None,
            seq: 0,
            ts: 0,
            sent: Vec::new(),
            received: Vec::new(),
            messages: Vec::new(),
            ssrc_slot: HashMap::new(),
            pending: Some(pending),
        };
        self.by_addr.insert(addr, index);
        self.clients.push(client);
        (index, offer.to_sdp_string())
    }

    /// Submit a client's offer with `token` and apply the answer.
    pub fn submit(
        &mut self,
        index: usize,
        token: String,
        sdp: String,
    ) -> Result<Answer, JoinError> {
        let offer = Offer {
            room: self.room,
            grant: token,
            sdp,
            slots: None,
        };
        let now = self.now;
        let wall = self.wall();
        let t = Instant::now();
        let result = self.sfu.accept_offer(now, wall, &offer);
        self.sfu_busy += t.elapsed();
        if let Ok(answer) = &result {
            self.apply_answer(index, answer);
        }
        self.flush();
        result
    }

    /// Give a client the SFU's answer to its offer.
    pub fn apply_answer(&mut self, index: usize, answer: &Answer) {
        let now = self.now;
        let c = &mut self.clients[index];
        let pending = c.pending.take().expect("pending offer");
        let sdp = SdpAnswer::from_sdp_string(&answer.sdp).expect("answer parses");
        c.rtc
            .sdp_api()
            .accept_answer(pending, sdp)
            .expect("answer accepted");
        c.session = answer.session;
        drain_client(c, now, &mut self.net);
    }

    /// Join a client with a grant: `can_speak` in the grant, a send track only if it may.
    pub fn join(&mut self, can_speak: bool, slots: usize) -> usize {
        self.join_with(can_speak, can_speak, slots)
    }

    /// Join with explicit control over the send track (a client may offer one it may not use).
    pub fn join_with(&mut self, can_speak: bool, offer_send: bool, slots: usize) -> usize {
        let (index, sdp) = self.new_client(offer_send, slots);
        let (user, session) = (self.clients[index].user, self.clients[index].session);
        let token = self.mint(&self.grant(user, session, can_speak));
        self.submit(index, token, sdp).expect("join accepted");
        index
    }

    pub fn talk(&mut self, index: usize, talk: Talk) {
        let now = self.now;
        let c = &mut self.clients[index];
        if c.talk != talk {
            c.talk = talk;
            c.next_send = match talk {
                Talk::Quiet => None,
                _ => Some(now),
            };
        }
    }

    /// Run until every client is connected with its data channel open.
    pub fn connect_all(&mut self, limit: Duration) {
        let ok = self.run_until(limit, |w| {
            w.clients
                .iter()
                .filter(|c| c.pending.is_none())
                .all(|c| c.connected && c.channel_open)
        });
        assert!(ok, "clients did not connect within {limit:?}");
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until_time(end);
    }

    /// Run until `done` holds (checked between steps) or `limit` passes; true if it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            let step_end = (self.now + Duration::from_millis(5)).min(end);
            self.run_until_time(step_end);
        }
        done(self)
    }

    fn run_until_time(&mut self, end: Instant) {
        loop {
            let mut next = self.net.next_at();
            let mut consider = |t: Option<Instant>| {
                if let Some(t) = t {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            };
            consider(self.sfu.next_timeout());
            for c in &self.clients {
                consider(Some(c.deadline));
                consider(c.next_send);
            }
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.step();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
    }

    fn step(&mut self) {
        let now = self.now;
        while let Some(entry) = self.net.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let d = entry.remove();
            self.deliver(d);
        }
        if self.sfu.next_timeout().is_some_and(|t| t <= now) {
            let t = Instant::now();
            self.sfu_timeouts += 1;
            self.sfu.handle_timeout(now);
            self.sfu_busy += t.elapsed();
            self.flush();
        }
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.deadline <= now {
                if c.rtc.handle_input(Input::Timeout(now)).is_ok() {
                    drain_client(c, now, &mut self.net);
                } else {
                    c.deadline = now + Duration::from_millis(10);
                }
            }
            if c.next_send.is_some_and(|t| t <= now) {
                send_audio(c, now, &mut self.net);
            }
        }
    }

    fn deliver(&mut self, mut d: Datagram) {
        let now = self.now;
        if d.destination == self.sfu_addr {
            if let Some(public) = self.nat_out.get(&d.source) {
                d.source = *public;
            }
        } else if let Some(real) = self.nat_in.get(&d.destination) {
            d.destination = *real;
        } else if self.nat_out.contains_key(&d.destination) {
            return; // the old mapping is gone: nothing reaches the client there
        }
        if self.cut.contains(&d.source) || self.cut.contains(&d.destination) {
            return;
        }
        if d.destination == self.sfu_addr {
            let t = Instant::now();
            self.sfu
                .handle_udp(now, d.source, d.destination, &d.contents);
            self.sfu_busy += t.elapsed();
            self.flush();
            return;
        }
        let Some(&index) = self.by_addr.get(&d.destination) else {
            return;
        };
        let c = &mut self.clients[index];
        let Ok(receive) = Receive::new(Protocol::Udp, d.source, d.destination, &d.contents) else {
            return;
        };
        let _ = c.rtc.handle_input(Input::Receive(now, receive));
        drain_client(c, now, &mut self.net);
    }

    /// Move the SFU's output onto the network and into the event log.
    pub fn flush(&mut self) {
        let started = Instant::now();
        let mut out = Vec::new();
        while let Some(t) = self.sfu.poll_transmit() {
            out.push(t);
        }
        self.sfu_busy += started.elapsed();
        for t in out {
            let c = &t.contents;
            if c.len() >= 8 && c[0] >> 6 == 2 && (192..=223).contains(&c[1]) {
                self.sfu_rtcp_out += 1;
            }
            self.net.send(
                self.now,
                Datagram {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents,
                },
            );
        }
        while let Some(e) = self.sfu.poll_event() {
            self.events.push((self.now, e));
        }
    }

    /// Inject a raw datagram to the SFU from `source`, now.
    pub fn inject(&mut self, source: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        self.sfu.handle_udp(now, source, self.sfu_addr, bytes);
        self.flush();
    }

    /// Clients whose packets `listener` received since `since`.
    pub fn heard_by(&self, listener: usize, since: Instant) -> Vec<usize> {
        let mut v: Vec<usize> = self.clients[listener]
            .received
            .iter()
            .filter(|r| r.at >= since)
            .map(|r| r.speaker)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The last slot map `listener` was told: users per slot.
    pub fn slot_map(&self, listener: usize) -> Option<Vec<Option<UserId>>> {
        self.clients[listener]
            .messages
            .iter()
            .rev()
            .find_map(|m| match &m.body {
                SfuToClientBody::Slots { slots } => Some(slots.iter().map(|s| s.user).collect()),
                _ => None,
            })
    }

    pub fn index_of_user(&self, user: UserId) -> Option<usize> {
        self.clients.iter().position(|c| c.user == user)
    }
}

fn payload(speaker: usize, seq: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD_LEN);
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&(speaker as u32).to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(PAYLOAD_LEN, 0xaa);
    p
}

fn parse_payload(p: &[u8]) -> Option<(usize, u64)> {
    if p.len() < 16 || &p[..4] != MAGIC {
        return None;
    }
    let speaker = u32::from_be_bytes(p[4..8].try_into().ok()?) as usize;
    let seq = u64::from_be_bytes(p[8..16].try_into().ok()?);
    Some((speaker, seq))
}

fn send_audio(c: &mut Client, now: Instant, net: &mut Net) {
    let (dbov, voice, interval) = match c.talk {
        Talk::Quiet => {
            c.next_send = None;
            return;
        }
        Talk::Speech(d) => (d, true, FRAME),
        Talk::Dtx => (127, false, Duration::from_millis(400)),
    };
    c.next_send = Some(now + interval);
    let Some(mid) = c.publish_mid else {
        return;
    };
    c.seq += 1;
    c.ts = c.ts.wrapping_add(960 * (interval.as_millis() as u32 / 20));
    let exts = ExtensionValues {
        audio_level: Some(-(dbov.min(127) as i8)),
        voice_activity: Some(voice),
        ..Default::default()
    };
    let (seq, ts, index) = (c.seq, c.ts, c.index);
    let mut api = c.rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(mid, None) else {
        return;
    };
    stream
        .write_rtp(RtpWrite::new(OPUS_PT, seq.into(), ts, now, payload(index, seq)).ext_vals(exts));
    c.sent.push((now, seq));
    drain_client(c, now, net);
}

fn drain_client(c: &mut Client, now: Instant, net: &mut Net) {
    for _ in 0..4 {
        let timeout = loop {
            match c.rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => net.send(
                    now,
                    Datagram {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    },
                ),
                Ok(Output::Event(e)) => on_client_event(c, now, e),
                Err(_) => break now + Duration::from_millis(10),
            }
        };
        if timeout > now {
            c.deadline = timeout;
            return;
        }
        if c.rtc.handle_input(Input::Timeout(now)).is_err() {
            break;
        }
    }
    c.deadline = now + Duration::from_millis(1);
}

fn on_client_event(c: &mut Client, now: Instant, e: Event) {
    match e {
        Event::Connected => c.connected = true,
        Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
            c.ice_disconnects += 1;
        }
        Event::ChannelOpen(id, _) if Some(id) == c.channel => c.channel_open = true,
        Event::ChannelData(d) => {
            if let Ok(m) = SfuToClient::decode(&d.data) {
                c.messages.push(m);
            }
        }
        Event::RtpPacket(p) => {
            let ssrc = p.header.ssrc;
            let slot = match c.ssrc_slot.get(&ssrc) {
                Some(s) => *s,
                None => {
                    let mid = c.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                    let Some(slot) = mid.and_then(|m| c.slot_mids.iter().position(|x| *x == m))
                    else {
                        return;
                    };
                    c.ssrc_slot.insert(ssrc, slot);
                    slot
                }
            };
            let Some((speaker, speaker_seq)) = parse_payload(&p.payload) else {
                return;
            };
            c.received.push(Received {
                at: now,
                slot,
                seq: *p.seq_no,
                timestamp: p.header.timestamp,
                marker: p.header.marker,
                speaker,
                speaker_seq,
                level: p.header.ext_vals.audio_level,
            });
        }
        _ => {}
    }
}
