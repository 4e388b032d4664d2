//! What a 5-person call costs this client, measured: I speak (capture → denoise → Opus) while
//! the other four talk and the SFU forwards the 3 loudest into my 3 receive slots (jitter
//! buffer → decode → mix → playback at 48 kHz). The remote streams are encoded beforehand, so
//! only my own work is timed (CPU time of this thread from /proc/thread-self/schedstat).
//! Prints the real-time CPU share and the process RSS; asserts a loose bound so a regression
//! that makes the client unable to keep up fails loudly.

mod common;

use std::time::{Duration, Instant};

use haven_client::voice::{EngineConfig, VoiceEngine};
use haven_proto::UserId;

/// An encoded frame: RTP timestamp and Opus payload.
type Packet = (u32, Vec<u8>);

fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .map(Duration::from_nanos)
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_five_person_call_costs_a_fraction_of_a_core() {
    let speech = common::speech_48k();
    let seconds = speech.len() as f64 / 48_000.0;
    // Four remote speakers (same voice, shifted), pre-encoded.
    let remotes: Vec<(UserId, Vec<Packet>)> = (0..4)
        .map(|k| {
            let mut enc = VoiceEngine::new(EngineConfig::default(), 1000 * k).unwrap();
            enc.set_transmit(true);
            let mut shifted = vec![0.0f32; 4800 * k as usize];
            shifted.extend_from_slice(&speech);
            shifted.truncate(speech.len());
            enc.push_capture(&shifted, 48_000, 1);
            (
                UserId::new_random(),
                std::iter::from_fn(|| enc.poll_encoded())
                    .map(|f| (f.rtp_timestamp, f.payload))
                    .collect(),
            )
        })
        .collect();

    let me = UserId::new_random();
    let mut engine = VoiceEngine::new(
        EngineConfig {
            noise_suppression: true,
            ..EngineConfig::default()
        },
        7,
    )
    .unwrap();
    engine.set_self_user(me);
    engine.set_transmit(true);
    for (slot, (user, _)) in remotes.iter().take(3).enumerate() {
        engine.set_slot_user(slot, Some(*user));
    }
    let t0 = Instant::now();
    let cpu0 = thread_cpu();
    let mut sent = 0;
    let mut out = vec![0.0f32; 480];
    for (tick, chunk) in speech.chunks(480).enumerate() {
        let now = t0 + Duration::from_millis(10 * tick as u64);
        engine.push_capture(chunk, 48_000, 1);
        while engine.poll_encoded().is_some() {
            sent += 1;
        }
        if tick % 2 == 0 {
            // The three loudest remote streams arrive, one packet each per 20 ms.
            for (slot, (_, packets)) in remotes.iter().take(3).enumerate() {
                if let Some((ts, p)) = packets.get(tick / 2) {
                    engine.push_rtp(now, slot, *ts, p);
                }
            }
        }
        engine.pull_playback(now, &mut out, 48_000, 1);
    }
    let cpu = thread_cpu().zip(cpu0).map(|(a, b)| a - b);
    let rss = rss_kib();
    if let Some(cpu) = cpu {
        let share = cpu.as_secs_f64() / seconds;
        println!(
            "5-person call, {seconds:.1} s of audio: {:.1} ms CPU = {:.1} % of one core (debug build, deps opt-level 1); \
             {sent} frames sent, 3 slots decoded; RSS {} MiB",
            cpu.as_secs_f64() * 1000.0,
            share * 100.0,
            rss.unwrap_or(0) / 1024
        );
        assert!(
            share < 0.5,
            "the client could not keep up: {:.0} % of a core",
            share * 100.0
        );
    }
    assert!(sent > 100);
}
