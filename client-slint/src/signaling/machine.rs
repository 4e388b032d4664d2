//! Sans-IO client of the signaling protocol: feed it connection changes, received text
//! frames and the time; take out frames to send, events for the app, and the next deadline.
//!
//! It owns the decisions that must survive reconnects: the access token to authenticate
//! with, the voice channel the user wants to be in (so a dropped connection rejoins it), the
//! self-mute/deafen state to restore, and the backoff between attempts. Anything a server
//! sends that we do not understand is ignored (and counted), never a panic.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use haven_proto::client::{
    ClientMessage, ClientRequest, ErrorCode, LeftReason, ServerEvent, ServerMessage,
    VoiceParticipant,
};
use haven_proto::{SessionId, UserId};
use uuid::Uuid;

use crate::signaling::backoff::Backoff;

/// Keepalive interval while connected.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
/// Silence after which the connection is presumed dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(45);
/// How long `auth` may take before we give up on this connection.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionPhase {
    /// Not signed in / stopped.
    Idle,
    /// Waiting before the next connection attempt.
    Waiting {
        /// When to try.
        until: Instant,
    },
    /// The driver is opening the socket.
    Connecting,
    /// Socket open, `auth` sent.
    Authenticating {
        /// Give up at.
        deadline: Instant,
    },
    /// Authenticated.
    Ready,
}

/// What the socket driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Send this text frame.
    Text(String),
    /// Close the socket (dead, or authentication failed); the machine schedules a retry.
    Close,
}

/// What the app learns.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalingEvent {
    /// Authenticated as this user.
    Ready {
        /// Me.
        user_id: UserId,
    },
    /// The connection dropped; the next attempt is in `retry_in`.
    Disconnected {
        /// Delay before reconnecting.
        retry_in: Duration,
    },
    /// The token was refused: refresh it and call [`SignalingMachine::set_token`].
    AuthFailed {
        /// `unauthenticated` or `token_expired`.
        code: ErrorCode,
        /// For logs.
        message: String,
    },
    /// Signaling warns the token expires soon: refresh it and call `set_token`.
    TokenExpiring,
    /// (Re)join voice: build a fresh SDP offer for `channel_id` and call `join`. Emitted after
    /// a reconnect or a lost media connection while the user still wants to be in voice.
    RejoinVoice {
        /// The channel.
        channel_id: Uuid,
    },
    /// The join succeeded: apply `sdp` as the answer.
    Joined {
        /// Channel.
        channel_id: Uuid,
        /// This join's session.
        session_id: SessionId,
        /// Whether I may speak.
        can_speak: bool,
        /// SDP answer.
        sdp: String,
    },
    /// The join was refused, and why.
    JoinRefused {
        /// Channel.
        channel_id: Uuid,
        /// Why (forbidden, not a voice channel, unavailable, ...).
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
    /// I am no longer in voice (kick, ban, moderator disconnect, permission lost, ...).
    Left {
        /// Channel.
        channel_id: Uuid,
        /// Why.
        reason: LeftReason,
    },
    /// Who is in a voice channel (full state).
    VoiceState {
        /// Community.
        community_id: Uuid,
        /// Channel.
        channel_id: Uuid,
        /// Everyone in it.
        participants: Vec<VoiceParticipant>,
    },
    /// A database event (message created/updated/deleted, member changes, ...).
    Live {
        /// `message.created`, ...
        kind: String,
        /// Community.
        community_id: Uuid,
        /// Channel, when the event has one.
        channel_id: Option<Uuid>,
        /// User, when the event has one.
        user_id: Option<Uuid>,
        /// Message id, for message events.
        message_id: Option<Uuid>,
        /// Message content, for created/updated.
        message: Option<serde_json::Value>,
    },
    /// A request failed (other than join/auth).
    RequestFailed {
        /// Why.
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Auth,
    Join(Uuid),
    Other,
}

/// The signaling client state machine.
#[derive(Debug)]
pub struct SignalingMachine {
    phase: ConnectionPhase,
    backoff: Backoff,
    token: Option<String>,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SignalingEvent>,
    /// The voice channel the user wants to be in; survives reconnects.
    voice: Option<Uuid>,
    /// Whether a join for `voice` is in flight or done on this connection.
    voice_joined: bool,
    /// The voice session signaling gave our current join (from `joined`).
    voice_session: Option<SessionId>,
    muted: bool,
    deafened: bool,
    last_rx: Instant,
    next_ping: Instant,
    ignored_frames: u64,
}

impl SignalingMachine {
    /// A stopped machine; `seed` feeds the backoff jitter.
    pub fn new(now: Instant, seed: u64) -> Self {
        Self {
            phase: ConnectionPhase::Idle,
            backoff: Backoff::new(seed),
            token: None,
            next_id: 1,
            pending: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            voice: None,
            voice_joined: false,
            voice_session: None,
            muted: false,
            deafened: false,
            last_rx: now,
            next_ping: now,
            ignored_frames: 0,
        }
    }

    /// Current phase.
    pub fn phase(&self) -> ConnectionPhase {
        self.phase
    }

    /// The voice channel the user wants to be in.
    pub fn wanted_voice(&self) -> Option<Uuid> {
        self.voice
    }

    /// Frames from the server that were not understood (for diagnostics).
    pub fn ignored_frames(&self) -> u64 {
        self.ignored_frames
    }

    /// Start connecting with `token` (after sign-in).
    pub fn start(&mut self, now: Instant, token: String) {
        self.token = Some(token);
        if self.phase == ConnectionPhase::Idle {
            self.phase = ConnectionPhase::Waiting { until: now };
        }
    }

    /// Stop for good (sign-out): close and forget everything.
    pub fn stop(&mut self) {
        if !matches!(
            self.phase,
            ConnectionPhase::Idle | ConnectionPhase::Waiting { .. }
        ) {
            self.transmits.push_back(Transmit::Close);
        }
        self.phase = ConnectionPhase::Idle;
        self.token = None;
        self.voice = None;
        self.voice_joined = false;
        self.voice_session = None;
        self.pending.clear();
    }

    /// A refreshed token: re-authenticate the live connection, or retry at once if the
    /// last attempt failed on the old token.
    pub fn set_token(&mut self, now: Instant, token: String) {
        self.token = Some(token.clone());
        match self.phase {
            ConnectionPhase::Ready => {
                let id = self.request(ClientRequest::Auth {
                    access_token: token,
                });
                self.pending.insert(id, Pending::Auth);
            }
            ConnectionPhase::Waiting { .. } => self.phase = ConnectionPhase::Waiting { until: now },
            _ => {}
        }
    }

    /// Whether the driver should open a socket now (moves to `Connecting` if so).
    pub fn poll_connect(&mut self, now: Instant) -> bool {
        match self.phase {
            ConnectionPhase::Waiting { until } if until <= now && self.token.is_some() => {
                self.phase = ConnectionPhase::Connecting;
                true
            }
            _ => false,
        }
    }

    /// The socket opened.
    pub fn on_connected(&mut self, now: Instant) {
        if self.phase != ConnectionPhase::Connecting {
            return;
        }
        let Some(token) = self.token.clone() else {
            return;
        };
        self.pending.clear();
        self.transmits.clear();
        self.voice_joined = false;
        self.last_rx = now;
        self.phase = ConnectionPhase::Authenticating {
            deadline: now + AUTH_TIMEOUT,
        };
        let id = self.request(ClientRequest::Auth {
            access_token: token,
        });
        self.pending.insert(id, Pending::Auth);
    }

    /// The connection attempt failed or the socket closed.
    pub fn on_disconnected(&mut self, now: Instant) {
        if self.phase == ConnectionPhase::Idle {
            return;
        }
        let delay = self.backoff.next_delay();
        self.phase = ConnectionPhase::Waiting { until: now + delay };
        self.pending.clear();
        // Frames for the dead connection are moot, but a pending Close must still reach it.
        self.transmits.retain(|t| *t == Transmit::Close);
        self.voice_joined = false;
        self.events
            .push_back(SignalingEvent::Disconnected { retry_in: delay });
    }

    /// Join a voice channel with an SDP offer. Remembered across reconnects; sent now if
    /// connected (otherwise a `RejoinVoice` asks for a fresh offer once connected).
    pub fn join(&mut self, channel_id: Uuid, sdp: String) {
        self.voice = Some(channel_id);
        // Whatever session we had is being replaced; a `left` naming it is not about us.
        self.voice_session = None;
        if self.phase == ConnectionPhase::Ready {
            let id = self.request(ClientRequest::Join { channel_id, sdp });
            self.pending.insert(id, Pending::Join(channel_id));
            self.voice_joined = true;
        }
    }

    /// Leave voice.
    pub fn leave(&mut self) {
        let was = self.voice.take();
        self.voice_session = None;
        if was.is_some() && self.phase == ConnectionPhase::Ready {
            let id = self.request(ClientRequest::Leave);
            self.pending.insert(id, Pending::Other);
        }
        self.voice_joined = false;
    }

    /// Self-mute (re-sent after every rejoin).
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
        if self.phase == ConnectionPhase::Ready && self.voice_joined {
            let id = self.request(ClientRequest::Mute { muted });
            self.pending.insert(id, Pending::Other);
        }
    }

    /// Self-deafen (re-sent after every rejoin).
    pub fn set_deafened(&mut self, deafened: bool) {
        self.deafened = deafened;
        if self.phase == ConnectionPhase::Ready && self.voice_joined {
            let id = self.request(ClientRequest::Deafen { deafened });
            self.pending.insert(id, Pending::Other);
        }
    }

    /// The media connection to the SFU failed on our side (ICE/DTLS timeout): rejoin.
    pub fn on_media_failed(&mut self) {
        if let Some(channel_id) = self.voice {
            self.voice_joined = false;
            self.events
                .push_back(SignalingEvent::RejoinVoice { channel_id });
        }
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        self.last_rx = now;
        let Ok(msg) = ServerMessage::decode(text) else {
            self.ignored_frames += 1;
            return;
        };
        let pending = msg.id.and_then(|id| self.pending.remove(&id));
        match msg.body {
            ServerEvent::Ready { user_id, .. } => {
                let first = !matches!(self.phase, ConnectionPhase::Ready);
                self.phase = ConnectionPhase::Ready;
                self.next_ping = now + PING_INTERVAL;
                if first {
                    self.backoff.reset();
                    self.events.push_back(SignalingEvent::Ready { user_id });
                    if let Some(channel_id) = self.voice {
                        self.events
                            .push_back(SignalingEvent::RejoinVoice { channel_id });
                    }
                }
            }
            ServerEvent::Error { code, message } => match pending {
                Some(Pending::Auth) => {
                    self.events
                        .push_back(SignalingEvent::AuthFailed { code, message });
                    self.transmits.push_back(Transmit::Close);
                    self.on_disconnected(now);
                }
                Some(Pending::Join(channel_id)) => {
                    if self.voice == Some(channel_id) {
                        self.voice = None;
                        self.voice_joined = false;
                    }
                    self.events.push_back(SignalingEvent::JoinRefused {
                        channel_id,
                        code,
                        message,
                    });
                }
                _ => self
                    .events
                    .push_back(SignalingEvent::RequestFailed { code, message }),
            },
            ServerEvent::Joined {
                channel_id,
                session_id,
                can_speak,
                sdp,
            } => {
                if self.voice != Some(channel_id) {
                    // A join we no longer want (left meanwhile): undo it on the server.
                    let id = self.request(ClientRequest::Leave);
                    self.pending.insert(id, Pending::Other);
                    return;
                }
                self.voice_joined = true;
                self.voice_session = Some(session_id);
                self.events.push_back(SignalingEvent::Joined {
                    channel_id,
                    session_id,
                    can_speak,
                    sdp,
                });
                if self.muted {
                    let id = self.request(ClientRequest::Mute { muted: true });
                    self.pending.insert(id, Pending::Other);
                }
                if self.deafened {
                    let id = self.request(ClientRequest::Deafen { deafened: true });
                    self.pending.insert(id, Pending::Other);
                }
            }
            ServerEvent::Left {
                channel_id,
                session_id,
                reason,
            } => {
                if self.voice != Some(channel_id) {
                    return;
                }
                // Signaling tells every connection of mine when one of my sessions ends
                // (this device's, another device's, or an older one of mine a newer join
                // replaced). It names the session: only my current one concerns me.
                if let Some(ended) = session_id {
                    if self.voice_session != Some(ended) {
                        return;
                    }
                } else if reason == LeftReason::Moved
                    && self
                        .pending
                        .values()
                        .any(|p| *p == Pending::Join(channel_id))
                {
                    // An older server names no session; `left` comes before the `joined`
                    // reply, so while my own join is in flight the newer join is mine.
                    return;
                }
                self.voice_session = None;
                match reason {
                    // Media trouble on the SFU side: we still want to be there, so rejoin.
                    LeftReason::NodeLost | LeftReason::ConnectionLost => {
                        self.voice_joined = false;
                        self.events
                            .push_back(SignalingEvent::RejoinVoice { channel_id });
                    }
                    _ => {
                        self.voice = None;
                        self.voice_joined = false;
                        self.events
                            .push_back(SignalingEvent::Left { channel_id, reason });
                    }
                }
            }
            ServerEvent::VoiceState {
                community_id,
                channel_id,
                participants,
            } => {
                self.events.push_back(SignalingEvent::VoiceState {
                    community_id,
                    channel_id,
                    participants,
                });
            }
            ServerEvent::Event {
                kind,
                community_id,
                channel_id,
                user_id,
                message_id,
                message,
            } => {
                self.events.push_back(SignalingEvent::Live {
                    kind,
                    community_id,
                    channel_id,
                    user_id,
                    message_id,
                    message,
                });
            }
            ServerEvent::TokenExpiring { .. } => {
                self.events.push_back(SignalingEvent::TokenExpiring)
            }
            ServerEvent::Ok | ServerEvent::Pong => {}
        }
    }

    /// Time passed: keepalives, dead-connection detection, reconnect timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            ConnectionPhase::Authenticating { deadline } if now >= deadline => {
                self.transmits.push_back(Transmit::Close);
                self.on_disconnected(now);
            }
            ConnectionPhase::Ready => {
                if now.duration_since(self.last_rx) >= DEAD_AFTER {
                    self.transmits.push_back(Transmit::Close);
                    self.on_disconnected(now);
                } else if now >= self.next_ping {
                    self.next_ping = now + PING_INTERVAL;
                    self.request(ClientRequest::Ping);
                }
            }
            _ => {}
        }
    }

    /// When `handle_timeout` (or `poll_connect`) next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            ConnectionPhase::Idle | ConnectionPhase::Connecting => None,
            ConnectionPhase::Waiting { until } => Some(until),
            ConnectionPhase::Authenticating { deadline } => Some(deadline),
            ConnectionPhase::Ready => Some(self.next_ping.min(self.last_rx + DEAD_AFTER)),
        }
    }

    /// Next thing for the socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the app.
    pub fn poll_event(&mut self) -> Option<SignalingEvent> {
        self.events.pop_front()
    }

    fn request(&mut self, body: ClientRequest) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.transmits
            .push_back(Transmit::Text(ClientMessage::new(Some(id), body).encode()));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(m: &mut SignalingMachine) -> Vec<ClientMessage> {
        let mut out = Vec::new();
        while let Some(t) = m.poll_transmit() {
            if let Transmit::Text(text) = t {
                out.push(ClientMessage::decode(&text).expect("we send valid frames"));
            }
        }
        out
    }

    fn events(m: &mut SignalingMachine) -> Vec<SignalingEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    fn reply(id: Option<u64>, body: ServerEvent) -> String {
        ServerMessage::new(id, body).encode()
    }

    /// Signaling's answer to join `id`: joined `chan` as `session`, may speak.
    fn joined(id: Option<u64>, chan: Uuid, session: SessionId) -> String {
        reply(
            id,
            ServerEvent::Joined {
                channel_id: chan,
                session_id: session,
                can_speak: true,
                sdp: "answer".into(),
            },
        )
    }

    /// A ready machine that has just sent a join for `chan`; returns it and the join's id.
    fn joining(t0: Instant, chan: Uuid) -> (SignalingMachine, Option<u64>) {
        let mut m = SignalingMachine::new(t0, 1);
        m.start(t0, "tok".into());
        connect_ready(&mut m, t0, UserId::new_random());
        events(&mut m);
        m.join(chan, "offer".into());
        let join = sent(&mut m).pop().unwrap();
        (m, join.id)
    }

    fn connect_ready(m: &mut SignalingMachine, now: Instant, user: UserId) {
        assert!(m.poll_connect(now));
        m.on_connected(now);
        let auth = sent(m).pop().unwrap();
        assert!(matches!(auth.body, ClientRequest::Auth { .. }));
        m.handle_text(
            now,
            &reply(
                auth.id,
                ServerEvent::Ready {
                    user_id: user,
                    expires_at: 0,
                },
            ),
        );
    }

    #[test]
    fn connects_authenticates_joins_and_rejoins_after_a_drop() {
        let t0 = Instant::now();
        let user = UserId::new_random();
        let chan = Uuid::new_v4();
        let mut m = SignalingMachine::new(t0, 1);
        assert!(!m.poll_connect(t0), "nothing before sign-in");
        m.start(t0, "tok".into());
        connect_ready(&mut m, t0, user);
        assert_eq!(events(&mut m), [SignalingEvent::Ready { user_id: user }]);

        m.set_muted(true);
        assert!(
            sent(&mut m).is_empty(),
            "mute is only remembered while not in voice"
        );
        m.join(chan, "offer".into());
        let join = sent(&mut m).pop().unwrap();
        let session = SessionId::new_random();
        m.handle_text(t0, &joined(join.id, chan, session));
        assert!(matches!(
            events(&mut m)[..],
            [SignalingEvent::Joined {
                can_speak: true,
                ..
            }]
        ));
        assert!(matches!(
            sent(&mut m)[..],
            [ClientMessage {
                body: ClientRequest::Mute { muted: true },
                ..
            }]
        ));

        // The network drops: back off, reconnect, re-auth, and ask for a rejoin.
        let t1 = t0 + Duration::from_secs(5);
        m.on_disconnected(t1);
        let retry_in = match events(&mut m)[..] {
            [SignalingEvent::Disconnected { retry_in }] => retry_in,
            ref other => panic!("{other:?}"),
        };
        assert!(!m.poll_connect(t1));
        assert_eq!(m.poll_timeout(), Some(t1 + retry_in));
        let t2 = t1 + retry_in;
        connect_ready(&mut m, t2, user);
        assert_eq!(
            events(&mut m),
            [
                SignalingEvent::Ready { user_id: user },
                SignalingEvent::RejoinVoice { channel_id: chan }
            ]
        );
        assert_eq!(m.wanted_voice(), Some(chan));
    }

    #[test]
    fn kicks_bans_and_refusals_end_voice_with_a_reason() {
        let t0 = Instant::now();
        let chan = Uuid::new_v4();
        let (mut m, join) = joining(t0, chan);
        m.handle_text(
            t0,
            &ServerMessage::error(join, ErrorCode::Forbidden, "not permitted").encode(),
        );
        assert!(matches!(
            events(&mut m)[..],
            [SignalingEvent::JoinRefused {
                code: ErrorCode::Forbidden,
                ..
            }]
        ));
        assert_eq!(m.wanted_voice(), None);

        m.join(chan, "offer".into());
        sent(&mut m);
        m.handle_text(
            t0,
            &reply(
                None,
                ServerEvent::Left {
                    channel_id: chan,
                    session_id: None,
                    reason: LeftReason::NodeLost,
                },
            ),
        );
        assert_eq!(
            events(&mut m),
            [SignalingEvent::RejoinVoice { channel_id: chan }]
        );
        m.handle_text(
            t0,
            &reply(
                None,
                ServerEvent::Left {
                    channel_id: chan,
                    session_id: None,
                    reason: LeftReason::Banned,
                },
            ),
        );
        assert_eq!(
            events(&mut m),
            [SignalingEvent::Left {
                channel_id: chan,
                reason: LeftReason::Banned
            }]
        );
        assert_eq!(m.wanted_voice(), None);
    }

    #[test]
    fn junk_from_the_server_is_ignored_and_dead_connections_are_closed() {
        let t0 = Instant::now();
        let mut m = SignalingMachine::new(t0, 3);
        m.start(t0, "tok".into());
        connect_ready(&mut m, t0, UserId::new_random());
        events(&mut m);
        for junk in [
            "",
            "null",
            "{}",
            r#"{"v":1,"type":"warp_drive"}"#,
            r#"{"v":1,"id":99999,"type":"error"}"#,
            "\u{0}\u{1}",
        ] {
            m.handle_text(t0, junk);
        }
        assert_eq!(m.ignored_frames(), 6);
        assert!(events(&mut m).is_empty());
        // Unknown reply ids and stray joins are harmless.
        m.handle_text(
            t0,
            &reply(
                Some(4242),
                ServerEvent::Joined {
                    channel_id: Uuid::new_v4(),
                    session_id: SessionId::new_random(),
                    can_speak: false,
                    sdp: String::new(),
                },
            ),
        );
        assert!(events(&mut m).is_empty());
        assert!(matches!(
            sent(&mut m)[..],
            [ClientMessage {
                body: ClientRequest::Leave,
                ..
            }]
        ));

        m.handle_timeout(t0 + PING_INTERVAL);
        assert!(matches!(
            sent(&mut m)[..],
            [ClientMessage {
                body: ClientRequest::Ping,
                ..
            }]
        ));
        m.handle_timeout(t0 + DEAD_AFTER);
        assert_eq!(m.poll_transmit(), Some(Transmit::Close));
        assert!(matches!(
            events(&mut m)[..],
            [SignalingEvent::Disconnected { .. }]
        ));
    }

    #[test]
    fn refused_tokens_are_reported_and_a_fresh_token_retries_at_once() {
        let t0 = Instant::now();
        let mut m = SignalingMachine::new(t0, 4);
        m.start(t0, "old".into());
        assert!(m.poll_connect(t0));
        m.on_connected(t0);
        let auth = sent(&mut m).pop().unwrap();
        m.handle_text(
            t0,
            &ServerMessage::error(auth.id, ErrorCode::TokenExpired, "expired").encode(),
        );
        assert_eq!(m.poll_transmit(), Some(Transmit::Close));
        let evs = events(&mut m);
        assert!(matches!(
            evs[0],
            SignalingEvent::AuthFailed {
                code: ErrorCode::TokenExpired,
                ..
            }
        ));
        m.set_token(t0, "new".into());
        assert!(m.poll_connect(t0));
        m.on_connected(t0);
        match &sent(&mut m)[0].body {
            ClientRequest::Auth { access_token } => assert_eq!(access_token, "new"),
            other => panic!("{other:?}"),
        }
        m.stop();
        assert_eq!(m.phase(), ConnectionPhase::Idle);
    }

    #[test]
    fn a_moved_notice_during_my_own_join_is_about_my_older_session() {
        let t0 = Instant::now();
        let chan = Uuid::new_v4();
        let (mut m, join) = joining(t0, chan);
        let moved = ServerEvent::Left {
            channel_id: chan,
            session_id: None,
            reason: LeftReason::Moved,
        };
        // Replaced by this very join: ignored.
        m.handle_text(t0, &reply(None, moved.clone()));
        assert!(events(&mut m).is_empty());
        m.handle_text(t0, &joined(join, chan, SessionId::new_random()));
        events(&mut m);
        // Once joined, a newer join elsewhere (another device) does remove me.
        m.handle_text(t0, &reply(None, moved));
        assert_eq!(
            events(&mut m),
            [SignalingEvent::Left {
                channel_id: chan,
                reason: LeftReason::Moved
            }]
        );
    }

    #[test]
    fn a_left_naming_another_session_of_mine_is_ignored() {
        let t0 = Instant::now();
        let chan = Uuid::new_v4();
        let (mut m, join) = joining(t0, chan);
        let (mine, older, other_device) = (
            SessionId::new_random(),
            SessionId::new_random(),
            SessionId::new_random(),
        );
        let left = |session: SessionId, reason| ServerEvent::Left {
            channel_id: chan,
            session_id: Some(session),
            reason,
        };
        // My older session, replaced by this join, ends while the join is in flight.
        m.handle_text(t0, &reply(None, left(older, LeftReason::Moved)));
        assert!(events(&mut m).is_empty());
        m.handle_text(t0, &joined(join, chan, mine));
        events(&mut m);
        // My other device's session ends, for whatever reason: not about this one.
        for reason in [LeftReason::Left, LeftReason::Moved, LeftReason::NodeLost] {
            m.handle_text(t0, &reply(None, left(other_device, reason)));
            assert!(events(&mut m).is_empty(), "{reason:?}");
        }
        assert_eq!(m.wanted_voice(), Some(chan));
        // My own session is replaced by a join on the other device: this one leaves.
        m.handle_text(t0, &reply(None, left(mine, LeftReason::Moved)));
        assert_eq!(
            events(&mut m),
            [SignalingEvent::Left {
                channel_id: chan,
                reason: LeftReason::Moved
            }]
        );
        assert_eq!(m.wanted_voice(), None);
    }
}
