//! One receive slot of one subscriber: a single continuous outgoing RTP stream into which
//! different speakers' packets are spliced as speaker selection changes.
//!
//! The subscriber's decoder and jitter buffer see one stream with one SSRC (fixed by the
//! str0m send stream of the slot), sequence numbers without artificial gaps and timestamps
//! that keep advancing, so nobody renegotiates when the speaker in a slot changes. Gaps
//! that the speaker's own loss caused are kept, so the receiver can still use Opus FEC.

use std::time::{Duration, Instant};

/// Opus RTP clock.
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// One 20 ms Opus frame in RTP ticks; the smallest timestamp step at a speaker change.
const FRAME_TICKS: u32 = OPUS_CLOCK_RATE / 50;
/// A forward jump bigger than this from the same source means it restarted its stream.
const MAX_SEQ_JUMP: u64 = 3000;

/// Header fields to write for one forwarded packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended (never wrapping) sequence number; str0m derives the SRTP ROC from it.
    pub seq: u64,
    pub timestamp: u32,
    /// Set on the first packet after a speaker change (start of a talk spurt).
    pub marker: bool,
}

#[derive(Clone, Copy, Debug)]
struct Source<K> {
    key: K,
    /// out_seq = src_seq + seq_offset.
    seq_offset: i64,
    /// out_ts = src_ts + ts_offset (mod 2^32).
    ts_offset: u32,
    /// Packets older than this belong to before the switch and can no longer be placed.
    first_src_seq: u64,
    highest_src_seq: u64,
}

#[derive(Clone, Debug)]
pub struct ForwardingSlot<K> {
    source: Option<Source<K>>,
    last_seq: Option<u64>,
    last_ts: u32,
    last_at: Option<Instant>,
    first_seq: u64,
}

impl<K: Copy + Eq> ForwardingSlot<K> {
    /// `first_seq` is the first outgoing sequence number; keep it below 2^16 so the
    /// receiver's rollover counter starts at zero.
    pub fn new(first_seq: u16) -> Self {
        Self {
            source: None,
            last_seq: None,
            last_ts: 0,
            last_at: None,
            first_seq: u64::from(first_seq),
        }
    }

    pub fn current_source(&self) -> Option<K> {
        self.source.map(|s| s.key)
    }

    /// Place a packet from `key` (source extended seq / RTP timestamp) into this slot.
    /// `None` means drop: a straggler from before the slot switched to this source.
    pub fn rewrite(
        &mut self,
        now: Instant,
        key: K,
        src_seq: u64,
        src_ts: u32,
        src_marker: bool,
    ) -> Option<Rewritten> {
        let mut marker = src_marker;
        let src = match self.source {
            Some(s) if s.key == key && src_seq <= s.highest_src_seq + MAX_SEQ_JUMP => s,
            _ => {
                marker = true;
                self.switch_to(now, key, src_seq, src_ts)
            }
        };
        if src_seq < src.first_src_seq {
            return None;
        }
        let seq = (src_seq as i64 + src.seq_offset) as u64;
        let timestamp = src_ts.wrapping_add(src.ts_offset);

        let newest = self.last_seq.is_none_or(|l| seq > l);
        if newest {
            self.last_seq = Some(seq);
            self.last_ts = timestamp;
            self.last_at = Some(now);
        }
        if let Some(s) = self.source.as_mut() {
            s.highest_src_seq = s.highest_src_seq.max(src_seq);
        }
        Some(Rewritten {
            seq,
            timestamp,
            marker,
        })
    }

    fn switch_to(&mut self, now: Instant, key: K, src_seq: u64, src_ts: u32) -> Source<K> {
        let next_seq = self.last_seq.map_or(self.first_seq, |l| l + 1);
        // Advance the timestamp by the wall time since the previous packet (at least one
        // frame), so the receiver's jitter buffer plays the new speaker after the old one.
        let next_ts = match self.last_at {
            None => src_ts,
            Some(at) => {
                let elapsed = now
                    .saturating_duration_since(at)
                    .min(Duration::from_secs(60));
                let ticks = (elapsed.as_micros() as u64 * u64::from(OPUS_CLOCK_RATE) / 1_000_000)
                    .max(u64::from(FRAME_TICKS));
                self.last_ts.wrapping_add(ticks as u32)
            }
        };
        let src = Source {
            key,
            seq_offset: next_seq as i64 - src_seq as i64,
            ts_offset: next_ts.wrapping_sub(src_ts),
            first_src_seq: src_seq,
            highest_src_seq: src_seq,
        };
        self.source = Some(src);
        src
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Duration = Duration::from_millis(20);

    #[test]
    fn first_packet_starts_at_first_seq_and_keeps_source_timestamp() {
        let t0 = Instant::now();
        let mut slot = ForwardingSlot::new(100);
        let r = slot.rewrite(t0, 'a', 70_000, 5_000, false).unwrap();
        assert_eq!(
            r,
            Rewritten {
                seq: 100,
                timestamp: 5_000,
                marker: true
            }
        );
        let r = slot.rewrite(t0 + F, 'a', 70_001, 5_960, false).unwrap();
        assert_eq!(
            r,
            Rewritten {
                seq: 101,
                timestamp: 5_960,
                marker: false
            }
        );
    }

    #[test]
    fn speaker_change_continues_sequence_and_advances_timestamp_by_wall_time() {
        let t0 = Instant::now();
        let mut slot = ForwardingSlot::new(0);
        for i in 0..10u64 {
            slot.rewrite(
                t0 + F * i as u32,
                'a',
                500 + i,
                1_000 + 960 * i as u32,
                false,
            );
        }
        // 'b' speaks 100 ms after 'a''s last packet, with unrelated numbering.
        let at = t0 + F * 9 + Duration::from_millis(100);
        let r = slot.rewrite(at, 'b', 9, 4_000_000_000, false).unwrap();
        assert_eq!(r.seq, 10);
        assert_eq!(r.timestamp, 1_000 + 960 * 9 + 4_800);
        assert!(r.marker);
        let r2 = slot.rewrite(at + F, 'b', 10, 4_000_000_960, false).unwrap();
        assert_eq!(
            (r2.seq, r2.timestamp, r2.marker),
            (11, r.timestamp + 960, false)
        );
        assert_eq!(slot.current_source(), Some('b'));
    }

    #[test]
    fn immediate_switch_steps_at_least_one_frame() {
        let t0 = Instant::now();
        let mut slot = ForwardingSlot::new(0);
        let a = slot.rewrite(t0, 'a', 1, 0, false).unwrap();
        let b = slot.rewrite(t0, 'b', 1, 0, false).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(b.timestamp, 960);
    }

    #[test]
    fn source_loss_gaps_are_preserved_and_reordering_is_passed_through() {
        let t0 = Instant::now();
        let mut slot = ForwardingSlot::new(0);
        slot.rewrite(t0, 'a', 10, 0, false);
        let r = slot.rewrite(t0 + F * 3, 'a', 13, 2_880, false).unwrap();
        assert_eq!(r.seq, 3);
        let late = slot.rewrite(t0 + F * 3, 'a', 12, 1_920, false).unwrap();
        assert_eq!((late.seq, late.timestamp), (2, 1_920));
        // The straggler did not move the stream's head.
        let next = slot.rewrite(t0 + F * 4, 'a', 14, 3_840, false).unwrap();
        assert_eq!(next.seq, 4);
    }

    #[test]
    fn stragglers_from_before_a_switch_are_dropped() {
        let t0 = Instant::now();
        let mut slot = ForwardingSlot::new(0);
        slot.rewrite(t0, 'a', 100, 0, false);
        slot.rewrite(t0 + F, 'b', 50, 0, false);
        // 'a' comes back: that is a new switch, rebased after b's packet...
        let back = slot.rewrite(t0 + F * 2, 'a', 101, 960, false).unwrap();
        assert_eq!(back.seq, 2);
        // ...and a reordered 'a' packet from before the switch cannot be placed.
        assert_eq!(slot.rewrite(t0 + F * 2, 'a', 99, 0, false), None);
    }

    #[test]
    fn timestamps_and_sequence_survive_wraparound() {
        let t0 = Instant::now();
        let mut slot = ForwardingSlot::new(65_534);
        let a = slot.rewrite(t0, 'a', 7, u32::MAX - 500, false).unwrap();
        let b = slot
            .rewrite(t0 + F, 'a', 8, (u32::MAX - 500).wrapping_add(960), false)
            .unwrap();
        let c = slot
            .rewrite(
                t0 + F * 2,
                'a',
                9,
                (u32::MAX - 500).wrapping_add(1920),
                false,
            )
            .unwrap();
        assert_eq!((a.seq, b.seq, c.seq), (65_534, 65_535, 65_536));
        assert_eq!(c.timestamp, 1419);
    }

    #[test]
    fn a_source_restart_is_treated_as_a_switch() {
        let t0 = Instant::now();
        let mut slot = ForwardingSlot::new(0);
        slot.rewrite(t0, 'a', 10, 0, false);
        let r = slot.rewrite(t0 + F, 'a', 60_000, 123, false).unwrap();
        assert_eq!(r.seq, 1);
        assert!(r.marker);
    }
}
