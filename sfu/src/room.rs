//! A voice room on this node: its members, its speaker selection and its counters. Knows
//! nothing about str0m; the engine asks it where a packet goes and does the writing.

use std::time::Instant;

use haven_proto::RoomId;

use crate::participant::ParticipantId;
use crate::speakers::{Route, SelectionConfig, SpeakerSelector};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomCounters {
    pub rtp_in: u64,
    pub rtp_forwarded: u64,
    pub rtp_dropped: u64,
}

pub(crate) struct VoiceRoom {
    pub id: RoomId,
    pub members: Vec<ParticipantId>,
    pub selector: SpeakerSelector<ParticipantId>,
    pub counters: RoomCounters,
}

impl VoiceRoom {
    pub fn new(id: RoomId, slots: usize, cfg: SelectionConfig) -> Self {
        Self {
            id,
            members: Vec::new(),
            selector: SpeakerSelector::new(slots, cfg),
            counters: RoomCounters::default(),
        }
    }

    pub fn add(&mut self, p: ParticipantId) {
        if !self.members.contains(&p) {
            self.members.push(p);
        }
    }

    /// Returns (selection changed, was speaking).
    pub fn remove(&mut self, now: Instant, p: ParticipantId) -> (bool, bool) {
        self.members.retain(|m| *m != p);
        self.selector.remove(now, p)
    }

    /// Append (subscriber, slot) for a packet from `from` routed as `route`.
    pub fn targets(
        &self,
        route: Route,
        from: ParticipantId,
        out: &mut Vec<(ParticipantId, usize)>,
    ) {
        match route {
            Route::Drop => {}
            Route::Slot(k) => {
                out.extend(self.members.iter().filter(|m| **m != from).map(|m| (*m, k)))
            }
            Route::RunnerUp => out.extend(
                self.selector
                    .selected()
                    .iter()
                    .enumerate()
                    .filter_map(|(k, h)| h.filter(|h| *h != from).map(|h| (h, k))),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_route_reaches_everyone_else_and_runner_up_reaches_the_selected() {
        let t = Instant::now();
        let mut room = VoiceRoom::new(RoomId::new_random(), 1, SelectionConfig::default());
        let (a, b, c) = (ParticipantId(1), ParticipantId(2), ParticipantId(3));
        for p in [a, b, c] {
            room.add(p);
        }
        assert_eq!(
            room.selector.observe(t, a, Some(20), None).route,
            Route::Slot(0)
        );
        assert_eq!(
            room.selector.observe(t, b, Some(20), None).route,
            Route::RunnerUp
        );
        let mut out = Vec::new();
        room.targets(Route::Slot(0), a, &mut out);
        assert_eq!(out, vec![(b, 0), (c, 0)]);
        out.clear();
        room.targets(Route::RunnerUp, b, &mut out);
        assert_eq!(out, vec![(a, 0)]);
        assert_eq!(room.remove(t, a), (true, true));
        assert_eq!(room.members, vec![b, c]);
    }
}
