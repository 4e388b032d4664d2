//! The audio every simulated participant sends: real Opus frames, encoded ONCE per run with
//! libopus (48 kHz mono, 20 ms, 32 kbit/s, in-band FEC and DTX on) from speech-like sound
//! generated deterministically from the run's seed (or read from a 48 kHz mono WAV, e.g.
//! espeak-ng output resampled with sox).
//!
//! Encoding per participant would cost more CPU than the SFU under test, so the harness
//! keeps a [`FrameTable`] and every publisher plays it from its own offset. Each frame
//! carries its RFC 6464 level, a voice-activity flag, and whether the encoder asked for it
//! to be transmitted (DTX: during silence libopus returns 1–2 byte packets that a real client
//! does not send, plus a comfort-noise frame every 400 ms).
//!
//! The synthetic voice: a glottal pulse train with a wandering pitch, shaped by three formant
//! resonators that change per syllable, unvoiced (noise) syllables in between, grouped in
//! talk spurts of 1–3 s separated by 0.4–2 s of near-silence. Not intelligible, but it
//! exercises the encoder like speech does (SILK/hybrid mode, VBR, DTX).

use std::collections::HashMap;
use std::f64::consts::PI;
use std::path::Path;
use std::sync::Arc;

use opus::{Application, Bitrate, Channels, Encoder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const SAMPLE_RATE: u32 = 48_000;
/// Samples (and RTP ticks) in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;
pub const FRAME_MS: u64 = 20;
pub const BITRATE: i32 = 32_000;
/// A 1–2 byte encoder output means "DTX: do not transmit".
const DTX_MAX_BYTES: usize = 2;
/// Frames quieter than this (-dBov) are not flagged as voice activity.
const VOICE_LEVEL_DBOV: u8 = 50;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("WAV {path}: {message}")]
    Wav { path: String, message: String },
    #[error("audio source is empty")]
    Empty,
}

/// One encoded 20 ms frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Shared: str0m takes `Arc<[u8]>` payloads, so sending costs no copy.
    pub payload: Arc<[u8]>,
    /// RFC 6464 level, 0..=127 (-dBov).
    pub level: u8,
    /// RFC 6464 V flag.
    pub voice: bool,
    /// False for DTX frames the sender skips.
    pub transmit: bool,
}

/// Every frame of the run's audio, and an index from payload hash to frame positions so a
/// subscriber can tell which frame it received (see `latency.rs`).
pub struct FrameTable {
    frames: Vec<Frame>,
    by_hash: HashMap<u64, Vec<u32>>,
}

impl FrameTable {
    /// `seconds` of synthetic speech from `seed`, encoded.
    pub fn synthetic(seed: u64, seconds: u32) -> Result<Self, AudioError> {
        let pcm = synth_speech(seed, seconds);
        Self::encode(&pcm)
    }

    /// A 48 kHz mono 16-bit WAV (make one with `espeak-ng -w x.wav "..." && sox x.wav -r
    /// 48000 -c 1 -b 16 speech.wav`).
    pub fn from_wav(path: &Path) -> Result<Self, AudioError> {
        let err = |message: String| AudioError::Wav {
            path: path.display().to_string(),
            message,
        };
        let mut reader = hound::WavReader::open(path).map_err(|e| err(e.to_string()))?;
        let spec = reader.spec();
        if spec.sample_rate != SAMPLE_RATE
            || spec.channels != 1
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
        {
            return Err(err(format!(
                "need 48000 Hz mono 16-bit PCM, got {} Hz {} ch {} bit (convert with sox -r 48000 -c 1 -b 16)",
                spec.sample_rate, spec.channels, spec.bits_per_sample
            )));
        }
        let pcm: Result<Vec<i16>, _> = reader.samples::<i16>().collect();
        Self::encode(&pcm.map_err(|e| err(e.to_string()))?)
    }

    /// Encode PCM (48 kHz mono) once into frames; the tail shorter than a frame is dropped.
    pub fn encode(pcm: &[i16]) -> Result<Self, AudioError> {
        if pcm.len() < FRAME_SAMPLES {
            return Err(AudioError::Empty);
        }
        let mut enc = Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
        enc.set_bitrate(Bitrate::Bits(BITRATE))?;
        enc.set_vbr(true)?;
        enc.set_inband_fec(true)?;
        // In-band FEC is only produced when the encoder expects loss.
        enc.set_packet_loss_perc(5)?;
        enc.set_dtx(true)?;
        let mut out = vec![0u8; haven_sfu::media::MAX_OPUS_PAYLOAD];
        let mut frames = Vec::with_capacity(pcm.len() / FRAME_SAMPLES);
        for chunk in pcm.chunks_exact(FRAME_SAMPLES) {
            let n = enc.encode(chunk, &mut out)?;
            let level = rfc6464_level(chunk);
            frames.push(Frame {
                payload: Arc::from(&out[..n]),
                level,
                voice: level < VOICE_LEVEL_DBOV,
                transmit: n > DTX_MAX_BYTES,
            });
        }
        let mut by_hash: HashMap<u64, Vec<u32>> = HashMap::new();
        for (i, f) in frames.iter().enumerate() {
            if f.transmit {
                by_hash
                    .entry(payload_hash(&f.payload))
                    .or_default()
                    .push(i as u32);
            }
        }
        Ok(Self { frames, by_hash })
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn frame(&self, index: usize) -> &Frame {
        &self.frames[index % self.frames.len()]
    }

    /// Positions of every transmitted frame with exactly these payload bytes.
    pub fn positions_of(&self, payload: &[u8]) -> &[u32] {
        let h = payload_hash(payload);
        match self.by_hash.get(&h) {
            Some(v) => v,
            None => &[],
        }
    }

    pub fn summary(&self) -> AudioSummary {
        let sent: Vec<&Frame> = self.frames.iter().filter(|f| f.transmit).collect();
        let speech: Vec<&&Frame> = sent.iter().filter(|f| f.voice).collect();
        let speech_bytes: usize = speech.iter().map(|f| f.payload.len()).sum();
        AudioSummary {
            frames: self.frames.len(),
            transmitted: sent.len(),
            voice_frames: speech.len(),
            mean_speech_payload_bytes: if speech.is_empty() {
                0.0
            } else {
                speech_bytes as f64 / speech.len() as f64
            },
            distinct_payloads: self.by_hash.len(),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AudioSummary {
    pub frames: usize,
    pub transmitted: usize,
    pub voice_frames: usize,
    pub mean_speech_payload_bytes: f64,
    pub distinct_payloads: usize,
}

/// FNV-1a, 64 bit: deterministic and fast on ~80-byte payloads.
pub fn payload_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// RFC 6464 level of a frame: -dBov of its RMS, 0 (loudest) ..= 127 (silence).
pub fn rfc6464_level(samples: &[i16]) -> u8 {
    if samples.is_empty() {
        return 127;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / samples.len() as f64).sqrt() / 32768.0;
    if rms <= 0.0 {
        return 127;
    }
    (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
}

/// Two-pole resonator (one formant).
#[derive(Clone, Copy, Default)]
struct Resonator {
    a0: f64,
    b1: f64,
    b2: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn tune(&mut self, freq: f64, bandwidth: f64) {
        let fs = f64::from(SAMPLE_RATE);
        let r = (-PI * bandwidth / fs).exp();
        self.b1 = 2.0 * r * (2.0 * PI * freq / fs).cos();
        self.b2 = -r * r;
        self.a0 = 1.0 - r;
    }

    fn step(&mut self, x: f64) -> f64 {
        let y = self.a0 * x + self.b1 * self.y1 + self.b2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// Deterministic speech-like PCM: talk spurts of syllables and silences.
pub fn synth_speech(seed: u64, seconds: u32) -> Vec<i16> {
    let fs = f64::from(SAMPLE_RATE);
    let total = seconds as usize * SAMPLE_RATE as usize;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_a0d1);
    let mut out = Vec::with_capacity(total);
    let base_f0: f64 = rng.gen_range(100.0..200.0);
    let mut formants = [Resonator::default(); 3];
    let mut phase = 0.0f64;
    let mut tilt = 0.0f64;
    let mut hp_prev = 0.0f64;
    // Start with a short silence so DTX engages, then alternate.
    let mut talking = false;
    while out.len() < total {
        let seg_len = if talking {
            rng.gen_range(1.0..3.0)
        } else {
            rng.gen_range(0.4..2.0)
        };
        let seg_end = (out.len() + (seg_len * fs) as usize).min(total);
        if !talking {
            while out.len() < seg_end {
                // Room noise around -75 dBov keeps the encoder honest without defeating DTX.
                out.push(rng.gen_range(-4..=4));
            }
            talking = true;
            continue;
        }
        while out.len() < seg_end {
            let syl_len = ((rng.gen_range(0.12..0.30) * fs) as usize).min(seg_end - out.len());
            let voiced = rng.gen_bool(0.8);
            let f = [
                rng.gen_range(300.0..800.0),
                rng.gen_range(900.0..2300.0),
                rng.gen_range(2400.0..3100.0),
            ];
            for (r, &fr) in formants.iter_mut().zip(&f) {
                r.tune(fr, 80.0 + fr * 0.06);
            }
            let peak: f64 = rng.gen_range(0.15..0.45);
            let f0_start = base_f0 * rng.gen_range(0.85..1.2);
            let f0_end = f0_start * rng.gen_range(0.8..1.05);
            for n in 0..syl_len {
                let t = n as f64 / syl_len.max(1) as f64;
                let env = (PI * t).sin().powf(0.6);
                let src = if voiced {
                    let f0 = f0_start + (f0_end - f0_start) * t;
                    phase += f0 / fs;
                    let pulse = if phase >= 1.0 {
                        phase -= 1.0;
                        1.0
                    } else {
                        0.0
                    };
                    // Spectral tilt of the glottal source (one-pole low-pass).
                    tilt = 0.9 * tilt + pulse;
                    tilt * 0.5 + rng.gen_range(-0.02..0.02)
                } else {
                    let w: f64 = rng.gen_range(-1.0..1.0);
                    let hp = w - hp_prev;
                    hp_prev = w;
                    hp * 0.3
                };
                let mut y = 0.0;
                for r in &mut formants {
                    y += r.step(src);
                }
                let v = (y * env * peak * 32767.0 * 4.0).clamp(-32000.0, 32000.0);
                out.push(v as i16);
            }
            // Gap between syllables.
            let gap = ((rng.gen_range(0.02..0.08) * fs) as usize).min(seg_end - out.len());
            out.extend((0..gap).map(|_| rng.gen_range(-4i16..=4)));
        }
        talking = false;
    }
    out.truncate(total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_speech_is_deterministic_and_has_spurts() {
        let a = synth_speech(7, 4);
        let b = synth_speech(7, 4);
        assert_eq!(a, b);
        assert_ne!(a, synth_speech(8, 4));
        let levels: Vec<u8> = a.chunks_exact(FRAME_SAMPLES).map(rfc6464_level).collect();
        assert!(levels.iter().any(|&l| l < 40), "some loud frames");
        assert!(levels.iter().any(|&l| l > 70), "some silent frames");
    }

    #[test]
    fn encoded_once_into_real_opus_with_dtx() {
        let table = FrameTable::synthetic(42, 20).expect("encode");
        let s = table.summary();
        assert_eq!(s.frames, 1000);
        // Speech frames around 32 kbit/s: ~80 bytes (setup-facts: 69–118).
        assert!(
            (50.0..130.0).contains(&s.mean_speech_payload_bytes),
            "{s:?}"
        );
        // DTX: silences are mostly not transmitted.
        assert!(s.transmitted < s.frames, "{s:?}");
        assert!(s.voice_frames > s.frames / 4, "{s:?}");
        // Every transmitted frame decodes as Opus and its payload finds its position.
        let mut dec = opus::Decoder::new(SAMPLE_RATE, Channels::Mono).expect("decoder");
        let mut pcm = vec![0i16; FRAME_SAMPLES * 3];
        for i in 0..table.len() {
            let f = table.frame(i);
            if !f.transmit {
                continue;
            }
            let n = dec.decode(&f.payload, &mut pcm, false).expect("decodes");
            assert_eq!(n, FRAME_SAMPLES);
            assert!(table.positions_of(&f.payload).contains(&(i as u32)));
        }
        // Speech payloads are nearly all distinct, so hashes identify frames.
        assert!(
            s.distinct_payloads as f64 > 0.9 * s.voice_frames as f64,
            "{s:?}"
        );
    }

    #[test]
    fn levels_follow_rfc6464() {
        assert_eq!(rfc6464_level(&[0; 960]), 127);
        assert_eq!(rfc6464_level(&[32767; 960]), 0);
        // A full-scale sine has an RMS of -3 dBov.
        let sine: Vec<i16> = (0..960)
            .map(|n| ((n as f64 * 2.0 * PI / 48.0).sin() * 32767.0) as i16)
            .collect();
        assert_eq!(rfc6464_level(&sine), 3);
    }
}
