//! Which worker a room lives on, and which worker holds each session: the routing table of
//! the control link, as plain data (no threads, no IO) so it is tested on its own.
//!
//! A room lives on exactly one worker (its participants share one engine, so forwarding
//! never crosses threads). A new room is packed: it goes to the lowest-numbered worker that
//! is not busy (fewer than `pack_participants` members plus joins in flight, and under the
//! CPU share the caller says), and only when every worker is busy to the least loaded. Later
//! offers for the room follow it. The table learns sessions from the workers'
//! `Joined`/`Left` reports and forgets a room once it has no members and no offer in flight.
//! Every lookup is a hash map access.
//!
//! Why pack rather than spread: a voice packet costs the kernel and the scheduler about as
//! much as the forwarding itself, and what a worker pays per wake-up is shared by every
//! packet that arrived meanwhile. Spread over two workers, a light load wakes two threads
//! for the packets one could take in one batch: on the 2-core test box, one worker forwarded
//! at 8–11 % less CPU per packet than two at 100 and 500 participants (`docs/benchmarks.md`).
//! A heavy load still spreads: past the thresholds the next worker opens. `pack_participants
//! = 0` spreads from the start (least loaded first).

use std::collections::HashMap;

use haven_proto::{RoomId, SessionId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RoomPlace {
    worker: usize,
    members: u32,
    in_flight: u32,
}

#[derive(Debug)]
pub struct WorkerPlacement {
    /// Members plus offers in flight, per worker.
    load: Vec<u32>,
    /// A worker with this many is busy for new rooms (0: every worker is, so spread).
    pack_participants: u32,
    rooms: HashMap<RoomId, RoomPlace>,
    sessions: HashMap<SessionId, (RoomId, usize)>,
}

impl WorkerPlacement {
    pub fn new(workers: usize, pack_participants: u32) -> Self {
        Self {
            load: vec![0; workers.max(1)],
            pack_participants,
            rooms: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    /// The worker that takes an offer for `room`; counts the offer as in flight until
    /// [`Self::offer_finished`]. `cpu_busy(worker)` says whether a worker's CPU is past the
    /// share at which new rooms should go elsewhere.
    pub fn place_offer(&mut self, room: RoomId, cpu_busy: impl Fn(usize) -> bool) -> usize {
        let place = match self.rooms.get(&room) {
            Some(p) => *p,
            None => {
                let packed = self
                    .load
                    .iter()
                    .enumerate()
                    .find(|(i, l)| **l < self.pack_participants && !cpu_busy(*i));
                let worker = packed
                    .or_else(|| self.load.iter().enumerate().min_by_key(|(i, l)| (**l, *i)))
                    .map_or(0, |(i, _)| i);
                RoomPlace {
                    worker,
                    members: 0,
                    in_flight: 0,
                }
            }
        };
        self.rooms.insert(
            room,
            RoomPlace {
                in_flight: place.in_flight + 1,
                ..place
            },
        );
        self.load[place.worker] += 1;
        place.worker
    }

    /// The offer for `room` was answered (or refused); its member, if any, was reported by
    /// a `Joined` before this.
    pub fn offer_finished(&mut self, room: RoomId) {
        if let Some(p) = self.rooms.get_mut(&room) {
            if p.in_flight > 0 {
                p.in_flight -= 1;
                self.load[p.worker] = self.load[p.worker].saturating_sub(1);
            }
        }
        self.forget_if_empty(room);
    }

    /// A worker admitted `session` into `room`.
    pub fn joined(&mut self, worker: usize, room: RoomId, session: SessionId) {
        if worker >= self.load.len() {
            return;
        }
        if let Some((old_room, old_worker)) = self.sessions.get(&session).copied() {
            self.remove_member(old_room, old_worker);
        }
        let place = self.rooms.entry(room).or_insert(RoomPlace {
            worker,
            members: 0,
            in_flight: 0,
        });
        if place.worker != worker {
            // Cannot happen while offers follow the table; trust the worker that has it.
            self.load[place.worker] = self.load[place.worker].saturating_sub(place.members);
            place.worker = worker;
            self.load[worker] += place.members;
        }
        place.members += 1;
        self.load[worker] += 1;
        self.sessions.insert(session, (room, worker));
    }

    /// A worker dropped `session`. Reports from a worker that no longer holds it are stale.
    pub fn left(&mut self, worker: usize, session: SessionId) {
        match self.sessions.get(&session).copied() {
            Some((room, w)) if w == worker => {
                self.sessions.remove(&session);
                self.remove_member(room, worker);
            }
            _ => {}
        }
    }

    fn remove_member(&mut self, room: RoomId, worker: usize) {
        if let Some(p) = self.rooms.get_mut(&room) {
            if p.worker == worker && p.members > 0 {
                p.members -= 1;
                self.load[worker] = self.load[worker].saturating_sub(1);
            }
        }
        self.forget_if_empty(room);
    }

    fn forget_if_empty(&mut self, room: RoomId) {
        if self
            .rooms
            .get(&room)
            .is_some_and(|p| p.members == 0 && p.in_flight == 0)
        {
            self.rooms.remove(&room);
        }
    }

    pub fn worker_of_session(&self, session: SessionId) -> Option<usize> {
        self.sessions.get(&session).map(|(_, w)| *w)
    }

    pub fn worker_of_room(&self, room: RoomId) -> Option<usize> {
        self.rooms.get(&room).map(|p| p.worker)
    }

    /// Sessions on the node.
    pub fn participants(&self) -> usize {
        self.sessions.len()
    }

    /// Offers handed to workers and not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.rooms.values().map(|p| p.in_flight).sum()
    }

    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Members plus joins in flight on `worker`.
    pub fn worker_load(&self, worker: usize) -> u32 {
        self.load.get(worker).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(p: &mut WorkerPlacement, room: RoomId) -> (usize, SessionId) {
        let w = p.place_offer(room, |_| false);
        let s = SessionId::new_random();
        p.joined(w, room, s);
        p.offer_finished(room);
        (w, s)
    }

    #[test]
    fn rooms_pack_onto_the_first_worker_until_it_is_busy() {
        let mut p = WorkerPlacement::new(3, 4);
        let a = RoomId::new_random();
        let b = RoomId::new_random();
        for room in [a, a, b] {
            assert_eq!(join(&mut p, room).0, 0);
        }
        // Worker 0 has 3 of 4: a new room still goes there, and then it is full.
        let c = RoomId::new_random();
        assert_eq!(join(&mut p, c).0, 0);
        assert_eq!(join(&mut p, RoomId::new_random()).0, 1);
        // A room's members follow it past the threshold.
        assert_eq!(join(&mut p, a).0, 0);
        assert_eq!(p.worker_load(0), 5);
        // A worker whose CPU is busy is skipped while it has members.
        let d = RoomId::new_random();
        assert_eq!(p.place_offer(d, |w| w == 1), 2);
        p.offer_finished(d);
        // Every worker busy: the least loaded (loads are 5, 1, 0).
        let e = RoomId::new_random();
        assert_eq!(p.place_offer(e, |_| true), 2);
    }

    #[test]
    fn new_rooms_spread_and_members_follow_their_room() {
        let mut p = WorkerPlacement::new(3, 0);
        let rooms: Vec<RoomId> = (0..3).map(|_| RoomId::new_random()).collect();
        let workers: Vec<usize> = rooms.iter().map(|r| join(&mut p, *r).0).collect();
        assert_eq!(workers, vec![0, 1, 2]);
        // A second and third member of room 0 go to worker 0 whatever the load.
        let (w, s) = join(&mut p, rooms[0]);
        assert_eq!(w, 0);
        assert_eq!(join(&mut p, rooms[0]).0, 0);
        assert_eq!(p.worker_of_session(s), Some(0));
        assert_eq!(p.worker_load(0), 3);
        // The next new room goes to a least-loaded worker (1, lowest index among ties).
        assert_eq!(join(&mut p, RoomId::new_random()).0, 1);
        assert_eq!(p.participants(), 6);
        assert_eq!(p.rooms(), 4);
    }

    #[test]
    fn simultaneous_first_offers_land_together() {
        let mut p = WorkerPlacement::new(4, 0);
        let busy = RoomId::new_random();
        join(&mut p, busy);
        let room = RoomId::new_random();
        let a = p.place_offer(room, |_| false);
        let b = p.place_offer(room, |_| false);
        assert_eq!(a, b);
        assert_eq!(p.in_flight(), 2);
        // One is refused, the other joins.
        p.offer_finished(room);
        assert_eq!(p.worker_of_room(room), Some(a));
        let s = SessionId::new_random();
        p.joined(a, room, s);
        p.offer_finished(room);
        assert_eq!(p.in_flight(), 0);
        assert_eq!(p.worker_load(a), 1);
    }

    #[test]
    fn empty_rooms_are_forgotten_and_stale_reports_ignored() {
        let mut p = WorkerPlacement::new(2, 0);
        let room = RoomId::new_random();
        let (w, s) = join(&mut p, room);
        p.left(1 - w, s); // not the worker that has it
        assert_eq!(p.participants(), 1);
        p.left(w, s);
        assert_eq!(p.participants(), 0);
        assert_eq!(p.worker_of_room(room), None);
        assert_eq!(p.worker_load(w), 0);
        p.left(w, s); // twice
        assert_eq!(p.worker_load(w), 0);

        // A refused first offer leaves nothing behind.
        let other = RoomId::new_random();
        p.place_offer(other, |_| false);
        p.offer_finished(other);
        assert_eq!(p.rooms(), 0);
        assert_eq!(p.worker_load(0) + p.worker_load(1), 0);
    }

    #[test]
    fn a_replaced_session_is_counted_once() {
        let mut p = WorkerPlacement::new(2, 0);
        let room = RoomId::new_random();
        let (w, s) = join(&mut p, room);
        // Rejoin with the same session: the engine reports Left (replaced) then Joined.
        p.place_offer(room, |_| false);
        p.left(w, s);
        p.joined(w, room, s);
        p.offer_finished(room);
        assert_eq!(p.participants(), 1);
        assert_eq!(p.worker_load(w), 1);
        // Even if the Left were missing, a second Joined does not double count.
        p.joined(w, room, s);
        assert_eq!(p.worker_load(w), 1);
        assert_eq!(p.worker_of_room(room), Some(w));
    }
}
