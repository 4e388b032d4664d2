//! One participant on this node: its str0m `Rtc`, what its offer negotiated (a publish
//! track, receive slots, a data channel), and the discipline of driving that `Rtc`: every
//! mutation is followed by draining `poll_output` until it yields a timeout in the future.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use haven_proto::{RoomId, SessionId, UserId};
use str0m::channel::ChannelId;
use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, Rtc, RtcError};

use crate::slots::ForwardingSlot;

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
    pub media: VecDeque<(ParticipantId, RtpPacket)>,
    pub signals: VecDeque<(ParticipantId, Signal)>,
    /// (participant, remote address) pairs str0m started sending to.
    pub learned: Vec<(ParticipantId, SocketAddr)>,
}

/// One recvonly m-line of the subscriber, carrying whoever is in that slot.
pub(crate) struct ReceiveSlot {
    pub mid: Mid,
    pub ssrc: Ssrc,
    pub forwarding: ForwardingSlot<ParticipantId>,
    /// Who the client was last told is in this slot (`None` until told at all).
    pub announced: Option<Option<ParticipantId>>,
}

pub(crate) enum Forwarded {
    Sent,
    Late,
    NoSlot,
}

pub(crate) struct Participant {
    pub id: ParticipantId,
    pub session: SessionId,
    pub user: UserId,
    pub display_name: String,
    pub room: RoomId,
    pub can_speak: bool,
    pub server_muted: bool,
    pub self_muted: bool,
    /// Deafened: nothing is forwarded to it.
    pub deafened: bool,
    pub rtc: Rtc,
    pub ufrag: String,
    /// Remote addresses routed to this participant (bounded).
    pub addrs: Vec<SocketAddr>,
    last_destination: Option<SocketAddr>,
    /// The payload type of Opus as negotiated; packets with any other are dropped.
    pub opus_pt: Pt,
    pub slots: Vec<ReceiveSlot>,
    pub channel: Option<ChannelId>,
    pub connected: bool,
    pub joined_at: Instant,
    pub disconnected_at: Option<Instant>,
    /// When the `Rtc` next wants `Input::Timeout`.
    pub deadline: Instant,
    /// The deadline currently in the engine's timer heap.
    pub scheduled: Option<Instant>,
    #[cfg(feature = "fault-injection")]
    pub fail_next: bool,
}

/// Bound on timeout rounds in one drain: str0m normally settles in one, and a misbehaving
/// `Rtc` must not stall the worker.
const MAX_DRAIN_ROUNDS: usize = 4;
/// Remote addresses remembered per participant (ICE may try a few).
const MAX_ADDRS: usize = 4;

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
}

impl Participant {
    pub fn new(init: ParticipantInit) -> Self {
        let slots = init
            .slots
            .into_iter()
            .map(|(mid, ssrc)| ReceiveSlot {
                mid,
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
            rtc: init.rtc,
            ufrag: init.ufrag,
            addrs: Vec::new(),
            last_destination: None,
            opus_pt: init.opus_pt,
            slots,
            channel: None,
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

    /// Write one forwarded packet into receive slot `slot`, then drain.
    pub fn forward(
        &mut self,
        now: Instant,
        slot: usize,
        from: ParticipantId,
        pkt: &RtpPacket,
        exts: &ExtensionValues,
        out: &mut Outbox,
    ) -> Result<Forwarded, RtcError> {
        #[cfg(feature = "fault-injection")]
        if self.fail_next {
            panic!("injected fault in participant {:?}", self.id);
        }
        let Some(rs) = self.slots.get_mut(slot) else {
            return Ok(Forwarded::NoSlot);
        };
        let Some(rw) = rs.forwarding.rewrite(
            now,
            from,
            *pkt.seq_no,
            pkt.header.timestamp,
            pkt.header.marker,
        ) else {
            return Ok(Forwarded::Late);
        };
        let ssrc = rs.ssrc;
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
            .ext_vals(exts.clone()),
        );
        self.drain(now, out)?;
        Ok(Forwarded::Sent)
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
                self.deadline = timeout;
                return Ok(());
            }
            self.rtc.handle_input(Input::Timeout(now))?;
        }
        // Still due after several rounds: come back shortly rather than spin.
        self.deadline = now + Duration::from_millis(1);
        Ok(())
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
                out.media.push_back((self.id, p));
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
