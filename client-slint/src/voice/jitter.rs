//! Per-slot adaptive jitter buffer: reorders RTP payloads by timestamp and hands the decoder
//! one 20 ms frame per tick, saying how to produce it (decode, recover from the next
//! packet's in-band FEC, conceal, or play silence).
//!
//! Target depth adapts to measured jitter (spread of relative transit times over a sliding
//! window), so a clean LAN stays at one or two frames of delay while a jittery Wi-Fi link
//! gets the headroom it needs. The buffer resynchronises at talk-spurt boundaries (DTX
//! silence, a new speaker in the slot) rather than concealing across them.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Samples per 20 ms frame at 48 kHz (the RTP clock rate of Opus).
pub const FRAME_SAMPLES: u32 = 960;
const FRAME: Duration = Duration::from_millis(20);
/// Transit samples kept for the jitter estimate (2 s of packets).
const WINDOW: usize = 100;
/// Concealed frames in a row before we call it the end of a talk spurt.
const MAX_CONCEAL: u32 = 5;
/// A packet this far ahead of the playout point restarts the buffer (1 s).
const RESYNC_FRAMES: u64 = 50;
/// Target depth limits, in frames.
const MIN_TARGET: u32 = 1;
const MAX_TARGET: u32 = 15;

/// How to produce the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this payload.
    Packet(Vec<u8>),
    /// This frame was lost but the next packet is here: decode its in-band FEC.
    Fec(Vec<u8>),
    /// Lost: packet-loss concealment.
    Conceal,
    /// Nothing to play (not talking, or still buffering).
    Silence,
}

/// Counters for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Packets that arrived after their playout time (dropped).
    pub late: u64,
    /// Duplicates dropped.
    pub duplicate: u64,
    /// Frames decoded from a packet.
    pub played: u64,
    /// Frames recovered through FEC.
    pub fec: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Frames skipped to shrink the buffer.
    pub skipped: u64,
}

/// The jitter buffer of one receive slot.
#[derive(Debug)]
pub struct JitterBuffer {
    packets: BTreeMap<u64, Vec<u8>>,
    /// Next timestamp to play, once playing.
    playout: Option<u64>,
    /// Highest extended timestamp seen (for unwrapping).
    highest: Option<u64>,
    first_arrival: Option<Instant>,
    epoch: Option<Instant>,
    transits: VecDeque<i64>,
    target: u32,
    conceal_run: u32,
    /// Between talk spurts: the timeline runs on, playing silence.
    idle: bool,
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    /// Empty, targeting two frames until it has measured something.
    pub fn new() -> Self {
        Self {
            packets: BTreeMap::new(),
            playout: None,
            highest: None,
            first_arrival: None,
            epoch: None,
            transits: VecDeque::with_capacity(WINDOW),
            target: 2,
            conceal_run: 0,
            idle: false,
            stats: JitterStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Current target depth in frames.
    pub fn target_frames(&self) -> u32 {
        self.target
    }

    /// Frames buffered ahead of the playout point.
    pub fn buffered_frames(&self) -> usize {
        self.packets.len()
    }

    /// Forget everything (a new speaker took the slot).
    pub fn reset(&mut self) {
        let stats = self.stats;
        *self = Self::new();
        self.stats = stats;
    }

    /// A payload arrived at `now` with RTP timestamp `rtp_ts`.
    pub fn push(&mut self, now: Instant, rtp_ts: u32, payload: Vec<u8>) {
        let ts = self.unwrap(rtp_ts);
        if let Some(playout) = self.playout {
            if ts < playout {
                self.stats.late += 1;
                return;
            }
        }
        if self.packets.contains_key(&ts) {
            self.stats.duplicate += 1;
            return;
        }
        self.stats.received += 1;
        self.measure(now, ts);
        self.first_arrival.get_or_insert(now);
        self.packets.insert(ts, payload);
    }

    /// Produce the next 20 ms frame.
    pub fn pop(&mut self, now: Instant) -> Playout {
        let Some(mut playout) = self.playout else {
            return self.maybe_start(now);
        };
        let frame = u64::from(FRAME_SAMPLES);
        // Far ahead of our timeline (a new speaker in the slot, a sender clock jump):
        // start over rather than play seconds of silence first.
        if let Some((&oldest, _)) = self.packets.first_key_value() {
            if oldest > playout + frame * RESYNC_FRAMES {
                self.playout = None;
                self.first_arrival = Some(now);
                self.idle = false;
                self.conceal_run = 0;
                return self.maybe_start(now);
            }
        }
        // Too deep (jitter went down, or a burst arrived): skip one frame to catch up.
        if !self.idle && self.depth_from(playout) > self.target + 3 {
            self.packets.remove(&playout);
            playout += frame;
            self.stats.skipped += 1;
        }
        let next = playout + frame;
        if let Some(payload) = self.packets.remove(&playout) {
            self.playout = Some(next);
            self.conceal_run = 0;
            self.idle = false;
            self.stats.played += 1;
            return Playout::Packet(payload);
        }
        if self.idle {
            // Between talk spurts (DTX): keep the timeline running with the sender's clock,
            // so the next spurt plays with the same delay as the last one.
            self.playout = Some(next);
            return Playout::Silence;
        }
        if self.packets.is_empty() {
            // Nothing newer has arrived: the frame is late rather than lost (as far as we
            // know). Conceal *without* advancing, which stretches the delay by a frame so the
            // late packet still plays; that is how the buffer grows under rising jitter.
            self.conceal_run += 1;
            if self.conceal_run > MAX_CONCEAL {
                // End of the spurt. Give back the frames we held, so silence does not add
                // delay to the next spurt.
                self.playout = Some(playout + frame * u64::from(self.conceal_run));
                self.conceal_run = 0;
                self.idle = true;
                return Playout::Silence;
            }
            self.playout = Some(playout);
            self.stats.concealed += 1;
            return Playout::Conceal;
        }
        // Newer packets are here. While the buffer is shallower than the target, the frame
        // may just be reordered: wait for it (stretching the delay towards the target).
        if self.depth_from(playout) < self.target && self.conceal_run < MAX_CONCEAL {
            self.playout = Some(playout);
            self.conceal_run += 1;
            self.stats.concealed += 1;
            return Playout::Conceal;
        }
        // Deep enough: this one is lost. Recover it from the next packet's FEC when we
        // have it, else conceal.
        self.playout = Some(next);
        self.conceal_run = 0;
        if let Some(next_payload) = self.packets.get(&next) {
            self.stats.fec += 1;
            return Playout::Fec(next_payload.clone());
        }
        self.stats.concealed += 1;
        Playout::Conceal
    }

    fn maybe_start(&mut self, now: Instant) -> Playout {
        let Some((&oldest, _)) = self.packets.first_key_value() else {
            return Playout::Silence;
        };
        let waited = self
            .first_arrival
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        let deep_enough = self.depth_from(oldest) >= self.target;
        if deep_enough || waited >= FRAME * self.target {
            self.playout = Some(oldest);
            self.conceal_run = 0;
            return self.pop(now);
        }
        Playout::Silence
    }

    /// Frames from `from` to the newest packet, inclusive.
    fn depth_from(&self, from: u64) -> u32 {
        match self.packets.last_key_value() {
            Some((&newest, _)) if newest >= from => {
                ((newest - from) / u64::from(FRAME_SAMPLES)) as u32 + 1
            }
            _ => 0,
        }
    }

    fn measure(&mut self, now: Instant, ts: u64) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = now.saturating_duration_since(epoch).as_micros() as i64 * 48 / 1000;
        let transit = arrival - ts as i64;
        if self.transits.len() == WINDOW {
            self.transits.pop_front();
        }
        self.transits.push_back(transit);
        if self.transits.len() >= 5 {
            let mut sorted: Vec<i64> = self.transits.iter().copied().collect();
            sorted.sort_unstable();
            let min = sorted[0];
            let p95 = sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)];
            let spread = (p95 - min).max(0) as u64;
            // Spread plus half a frame of margin for the playout tick's phase.
            let frames =
                (spread + u64::from(FRAME_SAMPLES) / 2).div_ceil(u64::from(FRAME_SAMPLES)) as u32;
            self.target = frames.clamp(MIN_TARGET, MAX_TARGET);
        }
    }

    fn unwrap(&mut self, ts: u32) -> u64 {
        let ext = match self.highest {
            None => u64::from(ts) + (1u64 << 32),
            Some(high) => {
                let cycle = high >> 32;
                let candidates =
                    [cycle.saturating_sub(1), cycle, cycle + 1].map(|c| (c << 32) | u64::from(ts));
                candidates
                    .into_iter()
                    .min_by_key(|c| c.abs_diff(high))
                    .unwrap_or(high)
            }
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Deliver `arrivals` (ms, frame index) and pop every 20 ms from `first_tick` ms.
    fn simulate(
        arrivals: &[(u64, u32)],
        base_ts: u32,
        first_tick: u64,
        ticks: u64,
    ) -> (Vec<Playout>, JitterStats) {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        let mut arrivals = arrivals.to_vec();
        arrivals.sort();
        let mut next = 0;
        let mut out = Vec::new();
        for k in 0..ticks {
            let tick = first_tick + 20 * k;
            while next < arrivals.len() && arrivals[next].0 <= tick {
                let (at, i) = arrivals[next];
                jb.push(
                    t0 + ms(at),
                    base_ts.wrapping_add(i * FRAME_SAMPLES),
                    vec![i as u8],
                );
                next += 1;
            }
            out.push(jb.pop(t0 + ms(tick)));
        }
        (out, jb.stats())
    }

    #[test]
    fn reorders_and_recovers_lost_frames_with_fec_then_plc() {
        // Frame 2 lost, 3 and 4 swapped.
        let (out, stats) = simulate(&[(0, 0), (20, 1), (60, 4), (62, 3), (100, 5)], 1000, 10, 14);
        assert_eq!(
            out[..7],
            [
                Playout::Silence,
                Playout::Packet(vec![0]),
                Playout::Packet(vec![1]),
                Playout::Fec(vec![3]),
                Playout::Packet(vec![3]),
                Playout::Packet(vec![4]),
                Playout::Packet(vec![5]),
            ]
        );
        // Nothing more: conceal a little, then fall silent and wait for the next spurt.
        assert_eq!(
            out[7..12],
            [
                Playout::Conceal,
                Playout::Conceal,
                Playout::Conceal,
                Playout::Conceal,
                Playout::Conceal
            ]
        );
        assert_eq!(out[12], Playout::Silence);
        assert_eq!((stats.fec, stats.late), (1, 0));
    }

    #[test]
    fn target_grows_with_jitter_late_packets_still_play_and_timestamps_wrap() {
        // Up to 60 ms of jitter, across the u32 timestamp wrap.
        let arrivals: Vec<(u64, u32)> = (0..100u32)
            .map(|i| (u64::from(i) * 20 + u64::from((i * 37) % 4) * 20, i))
            .collect();
        let (out, stats) = simulate(&arrivals, u32::MAX - 10 * FRAME_SAMPLES, 5, 140);
        let played = out
            .iter()
            .filter(|p| matches!(p, Playout::Packet(_)))
            .count();
        assert!(played >= 95, "played {played}, stats {stats:?}");
        assert!(stats.late <= 3, "{stats:?}");
        // In order, none twice.
        let order: Vec<u8> = out
            .iter()
            .filter_map(|p| {
                if let Playout::Packet(p) = p {
                    Some(p[0])
                } else {
                    None
                }
            })
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }

    #[test]
    fn a_new_spurt_after_dtx_resyncs_instead_of_concealing_the_gap() {
        let mut arrivals: Vec<(u64, u32)> = (0..10u32).map(|i| (u64::from(i) * 20, i)).collect();
        // 2 s of DTX silence, then a new spurt.
        arrivals.extend((110..120u32).map(|i| (u64::from(i) * 20, i)));
        let (out, stats) = simulate(&arrivals, 0, 10, 130);
        let played = out
            .iter()
            .filter(|p| matches!(p, Playout::Packet(_)))
            .count();
        assert_eq!(played, 20, "{stats:?}");
        assert!(stats.concealed <= 10, "{stats:?}");
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        jb.push(t0, 0, vec![0]);
        jb.push(t0, 0, vec![0]);
        jb.push(t0 + ms(20), FRAME_SAMPLES, vec![1]);
        assert_eq!(jb.pop(t0 + ms(40)), Playout::Packet(vec![0]));
        assert_eq!(jb.pop(t0 + ms(60)), Playout::Packet(vec![1]));
        jb.push(t0 + ms(70), 0, vec![0]);
        assert_eq!(jb.stats().duplicate, 1);
        assert_eq!(jb.stats().late, 1);
    }
}
