//! The sans-IO voice engine: PCM in, Opus payloads out; RTP payloads in, PCM out. No
//! devices, sockets or clocks: callers pass samples, payloads and `Instant`s, which is what
//! makes the whole audio path testable in memory, deterministically.
//!
//! Send path: device PCM → mono 48 kHz (resample) → optional noise suppression → level
//! meter / self-speaking → Opus (20 ms, 32 kbit/s, in-band FEC, DTX) → [`EncodedFrame`]s.
//! Receive path: payload per receive slot → adaptive jitter buffer → Opus decode with FEC or
//! PLC on loss → per-user volume → mix → soft limit → device rate/channels.
//!
//! My own stream is never played back: a slot the SFU says carries my user is muted here
//! even if its packets arrive (defence in depth; the SFU should never send it).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use haven_proto::UserId;
use opus::{Application, Bitrate, Channels};

use crate::voice::denoise::Denoiser;
use crate::voice::jitter::{JitterBuffer, JitterStats, Playout, FRAME_SAMPLES};
use crate::voice::level::{LevelMeter, LevelReading};
use crate::voice::mixer::{mix_into, soft_limit};
use crate::voice::resample::{downmix, upmix, Resampler};

/// The engine's internal rate (Opus's RTP clock).
pub const ENGINE_RATE: u32 = 48_000;
/// Samples per 20 ms frame.
pub const FRAME: usize = FRAME_SAMPLES as usize;
/// Largest Opus packet we produce or accept.
const MAX_PACKET: usize = 1275;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Opus bitrate in bit/s.
    pub bitrate: i32,
    /// Loss the encoder plans FEC for, in percent.
    pub expected_loss_percent: i32,
    /// Receive slots (the SFU's N loudest speakers).
    pub slots: usize,
    /// Noise suppression on the send path.
    pub noise_suppression: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            bitrate: 32_000,
            expected_loss_percent: 10,
            slots: 3,
            noise_suppression: false,
        }
    }
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// libopus refused a setting.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// One encoded 20 ms frame, ready for RTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Opus payload.
    pub payload: Vec<u8>,
    /// RTP timestamp (48 kHz clock).
    pub rtp_timestamp: u32,
    /// RFC 6464 level, 0 (loud) ..= 127 (silent).
    pub audio_level: u8,
    /// Voice activity flag of RFC 6464.
    pub voice_activity: bool,
}

/// Per-slot receive counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotStats {
    /// The jitter buffer's counters.
    pub jitter: JitterStats,
    /// Payloads libopus could not decode.
    pub decode_errors: u64,
}

struct Slot {
    user: Option<UserId>,
    jitter: JitterBuffer,
    decoder: opus::Decoder,
    decode_errors: u64,
    level: LevelMeter,
    /// Whether this slot produced audio since the last decode reset (for PLC).
    active: bool,
}

/// The voice engine of one call.
pub struct VoiceEngine {
    config: EngineConfig,
    me: Option<UserId>,
    // Send path.
    encoder: opus::Encoder,
    denoiser: Option<Denoiser>,
    capture_resampler: Option<Resampler>,
    capture_mono: Vec<f32>,
    capture_48k: Vec<f32>,
    capture_level: LevelMeter,
    transmit: bool,
    rtp_timestamp: u32,
    encoded: VecDeque<EncodedFrame>,
    // Receive path.
    slots: Vec<Slot>,
    volumes: HashMap<UserId, f32>,
    deafened: bool,
    playback_resampler: Option<Resampler>,
    playback_fifo: VecDeque<f32>,
    scratch: Vec<f32>,
    mixed: Vec<f32>,
}

impl std::fmt::Debug for VoiceEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceEngine")
            .field("config", &self.config)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl VoiceEngine {
    /// A new engine. `initial_rtp_timestamp` should be random (RFC 3550).
    pub fn new(config: EngineConfig, initial_rtp_timestamp: u32) -> Result<Self, EngineError> {
        let mut encoder = opus::Encoder::new(ENGINE_RATE, Channels::Mono, Application::Voip)?;
        encoder.set_bitrate(Bitrate::Bits(config.bitrate))?;
        encoder.set_inband_fec(true)?;
        encoder.set_packet_loss_perc(config.expected_loss_percent)?;
        encoder.set_dtx(true)?;
        let slots = (0..config.slots)
            .map(|_| Slot::new())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            denoiser: config.noise_suppression.then(Denoiser::new),
            config,
            me: None,
            encoder,
            capture_resampler: None,
            capture_mono: Vec::new(),
            capture_48k: Vec::new(),
            capture_level: LevelMeter::new(),
            transmit: false,
            rtp_timestamp: initial_rtp_timestamp,
            encoded: VecDeque::new(),
            slots,
            volumes: HashMap::new(),
            deafened: false,
            playback_resampler: None,
            playback_fifo: VecDeque::new(),
            scratch: vec![0.0; FRAME],
            mixed: vec![0.0; FRAME],
        })
    }

    /// Who I am: slots carrying this user are never played.
    pub fn set_self_user(&mut self, me: UserId) {
        self.me = Some(me);
    }

    /// Whether captured audio is encoded and sent (the voice model's `transmitting()`:
    /// not muted, not deafened, allowed to speak, PTT held if in PTT mode).
    pub fn set_transmit(&mut self, transmit: bool) {
        self.transmit = transmit;
    }

    /// Deafened: play nothing.
    pub fn set_deafened(&mut self, deafened: bool) {
        self.deafened = deafened;
    }

    /// Switch noise suppression.
    pub fn set_noise_suppression(&mut self, on: bool) {
        self.config.noise_suppression = on;
        match (on, self.denoiser.is_some()) {
            (true, false) => self.denoiser = Some(Denoiser::new()),
            (false, true) => self.denoiser = None,
            _ => {}
        }
    }

    /// A user's playback volume (0.0 ..= 2.0; 1.0 is unchanged).
    pub fn set_user_volume(&mut self, user: UserId, gain: f32) {
        self.volumes
            .insert(user, gain.clamp(0.0, crate::voice::mixer::MAX_GAIN));
    }

    /// The SFU put `user` in `slot` (or emptied it): start that slot afresh.
    pub fn set_slot_user(&mut self, slot: usize, user: Option<UserId>) {
        if let Some(s) = self.slots.get_mut(slot) {
            if s.user != user {
                s.user = user;
                s.jitter.reset();
                let _ = s.decoder.reset_state();
                s.active = false;
            }
        }
    }

    /// The user in a slot.
    pub fn slot_user(&self, slot: usize) -> Option<UserId> {
        self.slots.get(slot).and_then(|s| s.user)
    }

    /// My input level and speaking state (updated even while not transmitting, so the
    /// settings meter works while muted).
    pub fn capture_level(&self) -> LevelReading {
        self.capture_level.last()
    }

    /// Level of what a slot is playing.
    pub fn slot_level(&self, slot: usize) -> LevelReading {
        self.slots
            .get(slot)
            .map(|s| s.level.last())
            .unwrap_or_default()
    }

    /// Receive counters of a slot.
    pub fn slot_stats(&self, slot: usize) -> SlotStats {
        self.slots
            .get(slot)
            .map(|s| SlotStats {
                jitter: s.jitter.stats(),
                decode_errors: s.decode_errors,
            })
            .unwrap_or_default()
    }

    // --- send path ----------------------------------------------------------------------------

    /// Captured interleaved PCM from the input device.
    pub fn push_capture(&mut self, interleaved: &[f32], rate: u32, channels: u16) {
        self.capture_mono.clear();
        downmix(interleaved, channels, &mut self.capture_mono);
        if rate == ENGINE_RATE {
            self.capture_48k.extend_from_slice(&self.capture_mono);
        } else {
            let resampler = match &mut self.capture_resampler {
                Some(r) if r.from_rate() == rate => r,
                slot => slot.insert(Resampler::new(rate, ENGINE_RATE)),
            };
            resampler.process(&self.capture_mono, &mut self.capture_48k);
        }
        let mut offset = 0;
        while self.capture_48k.len() - offset >= FRAME {
            let mut frame = [0.0f32; FRAME];
            frame.copy_from_slice(&self.capture_48k[offset..offset + FRAME]);
            offset += FRAME;
            self.encode_frame(&mut frame);
        }
        self.capture_48k.drain(..offset);
    }

    fn encode_frame(&mut self, frame: &mut [f32; FRAME]) {
        if let Some(d) = &mut self.denoiser {
            d.process_frame(frame);
        }
        let level = self.capture_level.process(frame);
        let timestamp = self.rtp_timestamp;
        self.rtp_timestamp = self.rtp_timestamp.wrapping_add(FRAME_SAMPLES);
        if !self.transmit {
            return;
        }
        let mut out = [0u8; MAX_PACKET];
        let Ok(len) = self.encoder.encode_float(frame, &mut out) else {
            return;
        };
        // One or two bytes is a DTX frame (silence): not worth a packet; the receiver's
        // jitter buffer treats the gap as the end of a talk spurt.
        if len <= 2 {
            return;
        }
        self.encoded.push_back(EncodedFrame {
            payload: out[..len].to_vec(),
            rtp_timestamp: timestamp,
            audio_level: level.rfc6464_level(),
            voice_activity: level.speaking,
        });
    }

    /// The next frame to send.
    pub fn poll_encoded(&mut self) -> Option<EncodedFrame> {
        self.encoded.pop_front()
    }

    // --- receive path -------------------------------------------------------------------------

    /// An RTP payload arrived on a receive slot.
    pub fn push_rtp(&mut self, now: Instant, slot: usize, rtp_timestamp: u32, payload: &[u8]) {
        let me = self.me;
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if me.is_some() && s.user == me {
            return;
        }
        if payload.is_empty() || payload.len() > MAX_PACKET {
            return;
        }
        s.jitter.push(now, rtp_timestamp, payload.to_vec());
    }

    /// Produce one 20 ms frame of the mix at 48 kHz mono.
    pub fn mix_frame(&mut self, now: Instant) -> &[f32] {
        self.mixed.fill(0.0);
        let me = self.me;
        for s in &mut self.slots {
            let playout = s.jitter.pop(now);
            let produced = s.decode(playout, &mut self.scratch);
            let own = me.is_some() && s.user == me;
            if !produced || own {
                s.level.process(&[]);
                continue;
            }
            s.level.process(&self.scratch);
            if self.deafened {
                continue;
            }
            let gain = s
                .user
                .and_then(|u| self.volumes.get(&u))
                .copied()
                .unwrap_or(1.0);
            mix_into(&mut self.mixed, &self.scratch, gain);
        }
        soft_limit(&mut self.mixed);
        &self.mixed
    }

    /// Fill an output device buffer (interleaved, at the device's rate and channels),
    /// mixing as many 20 ms frames as it takes.
    pub fn pull_playback(&mut self, now: Instant, out: &mut [f32], rate: u32, channels: u16) {
        let ch = usize::from(channels.max(1));
        let needed = out.len() / ch;
        let mut converted = Vec::new();
        while self.playback_fifo.len() < needed {
            self.mix_frame(now);
            if rate == ENGINE_RATE {
                self.playback_fifo.extend(self.mixed.iter().copied());
            } else {
                let resampler = match &mut self.playback_resampler {
                    Some(r) if r.to_rate() == rate => r,
                    slot => slot.insert(Resampler::new(ENGINE_RATE, rate)),
                };
                converted.clear();
                resampler.process(&self.mixed, &mut converted);
                self.playback_fifo.extend(converted.iter().copied());
            }
        }
        let mono: Vec<f32> = self.playback_fifo.drain(..needed).collect();
        upmix(&mono, channels, &mut out[..needed * ch]);
    }
}

impl Slot {
    fn new() -> Result<Self, opus::Error> {
        Ok(Self {
            user: None,
            jitter: JitterBuffer::new(),
            decoder: opus::Decoder::new(ENGINE_RATE, Channels::Mono)?,
            decode_errors: 0,
            level: LevelMeter::new(),
            active: false,
        })
    }

    /// Decode according to the jitter buffer's decision; false when there is nothing to play.
    fn decode(&mut self, playout: Playout, out: &mut [f32]) -> bool {
        let result = match &playout {
            Playout::Packet(p) => self.decoder.decode_float(p, out, false),
            Playout::Fec(next) => self.decoder.decode_float(next, out, true),
            // PLC needs a decoder that has heard something; before that there is nothing to extend.
            Playout::Conceal if self.active => self.decoder.decode_float(&[], out, false),
            Playout::Conceal | Playout::Silence => {
                if matches!(playout, Playout::Silence) {
                    self.active = false;
                }
                return false;
            }
        };
        match result {
            Ok(n) if n == out.len() => {
                self.active = true;
                true
            }
            Ok(n) => {
                // A packet of another duration (10/40/60 ms): keep what fits, pad the rest.
                let len = out.len();
                out[n.min(len)..].fill(0.0);
                self.active = true;
                true
            }
            Err(_) => {
                self.decode_errors += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn speechlike(len: usize) -> Vec<f32> {
        // Harmonic-rich, amplitude-modulated: enough for Opus to treat as voice.
        (0..len)
            .map(|i| {
                let t = i as f32 / ENGINE_RATE as f32;
                let env = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t).sin().abs();
                let f0 = 140.0;
                let s: f32 = (1..8)
                    .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                    .sum();
                0.2 * env * s
            })
            .collect()
    }

    #[test]
    fn encodes_only_while_transmitting_and_meters_always() {
        let mut e = VoiceEngine::new(EngineConfig::default(), 1000).unwrap();
        let pcm = speechlike(ENGINE_RATE as usize / 5);
        e.push_capture(&pcm, ENGINE_RATE, 1);
        assert!(e.poll_encoded().is_none(), "muted: nothing is sent");
        assert!(
            e.capture_level().speaking,
            "but the meter and indicator work"
        );
        e.set_transmit(true);
        e.push_capture(&pcm, ENGINE_RATE, 1);
        let frames: Vec<EncodedFrame> = std::iter::from_fn(|| e.poll_encoded()).collect();
        assert_eq!(frames.len(), 10);
        // Timestamps kept running while muted.
        assert_eq!(frames[0].rtp_timestamp, 1000 + 10 * FRAME_SAMPLES);
        assert!(frames
            .iter()
            .all(|f| f.payload.len() > 20 && f.payload.len() < 200 && f.audio_level < 40));
    }

    #[test]
    fn own_slot_is_never_played_and_deafen_silences() {
        let me = UserId::new_random();
        let other = UserId::new_random();
        let mut tx = VoiceEngine::new(EngineConfig::default(), 0).unwrap();
        tx.set_transmit(true);
        tx.push_capture(&speechlike(ENGINE_RATE as usize), ENGINE_RATE, 1);
        let frames: Vec<EncodedFrame> = std::iter::from_fn(|| tx.poll_encoded()).collect();
        let mut rx = VoiceEngine::new(EngineConfig::default(), 0).unwrap();
        rx.set_self_user(me);
        rx.set_slot_user(0, Some(me));
        rx.set_slot_user(1, Some(other));
        let t0 = Instant::now();
        let mut energy = [0.0f32; 2];
        for (i, f) in frames.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * i as u64);
            rx.push_rtp(now, 0, f.rtp_timestamp, &f.payload);
            rx.push_rtp(now, 1, f.rtp_timestamp, &f.payload);
            let _ = rx.mix_frame(now);
            energy[0] += rx.slot_level(0).meter;
            energy[1] += rx.slot_level(1).meter;
        }
        assert_eq!(energy[0], 0.0, "my own stream never reaches the mix");
        assert!(energy[1] > 1.0);
        rx.set_deafened(true);
        let mut out = vec![1.0f32; 1920];
        rx.pull_playback(t0 + Duration::from_secs(2), &mut out, 48_000, 2);
        assert!(out.iter().all(|s| *s == 0.0));
        // Garbage payloads are counted, never a panic.
        rx.set_deafened(false);
        for k in 0..5u32 {
            rx.push_rtp(
                t0 + Duration::from_secs(3),
                2,
                k * FRAME_SAMPLES,
                &[0xff, 0xff, 0xff, 0xff, 0x00],
            );
        }
        for k in 0..10 {
            let _ = rx.mix_frame(t0 + Duration::from_millis(3000 + 20 * k));
        }
        rx.push_rtp(t0, 7, 0, &[1, 2, 3]);
        let _ = rx.slot_stats(2);
    }
}
