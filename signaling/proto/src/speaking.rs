//! RFC 6464 audio levels turned into a smoothed loudness and a speaking flag that does not
//! flicker between words: the one definition of "speaking" in Haven.
//!
//! Levels arrive as -dBov (0 = loudest, 127 = silence) in every packet's header extension,
//! so nobody decodes audio to know who is talking. The SFU runs a meter per publisher for
//! speaker selection and the roster; each client runs one per receive slot on the very
//! packets it plays, so a speaker it hears lights up in step with the sound and without a
//! message from the SFU (which sends speaking over the data channel only for speakers a
//! client does not hear).

use std::time::{Duration, Instant};

/// -dBov value RFC 6464 uses for digital silence.
pub const SILENCE_DBOV: u8 = 127;

/// Nominal Opus frame length; the smoothing constants are expressed per frame.
const FRAME: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelConfig {
    /// A packet is speech when its level is this loud or louder (-dBov ≤ this).
    pub speech_dbov: u8,
    /// Smoothing time constant while the level rises; short so a new talker registers fast.
    pub attack: Duration,
    /// Smoothing time constant while it falls; long so pauses between words do not count.
    pub release: Duration,
    /// Speaking stays on this long after the last speech packet.
    pub speaking_hold: Duration,
}

impl Default for LevelConfig {
    fn default() -> Self {
        Self {
            speech_dbov: 50,
            attack: Duration::from_millis(40),
            release: Duration::from_millis(300),
            speaking_hold: Duration::from_millis(400),
        }
    }
}

impl LevelConfig {
    /// Whether one packet carries speech. A packet without a level (extension missing)
    /// counts as quiet speech: it can take a free slot but loses to anyone measured.
    pub fn is_speech(&self, dbov: Option<u8>, voice: Option<bool>) -> bool {
        if voice == Some(false) {
            return false;
        }
        dbov.is_none_or(|d| d <= self.speech_dbov)
    }

    /// The per-packet smoothing factors, worked out once (each is an `exp`).
    pub fn smoothing(&self) -> Smoothing {
        let alpha =
            |tau: Duration| 1.0 - (-FRAME.as_secs_f32() / tau.as_secs_f32().max(1e-3)).exp();
        Smoothing {
            attack: alpha(self.attack),
            release: alpha(self.release),
        }
    }

    fn loudness_sample(&self, dbov: Option<u8>) -> f32 {
        let d = dbov.unwrap_or(self.speech_dbov).min(SILENCE_DBOV);
        f32::from(SILENCE_DBOV - d)
    }
}

/// How far one packet moves the smoothed loudness towards its own level, rising and falling
/// ([`LevelConfig::smoothing`]). The SFU keeps one per room instead of taking an `exp` on
/// every packet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Smoothing {
    attack: f32,
    release: f32,
}

impl Default for Smoothing {
    /// [`LevelConfig::default`]'s.
    fn default() -> Self {
        LevelConfig::default().smoothing()
    }
}

/// Smoothed loudness (dB above silence, 0..=127) and speaking state of one participant.
#[derive(Clone, Debug, Default)]
pub struct LevelMeter {
    loudness: f32,
    updated_at: Option<Instant>,
    last_speech_at: Option<Instant>,
    speaking: bool,
}

impl LevelMeter {
    /// Feed one packet's level. Returns the new speaking state if it changed.
    pub fn observe(
        &mut self,
        cfg: &LevelConfig,
        now: Instant,
        dbov: Option<u8>,
        voice: Option<bool>,
    ) -> Option<bool> {
        self.observe_smoothed(cfg, &cfg.smoothing(), now, dbov, voice)
    }

    /// [`Self::observe`] with `cfg`'s smoothing worked out beforehand (`smoothing` must be
    /// `cfg.smoothing()`).
    pub fn observe_smoothed(
        &mut self,
        cfg: &LevelConfig,
        smoothing: &Smoothing,
        now: Instant,
        dbov: Option<u8>,
        voice: Option<bool>,
    ) -> Option<bool> {
        let sample = cfg.loudness_sample(dbov);
        let base = self.loudness_at(cfg, now);
        let alpha = if sample > base {
            smoothing.attack
        } else {
            smoothing.release
        };
        self.loudness = if self.updated_at.is_none() {
            sample
        } else {
            base + alpha * (sample - base)
        };
        self.updated_at = Some(now);

        if cfg.is_speech(dbov, voice) {
            self.last_speech_at = Some(now);
            if !self.speaking {
                self.speaking = true;
                return Some(true);
            }
            return None;
        }
        self.tick(cfg, now)
    }

    /// Let time pass without packets (DTX, mute, loss). Returns `Some(false)` when the
    /// speaking hold runs out.
    pub fn tick(&mut self, cfg: &LevelConfig, now: Instant) -> Option<bool> {
        if self.speaking && self.silent_for(now) >= cfg.speaking_hold {
            self.speaking = false;
            return Some(false);
        }
        None
    }

    /// Loudness now: the smoothed value, decayed as silence for any gap longer than a frame
    /// (a talker who went quiet under DTX sends almost nothing).
    pub fn loudness_at(&self, cfg: &LevelConfig, now: Instant) -> f32 {
        let Some(at) = self.updated_at else {
            return 0.0;
        };
        let gap = now.saturating_duration_since(at);
        if gap <= 2 * FRAME {
            return self.loudness;
        }
        let missing = (gap - FRAME).as_secs_f32();
        self.loudness * (-missing / cfg.release.as_secs_f32().max(1e-3)).exp()
    }

    /// Time since the last speech packet; `Duration::MAX` if it never spoke.
    pub fn silent_for(&self, now: Instant) -> Duration {
        self.last_speech_at
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t))
    }

    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// When [`Self::tick`] would turn speaking off if no more speech arrives; `None` when
    /// not speaking.
    pub fn speaking_until(&self, cfg: &LevelConfig) -> Option<Instant> {
        self.last_speech_at
            .filter(|_| self.speaking)
            .map(|t| t + cfg.speaking_hold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn first_speech_packet_turns_speaking_on_at_once() {
        let cfg = LevelConfig::default();
        let t0 = Instant::now();
        let mut m = LevelMeter::default();
        assert_eq!(m.observe(&cfg, t0, Some(30), Some(true)), Some(true));
        assert!(m.speaking());
        assert!((m.loudness_at(&cfg, t0) - 97.0).abs() < 0.01);
    }

    #[test]
    fn silence_packets_do_not_count_and_hold_bridges_pauses() {
        let cfg = LevelConfig::default();
        let t0 = Instant::now();
        let mut m = LevelMeter::default();
        assert_eq!(m.observe(&cfg, t0, Some(SILENCE_DBOV), Some(false)), None);
        assert!(!m.speaking());
        m.observe(&cfg, t0, Some(25), None);
        // A 200 ms pause between words: still speaking.
        assert_eq!(m.observe(&cfg, t0 + ms(200), Some(90), None), None);
        assert!(m.speaking());
        // Past the 400 ms hold: off.
        assert_eq!(m.speaking_until(&cfg), Some(t0 + ms(400)));
        assert_eq!(m.tick(&cfg, t0 + ms(401)), Some(false));
        assert_eq!(m.speaking_until(&cfg), None);
        assert_eq!(m.tick(&cfg, t0 + ms(900)), None);
    }

    #[test]
    fn vad_flag_false_overrides_a_loud_level() {
        let cfg = LevelConfig::default();
        assert!(!cfg.is_speech(Some(10), Some(false)));
        assert!(cfg.is_speech(Some(10), None));
        assert!(cfg.is_speech(None, None));
        assert!(!cfg.is_speech(Some(80), Some(true)));
    }

    #[test]
    fn loudness_rises_fast_falls_slow_and_decays_over_gaps() {
        let cfg = LevelConfig::default();
        let t0 = Instant::now();
        let mut m = LevelMeter::default();
        m.observe(&cfg, t0, Some(SILENCE_DBOV), None);
        let mut t = t0;
        for _ in 0..5 {
            t += ms(20);
            m.observe(&cfg, t, Some(27), None);
        }
        // Five frames of attack get most of the way to 100.
        let up = m.loudness_at(&cfg, t);
        assert!(up > 80.0, "{up}");
        for _ in 0..5 {
            t += ms(20);
            m.observe(&cfg, t, Some(SILENCE_DBOV), None);
        }
        let down = m.loudness_at(&cfg, t);
        assert!(down > 50.0 && down < up, "{down}");
        // One second without packets decays towards silence.
        assert!(m.loudness_at(&cfg, t + ms(1000)) < down / 10.0);
    }

    #[test]
    fn precomputed_smoothing_is_the_per_packet_one() {
        let cfg = LevelConfig {
            attack: ms(60),
            ..LevelConfig::default()
        };
        let s = cfg.smoothing();
        // 1 - e^(-20/60) and 1 - e^(-20/300).
        assert!((s.attack - 0.283_469).abs() < 1e-5, "{s:?}");
        assert!((s.release - 0.064_493).abs() < 1e-5, "{s:?}");
        let t0 = Instant::now();
        let (mut a, mut b) = (LevelMeter::default(), LevelMeter::default());
        for (i, level) in [127u8, 30, 30, 90, 40, 127, 127, 20]
            .into_iter()
            .enumerate()
        {
            let t = t0 + ms(20 * i as u64);
            assert_eq!(
                a.observe(&cfg, t, Some(level), None),
                b.observe_smoothed(&cfg, &s, t, Some(level), None)
            );
            assert_eq!(a.loudness_at(&cfg, t), b.loudness_at(&cfg, t));
        }
    }
}
