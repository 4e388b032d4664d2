//! CPU per forwarded packet of the real `haven-sfu` binary over loopback UDP, against a
//! plain recvmmsg/sendmmsg relay at the same packet rate, in one run (performance.md).
//!
//! SFU: `rooms × participants` real str0m peers (DTLS-SRTP, ICE, RTCP, data channel),
//! `speakers` per room talking 20 ms Opus-sized frames, joined through a stand-in signaling
//! control peer. Relay: the same rooms, fan-out, packet size and rate, forwarded by a child
//! process that reads and writes with the node's own batched socket code (no WebRTC). For
//! each, process CPU (utime + stime from /proc/<pid>/stat) over a steady window ÷ packets
//! sent to subscribers in that window. Repeats alternate; medians are reported.
//!
//! ```text
//! cargo build --release -p haven-sfu --bin haven-sfu --example loopback_bench
//! target/release/examples/loopback_bench --rooms 10 --participants 5 --speakers 1
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haven_proto::control::{ControlBody, Offer};
use haven_proto::grant::{GrantSigner, JoinGrant};
use haven_proto::{NodeId, RoomId, SessionId, UserId};
use haven_sfu::node::metrics::sum_samples;
use haven_sfu::node::udp::{self, MediaSocket, RecvBatch, MAX_BATCH};
use haven_sfu::Transmit;
use support::control_peer::ControlPeer;
use support::node_process::{proc_cpu_seconds_precise, NodeProcess, NodeSpec};
use support::udp_peer::{PeerGroup, UdpPeer};

const SECRET: &str = "bench-node-secret-0123456789";
/// Roughly an SRTP packet of an 80-byte Opus frame with header extensions.
const RELAY_PACKET: usize = 120;

struct Opts {
    rooms: usize,
    participants: usize,
    speakers: usize,
    seconds: u64,
    repeats: usize,
    workers: usize,
    drivers: usize,
    binary: PathBuf,
}

fn parse() -> Opts {
    let mut o = Opts {
        rooms: 10,
        participants: 5,
        speakers: 1,
        seconds: 10,
        repeats: 3,
        workers: 2,
        drivers: 2,
        binary: std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.parent()?.join("haven-sfu")))
            .unwrap_or_else(|| PathBuf::from("haven-sfu")),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        let n = || v.parse::<usize>().expect("a number");
        match args[i].as_str() {
            "--rooms" => o.rooms = n(),
            "--participants" => o.participants = n(),
            "--speakers" => o.speakers = n(),
            "--seconds" => o.seconds = n() as u64,
            "--repeats" => o.repeats = n(),
            "--workers" => o.workers = n(),
            "--drivers" => o.drivers = n(),
            "--binary" => o.binary = PathBuf::from(&v),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("relay") {
        return relay_main();
    }
    let o = parse();
    println!(
        "{} rooms × {} participants × {} speakers, {} s windows, {} repeats, {} workers",
        o.rooms, o.participants, o.speakers, o.seconds, o.repeats, o.workers
    );
    let mut sfu = Vec::new();
    let mut relay = Vec::new();
    for r in 0..o.repeats {
        let s = run_sfu(&o);
        let b = run_relay(&o);
        println!(
            "run {}: sfu {:.2} µs/pkt ({} pkts, {:.0} pkt/s)  relay {:.2} µs/pkt ({} pkts, {:.0} pkt/s)  ratio {:.2}",
            r + 1,
            s.us_per_packet(),
            s.packets,
            s.rate(),
            b.us_per_packet(),
            b.packets,
            b.rate(),
            s.us_per_packet() / b.us_per_packet()
        );
        sfu.push(s);
        relay.push(b);
    }
    let ms = median(sfu.iter().map(Window::us_per_packet).collect());
    let mr = median(relay.iter().map(Window::us_per_packet).collect());
    println!(
        "median: sfu {ms:.2} µs per forwarded packet, relay {mr:.2} µs, ratio {:.2}",
        ms / mr
    );
}

struct Window {
    cpu: f64,
    packets: u64,
    secs: f64,
}

impl Window {
    fn us_per_packet(&self) -> f64 {
        self.cpu * 1e6 / self.packets.max(1) as f64
    }

    fn rate(&self) -> f64 {
        self.packets as f64 / self.secs
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------- SFU

fn run_sfu(o: &Opts) -> Window {
    let sig = ControlPeer::start(SECRET);
    let signer = GrantSigner::generate().expect("key");
    let node = NodeProcess::spawn(&NodeSpec {
        binary: &o.binary,
        node_id: "sfu-bench",
        signaling: sig.addr,
        fingerprint: &sig.fingerprint,
        secret: SECRET,
        signer: &signer,
        workers: o.workers,
        extra: &["--capacity", "100000"],
    });
    sig.wait_registration(1, Duration::from_secs(20))
        .expect("node registered");
    let mut peers = Vec::new();
    for room_index in 0..o.rooms {
        let room = RoomId::new_random();
        for k in 0..o.participants {
            let index = (room_index * o.participants + k) as u32;
            let speaker = k < o.speakers;
            let (mut peer, sdp) = UdpPeer::new(index, speaker, 3);
            let grant = JoinGrant {
                user: UserId::new_random(),
                display_name: format!("p{index}"),
                room,
                can_speak: speaker,
                session: SessionId::new_random(),
                node: NodeId::new("sfu-bench"),
            };
            let token = signer
                .mint(&grant, unix_now(), Duration::from_secs(30))
                .expect("grant");
            let reply = sig.request(
                ControlBody::Offer(Offer {
                    room,
                    grant: token,
                    sdp,
                    slots: None,
                }),
                Duration::from_secs(20),
            );
            let Some(ControlBody::Answer(a)) = reply else {
                panic!("offer refused: {reply:?}\n{}", node.log());
            };
            peer.accept_answer(&a.sdp);
            peer.view.talking.store(speaker, Ordering::Relaxed);
            peers.push(peer);
        }
    }
    let views: Vec<_> = peers.iter().map(|p| p.view.clone()).collect();
    let mut groups = Vec::new();
    let per = peers.len().div_ceil(o.drivers.max(1));
    while !peers.is_empty() {
        let rest = peers.split_off(per.min(peers.len()));
        groups.push(PeerGroup::run(std::mem::replace(&mut peers, rest)));
    }
    let end = Instant::now() + Duration::from_secs(30);
    while !views
        .iter()
        .all(|v| v.connected.load(Ordering::Relaxed) && v.channel_open.load(Ordering::Relaxed))
    {
        assert!(
            Instant::now() < end,
            "peers did not connect\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Warm up: slots taken, steady flow.
    std::thread::sleep(Duration::from_secs(2));
    let forwarded = |n: &NodeProcess| {
        sum_samples(&n.metrics(), "haven_sfu_rtp_packets_forwarded_total", &[]) as u64
    };
    eprintln!("  sfu pid {}", node.pid());
    let loop_counts = |n: &NodeProcess| {
        let m = n.metrics();
        [
            "haven_sfu_worker_wakeups_total",
            "haven_sfu_worker_recv_batches_total",
            "haven_sfu_worker_timer_runs_total",
            "haven_sfu_udp_datagrams_received_total",
            "haven_sfu_udp_datagrams_sent_total",
        ]
        .map(|f| sum_samples(&m, f, &[]))
    };
    let l0 = loop_counts(&node);
    // Counters are published every 100 ms: bracket the window with settled readings.
    let (c0, f0, t0) = (node.cpu_seconds(), forwarded(&node), Instant::now());
    std::thread::sleep(Duration::from_secs(o.seconds));
    let (c1, f1, t1) = (node.cpu_seconds(), forwarded(&node), Instant::now());
    let l1 = loop_counts(&node);
    let m = node.metrics();
    let lateness_sum = sum_samples(&m, "haven_sfu_forwarding_lateness_seconds_sum", &[]);
    let lateness_n = sum_samples(&m, "haven_sfu_forwarding_lateness_seconds_count", &[]);
    let within_1ms = sum_samples(
        &m,
        "haven_sfu_forwarding_lateness_seconds_bucket",
        &["le=\"0.001\""],
    );
    eprintln!(
        "  sfu forwarding lateness: mean {:.0} µs, {:.1} % within 1 ms",
        lateness_sum / lateness_n.max(1.0) * 1e6,
        within_1ms / lateness_n.max(1.0) * 100.0
    );
    let secs = (t1 - t0).as_secs_f64();
    let r: Vec<f64> = l0.iter().zip(&l1).map(|(a, b)| (b - a) / secs).collect();
    eprintln!(
        "  sfu per second: {:.0} wakeups, {:.0} recv batches, {:.0} timer runs, {:.0} datagrams in, {:.0} out",
        r[0], r[1], r[2], r[3], r[4]
    );
    for g in &mut groups {
        g.stop();
    }
    let heard: u64 = views
        .iter()
        .map(|v| v.rtp_received.load(Ordering::Relaxed))
        .sum();
    assert!(heard > 0, "no media reached the peers");
    Window {
        cpu: c1 - c0,
        packets: f1 - f0,
        secs: (t1 - t0).as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------- relay

/// The baseline: a child process forwarding each datagram to the other members of its room
/// (first byte = room, a 1-byte datagram joins), with the node's batched socket code.
fn relay_main() {
    let socket = MediaSocket::bind("127.0.0.1:0".parse().unwrap(), 4 << 20).expect("bind");
    println!("{}", socket.local_addr());
    let (_waker, wake) = udp::waker().expect("waker");
    let mut rooms: HashMap<u8, Vec<SocketAddr>> = HashMap::new();
    let mut batch = RecvBatch::new(MAX_BATCH, 2048);
    let mut out: Vec<Transmit> = Vec::with_capacity(4 * MAX_BATCH);
    loop {
        udp::wait(&socket, &wake, Duration::from_millis(100));
        loop {
            let n = socket.recv_batch(&mut batch).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.clear();
            for (source, bytes) in batch.iter() {
                let Some(&room) = bytes.first() else { continue };
                let members = rooms.entry(room).or_default();
                if bytes.len() == 1 {
                    if !members.contains(&source) {
                        members.push(source);
                    }
                    continue;
                }
                for m in members.iter().filter(|m| **m != source) {
                    out.push(Transmit {
                        source: socket.local_addr(),
                        destination: *m,
                        contents: bytes.to_vec(),
                    });
                }
            }
            socket.send_batch(&out);
        }
    }
}

fn run_relay(o: &Opts) -> Window {
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .arg("relay")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("relay");
    let mut line = String::new();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("relay address");
    }
    let relay: SocketAddr = line.trim().parse().expect("relay address");
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Members: rooms × participants sockets; the first `speakers` of each room send.
    let mut members = Vec::new();
    for room in 0..o.rooms {
        for k in 0..o.participants {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_nonblocking(true).expect("nonblocking");
            s.send_to(&[room as u8], relay).expect("join");
            members.push((room as u8, k < o.speakers, s));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let per = members.len().div_ceil(o.drivers.max(1));
    let mut threads = Vec::new();
    while !members.is_empty() {
        let rest = members.split_off(per.min(members.len()));
        let mine = std::mem::replace(&mut members, rest);
        let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            drive_relay_members(mine, relay, &received, &stop)
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = child.id();
    let cpu = |pid| proc_cpu_seconds_precise(pid);
    let (c0, r0, t0) = (cpu(pid), received.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs(o.seconds));
    let (c1, r1, t1) = (cpu(pid), received.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = child.kill();
    let _ = child.wait();
    Window {
        cpu: c1 - c0,
        packets: r1 - r0,
        secs: (t1 - t0).as_secs_f64(),
    }
}

/// Speakers send a packet every 20 ms (staggered); everyone reads what arrives.
fn drive_relay_members(
    members: Vec<(u8, bool, UdpSocket)>,
    relay: SocketAddr,
    received: &AtomicU64,
    stop: &AtomicBool,
) {
    let start = Instant::now();
    let mut next: Vec<Instant> = (0..members.len())
        .map(|i| start + Duration::from_micros((i as u64 * 1931) % 20_000))
        .collect();
    let mut fds: Vec<libc::pollfd> = members
        .iter()
        .map(|(_, _, s)| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [0u8; 2048];
    let mut packet = [0u8; RELAY_PACKET];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wake = next
            .iter()
            .zip(&members)
            .filter(|(_, m)| m.1)
            .map(|(t, _)| *t)
            .min()
            .unwrap_or(now + Duration::from_millis(10));
        let ms = wake
            .saturating_duration_since(now)
            .min(Duration::from_millis(10))
            .as_micros()
            .div_ceil(1000) as libc::c_int;
        // SAFETY: valid pollfds of live sockets.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        for ((_, _, s), fd) in members.iter().zip(&mut fds) {
            if fd.revents != 0 {
                fd.revents = 0;
                while s.recv_from(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let now = Instant::now();
        for (i, (room, speaker, s)) in members.iter().enumerate() {
            if *speaker && next[i] <= now {
                packet[0] = *room;
                let _ = s.send_to(&packet, relay);
                next[i] += Duration::from_millis(20);
                if next[i] < now {
                    next[i] = now + Duration::from_millis(20);
                }
            }
        }
    }
}
