//! Shared test helpers: speech audio (espeak-ng when installed, else a synthesized
//! speech-like signal), alignment and normalized cross-correlation.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use haven_client::voice::resample::Resampler;

/// ~3 s of speech at 48 kHz mono: espeak-ng's voice if available (resampled from its
/// 22.05 kHz), else a synthesized vowel-like signal with pitch and formant movement.
pub fn speech_48k() -> Vec<f32> {
    espeak_48k("Haven voice test. The quick brown fox jumps over the lazy dog.")
        .unwrap_or_else(synthesized_speech)
}

/// espeak-ng speaking `text`, at 48 kHz mono, peak-normalized to -6 dBFS.
pub fn espeak_48k(text: &str) -> Option<Vec<f32>> {
    let path: PathBuf =
        std::env::temp_dir().join(format!("haven-espeak-{}.wav", std::process::id()));
    let status = Command::new("espeak-ng")
        .args(["-s", "150", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let mut reader = hound::WavReader::open(&path).ok()?;
    let spec = reader.spec();
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => reader
            .samples::<i16>()
            .filter_map(Result::ok)
            .map(|s| f32::from(s) / 32_768.0)
            .collect(),
        hound::SampleFormat::Float => reader.samples::<f32>().filter_map(Result::ok).collect(),
    };
    let _ = std::fs::remove_file(&path);
    let mut mono = Vec::new();
    haven_client::voice::resample::downmix(&samples, spec.channels, &mut mono);
    let mut out = Vec::new();
    let mut r = Resampler::new(spec.sample_rate, 48_000);
    r.process(&mono, &mut out);
    r.process(&vec![0.0; 64], &mut out);
    let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs())).max(1e-6);
    Some(out.into_iter().map(|s| s * 0.5 / peak).collect())
}

/// A deterministic speech-like signal: voiced syllables (glottal pulse train through two
/// moving formant resonators) separated by short pauses.
pub fn synthesized_speech() -> Vec<f32> {
    let rate = 48_000.0f32;
    let mut out = Vec::new();
    let mut phase = 0.0f32;
    let (mut y1, mut y2, mut z1, mut z2) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
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
            let (f1, f2) = (
                500.0 + 300.0 * t + 50.0 * syllable as f32 % 200.0,
                1500.0 - 500.0 * t,
            );
            let res = |f: f32, x: f32, a1: &mut f32, a2: &mut f32| {
                let r = 0.97f32;
                let w = 2.0 * std::f32::consts::PI * f / rate;
                let y = x + 2.0 * r * w.cos() * *a1 - r * r * *a2;
                *a2 = *a1;
                *a1 = y;
                y
            };
            let a = res(f1, pulse, &mut y1, &mut y2);
            let b = res(f2, pulse, &mut z1, &mut z2);
            let env = (std::f32::consts::PI * t).sin();
            out.push(0.02 * env * (a + 0.6 * b));
        }
        out.extend(std::iter::repeat_n(0.0, (rate * 0.08) as usize));
    }
    let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs())).max(1e-6);
    out.into_iter().map(|s| s * 0.5 / peak).collect()
}

/// Normalized cross-correlation of `a` and `b` shifted by `lag` (b delayed), over the
/// overlap.
pub fn ncc_at(a: &[f32], b: &[f32], lag: usize) -> f64 {
    let n = a.len().min(b.len().saturating_sub(lag));
    if n == 0 {
        return 0.0;
    }
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let x = f64::from(a[i]);
        let y = f64::from(b[i + lag]);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// The lag (in samples, `b` behind `a`) with the highest NCC, searched up to `max_lag`,
/// and that NCC.
pub fn best_alignment(a: &[f32], b: &[f32], max_lag: usize) -> (usize, f64) {
    // Coarse search on 8x decimated signals, then refine around the peak (debug builds
    // run these tests, so the search must stay cheap).
    const DEC: usize = 8;
    let dec = |x: &[f32]| {
        x.chunks(DEC)
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect::<Vec<_>>()
    };
    let (da, db) = (dec(a), dec(b));
    let mut best = (0usize, f64::MIN);
    for lag in 0..=max_lag / DEC {
        let c = ncc_at(&da, &db, lag);
        if c > best.1 {
            best = (lag, c);
        }
    }
    let centre = best.0 * DEC;
    let mut fine = (centre, f64::MIN);
    for lag in centre.saturating_sub(2 * DEC)..=(centre + 2 * DEC).min(max_lag) {
        let c = ncc_at(a, b, lag);
        if c > fine.1 {
            fine = (lag, c);
        }
    }
    fine
}

/// NCC after alignment that allows the jitter buffer's small delay changes (it stretches or
/// shrinks playout by whole 20 ms frames as jitter changes): the played signal is split into
/// `window`-sample pieces, each aligned to the reference at the global lag plus a whole
/// number of frames up to ±`slack` samples (refined by ±16 samples), and the correlation is
/// accumulated over all pieces (silent ones included).
pub fn piecewise_ncc(
    reference: &[f32],
    played: &[f32],
    max_lag: usize,
    window: usize,
    slack: usize,
) -> (usize, f64) {
    let (global, _) = best_alignment(reference, played, max_lag);
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    let mut start = 0;
    while start + window <= reference.len() {
        let a = &reference[start..start + window];
        let mut best: Option<(f64, f64, f64)> = None;
        // The jitter buffer moves playout by whole 20 ms frames: try those shifts, each
        // refined by a few samples.
        let frames = (slack / 960) as isize;
        let candidates = (-frames..=frames)
            .flat_map(|j| (-16isize..=16).map(move |d| global as isize + j * 960 + d));
        for lag in candidates.filter(|l| *l >= 0).map(|l| l as usize) {
            let Some(b) = played.get(start + lag..start + lag + window) else {
                continue;
            };
            let (mut xy, mut yy) = (0.0f64, 0.0f64);
            for (x, y) in a.iter().zip(b) {
                xy += f64::from(*x) * f64::from(*y);
                yy += f64::from(*y) * f64::from(*y);
            }
            let score = if yy > 0.0 { xy / yy.sqrt() } else { 0.0 };
            if best.is_none_or(|(s, _, _)| score > s) {
                best = Some((score, xy, yy));
            }
        }
        if let Some((_, xy, yy)) = best {
            ab += xy;
            bb += yy;
            aa += a.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>();
        }
        start += window;
    }
    let ncc = if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    };
    (global, ncc)
}
