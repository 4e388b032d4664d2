//! The plain-relay baseline of performance.md's CPU bar: SFU CPU per forwarded packet ÷ a
//! plain UDP relay's at the same packet rate, measured in the same harness run.
//!
//! The relay is a child process (`haven-loadtest serve-relay`) that forwards each datagram
//! to the other members of its room (first byte = room; a 1-byte datagram joins), reading
//! and writing with the SFU node's own batched socket code (`haven_sfu::node::udp`:
//! recvmmsg/sendmmsg), no WebRTC. The same rooms as the run, each speaker sending 120-byte
//! packets (about an SRTP Opus frame with extensions) at the rate that makes the relay's
//! forwarded packets/s equal the SFU's measured in the window. CPU: utime + stime of the
//! child from /proc over the window ÷ packets it forwarded (counted by the receivers).
//! Adapted from `sfu/examples/loopback_bench.rs`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_sfu::node::udp::{self, MediaSocket, RecvBatch, MAX_BATCH};
use haven_sfu::Transmit;
use serde::Serialize;

use crate::procstat::{CpuDelta, ProcTarget};
use crate::scenario::Plan;
use crate::LoadError;

const RELAY_PACKET: usize = 120;

/// The relay's figures, next to the SFU's.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RelayFigures {
    pub forwarded_per_s: f64,
    pub cpu_us_per_forwarded_packet: Option<f64>,
    pub cpu_us_per_forwarded_packet_schedstat: Option<f64>,
    pub window_s: f64,
}

/// `serve-relay`: print the bound address, forward until killed (or stdin closes).
pub fn serve_relay() -> Result<(), LoadError> {
    let socket = MediaSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 4 << 20)?;
    println!("{}", socket.local_addr());
    // The parent going away closes our stdin: stop then.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            stop.store(true, Ordering::Relaxed);
        });
    }
    let (_waker, wake) = udp::waker()?;
    let mut rooms: HashMap<u8, Vec<SocketAddr>> = HashMap::new();
    let mut batch = RecvBatch::new(MAX_BATCH, 2048);
    let mut out: Vec<Transmit> = Vec::with_capacity(4 * MAX_BATCH);
    let local = socket.local_addr();
    while !stop.load(Ordering::Relaxed) {
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
                        source: local,
                        destination: *m,
                        contents: bytes.to_vec(),
                    });
                }
            }
            socket.send_batch(&out);
        }
    }
    Ok(())
}

/// Fan-out of one packet per speaker summed over rooms: Σ speakers × (members − 1).
fn fanout(plan: &Plan) -> u64 {
    plan.rooms
        .iter()
        .map(|r| {
            let n = r.members.len() as u64;
            u64::from(r.speakers).min(n) * n.saturating_sub(1)
        })
        .sum()
}

/// Run the relay with the plan's rooms at `forwarded_per_s` for `window`.
pub fn measure(
    exe: &Path,
    plan: &Plan,
    forwarded_per_s: f64,
    window: Duration,
) -> Result<RelayFigures, LoadError> {
    let fan = fanout(plan);
    if fan == 0 || forwarded_per_s <= 0.0 || plan.rooms.len() > 255 {
        return Err(LoadError::Target(
            "relay baseline: nothing to forward (or more than 255 rooms)".into(),
        ));
    }
    let interval = Duration::from_secs_f64((fan as f64 / forwarded_per_s).clamp(0.002, 10.0));
    let mut child = Command::new(exe)
        .arg("serve-relay")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let line = {
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LoadError::Target("relay: no stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        line
    };
    let result = (|| -> Result<RelayFigures, LoadError> {
        let relay: SocketAddr = line
            .trim()
            .parse()
            .map_err(|e| LoadError::Target(format!("relay address {line:?}: {e}")))?;
        let mut members = Vec::new();
        for r in &plan.rooms {
            for k in 0..r.members.len() {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.set_nonblocking(true)?;
                s.send_to(&[r.index as u8], relay)?;
                members.push((r.index as u8, (k as u32) < r.speakers, s));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let driver = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::Builder::new()
                .name("relay-driver".into())
                .spawn(move || drive(members, relay, interval, &received, &stop))?
        };
        std::thread::sleep(Duration::from_secs(1));
        let proc = ProcTarget::process(child.id());
        let a = proc.sample().ok();
        let (r0, t0) = (received.load(Ordering::Relaxed), Instant::now());
        std::thread::sleep(window);
        let b = proc.sample().ok();
        let (r1, t1) = (received.load(Ordering::Relaxed), Instant::now());
        stop.store(true, Ordering::Relaxed);
        let _ = driver.join();
        let packets = r1.saturating_sub(r0);
        let secs = t1.saturating_duration_since(t0).as_secs_f64().max(1e-3);
        let cpu = match (a, b) {
            (Some(a), Some(b)) => Some(CpuDelta::between(&a, &b)),
            _ => None,
        };
        Ok(RelayFigures {
            forwarded_per_s: packets as f64 / secs,
            cpu_us_per_forwarded_packet: cpu.and_then(|c| c.us_per(packets)),
            cpu_us_per_forwarded_packet_schedstat: cpu
                .and_then(|c| (packets > 0).then_some(c.sched_cpu_s? * 1e6 / packets as f64)),
            window_s: secs,
        })
    })();
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Speakers send a packet every `interval` (staggered); everyone reads what arrives.
fn drive(
    members: Vec<(u8, bool, UdpSocket)>,
    relay: SocketAddr,
    interval: Duration,
    received: &AtomicU64,
    stop: &AtomicBool,
) {
    let start = Instant::now();
    let step = interval.as_micros().max(1) as u64;
    let mut next: Vec<Instant> = (0..members.len())
        .map(|i| start + Duration::from_micros((i as u64 * 1931) % step))
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
        // SAFETY: valid pollfds of live sockets, length as given.
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
                next[i] += interval;
                if next[i] < now {
                    next[i] = now + interval;
                }
            }
        }
    }
}
