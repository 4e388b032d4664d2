//! Numbers the media workers publish for the HTTP exporter and the heartbeats, as atomics.
//!
//! Each worker owns its engine's plain counters; every ~100 ms it copies them here
//! ([`WorkerStats::publish`]), so the hot path never touches a shared cache line except
//! for the forwarding-lateness histogram (one relaxed add per received batch).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::counters::{Counters, DropReason};

/// Upper bounds (seconds) of the forwarding-lateness histogram buckets; `+Inf` is implied.
pub const LATENESS_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

/// A Prometheus-style cumulative histogram over [`LATENESS_BUCKETS`].
#[derive(Debug, Default)]
pub struct LatenessHistogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; LATENESS_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl LatenessHistogram {
    /// Record `n` observations of `value` (a batch whose datagrams all waited as long).
    pub fn observe(&self, value: Duration, n: u64) {
        let secs = value.as_secs_f64();
        let i = LATENESS_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENESS_BUCKETS.len());
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos
            .fetch_add(nanos.saturating_mul(n), Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (the last is `+Inf`), the sum in seconds, the count.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        (
            cumulative,
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// The engine counters a worker has accumulated, including those of engines it replaced
/// after a failure (so exported counters never go backwards).
#[derive(Clone, Debug, Default)]
pub struct CounterTotals {
    pub udp_in: u64,
    pub rtp_in: u64,
    pub rtp_forwarded: u64,
    pub rtp_forwarded_lean: u64,
    pub rtp_in_lean: u64,
    pub rtcp_in: u64,
    pub stun_lean: u64,
    pub ice_disconnects: u64,
    pub rtc_timeouts: u64,
    pub rtp_not_selected: u64,
    pub datagrams_out: u64,
    pub joins_accepted: u64,
    pub grants_refused: u64,
    pub offers_refused: u64,
    pub participant_panics: u64,
    pub drops: [u64; DropReason::ALL.len()],
}

impl CounterTotals {
    pub fn add(&mut self, c: &Counters) {
        self.udp_in += c.udp_in;
        self.rtp_in += c.rtp_in;
        self.rtp_forwarded += c.rtp_forwarded;
        self.rtp_forwarded_lean += c.rtp_forwarded_lean;
        self.rtp_in_lean += c.rtp_in_lean;
        self.rtcp_in += c.rtcp_in;
        self.stun_lean += c.stun_lean;
        self.ice_disconnects += c.ice_disconnects;
        self.rtc_timeouts += c.rtc_timeouts;
        self.rtp_not_selected += c.rtp_not_selected;
        self.datagrams_out += c.datagrams_out;
        self.joins_accepted += c.joins_accepted;
        self.grants_refused += c.grants_refused;
        self.offers_refused += c.offers_refused;
        self.participant_panics += c.participant_panics;
        for (i, r) in DropReason::ALL.iter().enumerate() {
            self.drops[i] += c.dropped(*r);
        }
    }

    /// `self` (finished engines) plus the live engine's counters.
    pub fn plus(&self, c: &Counters) -> Self {
        let mut t = self.clone();
        t.add(c);
        t
    }
}

/// Socket-level counters the worker keeps itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoTotals {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    /// Datagrams the kernel refused (bad destination, ...).
    pub send_errors: u64,
    /// Datagrams given up on because the send buffer stayed full.
    pub send_dropped: u64,
    /// Failed reads from the socket.
    pub recv_errors: u64,
    /// Times the engine panicked outside a participant and was rebuilt.
    pub engine_resets: u64,
    /// Loop turns (returns from `poll`).
    pub wakeups: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub recv_batches: u64,
    /// `handle_timeout` calls.
    pub timer_runs: u64,
}

macro_rules! atomics {
    ($name:ident { $($(#[$meta:meta])* $field:ident),* $(,)? }) => {
        #[derive(Debug, Default)]
        pub struct $name { $($(#[$meta])* pub $field: AtomicU64,)* }
    };
}

atomics!(WorkerGauges {
    udp_in,
    rtp_in,
    rtp_forwarded,
    rtp_forwarded_lean,
    rtp_in_lean,
    rtcp_in,
    stun_lean,
    ice_disconnects,
    rtc_timeouts,
    rtp_not_selected,
    engine_datagrams_out,
    joins_accepted,
    grants_refused,
    offers_refused,
    participant_panics,
    datagrams_in,
    bytes_in,
    datagrams_out,
    bytes_out,
    send_errors,
    send_dropped,
    recv_errors,
    engine_resets,
    wakeups,
    recv_batches,
    timer_runs,
    rooms,
    participants,
    cpu_nanos,
    cpu_permille,
    /// Milliseconds since the node started at the worker's last publish (liveness).
    alive_at_ms,
});

/// Everything one worker exports.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub gauges: WorkerGauges,
    pub drops: [AtomicU64; DropReason::ALL.len()],
    pub lateness: LatenessHistogram,
    pub stopped: AtomicBool,
}

/// What [`WorkerStats::publish`] copies.
pub struct WorkerSnapshot<'a> {
    pub engine: &'a CounterTotals,
    pub io: &'a IoTotals,
    pub rooms: usize,
    pub participants: usize,
    pub cpu: Duration,
    pub cpu_permille: u32,
    pub alive_at: Duration,
}

impl WorkerStats {
    pub fn publish(&self, s: WorkerSnapshot<'_>) {
        let g = &self.gauges;
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&g.udp_in, s.engine.udp_in);
        set(&g.rtp_in, s.engine.rtp_in);
        set(&g.rtp_forwarded, s.engine.rtp_forwarded);
        set(&g.rtp_forwarded_lean, s.engine.rtp_forwarded_lean);
        set(&g.rtp_in_lean, s.engine.rtp_in_lean);
        set(&g.rtcp_in, s.engine.rtcp_in);
        set(&g.stun_lean, s.engine.stun_lean);
        set(&g.ice_disconnects, s.engine.ice_disconnects);
        set(&g.rtc_timeouts, s.engine.rtc_timeouts);
        set(&g.rtp_not_selected, s.engine.rtp_not_selected);
        set(&g.engine_datagrams_out, s.engine.datagrams_out);
        set(&g.joins_accepted, s.engine.joins_accepted);
        set(&g.grants_refused, s.engine.grants_refused);
        set(&g.offers_refused, s.engine.offers_refused);
        set(&g.participant_panics, s.engine.participant_panics);
        set(&g.datagrams_in, s.io.datagrams_in);
        set(&g.bytes_in, s.io.bytes_in);
        set(&g.datagrams_out, s.io.datagrams_out);
        set(&g.bytes_out, s.io.bytes_out);
        set(&g.send_errors, s.io.send_errors);
        set(&g.send_dropped, s.io.send_dropped);
        set(&g.recv_errors, s.io.recv_errors);
        set(&g.engine_resets, s.io.engine_resets);
        set(&g.wakeups, s.io.wakeups);
        set(&g.recv_batches, s.io.recv_batches);
        set(&g.timer_runs, s.io.timer_runs);
        set(&g.rooms, s.rooms as u64);
        set(&g.participants, s.participants as u64);
        set(
            &g.cpu_nanos,
            u64::try_from(s.cpu.as_nanos()).unwrap_or(u64::MAX),
        );
        set(&g.cpu_permille, u64::from(s.cpu_permille));
        set(
            &g.alive_at_ms,
            u64::try_from(s.alive_at.as_millis()).unwrap_or(u64::MAX),
        );
        for (a, v) in self.drops.iter().zip(s.engine.drops) {
            set(a, v);
        }
    }

    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}

/// State of the control link, as /healthz and /metrics report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum LinkState {
    Connecting = 0,
    Up = 1,
    /// Signaling refused our registration (wrong secret); retried with backoff.
    Refused = 2,
    Down = 3,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Refused => "refused",
            Self::Down => "down",
        }
    }

    fn from_u64(v: u64) -> Self {
        match v {
            1 => Self::Up,
            2 => Self::Refused,
            3 => Self::Down,
            _ => Self::Connecting,
        }
    }
}

/// Node-wide numbers: the workers' and the control link's.
#[derive(Debug)]
pub struct NodeStats {
    pub workers: Vec<std::sync::Arc<WorkerStats>>,
    pub capacity: u32,
    link_state: AtomicU64,
    pub link_connects: AtomicU64,
    pub control_in: AtomicU64,
    pub control_out: AtomicU64,
    /// Events dropped because the link was down when they happened.
    pub control_dropped: AtomicU64,
    pub offers_refused_draining: AtomicU64,
    pub draining: AtomicBool,
    /// Process CPU per mille of one core over the last heartbeat interval.
    pub process_cpu_permille: AtomicU64,
}

impl NodeStats {
    pub fn new(workers: usize, capacity: u32) -> Self {
        Self {
            workers: (0..workers).map(|_| Default::default()).collect(),
            capacity,
            link_state: AtomicU64::new(LinkState::Connecting as u64),
            link_connects: AtomicU64::new(0),
            control_in: AtomicU64::new(0),
            control_out: AtomicU64::new(0),
            control_dropped: AtomicU64::new(0),
            offers_refused_draining: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            process_cpu_permille: AtomicU64::new(0),
        }
    }

    pub fn link_state(&self) -> LinkState {
        LinkState::from_u64(self.link_state.load(Ordering::Relaxed))
    }

    pub fn set_link_state(&self, s: LinkState) {
        self.link_state.store(s as u64, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn participants(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| WorkerStats::get(&w.gauges.participants))
            .sum()
    }

    pub fn rooms(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| WorkerStats::get(&w.gauges.rooms))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_an_inf_bucket() {
        let h = LatenessHistogram::default();
        h.observe(Duration::from_micros(10), 3);
        h.observe(Duration::from_micros(700), 1);
        h.observe(Duration::from_secs(2), 2);
        let (buckets, sum, count) = h.snapshot();
        assert_eq!(buckets.len(), LATENESS_BUCKETS.len() + 1);
        assert_eq!(buckets[0], 3);
        assert_eq!(buckets[3], 3); // ≤ 0.5 ms
        assert_eq!(buckets[4], 4); // ≤ 1 ms
        assert_eq!(*buckets.last().unwrap(), 6);
        assert_eq!(count, 6);
        assert!((sum - (30e-6 + 700e-6 + 4.0)).abs() < 1e-9);
    }

    #[test]
    fn totals_survive_an_engine_replacement() {
        let mut t = CounterTotals::default();
        let mut c = Counters::default();
        c.rtp_forwarded = 5;
        t.add(&c);
        let mut live = Counters::default();
        live.rtp_forwarded = 2;
        assert_eq!(t.plus(&live).rtp_forwarded, 7);
    }
}
