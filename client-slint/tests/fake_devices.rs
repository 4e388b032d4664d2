//! The device layer with a paced fake sound card on cpal's `custom` host: the same
//! `AudioDevices` code that opens a real card opens the fake, whose threads capture and play
//! at real-time pace. Speech into A's fake microphone comes out of B's fake speaker (engine
//! to engine in memory), and the devices keep real-time pace.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haven_client::voice::device::{AudioDevices, FakeSoundCard};
use haven_client::voice::{EngineConfig, VoiceEngine};
use haven_proto::UserId;

#[test]
fn speech_goes_from_a_fake_mic_to_a_fake_speaker_in_real_time() {
    let card_a = FakeSoundCard::new("fake-a");
    let card_b = FakeSoundCard::new("fake-b");
    let devices_a = AudioDevices::with_host(card_a.host());
    let devices_b = AudioDevices::with_host(card_b.host());
    assert_eq!(devices_a.input_names(), ["fake-a"]);
    assert_eq!(devices_b.output_names(), ["fake-b"]);
    assert!(devices_a
        .open_input(Some("no such mic"), |_, _, _| {})
        .is_err());

    let alice = UserId::new_random();
    let mut a = VoiceEngine::new(EngineConfig::default(), 1).unwrap();
    a.set_self_user(alice);
    a.set_transmit(true);
    let b = Arc::new(Mutex::new(
        VoiceEngine::new(EngineConfig::default(), 2).unwrap(),
    ));
    b.lock().unwrap().set_slot_user(0, Some(alice));
    let epoch = Instant::now();

    // A's capture callback encodes and "sends" straight into B's engine (no network here).
    let b_for_mic = b.clone();
    let _mic = devices_a
        .open_input(None, move |samples, rate, channels| {
            a.push_capture(samples, rate, channels);
            let now = Instant::now();
            if let Ok(mut b) = b_for_mic.lock() {
                while let Some(f) = a.poll_encoded() {
                    b.push_rtp(now, 0, f.rtp_timestamp, &f.payload);
                }
            }
        })
        .unwrap();
    let b_for_speaker = b.clone();
    let speaker = devices_b
        .open_output(None, move |out, rate, channels| {
            if let Ok(mut b) = b_for_speaker.lock() {
                b.pull_playback(Instant::now(), out, rate, channels);
            }
        })
        .unwrap();
    assert_eq!((speaker.rate, speaker.channels), (48_000, 1));

    let speech = common::speech_48k();
    let seconds = speech.len() as f64 / 48_000.0 + 0.8;
    card_b.take_played();
    let start = Instant::now();
    card_a.speak_into_mic(&speech);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let played = card_b.take_played();
    let elapsed = start.elapsed().as_secs_f64();
    let _ = epoch;

    // Paced like hardware: samples played track the wall clock (±10 %).
    let expected = elapsed * 48_000.0;
    assert!(
        (played.len() as f64 - expected).abs() < expected * 0.1,
        "played {} in {elapsed:.2} s",
        played.len()
    );
    assert_eq!(
        card_a.mic_pending(),
        0,
        "the mic consumed everything at its pace"
    );
    let (lag, ncc) = common::piecewise_ncc(&speech, &played, 48_000 / 2, 9_600, 3 * 960);
    println!(
        "fake devices: ncc {ncc:.3}, capture-to-playback {:.1} ms",
        lag as f64 / 48.0
    );
    assert!(ncc >= 0.9, "ncc {ncc:.3}");
}

#[test]
fn a_44k1_card_is_resampled_both_ways() {
    let card = FakeSoundCard::with_format("fake-44k1", 44_100, 441);
    let devices = AudioDevices::with_host(card.host());
    let mut engine = VoiceEngine::new(EngineConfig::default(), 1).unwrap();
    engine.set_transmit(true);
    let frames = Arc::new(Mutex::new(0usize));
    let counted = frames.clone();
    let tone: Vec<f32> = (0..44_100)
        .map(|i| (i as f32 * 0.0627).sin() * 0.3)
        .collect();
    card.speak_into_mic(&tone);
    let input = devices
        .open_input(None, move |s, rate, ch| {
            assert_eq!((rate, ch), (44_100, 1));
            engine.push_capture(s, rate, ch);
            if let Ok(mut n) = counted.lock() {
                while engine.poll_encoded().is_some() {
                    *n += 1;
                }
            }
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    drop(input);
    let n = *frames.lock().unwrap();
    // ~600 ms of 44.1 kHz input becomes ~30 frames of 20 ms at 48 kHz.
    assert!((20..=33).contains(&n), "{n} frames");
}
