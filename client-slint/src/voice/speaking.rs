//! Who is speaking, as this client sees it (sans-IO).
//!
//! A user I hear in one of my receive slots speaks when the packets of that slot say so:
//! every forwarded packet carries the speaker's RFC 6464 level, and
//! [`LevelMeter`] (shared with the SFU) turns levels into a speaking flag that lights up at
//! the first syllable I hear and holds across pauses. For users I do not hear (not among
//! the loudest, or I am deafened) the SFU tells me over the data channel; it says `off` to
//! whatever it said `on` to. A user speaks if either says so.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use haven_proto::speaking::{LevelConfig, LevelMeter, Smoothing, SILENCE_DBOV};
use haven_proto::UserId;

#[derive(Debug, Default, Clone)]
struct Slot {
    user: Option<UserId>,
    meter: LevelMeter,
}

/// Speaking state of everyone I can see, and its changes.
#[derive(Debug, Default)]
pub struct SpeakingView {
    cfg: LevelConfig,
    /// `cfg.smoothing()`, worked out once rather than per packet.
    smoothing: Smoothing,
    slots: Vec<Slot>,
    /// What the SFU's data channel said is speaking.
    told: HashSet<UserId>,
    /// What was last reported through [`Self::poll_change`].
    shown: HashSet<UserId>,
    changes: VecDeque<(UserId, bool)>,
}

impl SpeakingView {
    /// A view for a call with `slots` receive slots.
    pub fn new(slots: usize) -> Self {
        Self {
            slots: vec![Slot::default(); slots],
            ..Self::default()
        }
    }

    /// The slot map says `slot` now carries `user`.
    pub fn set_slot_user(&mut self, slot: usize, user: Option<UserId>) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.user == user {
            return;
        }
        let old = std::mem::replace(&mut s.user, user);
        // A new voice in the slot starts unheard; the old one's level is not theirs.
        s.meter = LevelMeter::default();
        for u in old.into_iter().chain(user) {
            self.reevaluate(u);
        }
    }

    /// A packet arrived on `slot` with this RFC 6464 extension (str0m's form: level as
    /// negative dBov, voice-activity flag).
    pub fn on_audio(
        &mut self,
        now: Instant,
        slot: usize,
        audio_level: Option<i8>,
        voice: Option<bool>,
    ) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let dbov = audio_level.map(|l| (-i16::from(l)).clamp(0, i16::from(SILENCE_DBOV)) as u8);
        if s.meter
            .observe_smoothed(&self.cfg, &self.smoothing, now, dbov, voice)
            .is_some()
        {
            if let Some(u) = s.user {
                self.reevaluate(u);
            }
        }
    }

    /// The SFU's data channel says `user` started or stopped speaking.
    pub fn on_told(&mut self, user: UserId, on: bool) {
        let changed = if on {
            self.told.insert(user)
        } else {
            self.told.remove(&user)
        };
        if changed {
            self.reevaluate(user);
        }
    }

    /// Time passed: speaking holds run out.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut ended = Vec::new();
        for s in &mut self.slots {
            if s.meter.tick(&self.cfg, now) == Some(false) {
                ended.extend(s.user);
            }
        }
        for u in ended {
            self.reevaluate(u);
        }
    }

    /// When a speaking hold runs out next (call [`Self::handle_timeout`] then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.meter.speaking_until(&self.cfg))
            .min()
    }

    /// The next change: a user started (`true`) or stopped speaking.
    pub fn poll_change(&mut self) -> Option<(UserId, bool)> {
        self.changes.pop_front()
    }

    /// Whether `user` is speaking.
    pub fn is_speaking(&self, user: UserId) -> bool {
        self.told.contains(&user)
            || self
                .slots
                .iter()
                .any(|s| s.user == Some(user) && s.meter.speaking())
    }

    fn reevaluate(&mut self, user: UserId) {
        let now = self.is_speaking(user);
        let changed = if now {
            self.shown.insert(user)
        } else {
            self.shown.remove(&user)
        };
        if changed {
            self.changes.push_back((user, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn changes(v: &mut SpeakingView) -> Vec<(UserId, bool)> {
        std::iter::from_fn(|| v.poll_change()).collect()
    }

    #[test]
    fn a_heard_speaker_lights_up_on_the_first_loud_packet_and_off_after_the_hold() {
        let (alice, t0) = (UserId::new_random(), Instant::now());
        let mut v = SpeakingView::new(3);
        v.set_slot_user(1, Some(alice));
        v.on_audio(t0, 1, Some(-127), Some(false));
        assert!(changes(&mut v).is_empty());
        v.on_audio(t0 + ms(20), 1, Some(-30), Some(true));
        assert_eq!(changes(&mut v), vec![(alice, true)]);
        // Pauses between words (DTX: no packets) do not flicker.
        v.on_audio(t0 + ms(300), 1, Some(-35), None);
        v.handle_timeout(t0 + ms(600));
        assert!(changes(&mut v).is_empty());
        assert_eq!(v.poll_timeout(), Some(t0 + ms(700)));
        v.handle_timeout(t0 + ms(700));
        assert_eq!(changes(&mut v), vec![(alice, false)]);
        assert_eq!(v.poll_timeout(), None);
    }

    #[test]
    fn quiet_packets_and_the_voice_flag_do_not_count_as_speech() {
        let (alice, t0) = (UserId::new_random(), Instant::now());
        let mut v = SpeakingView::new(1);
        v.set_slot_user(0, Some(alice));
        v.on_audio(t0, 0, Some(-90), None);
        v.on_audio(t0 + ms(20), 0, Some(-10), Some(false));
        assert!(changes(&mut v).is_empty());
        assert!(!v.is_speaking(alice));
    }

    #[test]
    fn the_data_channel_covers_speakers_i_do_not_hear() {
        let (alice, bob) = (UserId::new_random(), UserId::new_random());
        let mut v = SpeakingView::new(1);
        v.on_told(bob, true);
        assert_eq!(changes(&mut v), vec![(bob, true)]);
        // Heard and told at once: one change, off only when both say off.
        v.set_slot_user(0, Some(alice));
        v.on_audio(Instant::now(), 0, Some(-20), None);
        v.on_told(alice, true);
        assert_eq!(changes(&mut v), vec![(alice, true)]);
        v.on_told(bob, false);
        v.on_told(alice, false);
        assert_eq!(changes(&mut v), vec![(bob, false)]);
        assert!(v.is_speaking(alice));
    }

    #[test]
    fn a_slot_changing_hands_ends_the_old_voice_and_starts_the_new_one_unheard() {
        let (alice, bob, t0) = (UserId::new_random(), UserId::new_random(), Instant::now());
        let mut v = SpeakingView::new(1);
        v.set_slot_user(0, Some(alice));
        v.on_audio(t0, 0, Some(-20), None);
        assert_eq!(changes(&mut v), vec![(alice, true)]);
        v.set_slot_user(0, Some(bob));
        assert_eq!(changes(&mut v), vec![(alice, false)]);
        assert!(!v.is_speaking(bob));
        v.on_audio(t0 + ms(20), 0, Some(-20), None);
        assert_eq!(changes(&mut v), vec![(bob, true)]);
        // Out-of-range slots and levels are ignored, not trusted.
        v.on_audio(t0, 7, Some(-20), None);
        v.set_slot_user(9, Some(alice));
        assert!(changes(&mut v).is_empty());
    }
}
