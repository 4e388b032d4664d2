//! The sans-IO SFU: many participants' `Rtc`s, their rooms, admission and forwarding,
//! driven only by datagrams, control requests and `Instant`s handed in by a shell.
//!
//! One engine belongs to one worker thread and is never shared; the IO shell owns the
//! socket and the clock and calls, in a loop: [`SfuEngine::handle_udp`] for each datagram,
//! [`SfuEngine::handle_timeout`] when [`SfuEngine::next_timeout`] is reached, then sends
//! everything [`SfuEngine::poll_transmit`] yields and forwards [`SfuEngine::poll_event`]s
//! to the control link.
//!
//! Invariants kept here:
//! - demux is by hash map (STUN ufrag, then remote address), never a scan;
//! - only `Rtc`s whose deadline is due get `Input::Timeout` (timer heap);
//! - every mutation of an `Rtc` is followed by a full drain (see `participant.rs`);
//! - a panic while processing one participant drops that participant, not the node.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap;

use haven_proto::control::{
    Answer, ControlBody, ControlError, ControlMessage, ErrorCode, LeaveReason, NodeLoad, Offer,
    ParticipantLeft, RoomRoster, RoomStats, RosterEntry, SpeakingEvent,
};
use haven_proto::datachannel::{SfuToClient, SfuToClientBody, SlotEntry};
use haven_proto::grant::GrantVerifier;
use haven_proto::{RoomId, SessionId, UserId};
use str0m::crypto::CryptoProvider;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, IceCreds, Input, RtcConfig};
use tracing::{debug, warn};

use crate::admission::{Admission, AdmissionError};
use crate::config::SfuConfig;
use crate::counters::{Counters, DropReason};
use crate::demux::{classify, is_rtcp, DatagramKind};
use crate::egress::capturing_provider;
use crate::ingress::{Inbound, Opened};
use crate::media::{sfu_rtc_config, MAX_OPUS_PAYLOAD};
use crate::negotiation::{negotiate_rtc, NegotiatedRtc};
use crate::participant::{
    Forwarded, Outbox, Participant, ParticipantId, ParticipantInit, ParticipantTable, Signal,
    Transmit,
};
use crate::room::VoiceRoom;
use crate::speakers::Route;
use crate::stun::{remote_ufrag, StunResponder};
use crate::timers::TimerHeap;

/// Something the control link should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SfuEvent {
    Joined {
        room: RoomId,
        session: SessionId,
        user: UserId,
    },
    /// ICE and DTLS completed; media can flow.
    Connected {
        room: RoomId,
        session: SessionId,
        user: UserId,
    },
    Left(ParticipantLeft),
    Speaking(SpeakingEvent),
    /// The room's roster changed; fetch it with [`SfuEngine::roster`].
    RosterChanged {
        room: RoomId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("bad SDP offer: {0}")]
    BadSdp(String),
    #[error("node is full")]
    NodeFull,
}

impl JoinError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Admission(e) => e.code(),
            Self::BadSdp(_) => ErrorCode::BadSdp,
            Self::NodeFull => ErrorCode::NodeFull,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the crypto provider could not make a DTLS certificate")]
    DtlsCertificate,
    #[error("media address {0} cannot be an ICE host candidate")]
    BadMediaAddr(SocketAddr),
}

#[derive(Clone, Copy)]
enum MuteKind {
    Server,
    SelfMute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no participant with session {0}")]
pub struct UnknownSession(pub SessionId);

pub struct SfuEngine {
    cfg: SfuConfig,
    rtc_config: RtcConfig,
    /// The provider in `rtc_config`; sealers for the lean egress path come from it.
    crypto: Arc<CryptoProvider>,
    admission: Admission,
    /// A slab indexed by the id itself ([`ParticipantTable`]): no hashing on the media path.
    participants: ParticipantTable,
    sessions: HashMap<SessionId, ParticipantId>,
    /// Looked up on every datagram, with keys that strangers choose: a seeded hash
    /// (foldhash), not an unkeyed one, yet several times cheaper than SipHash on these
    /// short keys. Entries exist only for admitted participants (a ufrag from the join, a
    /// few addresses each after authenticated STUN).
    by_ufrag: HashMap<String, ParticipantId, foldhash::fast::RandomState>,
    by_addr: HashMap<SocketAddr, ParticipantId, foldhash::fast::RandomState>,
    /// Rooms come from signed grants, so the fast hash is safe here.
    rooms: FxHashMap<RoomId, VoiceRoom>,
    timers: TimerHeap<ParticipantId>,
    next_housekeeping: Option<Instant>,
    out: Outbox,
    events: VecDeque<SfuEvent>,
    doomed: Vec<(ParticipantId, LeaveReason)>,
    targets: Vec<(ParticipantId, usize)>,
    counters: Counters,
}

impl SfuEngine {
    pub fn new(cfg: SfuConfig, verifier: GrantVerifier) -> Result<Self, EngineError> {
        Candidate::host(cfg.media_addr, "udp")
            .map_err(|_| EngineError::BadMediaAddr(cfg.media_addr))?;
        // Wrapped so that each participant's SRTP keys reach the lean egress path.
        let crypto = Arc::new(capturing_provider(&str0m::crypto::from_feature_flags()));
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or(EngineError::DtlsCertificate)?;
        let admission = Admission::new(verifier, cfg.node_id.clone(), cfg.replay_cache_capacity);
        Ok(Self {
            rtc_config: sfu_rtc_config(crypto.clone(), cert),
            crypto,
            admission,
            cfg,
            participants: ParticipantTable::default(),
            sessions: HashMap::new(),
            by_ufrag: HashMap::default(),
            by_addr: HashMap::default(),
            rooms: FxHashMap::default(),
            timers: TimerHeap::default(),
            next_housekeeping: None,
            out: Outbox::default(),
            events: VecDeque::new(),
            doomed: Vec::new(),
            targets: Vec::new(),
            counters: Counters::default(),
        })
    }

    pub fn config(&self) -> &SfuConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    // ------------------------------------------------------------------ inputs

    /// Admit an offer: verify its grant, negotiate with str0m, return the SDP answer.
    pub fn accept_offer(
        &mut self,
        now: Instant,
        wall: SystemTime,
        offer: &Offer,
    ) -> Result<Answer, JoinError> {
        self.start_clock(now);
        if self.participants.len() >= self.cfg.capacity as usize {
            return Err(JoinError::NodeFull);
        }
        let now_unix = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = self
            .admission
            .admit(&offer.grant, offer.room, now_unix)
            .inspect_err(|_| self.counters.grants_refused += 1)?;
        let (negotiated, creds) = self
            .negotiate(now, &offer.sdp)
            .inspect_err(|_| self.counters.offers_refused += 1)?;
        let stun = remote_ufrag(&offer.sdp)
            .map(|theirs| StunResponder::new(&creds.ufrag, &creds.pass, theirs));
        let ufrag = creds.ufrag;

        if let Some(old) = self.sessions.get(&claims.sid).copied() {
            self.remove_participant(now, old, LeaveReason::Replaced);
        }

        let slots = usize::from(
            offer
                .slots
                .unwrap_or(self.cfg.default_slots)
                .clamp(1, self.cfg.max_slots),
        );
        let selection = self.cfg.selection;
        let room = self
            .rooms
            .entry(claims.room)
            .or_insert_with(|| VoiceRoom::new(claims.room, slots, selection));
        let room_slots = room.selector.slots();

        let mut slot_streams = negotiated.slots;
        slot_streams.truncate(room_slots);
        let media_addr = self.cfg.media_addr;
        let participant = self.participants.insert_with(|id| {
            Participant::new(ParticipantInit {
                id,
                session: claims.sid,
                user: claims.sub,
                display_name: claims.name.clone(),
                room: claims.room,
                can_speak: claims.can_speak,
                rtc: negotiated.rtc,
                ufrag: ufrag.clone(),
                opus_pt: negotiated.opus_pt,
                slots: slot_streams,
                now,
                deadline: negotiated.deadline,
                keys: negotiated.keys,
                ext_ids: negotiated.ext_ids,
                publish_level_id: negotiated.publish_level_id,
                local_addr: media_addr,
                stun,
            })
        });
        let id = participant.id;
        reschedule(&mut self.timers, participant);
        room.add(id);
        self.sessions.insert(claims.sid, id);
        self.by_ufrag.insert(ufrag, id);
        self.counters.joins_accepted += 1;
        self.events.push_back(SfuEvent::Joined {
            room: claims.room,
            session: claims.sid,
            user: claims.sub,
        });
        self.events
            .push_back(SfuEvent::RosterChanged { room: claims.room });
        self.pump(now);
        Ok(Answer {
            session: claims.sid,
            sdp: negotiated.answer.to_sdp_string(),
        })
    }

    /// One datagram from the socket.
    pub fn handle_udp(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        self.start_clock(now);
        self.counters.udp_in += 1;
        if bytes.len() > self.cfg.max_datagram {
            self.counters.drop(DropReason::Oversized);
            return;
        }
        let kind = classify(bytes);
        let is_media = matches!(kind, DatagramKind::Media);
        let is_stun = matches!(kind, DatagramKind::Stun { .. });
        let target = match kind {
            DatagramKind::Garbage => Err(DropReason::Garbage),
            DatagramKind::Stun {
                local_ufrag: Some(ufrag),
            } => self
                .by_ufrag
                .get(ufrag)
                .copied()
                .ok_or(DropReason::StrangerStun),
            DatagramKind::Stun { local_ufrag: None } => self
                .by_addr
                .get(&source)
                .copied()
                .ok_or(DropReason::StrangerStun),
            DatagramKind::Media => self
                .by_addr
                .get(&source)
                .copied()
                .ok_or(DropReason::UnknownSource),
        };
        let pid = match target {
            Ok(pid) => pid,
            Err(reason) => {
                self.counters.drop(reason);
                return;
            }
        };
        if is_stun {
            // A consent refresh on the pair media already uses is answered here; str0m
            // still sees one every few seconds, and everything else (`crate::stun`).
            if let Some(p) = self.participants.get_mut(&pid) {
                let out = &mut self.out;
                match catch_unwind(AssertUnwindSafe(|| p.answer_stun(now, source, bytes, out))) {
                    Ok(true) => {
                        self.counters.stun_lean += 1;
                        return;
                    }
                    Ok(false) => {}
                    Err(_) => {
                        self.participant_panicked(pid);
                        self.pump(now);
                        return;
                    }
                }
            }
        }
        if is_media {
            if let Some(p) = self.participants.get_mut(&pid) {
                // RTCP from a connected peer is counted and left unread: audio forwarding
                // uses no NACK, PLI, REMB or transport-wide feedback, and nothing reads
                // receiver reports, so str0m opening and parsing each compound packet
                // (~15 µs on a cold cache) bought nothing. Before DTLS completes there are
                // no SRTCP keys: str0m refuses it then.
                if p.connected && is_rtcp(bytes) {
                    self.counters.rtcp_in += 1;
                    return;
                }
                // A publisher's SRTP, once str0m has shown us its stream, is opened here.
                let crypto = &*self.crypto;
                let out = &mut self.out;
                match catch_unwind(AssertUnwindSafe(|| p.open_lean(crypto, source, bytes, out))) {
                    Ok(Opened::Packet(pkt)) => {
                        self.counters.rtp_in_lean += 1;
                        self.forward(now, pid, pkt);
                        self.pump(now);
                        return;
                    }
                    Ok(Opened::Refused) => {
                        self.counters.drop(DropReason::RejectedByRtc);
                        return;
                    }
                    Ok(Opened::NotMine) => {}
                    Err(_) => {
                        self.participant_panicked(pid);
                        self.pump(now);
                        return;
                    }
                }
            }
        }
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, bytes) else {
            self.counters.drop(DropReason::Garbage);
            return;
        };
        self.drive(now, pid, Some(Input::Receive(now, receive)));
        self.pump(now);
    }

    /// Wake the participants whose deadline is due; run housekeeping when it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.start_clock(now);
        let participants = &self.participants;
        let due = self.timers.pop_due(now, |pid, at| {
            participants.get(&pid).and_then(|p| p.scheduled) == Some(at)
        });
        for (pid, at) in due {
            match self.participants.get_mut(&pid) {
                // Re-check: a duplicate entry for the same instant is stale once driven.
                Some(p) if p.scheduled == Some(at) => p.scheduled = None,
                _ => continue,
            }
            self.counters.rtc_timeouts += 1;
            self.drive(now, pid, Some(Input::Timeout(now)));
        }
        if self.next_housekeeping.is_some_and(|t| t <= now) {
            let speaking_ends = self.housekeeping(now);
            // When the earliest speaking hold runs out, within [shortest, longest]: a quiet
            // worker wakes once a second instead of ten times.
            let earliest = now + self.cfg.housekeeping_interval;
            let latest = now
                + self
                    .cfg
                    .idle_housekeeping_interval
                    .max(self.cfg.housekeeping_interval);
            self.next_housekeeping =
                Some(speaking_ends.map_or(latest, |t| t.clamp(earliest, latest)));
        }
        self.pump(now);
    }

    /// Signaling asked this participant to leave.
    pub fn leave(&mut self, now: Instant, session: SessionId) -> Result<(), UnknownSession> {
        let pid = self.pid_of(session)?;
        self.remove_participant(now, pid, LeaveReason::Left);
        self.pump(now);
        Ok(())
    }

    pub fn kick(
        &mut self,
        now: Instant,
        session: SessionId,
        reason: &str,
    ) -> Result<(), UnknownSession> {
        let pid = self.pid_of(session)?;
        debug!(%session, reason, "kick");
        self.remove_participant(now, pid, LeaveReason::Kicked);
        self.pump(now);
        Ok(())
    }

    /// Server mute: the participant's packets are dropped here and it gives up its slot.
    pub fn set_server_mute(
        &mut self,
        now: Instant,
        session: SessionId,
        muted: bool,
    ) -> Result<(), UnknownSession> {
        self.set_mute(now, session, muted, MuteKind::Server)
    }

    /// The participant muted itself: enforced here too, so a client that keeps sending after
    /// muting is not heard.
    pub fn set_self_mute(
        &mut self,
        now: Instant,
        session: SessionId,
        muted: bool,
    ) -> Result<(), UnknownSession> {
        self.set_mute(now, session, muted, MuteKind::SelfMute)
    }

    /// The participant deafened itself: nothing is forwarded to it (its slots go quiet).
    pub fn set_deafen(
        &mut self,
        now: Instant,
        session: SessionId,
        deafened: bool,
    ) -> Result<(), UnknownSession> {
        let pid = self.pid_of(session)?;
        let mut room = None;
        if let Some(p) = self.participants.get_mut(&pid) {
            p.deafened = deafened;
            room = Some(p.room);
        }
        if let (true, Some(room)) = (deafened, room) {
            // Its slots go quiet: who speaks now has to be told.
            self.tell_unheard_speakers(now, room, pid);
        }
        self.pump(now);
        Ok(())
    }

    fn set_mute(
        &mut self,
        now: Instant,
        session: SessionId,
        muted: bool,
        kind: MuteKind,
    ) -> Result<(), UnknownSession> {
        let pid = self.pid_of(session)?;
        let Some(p) = self.participants.get_mut(&pid) else {
            return Err(UnknownSession(session));
        };
        let flag = match kind {
            MuteKind::Server => &mut p.server_muted,
            MuteKind::SelfMute => &mut p.self_muted,
        };
        if *flag == muted {
            return Ok(());
        }
        *flag = muted;
        let room_id = p.room;
        let now_muted = p.server_muted || p.self_muted;
        if now_muted {
            // Give up the slot at once so a waiting speaker is heard without a gap.
            if let Some(room) = self.rooms.get_mut(&room_id) {
                let (changed, was_speaking) = room.selector.remove(now, pid);
                if was_speaking {
                    self.announce_speaking(now, room_id, pid, false);
                }
                if changed {
                    self.announce_slots(now, room_id);
                }
            }
        }
        self.events
            .push_back(SfuEvent::RosterChanged { room: room_id });
        self.pump(now);
        Ok(())
    }

    /// Apply one control request from signaling; returns the reply, if the message is a
    /// request (replies and node-to-signaling messages get none).
    pub fn handle_control(
        &mut self,
        now: Instant,
        wall: SystemTime,
        msg: &ControlMessage,
    ) -> Option<ControlMessage> {
        let unknown = |e: UnknownSession| {
            ControlBody::Error(ControlError {
                code: ErrorCode::UnknownSession,
                message: e.to_string(),
            })
        };
        let body = match &msg.body {
            ControlBody::Offer(offer) => match self.accept_offer(now, wall, offer) {
                Ok(answer) => ControlBody::Answer(answer),
                Err(e) => ControlBody::Error(ControlError {
                    code: e.code(),
                    message: e.to_string(),
                }),
            },
            ControlBody::Leave(l) => self
                .leave(now, l.session)
                .map_or_else(unknown, |_| ControlBody::Ack),
            ControlBody::Kick(k) => self
                .kick(now, k.session, &k.reason)
                .map_or_else(unknown, |_| ControlBody::Ack),
            ControlBody::ServerMute(m) => self
                .set_server_mute(now, m.session, m.muted)
                .map_or_else(unknown, |_| ControlBody::Ack),
            ControlBody::SelfMute(m) => self
                .set_self_mute(now, m.session, m.muted)
                .map_or_else(unknown, |_| ControlBody::Ack),
            ControlBody::Deafen(d) => self
                .set_deafen(now, d.session, d.deafened)
                .map_or_else(unknown, |_| ControlBody::Ack),
            ControlBody::Ack | ControlBody::Error(_) => return None,
            _ => ControlBody::Error(ControlError {
                code: ErrorCode::BadMessage,
                message: "not a request the SFU serves".into(),
            }),
        };
        Some(msg.reply(body))
    }

    #[cfg(feature = "fault-injection")]
    /// Make the next processing of `session` panic. For tests of panic isolation.
    pub fn inject_fault(&mut self, session: SessionId) -> bool {
        let Ok(pid) = self.pid_of(session) else {
            return false;
        };
        match self.participants.get_mut(&pid) {
            Some(p) => {
                p.fail_next = true;
                true
            }
            None => false,
        }
    }

    // ------------------------------------------------------------------ outputs

    /// When [`Self::handle_timeout`] must next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        let housekeeping = self
            .next_housekeeping
            .filter(|_| !self.participants.is_empty());
        match (self.timers.peek(), housekeeping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.out.transmits.pop_front()?;
        self.counters.datagrams_out += 1;
        Some(t)
    }

    /// Hand back the contents of a sent [`Transmit`] for reuse (optional: a shell that
    /// keeps or drops them only costs allocations).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.out.recycle(buf);
    }

    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// The control-link message for an event (roster changes become a roster snapshot).
    pub fn control_body(&self, event: &SfuEvent) -> Option<ControlBody> {
        match event {
            SfuEvent::Left(left) => Some(ControlBody::ParticipantLeft(*left)),
            SfuEvent::Speaking(s) => Some(ControlBody::Speaking(*s)),
            SfuEvent::RosterChanged { room } => self.roster(*room).map(ControlBody::Roster),
            SfuEvent::Joined { .. } | SfuEvent::Connected { .. } => None,
        }
    }

    pub fn roster(&self, room: RoomId) -> Option<RoomRoster> {
        let r = self.rooms.get(&room)?;
        let participants = r
            .members
            .iter()
            .filter_map(|pid| self.participants.get(pid))
            .map(|p| RosterEntry {
                session: p.session,
                user: p.user,
                display_name: p.display_name.clone(),
                can_speak: p.can_speak,
                server_muted: p.server_muted,
                connected: p.connected,
                speaking: r.selector.is_speaking(p.id),
            })
            .collect();
        Some(RoomRoster {
            room: r.id,
            participants,
        })
    }

    pub fn room_stats(&self, room: RoomId) -> Option<RoomStats> {
        let r = self.rooms.get(&room)?;
        Some(RoomStats {
            room: r.id,
            participants: r.members.len() as u32,
            speaking: r.selector.speaking_count() as u32,
            rtp_in: r.counters.rtp_in,
            rtp_forwarded: r.counters.rtp_forwarded,
            rtp_dropped: r.counters.rtp_dropped,
        })
    }

    pub fn rooms(&self) -> impl Iterator<Item = RoomId> + '_ {
        self.rooms.keys().copied()
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    pub fn load(&self) -> NodeLoad {
        NodeLoad {
            participants: self.participants.len() as u32,
            rooms: self.rooms.len() as u32,
            cpu_permille: 0,
        }
    }

    // ------------------------------------------------------------------ internals

    fn start_clock(&mut self, now: Instant) {
        if self.next_housekeeping.is_none() {
            self.next_housekeeping = Some(now + self.cfg.housekeeping_interval);
        }
    }

    fn pid_of(&self, session: SessionId) -> Result<ParticipantId, UnknownSession> {
        self.sessions
            .get(&session)
            .copied()
            .ok_or(UnknownSession(session))
    }

    fn unique_ice_creds(&self) -> IceCreds {
        loop {
            let creds = IceCreds::new();
            if !self.by_ufrag.contains_key(&creds.ufrag) {
                return creds;
            }
        }
    }

    /// Answer `sdp` with a fresh `Rtc`; returns it with its ICE credentials (unique ufrag).
    fn negotiate(
        &mut self,
        now: Instant,
        sdp: &str,
    ) -> Result<(NegotiatedRtc, IceCreds), JoinError> {
        if sdp.len() > self.cfg.max_sdp_bytes {
            return Err(JoinError::BadSdp("offer too large".into()));
        }
        let creds = self.unique_ice_creds();
        let config = self
            .rtc_config
            .clone()
            .set_local_ice_credentials(creds.clone());
        let media_addr = self.cfg.media_addr;
        let max_slots = usize::from(self.cfg.max_slots);
        let out = &mut self.out;
        // str0m parses attacker-controlled SDP here; a panic must cost the offer, not the node.
        match catch_unwind(AssertUnwindSafe(|| {
            negotiate_rtc(now, config, media_addr, sdp, max_slots, out)
        })) {
            Ok(result) => result.map(|n| (n, creds)),
            Err(_) => {
                self.counters.participant_panics += 1;
                Err(JoinError::BadSdp("offer could not be processed".into()))
            }
        }
    }

    /// Processing `pid` panicked: count it and drop that participant (at the next pump).
    fn participant_panicked(&mut self, pid: ParticipantId) {
        self.counters.participant_panics += 1;
        self.doomed.push((pid, LeaveReason::Failed));
    }

    /// Run one participant's `Rtc` with `input`, isolated from panics.
    fn drive(&mut self, now: Instant, pid: ParticipantId, input: Option<Input<'_>>) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let out = &mut self.out;
        match catch_unwind(AssertUnwindSafe(|| p.drive(now, input, out))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(?pid, error = %e, "rtc refused input");
                self.counters.drop(DropReason::RejectedByRtc);
            }
            Err(_) => {
                self.participant_panicked(pid);
                return;
            }
        }
        if !p.rtc.is_alive() {
            self.doomed.push((pid, LeaveReason::Closed));
        }
        reschedule(&mut self.timers, p);
    }

    /// Process what drives produced until nothing is left: forward media, act on signals,
    /// learn addresses, drop doomed participants (each of which may produce more).
    fn pump(&mut self, now: Instant) {
        loop {
            for (pid, addr) in std::mem::take(&mut self.out.learned) {
                self.learn_addr(pid, addr);
            }
            if let Some((pid, pkt)) = self.out.media.pop_front() {
                self.forward(now, pid, pkt);
                continue;
            }
            if let Some((pid, signal)) = self.out.signals.pop_front() {
                self.on_signal(now, pid, signal);
                continue;
            }
            if let Some((pid, reason)) = self.doomed.pop() {
                self.remove_participant(now, pid, reason);
                continue;
            }
            break;
        }
    }

    fn learn_addr(&mut self, pid: ParticipantId, addr: SocketAddr) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        if let Some(evicted) = p.remember_addr(addr) {
            if self.by_addr.get(&evicted) == Some(&pid) {
                self.by_addr.remove(&evicted);
            }
        }
        self.by_addr.insert(addr, pid);
    }

    /// One RTP packet from a publisher: enforce mute/can_speak, update speaker selection,
    /// write it into the right slot of each subscriber.
    fn forward(&mut self, now: Instant, from: ParticipantId, pkt: Inbound) {
        self.forward_packet(now, from, &pkt);
        // The payload's buffer goes back to the pool the next packet is opened into.
        self.out.recycle(pkt.payload);
    }

    fn forward_packet(&mut self, now: Instant, from: ParticipantId, pkt: &Inbound) {
        self.counters.rtp_in += 1;
        let Some(p) = self.participants.get(&from) else {
            return;
        };
        let refusal = if !p.can_speak {
            Some(DropReason::NotAllowedToSpeak)
        } else if p.server_muted {
            Some(DropReason::Muted)
        } else if p.self_muted {
            Some(DropReason::SelfMuted)
        } else if pkt.pt != *p.opus_pt {
            Some(DropReason::WrongPayloadType)
        } else if pkt.payload.len() > MAX_OPUS_PAYLOAD {
            Some(DropReason::OversizedPayload)
        } else {
            None
        };
        let room_id = p.room;
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        room.counters.rtp_in += 1;
        if let Some(reason) = refusal {
            room.counters.rtp_dropped += 1;
            self.counters.drop(reason);
            return;
        }

        let dbov = pkt.audio_level.map(|(level, _)| level);
        let voice = pkt.audio_level.map(|(_, voice)| voice);
        let obs = room.selector.observe(now, from, dbov, voice);
        if obs.speaking == Some(true) {
            // Housekeeping may be a second away; this hold has to be noticed when it ends.
            let due = now
                + self
                    .cfg
                    .selection
                    .level
                    .speaking_hold
                    .max(self.cfg.housekeeping_interval);
            if self.next_housekeeping.is_none_or(|t| t > due) {
                self.next_housekeeping = Some(due);
            }
        }
        // The slot map first: members that now hear `from` need no speaking message.
        if obs.selection_changed {
            self.announce_slots(now, room_id);
        }
        if let Some(on) = obs.speaking {
            self.announce_speaking(now, room_id, from, on);
        }
        if obs.route == Route::Drop {
            self.counters.rtp_not_selected += 1;
            return;
        }

        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        if let Some(room) = self.rooms.get(&room_id) {
            room.targets(obs.route, from, &mut targets);
        }
        // Before forwarding, start loading each subscriber's cold state: their table
        // entries (addresses known from the ids alone), then what the entries point to.
        for &(to, _) in &targets {
            self.participants.prefetch(to);
        }
        for &(to, slot) in &targets {
            if let Some(sub) = self.participants.get(&to) {
                sub.prefetch_forward(slot);
            }
        }
        let mut forwarded = 0;
        let mut lean = 0;
        for &(to, slot) in &targets {
            let Some(sub) = self.participants.get_mut(&to) else {
                continue;
            };
            if !sub.connected || sub.deafened {
                continue;
            }
            let out = &mut self.out;
            let crypto = &*self.crypto;
            match catch_unwind(AssertUnwindSafe(|| {
                sub.forward(now, crypto, slot, from, pkt, out)
            })) {
                Ok(Ok(Forwarded::Sent)) => {
                    forwarded += 1;
                    lean += u64::from(sub.lean_egress());
                }
                Ok(Ok(Forwarded::Late)) => self.counters.drop(DropReason::LateForSlot),
                Ok(Ok(Forwarded::NoSlot)) => {}
                Ok(Err(e)) => {
                    debug!(?to, error = %e, "rtc refused forwarded packet");
                    self.counters.drop(DropReason::RejectedByRtc);
                }
                Err(_) => {
                    self.participant_panicked(to);
                    continue;
                }
            }
            reschedule(&mut self.timers, sub);
        }
        self.targets = targets;
        self.counters.rtp_forwarded += forwarded;
        self.counters.rtp_forwarded_lean += lean;
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.counters.rtp_forwarded += forwarded;
        }
    }

    fn on_signal(&mut self, now: Instant, pid: ParticipantId, signal: Signal) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        match signal {
            Signal::Connected => {
                p.disconnected_at = None;
                self.events.push_back(SfuEvent::Connected {
                    room: p.room,
                    session: p.session,
                    user: p.user,
                });
                self.events
                    .push_back(SfuEvent::RosterChanged { room: p.room });
            }
            Signal::IceDisconnected => {
                self.counters.ice_disconnects += 1;
                p.disconnected_at.get_or_insert(now);
            }
            Signal::IceReconnected => p.disconnected_at = None,
            Signal::ChannelOpen(id) => {
                p.channel = Some(id);
                // The client knows nothing yet: tell it everything.
                for slot in &mut p.slots {
                    slot.announced = None;
                }
                let room = p.room;
                self.announce_slots_to(now, room, pid);
            }
            Signal::ChannelClosed(id) => {
                if p.channel == Some(id) {
                    p.channel = None;
                }
            }
            Signal::ChannelData => self.counters.drop(DropReason::UnexpectedChannelData),
            Signal::Closed => self.doomed.push((pid, LeaveReason::Closed)),
        }
    }

    fn announce_speaking(&mut self, now: Instant, room_id: RoomId, who: ParticipantId, on: bool) {
        let Some(p) = self.participants.get(&who) else {
            return;
        };
        let (session, user) = (p.session, p.user);
        self.events.push_back(SfuEvent::Speaking(SpeakingEvent {
            room: room_id,
            session,
            user,
            speaking: on,
        }));
        self.tell_speaking(now, room_id, who, session, user, on);
    }

    /// Tell each member of `room_id` whether `who` is speaking, where its own ears cannot:
    /// a member that hears `who` in one of its slots sees the speech in-band (every
    /// forwarded packet carries its RFC 6464 level, and clients run the same
    /// [`LevelMeter`](haven_proto::speaking::LevelMeter)), so the data channel carries
    /// speaking only for those it does not hear (not selected, or the member is
    /// deafened), and `off` to whoever was told `on`. At 500 participants one message per
    /// member per speaking change (and its SCTP acknowledgement) cost a tenth of the node's
    /// CPU, for news every member already had in its audio.
    fn tell_speaking(
        &mut self,
        now: Instant,
        room_id: RoomId,
        who: ParticipantId,
        session: SessionId,
        user: UserId,
        on: bool,
    ) {
        let members = self
            .rooms
            .get(&room_id)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for m in members {
            self.tell_speaking_to(now, m, who, session, user, on);
        }
    }

    fn tell_speaking_to(
        &mut self,
        now: Instant,
        to: ParticipantId,
        who: ParticipantId,
        session: SessionId,
        user: UserId,
        on: bool,
    ) {
        let Some(p) = self.participants.get(&to) else {
            return;
        };
        if to == who {
            return;
        }
        let told = p.told_speaking.contains(&who);
        let send = if on { !told && !p.hears(who) } else { told };
        if !send {
            return;
        }
        let bytes = SfuToClient::new(SfuToClientBody::Speaking { session, user, on }).encode();
        if self.send_to(now, to, &bytes) {
            if let Some(p) = self.participants.get_mut(&to) {
                if on {
                    p.told_speaking.push(who);
                } else {
                    p.told_speaking.retain(|w| *w != who);
                }
            }
        }
    }

    /// After what `to` hears changed (slot map, deafen): tell it about speakers it no
    /// longer hears.
    fn tell_unheard_speakers(&mut self, now: Instant, room_id: RoomId, to: ParticipantId) {
        let speaking: Vec<(ParticipantId, SessionId, UserId)> = match self.rooms.get(&room_id) {
            Some(room) => room
                .members
                .iter()
                .filter(|m| room.selector.is_speaking(**m))
                .filter_map(|m| self.participants.get(m))
                .map(|w| (w.id, w.session, w.user))
                .collect(),
            None => return,
        };
        for (who, session, user) in speaking {
            self.tell_speaking_to(now, to, who, session, user, true);
        }
    }

    fn announce_slots(&mut self, now: Instant, room_id: RoomId) {
        let members = self
            .rooms
            .get(&room_id)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for m in members {
            self.announce_slots_to(now, room_id, m);
        }
    }

    /// Send `pid` its slot map if it differs from what it was last told.
    fn announce_slots_to(&mut self, now: Instant, room_id: RoomId, pid: ParticipantId) {
        let (Some(room), Some(p)) = (self.rooms.get(&room_id), self.participants.get(&pid)) else {
            return;
        };
        if p.channel.is_none() {
            return;
        }
        let sources: Vec<Option<ParticipantId>> = (0..p.slots.len())
            .map(|k| room.selector.source_for(k, pid))
            .collect();
        let unchanged = p
            .slots
            .iter()
            .zip(&sources)
            .all(|(slot, src)| slot.announced == Some(*src));
        if unchanged {
            return;
        }
        let entries = p
            .slots
            .iter()
            .zip(&sources)
            .enumerate()
            .map(|(k, (slot, src))| {
                let who = src.and_then(|s| self.participants.get(&s));
                SlotEntry {
                    slot: k as u8,
                    mid: slot.mid.as_str().to_owned(),
                    session: who.map(|w| w.session),
                    user: who.map(|w| w.user),
                }
            })
            .collect();
        let bytes = SfuToClient::new(SfuToClientBody::Slots { slots: entries }).encode();
        if self.send_to(now, pid, &bytes) {
            if let Some(p) = self.participants.get_mut(&pid) {
                for (slot, src) in p.slots.iter_mut().zip(sources) {
                    slot.announced = Some(src);
                }
            }
            self.tell_unheard_speakers(now, room_id, pid);
        }
    }

    /// Write one data channel message to `pid`; true if it was accepted.
    fn send_to(&mut self, now: Instant, pid: ParticipantId, bytes: &[u8]) -> bool {
        let Some(p) = self.participants.get_mut(&pid) else {
            return false;
        };
        if p.channel.is_none() {
            return false;
        }
        let out = &mut self.out;
        let accepted = match catch_unwind(AssertUnwindSafe(|| p.send_on_channel(now, bytes, out))) {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(e)) => {
                debug!(?pid, error = %e, "data channel write failed");
                false
            }
            Err(_) => {
                self.participant_panicked(pid);
                return false;
            }
        };
        if !accepted {
            self.counters.drop(DropReason::DataChannelFull);
        }
        reschedule(&mut self.timers, p);
        accepted
    }

    /// Speaking holds, join and disconnect timeouts, the timer heap. Returns when the
    /// earliest speaking hold still running will run out.
    fn housekeeping(&mut self, now: Instant) -> Option<Instant> {
        let room_ids: Vec<RoomId> = self.rooms.keys().copied().collect();
        let mut speaking_ends: Option<Instant> = None;
        for room_id in room_ids {
            let changes = match self.rooms.get_mut(&room_id) {
                Some(room) => {
                    let changes = room.selector.tick(now);
                    if let Some(t) = room.selector.next_tick() {
                        speaking_ends = Some(speaking_ends.map_or(t, |e| e.min(t)));
                    }
                    changes
                }
                None => continue,
            };
            for (pid, on) in changes {
                self.announce_speaking(now, room_id, pid, on);
            }
        }
        for p in self.participants.values() {
            if !p.connected && now.saturating_duration_since(p.joined_at) > self.cfg.connect_timeout
            {
                self.doomed.push((p.id, LeaveReason::ConnectTimeout));
            } else if p
                .disconnected_at
                .is_some_and(|t| now.saturating_duration_since(t) > self.cfg.disconnect_grace)
            {
                self.doomed.push((p.id, LeaveReason::Disconnected));
            }
        }
        // Lazy deletion leaves stale timer entries behind; rebuild when they dominate.
        if self.timers.len() > 4 * self.participants.len() + 64 {
            self.timers.rebuild(
                self.participants
                    .values()
                    .filter_map(|p| p.scheduled.map(|at| (at, p.id))),
            );
        }
        speaking_ends
    }

    fn remove_participant(&mut self, now: Instant, pid: ParticipantId, reason: LeaveReason) {
        let Some(mut p) = self.participants.remove(&pid) else {
            return;
        };
        // A participant that panicked is not touched again; others get a polite goodbye.
        if reason != LeaveReason::Failed {
            let out = &mut self.out;
            if catch_unwind(AssertUnwindSafe(|| p.close(now, out))).is_err() {
                self.counters.participant_panics += 1;
            }
        }
        if self.sessions.get(&p.session) == Some(&pid) {
            self.sessions.remove(&p.session);
        }
        if self.by_ufrag.get(&p.ufrag) == Some(&pid) {
            self.by_ufrag.remove(&p.ufrag);
        }
        for addr in &p.addrs {
            if self.by_addr.get(addr) == Some(&pid) {
                self.by_addr.remove(addr);
            }
        }
        if reason == LeaveReason::Failed {
            warn!(session = %p.session, "participant dropped after a processing failure");
        }
        let room_id = p.room;
        let mut room_empty = false;
        if let Some(room) = self.rooms.get_mut(&room_id) {
            let (changed, was_speaking) = room.remove(now, pid);
            room_empty = room.members.is_empty();
            self.events.push_back(SfuEvent::Left(ParticipantLeft {
                room: room_id,
                session: p.session,
                user: p.user,
                reason,
            }));
            if was_speaking {
                self.events.push_back(SfuEvent::Speaking(SpeakingEvent {
                    room: room_id,
                    session: p.session,
                    user: p.user,
                    speaking: false,
                }));
                self.tell_speaking(now, room_id, pid, p.session, p.user, false);
            }
            if changed {
                self.announce_slots(now, room_id);
            }
            self.events
                .push_back(SfuEvent::RosterChanged { room: room_id });
        }
        if room_empty {
            self.rooms.remove(&room_id);
        }
    }
}

fn reschedule(timers: &mut TimerHeap<ParticipantId>, p: &mut Participant) {
    if p.scheduled != Some(p.deadline) {
        timers.schedule(p.deadline, p.id);
        p.scheduled = Some(p.deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_can_move_to_its_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<SfuEngine>();
    }
}
