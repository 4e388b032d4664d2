//! The whole audio path in memory with simulated time: speech into A's engine in 10 ms
//! device callbacks → Opus (FEC, DTX) → a lossy, jittery, reordering network → B's jitter
//! buffer → decode with FEC/PLC → mix → B's 10 ms playback callbacks. What B plays must
//! match what A said (normalized cross-correlation ≥ 0.9 after alignment; 200 ms pieces may
//! each shift by up to 3 frames, the jitter buffer's own delay adjustments), and A's engine
//! never plays A's own voice.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use haven_client::voice::{EngineConfig, VoiceEngine};
use haven_proto::UserId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Network {
    rng: StdRng,
    loss: f64,
    base: Duration,
    jitter: Duration,
    queue: BTreeMap<(Instant, u64), (u32, Vec<u8>)>,
    n: u64,
    sent: u64,
    dropped: u64,
}

impl Network {
    fn send(&mut self, now: Instant, ts: u32, payload: Vec<u8>) {
        self.sent += 1;
        if self.rng.gen_bool(self.loss) {
            self.dropped += 1;
            return;
        }
        let extra = Duration::from_micros(self.rng.gen_range(0..=self.jitter.as_micros() as u64));
        self.n += 1;
        self.queue
            .insert((now + self.base + extra, self.n), (ts, payload));
    }

    fn due(&mut self, now: Instant) -> Vec<(Instant, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), (ts, p)) = entry.remove_entry();
            out.push((at, ts, p));
        }
        out
    }
}

/// Run speech through A → network → B; returns (what B played, A's own playback, stats).
fn run(speech: &[f32], loss: f64, jitter_ms: u64, seed: u64) -> (Vec<f32>, Vec<f32>, String) {
    let alice = UserId::new_random();
    let bob = UserId::new_random();
    let mut a = VoiceEngine::new(EngineConfig::default(), 12_345).unwrap();
    a.set_self_user(alice);
    a.set_transmit(true);
    // A hears slot 0, where (wrongly, to prove the guard) the SFU put A's own stream.
    a.set_slot_user(0, Some(alice));
    let mut b = VoiceEngine::new(EngineConfig::default(), 999).unwrap();
    b.set_self_user(bob);
    b.set_slot_user(0, Some(alice));

    let mut net = Network {
        rng: StdRng::seed_from_u64(seed),
        loss,
        base: Duration::from_millis(15),
        jitter: Duration::from_millis(jitter_ms),
        queue: BTreeMap::new(),
        n: 0,
        sent: 0,
        dropped: 0,
    };
    let t0 = Instant::now();
    let tick = Duration::from_millis(10);
    let mut played = Vec::new();
    let mut a_played = Vec::new();
    let mut input = speech.to_vec();
    input.extend(std::iter::repeat_n(0.0, 48_000)); // a second of silence to drain
    for (k, chunk) in input.chunks(480).enumerate() {
        let now = t0 + tick * k as u32;
        a.push_capture(chunk, 48_000, 1);
        while let Some(frame) = a.poll_encoded() {
            net.send(now, frame.rtp_timestamp, frame.payload.clone());
            // The same packets reach A's own slot: they must never be heard.
            a.push_rtp(now, 0, frame.rtp_timestamp, &frame.payload);
        }
        for (at, ts, p) in net.due(now) {
            b.push_rtp(at, 0, ts, &p);
        }
        let mut out = [0.0f32; 480];
        b.pull_playback(now, &mut out, 48_000, 1);
        played.extend_from_slice(&out);
        let mut own = [0.0f32; 480];
        a.pull_playback(now, &mut own, 48_000, 1);
        a_played.extend_from_slice(&own);
    }
    let stats = format!(
        "sent {} dropped {} slot {:?}",
        net.sent,
        net.dropped,
        b.slot_stats(0)
    );
    (played, a_played, stats)
}

#[test]
fn speech_survives_a_lossy_jittery_network_and_never_echoes() {
    let speech = common::speech_48k();
    for (loss, jitter, seed) in [(0.0, 0, 1), (0.03, 40, 2), (0.05, 60, 3)] {
        let (played, own, stats) = run(&speech, loss, jitter, seed);
        // 200 ms pieces, each allowed ±3 frames around the global alignment.
        let (lag, ncc) = common::piecewise_ncc(&speech, &played, 48_000 / 4, 9_600, 3 * 960);
        let global_ncc = common::ncc_at(&speech, &played, lag);
        println!(
            "loss {loss} jitter {jitter} ms: ncc {ncc:.3} (single alignment {global_ncc:.3}) at {:.1} ms; {stats}",
            lag as f64 / 48.0
        );
        assert!(
            ncc >= 0.9,
            "loss {loss}, jitter {jitter} ms: ncc {ncc:.3} ({stats})"
        );
        assert!(lag < 48 * 200, "mouth-to-ear delay {} ms", lag / 48);
        assert!(
            own.iter().all(|s| *s == 0.0),
            "A's own voice was played back to A"
        );
    }
}

#[test]
fn the_alignment_metric_is_not_fooled_by_unrelated_audio() {
    let speech = common::speech_48k();
    let reversed: Vec<f32> = speech.iter().rev().copied().collect();
    let (_, ncc) = common::piecewise_ncc(&speech, &reversed, 48_000 / 4, 9_600, 3 * 960);
    assert!(ncc < 0.5, "reversed speech scored {ncc:.3}");
    let silence = vec![0.0f32; speech.len()];
    assert_eq!(
        common::piecewise_ncc(&speech, &silence, 48_000 / 4, 9_600, 3 * 960).1,
        0.0
    );
}
