//! Real str0m client peers on real loopback UDP sockets, as a browser or the desktop client
//! would join: full ICE (controlling) against the SFU's ICE-lite, DTLS-SRTP, a publish
//! track, receive slots and the `haven` data channel. A [`PeerGroup`] drives many peers from
//! one thread with `poll` over their sockets, so a bench with dozens of peers stays cheap.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use haven_proto::datachannel::{SfuToClient, DATA_CHANNEL_LABEL};
use haven_sfu::media::{haven_rtc_config, OPUS_PT};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

const MAGIC: &[u8; 4] = b"HVN1";
pub const FRAME: Duration = Duration::from_millis(20);
const PAYLOAD_LEN: usize = 80;

/// What a peer observed, readable from other threads while it runs.
#[derive(Debug, Default)]
pub struct PeerView {
    pub connected: AtomicBool,
    pub channel_open: AtomicBool,
    /// Whether the peer is sending speech now.
    pub talking: AtomicBool,
    pub sent: AtomicU64,
    pub rtp_received: AtomicU64,
    /// Packets received per sending peer index.
    pub heard: Mutex<BTreeMap<u32, u64>>,
    /// Data channel messages received.
    pub messages: Mutex<Vec<SfuToClient>>,
    pub closed: AtomicBool,
}

impl PeerView {
    pub fn heard_from(&self, index: u32) -> u64 {
        self.heard.lock().unwrap().get(&index).copied().unwrap_or(0)
    }
}

pub struct UdpPeer {
    pub index: u32,
    pub socket: UdpSocket,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    publish_mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    deadline: Instant,
    next_send: Instant,
    seq: u64,
    ts: u32,
    pub view: Arc<PeerView>,
}

impl UdpPeer {
    /// A peer on a fresh loopback socket and its SDP offer (a send track if `publish`,
    /// `slots` receive-only m-lines, the data channel).
    pub fn new(index: u32, publish: bool, slots: usize) -> (Self, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        let addr = socket.local_addr().expect("addr");
        let now = Instant::now();
        let mut rtc = haven_rtc_config().build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut change = rtc.sdp_api();
        let publish_mid = publish
            .then(|| change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        for _ in 0..slots {
            change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        change.add_channel(DATA_CHANNEL_LABEL.to_owned());
        let (offer, pending) = change.apply().expect("offer");
        let peer = Self {
            index,
            socket,
            addr,
            rtc,
            publish_mid,
            pending: Some(pending),
            deadline: now,
            next_send: now,
            seq: 0,
            ts: 0,
            view: Arc::new(PeerView::default()),
        };
        (peer, offer.to_sdp_string())
    }

    pub fn accept_answer(&mut self, sdp: &str) {
        let pending = self.pending.take().expect("pending offer");
        let answer = SdpAnswer::from_sdp_string(sdp).expect("answer parses");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.deadline = t.max(now + Duration::from_micros(200));
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(_) => {
                    self.view.closed.store(true, Ordering::Relaxed);
                    self.deadline = now + Duration::from_millis(50);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        let v = &self.view;
        match e {
            Event::Connected => v.connected.store(true, Ordering::Relaxed),
            Event::ChannelOpen(..) => v.channel_open.store(true, Ordering::Relaxed),
            Event::ChannelData(d) => {
                if let Ok(m) = SfuToClient::decode(&d.data) {
                    v.messages.lock().unwrap().push(m);
                }
            }
            Event::RtpPacket(p) => {
                v.rtp_received.fetch_add(1, Ordering::Relaxed);
                if let Some(speaker) = parse_payload(&p.payload) {
                    *v.heard.lock().unwrap().entry(speaker).or_default() += 1;
                }
            }
            Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
                v.closed.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn send_audio(&mut self, now: Instant) {
        self.next_send += FRAME;
        if self.next_send < now {
            self.next_send = now + FRAME;
        }
        if !self.view.talking.load(Ordering::Relaxed)
            || !self.view.connected.load(Ordering::Relaxed)
        {
            return;
        }
        let Some(mid) = self.publish_mid else {
            return;
        };
        self.seq += 1;
        self.ts = self.ts.wrapping_add(960);
        let exts = ExtensionValues {
            audio_level: Some(-30),
            voice_activity: Some(true),
            ..Default::default()
        };
        let mut payload = Vec::with_capacity(PAYLOAD_LEN);
        payload.extend_from_slice(MAGIC);
        payload.extend_from_slice(&self.index.to_be_bytes());
        payload.extend_from_slice(&self.seq.to_be_bytes());
        payload.resize(PAYLOAD_LEN, 0xaa);
        let (seq, ts) = (self.seq, self.ts);
        let mut api = self.rtc.direct_api();
        if let Some(stream) = api.stream_tx_by_mid(mid, None) {
            stream.write_rtp(RtpWrite::new(OPUS_PT, seq.into(), ts, now, payload).ext_vals(exts));
            self.view.sent.fetch_add(1, Ordering::Relaxed);
        }
        self.drain(now);
    }

    /// Read whatever is queued on the socket.
    fn receive(&mut self, buf: &mut [u8]) {
        loop {
            let (n, source) = match self.socket.recv_from(buf) {
                Ok(r) => r,
                Err(_) => return,
            };
            let now = Instant::now();
            if let Ok(r) = Receive::new(Protocol::Udp, source, self.addr, &buf[..n]) {
                let _ = self.rtc.handle_input(Input::Receive(now, r));
                self.drain(now);
            }
        }
    }
}

fn parse_payload(p: &[u8]) -> Option<u32> {
    if p.len() < 16 || &p[..4] != MAGIC {
        return None;
    }
    Some(u32::from_be_bytes(p[4..8].try_into().ok()?))
}

/// Peers driven by one thread until stopped.
pub struct PeerGroup {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerGroup {
    pub fn run(mut peers: Vec<UdpPeer>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("udp-peers".into())
            .spawn(move || {
                let now = Instant::now();
                for p in &mut peers {
                    p.drain(now);
                    p.next_send = now;
                }
                let mut buf = vec![0u8; 2048];
                let mut fds: Vec<libc::pollfd> = peers
                    .iter()
                    .map(|p| libc::pollfd {
                        fd: p.socket.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                while !flag.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let next = peers
                        .iter()
                        .flat_map(|p| [p.deadline, p.next_send])
                        .min()
                        .unwrap_or(now + Duration::from_millis(10));
                    let wait = next
                        .saturating_duration_since(now)
                        .min(Duration::from_millis(10));
                    let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
                    // SAFETY: `fds` is a valid array of pollfds for live sockets.
                    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
                    for (p, fd) in peers.iter_mut().zip(&mut fds) {
                        if fd.revents != 0 {
                            fd.revents = 0;
                            p.receive(&mut buf);
                        }
                    }
                    let now = Instant::now();
                    for p in &mut peers {
                        if p.deadline <= now {
                            if p.rtc.handle_input(Input::Timeout(now)).is_ok() {
                                p.drain(now);
                            } else {
                                p.deadline = now + Duration::from_millis(50);
                            }
                        }
                        if p.next_send <= now {
                            p.send_audio(now);
                        }
                    }
                }
                // Close politely so the SFU sees the DTLS close.
                for p in &mut peers {
                    p.rtc.disconnect();
                    p.drain(Instant::now());
                }
            })
            .expect("spawn peers");
        Self {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeerGroup {
    fn drop(&mut self) {
        self.stop();
    }
}
