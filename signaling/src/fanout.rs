//! Live events to connected users: each database event goes only to the online users who may
//! see it, and voice rosters go to the members who can see the voice channel.
//!
//! Events are consumed in order by one task. For each: invalidate what it makes stale
//! (visibility cache, known memberships), run voice revocation, then deliver. Who gets what:
//! - channel-scoped (`message.*`, `channel.created/updated`): members who can view the
//!   channel; message content is fetched once as the service role, hidden messages go only
//!   to `view_ban_hidden` holders;
//! - `overwrite.changed`: members who can view the channel now, plus those the cache knew
//!   could view it before (so a client can drop a channel it lost);
//! - `channel.deleted`: members not known to have been unable to view it;
//! - `member.banned`/`member.unbanned`: `manage_bans` holders and the user (the ban list is
//!   theirs only); other members see `member.left` for a ban;
//! - everything else in a community: its online members and the user it is about.
//!
//! Visibility answers come from the cache; misses are asked in one query
//! (`channel_viewers_as`) when several users miss, else with `can_view_channel_as`. A
//! database error fails closed (the event is not delivered to the users it could not check).

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::join_all;
use haven_proto::client::{ServerEvent, ServerMessage};
use haven_proto::{RoomId, UserId};
use tokio::sync::mpsc;
use tracing::{info, warn};
use uuid::Uuid;

use crate::app::App;
use crate::db_event::{DbEvent, EventKind};
use crate::events::ListenerEvent;
use crate::metrics::inc;

/// Consumes listener events until the channel closes.
pub async fn run(app: Arc<App>, mut events: mpsc::Receiver<ListenerEvent>) {
    while let Some(e) = events.recv().await {
        match e {
            ListenerEvent::Connected => {}
            ListenerEvent::Disconnected => warn!("database events paused (listener reconnecting)"),
            ListenerEvent::Resynced => resync(&app).await,
            ListenerEvent::Event(e) => handle_event(&app, e).await,
        }
    }
}

/// After a gap in the event stream: forget cached answers, reload memberships, re-check
/// every voice session, resend rosters.
async fn resync(app: &Arc<App>) {
    info!("database events resumed; treating caches as stale");
    let users = {
        let mut st = app.hub.lock();
        st.visibility.clear();
        st.bump_revocation();
        st.online_users()
    };
    for user in users {
        match app.db.communities_of(user).await {
            Ok(cs) => {
                let mut st = app.hub.lock();
                if st.is_online(user) {
                    st.set_communities(user, cs);
                }
            }
            Err(e) => {
                inc(&app.metrics.db_errors);
                warn!(%user, error = %e, "could not reload memberships");
            }
        }
    }
    crate::revocation::sweep_all(app).await;
    let rooms: Vec<_> = {
        let st = app.hub.lock();
        st.rooms
            .all()
            .iter()
            .map(|p| (p.room, p.community_id))
            .collect()
    };
    for (room, community) in rooms {
        app.hub.mark_dirty(room, community);
    }
}

fn event_message(e: &DbEvent, kind: &str, message: Option<serde_json::Value>) -> ServerMessage {
    ServerMessage::new(
        None,
        ServerEvent::Event {
            kind: kind.to_string(),
            community_id: e.community_id,
            channel_id: e.channel_id,
            user_id: e.user_id,
            message_id: e.message_id,
            message,
        },
    )
}

async fn handle_event(app: &Arc<App>, e: DbEvent) {
    let c = e.community_id;
    // Before invalidation: who the cache knew could (or could not) see the channel.
    let (known_viewers, known_blind) = {
        let st = app.hub.lock();
        match e.channel_id {
            Some(ch) => {
                let members = st.online_members(c);
                let blind: HashSet<UserId> = members
                    .into_iter()
                    .filter(|u| st.visibility.can_view(c, *u, ch) == Some(false))
                    .collect();
                (st.visibility.known_viewers(c, ch), blind)
            }
            None => (Vec::new(), HashSet::new()),
        }
    };
    let subject = e.user_id.map(UserId);
    {
        let mut st = app.hub.lock();
        st.visibility.apply(&e);
        if e.kind.may_revoke_voice() {
            st.bump_revocation();
        }
        match (&e.kind, subject) {
            (EventKind::MemberJoined, Some(u)) => st.add_membership(u, c),
            (
                EventKind::MemberLeft | EventKind::MemberKicked | EventKind::MemberBanned,
                Some(u),
            ) => st.remove_membership(u, c),
            (EventKind::CommunityDeleted, _) => st.drop_community(c),
            _ => {}
        }
    }
    if e.kind.may_revoke_voice() {
        crate::revocation::on_event(app, &e).await;
    }

    let members = app.hub.lock().online_members(c);
    let with_subject = |mut users: Vec<UserId>| {
        if let Some(u) = subject {
            if !users.contains(&u) && app.hub.lock().is_online(u) {
                users.push(u);
            }
        }
        users
    };
    match (&e.kind, e.channel_id) {
        (EventKind::MessageCreated | EventKind::MessageUpdated, Some(ch)) => {
            let Some(message_id) = e.message_id else {
                return;
            };
            let mut recipients = viewers_among(app, c, ch, members).await;
            if recipients.is_empty() {
                return;
            }
            let row = match app.db.message(message_id).await {
                Ok(Some(row)) if !row.deleted => row,
                Ok(_) => return,
                Err(err) => {
                    inc(&app.metrics.db_errors);
                    warn!(error = %err, "could not fetch a message for delivery");
                    return;
                }
            };
            if row.is_hidden {
                recipients = holders_among(app, c, "view_ban_hidden", recipients).await;
            }
            app.hub.send_to_users(
                &recipients,
                &event_message(&e, e.kind.as_str(), Some(row.json)),
            );
        }
        (
            EventKind::MessageDeleted | EventKind::ChannelCreated | EventKind::ChannelUpdated,
            Some(ch),
        ) => {
            let recipients = viewers_among(app, c, ch, members).await;
            app.hub
                .send_to_users(&recipients, &event_message(&e, e.kind.as_str(), None));
        }
        (EventKind::OverwriteChanged, Some(ch)) => {
            let mut recipients = viewers_among(app, c, ch, members.clone()).await;
            for u in known_viewers {
                if !recipients.contains(&u) && members.contains(&u) {
                    recipients.push(u);
                }
            }
            app.hub
                .send_to_users(&recipients, &event_message(&e, e.kind.as_str(), None));
        }
        (EventKind::ChannelDeleted, Some(_)) => {
            let recipients: Vec<_> = members
                .into_iter()
                .filter(|u| !known_blind.contains(u))
                .collect();
            app.hub
                .send_to_users(&recipients, &event_message(&e, e.kind.as_str(), None));
        }
        (EventKind::MemberBanned | EventKind::MemberUnbanned, _) => {
            let holders = holders_among(app, c, "manage_bans", members.clone()).await;
            let ban_aware = with_subject(holders.clone());
            app.hub
                .send_to_users(&ban_aware, &event_message(&e, e.kind.as_str(), None));
            if e.kind == EventKind::MemberBanned {
                let others: Vec<_> = members
                    .into_iter()
                    .filter(|u| !ban_aware.contains(u))
                    .collect();
                app.hub
                    .send_to_users(&others, &event_message(&e, "member.left", None));
            }
        }
        _ => {
            let recipients = with_subject(members);
            app.hub
                .send_to_users(&recipients, &event_message(&e, e.kind.as_str(), None));
            if let (EventKind::MemberJoined, Some(u)) = (&e.kind, subject) {
                send_voice_states_to(app, u, &[c]).await;
            }
        }
    }
}

/// Those of `users` who may view `channel`, from the cache or the database (fail closed).
pub async fn viewers_among(
    app: &App,
    community: Uuid,
    channel: Uuid,
    users: Vec<UserId>,
) -> Vec<UserId> {
    let (mut yes, misses, epoch) = {
        let st = app.hub.lock();
        let mut yes = Vec::new();
        let mut misses = Vec::new();
        for u in users {
            match st.visibility.can_view(community, u, channel) {
                Some(true) => yes.push(u),
                Some(false) => {}
                None => misses.push(u),
            }
        }
        (yes, misses, st.visibility.epoch(community))
    };
    if misses.is_empty() {
        return yes;
    }
    let answers: Result<Vec<(UserId, bool)>, _> = if misses.len() == 1 {
        app.db
            .can_view_channel_as(misses[0], channel)
            .await
            .map(|v| vec![(misses[0], v)])
    } else {
        app.db.channel_viewers_as(channel).await.map(|viewers| {
            let viewers: HashSet<UserId> = viewers.into_iter().collect();
            misses.iter().map(|u| (*u, viewers.contains(u))).collect()
        })
    };
    match answers {
        Ok(answers) => {
            let mut st = app.hub.lock();
            for (u, v) in answers {
                st.visibility.store_view(community, epoch, u, channel, v);
                if v {
                    yes.push(u);
                }
            }
        }
        Err(e) => {
            inc(&app.metrics.db_errors);
            warn!(error = %e, "visibility check failed; not delivering to unchecked users");
        }
    }
    yes
}

/// Those of `users` who hold permission `key` in `community` (fail closed).
pub async fn holders_among(
    app: &App,
    community: Uuid,
    key: &'static str,
    users: Vec<UserId>,
) -> Vec<UserId> {
    let (mut yes, misses, epoch) = {
        let st = app.hub.lock();
        let mut yes = Vec::new();
        let mut misses = Vec::new();
        for u in users {
            match st.visibility.has_permission(community, u, key) {
                Some(true) => yes.push(u),
                Some(false) => {}
                None => misses.push(u),
            }
        }
        (yes, misses, st.visibility.epoch(community))
    };
    let answers = join_all(
        misses
            .iter()
            .map(|u| app.db.user_has_permission_as(*u, community, key)),
    )
    .await;
    let mut st = app.hub.lock();
    for (u, answer) in misses.into_iter().zip(answers) {
        match answer {
            Ok(held) => {
                st.visibility
                    .store_permission(community, epoch, u, key, held);
                if held {
                    yes.push(u);
                }
            }
            Err(e) => {
                inc(&app.metrics.db_errors);
                warn!(error = %e, "permission check failed; not delivering");
            }
        }
    }
    yes
}

fn voice_state_message(
    community: Uuid,
    room: RoomId,
    participants: Vec<haven_proto::client::VoiceParticipant>,
) -> ServerMessage {
    ServerMessage::new(
        None,
        ServerEvent::VoiceState {
            community_id: community,
            channel_id: room.0,
            participants,
        },
    )
}

/// Sends `user` the state of every non-empty voice room they may see in `communities`.
pub async fn send_voice_states_to(app: &App, user: UserId, communities: &[Uuid]) {
    let rooms: Vec<_> = {
        let st = app.hub.lock();
        st.rooms
            .rooms_of(communities)
            .into_iter()
            .filter_map(|r| st.rooms.state(r).map(|s| (r, s)))
            .collect()
    };
    for (room, state) in rooms {
        if !viewers_among(app, state.community_id, room.0, vec![user])
            .await
            .is_empty()
        {
            app.hub.send_to_user(
                user,
                &voice_state_message(state.community_id, room, state.participants),
            );
        }
    }
}

/// Sends changed rosters to the members who can see each room, until shutdown.
pub async fn run_roster_broadcaster(app: Arc<App>) {
    loop {
        let dirty = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            d = app.hub.next_dirty() => d,
        };
        for (room, community) in dirty {
            let (participants, members) = {
                let st = app.hub.lock();
                let participants = st
                    .rooms
                    .state(room)
                    .map(|s| s.participants)
                    .unwrap_or_default();
                (participants, st.online_members(community))
            };
            let recipients = viewers_among(&app, community, room.0, members).await;
            app.hub.send_to_users(
                &recipients,
                &voice_state_message(community, room, participants),
            );
        }
    }
}
