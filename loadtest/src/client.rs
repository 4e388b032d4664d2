//! One simulated participant: real str0m peer connection(s) on its own UDP socket, exactly
//! what a Haven client negotiates (from `haven_rtc_config()`), driven sans-IO by a worker
//! thread that owns many of them (see `fleet.rs`).
//!
//! Through the SFU a participant has one peer (the SFU): a send track, N recvonly slots and
//! the `haven` data channel whose slot map says who is in which slot. In a mesh it has one
//! peer per other room member, each with one sendrecv audio m-line. Publishing is RTP mode:
//! the frame table's Opus payloads with the RFC 6464 audio-level extension, the marker bit
//! on the first packet of a talk spurt, DTX frames skipped (timestamps still advance).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use haven_proto::datachannel::{SfuToClient, SfuToClientBody};
use haven_proto::UserId;
use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::media::Mid;
use str0m::rtp::Ssrc;
use str0m::Rtc;

use crate::stats::StreamStats;

/// Where one str0m `Rtc` of a participant leads.
pub struct Peer {
    pub rtc: Rtc,
    /// Mid of the publish track (SFU) or the sendrecv m-line (mesh).
    pub send_mid: Option<Mid>,
    /// Receive slots (SFU) or the one sendrecv m-line (mesh).
    pub recv_mids: Vec<Mid>,
    pub channel: Option<ChannelId>,
    pub pending: Option<SdpPendingOffer>,
    pub deadline: Instant,
    /// The deadline that has an entry in the worker's timer heap (stale entries are skipped).
    pub scheduled: Option<Instant>,
    pub connected: bool,
    /// Mesh: the local index of the participant at the other end.
    pub remote_client: Option<usize>,
    pub ssrc_stream: HashMap<Ssrc, usize>,
}

impl Peer {
    pub fn new(rtc: Rtc, now: Instant) -> Self {
        Self {
            rtc,
            send_mid: None,
            recv_mids: Vec::new(),
            channel: None,
            pending: None,
            deadline: now,
            scheduled: None,
            connected: false,
            remote_client: None,
            ssrc_stream: HashMap::new(),
        }
    }
}

/// One received RTP stream (an SFU slot, or a mesh peer's track).
pub struct RecvStream {
    pub peer: usize,
    pub slot: usize,
    pub stats: StreamStats,
}

/// A publisher's position in the frame table and its RTP counters.
#[derive(Clone, Copy, Debug)]
pub struct Publisher {
    /// Next frame-table position.
    pub pos: usize,
    pub seq: u64,
    pub ts: u32,
    pub next_frame: Instant,
    /// The previous frame was not transmitted (DTX) or nothing was sent yet: the next
    /// transmitted one starts a talk spurt and carries the marker bit.
    pub spurt_start: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Waiting,
    /// Offer sent to the target, waiting for the answer.
    Offered,
    Answered,
    Failed,
    Left,
}

/// Datagram and RTP counts of one participant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_rtp: u64,
    pub rx_rtp: u64,
}

impl Traffic {
    pub fn minus(&self, o: &Traffic) -> Traffic {
        Traffic {
            tx_packets: self.tx_packets.saturating_sub(o.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(o.tx_bytes),
            rx_packets: self.rx_packets.saturating_sub(o.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(o.rx_bytes),
            tx_rtp: self.tx_rtp.saturating_sub(o.tx_rtp),
            rx_rtp: self.rx_rtp.saturating_sub(o.rx_rtp),
        }
    }
}

/// Milestones of one join.
#[derive(Clone, Copy, Debug, Default)]
pub struct JoinTimes {
    pub requested: Option<Instant>,
    pub answered: Option<Instant>,
    pub connected: Option<Instant>,
    pub first_media: Option<Instant>,
}

pub struct SimClient {
    /// Index into the run plan's clients.
    pub plan_id: usize,
    pub room: usize,
    pub speaker: bool,
    pub expects_media: bool,
    pub user: UserId,
    pub socket: Option<mio::net::UdpSocket>,
    /// Second socket for the relay baseline (see `relay.rs`).
    pub shadow: Option<mio::net::UdpSocket>,
    pub local: Option<SocketAddr>,
    pub peers: Vec<Peer>,
    pub by_remote: HashMap<SocketAddr, usize>,
    pub streams: Vec<RecvStream>,
    /// Who the SFU says is in each slot.
    pub slot_users: Vec<Option<UserId>>,
    pub slot_map_updates: u64,
    pub publisher: Option<Publisher>,
    pub frame_offset: usize,
    pub phase: Phase,
    pub times: JoinTimes,
    pub traffic: Traffic,
    pub traffic_at_steady_start: Option<Traffic>,
    pub traffic_at_steady_end: Option<Traffic>,
}

impl SimClient {
    pub fn new(
        plan_id: usize,
        room: usize,
        speaker: bool,
        expects_media: bool,
        user: UserId,
        frame_offset: usize,
    ) -> Self {
        Self {
            plan_id,
            room,
            speaker,
            expects_media,
            user,
            socket: None,
            shadow: None,
            local: None,
            peers: Vec::new(),
            by_remote: HashMap::new(),
            streams: Vec::new(),
            slot_users: Vec::new(),
            slot_map_updates: 0,
            publisher: None,
            frame_offset,
            phase: Phase::Waiting,
            times: JoinTimes::default(),
            traffic: Traffic::default(),
            traffic_at_steady_start: None,
            traffic_at_steady_end: None,
        }
    }

    /// Start publishing now (called once the first peer is connected).
    pub fn start_publishing(&mut self, now: Instant) {
        if self.speaker && self.publisher.is_none() {
            self.publisher = Some(Publisher {
                pos: self.frame_offset,
                // Below 2^16 so receivers start with a zero rollover counter.
                seq: (self.plan_id as u64 * 7919) % 30_000,
                ts: (self.plan_id as u32).wrapping_mul(2_654_435_761),
                next_frame: now,
                spurt_start: true,
            });
        }
    }

    /// Apply a data channel message from the SFU; true if it was a slot map.
    pub fn on_channel_message(&mut self, peer: usize, data: &[u8]) -> bool {
        let Ok(msg) = SfuToClient::decode(data) else {
            return false;
        };
        match msg.body {
            SfuToClientBody::Slots { slots } => {
                let Some(p) = self.peers.get(peer) else {
                    return false;
                };
                if self.slot_users.len() < p.recv_mids.len() {
                    self.slot_users.resize(p.recv_mids.len(), None);
                }
                for e in slots {
                    // Slots are named by our own mids; fall back to the index.
                    let k = p
                        .recv_mids
                        .iter()
                        .position(|m| m.to_string() == e.mid)
                        .unwrap_or(usize::from(e.slot));
                    if let Some(s) = self.slot_users.get_mut(k) {
                        *s = e.user;
                    }
                }
                self.slot_map_updates += 1;
                true
            }
            SfuToClientBody::Speaking { .. } => false,
        }
    }
}

/// Steady-window traffic of one participant, for per-client uplink figures.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ClientWindow {
    pub speaker: bool,
    pub traffic: Traffic,
    pub seconds: f64,
}

impl SimClient {
    pub fn window(&self, seconds: Duration) -> Option<ClientWindow> {
        let (a, b) = (self.traffic_at_steady_start?, self.traffic_at_steady_end?);
        Some(ClientWindow {
            speaker: self.speaker,
            traffic: b.minus(&a),
            seconds: seconds.as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haven_proto::datachannel::SlotEntry;
    use haven_proto::SessionId;

    #[test]
    fn follows_the_slot_map_by_mid() {
        let now = Instant::now();
        let rtc = haven_sfu::media::haven_rtc_config().build(now);
        let mut c = SimClient::new(0, 0, false, true, UserId::new_random(), 0);
        let mut p = Peer::new(rtc, now);
        let mut api = p.rtc.sdp_api();
        let mids: Vec<Mid> = (0..2)
            .map(|_| {
                api.add_media(
                    str0m::media::MediaKind::Audio,
                    str0m::media::Direction::RecvOnly,
                    None,
                    None,
                    None,
                )
            })
            .collect();
        p.recv_mids = mids.clone();
        c.peers.push(p);
        let u = UserId::new_random();
        let msg = SfuToClient::new(SfuToClientBody::Slots {
            slots: vec![
                SlotEntry {
                    slot: 0,
                    mid: mids[1].to_string(),
                    session: Some(SessionId::new_random()),
                    user: Some(u),
                },
                SlotEntry {
                    slot: 1,
                    mid: mids[0].to_string(),
                    session: None,
                    user: None,
                },
            ],
        });
        assert!(c.on_channel_message(0, &msg.encode()));
        assert_eq!(c.slot_users, vec![None, Some(u)]);
        assert!(!c.on_channel_message(0, b"garbage"));
        c.start_publishing(now);
        assert!(c.publisher.is_none(), "listeners do not publish");
    }
}
