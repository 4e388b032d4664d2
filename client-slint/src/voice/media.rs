//! The client's WebRTC connection to the SFU, sans-IO over str0m: build the offer (one
//! sendonly Opus track only if I may speak, N recvonly receive slots, the `haven` data
//! channel), apply the answer, and move RTP between the network and the voice engine.
//!
//! str0m runs in RTP mode: the engine already produces Opus payloads with their RTP
//! timestamps, and each sent packet carries the RFC 6464 audio level the SFU uses to rank
//! speakers. Time is an input and every mutation is followed by draining outputs, exactly as
//! str0m's discipline requires, so tests can run two peers with simulated time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use haven_proto::datachannel::{SfuToClient, SfuToClientBody, SlotEntry, DATA_CHANNEL_LABEL};
use haven_proto::{SessionId, UserId};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::crypto::CryptoProvider;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::voice::engine::EncodedFrame;

pub use haven_proto::media::{AUDIO_LEVEL_EXT_ID, MID_EXT_ID, OPUS_PT};

/// Receive slots offered by default (the SFU forwards the N loudest speakers).
pub const DEFAULT_SLOTS: usize = 3;

/// Haven's media profile (shared with the SFU through `haven_proto::media`) with this
/// process's one crypto provider.
pub fn haven_rtc_config() -> RtcConfig {
    haven_proto::media::haven_rtc_config().set_crypto_provider(crypto())
}

/// One crypto provider per process (building it loads aws-lc once).
pub fn crypto() -> Arc<CryptoProvider> {
    static CRYPTO: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    CRYPTO
        .get_or_init(|| Arc::new(str0m::crypto::from_feature_flags()))
        .clone()
}

/// Why the media connection failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// str0m refused something (bad SDP, bad candidate, internal error).
    #[error("webrtc: {0}")]
    Rtc(String),
    /// An answer arrived with no offer pending.
    #[error("no offer is pending")]
    NoPendingOffer,
}

/// What the media connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// ICE + DTLS are up.
    Connected,
    /// ICE lost the SFU (the caller rejoins through signaling).
    Disconnected,
    /// The data channel to the SFU opened.
    ChannelOpen,
    /// An audio payload on a receive slot.
    Audio {
        /// Slot index (0-based, in offer order).
        slot: usize,
        /// RTP timestamp.
        rtp_timestamp: u32,
        /// Opus payload.
        payload: Vec<u8>,
        /// RFC 6464 level (negative dBov), if the packet carried one.
        audio_level: Option<i8>,
        /// RFC 6464 voice-activity flag, if the packet carried one.
        voice: Option<bool>,
    },
    /// The SFU's slot map (who is in which slot).
    Slots(Vec<SlotEntry>),
    /// Speaking on/off from the SFU (for users this client does not hear in a slot).
    Speaking {
        /// Their session.
        session: SessionId,
        /// Their user.
        user: UserId,
        /// Started or stopped.
        on: bool,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Our address.
    pub source: SocketAddr,
    /// The peer's.
    pub destination: SocketAddr,
    /// Bytes.
    pub contents: Vec<u8>,
}

/// Offer parameters.
#[derive(Debug, Clone, Copy)]
pub struct MediaConfig {
    /// Offer a send track (only when the channel lets me speak).
    pub can_speak: bool,
    /// Receive slots.
    pub slots: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            can_speak: true,
            slots: DEFAULT_SLOTS,
        }
    }
}

/// The client's media connection.
pub struct ClientMedia {
    rtc: Rtc,
    send_mid: Option<Mid>,
    slot_mids: Vec<Mid>,
    channel: Option<ChannelId>,
    channel_open: bool,
    pending: Option<SdpPendingOffer>,
    ssrc_slot: HashMap<Ssrc, usize>,
    seq: u64,
    transmits: VecDeque<Datagram>,
    events: VecDeque<MediaEvent>,
    timeout: Instant,
    connected: bool,
    /// Data-channel messages we could not read (counted, never fatal).
    pub bad_messages: u64,
}

impl std::fmt::Debug for ClientMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMedia")
            .field("slots", &self.slot_mids.len())
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl ClientMedia {
    /// Build the connection and its SDP offer. `local` are the addresses of our UDP
    /// socket(s), announced as host candidates.
    pub fn offer(
        now: Instant,
        local: &[SocketAddr],
        config: MediaConfig,
    ) -> Result<(Self, String), MediaError> {
        let mut rtc = haven_rtc_config().build(now);
        for addr in local {
            let candidate =
                Candidate::host(*addr, "udp").map_err(|e| MediaError::Rtc(e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        let mut change = rtc.sdp_api();
        let send_mid = config
            .can_speak
            .then(|| change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let slot_mids = (0..config.slots)
            .map(|_| change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
            .collect();
        let channel = change.add_channel(DATA_CHANNEL_LABEL.to_owned());
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| MediaError::Rtc("empty offer".into()))?;
        let mut media = Self {
            rtc,
            send_mid,
            slot_mids,
            channel: Some(channel),
            channel_open: false,
            pending: Some(pending),
            ssrc_slot: HashMap::new(),
            seq: u64::from(rand::random::<u16>() & 0x3fff),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timeout: now,
            connected: false,
            bad_messages: 0,
        };
        media.drain(now);
        Ok((media, offer.to_sdp_string()))
    }

    /// Apply the SFU's answer (from signaling's `joined`).
    pub fn accept_answer(&mut self, now: Instant, sdp: &str) -> Result<(), MediaError> {
        let pending = self.pending.take().ok_or(MediaError::NoPendingOffer)?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| MediaError::Rtc(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| MediaError::Rtc(e.to_string()))?;
        self.drain(now);
        Ok(())
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the data channel is open.
    pub fn channel_open(&self) -> bool {
        self.channel_open
    }

    /// The receive slots' mids, in slot order.
    pub fn slot_mids(&self) -> &[Mid] {
        &self.slot_mids
    }

    /// A datagram arrived on our socket. Bytes that are not for us are ignored.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, bytes) else {
            return;
        };
        if !self.rtc.accepts(&Input::Receive(now, receive)) {
            return;
        }
        // Re-create: `accepts` borrowed the input.
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, bytes) else {
            return;
        };
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!("media input refused: {e}");
        }
        self.drain(now);
    }

    /// Time passed (call at [`poll_timeout`](Self::poll_timeout)).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!("media timeout refused: {e}");
        }
        self.drain(now);
    }

    /// Send one encoded frame (dropped before the connection is up or without a send track).
    pub fn send_frame(&mut self, now: Instant, frame: &EncodedFrame) {
        let Some(mid) = self.send_mid else { return };
        if !self.connected {
            return;
        }
        let seq = self.seq;
        self.seq += 1;
        let exts = ExtensionValues {
            audio_level: Some(-(frame.audio_level.min(127) as i8)),
            voice_activity: Some(frame.voice_activity),
            ..Default::default()
        };
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        stream.write_rtp(
            RtpWrite::new(
                OPUS_PT,
                seq.into(),
                frame.rtp_timestamp,
                now,
                frame.payload.clone(),
            )
            .ext_vals(exts),
        );
        self.drain(now);
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// When to call `handle_timeout`.
    pub fn poll_timeout(&self) -> Instant {
        self.timeout
    }

    fn drain(&mut self, now: Instant) {
        // A Timeout at or before `now` means str0m wants the time fed again before it can
        // make progress; a handful of rounds is plenty.
        for _ in 0..8 {
            let timeout = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => self.transmits.push_back(Datagram {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.to_vec(),
                    }),
                    Ok(Output::Event(e)) => self.on_event(e),
                    Err(e) => {
                        tracing::debug!("media output error: {e}");
                        break now + Duration::from_millis(10);
                    }
                }
            };
            if timeout > now {
                self.timeout = timeout;
                return;
            }
            if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                break;
            }
        }
        self.timeout = now + Duration::from_millis(1);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.events.push_back(MediaEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) if self.connected => {
                self.connected = false;
                self.events.push_back(MediaEvent::Disconnected);
            }
            Event::ChannelOpen(id, _) if Some(id) == self.channel => {
                self.channel_open = true;
                self.events.push_back(MediaEvent::ChannelOpen);
            }
            Event::ChannelData(data) if Some(data.id) == self.channel => {
                match SfuToClient::decode(&data.data) {
                    Ok(msg) => match msg.body {
                        SfuToClientBody::Slots { slots } => {
                            self.events.push_back(MediaEvent::Slots(slots))
                        }
                        SfuToClientBody::Speaking { session, user, on } => self
                            .events
                            .push_back(MediaEvent::Speaking { session, user, on }),
                    },
                    Err(_) => self.bad_messages += 1,
                }
            }
            Event::RtpPacket(p) => {
                let ssrc = p.header.ssrc;
                let slot = match self.ssrc_slot.get(&ssrc) {
                    Some(s) => *s,
                    None => {
                        let mid = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                        let Some(slot) =
                            mid.and_then(|m| self.slot_mids.iter().position(|x| *x == m))
                        else {
                            return;
                        };
                        self.ssrc_slot.insert(ssrc, slot);
                        slot
                    }
                };
                self.events.push_back(MediaEvent::Audio {
                    slot,
                    rtp_timestamp: p.header.timestamp,
                    payload: p.payload.to_vec(),
                    audio_level: p.header.ext_vals.audio_level,
                    voice: p.header.ext_vals.voice_activity,
                });
            }
            _ => {}
        }
    }

    /// The slot a mid belongs to (to interpret the SFU's slot map).
    pub fn slot_of_mid(&self, mid: &str) -> Option<usize> {
        self.slot_mids.iter().position(|m| m.to_string() == mid)
    }
}
