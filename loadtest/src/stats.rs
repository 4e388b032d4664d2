//! Receive-side measurements of one RTP stream, as performance.md defines them, and the
//! latency histograms every figure is read from.
//!
//! - Loss from extended sequence numbers (RFC 3550 A.1): expected = highest − first + 1,
//!   lost = expected − distinct packets received. Wrap-around, reordering and duplicates are
//!   handled: a duplicate is never counted twice, a late-but-arrived packet is not lost.
//! - Interarrival jitter exactly as RFC 3550 6.4.1: J += (|D(i−1,i)| − J) / 16 in timestamp
//!   units, over packets in arrival order.
//! - Late packets: arrived more than `late_threshold` after they were due, where "due" is the
//!   stream's fastest transit so far (arrival − RTP time): what a fixed jitter buffer of that
//!   depth would have to discard.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Sequence numbers remembered for duplicate detection.
const SEQ_WINDOW: u64 = 4096;

#[derive(Clone, Debug)]
pub struct StreamStats {
    clock_rate: f64,
    late_threshold_ticks: f64,
    first_ext: Option<u64>,
    highest_ext: u64,
    received: u64,
    duplicates: u64,
    reordered: u64,
    too_old: u64,
    /// ext seq + 1 per ring slot; 0 = empty.
    seen: Vec<u64>,
    // Jitter and lateness, in RTP ticks.
    last_ts_ext: Option<i64>,
    last_transit: Option<f64>,
    jitter: f64,
    min_transit: Option<f64>,
    late: u64,
}

impl StreamStats {
    pub fn new(clock_rate: u32, late_threshold: Duration) -> Self {
        Self {
            clock_rate: f64::from(clock_rate),
            late_threshold_ticks: late_threshold.as_secs_f64() * f64::from(clock_rate),
            first_ext: None,
            highest_ext: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            too_old: 0,
            seen: vec![0; SEQ_WINDOW as usize],
            last_ts_ext: None,
            last_transit: None,
            jitter: 0.0,
            min_transit: None,
            late: 0,
        }
    }

    /// One packet: its 16-bit sequence number, 32-bit RTP timestamp, and arrival time
    /// (any fixed epoch, the same for every packet of the stream).
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, arrival: Duration) {
        let ext = match self.first_ext {
            None => {
                // Start in the second cycle so packets reordered before the first one still
                // have a place below it.
                let ext = (1u64 << 16) + u64::from(seq);
                self.first_ext = Some(ext);
                self.highest_ext = ext;
                ext
            }
            Some(_) => extend_seq(self.highest_ext, seq),
        };
        if ext + SEQ_WINDOW <= self.highest_ext {
            self.too_old += 1;
            return;
        }
        let slot = (ext % SEQ_WINDOW) as usize;
        if self.seen[slot] == ext + 1 {
            self.duplicates += 1;
            return;
        }
        self.seen[slot] = ext + 1;
        self.received += 1;
        if ext > self.highest_ext {
            self.highest_ext = ext;
        } else if self.received > 1 {
            self.reordered += 1;
        }
        if let Some(first) = self.first_ext {
            if ext < first {
                self.first_ext = Some(ext);
            }
        }

        let ts_ext = match self.last_ts_ext {
            None => i64::from(rtp_ts),
            Some(last) => last + i64::from(rtp_ts.wrapping_sub(last as u32) as i32),
        };
        self.last_ts_ext = Some(ts_ext);
        let transit = arrival.as_secs_f64() * self.clock_rate - ts_ext as f64;
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        let min = self.min_transit.map_or(transit, |m| m.min(transit));
        self.min_transit = Some(min);
        if transit - min > self.late_threshold_ticks {
            self.late += 1;
        }
    }

    /// Packets the sender numbered between the first and the highest seen.
    pub fn expected(&self) -> u64 {
        self.first_ext.map_or(0, |f| self.highest_ext - f + 1)
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received + self.too_old)
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    pub fn late(&self) -> u64 {
        self.late
    }

    /// RFC 3550 interarrival jitter, in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter / self.clock_rate * 1000.0
    }
}

/// The extended sequence number of `seq` closest to `highest`.
pub fn extend_seq(highest: u64, seq: u16) -> u64 {
    let base = highest & !0xffff;
    let candidates = [
        base.wrapping_sub(1 << 16) | u64::from(seq),
        base | u64::from(seq),
        (base + (1 << 16)) | u64::from(seq),
    ];
    candidates
        .into_iter()
        .filter(|&c| c < (1 << 63))
        .min_by_key(|&c| c.abs_diff(highest))
        .unwrap_or(base | u64::from(seq))
}

/// Totals over many streams.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LossTotals {
    pub streams: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub late: u64,
    /// Mean of the streams' RFC 3550 jitter (ms).
    pub jitter_ms_mean: f64,
    pub jitter_ms_max: f64,
}

impl LossTotals {
    pub fn add(&mut self, s: &StreamStats) {
        if s.expected() == 0 {
            return;
        }
        let j = s.jitter_ms();
        self.jitter_ms_mean =
            (self.jitter_ms_mean * self.streams as f64 + j) / (self.streams + 1) as f64;
        self.jitter_ms_max = self.jitter_ms_max.max(j);
        self.streams += 1;
        self.expected += s.expected();
        self.received += s.received();
        self.lost += s.lost();
        self.duplicates += s.duplicates();
        self.reordered += s.reordered();
        self.late += s.late();
    }

    pub fn merge(&mut self, o: &LossTotals) {
        let n = self.streams + o.streams;
        if n > 0 {
            self.jitter_ms_mean = (self.jitter_ms_mean * self.streams as f64
                + o.jitter_ms_mean * o.streams as f64)
                / n as f64;
        }
        self.jitter_ms_max = self.jitter_ms_max.max(o.jitter_ms_max);
        self.streams = n;
        self.expected += o.expected;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.late += o.late;
    }

    pub fn loss_pct(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            100.0 * self.lost as f64 / self.expected as f64
        }
    }
}

/// Durations in microseconds, 1 µs .. 10 min, 3 significant figures.
#[derive(Clone, Debug)]
pub struct DurationHistogram {
    h: Histogram<u64>,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl DurationHistogram {
    pub fn new() -> Self {
        // Bounds are constants that hdrhistogram accepts.
        let h = Histogram::new_with_bounds(1, 600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
        Self { h }
    }

    pub fn record(&mut self, d: Duration) {
        self.h.saturating_record((d.as_micros() as u64).max(1));
    }

    pub fn merge(&mut self, o: &DurationHistogram) {
        // Same bounds on both sides: cannot fail; a failure would only lose samples.
        let _ = self.h.add(&o.h);
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// Percentile (0..=100) in milliseconds; `None` when empty.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.h.is_empty() {
            return None;
        }
        Some(self.h.value_at_percentile(p) as f64 / 1000.0)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (!self.h.is_empty()).then(|| self.h.mean() / 1000.0)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (!self.h.is_empty()).then(|| self.h.max() as f64 / 1000.0)
    }

    /// Counts in `bins` equal bins of width `bin_ms` from 0; the last bin holds the rest.
    pub fn bins(&self, bin_ms: f64, bins: usize) -> Vec<u64> {
        let mut out = vec![0u64; bins.max(1)];
        for v in self.h.iter_recorded() {
            let ms = v.value_iterated_to() as f64 / 1000.0;
            let i = ((ms / bin_ms) as usize).min(out.len() - 1);
            out[i] += v.count_at_value();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const FRAME: Duration = Duration::from_millis(20);

    fn feed(s: &mut StreamStats, seq: u64, at: Duration) {
        s.on_packet(seq as u16, (seq as u32).wrapping_mul(960), at);
    }

    #[test]
    fn clean_stream_has_no_loss_and_no_jitter() {
        let mut s = StreamStats::new(48_000, Duration::from_millis(60));
        for i in 0..1000u64 {
            feed(&mut s, 65_000 + i, FRAME * i as u32);
        }
        assert_eq!(s.expected(), 1000);
        assert_eq!(s.lost(), 0);
        assert!(s.jitter_ms() < 0.001);
        assert_eq!(s.late(), 0);
    }

    #[test]
    fn extension_handles_wrap_both_ways() {
        assert_eq!(extend_seq(0x1_fffe, 1), 0x2_0001);
        assert_eq!(extend_seq(0x2_0001, 0xfffe), 0x1_fffe);
        assert_eq!(extend_seq(0x2_0005, 7), 0x2_0007);
    }

    #[test]
    fn reorder_and_duplicates_are_not_loss() {
        let mut s = StreamStats::new(48_000, Duration::from_millis(60));
        let order = [1u64, 2, 4, 3, 5, 5, 6, 8, 7, 7, 9, 0];
        for (k, &q) in order.iter().enumerate() {
            feed(&mut s, 65_530 + q, FRAME * k as u32);
        }
        assert_eq!(s.expected(), 10);
        assert_eq!(s.received(), 10);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.duplicates(), 2);
        assert_eq!(s.reordered(), 3);
    }

    #[test]
    fn gaps_are_loss() {
        let mut s = StreamStats::new(48_000, Duration::from_millis(60));
        for i in (0..100u64).filter(|i| i % 10 != 3) {
            feed(&mut s, i, FRAME * i as u32);
        }
        assert_eq!(s.expected(), 100);
        assert_eq!(s.lost(), 10);
    }

    #[test]
    fn seeded_five_percent_loss_measures_five_percent() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut s = StreamStats::new(48_000, Duration::from_millis(60));
        let mut arrivals = Vec::new();
        for i in 0..20_000u64 {
            if rng.gen_bool(0.05) {
                continue;
            }
            let jitter = Duration::from_micros(rng.gen_range(0..15_000));
            arrivals.push((FRAME * i as u32 + jitter, 60_000 + i));
        }
        arrivals.sort();
        for (at, seq) in arrivals {
            feed(&mut s, seq, at);
            if seq % 97 == 0 {
                feed(&mut s, seq, at); // duplicates must not hide loss
            }
        }
        let loss = 100.0 * s.lost() as f64 / s.expected() as f64;
        assert!((4.0..=6.0).contains(&loss), "measured {loss:.2} %");
        // Uniform 0..15 ms transit noise: RFC 3550 jitter converges near E|D| = 5 ms.
        assert!((3.5..6.5).contains(&s.jitter_ms()), "{}", s.jitter_ms());
        assert!(s.reordered() == 0 && s.duplicates() > 0);
    }

    #[test]
    fn jitter_matches_rfc3550_for_alternating_delay() {
        // Transit alternates 0 / 10 ms: |D| = 10 ms each time, J → 10 ms.
        let mut s = StreamStats::new(48_000, Duration::from_millis(60));
        for i in 0..2000u64 {
            let extra = if i % 2 == 0 { 0 } else { 10 };
            feed(&mut s, i, FRAME * i as u32 + Duration::from_millis(extra));
        }
        assert!((s.jitter_ms() - 10.0).abs() < 0.01, "{}", s.jitter_ms());
    }

    #[test]
    fn late_packets_exceed_the_buffer_depth() {
        let mut s = StreamStats::new(48_000, Duration::from_millis(60));
        for i in 0..100u64 {
            let extra = if i == 50 {
                80
            } else if i == 60 {
                40
            } else {
                0
            };
            feed(&mut s, i, FRAME * i as u32 + Duration::from_millis(extra));
        }
        assert_eq!(s.late(), 1);
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = DurationHistogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.percentile_ms(50.0).unwrap();
        let p99 = h.percentile_ms(99.0).unwrap();
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        assert!((98.9..=99.1).contains(&p99), "{p99}");
        assert_eq!(h.bins(10.0, 10).iter().sum::<u64>(), 100);
        let mut t = StreamStats::new(48_000, FRAME);
        feed(&mut t, 1, FRAME);
        let mut tot = LossTotals::default();
        tot.add(&t);
        assert_eq!(tot.streams, 1);
    }
}
