//! What the node dropped and why, and what it forwarded. Plain integers owned by the
//! engine (one per worker, no atomics); the metrics exporter reads them through
//! [`crate::SfuEngine::counters`].

use std::fmt;

/// Why a datagram, packet or message was not processed or forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Datagram larger than the configured maximum.
    Oversized,
    /// Not STUN/DTLS/RTP/RTCP, or a STUN message that does not parse.
    Garbage,
    /// DTLS/RTP/RTCP from an address no participant has completed ICE from.
    UnknownSource,
    /// STUN whose ufrag is not one of ours (or has none) from an unknown address.
    StrangerStun,
    /// str0m refused the datagram (bad SRTP auth, malformed DTLS, ...).
    RejectedByRtc,
    /// RTP from a server-muted participant.
    Muted,
    /// RTP from a participant that muted itself but kept sending.
    SelfMuted,
    /// RTP from a participant whose grant has `can_speak = false`.
    NotAllowedToSpeak,
    /// RTP with a payload type other than the negotiated Opus one.
    WrongPayloadType,
    /// RTP payload larger than an Opus packet can be.
    OversizedPayload,
    /// A straggler from before its slot switched speakers.
    LateForSlot,
    /// The subscriber's data channel buffer was full.
    DataChannelFull,
    /// A client sent data on its data channel; nothing is expected there yet.
    UnexpectedChannelData,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
        Self::Oversized,
        Self::Garbage,
        Self::UnknownSource,
        Self::StrangerStun,
        Self::RejectedByRtc,
        Self::Muted,
        Self::SelfMuted,
        Self::NotAllowedToSpeak,
        Self::WrongPayloadType,
        Self::OversizedPayload,
        Self::LateForSlot,
        Self::DataChannelFull,
        Self::UnexpectedChannelData,
    ];

    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Garbage => "garbage",
            Self::UnknownSource => "unknown_source",
            Self::StrangerStun => "stranger_stun",
            Self::RejectedByRtc => "rejected_by_rtc",
            Self::Muted => "muted",
            Self::SelfMuted => "self_muted",
            Self::NotAllowedToSpeak => "not_allowed_to_speak",
            Self::WrongPayloadType => "wrong_payload_type",
            Self::OversizedPayload => "oversized_payload",
            Self::LateForSlot => "late_for_slot",
            Self::DataChannelFull => "data_channel_full",
            Self::UnexpectedChannelData => "unexpected_channel_data",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default)]
pub struct Counters {
    drops: [u64; DropReason::ALL.len()],
    /// Datagrams handed to `handle_udp`.
    pub udp_in: u64,
    /// RTP packets str0m delivered from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscribers.
    pub rtp_forwarded: u64,
    /// Of `rtp_in`, those opened on the lean ingress path (not by str0m).
    pub rtp_in_lean: u64,
    /// Of `rtp_forwarded`, those sealed on the lean egress path (not through str0m).
    pub rtp_forwarded_lean: u64,
    /// RTCP compound packets from connected peers: counted, not read (see
    /// `SfuEngine::handle_udp`).
    pub rtcp_in: u64,
    /// STUN consent refreshes answered by the lean responder (not by str0m).
    pub stun_lean: u64,
    /// Times a participant's ICE went to disconnected (it may come back within the grace).
    pub ice_disconnects: u64,
    /// `Rtc`s woken for their own timers (ICE, SCTP, DTLS), not for input.
    pub rtc_timeouts: u64,
    /// Speech or silence from participants not in any slot (normal, not an error).
    pub rtp_not_selected: u64,
    pub datagrams_out: u64,
    pub joins_accepted: u64,
    /// Offers refused for their grant.
    pub grants_refused: u64,
    /// Offers refused for their SDP.
    pub offers_refused: u64,
    /// Participants dropped because processing them panicked.
    pub participant_panics: u64,
}

impl Counters {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let mut c = Counters::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                c.drop(*r);
            }
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(c.dropped(*r), i as u64 + 1, "{r}");
        }
    }
}
