//! The plain UDP echo the SFU is compared with: "SFU-added latency" is the publisher →
//! subscriber time through the SFU minus the same trip through this echo, measured in the
//! same run under the same load (performance.md).
//!
//! Each worker sends a ~100-byte probe every 20 ms to the echo and times its return, from
//! the same poll loop that receives media, so the harness's own scheduling delays appear in
//! both figures and cancel in the difference. The echo is a blocking `recv_from` /
//! `send_to` loop in its own thread — the cheapest possible relay.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::procstat::current_tid;
use crate::LoadError;

/// Size of a probe datagram (an Opus packet plus SRTP overhead is about this).
pub const PROBE_BYTES: usize = 100;
pub const PROBE_MAGIC: &[u8; 4] = b"HVNP";

pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub packets: Arc<AtomicU64>,
    tid: Arc<AtomicU32>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EchoServer {
    pub fn start() -> Result<Self, LoadError> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let tid = Arc::new(AtomicU32::new(0));
        let thread = {
            let (stop, packets, tid) = (stop.clone(), packets.clone(), tid.clone());
            std::thread::Builder::new()
                .name("udp-echo".into())
                .spawn(move || {
                    tid.store(current_tid(), Ordering::Relaxed);
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, src)) = socket.recv_from(&mut buf) {
                            if socket.send_to(&buf[..n], src).is_ok() {
                                packets.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })?
        };
        Ok(Self {
            addr,
            stop,
            packets,
            tid,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn tid(&self) -> u32 {
        self.tid.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A probe datagram carrying its sequence number.
pub fn probe(seq: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROBE_BYTES);
    p.extend_from_slice(PROBE_MAGIC);
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(PROBE_BYTES, 0x5a);
    p
}

/// The sequence number of a returned probe.
pub fn parse_probe(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 12 || &bytes[..4] != PROBE_MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(bytes[4..12].try_into().ok()?))
}

/// Send times of outstanding probes, by sequence number.
pub struct ProbeClock {
    sent: Vec<Option<(u64, Instant)>>,
}

impl Default for ProbeClock {
    fn default() -> Self {
        Self {
            sent: vec![None; 1024],
        }
    }
}

impl ProbeClock {
    pub fn sent(&mut self, seq: u64, at: Instant) {
        let n = self.sent.len();
        self.sent[(seq as usize) % n] = Some((seq, at));
    }

    pub fn returned(&mut self, seq: u64, now: Instant) -> Option<Duration> {
        let n = self.sent.len();
        match self.sent[(seq as usize) % n].take() {
            Some((s, at)) if s == seq => Some(now.saturating_duration_since(at)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_probes() {
        let echo = EchoServer::start().expect("echo");
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut clock = ProbeClock::default();
        for seq in 0..20 {
            clock.sent(seq, Instant::now());
            s.send_to(&probe(seq), echo.addr).unwrap();
            let mut buf = [0u8; 256];
            let (n, _) = s.recv_from(&mut buf).unwrap();
            assert_eq!(n, PROBE_BYTES);
            let got = parse_probe(&buf[..n]).unwrap();
            assert_eq!(got, seq);
            let rtt = clock.returned(got, Instant::now()).unwrap();
            assert!(rtt < Duration::from_secs(1));
            assert!(clock.returned(got, Instant::now()).is_none(), "only once");
        }
        // The echo counts after its send returns: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        while echo.packets.load(Ordering::Relaxed) < 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(echo.packets.load(Ordering::Relaxed), 20);
        assert!(echo.tid() > 0);
        echo.stop();
        assert!(parse_probe(b"nope").is_none());
    }
}
