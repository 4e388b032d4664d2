//! The plain-relay baseline of performance.md's CPU bar: SFU CPU per forwarded packet ÷ a
//! plain UDP relay's at the same packet rate, measured in the same harness run.
//!
//! The relay is a child process (`haven-loadtest serve-relay`) that runs beside the target
//! for the whole run and sees the same traffic: every simulated client opens a second UDP
//! socket (its shadow), joins its room at the relay, and sends the relay a byte-for-byte copy
//! of every RTP datagram it sends the SFU (after the uplink impairment). The relay forwards
//! each to the other members of the room with the SFU node's own batched socket code
//! (`haven_sfu::node::udp`: recvmmsg/sendmmsg), no WebRTC; the clients' threads read and
//! discard what arrives on their shadows.
//!
//! So the relay forwards the same packets, at the same moments, into receivers driven by the
//! same threads as the SFU's, on the same machine, over the same steady window. That matters
//! here: on loopback the sender pays for delivery into the receiver's socket and for waking
//! its thread, which depends on how busy the receiver is; and a shared box's noise now moves
//! both sides of the ratio at once. (Until session 3 the relay ran after the run, fed by a
//! synthetic driver into an idle receiver; `docs/benchmarks.md` has both figures.)
//!
//! CPU: the child's utime + stime (and schedstat) from /proc at the window's edges ÷ the
//! datagrams its receivers counted in between.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use haven_sfu::node::udp::{self, MediaSocket, RecvBatch, MAX_BATCH};
use haven_sfu::Transmit;
use serde::Serialize;

use crate::procstat::{CpuDelta, CpuReading, ProcTarget};
use crate::LoadError;

/// First byte of a join datagram: `[JOIN, room >> 8, room & 0xff]`. RTP never starts so.
const JOIN: u8 = 0xff;

/// The relay's figures, next to the SFU's.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RelayFigures {
    pub forwarded_per_s: f64,
    pub cpu_us_per_forwarded_packet: Option<f64>,
    pub cpu_us_per_forwarded_packet_schedstat: Option<f64>,
    pub window_s: f64,
}

impl RelayFigures {
    /// Figures over a window from the relay's CPU readings and its receivers' count.
    pub fn over(a: &CpuReading, b: &CpuReading, forwarded: u64) -> Self {
        let cpu = CpuDelta::between(a, b);
        let secs = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-3);
        Self {
            forwarded_per_s: forwarded as f64 / secs,
            cpu_us_per_forwarded_packet: cpu.us_per(forwarded),
            cpu_us_per_forwarded_packet_schedstat: cpu.sched_us_per(forwarded),
            window_s: secs,
        }
    }
}

/// The datagram a client's shadow socket sends to join `room`.
pub fn join_datagram(room: usize) -> [u8; 3] {
    let room = u16::try_from(room).unwrap_or(u16::MAX);
    [JOIN, (room >> 8) as u8, room as u8]
}

/// RTP (not RTCP, STUN or DTLS): what a client copies to the relay.
pub fn is_rtp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && bytes[0] >> 6 == 2 && !(192..=223).contains(&bytes[1])
}

/// Who is in which room, and where a datagram goes.
#[derive(Debug, Default)]
struct Rooms {
    room_of: HashMap<SocketAddr, u16>,
    members: HashMap<u16, Vec<SocketAddr>>,
}

impl Rooms {
    /// Handle one datagram: a join is recorded; a member's packet goes to the others.
    fn route(&mut self, source: SocketAddr, bytes: &[u8], mut forward: impl FnMut(SocketAddr)) {
        if let [JOIN, hi, lo] = *bytes {
            let room = u16::from_be_bytes([hi, lo]);
            if self.room_of.insert(source, room).is_none() {
                self.members.entry(room).or_default().push(source);
            }
            return;
        }
        let Some(room) = self.room_of.get(&source) else {
            return;
        };
        for m in self.members.get(room).into_iter().flatten() {
            if *m != source {
                forward(*m);
            }
        }
    }
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
    let mut rooms = Rooms::default();
    let mut batch = RecvBatch::new(MAX_BATCH, 2048);
    let mut out: Vec<Transmit> = Vec::with_capacity(4 * MAX_BATCH);
    // Datagram buffers are reused, as the SFU reuses its own: the floor this relay stands
    // for is the kernel's, not an allocator's.
    let mut pool: Vec<Vec<u8>> = Vec::with_capacity(4 * MAX_BATCH);
    let local = socket.local_addr();
    while !stop.load(Ordering::Relaxed) {
        udp::wait(&socket, &wake, Duration::from_millis(100));
        loop {
            let n = socket.recv_batch(&mut batch).unwrap_or(0);
            if n == 0 {
                break;
            }
            for (source, bytes) in batch.iter() {
                rooms.route(source, bytes, |destination| {
                    let mut contents = pool.pop().unwrap_or_else(|| Vec::with_capacity(2048));
                    contents.clear();
                    contents.extend_from_slice(bytes);
                    out.push(Transmit {
                        source: local,
                        destination,
                        contents,
                    })
                });
            }
            socket.send_batch(&out);
            pool.extend(out.drain(..).map(|t| t.contents));
        }
    }
    Ok(())
}

/// The relay child process, alive for the run.
pub struct ShadowRelay {
    child: Child,
    addr: SocketAddr,
    proc: ProcTarget,
}

impl ShadowRelay {
    /// Start `exe serve-relay` and learn its address.
    pub fn start(exe: &Path) -> Result<Self, LoadError> {
        let mut child = Command::new(exe)
            .arg("serve-relay")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let line = {
            let Some(stdout) = child.stdout.take() else {
                let _ = child.kill();
                return Err(LoadError::Target("relay: no stdout".into()));
            };
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            line
        };
        match line.trim().parse() {
            Ok(addr) => Ok(Self {
                proc: ProcTarget::process(child.id()),
                child,
                addr,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(LoadError::Target(format!("relay address {line:?}: {e}")))
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relay process's CPU now.
    pub fn sample(&self) -> Option<CpuReading> {
        self.proc.sample().ok()
    }
}

impl Drop for ShadowRelay {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_get_each_others_packets_and_strangers_nothing() {
        let a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:1003".parse().unwrap();
        let other_room: SocketAddr = "127.0.0.1:1004".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:1005".parse().unwrap();
        let mut rooms = Rooms::default();
        for m in [a, b, c] {
            rooms.route(m, &join_datagram(300), |_| {
                panic!("a join is not forwarded")
            });
        }
        // Joining twice changes nothing.
        rooms.route(a, &join_datagram(300), |_| {
            panic!("a join is not forwarded")
        });
        rooms.route(other_room, &join_datagram(7), |_| {});
        let rtp = [0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xaa];
        let mut got = Vec::new();
        rooms.route(a, &rtp, |d| got.push(d));
        assert_eq!(got, vec![b, c]);
        got.clear();
        rooms.route(stranger, &rtp, |d| got.push(d));
        assert!(got.is_empty());
    }

    #[test]
    fn only_rtp_is_copied_to_the_relay() {
        assert!(is_rtp(&[0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]));
        assert!(is_rtp(&[0x90, 111 | 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]));
        // RTCP sender report, STUN, DTLS, truncated.
        assert!(!is_rtp(&[0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0]));
        assert!(!is_rtp(&[
            0x00, 0x01, 0, 8, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0
        ]));
        assert!(!is_rtp(&[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_rtp(&[0x80, 111, 0]));
    }
}
