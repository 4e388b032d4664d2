//! Mixing decoded speakers into one playback signal, each at its user-chosen volume, with a
//! soft limiter so several loud speakers at once never wrap or hard-clip.

/// Largest per-user gain (200 %).
pub const MAX_GAIN: f32 = 2.0;

/// Add `input * gain` into `acc`.
pub fn mix_into(acc: &mut [f32], input: &[f32], gain: f32) {
    let gain = gain.clamp(0.0, MAX_GAIN);
    if gain == 0.0 {
        return;
    }
    for (a, x) in acc.iter_mut().zip(input) {
        *a += x * gain;
    }
}

/// Limit to (-1, 1): linear below the knee, a smooth curve above it, so ordinary speech is
/// untouched and only overloads are shaped.
pub fn soft_limit(samples: &mut [f32]) {
    const KNEE: f32 = 0.8;
    const HEADROOM: f32 = 1.0 - KNEE;
    for s in samples {
        let a = s.abs();
        if a > KNEE {
            let over = (a - KNEE) / HEADROOM;
            let shaped = KNEE + HEADROOM * (over / (1.0 + over));
            *s = shaped.copysign(*s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_with_gain_and_limits_overloads() {
        let mut acc = vec![0.0; 4];
        mix_into(&mut acc, &[0.1, 0.2, 0.9, -0.9], 1.0);
        mix_into(&mut acc, &[0.1, 0.0, 0.9, -0.9], 0.5);
        mix_into(&mut acc, &[5.0; 4], 0.0);
        assert!((acc[0] - 0.15).abs() < 1e-6 && (acc[1] - 0.2).abs() < 1e-6);
        soft_limit(&mut acc);
        assert!((acc[0] - 0.15).abs() < 1e-6, "speech levels pass untouched");
        assert!(acc[2] < 1.0 && acc[2] > 0.8 && acc[3] > -1.0 && acc[3] < -0.8);
        let mut big = vec![100.0, -100.0];
        soft_limit(&mut big);
        assert!(big[0] < 1.0 && big[1] > -1.0);
    }
}
