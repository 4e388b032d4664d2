//! One voice call, sans-IO: the media connection ([`ClientMedia`]) and the audio engine
//! ([`VoiceEngine`]) wired together, so the caller only moves datagrams, device buffers and
//! time. The SFU's slot map routes each receive slot to its user (and so to that user's
//! volume, and away from my own stream); speaking ([`SpeakingView`]: the levels of what I
//! hear, the SFU's word for the rest) and the connection state come out as [`CallEvent`]s
//! for the voice model.
//!
//! What stays outside: the UDP socket, the device callbacks and the signaling exchange
//! (offer → `join`, `joined` → [`VoiceCall::accept_answer`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use haven_proto::datachannel::SlotEntry;
use haven_proto::UserId;

use crate::voice::engine::{EngineConfig, EngineError, VoiceEngine};
use crate::voice::level::LevelReading;
use crate::voice::media::{ClientMedia, Datagram, MediaConfig, MediaError, MediaEvent};
use crate::voice::speaking::SpeakingView;

/// What a call reports to the app.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// Media is flowing.
    Connected,
    /// The SFU is unreachable: ask signaling to rejoin.
    Disconnected,
    /// This user started or stopped speaking (heard in a slot, or as the SFU says).
    Speaking {
        /// Who.
        user: UserId,
        /// On or off.
        on: bool,
    },
    /// The slot map changed (who can be heard right now).
    Slots(Vec<SlotEntry>),
}

/// Why a call could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The engine (Opus) failed to initialise.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The media layer refused.
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// A voice call in progress.
pub struct VoiceCall {
    media: ClientMedia,
    engine: VoiceEngine,
    speaking: SpeakingView,
    events: VecDeque<CallEvent>,
}

impl std::fmt::Debug for VoiceCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceCall")
            .field("media", &self.media)
            .finish_non_exhaustive()
    }
}

impl VoiceCall {
    /// Prepare a call for user `me` and produce the SDP offer for signaling's `join`.
    pub fn offer(
        now: Instant,
        me: UserId,
        local: &[SocketAddr],
        media: MediaConfig,
        engine: EngineConfig,
    ) -> Result<(Self, String), CallError> {
        let slots = media.slots;
        let (media, sdp) = ClientMedia::offer(now, local, media)?;
        let mut engine = VoiceEngine::new(engine, rand::random())?;
        engine.set_self_user(me);
        Ok((
            Self {
                media,
                engine,
                speaking: SpeakingView::new(slots),
                events: VecDeque::new(),
            },
            sdp,
        ))
    }

    /// Apply the SFU's answer.
    pub fn accept_answer(&mut self, now: Instant, sdp: &str) -> Result<(), CallError> {
        self.media.accept_answer(now, sdp)?;
        self.pump(now);
        Ok(())
    }

    /// The engine, for settings (transmit, deafen, volumes, noise suppression).
    pub fn engine_mut(&mut self) -> &mut VoiceEngine {
        &mut self.engine
    }

    /// My input level and speaking state.
    pub fn capture_level(&self) -> LevelReading {
        self.engine.capture_level()
    }

    /// Whether media is connected.
    pub fn is_connected(&self) -> bool {
        self.media.is_connected()
    }

    /// A datagram from the SFU.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        self.media.handle_receive(now, source, destination, bytes);
        self.pump(now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.media.poll_timeout() <= now {
            self.media.handle_timeout(now);
        }
        self.speaking.handle_timeout(now);
        self.pump(now);
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Instant {
        let media = self.media.poll_timeout();
        self.speaking.poll_timeout().map_or(media, |t| t.min(media))
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.media.poll_transmit()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// Microphone samples: encode and send whatever frames they complete.
    pub fn push_capture(&mut self, now: Instant, samples: &[f32], rate: u32, channels: u16) {
        self.engine.push_capture(samples, rate, channels);
        while let Some(frame) = self.engine.poll_encoded() {
            self.media.send_frame(now, &frame);
        }
    }

    /// Fill a playback buffer.
    pub fn pull_playback(&mut self, now: Instant, out: &mut [f32], rate: u32, channels: u16) {
        self.engine.pull_playback(now, out, rate, channels);
    }

    fn pump(&mut self, now: Instant) {
        while let Some(event) = self.media.poll_event() {
            match event {
                MediaEvent::Audio {
                    slot,
                    rtp_timestamp,
                    payload,
                    audio_level,
                    voice,
                } => {
                    self.speaking.on_audio(now, slot, audio_level, voice);
                    self.engine.push_rtp(now, slot, rtp_timestamp, &payload);
                }
                MediaEvent::Connected => self.events.push_back(CallEvent::Connected),
                MediaEvent::Disconnected => self.events.push_back(CallEvent::Disconnected),
                MediaEvent::ChannelOpen => {}
                MediaEvent::Slots(slots) => {
                    for entry in &slots {
                        if let Some(slot) = self.media.slot_of_mid(&entry.mid) {
                            self.engine.set_slot_user(slot, entry.user);
                            self.speaking.set_slot_user(slot, entry.user);
                        }
                    }
                    self.events.push_back(CallEvent::Slots(slots));
                }
                MediaEvent::Speaking { user, on, .. } => self.speaking.on_told(user, on),
            }
        }
        while let Some((user, on)) = self.speaking.poll_change() {
            self.events.push_back(CallEvent::Speaking { user, on });
        }
    }
}
