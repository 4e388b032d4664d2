//! The voice operations, as IO glue around the sans-IO registries: join (authorize as the
//! user → place → mint grant → offer/answer with the node → confirm), leave, self mute and
//! deafen, moderator mute and disconnect; and what the SFU nodes report back.
//!
//! Ordering rules that keep the registries honest:
//! - a join reserves its room's node before the offer goes out and releases it on failure;
//! - a session is registered only after the node answered, and a user's previous session is
//!   ended (`moved`) only once the new one exists, so a failed join never drops anyone;
//! - one user's voice operations run one at a time (`Hub::voice_lock`), across connections;
//! - a permission event that arrives while a join is between its authorization and its
//!   registration triggers a re-check of the new session, so the race cannot leave a banned
//!   user in a room.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use haven_proto::client::{ErrorCode, LeftReason, ServerEvent, ServerMessage};
use haven_proto::control::{
    self, ControlBody, Deafen, Kick, Leave, LeaveReason, NodeRegister, Offer, SelfMute, ServerMute,
};
use haven_proto::grant::JoinGrant;
use haven_proto::{RoomId, SessionId, UserId};
use haven_supabase::VoiceModerationAction;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::app::App;
use crate::hub::ConnId;
use crate::metrics::{inc, set};
use crate::rooms::Participant;
use crate::session::{Identity, VoiceRequest};
use crate::sfu_link::{LinkError, NodeLink};

/// A refusal, as sent to the client.
type Refusal = (ErrorCode, String);

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Maps an RPC failure to what the client is told. SQLSTATE decides, never message text.
pub fn rpc_refusal(e: &haven_supabase::Error) -> Refusal {
    use haven_supabase::Error as E;
    match e {
        E::PermissionDenied(_) => (ErrorCode::Forbidden, "not permitted (42501)".into()),
        E::InvalidInput(_) if e.hint() == Some("not_voice_channel") => (
            ErrorCode::NotVoiceChannel,
            "not a voice channel (22023)".into(),
        ),
        E::InvalidInput(d) => (
            ErrorCode::BadMessage,
            format!("invalid input: {}", d.message),
        ),
        E::SessionExpired(_) => (ErrorCode::TokenExpired, "the access token expired".into()),
        E::Unauthenticated(_) => (
            ErrorCode::Unauthenticated,
            "the access token was refused".into(),
        ),
        E::RateLimited { .. } => (
            ErrorCode::RateLimited,
            "rate limited by the database".into(),
        ),
        E::Transport(_) | E::Server(_) | E::UnexpectedResponse { .. } => (
            ErrorCode::Unavailable,
            "the database is unreachable right now; retry later".into(),
        ),
        _ => (ErrorCode::Internal, "authorization failed".into()),
    }
}

fn link_refusal(e: &LinkError) -> Refusal {
    (ErrorCode::Unavailable, format!("{e}; retry in a moment"))
}

fn node_refusal(e: &control::ControlError) -> Refusal {
    match e.code {
        control::ErrorCode::BadSdp => (
            ErrorCode::MediaRefused,
            format!("SDP refused: {}", e.message),
        ),
        control::ErrorCode::NodeFull => (ErrorCode::Unavailable, "the voice server is full".into()),
        _ => (ErrorCode::MediaRefused, e.message.clone()),
    }
}

/// Runs one voice request and returns the reply for the requesting connection.
pub async fn handle(
    app: &Arc<App>,
    _conn: ConnId,
    id: Option<u64>,
    identity: Identity,
    request: VoiceRequest,
) -> ServerMessage {
    let _serial = app.hub.voice_lock(identity.user).lock().await;
    let result = match request {
        VoiceRequest::Join { channel_id, sdp } => join(app, &identity, channel_id, sdp).await,
        VoiceRequest::Leave => leave(app, identity.user).await,
        VoiceRequest::Mute { muted } => self_state(app, identity.user, Some(muted), None).await,
        VoiceRequest::Deafen { deafened } => {
            self_state(app, identity.user, None, Some(deafened)).await
        }
        VoiceRequest::ServerMute {
            channel_id,
            user_id,
            muted,
        } => server_mute(app, &identity, channel_id, UserId(user_id), muted).await,
        VoiceRequest::Disconnect {
            channel_id,
            user_id,
        } => disconnect(app, &identity, channel_id, UserId(user_id)).await,
    };
    match result {
        Ok(event) => ServerMessage::new(id, event),
        Err((code, message)) => {
            inc(&app.metrics.ws_errors_sent);
            ServerMessage::error(id, code, message)
        }
    }
}

async fn join(
    app: &Arc<App>,
    identity: &Identity,
    channel_id: Uuid,
    sdp: String,
) -> Result<ServerEvent, Refusal> {
    let started = Instant::now();
    let user = identity.user;
    let revocations_before = app.hub.lock().revocation_seq();
    let auth = app
        .supabase
        .as_user(&identity.token)
        .authorize_voice_join(channel_id)
        .await;
    app.metrics
        .join_authorization_seconds
        .observe(started.elapsed());
    let auth = auth.map_err(|e| {
        let refusal = rpc_refusal(&e);
        if refusal.0 == ErrorCode::Unavailable {
            inc(&app.metrics.joins_failed);
            warn!(error = %e, "authorize_voice_join failed");
        } else {
            inc(&app.metrics.joins_refused);
        }
        refusal
    })?;
    if auth.user_id != user.0 || auth.channel_id != channel_id {
        inc(&app.metrics.joins_failed);
        return Err((
            ErrorCode::Internal,
            "authorization answered for someone else".into(),
        ));
    }
    let room = RoomId(channel_id);

    let placed = {
        let mut st = app.hub.lock();
        st.placement.place(room, Instant::now()).map(|node| {
            let link = st.links.get(&node).cloned();
            (node, link)
        })
    };
    let (node, link) = match placed {
        Ok((node, Some(link))) => (node, link),
        Ok((_, None)) => {
            app.hub.lock().placement.release(room);
            inc(&app.metrics.joins_failed);
            return Err((
                ErrorCode::Unavailable,
                "the room's voice server is not connected".into(),
            ));
        }
        Err(e) => {
            inc(&app.metrics.joins_failed);
            return Err((ErrorCode::Unavailable, e.to_string()));
        }
    };
    let session = SessionId::new_random();
    let release = |app: &App| {
        let mut st = app.hub.lock();
        st.placement.release(room);
        st.pending_sessions.remove(&session);
    };
    let grant = JoinGrant {
        user,
        display_name: auth.display_name.clone(),
        room,
        can_speak: auth.can_speak,
        session,
        node: node.clone(),
    };
    let token = match app
        .grants
        .mint(&grant, unix_now(), app.voice.grant_lifetime)
    {
        Ok(t) => t,
        Err(e) => {
            release(app);
            inc(&app.metrics.joins_failed);
            warn!(error = %e, "minting a grant failed");
            return Err((ErrorCode::Internal, "could not mint a grant".into()));
        }
    };
    // From here until it is registered, a roster naming this session is not "stale".
    app.hub.lock().pending_sessions.insert(session);
    let reply = link
        .request(
            ControlBody::Offer(Offer {
                room,
                grant: token,
                sdp,
                slots: None,
            }),
            app.voice.node_request_timeout,
        )
        .await;
    let answer = match reply {
        Ok(ControlBody::Answer(a)) if a.session == session => a.sdp,
        Ok(ControlBody::Error(e)) => {
            release(app);
            inc(&app.metrics.joins_failed);
            return Err(node_refusal(&e));
        }
        Ok(other) => {
            release(app);
            inc(&app.metrics.joins_failed);
            warn!(node = %node, reply = ?other, "unexpected reply to an offer");
            return Err((
                ErrorCode::Internal,
                "the voice server answered oddly".into(),
            ));
        }
        Err(e) => {
            release(app);
            inc(&app.metrics.joins_failed);
            inc(&app.metrics.sfu_requests_failed);
            return Err(link_refusal(&e));
        }
    };

    let participant = Participant {
        session,
        user,
        display_name: auth.display_name,
        community_id: auth.community_id,
        room,
        node: node.clone(),
        can_speak: auth.can_speak,
        muted: false,
        deafened: false,
        moderator_muted: false,
        speaking: false,
        connected: false,
    };
    let (previous, raced) = {
        let mut st = app.hub.lock();
        st.pending_sessions.remove(&session);
        let previous = st.rooms.insert(participant);
        set(&app.metrics.voice_sessions, st.rooms.session_count() as u64);
        (previous, st.revocation_seq() != revocations_before)
    };
    app.hub.mark_dirty(room, auth.community_id);
    if let Some(prev) = previous {
        finish_removal(app, prev, LeftReason::Moved, NodeAction::Leave);
    }
    if raced {
        let app = Arc::clone(app);
        tokio::spawn(async move {
            crate::revocation::recheck(&app, vec![session]).await;
        });
    }
    inc(&app.metrics.joins_ok);
    app.metrics.join_seconds.observe(started.elapsed());
    info!(%user, %room, %node, %session, "joined voice");
    Ok(ServerEvent::Joined {
        channel_id,
        session_id: session,
        can_speak: auth.can_speak,
        sdp: answer,
    })
}

async fn leave(app: &Arc<App>, user: UserId) -> Result<ServerEvent, Refusal> {
    let session = app.hub.lock().rooms.of_user(user).map(|p| p.session);
    match session {
        Some(s) => {
            end_session(app, s, LeftReason::Left, NodeAction::Leave);
            Ok(ServerEvent::Ok)
        }
        None => Err(not_in_voice()),
    }
}

fn not_in_voice() -> Refusal {
    (ErrorCode::NotInVoice, "not in a voice channel".into())
}

async fn self_state(
    app: &Arc<App>,
    user: UserId,
    muted: Option<bool>,
    deafened: Option<bool>,
) -> Result<ServerEvent, Refusal> {
    let (session, link) = {
        let st = app.hub.lock();
        let p = st.rooms.of_user(user).ok_or_else(not_in_voice)?;
        (p.session, st.links.get(&p.node).cloned())
    };
    let link = link.ok_or((
        ErrorCode::Unavailable,
        "the voice server is not connected".into(),
    ))?;
    let body = match (muted, deafened) {
        (Some(muted), _) => ControlBody::SelfMute(SelfMute { session, muted }),
        (None, Some(deafened)) => ControlBody::Deafen(Deafen { session, deafened }),
        (None, None) => return Ok(ServerEvent::Ok),
    };
    expect_ack(app, &link, body).await?;
    let mut st = app.hub.lock();
    if let Some(p) = st.rooms.get_mut(session) {
        if let Some(m) = muted {
            p.muted = m;
        }
        if let Some(d) = deafened {
            p.deafened = d;
        }
        let (room, community) = (p.room, p.community_id);
        drop(st);
        app.hub.mark_dirty(room, community);
    }
    Ok(ServerEvent::Ok)
}

async fn expect_ack(app: &App, link: &NodeLink, body: ControlBody) -> Result<(), Refusal> {
    match link.request(body, app.voice.node_request_timeout).await {
        Ok(ControlBody::Ack) => Ok(()),
        Ok(ControlBody::Error(e)) => Err(node_refusal(&e)),
        Ok(other) => Err((ErrorCode::Internal, format!("unexpected reply {other:?}"))),
        Err(e) => {
            inc(&app.metrics.sfu_requests_failed);
            Err(link_refusal(&e))
        }
    }
}

async fn server_mute(
    app: &Arc<App>,
    identity: &Identity,
    channel_id: Uuid,
    target: UserId,
    muted: bool,
) -> Result<ServerEvent, Refusal> {
    app.supabase
        .as_user(&identity.token)
        .authorize_voice_moderation(channel_id, target.0, VoiceModerationAction::Mute)
        .await
        .map_err(|e| rpc_refusal(&e))?;
    let room = RoomId(channel_id);
    let (session, effective, link) = {
        let st = app.hub.lock();
        let p = st.rooms.find(room, target).ok_or_else(not_in_voice)?;
        (
            p.session,
            muted || !p.can_speak,
            st.links.get(&p.node).cloned(),
        )
    };
    let link = link.ok_or((
        ErrorCode::Unavailable,
        "the voice server is not connected".into(),
    ))?;
    expect_ack(
        app,
        &link,
        ControlBody::ServerMute(ServerMute {
            session,
            muted: effective,
        }),
    )
    .await?;
    let mut st = app.hub.lock();
    if let Some(p) = st.rooms.get_mut(session) {
        p.moderator_muted = muted;
        let community = p.community_id;
        drop(st);
        app.hub.mark_dirty(room, community);
    }
    Ok(ServerEvent::Ok)
}

async fn disconnect(
    app: &Arc<App>,
    identity: &Identity,
    channel_id: Uuid,
    target: UserId,
) -> Result<ServerEvent, Refusal> {
    app.supabase
        .as_user(&identity.token)
        .authorize_voice_moderation(channel_id, target.0, VoiceModerationAction::Disconnect)
        .await
        .map_err(|e| rpc_refusal(&e))?;
    let session = app
        .hub
        .lock()
        .rooms
        .find(RoomId(channel_id), target)
        .map(|p| p.session)
        .ok_or_else(not_in_voice)?;
    end_session(
        app,
        session,
        LeftReason::Disconnected,
        NodeAction::Kick("disconnected by a moderator".into()),
    );
    Ok(ServerEvent::Ok)
}

/// What to tell the node about a session signaling ends.
#[derive(Debug, Clone)]
pub enum NodeAction {
    /// The node already knows (it reported the departure, or is gone).
    Nothing,
    Leave,
    Kick(String),
}

/// Ends a session: registry, placement, the user's sockets, the room's roster, the node.
pub fn end_session(
    app: &Arc<App>,
    session: SessionId,
    reason: LeftReason,
    action: NodeAction,
) -> Option<Participant> {
    let p = {
        let mut st = app.hub.lock();
        let p = st.rooms.remove(session)?;
        set(&app.metrics.voice_sessions, st.rooms.session_count() as u64);
        p
    };
    finish_removal(app, p.clone(), reason, action);
    Some(p)
}

/// The rest of removing `p`, once it is out of the registry.
fn finish_removal(app: &Arc<App>, p: Participant, reason: LeftReason, action: NodeAction) {
    let link = {
        let mut st = app.hub.lock();
        st.placement.release(p.room);
        st.links.get(&p.node).cloned()
    };
    app.hub.mark_dirty(p.room, p.community_id);
    app.hub.send_to_user(
        p.user,
        &ServerMessage::new(
            None,
            ServerEvent::Left {
                channel_id: p.channel_id(),
                session_id: Some(p.session),
                reason,
            },
        ),
    );
    let body = match action {
        NodeAction::Nothing => return,
        NodeAction::Leave => ControlBody::Leave(Leave { session: p.session }),
        NodeAction::Kick(reason) => ControlBody::Kick(Kick {
            session: p.session,
            reason,
        }),
    };
    let Some(link) = link else {
        return;
    };
    let app = Arc::clone(app);
    tokio::spawn(async move {
        match link.request(body, app.voice.node_request_timeout).await {
            Ok(ControlBody::Ack) => {}
            Ok(other) => debug!(node = %link.node, reply = ?other, "node reply to leave/kick"),
            Err(e) => {
                inc(&app.metrics.sfu_requests_failed);
                warn!(node = %link.node, error = %e, "could not tell the node a session ended");
            }
        }
    });
}

/// Ends the user's voice session unless they reconnect within the grace period.
pub fn schedule_grace(app: &Arc<App>, user: UserId) {
    if app.hub.lock().rooms.of_user(user).is_none() {
        return;
    }
    let app = Arc::clone(app);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(app.voice.grace) => {}
            _ = app.shutdown.cancelled() => return,
        }
        let session = {
            let st = app.hub.lock();
            if st.is_online(user) {
                return;
            }
            st.rooms.of_user(user).map(|p| p.session)
        };
        if let Some(s) = session {
            let _serial = app.hub.voice_lock(user).lock().await;
            end_session(&app, s, LeftReason::ConnectionLost, NodeAction::Leave);
        }
    });
}

/// A node registered (possibly replacing an earlier connection with the same id).
pub fn on_node_registered(app: &Arc<App>, link: Arc<NodeLink>, reg: &NodeRegister) {
    let old = app.hub.lock().links.get(&reg.node_id).cloned();
    if let Some(old) = old {
        warn!(node = %reg.node_id, "node re-registered; its earlier sessions are lost");
        on_node_lost(app, &old);
    }
    let mut st = app.hub.lock();
    st.links.insert(reg.node_id.clone(), link);
    st.placement.register(
        reg.node_id.clone(),
        reg.media_addr,
        reg.capacity,
        reg.load,
        Instant::now(),
    );
    set(&app.metrics.sfu_nodes, st.links.len() as u64);
}

/// A node's connection ended: its rooms are gone with it.
pub fn on_node_lost(app: &Arc<App>, link: &NodeLink) {
    link.close();
    let sessions = {
        let mut st = app.hub.lock();
        let current = st
            .links
            .get(&link.node)
            .is_some_and(|l| l.generation == link.generation);
        if !current {
            return;
        }
        st.links.remove(&link.node);
        st.placement.remove_node(&link.node);
        set(&app.metrics.sfu_nodes, st.links.len() as u64);
        st.rooms.on_node(&link.node)
    };
    warn!(node = %link.node, sessions = sessions.len(), "SFU node lost");
    for s in sessions {
        end_session(app, s, LeftReason::NodeLost, NodeAction::Nothing);
    }
}

fn left_reason(reason: LeaveReason) -> LeftReason {
    match reason {
        LeaveReason::Left => LeftReason::Left,
        LeaveReason::Kicked => LeftReason::Kicked,
        LeaveReason::Replaced => LeftReason::Moved,
        LeaveReason::Disconnected
        | LeaveReason::ConnectTimeout
        | LeaveReason::Closed
        | LeaveReason::Failed => LeftReason::ConnectionLost,
    }
}

/// Something a node sent on its own (not a reply).
pub fn on_node_message(app: &Arc<App>, link: &NodeLink, body: ControlBody) {
    match body {
        ControlBody::Heartbeat(h) => {
            if h.node_id == link.node {
                app.hub
                    .lock()
                    .placement
                    .heartbeat(&link.node, h.load, h.draining, Instant::now());
            }
        }
        ControlBody::ParticipantLeft(l) => {
            let ours = app
                .hub
                .lock()
                .rooms
                .get(l.session)
                .is_some_and(|p| p.node == link.node);
            if ours {
                end_session(app, l.session, left_reason(l.reason), NodeAction::Nothing);
            }
        }
        ControlBody::Roster(r) => {
            let mut changed = None;
            let mut stale = Vec::new();
            {
                let mut st = app.hub.lock();
                // Sessions the node has and we do not (ended while the link was down, or
                // before a signaling restart) must not linger: the clients were told to
                // rejoin, and a revoked user must not stay.
                for e in &r.participants {
                    let known = st.rooms.get(e.session).is_some_and(|p| p.node == link.node);
                    if !known && !st.pending_sessions.contains(&e.session) {
                        stale.push(e.session);
                    }
                }
                for e in &r.participants {
                    if let Some(p) = st.rooms.get_mut(e.session) {
                        if p.node == link.node
                            && (p.connected != e.connected || p.speaking != e.speaking)
                        {
                            p.connected = e.connected;
                            p.speaking = e.speaking;
                            changed = Some(p.community_id);
                        }
                    }
                }
            }
            if let Some(c) = changed {
                app.hub.mark_dirty(r.room, c);
            }
            if !stale.is_empty() {
                let link = app.hub.lock().links.get(&link.node).cloned();
                let timeout = app.voice.node_request_timeout;
                if let Some(link) = link {
                    tokio::spawn(async move {
                        for session in stale {
                            warn!(node = %link.node, %session, "kicking a session signaling does not know");
                            let kick = ControlBody::Kick(Kick {
                                session,
                                reason: "stale session".into(),
                            });
                            let _ = link.request(kick, timeout).await;
                        }
                    });
                }
            }
        }
        ControlBody::Speaking(s) => {
            let community = {
                let mut st = app.hub.lock();
                match st.rooms.get_mut(s.session) {
                    Some(p) if p.node == link.node && p.speaking != s.speaking => {
                        p.speaking = s.speaking;
                        Some(p.community_id)
                    }
                    _ => None,
                }
            };
            if let Some(c) = community {
                app.hub.mark_dirty(s.room, c);
            }
        }
        ControlBody::RoomStats(_) => {}
        other => debug!(node = %link.node, message = ?other, "ignoring node message"),
    }
}
