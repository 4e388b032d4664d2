//! The input level meter and "am I speaking" indicator, plus the RFC 6464 audio level the
//! SFU uses to pick the loudest speakers.
//!
//! Speaking is a level above an adaptive noise floor with a short attack and a longer
//! hangover, so the indicator neither flickers between words nor lights up on a fan.

/// One 20 ms frame's reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelReading {
    /// RMS level in dBFS (-127..=0).
    pub dbfs: f32,
    /// A 0..1 meter value for the UI (fast attack, slow release).
    pub meter: f32,
    /// Voice activity.
    pub speaking: bool,
}

impl LevelReading {
    /// RFC 6464 level: 0 (loudest) to 127 (silence), i.e. -dBov.
    pub fn rfc6464_level(&self) -> u8 {
        (-self.dbfs).clamp(0.0, 127.0).round() as u8
    }
}

impl Default for LevelReading {
    fn default() -> Self {
        Self {
            dbfs: -127.0,
            meter: 0.0,
            speaking: false,
        }
    }
}

/// Level meter and voice activity detector over successive frames.
#[derive(Debug, Clone)]
pub struct LevelMeter {
    meter: f32,
    noise_floor: f32,
    above: u32,
    hangover_left: u32,
    speaking: bool,
    last: LevelReading,
}

/// Frames above threshold before speaking turns on (40 ms).
const ATTACK_FRAMES: u32 = 2;
/// Frames speaking stays on after the level falls (300 ms).
const HANGOVER_FRAMES: u32 = 15;
/// Below this, never speaking.
const ABSOLUTE_THRESHOLD_DB: f32 = -50.0;
/// How far above the noise floor speech must be.
const OVER_FLOOR_DB: f32 = 9.0;

impl Default for LevelMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl LevelMeter {
    /// A fresh meter.
    pub fn new() -> Self {
        Self {
            meter: 0.0,
            noise_floor: -70.0,
            above: 0,
            hangover_left: 0,
            speaking: false,
            last: LevelReading::default(),
        }
    }

    /// The latest reading.
    pub fn last(&self) -> LevelReading {
        self.last
    }

    /// Measure one frame.
    pub fn process(&mut self, frame: &[f32]) -> LevelReading {
        let dbfs = rms_dbfs(frame);
        // Floor: follows quiet frames quickly, loud ones very slowly.
        if dbfs < self.noise_floor {
            self.noise_floor = 0.7 * self.noise_floor + 0.3 * dbfs;
        } else {
            self.noise_floor += 0.05;
        }
        self.noise_floor = self.noise_floor.clamp(-90.0, -30.0);
        let loud = dbfs > ABSOLUTE_THRESHOLD_DB && dbfs > self.noise_floor + OVER_FLOOR_DB;
        if loud {
            self.above += 1;
            if self.above >= ATTACK_FRAMES {
                self.speaking = true;
                self.hangover_left = HANGOVER_FRAMES;
            }
        } else {
            self.above = 0;
            if self.hangover_left > 0 {
                self.hangover_left -= 1;
            } else {
                self.speaking = false;
            }
        }
        // -60 dBFS .. 0 dBFS onto 0..1.
        let target = ((dbfs + 60.0) / 60.0).clamp(0.0, 1.0);
        self.meter = if target > self.meter {
            target
        } else {
            self.meter * 0.85 + target * 0.15
        };
        self.last = LevelReading {
            dbfs,
            meter: self.meter,
            speaking: self.speaking,
        };
        self.last
    }
}

/// RMS level of `frame` in dBFS (-127 for digital silence).
pub fn rms_dbfs(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -127.0;
    }
    let mean_sq = frame
        .iter()
        .map(|s| f64::from(*s) * f64::from(*s))
        .sum::<f64>()
        / frame.len() as f64;
    if mean_sq <= 1e-13 {
        return -127.0;
    }
    (10.0 * mean_sq.log10()).clamp(-127.0, 0.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(amp: f32) -> Vec<f32> {
        (0..960).map(|i| (i as f32 * 0.07).sin() * amp).collect()
    }

    #[test]
    fn speaking_turns_on_with_attack_and_off_after_hangover() {
        let mut m = LevelMeter::new();
        for _ in 0..50 {
            assert!(!m.process(&frame(0.001)).speaking);
        }
        assert!(
            !m.process(&frame(0.3)).speaking,
            "one loud frame is not speech yet"
        );
        assert!(m.process(&frame(0.3)).speaking);
        assert!(m.last().meter > 0.7);
        for _ in 0..HANGOVER_FRAMES {
            assert!(
                m.process(&frame(0.001)).speaking,
                "hangover keeps it on between words"
            );
        }
        assert!(!m.process(&frame(0.001)).speaking);
        assert_eq!(
            LevelReading {
                dbfs: -20.4,
                meter: 0.0,
                speaking: true
            }
            .rfc6464_level(),
            20
        );
        assert_eq!(rms_dbfs(&[0.0; 960]), -127.0);
        assert_eq!(LevelReading::default().rfc6464_level(), 127);
    }
}
