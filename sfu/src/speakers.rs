//! Speaker selection for one room: which participants' audio goes into the N receive slots.
//!
//! Room-wide, not per subscriber: the room picks N `selected` speakers (slot k carries
//! `selected[k]`) plus one `runner_up`. A subscriber never receives itself, so a subscriber
//! that is itself `selected[k]` gets the runner-up in slot k instead. That keeps the per-packet
//! decision O(1) and lets every listener share one slot map.
//!
//! Rules, in the order they are tried when a non-selected participant sends speech:
//! 1. a free slot is taken at once, so the first syllable is forwarded;
//! 2. a holder silent for `idle_after` is replaced at once (the dominant speaker only after
//!    `dominant_idle_after`, so a pause for breath does not cost them the slot);
//! 3. a speaking holder is replaced only by someone louder by `takeover_margin_db` (smoothed),
//!    never the dominant speaker, and only after it held the slot for `min_hold`;
//! 4. otherwise the speaker may become the runner-up.

use std::hash::Hash;
use std::time::{Duration, Instant};

use haven_proto::speaking::{LevelConfig, LevelMeter, Smoothing};
use rustc_hash::FxHashMap;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelectionConfig {
    pub level: LevelConfig,
    pub idle_after: Duration,
    pub dominant_idle_after: Duration,
    pub takeover_margin_db: f32,
    pub min_hold: Duration,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        Self {
            level: LevelConfig::default(),
            idle_after: Duration::from_millis(100),
            dominant_idle_after: Duration::from_millis(400),
            takeover_margin_db: 6.0,
            min_hold: Duration::from_millis(1000),
        }
    }
}

/// Where one packet from a participant goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To every other member, in slot `k`.
    Slot(usize),
    /// To each selected speaker, in that speaker's own slot.
    RunnerUp,
    /// Nowhere.
    Drop,
}

/// Result of feeding one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub route: Route,
    /// `selected` or `runner_up` changed: slot maps must be re-sent.
    pub selection_changed: bool,
    /// The sender's speaking state changed to this.
    pub speaking: Option<bool>,
}

#[derive(Debug)]
struct Member {
    meter: LevelMeter,
    slot: Option<usize>,
    held_since: Option<Instant>,
}

#[derive(Debug)]
pub struct SpeakerSelector<K> {
    cfg: SelectionConfig,
    /// `cfg.level.smoothing()`, worked out once rather than per packet.
    smoothing: Smoothing,
    members: FxHashMap<K, Member>,
    selected: Vec<Option<K>>,
    runner_up: Option<K>,
    dominant: Option<K>,
}

impl<K: Copy + Eq + Hash> SpeakerSelector<K> {
    pub fn new(slots: usize, cfg: SelectionConfig) -> Self {
        Self {
            smoothing: cfg.level.smoothing(),
            cfg,
            members: FxHashMap::default(),
            selected: vec![None; slots],
            runner_up: None,
            dominant: None,
        }
    }

    pub fn config(&self) -> &SelectionConfig {
        &self.cfg
    }

    pub fn slots(&self) -> usize {
        self.selected.len()
    }

    pub fn selected(&self) -> &[Option<K>] {
        &self.selected
    }

    pub fn runner_up(&self) -> Option<K> {
        self.runner_up
    }

    pub fn dominant(&self) -> Option<K> {
        self.dominant
    }

    pub fn is_speaking(&self, k: K) -> bool {
        self.members.get(&k).is_some_and(|m| m.meter.speaking())
    }

    pub fn speaking_count(&self) -> usize {
        self.members.values().filter(|m| m.meter.speaking()).count()
    }

    /// Who subscriber `to` hears in slot `slot`.
    pub fn source_for(&self, slot: usize, to: K) -> Option<K> {
        match self.selected.get(slot).copied().flatten() {
            Some(k) if k == to => self.runner_up.filter(|r| *r != to),
            other => other,
        }
    }

    /// Feed one packet's level from `k` (added on first sight).
    pub fn observe(
        &mut self,
        now: Instant,
        k: K,
        dbov: Option<u8>,
        voice: Option<bool>,
    ) -> Observation {
        let level = self.cfg.level;
        let member = self.members.entry(k).or_insert_with(|| Member {
            meter: LevelMeter::default(),
            slot: None,
            held_since: None,
        });
        let speaking = member
            .meter
            .observe_smoothed(&level, &self.smoothing, now, dbov, voice);
        let is_speech = level.is_speech(dbov, voice);
        let mut changed = false;

        if let Some(slot) = member.slot {
            self.update_dominant(now, k);
            return Observation {
                route: Route::Slot(slot),
                selection_changed: false,
                speaking,
            };
        }

        if is_speech {
            changed = self.try_take_slot(now, k);
            if !changed {
                changed = self.consider_runner_up(now, k);
            }
        }

        let route = match self.members.get(&k).and_then(|m| m.slot) {
            Some(slot) => Route::Slot(slot),
            None if self.runner_up == Some(k) => Route::RunnerUp,
            None => Route::Drop,
        };
        Observation {
            route,
            selection_changed: changed,
            speaking,
        }
    }

    /// Let time pass; returns members whose speaking state changed.
    pub fn tick(&mut self, now: Instant) -> Vec<(K, bool)> {
        let level = self.cfg.level;
        self.members
            .iter_mut()
            .filter_map(|(k, m)| m.meter.tick(&level, now).map(|s| (*k, s)))
            .collect()
    }

    /// The earliest instant at which [`Self::tick`] would turn someone's speaking off;
    /// `None` when nobody is speaking (nothing for a tick to do).
    pub fn next_tick(&self) -> Option<Instant> {
        self.members
            .values()
            .filter_map(|m| m.meter.speaking_until(&self.cfg.level))
            .min()
    }

    /// Forget `k` (left, or muted): frees its slot, promoting a still-speaking runner-up.
    /// Returns (selection changed, was speaking).
    pub fn remove(&mut self, now: Instant, k: K) -> (bool, bool) {
        let Some(member) = self.members.remove(&k) else {
            return (false, false);
        };
        let mut changed = false;
        if self.runner_up == Some(k) {
            self.runner_up = None;
            changed = true;
        }
        if self.dominant == Some(k) {
            self.dominant = None;
        }
        if let Some(slot) = member.slot {
            self.selected[slot] = None;
            changed = true;
            if let Some(r) = self.runner_up {
                let still_talking = self
                    .members
                    .get(&r)
                    .is_some_and(|m| m.meter.silent_for(now) < self.cfg.idle_after);
                if still_talking {
                    self.runner_up = None;
                    self.assign(now, r, slot);
                }
            }
        }
        (changed, member.meter.speaking())
    }

    fn assign(&mut self, now: Instant, k: K, slot: usize) {
        if let Some(old) = self.selected[slot] {
            if let Some(m) = self.members.get_mut(&old) {
                m.slot = None;
                m.held_since = None;
            }
        }
        self.selected[slot] = Some(k);
        if let Some(m) = self.members.get_mut(&k) {
            m.slot = Some(slot);
            m.held_since = Some(now);
        }
        if self.runner_up == Some(k) {
            self.runner_up = None;
        }
        if self.dominant.is_none() {
            self.dominant = Some(k);
        }
    }

    fn try_take_slot(&mut self, now: Instant, k: K) -> bool {
        // 1. Free slot.
        if let Some(slot) = self.selected.iter().position(Option::is_none) {
            self.assign(now, k, slot);
            return true;
        }

        // 2. Idle holder, the longest silent first.
        let idle = self
            .holders()
            .filter(|(_, h, m)| {
                let limit = if Some(*h) == self.dominant {
                    self.cfg.dominant_idle_after
                } else {
                    self.cfg.idle_after
                };
                m.meter.silent_for(now) >= limit
            })
            .max_by_key(|(_, _, m)| m.meter.silent_for(now))
            .map(|(slot, _, _)| slot);
        if let Some(slot) = idle {
            self.assign(now, k, slot);
            return true;
        }

        // 3. Clearly louder than the weakest non-dominant holder that has had its turn.
        let level = self.cfg.level;
        let mine = self
            .members
            .get(&k)
            .map_or(0.0, |m| m.meter.loudness_at(&level, now));
        let weakest = self
            .holders()
            .filter(|(_, h, _)| Some(*h) != self.dominant)
            .map(|(slot, h, m)| (slot, h, m.meter.loudness_at(&level, now), m.held_since))
            .min_by(|a, b| a.2.total_cmp(&b.2));
        if let Some((slot, holder, theirs, held_since)) = weakest {
            let had_turn =
                held_since.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.min_hold);
            if had_turn && mine >= theirs + self.cfg.takeover_margin_db {
                self.assign(now, k, slot);
                // Still talking: keep it audible to the selected speakers.
                if self.runner_up.is_none() {
                    self.runner_up = Some(holder);
                }
                return true;
            }
        }
        false
    }

    fn consider_runner_up(&mut self, now: Instant, k: K) -> bool {
        let level = self.cfg.level;
        let replace = match self.runner_up {
            None => true,
            Some(r) if r == k => false,
            Some(r) => match self.members.get(&r) {
                None => true,
                Some(m) if m.meter.silent_for(now) >= self.cfg.idle_after => true,
                Some(m) => {
                    let mine = self
                        .members
                        .get(&k)
                        .map_or(0.0, |m| m.meter.loudness_at(&level, now));
                    mine >= m.meter.loudness_at(&level, now) + self.cfg.takeover_margin_db
                }
            },
        };
        if replace {
            self.runner_up = Some(k);
        }
        replace
    }

    /// The dominant speaker is the loudest holder, with hysteresis so it does not flap.
    fn update_dominant(&mut self, now: Instant, k: K) {
        let level = self.cfg.level;
        let Some(current) = self.dominant else {
            self.dominant = Some(k);
            return;
        };
        if current == k {
            return;
        }
        let loud = |key: &K| {
            self.members
                .get(key)
                .map_or(0.0, |m| m.meter.loudness_at(&level, now))
        };
        let Some(m) = self.members.get(&current) else {
            self.dominant = Some(k);
            return;
        };
        let silent = m.meter.silent_for(now);
        // Sticky through short pauses: only a louder holder while the dominant is actually
        // talking, or anyone once the dominant has been quiet for `dominant_idle_after`.
        let gone = m.slot.is_none() || silent >= self.cfg.dominant_idle_after;
        let outshouted = silent < self.cfg.idle_after
            && loud(&k) >= loud(&current) + self.cfg.takeover_margin_db / 2.0;
        if gone || outshouted {
            self.dominant = Some(k);
        }
    }

    fn holders(&self) -> impl Iterator<Item = (usize, K, &Member)> + '_ {
        self.selected.iter().enumerate().filter_map(|(slot, h)| {
            let h = (*h)?;
            self.members.get(&h).map(|m| (slot, h, m))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    struct Sim {
        sel: SpeakerSelector<u32>,
        now: Instant,
    }

    impl Sim {
        fn new(slots: usize) -> Self {
            Self {
                sel: SpeakerSelector::new(slots, SelectionConfig::default()),
                now: Instant::now(),
            }
        }

        /// One 20 ms frame in which each (id, dbov) sends a packet.
        fn frame(&mut self, talkers: &[(u32, u8)]) -> Vec<Observation> {
            self.now += FRAME;
            talkers
                .iter()
                .map(|&(k, d)| self.sel.observe(self.now, k, Some(d), None))
                .collect()
        }

        fn frames(&mut self, n: usize, talkers: &[(u32, u8)]) {
            for _ in 0..n {
                self.frame(talkers);
            }
        }

        fn selected_set(&self) -> Vec<u32> {
            let mut v: Vec<u32> = self.sel.selected().iter().flatten().copied().collect();
            v.sort();
            v
        }
    }

    #[test]
    fn free_slot_is_taken_by_the_first_speech_packet() {
        let mut s = Sim::new(3);
        let obs = s.frame(&[(1, 30)]);
        assert_eq!(obs[0].route, Route::Slot(0));
        assert!(obs[0].selection_changed);
        assert_eq!(obs[0].speaking, Some(true));
        // Silence from a non-selected member takes nothing.
        let obs = s.frame(&[(2, 127)]);
        assert_eq!(obs[0].route, Route::Drop);
        assert!(!obs[0].selection_changed);
    }

    #[test]
    fn subscriber_never_hears_itself_and_gets_the_runner_up_instead() {
        let mut s = Sim::new(2);
        s.frames(3, &[(1, 30), (2, 30), (3, 30)]);
        assert_eq!(s.selected_set(), vec![1, 2]);
        assert_eq!(s.sel.runner_up(), Some(3));
        let slot_of_1 = s.sel.selected().iter().position(|k| *k == Some(1)).unwrap();
        assert_eq!(s.sel.source_for(slot_of_1, 1), Some(3));
        assert_eq!(s.sel.source_for(slot_of_1, 9), Some(1));
        let obs = s.frame(&[(3, 30)]);
        assert_eq!(obs[0].route, Route::RunnerUp);
    }

    #[test]
    fn idle_holder_is_replaced_immediately_but_dominant_survives_short_pauses() {
        let mut s = Sim::new(2);
        // 1 is loud (dominant), 2 quieter.
        s.frames(50, &[(1, 20), (2, 40)]);
        assert_eq!(s.sel.dominant(), Some(1));
        // Both pause 150 ms; then 3 starts: it takes 2's slot (idle > 100 ms), not 1's.
        s.frames(8, &[]);
        let obs = s.frame(&[(3, 35)]);
        assert!(matches!(obs[0].route, Route::Slot(_)));
        assert_eq!(s.selected_set(), vec![1, 3]);
        // 4 starts while 1 has been silent only ~180 ms: no slot (3 is talking, 1 dominant).
        let obs = s.frame(&[(3, 35), (4, 35)]);
        assert_eq!(obs[1].route, Route::RunnerUp);
        // After 1 is silent past 400 ms, 4 gets the dominant's slot.
        s.frames(12, &[(3, 35)]);
        let obs = s.frame(&[(3, 35), (4, 35)]);
        assert!(matches!(obs[1].route, Route::Slot(_)));
        assert_eq!(s.selected_set(), vec![3, 4]);
    }

    #[test]
    fn louder_speaker_takes_over_only_after_min_hold_and_never_from_dominant() {
        let mut s = Sim::new(2);
        s.frames(5, &[(1, 20), (2, 45)]);
        // 3 is much louder than 2 but 2 has held the slot for only 100 ms.
        let obs = s.frame(&[(1, 20), (2, 45), (3, 25)]);
        assert_eq!(obs[2].route, Route::RunnerUp);
        // After min_hold, 3 takes 2's slot; 2 (still talking) becomes runner-up.
        s.frames(50, &[(1, 20), (2, 45), (3, 25)]);
        assert_eq!(s.selected_set(), vec![1, 3]);
        assert_eq!(s.sel.runner_up(), Some(2));
        // 4, louder than everyone, still cannot take the dominant 1's slot... only 3's.
        s.frames(60, &[(1, 20), (3, 25), (4, 10)]);
        assert!(s.selected_set().contains(&1));
    }

    #[test]
    fn quiet_newcomer_does_not_displace_active_speakers() {
        let mut s = Sim::new(2);
        s.frames(100, &[(1, 20), (2, 30), (3, 33)]);
        assert_eq!(s.selected_set(), vec![1, 2]);
    }

    #[test]
    fn three_loudest_of_many_win() {
        let mut s = Sim::new(3);
        // Quiet ones start first and grab the slots.
        s.frames(5, &[(5, 48), (6, 46), (7, 44)]);
        assert_eq!(s.selected_set(), vec![5, 6, 7]);
        let everyone = [(1, 15), (2, 22), (3, 29), (5, 48), (6, 46), (7, 44)];
        s.frames(200, &everyone);
        assert_eq!(s.selected_set(), vec![1, 2, 3]);
    }

    #[test]
    fn leaving_frees_the_slot_and_promotes_a_talking_runner_up() {
        let mut s = Sim::new(2);
        s.frames(5, &[(1, 20), (2, 30), (3, 30)]);
        assert_eq!(s.sel.runner_up(), Some(3));
        let (changed, was_speaking) = s.sel.remove(s.now, 2);
        assert!(changed && was_speaking);
        assert_eq!(s.selected_set(), vec![1, 3]);
        assert_eq!(s.sel.runner_up(), None);
        // Removing an idle member frees the slot for the next speech packet.
        s.frames(20, &[(3, 30)]);
        s.sel.remove(s.now, 1);
        assert_eq!(s.selected_set(), vec![3]);
        let obs = s.frame(&[(4, 40)]);
        assert!(matches!(obs[0].route, Route::Slot(_)));
    }

    #[test]
    fn speaking_turns_off_on_tick_after_hold() {
        let mut s = Sim::new(2);
        assert_eq!(s.sel.next_tick(), None);
        s.frame(&[(1, 20)]);
        let first = s.now;
        s.frame(&[(2, 20)]);
        assert!(s.sel.is_speaking(1));
        // The earliest hold to run out is the one who spoke first.
        let hold = SelectionConfig::default().level.speaking_hold;
        assert_eq!(s.sel.next_tick(), Some(first + hold));
        s.frame(&[(1, 20)]);
        assert_eq!(s.sel.next_tick(), Some(first + FRAME + hold));
        s.sel.remove(s.now, 2);
        assert!(s.sel.tick(s.now + Duration::from_millis(100)).is_empty());
        assert_eq!(
            s.sel.tick(s.now + Duration::from_millis(500)),
            vec![(1, false)]
        );
        assert_eq!(s.sel.speaking_count(), 0);
        assert_eq!(s.sel.next_tick(), None);
    }
}
