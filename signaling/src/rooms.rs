//! Who is in which voice room, on which node, in which state: the roster registry.
//!
//! Signaling is the authority for the parts of a participant's state that come from
//! decisions (self mute, deafen, moderator mute, whether the role allows speaking); the SFU
//! node reports what only it can see (media connected, speaking). One user has at most one
//! voice session at a time, whichever connection asked for it, so a user on two devices
//! moves between rooms rather than being in two. Plain data, no IO.

use std::collections::{BTreeMap, HashMap};

use haven_proto::client::VoiceParticipant;
use haven_proto::{NodeId, RoomId, SessionId, UserId};
use uuid::Uuid;

/// One user's voice session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub session: SessionId,
    pub user: UserId,
    pub display_name: String,
    pub community_id: Uuid,
    pub room: RoomId,
    pub node: NodeId,
    /// The channel's permissions allow speaking (re-checked on permission events).
    pub can_speak: bool,
    pub muted: bool,
    pub deafened: bool,
    /// Muted by a moderator.
    pub moderator_muted: bool,
    pub speaking: bool,
    pub connected: bool,
}

impl Participant {
    /// Whether the SFU must drop this participant's audio regardless of the client.
    pub fn server_muted(&self) -> bool {
        self.moderator_muted || !self.can_speak
    }

    /// The voice channel's id.
    pub fn channel_id(&self) -> Uuid {
        self.room.0
    }

    pub fn view(&self) -> VoiceParticipant {
        VoiceParticipant {
            user_id: self.user,
            display_name: self.display_name.clone(),
            muted: self.muted,
            deafened: self.deafened,
            server_muted: self.server_muted(),
            speaking: self.speaking && !self.muted && !self.server_muted(),
        }
    }
}

/// A room's full state as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    pub community_id: Uuid,
    pub channel_id: Uuid,
    pub participants: Vec<VoiceParticipant>,
}

#[derive(Debug)]
struct Room {
    community_id: Uuid,
    /// Ordered by join so rosters are stable.
    members: BTreeMap<u64, SessionId>,
}

/// Every voice session this signaling instance placed.
#[derive(Debug, Default)]
pub struct VoiceRooms {
    sessions: HashMap<SessionId, (u64, Participant)>,
    by_user: HashMap<UserId, SessionId>,
    rooms: HashMap<RoomId, Room>,
    seq: u64,
}

impl VoiceRooms {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a session; returns the user's previous session, which the caller must end.
    pub fn insert(&mut self, p: Participant) -> Option<Participant> {
        let previous = self
            .by_user
            .get(&p.user)
            .copied()
            .and_then(|s| self.remove(s));
        self.seq += 1;
        let room = self.rooms.entry(p.room).or_insert_with(|| Room {
            community_id: p.community_id,
            members: BTreeMap::new(),
        });
        room.members.insert(self.seq, p.session);
        self.by_user.insert(p.user, p.session);
        self.sessions.insert(p.session, (self.seq, p));
        previous
    }

    /// Removes a session (left, kicked, node lost).
    pub fn remove(&mut self, session: SessionId) -> Option<Participant> {
        let (seq, p) = self.sessions.remove(&session)?;
        if self.by_user.get(&p.user) == Some(&session) {
            self.by_user.remove(&p.user);
        }
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.members.remove(&seq);
            if room.members.is_empty() {
                self.rooms.remove(&p.room);
            }
        }
        Some(p)
    }

    pub fn get(&self, session: SessionId) -> Option<&Participant> {
        self.sessions.get(&session).map(|(_, p)| p)
    }

    pub fn get_mut(&mut self, session: SessionId) -> Option<&mut Participant> {
        self.sessions.get_mut(&session).map(|(_, p)| p)
    }

    /// The user's current voice session.
    pub fn of_user(&self, user: UserId) -> Option<&Participant> {
        self.by_user.get(&user).and_then(|s| self.get(*s))
    }

    /// The session of `user` in `room`, if that is where they are.
    pub fn find(&self, room: RoomId, user: UserId) -> Option<&Participant> {
        self.of_user(user).filter(|p| p.room == room)
    }

    pub fn participant_count(&self, room: RoomId) -> usize {
        self.rooms.get(&room).map_or(0, |r| r.members.len())
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The room as clients see it (`None` when nobody is in it).
    pub fn state(&self, room: RoomId) -> Option<RoomState> {
        let r = self.rooms.get(&room)?;
        Some(RoomState {
            community_id: r.community_id,
            channel_id: room.0,
            participants: r
                .members
                .values()
                .filter_map(|s| self.get(*s))
                .map(Participant::view)
                .collect(),
        })
    }

    /// Sessions in rooms of `community`.
    pub fn in_community(&self, community: Uuid) -> Vec<&Participant> {
        self.rooms
            .iter()
            .filter(|(_, r)| r.community_id == community)
            .flat_map(|(_, r)| r.members.values())
            .filter_map(|s| self.get(*s))
            .collect()
    }

    /// Sessions in one room.
    pub fn in_room(&self, room: RoomId) -> Vec<&Participant> {
        self.rooms
            .get(&room)
            .map(|r| r.members.values().filter_map(|s| self.get(*s)).collect())
            .unwrap_or_default()
    }

    /// Sessions on `node`.
    pub fn on_node(&self, node: &NodeId) -> Vec<SessionId> {
        self.sessions
            .values()
            .filter(|(_, p)| &p.node == node)
            .map(|(_, p)| p.session)
            .collect()
    }

    /// Every session (for the sweep after the event listener reconnects).
    pub fn all(&self) -> Vec<&Participant> {
        self.sessions.values().map(|(_, p)| p).collect()
    }

    /// Non-empty rooms of the given communities.
    pub fn rooms_of(&self, communities: &[Uuid]) -> Vec<RoomId> {
        self.rooms
            .iter()
            .filter(|(_, r)| communities.contains(&r.community_id))
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn participant(user: UserId, room: RoomId, community: Uuid) -> Participant {
        Participant {
            session: SessionId::new_random(),
            user,
            display_name: "ada".into(),
            community_id: community,
            room,
            node: NodeId::new("n1"),
            can_speak: true,
            muted: false,
            deafened: false,
            moderator_muted: false,
            speaking: false,
            connected: false,
        }
    }

    #[test]
    fn one_session_per_user_and_rooms_vanish_when_empty() {
        let mut rooms = VoiceRooms::new();
        let c = Uuid::new_v4();
        let (r1, r2) = (RoomId::new_random(), RoomId::new_random());
        let (ada, bob) = (UserId::new_random(), UserId::new_random());
        let a1 = participant(ada, r1, c);
        assert!(rooms.insert(a1.clone()).is_none());
        assert!(rooms.insert(participant(bob, r1, c)).is_none());
        assert_eq!(rooms.participant_count(r1), 2);
        // Ada moves to r2: her old session comes back for the caller to end.
        let a2 = participant(ada, r2, c);
        assert_eq!(rooms.insert(a2.clone()).unwrap().session, a1.session);
        assert_eq!(rooms.participant_count(r1), 1);
        assert_eq!(rooms.of_user(ada).unwrap().session, a2.session);
        assert!(rooms.find(r1, ada).is_none());
        assert!(rooms.find(r2, ada).is_some());
        assert!(rooms.remove(a2.session).is_some());
        assert!(rooms.state(r2).is_none());
        assert_eq!(rooms.room_count(), 1);
        assert!(rooms.of_user(ada).is_none());
    }

    #[test]
    fn state_lists_in_join_order_with_effective_flags() {
        let mut rooms = VoiceRooms::new();
        let c = Uuid::new_v4();
        let r = RoomId::new_random();
        let users: Vec<_> = (0..3).map(|_| UserId::new_random()).collect();
        let mut sessions = Vec::new();
        for u in &users {
            let p = participant(*u, r, c);
            sessions.push(p.session);
            rooms.insert(p);
        }
        let p = rooms.get_mut(sessions[1]).unwrap();
        p.can_speak = false;
        p.speaking = true;
        let state = rooms.state(r).unwrap();
        assert_eq!(
            state
                .participants
                .iter()
                .map(|p| p.user_id)
                .collect::<Vec<_>>(),
            users
        );
        assert!(state.participants[1].server_muted);
        assert!(
            !state.participants[1].speaking,
            "a server-muted user is never shown speaking"
        );
        assert_eq!(rooms.in_community(c).len(), 3);
        assert_eq!(rooms.on_node(&NodeId::new("n1")).len(), 3);
        assert_eq!(rooms.rooms_of(&[c]), vec![r]);
        assert!(rooms.rooms_of(&[Uuid::new_v4()]).is_empty());
    }
}
