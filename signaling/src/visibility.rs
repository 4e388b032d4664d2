//! The fan-out filter cache: what the database said about "may user U see channel C" and
//! "does U hold permission K in community X", kept until an event says it may have changed.
//!
//! Every event for a busy channel would otherwise cost one `can_view_channel_as` call per
//! connected member. Answers are cached per community, and invalidated by the events that
//! can change them (roles, overwrites, membership). A query that was in flight while an
//! invalidation happened must not store its (possibly stale) answer: each community has an
//! epoch, read before the query and compared when storing. After the event listener
//! reconnects (events may have been missed) everything is cleared. No IO here.

use std::collections::HashMap;

use haven_proto::UserId;
use uuid::Uuid;

use crate::db_event::{DbEvent, EventKind};

/// Answers kept per community before that community's cache is simply emptied.
const MAX_ENTRIES_PER_COMMUNITY: usize = 200_000;

#[derive(Debug, Default)]
struct CommunityCache {
    epoch: u64,
    view: HashMap<(UserId, Uuid), bool>,
    perms: HashMap<(UserId, &'static str), bool>,
}

impl CommunityCache {
    fn len(&self) -> usize {
        self.view.len() + self.perms.len()
    }
}

/// A token proving which state of the cache a query started from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(u64);

#[derive(Debug, Default)]
pub struct VisibilityCache {
    communities: HashMap<Uuid, CommunityCache>,
    /// Epoch of communities without an entry; raised by [`Self::clear`].
    floor: u64,
    counter: u64,
}

impl VisibilityCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn bump(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn entry(&mut self, community: Uuid) -> &mut CommunityCache {
        let floor = self.floor;
        self.communities
            .entry(community)
            .or_insert_with(|| CommunityCache {
                epoch: floor,
                ..Default::default()
            })
    }

    /// Read before asking the database; pass to the `store_*` call.
    pub fn epoch(&self, community: Uuid) -> Epoch {
        Epoch(
            self.communities
                .get(&community)
                .map_or(self.floor, |c| c.epoch),
        )
    }

    pub fn can_view(&self, community: Uuid, user: UserId, channel: Uuid) -> Option<bool> {
        self.communities
            .get(&community)?
            .view
            .get(&(user, channel))
            .copied()
    }

    pub fn has_permission(&self, community: Uuid, user: UserId, key: &'static str) -> Option<bool> {
        self.communities
            .get(&community)?
            .perms
            .get(&(user, key))
            .copied()
    }

    /// Stores an answer unless the community was invalidated since `epoch`; returns whether
    /// it was stored.
    pub fn store_view(
        &mut self,
        community: Uuid,
        epoch: Epoch,
        user: UserId,
        channel: Uuid,
        can_view: bool,
    ) -> bool {
        let c = self.entry(community);
        if c.epoch != epoch.0 {
            return false;
        }
        if c.len() >= MAX_ENTRIES_PER_COMMUNITY {
            c.view.clear();
            c.perms.clear();
        }
        c.view.insert((user, channel), can_view);
        true
    }

    pub fn store_permission(
        &mut self,
        community: Uuid,
        epoch: Epoch,
        user: UserId,
        key: &'static str,
        held: bool,
    ) -> bool {
        let c = self.entry(community);
        if c.epoch != epoch.0 {
            return false;
        }
        if c.len() >= MAX_ENTRIES_PER_COMMUNITY {
            c.view.clear();
            c.perms.clear();
        }
        c.perms.insert((user, key), held);
        true
    }

    /// Users the cache says could view `channel` (before an invalidation, to tell them it
    /// changed even if they no longer can).
    pub fn known_viewers(&self, community: Uuid, channel: Uuid) -> Vec<UserId> {
        self.communities
            .get(&community)
            .map(|c| {
                c.view
                    .iter()
                    .filter(|((_, ch), v)| *ch == channel && **v)
                    .map(|((u, _), _)| *u)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn invalidate_community(&mut self, community: Uuid) {
        let epoch = self.bump();
        let c = self.entry(community);
        c.epoch = epoch;
        c.view.clear();
        c.perms.clear();
    }

    pub fn invalidate_user(&mut self, community: Uuid, user: UserId) {
        let epoch = self.bump();
        let c = self.entry(community);
        c.epoch = epoch;
        c.view.retain(|(u, _), _| *u != user);
        c.perms.retain(|(u, _), _| *u != user);
    }

    pub fn invalidate_channel(&mut self, community: Uuid, channel: Uuid) {
        let epoch = self.bump();
        let c = self.entry(community);
        c.epoch = epoch;
        c.view.retain(|(_, ch), _| *ch != channel);
    }

    pub fn invalidate_pair(&mut self, community: Uuid, user: UserId, channel: Uuid) {
        let epoch = self.bump();
        let c = self.entry(community);
        c.epoch = epoch;
        c.view.remove(&(user, channel));
    }

    /// Forget everything (the event stream had a gap).
    pub fn clear(&mut self) {
        self.floor = self.bump();
        self.communities.clear();
    }

    /// Drops what `event` may have made stale.
    pub fn apply(&mut self, event: &DbEvent) {
        let c = event.community_id;
        match (&event.kind, event.channel_id, event.user_id) {
            (EventKind::OverwriteChanged, Some(ch), Some(u)) => {
                self.invalidate_pair(c, UserId(u), ch)
            }
            (EventKind::OverwriteChanged, Some(ch), None) => self.invalidate_channel(c, ch),
            (EventKind::ChannelDeleted, Some(ch), _) => self.invalidate_channel(c, ch),
            (
                EventKind::MemberJoined
                | EventKind::MemberLeft
                | EventKind::MemberKicked
                | EventKind::MemberBanned
                | EventKind::MemberUnbanned
                | EventKind::MemberRolesChanged,
                _,
                Some(u),
            ) => self.invalidate_user(c, UserId(u)),
            (
                EventKind::RolePermissionsChanged
                | EventKind::RoleDeleted
                | EventKind::RoleCreated
                | EventKind::RoleUpdated,
                _,
                _,
            ) => self.invalidate_community(c),
            (EventKind::CommunityDeleted, _, _) => {
                self.communities.remove(&c);
            }
            _ => {}
        }
    }

    pub fn len(&self) -> usize {
        self.communities.values().map(CommunityCache::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, c: Uuid, ch: Option<Uuid>, u: Option<Uuid>) -> DbEvent {
        DbEvent {
            kind: EventKind::parse(kind),
            community_id: c,
            channel_id: ch,
            user_id: u,
            role_id: None,
            message_id: None,
            author_id: None,
        }
    }

    #[test]
    fn answers_are_cached_until_an_event_touches_them() {
        let mut cache = VisibilityCache::new();
        let (c, ch1, ch2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (ada, bob) = (UserId::new_random(), UserId::new_random());
        let e = cache.epoch(c);
        assert!(cache.store_view(c, e, ada, ch1, true));
        assert!(cache.store_view(c, e, ada, ch2, false));
        assert!(cache.store_view(c, e, bob, ch1, true));
        assert!(cache.store_permission(c, e, bob, "view_ban_hidden", false));
        assert_eq!(cache.can_view(c, ada, ch1), Some(true));
        assert_eq!(cache.can_view(c, ada, ch2), Some(false));
        let mut viewers = cache.known_viewers(c, ch1);
        viewers.sort();
        let mut want = vec![ada, bob];
        want.sort();
        assert_eq!(viewers, want);

        // A message event changes nothing.
        cache.apply(&event("message.created", c, Some(ch1), None));
        assert_eq!(cache.len(), 4);
        // Ada's roles changed: only her answers go.
        cache.apply(&event("member.roles_changed", c, None, Some(ada.0)));
        assert_eq!(cache.can_view(c, ada, ch1), None);
        assert_eq!(cache.can_view(c, bob, ch1), Some(true));
        // An overwrite for a role on ch1: everyone's ch1 answers go.
        cache.apply(&event("overwrite.changed", c, Some(ch1), None));
        assert_eq!(cache.can_view(c, bob, ch1), None);
        assert_eq!(cache.has_permission(c, bob, "view_ban_hidden"), Some(false));
        // A role's permissions: the whole community.
        cache.apply(&event("role.permissions_changed", c, None, None));
        assert!(cache.is_empty());
    }

    #[test]
    fn an_answer_from_before_an_invalidation_is_not_stored() {
        let mut cache = VisibilityCache::new();
        let (c, ch) = (Uuid::new_v4(), Uuid::new_v4());
        let ada = UserId::new_random();
        let before = cache.epoch(c);
        // The query is in flight when Ada's member overwrite changes.
        cache.apply(&event("overwrite.changed", c, Some(ch), Some(ada.0)));
        assert!(!cache.store_view(c, before, ada, ch, true));
        assert_eq!(cache.can_view(c, ada, ch), None);
        let after = cache.epoch(c);
        assert!(cache.store_view(c, after, ada, ch, false));
        // Other communities are unaffected by the epoch change.
        let other = Uuid::new_v4();
        let e = cache.epoch(other);
        cache.invalidate_community(c);
        assert!(cache.store_view(other, e, ada, ch, true));
    }

    #[test]
    fn clear_after_a_listener_gap_also_rejects_in_flight_answers() {
        let mut cache = VisibilityCache::new();
        let (c, ch) = (Uuid::new_v4(), Uuid::new_v4());
        let ada = UserId::new_random();
        let before = cache.epoch(c);
        cache.clear();
        assert!(!cache.store_view(c, before, ada, ch, true));
        assert!(cache.store_view(c, cache.epoch(c), ada, ch, true));
        cache.apply(&event("community.deleted", c, None, None));
        assert!(cache.is_empty());
    }
}
