//! How a subscriber knows when the packet it just received left its publisher, without
//! touching the payload (it must stay real Opus) and although the SFU rewrites SSRC,
//! sequence number and timestamp of every forwarded packet.
//!
//! Method: publishers and subscribers of a room live in the same worker thread. Every
//! publisher records, per frame-table position, when it last sent that frame ([`SendLog`]).
//! A subscriber hashes the received payload, looks up which table positions carry exactly
//! those bytes ([`crate::audio::FrameTable::positions_of`]), and asks the publisher that the
//! SFU's slot map puts in that slot (mesh: the peer itself) when it sent one of them. The
//! most recent send not later than now and within [`MATCH_WINDOW`] wins. The table loops
//! every ~30 s and speech payloads are practically unique, so the match is unambiguous; DTX
//! comfort-noise frames may repeat, and the "most recent" rule picks the right one unless
//! a packet is delayed by more than the 400 ms DTX interval. If the slot map's publisher
//! did not send it (the map is delivered over SCTP and can trail a speaker change), the
//! room's other publishers are tried and the packet is counted as `slot_map_stale`.

use std::time::{Duration, Instant};

/// A send older than this cannot be the packet just received.
pub const MATCH_WINDOW: Duration = Duration::from_secs(2);

/// Send times of every publisher in one worker, by frame-table position.
pub struct SendLog {
    epoch: Instant,
    table_len: usize,
    /// Per publisher slot: ns since `epoch` + 1 of the last send of each position; 0 = never.
    logs: Vec<Vec<u64>>,
}

/// Result of matching one received packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// Sent by the expected publisher this long ago.
    Expected(Duration),
    /// Sent by another publisher of the room (stale slot map).
    Other {
        publisher: usize,
        latency: Duration,
    },
    Unmatched,
}

impl SendLog {
    pub fn new(epoch: Instant, table_len: usize, publishers: usize) -> Self {
        Self {
            epoch,
            table_len: table_len.max(1),
            logs: (0..publishers).map(|_| Vec::new()).collect(),
        }
    }

    /// `publisher` sent table position `pos` at `at`.
    pub fn record(&mut self, publisher: usize, pos: usize, at: Instant) {
        let Some(log) = self.logs.get_mut(publisher) else {
            return;
        };
        if log.is_empty() {
            log.resize(self.table_len, 0);
        }
        let ns = at.saturating_duration_since(self.epoch).as_nanos() as u64 + 1;
        log[pos % self.table_len] = ns;
    }

    /// When `publisher` most recently sent any of `positions`, at most `MATCH_WINDOW` before
    /// `now`, as the time since.
    pub fn latency(&self, publisher: usize, positions: &[u32], now: Instant) -> Option<Duration> {
        let log = self.logs.get(publisher)?;
        if log.is_empty() {
            return None;
        }
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64 + 1;
        let window = MATCH_WINDOW.as_nanos() as u64;
        positions
            .iter()
            .filter_map(|&p| log.get(p as usize).copied())
            .filter(|&t| t != 0 && t <= now_ns && now_ns - t <= window)
            .max()
            .map(|t| Duration::from_nanos(now_ns - t))
    }

    /// Try `expected` first, then each of `others`.
    pub fn match_packet(
        &self,
        expected: Option<usize>,
        others: &[usize],
        positions: &[u32],
        now: Instant,
    ) -> Match {
        if positions.is_empty() {
            return Match::Unmatched;
        }
        if let Some(e) = expected {
            if let Some(l) = self.latency(e, positions, now) {
                return Match::Expected(l);
            }
        }
        others
            .iter()
            .filter(|&&o| Some(o) != expected)
            .filter_map(|&o| self.latency(o, positions, now).map(|l| (o, l)))
            .min_by_key(|&(_, l)| l)
            .map_or(Match::Unmatched, |(publisher, latency)| Match::Other {
                publisher,
                latency,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn finds_the_send_time_of_the_expected_publisher() {
        let t0 = Instant::now();
        let mut log = SendLog::new(t0, 100, 3);
        log.record(0, 5, t0 + 10 * MS);
        log.record(1, 5, t0 + 12 * MS);
        let m = log.match_packet(Some(0), &[0, 1], &[5], t0 + 15 * MS);
        assert_eq!(m, Match::Expected(5 * MS));
    }

    #[test]
    fn stale_slot_map_falls_back_to_the_room() {
        let t0 = Instant::now();
        let mut log = SendLog::new(t0, 100, 3);
        log.record(2, 7, t0 + 10 * MS);
        let m = log.match_packet(Some(0), &[0, 1, 2], &[7], t0 + 13 * MS);
        assert_eq!(
            m,
            Match::Other {
                publisher: 2,
                latency: 3 * MS
            }
        );
        assert_eq!(
            log.match_packet(Some(0), &[0, 1], &[7], t0 + 13 * MS),
            Match::Unmatched
        );
    }

    #[test]
    fn repeated_payloads_pick_the_most_recent_send_and_old_ones_expire() {
        let t0 = Instant::now();
        let mut log = SendLog::new(t0, 100, 1);
        // The same DTX payload at positions 3 and 23, sent 400 ms apart.
        log.record(0, 3, t0 + 100 * MS);
        log.record(0, 23, t0 + 500 * MS);
        assert_eq!(log.latency(0, &[3, 23], t0 + 510 * MS), Some(10 * MS));
        // Not yet sent (in the future) is ignored.
        assert_eq!(log.latency(0, &[3, 23], t0 + 300 * MS), Some(200 * MS));
        assert_eq!(log.latency(0, &[3, 23], t0 + 5000 * MS), None);
        // Positions wrap around the table.
        log.record(0, 105, t0 + 600 * MS);
        assert_eq!(log.latency(0, &[5], t0 + 601 * MS), Some(MS));
    }
}
