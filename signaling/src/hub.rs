//! Shared state of the process: open connections and their users, which communities each
//! online user belongs to, voice rooms, node placement, the visibility cache and the node
//! links, behind one mutex held only for short, non-async sections.
//!
//! Delivery to a connection never blocks: every connection has a bounded queue, and a
//! connection whose queue is full is a slow consumer and is closed (its client reconnects)
//! rather than letting memory grow without bound.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use haven_proto::client::ServerMessage;
use haven_proto::{NodeId, RoomId, SessionId, UserId};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::{inc, set, Metrics};
use crate::placement::Placement;
use crate::rooms::VoiceRooms;
use crate::sfu_link::NodeLink;
use crate::visibility::VisibilityCache;

pub type ConnId = u64;

const VOICE_LOCK_STRIPES: usize = 64;

struct ConnEntry {
    user: Option<UserId>,
    tx: mpsc::Sender<String>,
    kill: CancellationToken,
}

#[derive(Default)]
struct UserEntry {
    conns: Vec<ConnId>,
    communities: HashSet<Uuid>,
}

/// Everything behind the hub's lock.
pub struct HubState {
    conns: HashMap<ConnId, ConnEntry>,
    users: HashMap<UserId, UserEntry>,
    by_community: HashMap<Uuid, HashSet<UserId>>,
    pub rooms: VoiceRooms,
    pub placement: Placement,
    pub visibility: VisibilityCache,
    pub links: HashMap<NodeId, Arc<NodeLink>>,
    /// Sessions whose offer is at a node but not yet registered in `rooms`.
    pub pending_sessions: HashSet<SessionId>,
    revocation_seq: u64,
    dirty_rooms: HashMap<RoomId, Uuid>,
}

impl HubState {
    /// Online users who belong to `community`.
    pub fn online_members(&self, community: Uuid) -> Vec<UserId> {
        self.by_community
            .get(&community)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn communities_of(&self, user: UserId) -> Vec<Uuid> {
        self.users
            .get(&user)
            .map(|u| u.communities.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn is_online(&self, user: UserId) -> bool {
        self.users.get(&user).is_some_and(|u| !u.conns.is_empty())
    }

    pub fn is_member(&self, user: UserId, community: Uuid) -> bool {
        self.users
            .get(&user)
            .is_some_and(|u| u.communities.contains(&community))
    }

    pub fn add_membership(&mut self, user: UserId, community: Uuid) {
        if let Some(u) = self.users.get_mut(&user) {
            u.communities.insert(community);
            self.by_community.entry(community).or_default().insert(user);
        }
    }

    pub fn remove_membership(&mut self, user: UserId, community: Uuid) {
        if let Some(u) = self.users.get_mut(&user) {
            u.communities.remove(&community);
        }
        if let Some(s) = self.by_community.get_mut(&community) {
            s.remove(&user);
            if s.is_empty() {
                self.by_community.remove(&community);
            }
        }
    }

    pub fn drop_community(&mut self, community: Uuid) {
        if let Some(users) = self.by_community.remove(&community) {
            for u in users {
                if let Some(e) = self.users.get_mut(&u) {
                    e.communities.remove(&community);
                }
            }
        }
    }

    /// Replaces what we know of `user`'s communities (after sign-in or a listener gap).
    pub fn set_communities(&mut self, user: UserId, communities: Vec<Uuid>) {
        let old = self.communities_of(user);
        for c in old {
            self.remove_membership(user, c);
        }
        for c in communities {
            self.add_membership(user, c);
        }
    }

    pub fn online_users(&self) -> Vec<UserId> {
        self.users.keys().copied().collect()
    }

    /// Something that can cost someone their voice rights happened.
    pub fn bump_revocation(&mut self) {
        self.revocation_seq += 1;
    }

    /// Changes with every [`Self::bump_revocation`]; a join compares it before and after.
    pub fn revocation_seq(&self) -> u64 {
        self.revocation_seq
    }

    /// The room's roster must be sent again to those who can see it.
    pub fn mark_dirty(&mut self, room: RoomId, community: Uuid) {
        self.dirty_rooms.insert(room, community);
    }
}

/// The shared registry.
pub struct Hub {
    state: Mutex<HubState>,
    next_conn: AtomicU64,
    voice_locks: Vec<tokio::sync::Mutex<()>>,
    roster_changed: Notify,
    metrics: Arc<Metrics>,
    queue_size: usize,
    max_conns_per_user: usize,
}

/// Refusal of a sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many connections for this user (limit {0})")]
pub struct TooManyConnections(pub usize);

impl Hub {
    pub fn new(
        placement: Placement,
        metrics: Arc<Metrics>,
        queue_size: usize,
        max_conns_per_user: usize,
    ) -> Self {
        Self {
            state: Mutex::new(HubState {
                conns: HashMap::new(),
                users: HashMap::new(),
                by_community: HashMap::new(),
                rooms: VoiceRooms::new(),
                placement,
                visibility: VisibilityCache::new(),
                links: HashMap::new(),
                pending_sessions: HashSet::new(),
                revocation_seq: 0,
                dirty_rooms: HashMap::new(),
            }),
            next_conn: AtomicU64::new(1),
            voice_locks: (0..VOICE_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            roster_changed: Notify::new(),
            metrics,
            queue_size,
            max_conns_per_user,
        }
    }

    /// The state, locked. Never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock leaves the maps consistent enough (every update is
        // a few inserts/removes); keep serving rather than cascading the panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serialises one user's voice operations across their connections.
    pub fn voice_lock(&self, user: UserId) -> &tokio::sync::Mutex<()> {
        let i = (user.0.as_u128() % VOICE_LOCK_STRIPES as u128) as usize;
        &self.voice_locks[i]
    }

    pub fn open_connection(&self) -> (ConnId, mpsc::Receiver<String>, CancellationToken) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.queue_size);
        let kill = CancellationToken::new();
        let mut st = self.lock();
        st.conns.insert(
            id,
            ConnEntry {
                user: None,
                tx,
                kill: kill.clone(),
            },
        );
        set(&self.metrics.ws_connections, st.conns.len() as u64);
        (id, rx, kill)
    }

    /// Forgets a connection; returns its user when that was their last connection.
    pub fn close_connection(&self, conn: ConnId) -> Option<UserId> {
        let mut st = self.lock();
        let entry = st.conns.remove(&conn)?;
        set(&self.metrics.ws_connections, st.conns.len() as u64);
        let user = entry.user?;
        let last = match st.users.get_mut(&user) {
            Some(u) => {
                u.conns.retain(|c| *c != conn);
                u.conns.is_empty()
            }
            None => false,
        };
        if last {
            st.set_communities(user, Vec::new());
            st.users.remove(&user);
            return Some(user);
        }
        None
    }

    /// Binds a connection to its user, records their communities (when given) and queues
    /// `ready` for it, in one step so that `ready` precedes every event.
    pub fn sign_in(
        &self,
        conn: ConnId,
        user: UserId,
        communities: Option<Vec<Uuid>>,
        ready: &ServerMessage,
    ) -> Result<(), TooManyConnections> {
        let mut st = self.lock();
        let open = st.users.get(&user).map_or(0, |u| u.conns.len());
        if open >= self.max_conns_per_user {
            return Err(TooManyConnections(self.max_conns_per_user));
        }
        if let Some(c) = st.conns.get_mut(&conn) {
            c.user = Some(user);
        }
        st.users.entry(user).or_default().conns.push(conn);
        if let Some(cs) = communities {
            st.set_communities(user, cs);
        }
        self.push(&st, conn, &ready.encode());
        Ok(())
    }

    fn push(&self, st: &HubState, conn: ConnId, text: &str) -> bool {
        let Some(c) = st.conns.get(&conn) else {
            return false;
        };
        match c.tx.try_send(text.to_owned()) {
            Ok(()) => {
                inc(&self.metrics.ws_messages_out);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A slow consumer: close it rather than buffer without bound.
                inc(&self.metrics.ws_slow_consumers_dropped);
                c.kill.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a message for one connection.
    pub fn send_to_conn(&self, conn: ConnId, msg: &ServerMessage) -> bool {
        let text = msg.encode();
        let st = self.lock();
        self.push(&st, conn, &text)
    }

    /// Queues a message for every connection of `user`.
    pub fn send_to_user(&self, user: UserId, msg: &ServerMessage) {
        let text = msg.encode();
        let st = self.lock();
        self.send_text_to_user(&st, user, &text);
    }

    /// Queues an already encoded message for each of `users`.
    pub fn send_to_users(&self, users: &[UserId], msg: &ServerMessage) {
        if users.is_empty() {
            return;
        }
        let text = msg.encode();
        let st = self.lock();
        for u in users {
            self.send_text_to_user(&st, *u, &text);
        }
    }

    fn send_text_to_user(&self, st: &HubState, user: UserId, text: &str) {
        if let Some(u) = st.users.get(&user) {
            for c in &u.conns {
                if self.push(st, *c, text) {
                    inc(&self.metrics.events_delivered);
                }
            }
        }
    }

    /// Marks a room's roster for re-broadcast.
    pub fn mark_dirty(&self, room: RoomId, community: Uuid) {
        self.lock().mark_dirty(room, community);
        self.roster_changed.notify_one();
    }

    /// Waits until some roster changed, then takes the set of changed rooms.
    pub async fn next_dirty(&self) -> Vec<(RoomId, Uuid)> {
        loop {
            {
                let mut st = self.lock();
                if !st.dirty_rooms.is_empty() {
                    return st.dirty_rooms.drain().collect();
                }
            }
            self.roster_changed.notified().await;
        }
    }

    /// Closes every connection (shutdown).
    pub fn kill_all(&self) {
        for c in self.lock().conns.values() {
            c.kill.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haven_proto::client::{ServerEvent, ServerMessage};
    use std::time::Duration;

    fn hub(queue: usize) -> Hub {
        Hub::new(
            Placement::new(Duration::from_secs(10)),
            Arc::new(Metrics::default()),
            queue,
            2,
        )
    }

    #[test]
    fn delivery_follows_users_and_memberships() {
        let hub = hub(8);
        let (c1, mut rx1, _) = hub.open_connection();
        let (c2, mut rx2, _) = hub.open_connection();
        let ada = UserId::new_random();
        let community = Uuid::new_v4();
        let ready = ServerMessage::new(None, ServerEvent::Ok);
        hub.sign_in(c1, ada, Some(vec![community]), &ready).unwrap();
        hub.sign_in(c2, ada, None, &ready).unwrap();
        let (c3, _rx3, _) = hub.open_connection();
        assert_eq!(
            hub.sign_in(c3, ada, None, &ready),
            Err(TooManyConnections(2))
        );
        assert_eq!(hub.lock().online_members(community), vec![ada]);
        assert!(rx1.try_recv().unwrap().contains("ok"), "ready comes first");
        assert!(rx2.try_recv().unwrap().contains("ok"));
        hub.send_to_user(ada, &ServerMessage::new(None, ServerEvent::Pong));
        assert!(rx1.try_recv().unwrap().contains("pong"));
        assert!(rx2.try_recv().unwrap().contains("pong"));
        assert_eq!(hub.close_connection(c1), None);
        assert_eq!(hub.close_connection(c2), Some(ada));
        assert!(hub.lock().online_members(community).is_empty());
        assert!(!hub.lock().is_online(ada));
    }

    #[test]
    fn a_full_queue_kills_the_slow_connection() {
        let hub = hub(2);
        let (c, _rx, kill) = hub.open_connection();
        let msg = ServerMessage::new(None, ServerEvent::Pong);
        assert!(hub.send_to_conn(c, &msg));
        assert!(hub.send_to_conn(c, &msg));
        assert!(!kill.is_cancelled());
        assert!(!hub.send_to_conn(c, &msg));
        assert!(kill.is_cancelled());
    }
}
