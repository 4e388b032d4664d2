//! Which SFU node a room lives on: the node registry (capacity, load, heartbeat deadline) and
//! the placement rule, without IO.
//!
//! A room lives on exactly one node while anyone is in it (or about to be: a join reserves
//! its place before the offer goes out, so two simultaneous first joins land together). A new
//! room goes to the least-loaded healthy node, where load counts the participants the node
//! reported and the ones placed since, so a join storm between heartbeats spreads out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use haven_proto::control::NodeLoad;
use haven_proto::{NodeId, RoomId};

/// Why no node could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no healthy SFU node has room")]
    NoHealthyNode,
}

#[derive(Debug, Clone)]
struct NodeEntry {
    media_addr: SocketAddr,
    capacity: u32,
    load: NodeLoad,
    deadline: Instant,
    /// Participants placed on the node by us, counted until they leave.
    placed: u32,
    /// The node is shutting down: its rooms stay, new rooms go elsewhere.
    draining: bool,
}

#[derive(Debug, Clone)]
struct Pin {
    node: NodeId,
    /// Participants and in-flight joins.
    members: u32,
}

/// A node as health checks and metrics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub media_addr: SocketAddr,
    pub capacity: u32,
    pub participants: u32,
    pub healthy: bool,
}

/// The registry of nodes and the room → node pins.
#[derive(Debug)]
pub struct Placement {
    heartbeat_timeout: Duration,
    nodes: HashMap<NodeId, NodeEntry>,
    pins: HashMap<RoomId, Pin>,
}

impl Placement {
    pub fn new(heartbeat_timeout: Duration) -> Self {
        Self {
            heartbeat_timeout,
            nodes: HashMap::new(),
            pins: HashMap::new(),
        }
    }

    /// A node (re)registered. Rooms pinned to an earlier incarnation stay pinned: the caller
    /// removes the old node first when it replaces a connection.
    pub fn register(
        &mut self,
        node: NodeId,
        media_addr: SocketAddr,
        capacity: u32,
        load: NodeLoad,
        now: Instant,
    ) {
        let placed = self.pins_on(&node);
        self.nodes.insert(
            node,
            NodeEntry {
                media_addr,
                capacity,
                load,
                deadline: now + self.heartbeat_timeout,
                placed,
                draining: false,
            },
        );
    }

    /// A heartbeat; false for a node that is not registered.
    pub fn heartbeat(
        &mut self,
        node: &NodeId,
        load: NodeLoad,
        draining: bool,
        now: Instant,
    ) -> bool {
        match self.nodes.get_mut(node) {
            Some(n) => {
                n.load = load;
                n.draining = draining;
                n.deadline = now + self.heartbeat_timeout;
                true
            }
            None => false,
        }
    }

    /// The node's connection is gone: forget it and unpin its rooms (returned).
    pub fn remove_node(&mut self, node: &NodeId) -> Vec<RoomId> {
        self.nodes.remove(node);
        let rooms: Vec<RoomId> = self
            .pins
            .iter()
            .filter(|(_, p)| &p.node == node)
            .map(|(r, _)| *r)
            .collect();
        for r in &rooms {
            self.pins.remove(r);
        }
        rooms
    }

    pub fn is_healthy(&self, node: &NodeId, now: Instant) -> bool {
        self.nodes.get(node).is_some_and(|n| now < n.deadline)
    }

    /// The node `room` lives on, reserving a place for one more participant. Call
    /// [`Self::release`] when that participant leaves or the join fails.
    pub fn place(&mut self, room: RoomId, now: Instant) -> Result<NodeId, PlacementError> {
        if let Some(pin) = self.pins.get_mut(&room) {
            // A room never splits: as long as its node is connected, it stays there.
            if let Some(n) = self.nodes.get_mut(&pin.node) {
                pin.members += 1;
                n.placed += 1;
                return Ok(pin.node.clone());
            }
        }
        let node = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                now < n.deadline && !n.draining && n.capacity > 0 && load_of(n) < n.capacity
            })
            .min_by(|(a_id, a), (b_id, b)| {
                let fa = f64::from(load_of(a)) / f64::from(a.capacity);
                let fb = f64::from(load_of(b)) / f64::from(b.capacity);
                fa.total_cmp(&fb)
                    .then(a.load.cpu_permille.cmp(&b.load.cpu_permille))
                    .then(a_id.cmp(b_id))
            })
            .map(|(id, _)| id.clone())
            .ok_or(PlacementError::NoHealthyNode)?;
        if let Some(n) = self.nodes.get_mut(&node) {
            n.placed += 1;
        }
        self.pins.insert(
            room,
            Pin {
                node: node.clone(),
                members: 1,
            },
        );
        Ok(node)
    }

    /// One participant (or failed join) of `room` is gone; the room is unpinned when empty.
    pub fn release(&mut self, room: RoomId) {
        let Some(pin) = self.pins.get_mut(&room) else {
            return;
        };
        pin.members = pin.members.saturating_sub(1);
        if let Some(n) = self.nodes.get_mut(&pin.node) {
            n.placed = n.placed.saturating_sub(1);
        }
        if pin.members == 0 {
            self.pins.remove(&room);
        }
    }

    /// Where `room` is pinned, if anywhere.
    pub fn node_of(&self, room: RoomId) -> Option<&NodeId> {
        self.pins.get(&room).map(|p| &p.node)
    }

    pub fn statuses(&self, now: Instant) -> Vec<NodeStatus> {
        let mut out: Vec<_> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeStatus {
                id: id.clone(),
                media_addr: n.media_addr,
                capacity: n.capacity,
                participants: load_of(n),
                healthy: now < n.deadline && !n.draining,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn pins_on(&self, node: &NodeId) -> u32 {
        self.pins
            .values()
            .filter(|p| &p.node == node)
            .map(|p| p.members)
            .sum()
    }
}

/// Participants on the node: what it reported, or what we placed if that is more (the report
/// lags behind our placements).
fn load_of(n: &NodeEntry) -> u32 {
    n.load.participants.max(n.placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Duration = Duration::from_secs(10);

    fn load(participants: u32) -> NodeLoad {
        NodeLoad {
            participants,
            rooms: 0,
            cpu_permille: 0,
        }
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:3478".parse().unwrap()
    }

    #[test]
    fn new_rooms_go_to_the_least_loaded_healthy_node() {
        let t0 = Instant::now();
        let mut p = Placement::new(HB);
        assert_eq!(
            p.place(RoomId::new_random(), t0),
            Err(PlacementError::NoHealthyNode)
        );
        p.register(NodeId::new("a"), addr(), 100, load(50), t0);
        p.register(NodeId::new("b"), addr(), 100, load(10), t0);
        p.register(NodeId::new("c"), addr(), 10, load(2), t0);
        // b: 10 %, c: 20 %, a: 50 %.
        assert_eq!(p.place(RoomId::new_random(), t0).unwrap(), NodeId::new("b"));
        // A node past its heartbeat deadline gets no new rooms.
        let later = t0 + HB;
        assert!(p.heartbeat(&NodeId::new("a"), load(0), false, later));
        assert_eq!(
            p.place(RoomId::new_random(), later).unwrap(),
            NodeId::new("a")
        );
        assert!(!p.is_healthy(&NodeId::new("b"), later));
        assert!(!p.heartbeat(&NodeId::new("zz"), load(0), false, later));
    }

    #[test]
    fn a_draining_node_keeps_its_rooms_but_gets_no_new_ones() {
        let t0 = Instant::now();
        let mut p = Placement::new(HB);
        p.register(NodeId::new("a"), addr(), 100, load(0), t0);
        let room = RoomId::new_random();
        p.place(room, t0).unwrap();
        p.heartbeat(&NodeId::new("a"), load(1), true, t0);
        assert_eq!(p.place(room, t0).unwrap(), NodeId::new("a"));
        assert_eq!(
            p.place(RoomId::new_random(), t0),
            Err(PlacementError::NoHealthyNode)
        );
        assert!(!p.statuses(t0)[0].healthy);
    }

    #[test]
    fn a_room_stays_on_its_node_while_it_has_participants() {
        let t0 = Instant::now();
        let mut p = Placement::new(HB);
        p.register(NodeId::new("a"), addr(), 100, load(0), t0);
        let room = RoomId::new_random();
        assert_eq!(p.place(room, t0).unwrap(), NodeId::new("a"));
        // b is emptier now, but the room is pinned to a.
        p.register(NodeId::new("b"), addr(), 100, load(0), t0);
        assert_eq!(p.place(room, t0).unwrap(), NodeId::new("a"));
        p.release(room);
        assert_eq!(p.node_of(room), Some(&NodeId::new("a")));
        p.release(room);
        assert_eq!(p.node_of(room), None);
        p.release(room); // extra releases are harmless
    }

    #[test]
    fn placements_count_as_load_until_the_next_heartbeat() {
        let t0 = Instant::now();
        let mut p = Placement::new(HB);
        p.register(NodeId::new("a"), addr(), 100, load(0), t0);
        p.register(NodeId::new("b"), addr(), 100, load(0), t0);
        let mut counts = HashMap::new();
        for _ in 0..10 {
            *counts
                .entry(p.place(RoomId::new_random(), t0).unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(counts[&NodeId::new("a")], 5);
        assert_eq!(counts[&NodeId::new("b")], 5);
    }

    #[test]
    fn full_nodes_are_skipped_and_lost_nodes_unpin_their_rooms() {
        let t0 = Instant::now();
        let mut p = Placement::new(HB);
        p.register(NodeId::new("a"), addr(), 1, load(0), t0);
        let r1 = RoomId::new_random();
        p.place(r1, t0).unwrap();
        assert_eq!(
            p.place(RoomId::new_random(), t0),
            Err(PlacementError::NoHealthyNode)
        );
        assert_eq!(p.remove_node(&NodeId::new("a")), vec![r1]);
        assert_eq!(p.node_of(r1), None);
        p.register(NodeId::new("b"), addr(), 5, load(0), t0);
        assert_eq!(p.place(r1, t0).unwrap(), NodeId::new("b"));
        assert_eq!(p.statuses(t0)[0].participants, 1);
    }
}
