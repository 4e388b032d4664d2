//! Optional noise suppression with nnnoiseless (a Rust port of RNNoise): 480-sample frames
//! at 48 kHz, so it slots in right before the encoder without another resampling step.

use nnnoiseless::DenoiseState;

/// Samples per denoiser frame (10 ms at 48 kHz).
pub const DENOISE_FRAME: usize = DenoiseState::FRAME_SIZE;

/// A streaming noise suppressor over 48 kHz mono in [-1, 1].
pub struct Denoiser {
    state: Box<DenoiseState<'static>>,
    scaled_in: Vec<f32>,
    scaled_out: Vec<f32>,
}

impl std::fmt::Debug for Denoiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denoiser").finish_non_exhaustive()
    }
}

impl Default for Denoiser {
    fn default() -> Self {
        Self::new()
    }
}

impl Denoiser {
    /// A fresh suppressor.
    pub fn new() -> Self {
        Self {
            state: DenoiseState::new(),
            scaled_in: vec![0.0; DENOISE_FRAME],
            scaled_out: vec![0.0; DENOISE_FRAME],
        }
    }

    /// Denoise a 20 ms frame (960 samples) in place; returns the mean voice probability.
    pub fn process_frame(&mut self, frame: &mut [f32]) -> f32 {
        let mut vad = 0.0;
        let mut n = 0;
        for chunk in frame.chunks_exact_mut(DENOISE_FRAME) {
            // RNNoise works on 16-bit sample magnitudes.
            for (d, s) in self.scaled_in.iter_mut().zip(chunk.iter()) {
                *d = s * 32_768.0;
            }
            vad += self
                .state
                .process_frame(&mut self.scaled_out, &self.scaled_in);
            n += 1;
            for (d, s) in chunk.iter_mut().zip(&self.scaled_out) {
                *d = (s / 32_768.0).clamp(-1.0, 1.0);
            }
        }
        if n == 0 {
            0.0
        } else {
            vad / n as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_noise_is_suppressed() {
        let mut d = Denoiser::new();
        // Deterministic fan-like noise: white noise through a one-pole low-pass.
        let mut seed = 0x1234_5678u32;
        let mut state = 0.0f32;
        let mut noise = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let white = (seed as f32 / u32::MAX as f32 - 0.5) * 0.2;
            state = 0.95 * state + 0.05 * white;
            state
        };
        let (mut before, mut after) = (0.0f32, 0.0f32);
        for i in 0..150 {
            let mut frame: Vec<f32> = (0..960).map(|_| noise()).collect();
            let energy: f32 = frame.iter().map(|s| s * s).sum();
            d.process_frame(&mut frame);
            if i >= 50 {
                before += energy;
                after += frame.iter().map(|s| s * s).sum::<f32>();
            }
        }
        let reduction_db = 10.0 * (before / after.max(1e-12)).log10();
        assert!(reduction_db > 6.0, "only {reduction_db:.1} dB quieter");
    }
}
