//! Sample-rate and channel conversion between audio devices and the engine's 48 kHz mono.
//!
//! Devices run at whatever rate the OS picks (44.1 kHz is common), Opus and the mixer want
//! 48 kHz mono. A windowed-sinc interpolator (Blackman window, cutoff at the lower Nyquist)
//! keeps speech clean in both directions without another dependency; it streams, so any
//! callback size works.

use std::f64::consts::PI;

/// Half the number of taps of the interpolation kernel.
const HALF_TAPS: usize = 16;

/// Average interleaved channels into mono.
pub fn downmix(interleaved: &[f32], channels: u16, out: &mut Vec<f32>) {
    let channels = usize::from(channels.max(1));
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale),
    );
}

/// Copy mono into every channel of an interleaved buffer.
pub fn upmix(mono: &[f32], channels: u16, out: &mut [f32]) {
    let channels = usize::from(channels.max(1));
    for (frame, &s) in out.chunks_exact_mut(channels).zip(mono) {
        frame.fill(s);
    }
}

/// A streaming mono resampler from `from` Hz to `to` Hz.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    step: f64,
    cutoff: f64,
    history: Vec<f32>,
    /// Position of the next output sample, in input samples relative to `history[0]`.
    pos: f64,
}

impl Resampler {
    /// A converter between the two rates.
    pub fn new(from: u32, to: u32) -> Self {
        let from = from.max(1);
        let to = to.max(1);
        Self {
            from,
            to,
            step: f64::from(from) / f64::from(to),
            cutoff: (f64::from(to) / f64::from(from)).min(1.0) * 0.97,
            // Start with a zero history so the first outputs are centred on real input.
            history: vec![0.0; HALF_TAPS],
            pos: HALF_TAPS as f64,
        }
    }

    /// Input rate.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Whether this is a no-op.
    pub fn is_identity(&self) -> bool {
        self.from == self.to
    }

    /// Convert `input`, appending to `out`. Output sample j sits at input time j/`to`; the
    /// last `HALF_TAPS` input samples wait for more input before they contribute.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        self.history.extend_from_slice(input);
        loop {
            let centre = self.pos.floor();
            let last_needed = centre as usize + HALF_TAPS;
            if last_needed >= self.history.len() {
                break;
            }
            let frac = self.pos - centre;
            let base = centre as usize + 1 - HALF_TAPS;
            let mut acc = 0.0f64;
            for (k, &x) in self.history[base..=last_needed].iter().enumerate() {
                let t = (k as f64 - (HALF_TAPS as f64 - 1.0)) - frac;
                acc += f64::from(x) * self.kernel(t);
            }
            out.push(acc as f32);
            self.pos += self.step;
        }
        // Drop input no future output needs.
        let keep_from = (self.pos.floor() as usize).saturating_sub(HALF_TAPS);
        if keep_from > 0 {
            self.history.drain(..keep_from);
            self.pos -= keep_from as f64;
        }
    }

    fn kernel(&self, t: f64) -> f64 {
        let n = HALF_TAPS as f64;
        if t.abs() >= n {
            return 0.0;
        }
        let x = PI * self.cutoff * t;
        let sinc = if x.abs() < 1e-9 { 1.0 } else { x.sin() / x };
        // Blackman window over [-n, n].
        let w = 0.42 + 0.5 * (PI * t / n).cos() + 0.08 * (2.0 * PI * t / n).cos();
        self.cutoff * sinc * w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn converts_44k1_to_48k_keeping_a_tone_clean_in_odd_chunks() {
        let input = tone(44_100, 440.0, 1.0);
        let mut r = Resampler::new(44_100, 48_000);
        let mut out = Vec::new();
        for chunk in input.chunks(441 + 17) {
            r.process(chunk, &mut out);
        }
        assert!((out.len() as i64 - 48_000).abs() < 40, "{}", out.len());
        // The zero history makes output sample j sit exactly at input time j/48000.
        let ideal = tone(48_000, 440.0, 1.0);
        let err: f32 = out[2000..40_000]
            .iter()
            .zip(&ideal[2000..40_000])
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / 38_000.0;
        assert!(err < 1e-3, "mean square error {err}");
    }

    #[test]
    fn channel_helpers() {
        let mut mono = Vec::new();
        downmix(&[1.0, 0.0, 0.5, 0.5], 2, &mut mono);
        assert_eq!(mono, [0.5, 0.5]);
        let mut stereo = [0.0; 4];
        upmix(&[0.25, -0.25], 2, &mut stereo);
        assert_eq!(stereo, [0.25, 0.25, -0.25, -0.25]);
        let mut same = Vec::new();
        Resampler::new(48_000, 48_000).process(&[1.0, 2.0], &mut same);
        assert_eq!(same, [1.0, 2.0]);
    }
}
