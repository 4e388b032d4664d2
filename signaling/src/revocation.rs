//! Voice revocation: when an event says someone may have lost the right to be in a voice
//! room (kick, ban, leaving, an overwrite, a role's permissions, a role assignment, the
//! channel or community deleted), remove them from the SFU and tell them why.
//!
//! Kicks, bans and departures need no database round trip: the membership is gone, so the
//! node is told at once (the acceptance bar is 1 s; this path takes milliseconds). Permission
//! changes are re-checked with `voice_access_as` for exactly the affected participants: losing
//! `connect` ends the session, losing or regaining `speak` flips the server mute.

use std::sync::Arc;

use futures_util::future::join_all;
use haven_proto::client::LeftReason;
use haven_proto::control::{ControlBody, ServerMute};
use haven_proto::{RoomId, SessionId, UserId};
use tracing::{info, warn};

use crate::app::App;
use crate::db_event::{DbEvent, EventKind};
use crate::metrics::inc;
use crate::voice::{end_session, NodeAction};

/// Applies `event` to the voice sessions it may affect.
pub async fn on_event(app: &Arc<App>, event: &DbEvent) {
    let c = event.community_id;
    let user = event.user_id.map(UserId);
    let (immediate, recheck_sessions): (Vec<(SessionId, LeftReason)>, Vec<SessionId>) = {
        let st = app.hub.lock();
        let in_community = st.rooms.in_community(c);
        let of_user = |u: UserId| -> Vec<SessionId> {
            in_community
                .iter()
                .filter(|p| p.user == u)
                .map(|p| p.session)
                .collect()
        };
        match (&event.kind, user, event.channel_id) {
            (EventKind::MemberKicked, Some(u), _) => (
                of_user(u)
                    .into_iter()
                    .map(|s| (s, LeftReason::Kicked))
                    .collect(),
                vec![],
            ),
            (EventKind::MemberBanned, Some(u), _) => (
                of_user(u)
                    .into_iter()
                    .map(|s| (s, LeftReason::Banned))
                    .collect(),
                vec![],
            ),
            (EventKind::MemberLeft, Some(u), _) => (
                of_user(u)
                    .into_iter()
                    .map(|s| (s, LeftReason::PermissionLost))
                    .collect(),
                vec![],
            ),
            (EventKind::ChannelDeleted, _, Some(ch)) => (
                st.rooms
                    .in_room(RoomId(ch))
                    .iter()
                    .map(|p| (p.session, LeftReason::PermissionLost))
                    .collect(),
                vec![],
            ),
            (EventKind::CommunityDeleted, _, _) => (
                in_community
                    .iter()
                    .map(|p| (p.session, LeftReason::PermissionLost))
                    .collect(),
                vec![],
            ),
            (EventKind::OverwriteChanged, u, Some(ch)) => (
                vec![],
                st.rooms
                    .in_room(RoomId(ch))
                    .iter()
                    .filter(|p| u.is_none_or(|u| p.user == u))
                    .map(|p| p.session)
                    .collect(),
            ),
            (EventKind::MemberRolesChanged, Some(u), _) => (vec![], of_user(u)),
            (EventKind::RolePermissionsChanged | EventKind::RoleDeleted, _, _) => {
                (vec![], in_community.iter().map(|p| p.session).collect())
            }
            _ => (vec![], vec![]),
        }
    };
    for (session, reason) in immediate {
        revoke(app, session, reason);
    }
    if !recheck_sessions.is_empty() {
        recheck(app, recheck_sessions).await;
    }
}

fn revoke(app: &Arc<App>, session: SessionId, reason: LeftReason) {
    let why = match reason {
        LeftReason::Kicked => "kicked from the community",
        LeftReason::Banned => "banned from the community",
        _ => "no longer allowed in this voice channel",
    };
    if let Some(p) = end_session(app, session, reason, NodeAction::Kick(why.into())) {
        inc(&app.metrics.revocations);
        info!(user = %p.user, room = %p.room, ?reason, "removed from voice");
    }
}

/// Re-asks the database about each session's voice rights and acts on the answers.
pub async fn recheck(app: &Arc<App>, sessions: Vec<SessionId>) {
    let targets: Vec<_> = {
        let st = app.hub.lock();
        sessions
            .iter()
            .filter_map(|s| st.rooms.get(*s))
            .map(|p| (p.session, p.user, p.channel_id()))
            .collect()
    };
    let answers = join_all(
        targets
            .iter()
            .map(|(_, user, channel)| app.db.voice_access_as(*user, *channel)),
    )
    .await;
    for ((session, user, _), answer) in targets.into_iter().zip(answers) {
        let access = match answer {
            Ok(a) => a,
            Err(e) => {
                inc(&app.metrics.db_errors);
                warn!(%user, error = %e, "could not re-check voice access; keeping the session for now");
                continue;
            }
        };
        if !access.can_connect {
            revoke(app, session, LeftReason::PermissionLost);
            continue;
        }
        let change = {
            let mut st = app.hub.lock();
            let changed = match st.rooms.get_mut(session) {
                Some(p) if p.can_speak != access.can_speak => {
                    p.can_speak = access.can_speak;
                    Some((p.server_muted(), p.room, p.community_id, p.node.clone()))
                }
                _ => None,
            };
            changed.map(|(m, r, c, node)| (m, r, c, st.links.get(&node).cloned()))
        };
        if let Some((muted, room, community, link)) = change {
            app.hub.mark_dirty(room, community);
            if let Some(link) = link {
                let body = ControlBody::ServerMute(ServerMute { session, muted });
                if let Err(e) = link.request(body, app.voice.node_request_timeout).await {
                    inc(&app.metrics.sfu_requests_failed);
                    warn!(%user, error = %e, "could not apply a speak permission change");
                }
            }
        }
    }
}

/// Re-checks every voice session (after the event stream had a gap).
pub async fn sweep_all(app: &Arc<App>) {
    let sessions: Vec<SessionId> = app
        .hub
        .lock()
        .rooms
        .all()
        .iter()
        .map(|p| p.session)
        .collect();
    if !sessions.is_empty() {
        info!(
            sessions = sessions.len(),
            "re-checking every voice session after an event gap"
        );
        recheck(app, sessions).await;
    }
}
