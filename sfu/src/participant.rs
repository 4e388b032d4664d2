//! One participant on this node: its str0m `Rtc`, what its offer negotiated (a publish
//! track, receive slots, a data channel), and the discipline of driving that `Rtc`: every
//! mutation is followed by draining `poll_output` until it yields a timeout in the future.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use haven_proto::{RoomId, SessionId, UserId};
use str0m::channel::ChannelId;
use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, Reason, Rtc, RtcError};

use str0m::crypto::CryptoProvider;
use tracing::debug;

use crate::egress::{write_rtp, ExtIds, KeySlot, RtpFields, RtpSealer, WireMid};
use crate::ingress::{Inbound, Opened, RtpOpener};
use crate::slots::ForwardingSlot;
use crate::stun::{StunResponder, StunVerdict};

/// Engine-local handle of a participant; never reused within an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub(crate) u64);

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Something a drive surfaced that the engine must act on.
#[derive(Debug)]
pub(crate) enum Signal {
    Connected,
    IceDisconnected,
    IceReconnected,
    ChannelOpen(ChannelId),
    ChannelClosed(ChannelId),
    ChannelData,
    Closed,
}

/// Where drained output goes; one per engine, shared by every participant's drive.
#[derive(Default)]
pub(crate) struct Outbox {
    pub transmits: VecDeque<Transmit>,
    pub media: VecDeque<(ParticipantId, Inbound)>,
    pub signals: VecDeque<(ParticipantId, Signal)>,
    /// (participant, remote address) pairs str0m started sending to.
    pub learned: Vec<(ParticipantId, SocketAddr)>,
    /// Datagram buffers the IO shell handed back after sending ([`crate::SfuEngine::recycle`]):
    /// a forwarded packet reuses the last one sent, still in cache, instead of a fresh
    /// allocation that is freed again a moment later.
    pub buffers: Vec<Vec<u8>>,
}

/// Room for a forwarded packet's RTP header (12 bytes, the one-byte extension block with
/// audio level and MID) and its SRTP tag (16 bytes for AES-GCM, 10 for HMAC-SHA1).
const MAX_RTP_OVERHEAD: usize = 12 + 4 + 24 + 16;
/// Capacity of a pooled datagram buffer: any forwarded packet fits.
pub(crate) const POOLED_BUFFER: usize = 1500;
/// Buffers kept for reuse per engine (a few receive batches' worth of fan-out).
pub(crate) const MAX_POOLED_BUFFERS: usize = 512;

impl Outbox {
    /// An empty buffer for one datagram of up to `len` bytes.
    pub fn buffer(&mut self, len: usize) -> Vec<u8> {
        match self.buffers.pop() {
            Some(b) if b.capacity() >= len => b,
            _ => Vec::with_capacity(len.max(POOLED_BUFFER)),
        }
    }

    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.buffers.len() < MAX_POOLED_BUFFERS
            && (POOLED_BUFFER..=2 * POOLED_BUFFER).contains(&buf.capacity())
        {
            buf.clear();
            self.buffers.push(buf);
        }
    }
}

/// One recvonly m-line of the subscriber, carrying whoever is in that slot.
pub(crate) struct ReceiveSlot {
    /// The m-line's MID, as forwarded packets carry it.
    pub mid: WireMid,
    pub ssrc: Ssrc,
    pub forwarding: ForwardingSlot<ParticipantId>,
    /// Who the client was last told is in this slot (`None` until told at all).
    pub announced: Option<Option<ParticipantId>>,
}

/// How a publisher's RTP is opened: by str0m until it delivered the first packet (which
/// fixes SSRC and index), then by the SFU ([`crate::ingress`]) when keys were captured.
pub(crate) enum Ingress {
    /// str0m has not delivered RTP yet.
    Waiting,
    /// str0m delivered a packet with this SSRC and extended sequence number.
    Seen {
        ssrc: u32,
        index: u64,
    },
    Lean(Box<RtpOpener>),
    Str0m,
}

/// How forwarded RTP leaves for this subscriber. Decided once, at the first forwarded
/// packet, and never changed: mixing str0m's and our own SRTP on one SSRC could reuse a
/// nonce.
pub(crate) enum Egress {
    Undecided,
    /// Header and SRTP written here ([`crate::egress`]).
    Lean(Box<RtpSealer>),
    /// Through str0m's `write_rtp` and a drain (no keys were captured).
    Str0m,
}

pub(crate) enum Forwarded {
    Sent,
    Late,
    NoSlot,
}

/// `repr(C)` so the fields keep this order: what forwarding reads sits in the first three
/// cache lines (`HOT_LINES`, all prefetched from the id alone), the rest after. Laid out by
/// the compiler, the fields a subscriber's forwarded packet reads were spread over seven of
/// the struct's eleven lines.
#[repr(C, align(64))]
pub(crate) struct Participant {
    // Line 0: every forwarded packet, publisher and subscribers.
    pub id: ParticipantId,
    egress: Egress,
    pub slots: Vec<ReceiveSlot>,
    pub connected: bool,
    /// Deafened: nothing is forwarded to it.
    pub deafened: bool,
    pub can_speak: bool,
    pub server_muted: bool,
    pub self_muted: bool,
    /// The payload type of Opus as negotiated; packets with any other are dropped.
    pub opus_pt: Pt,
    ext_ids: ExtIds,
    // Line 1: where forwarded packets go, from where.
    /// Where media goes (the lean egress path): where str0m last sent DTLS or SRTCP (its
    /// nominated pair; STUN answers go to any address that checks, so they do not count), or
    /// where the peer's last authenticated SRTP came from (WebRTC sends and receives on one
    /// pair, so a NAT rebinding moves it at the next packet).
    media_destination: Option<SocketAddr>,
    local_addr: SocketAddr,
    // Line 2: timers (read after each forward), the publisher's opener and room.
    /// When the `Rtc` next wants `Input::Timeout`.
    pub deadline: Instant,
    /// The deadline currently in the engine's timer heap.
    pub scheduled: Option<Instant>,
    ingress: Ingress,
    pub room: RoomId,
    // Cold: joins, leaves, signaling, the data channel, str0m.
    pub session: SessionId,
    pub user: UserId,
    pub display_name: String,
    /// Who its client was told (data channel) is speaking and not yet told stopped.
    pub told_speaking: Vec<ParticipantId>,
    /// Boxed: an `Rtc` is ~10 KB, and inline it spread the few fields forwarding reads
    /// over a 10 KB stride (a page each) in the engine's table; the media path touches the
    /// `Rtc` only for STUN, DTLS, SCTP and timers.
    pub rtc: Box<Rtc>,
    pub ufrag: String,
    /// Remote addresses routed to this participant (bounded).
    pub addrs: Vec<SocketAddr>,
    last_destination: Option<SocketAddr>,
    /// SRTP keys from the DTLS handshake, negotiated header extension ids, our address.
    keys: KeySlot,
    publish_level_id: Option<u8>,
    /// Answers plain consent refreshes without str0m ([`crate::stun`]); `None` when the
    /// offer named no ICE ufrag we could read.
    stun: Option<StunResponder>,
    pub channel: Option<ChannelId>,
    /// When the SFU last wrote on the data channel.
    channel_written_at: Option<Instant>,
    pub joined_at: Instant,
    pub disconnected_at: Option<Instant>,
    #[cfg(feature = "fault-injection")]
    pub fail_next: bool,
}

/// Cache lines at the start of [`Participant`] that forwarding reads.
pub(crate) const HOT_LINES: usize = 3;

/// Bound on timeout rounds in one drain: str0m normally settles in one, and a misbehaving
/// `Rtc` must not stall the worker.
const MAX_DRAIN_ROUNDS: usize = 4;
/// Remote addresses remembered per participant (ICE may try a few).
const MAX_ADDRS: usize = 4;
/// How often a quiet participant's `Rtc` runs its ICE idle tick. str0m's ICE-lite agent
/// does no checks, yet asks for a timeout every 3 s only to prune pairs that have had no
/// binding request for 15 s; at 500 participants those ticks were all of str0m's timeouts
/// left (167 a second, ~2 % of the node). When that tick is the earliest thing the `Rtc`
/// wants and the data channel has been quiet for [`CHANNEL_QUIET`] (so no SCTP
/// retransmission is waiting behind it), it runs this often instead: a vanished peer is
/// noticed up to 6 s later, inside the disconnect grace. Any input re-polls the `Rtc`.
const ICE_IDLE_TICK: Duration = Duration::from_secs(9);
/// See [`ICE_IDLE_TICK`]: by then what the SFU last wrote on the channel was acknowledged or
/// retransmitted.
const CHANNEL_QUIET: Duration = Duration::from_secs(5);

pub(crate) struct ParticipantInit {
    pub id: ParticipantId,
    pub session: SessionId,
    pub user: UserId,
    pub display_name: String,
    pub room: RoomId,
    pub can_speak: bool,
    pub rtc: Rtc,
    pub ufrag: String,
    pub opus_pt: Pt,
    pub slots: Vec<(Mid, Ssrc)>,
    pub now: Instant,
    pub deadline: Instant,
    pub keys: KeySlot,
    pub ext_ids: ExtIds,
    pub publish_level_id: Option<u8>,
    pub local_addr: SocketAddr,
    pub stun: Option<StunResponder>,
}

impl Participant {
    pub fn new(init: ParticipantInit) -> Self {
        let slots = init
            .slots
            .into_iter()
            .map(|(mid, ssrc)| ReceiveSlot {
                mid: WireMid::new(&mid),
                ssrc,
                // Random start so streams of different slots do not look alike; below
                // 2^15 so the SRTP rollover counter starts at zero and stays there a while.
                forwarding: ForwardingSlot::new((fastrand_u16() & 0x7fff) + 1),
                announced: None,
            })
            .collect();
        Self {
            id: init.id,
            session: init.session,
            user: init.user,
            display_name: init.display_name,
            room: init.room,
            can_speak: init.can_speak,
            server_muted: false,
            self_muted: false,
            deafened: false,
            told_speaking: Vec::new(),
            rtc: Box::new(init.rtc),
            ufrag: init.ufrag,
            addrs: Vec::new(),
            last_destination: None,
            media_destination: None,
            opus_pt: init.opus_pt,
            slots,
            keys: init.keys,
            ext_ids: init.ext_ids,
            local_addr: init.local_addr,
            egress: Egress::Undecided,
            ingress: Ingress::Waiting,
            publish_level_id: init.publish_level_id,
            stun: init.stun,
            channel: None,
            channel_written_at: None,
            connected: false,
            joined_at: init.now,
            disconnected_at: None,
            deadline: init.deadline,
            scheduled: None,
            #[cfg(feature = "fault-injection")]
            fail_next: false,
        }
    }

    /// Apply one input (or none) and drain.
    pub fn drive(
        &mut self,
        now: Instant,
        input: Option<Input<'_>>,
        out: &mut Outbox,
    ) -> Result<(), RtcError> {
        #[cfg(feature = "fault-injection")]
        if self.fail_next {
            panic!("injected fault in participant {:?}", self.id);
        }
        let applied = match input {
            Some(input) => self.rtc.handle_input(input),
            None => Ok(()),
        };
        // Drain even after a refused input: str0m may still have queued output.
        let drained = self.drain(now, out);
        applied.and(drained)
    }

    /// Send one forwarded packet in receive slot `slot`: sealed here on the lean path,
    /// otherwise written into str0m and drained.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        now: Instant,
        crypto: &CryptoProvider,
        slot: usize,
        from: ParticipantId,
        pkt: &Inbound,
        out: &mut Outbox,
    ) -> Result<Forwarded, RtcError> {
        #[cfg(feature = "fault-injection")]
        if self.fail_next {
            panic!("injected fault in participant {:?}", self.id);
        }
        if matches!(self.egress, Egress::Undecided) {
            self.egress = self.decide_egress(crypto);
        }
        let Some(rs) = self.slots.get_mut(slot) else {
            return Ok(Forwarded::NoSlot);
        };
        let Some(rw) = rs
            .forwarding
            .rewrite(now, from, pkt.seq, pkt.timestamp, pkt.marker)
        else {
            return Ok(Forwarded::Late);
        };
        let ssrc = rs.ssrc;
        if let Egress::Lean(sealer) = &mut self.egress {
            let Some(destination) = self.media_destination else {
                // Connected peers always have one (DTLS went there); be safe anyway.
                return Ok(Forwarded::NoSlot);
            };
            // The slot's extended sequence number is the SRTP packet index (ROC << 16 | seq).
            let index = rw.seq;
            let fields = RtpFields {
                marker: rw.marker,
                pt: *self.opus_pt,
                seq: rw.seq as u16,
                timestamp: rw.timestamp,
                ssrc: *ssrc,
                audio_level: pkt.audio_level,
                mid: rs.mid.as_bytes(),
            };
            // Written straight into the datagram buffer and sealed there: no copy.
            let mut contents = out.buffer(pkt.payload.len() + MAX_RTP_OVERHEAD);
            let header_len = write_rtp(&mut contents, &self.ext_ids, &fields, &pkt.payload);
            if sealer
                .seal_in_place(&mut contents, 0, header_len, *ssrc, index)
                .is_err()
            {
                out.recycle(contents);
                return Ok(Forwarded::NoSlot);
            }
            out.transmits.push_back(Transmit {
                source: self.local_addr,
                destination,
                contents,
            });
            return Ok(Forwarded::Sent);
        }
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx(&ssrc) else {
            return Ok(Forwarded::NoSlot);
        };
        stream.write_rtp(
            RtpWrite::new(
                self.opus_pt,
                rw.seq.into(),
                rw.timestamp,
                now,
                pkt.payload.clone(),
            )
            .marker(rw.marker)
            .ext_vals(ExtensionValues {
                audio_level: pkt.audio_level.map(|(l, _)| -(l as i8)),
                voice_activity: pkt.audio_level.map(|(_, v)| v),
                ..Default::default()
            }),
        );
        self.drain(now, out)?;
        Ok(Forwarded::Sent)
    }

    /// Lean when DTLS left us keys we can use, str0m otherwise.
    fn decide_egress(&self, crypto: &CryptoProvider) -> Egress {
        let keys = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
        match keys.map(|k| RtpSealer::new(crypto, &k)) {
            Some(Ok(sealer)) => Egress::Lean(Box::new(sealer)),
            Some(Err(e)) => {
                debug!(id = ?self.id, error = %e, "lean egress unavailable");
                Egress::Str0m
            }
            None => Egress::Str0m,
        }
    }

    /// Open an SRTP datagram from this publisher on the lean path, if it has one (see
    /// [`Ingress`]); `NotMine` sends it to str0m.
    pub fn open_lean(
        &mut self,
        crypto: &CryptoProvider,
        source: SocketAddr,
        datagram: &[u8],
        out: &mut Outbox,
    ) -> Opened {
        if let Ingress::Seen { ssrc, index } = self.ingress {
            let keys = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
            self.ingress = match keys
                .map(|k| RtpOpener::new(crypto, &k, ssrc, index, self.publish_level_id))
            {
                Some(Ok(opener)) => Ingress::Lean(Box::new(opener)),
                _ => Ingress::Str0m,
            };
        }
        let opened = match &mut self.ingress {
            Ingress::Lean(opener) => opener.open_into(datagram, out.buffer(datagram.len())),
            _ => Opened::NotMine,
        };
        if matches!(opened, Opened::Packet(_)) {
            self.media_destination = Some(source);
        }
        opened
    }

    /// Answer a STUN message from `source` here if it is a plain consent refresh on the
    /// pair media already uses (see [`crate::stun`]); `false` hands it to str0m.
    pub fn answer_stun(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
        out: &mut Outbox,
    ) -> bool {
        if !self.connected || self.media_destination != Some(source) {
            return false;
        }
        let Some(responder) = self.stun.as_mut() else {
            return false;
        };
        let mut reply = out.buffer(crate::stun::MAX_REPLY);
        if responder.handle(now, source, datagram, &mut reply) == StunVerdict::ToRtc {
            out.recycle(reply);
            return false;
        }
        out.transmits.push_back(Transmit {
            source: self.local_addr,
            destination: source,
            contents: reply,
        });
        true
    }

    /// Start loading what [`Self::forward`] into `slot` reads first, so that the cache
    /// misses of a packet's several subscribers overlap instead of queueing (the engine
    /// calls this for every target before forwarding to any). At voice packet rates each
    /// subscriber's state is cold: the first read of its slot and its cipher were most of
    /// the forwarding time in profiles.
    pub fn prefetch_forward(&self, slot: usize) {
        if let Some(rs) = self.slots.get(slot) {
            crate::egress::prefetch(&rs.forwarding);
        }
        if let Egress::Lean(sealer) = &self.egress {
            sealer.prefetch();
        }
    }

    /// Whether its client hears `who` in one of its slots (and so sees `who` speak in the
    /// forwarded packets' audio levels).
    pub fn hears(&self, who: ParticipantId) -> bool {
        self.connected
            && !self.deafened
            && self.slots.iter().any(|s| s.announced == Some(Some(who)))
    }

    /// True when forwarded packets bypass str0m for this subscriber.
    pub fn lean_egress(&self) -> bool {
        matches!(self.egress, Egress::Lean(_))
    }

    /// Send one message on the data channel, then drain. `Ok(false)` if it did not fit.
    pub fn send_on_channel(
        &mut self,
        now: Instant,
        bytes: &[u8],
        out: &mut Outbox,
    ) -> Result<bool, RtcError> {
        let Some(id) = self.channel else {
            return Ok(false);
        };
        let Some(mut channel) = self.rtc.channel(id) else {
            return Ok(false);
        };
        let accepted = channel.write(false, bytes)?;
        self.channel_written_at = Some(now);
        self.drain(now, out)?;
        Ok(accepted)
    }

    /// Close politely (DTLS close_notify, RTCP BYE) and flush what that produces.
    pub fn close(&mut self, now: Instant, out: &mut Outbox) {
        if self.rtc.close().is_ok() {
            let _ = self.drain(now, out);
        }
    }

    /// Poll until str0m asks for a timeout in the future, feeding due timeouts.
    pub fn drain(&mut self, now: Instant, out: &mut Outbox) -> Result<(), RtcError> {
        for _ in 0..MAX_DRAIN_ROUNDS {
            let timeout = loop {
                match self.rtc.poll_output()? {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        // RFC 7983: STUN starts with 0..=3, DTLS 20..=63, SRTP/SRTCP 128..=191.
                        if t.contents.first().is_some_and(|b| *b >= 20) {
                            self.media_destination = Some(t.destination);
                        }
                        if self.last_destination != Some(t.destination) {
                            self.last_destination = Some(t.destination);
                            out.learned.push((self.id, t.destination));
                        }
                        out.transmits.push_back(Transmit {
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents.into(),
                        });
                    }
                    Output::Event(e) => self.on_event(e, out),
                }
            };
            if timeout > now {
                self.deadline = self.stretch_ice_tick(now, timeout);
                return Ok(());
            }
            self.rtc.handle_input(Input::Timeout(now))?;
        }
        // Still due after several rounds: come back shortly rather than spin.
        self.deadline = now + Duration::from_millis(1);
        Ok(())
    }

    /// `timeout`, or later if it is only the ICE idle tick of a quiet participant (see
    /// [`ICE_IDLE_TICK`]).
    fn stretch_ice_tick(&self, now: Instant, timeout: Instant) -> Instant {
        let quiet = self
            .channel_written_at
            .is_none_or(|t| now.saturating_duration_since(t) >= CHANNEL_QUIET);
        if self.connected && quiet && self.rtc.last_timeout_reason() == Reason::Ice {
            timeout.max(now + ICE_IDLE_TICK)
        } else {
            timeout
        }
    }

    fn on_event(&mut self, e: Event, out: &mut Outbox) {
        let signal = match e {
            Event::Connected => {
                self.connected = true;
                Signal::Connected
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                Signal::IceDisconnected
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => Signal::IceReconnected,
            Event::RtpPacket(p) => {
                if matches!(self.ingress, Ingress::Waiting) {
                    self.ingress = Ingress::Seen {
                        ssrc: *p.header.ssrc,
                        index: *p.seq_no,
                    };
                }
                let ext = &p.header.ext_vals;
                let inbound = Inbound {
                    pt: *p.header.payload_type,
                    seq: *p.seq_no,
                    timestamp: p.header.timestamp,
                    marker: p.header.marker,
                    audio_level: ext
                        .audio_level
                        .zip(ext.voice_activity)
                        .map(|(l, v)| (l.unsigned_abs().min(127), v)),
                    payload: p.payload.to_vec(),
                };
                out.media.push_back((self.id, inbound));
                return;
            }
            Event::ChannelOpen(id, _) => Signal::ChannelOpen(id),
            Event::ChannelClose(id) => Signal::ChannelClosed(id),
            Event::ChannelData(_) => Signal::ChannelData,
            Event::Closed => Signal::Closed,
            _ => return,
        };
        out.signals.push_back((self.id, signal));
    }

    /// Remember `addr` as one of ours; returns an address evicted to stay bounded.
    pub fn remember_addr(&mut self, addr: SocketAddr) -> Option<SocketAddr> {
        if self.addrs.contains(&addr) {
            return None;
        }
        self.addrs.push(addr);
        if self.addrs.len() > MAX_ADDRS {
            return Some(self.addrs.remove(0));
        }
        None
    }
}

/// A cheap non-cryptographic u16 for initial sequence numbers.
fn fastrand_u16() -> u16 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_reuses_sent_buffers_up_to_a_bound() {
        let mut out = Outbox::default();
        let mut b = out.buffer(120);
        assert!(b.capacity() >= POOLED_BUFFER);
        b.extend_from_slice(&[7; 120]);
        let ptr = b.as_ptr();
        out.recycle(b);
        // The buffer just sent comes back, emptied.
        let again = out.buffer(100);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
        // Buffers of another size (str0m's own transmits) are not pooled.
        out.recycle(Vec::with_capacity(64));
        out.recycle(Vec::with_capacity(64 * 1024));
        assert!(out.buffers.is_empty());
        // A request larger than a pooled buffer gets its own.
        out.recycle(again);
        assert!(out.buffer(4000).capacity() >= 4000);
        for _ in 0..2 * MAX_POOLED_BUFFERS {
            out.recycle(Vec::with_capacity(POOLED_BUFFER));
        }
        assert_eq!(out.buffers.len(), MAX_POOLED_BUFFERS);
    }
}

/// The engine's participants in a dense slab. An id carries its entry's index (low 32 bits)
/// under a join sequence number (high 32 bits): ids still order by join and are never
/// reused, and a lookup is an index and one compare, where a hash map hashed, loaded its
/// control bytes and then the entry, two dependent cache misses per subscriber on every
/// forwarded packet. The forwarding pass also computes every target's entry address from its
/// id alone, so it can start loading all of them at once ([`Self::prefetch`]).
#[derive(Default)]
pub(crate) struct ParticipantTable {
    entries: Vec<Option<Participant>>,
    /// Indices of the empty entries.
    free: Vec<u32>,
    next_seq: u64,
}

impl ParticipantTable {
    fn index(id: ParticipantId) -> usize {
        (id.0 & 0xffff_ffff) as usize
    }

    /// Insert the participant `make` builds for the id it is given.
    pub fn insert_with(
        &mut self,
        make: impl FnOnce(ParticipantId) -> Participant,
    ) -> &mut Participant {
        self.next_seq += 1;
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.entries.push(None);
                self.entries.len() - 1
            }
        };
        let id = ParticipantId((self.next_seq << 32) | index as u64);
        self.entries[index].insert(make(id))
    }

    pub fn get(&self, id: &ParticipantId) -> Option<&Participant> {
        self.entries
            .get(Self::index(*id))?
            .as_ref()
            .filter(|p| p.id == *id)
    }

    pub fn get_mut(&mut self, id: &ParticipantId) -> Option<&mut Participant> {
        self.entries
            .get_mut(Self::index(*id))?
            .as_mut()
            .filter(|p| p.id == *id)
    }

    pub fn remove(&mut self, id: &ParticipantId) -> Option<Participant> {
        let index = Self::index(*id);
        let entry = self.entries.get_mut(index)?;
        if entry.as_ref().is_none_or(|p| p.id != *id) {
            return None;
        }
        let p = entry.take();
        self.free.push(index as u32);
        p
    }

    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn values(&self) -> impl Iterator<Item = &Participant> {
        self.entries.iter().flatten()
    }

    /// Start loading the entry of `id`: its first [`HOT_LINES`], what forwarding reads.
    pub fn prefetch(&self, id: ParticipantId) {
        if let Some(entry) = self.entries.get(Self::index(id)) {
            let p = (entry as *const Option<Participant>).cast::<u8>();
            crate::egress::prefetch_bytes(p, 64 * HOT_LINES);
        }
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    /// A participant with nothing behind it but its id.
    fn participant(id: ParticipantId) -> Participant {
        use str0m::Rtc;
        let now = Instant::now();
        Participant::new(ParticipantInit {
            id,
            session: SessionId::new_random(),
            user: UserId::new_random(),
            display_name: String::new(),
            room: RoomId::new_random(),
            can_speak: true,
            rtc: Rtc::new(now),
            ufrag: String::new(),
            opus_pt: 111.into(),
            slots: Vec::new(),
            now,
            deadline: now,
            keys: KeySlot::default(),
            ext_ids: ExtIds::default(),
            publish_level_id: None,
            local_addr: "127.0.0.1:1".parse().unwrap(),
            stun: None,
        })
    }

    #[test]
    fn ids_are_never_reused_and_stale_ids_find_nothing() {
        let mut t = ParticipantTable::default();
        let a = t.insert_with(participant).id;
        let b = t.insert_with(participant).id;
        assert!(a < b, "ids order by join");
        assert_eq!(t.len(), 2);

        assert_eq!(t.remove(&a).map(|p| p.id), Some(a));
        assert!(t.get(&a).is_none() && t.remove(&a).is_none());
        // The freed entry is reused under a new id; the old id still finds nothing.
        let c = t.insert_with(participant).id;
        assert!(c > b);
        assert_eq!(ParticipantTable::index(c), ParticipantTable::index(a));
        assert!(t.get(&a).is_none());
        assert_eq!(t.get(&c).map(|p| p.id), Some(c));
        assert_eq!(t.get_mut(&b).map(|p| p.id), Some(b));
        assert_eq!(t.len(), 2);
        let mut ids: Vec<_> = t.values().map(|p| p.id).collect();
        ids.sort();
        assert_eq!(ids, vec![b, c]);
        assert!(t.get(&ParticipantId(u64::MAX)).is_none());
    }
}

#[cfg(test)]
mod layout_tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::*;

    /// What forwarding reads stays in the prefetched lines (see [`Participant`]).
    #[test]
    fn forwarding_fields_sit_in_the_hot_lines() {
        assert_eq!(align_of::<Participant>(), 64);
        // The slab stores `Option<Participant>` with the struct at offset 0 (niche).
        assert_eq!(size_of::<Option<Participant>>(), size_of::<Participant>());
        let hot = [
            offset_of!(Participant, id) + size_of::<ParticipantId>(),
            offset_of!(Participant, egress) + size_of::<Egress>(),
            offset_of!(Participant, slots) + size_of::<Vec<ReceiveSlot>>(),
            offset_of!(Participant, opus_pt) + 1,
            offset_of!(Participant, ext_ids) + size_of::<ExtIds>(),
            offset_of!(Participant, media_destination) + size_of::<Option<SocketAddr>>(),
            offset_of!(Participant, local_addr) + size_of::<SocketAddr>(),
            offset_of!(Participant, deadline) + size_of::<Instant>(),
            offset_of!(Participant, scheduled) + size_of::<Option<Instant>>(),
            offset_of!(Participant, ingress) + size_of::<Ingress>(),
            offset_of!(Participant, room) + size_of::<RoomId>(),
        ];
        for end in hot {
            assert!(
                end <= 64 * HOT_LINES,
                "a forwarding field ends at byte {end}"
            );
        }
    }
}
