//! Deadlines of many `Rtc`s in one min-heap, so a timeout wakes only the participants that
//! are due instead of polling every `Rtc` on every tick.
//!
//! Entries are never removed in place: each key's current deadline lives with its owner,
//! and a popped entry that no longer matches it is stale and skipped (lazy deletion).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug)]
pub struct TimerHeap<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Default for TimerHeap<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> TimerHeap<K> {
    pub fn schedule(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// Earliest entry, possibly stale (an early wake-up is harmless).
    pub fn peek(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pop every entry due at `now` for which `is_current(key, at)` holds. A key can appear
    /// twice if it was scheduled twice for the same instant; the caller re-checks.
    pub fn pop_due(
        &mut self,
        now: Instant,
        mut is_current: impl FnMut(K, Instant) -> bool,
    ) -> Vec<(K, Instant)> {
        let mut due = Vec::new();
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if is_current(key, at) {
                due.push((key, at));
            }
        }
        due
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Rebuild from the live deadlines when stale entries pile up.
    pub fn rebuild(&mut self, live: impl Iterator<Item = (Instant, K)>) {
        self.heap = live.map(Reverse).collect();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_due_and_current_entries_fire() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut heap = TimerHeap::default();
        let mut current: HashMap<u32, Instant> = HashMap::new();
        for (k, d) in [(1, 10), (2, 20), (3, 30)] {
            heap.schedule(t0 + ms(d), k);
            current.insert(k, t0 + ms(d));
        }
        // 2 moved later: its old entry is stale.
        current.insert(2, t0 + ms(50));
        heap.schedule(t0 + ms(50), 2);
        assert_eq!(heap.peek(), Some(t0 + ms(10)));
        let due = heap.pop_due(t0 + ms(25), |k, at| current.get(&k) == Some(&at));
        assert_eq!(due, vec![(1, t0 + ms(10))]);
        let due = heap.pop_due(t0 + ms(60), |k, at| current.get(&k) == Some(&at));
        assert_eq!(due, vec![(3, t0 + ms(30)), (2, t0 + ms(50))]);
        assert!(heap.is_empty());
    }
}
