//! Settings of one SFU engine (one worker), with the defaults the issue asks for.

use std::net::SocketAddr;
use std::time::Duration;

use haven_proto::NodeId;

use crate::speakers::SelectionConfig;

#[derive(Clone, Debug)]
pub struct SfuConfig {
    pub node_id: NodeId,
    /// The address clients send media to; put in the ICE candidate of every answer. The IO
    /// shell binds (or NATs to) it.
    pub media_addr: SocketAddr,
    /// Most participants this engine accepts.
    pub capacity: u32,
    /// Receive slots for a room whose offer does not say.
    pub default_slots: u8,
    /// Upper bound for a room's slots, and for recvonly m-lines taken from one offer.
    pub max_slots: u8,
    pub selection: SelectionConfig,
    /// Datagrams larger than this are dropped before any parsing.
    pub max_datagram: usize,
    /// Offers larger than this are refused before str0m parses them.
    pub max_sdp_bytes: usize,
    /// A participant whose ICE/DTLS has not completed by then is dropped.
    pub connect_timeout: Duration,
    /// A participant that lost ICE and did not regain it within this is dropped.
    pub disconnect_grace: Duration,
    /// Shortest time between housekeeping runs: a speaking hold that ran out is noticed
    /// within it. Housekeeping runs when the earliest hold runs out, not on a fixed beat.
    pub housekeeping_interval: Duration,
    /// Longest time between housekeeping runs, when nobody is speaking: join and
    /// disconnect timeouts are checked at least this often.
    pub idle_housekeeping_interval: Duration,
    /// Grant ids remembered for replay protection (each for ≤ 65 s).
    pub replay_cache_capacity: usize,
}

impl SfuConfig {
    pub fn new(node_id: NodeId, media_addr: SocketAddr) -> Self {
        Self {
            node_id,
            media_addr,
            capacity: 2000,
            default_slots: 3,
            max_slots: 16,
            selection: SelectionConfig::default(),
            max_datagram: 1500,
            max_sdp_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(20),
            disconnect_grace: Duration::from_secs(15),
            housekeeping_interval: Duration::from_millis(100),
            idle_housekeeping_interval: Duration::from_secs(1),
            replay_cache_capacity: 100_000,
        }
    }
}
