//! Admission: nothing reaches str0m's SDP parser without a valid join grant for this node
//! and this room, used once.
//!
//! Signature, algorithm, issuer, audience and lifetime are checked by
//! [`haven_proto::grant::GrantVerifier`]; this file adds what needs node state: the node id,
//! the room the offer is for, and a replay cache of used grant ids kept until they expire.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use haven_proto::control::ErrorCode;
use haven_proto::grant::{GrantError, GrantVerifier, JoinGrantClaims, CLOCK_SKEW};
use haven_proto::{NodeId, RoomId};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("grant is for room {granted}, offer is for room {requested}")]
    WrongRoom { granted: RoomId, requested: RoomId },
    #[error("grant is for node {0}")]
    WrongNode(NodeId),
    #[error("grant was already used")]
    Replayed,
    #[error("too many grants in flight to remember them all")]
    ReplayCacheFull,
}

impl AdmissionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Grant(GrantError::Expired) => ErrorCode::GrantExpired,
            Self::Grant(_) => ErrorCode::GrantInvalid,
            Self::WrongRoom { .. } => ErrorCode::GrantWrongRoom,
            Self::WrongNode(_) => ErrorCode::GrantWrongNode,
            Self::Replayed => ErrorCode::GrantReplayed,
            Self::ReplayCacheFull => ErrorCode::NodeFull,
        }
    }
}

/// Grant ids seen, each remembered until its grant could no longer verify anyway.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashMap<Uuid, u64>,
    by_expiry: BinaryHeap<Reverse<(u64, Uuid)>>,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            by_expiry: BinaryHeap::new(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Record `jti` (valid until `exp`). Refuses a second use. When full, refuses new grants
    /// rather than forgetting unexpired ones, which would reopen them to replay.
    pub fn insert(&mut self, jti: Uuid, exp: u64, now_unix: u64) -> Result<(), AdmissionError> {
        self.prune(now_unix);
        if self.seen.contains_key(&jti) {
            return Err(AdmissionError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(AdmissionError::ReplayCacheFull);
        }
        // Keep it for the verifier's skew too: until then the token still verifies.
        let forget_at = exp.saturating_add(CLOCK_SKEW.as_secs());
        self.seen.insert(jti, forget_at);
        self.by_expiry.push(Reverse((forget_at, jti)));
        Ok(())
    }

    pub fn prune(&mut self, now_unix: u64) {
        while let Some(Reverse((at, jti))) = self.by_expiry.peek().copied() {
            if at > now_unix {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&jti);
        }
    }
}

pub struct Admission {
    verifier: GrantVerifier,
    node: NodeId,
    replay: ReplayCache,
}

impl Admission {
    pub fn new(verifier: GrantVerifier, node: NodeId, replay_capacity: usize) -> Self {
        Self {
            verifier,
            node,
            replay: ReplayCache::new(replay_capacity),
        }
    }

    /// Verify `token` for an offer to `room`, and mark it used.
    pub fn admit(
        &mut self,
        token: &str,
        room: RoomId,
        now_unix: u64,
    ) -> Result<JoinGrantClaims, AdmissionError> {
        self.replay.prune(now_unix);
        let claims = self.verifier.verify(token, now_unix)?;
        if claims.node != self.node {
            return Err(AdmissionError::WrongNode(claims.node));
        }
        if claims.room != room {
            return Err(AdmissionError::WrongRoom {
                granted: claims.room,
                requested: room,
            });
        }
        self.replay.insert(claims.jti, claims.exp, now_unix)?;
        Ok(claims)
    }

    pub fn prune(&mut self, now_unix: u64) {
        self.replay.prune(now_unix);
    }

    pub fn replay_cache_len(&self) -> usize {
        self.replay.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use haven_proto::grant::{GrantSigner, JoinGrant};
    use haven_proto::{SessionId, UserId};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn setup() -> (GrantSigner, Admission, JoinGrant) {
        let signer = GrantSigner::generate().unwrap();
        let node = NodeId::new("sfu-a");
        let admission = Admission::new(signer.verifier(), node.clone(), 4);
        let grant = JoinGrant {
            user: UserId::new_random(),
            display_name: "Bo".into(),
            room: RoomId::new_random(),
            can_speak: true,
            session: SessionId::new_random(),
            node,
        };
        (signer, admission, grant)
    }

    #[test]
    fn admits_once_then_refuses_replay_until_expiry() {
        let (signer, mut adm, grant) = setup();
        let token = signer.mint(&grant, NOW, Duration::from_secs(30)).unwrap();
        adm.admit(&token, grant.room, NOW).unwrap();
        assert_eq!(
            adm.admit(&token, grant.room, NOW + 1),
            Err(AdmissionError::Replayed)
        );
        // Once expired the entry is forgotten, and the token is refused as expired instead.
        assert_eq!(
            adm.admit(&token, grant.room, NOW + 60).unwrap_err().code(),
            ErrorCode::GrantExpired
        );
        assert_eq!(adm.replay_cache_len(), 0);
    }

    #[test]
    fn refuses_wrong_room_and_wrong_node() {
        let (signer, mut adm, mut grant) = setup();
        let token = signer.mint(&grant, NOW, Duration::from_secs(30)).unwrap();
        let other = RoomId::new_random();
        assert_eq!(
            adm.admit(&token, other, NOW).unwrap_err().code(),
            ErrorCode::GrantWrongRoom
        );
        grant.node = NodeId::new("sfu-b");
        let token = signer.mint(&grant, NOW, Duration::from_secs(30)).unwrap();
        assert_eq!(
            adm.admit(&token, grant.room, NOW),
            Err(AdmissionError::WrongNode(NodeId::new("sfu-b")))
        );
    }

    #[test]
    fn full_cache_refuses_instead_of_forgetting() {
        let mut cache = ReplayCache::new(2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.insert(a, NOW + 10, NOW).unwrap();
        cache.insert(b, NOW + 50, NOW).unwrap();
        assert_eq!(
            cache.insert(c, NOW + 10, NOW),
            Err(AdmissionError::ReplayCacheFull)
        );
        // a's time passes: room for c, b still remembered.
        cache.insert(c, NOW + 60, NOW + 16).unwrap();
        assert_eq!(
            cache.insert(b, NOW + 50, NOW + 16),
            Err(AdmissionError::Replayed)
        );
    }
}
