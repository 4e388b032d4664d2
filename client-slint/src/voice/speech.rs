//! Speech for bots and demos: espeak-ng's voice (generated once to a temp WAV, read with a
//! minimal RIFF/PCM reader, resampled to 48 kHz mono), or — without espeak-ng — a
//! synthesized speech-like signal (voiced syllables: a pulse train through two moving
//! formant resonators, with short pauses).

use std::path::Path;
use std::process::Command;

use crate::voice::resample::{downmix, Resampler};

/// Why espeak-ng speech could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// espeak-ng could not be run (not installed?).
    #[error("espeak-ng: {0}")]
    Espeak(String),
    /// Reading its WAV file.
    #[error("reading the WAV: {0}")]
    Io(#[from] std::io::Error),
    /// The WAV is not 16-bit PCM / IEEE float in a RIFF container.
    #[error("unsupported WAV: {0}")]
    Format(&'static str),
}

/// `text` spoken by espeak-ng, at 48 kHz mono, peak-normalized to -6 dBFS.
pub fn espeak_48k(text: &str) -> Result<Vec<f32>, SpeechError> {
    let path = std::env::temp_dir().join(format!(
        "haven-speech-{}-{:08x}.wav",
        std::process::id(),
        rand::random::<u32>()
    ));
    let status = Command::new("espeak-ng")
        .args(["-s", "150", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .map_err(|e| SpeechError::Espeak(e.to_string()))?;
    if !status.success() {
        return Err(SpeechError::Espeak(status.to_string()));
    }
    let read = read_wav(&path);
    let _ = std::fs::remove_file(&path);
    let (samples, rate, channels) = read?;
    let mut mono = Vec::new();
    downmix(&samples, channels, &mut mono);
    let mut out = Vec::new();
    let mut r = Resampler::new(rate, 48_000);
    r.process(&mono, &mut out);
    r.process(&[0.0; 64], &mut out);
    Ok(normalize(out))
}

/// espeak-ng speech, or the synthesized signal when espeak-ng is unavailable.
pub fn speech_48k(text: &str) -> Vec<f32> {
    espeak_48k(text).unwrap_or_else(|e| {
        tracing::info!("{e}; using a synthesized speech-like signal");
        synthesized_speech()
    })
}

/// Interleaved samples, sample rate and channel count of a PCM WAV file.
pub fn read_wav(path: &Path) -> Result<(Vec<f32>, u32, u16), SpeechError> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(SpeechError::Format("not RIFF/WAVE"));
    }
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |b: &[u8], i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut pos = 12;
    while let Some(size) = u32_at(&bytes, pos + 4) {
        let id = &bytes[pos..pos + 4];
        let body = pos + 8;
        // espeak-ng streams its WAV and may leave the data size at 0 or 0xffffffff.
        let end = body.saturating_add(size as usize).min(bytes.len());
        if id == b"fmt " {
            let field = |i| u16_at(&bytes, body + i).ok_or(SpeechError::Format("short fmt"));
            let rate = u32_at(&bytes, body + 4).ok_or(SpeechError::Format("short fmt"))?;
            fmt = Some((field(0)?, field(2)?, rate, field(14)?));
        } else if id == b"data" {
            let (format, channels, rate, bits) =
                fmt.ok_or(SpeechError::Format("data before fmt"))?;
            let end = if size == 0 || size == u32::MAX {
                bytes.len()
            } else {
                end
            };
            let data = &bytes[body..end];
            let samples = match (format, bits) {
                (1, 16) => data
                    .chunks_exact(2)
                    .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32_768.0)
                    .collect(),
                (3, 32) => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                _ => return Err(SpeechError::Format("only 16-bit PCM or 32-bit float")),
            };
            if channels == 0 || rate == 0 {
                return Err(SpeechError::Format("zero channels or rate"));
            }
            return Ok((samples, rate, channels));
        }
        pos = end + (end - body) % 2;
        if pos + 8 > bytes.len() {
            break;
        }
    }
    Err(SpeechError::Format("no data chunk"))
}

fn normalize(samples: Vec<f32>) -> Vec<f32> {
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs())).max(1e-6);
    samples.into_iter().map(|s| s * 0.5 / peak).collect()
}

/// A deterministic speech-like signal at 48 kHz: twelve voiced syllables with pauses.
pub fn synthesized_speech() -> Vec<f32> {
    let rate = 48_000.0f32;
    let mut out = Vec::new();
    let mut phase = 0.0f32;
    let (mut y1, mut y2, mut z1, mut z2) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    let resonate = |f: f32, x: f32, a1: &mut f32, a2: &mut f32| {
        let r = 0.97f32;
        let w = 2.0 * std::f32::consts::PI * f / rate;
        let y = x + 2.0 * r * w.cos() * *a1 - r * r * *a2;
        *a2 = *a1;
        *a1 = y;
        y
    };
    for syllable in 0..12 {
        let len = (rate * (0.18 + 0.03 * (syllable % 3) as f32)) as usize;
        for i in 0..len {
            let t = i as f32 / len as f32;
            let f0 = 110.0 + 30.0 * (syllable % 4) as f32 + 20.0 * (std::f32::consts::PI * t).sin();
            phase += f0 / rate;
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                1.0
            } else {
                0.0
            };
            let f1 = 500.0 + 300.0 * t + 50.0 * syllable as f32 % 200.0;
            let f2 = 1500.0 - 500.0 * t;
            let a = resonate(f1, pulse, &mut y1, &mut y2);
            let b = resonate(f2, pulse, &mut z1, &mut z2);
            out.push(0.02 * (std::f32::consts::PI * t).sin() * (a + 0.6 * b));
        }
        out.extend(std::iter::repeat_n(0.0, (rate * 0.08) as usize));
    }
    normalize(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_16_bit_wav_and_rejects_junk() {
        let dir = std::env::temp_dir().join(format!("haven-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.wav");
        let pcm: Vec<u8> = [0i16, 16_384, -16_384]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.extend(16u32.to_le_bytes());
        wav.extend(1u16.to_le_bytes()); // PCM
        wav.extend(1u16.to_le_bytes()); // mono
        wav.extend(22_050u32.to_le_bytes());
        wav.extend(44_100u32.to_le_bytes());
        wav.extend(2u16.to_le_bytes());
        wav.extend(16u16.to_le_bytes());
        wav.extend(b"data");
        wav.extend((pcm.len() as u32).to_le_bytes());
        wav.extend(&pcm);
        std::fs::write(&path, &wav).unwrap();
        let (samples, rate, channels) = read_wav(&path).unwrap();
        assert_eq!((rate, channels), (22_050, 1));
        assert_eq!(samples, vec![0.0, 0.5, -0.5]);
        std::fs::write(&path, b"RIFF junk").unwrap();
        assert!(read_wav(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn synthesized_speech_is_a_few_seconds_at_minus_6_dbfs() {
        let s = synthesized_speech();
        assert!(s.len() > 48_000 && s.len() < 48_000 * 5);
        let peak = s.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((peak - 0.5).abs() < 1e-3);
    }
}
