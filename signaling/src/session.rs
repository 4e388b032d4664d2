//! One WebSocket connection's protocol state, without IO: who is authenticated (and until
//! when), the rate limits, and which requests may run in which state.
//!
//! The shell (`ws.rs`) feeds every text frame to [`ClientSession::handle_text`] and gets a
//! [`Step`]: an immediate reply, a token to verify, or a voice request to run. Verification
//! and voice work are async IO, so their outcomes come back through
//! [`ClientSession::token_verified`] / [`ClientSession::token_refused`]. Time is always an
//! argument, so expiry and rate limiting are tested without a clock.
//!
//! Per-user limits: the buckets live per connection, and the hub caps connections per user
//! (`max_connections_per_user`), so one user's total rate is bounded by both.

use std::time::{Duration, Instant};

use haven_proto::client::{ClientMessage, ClientRequest, ErrorCode, ServerEvent, ServerMessage};
use haven_proto::UserId;
use uuid::Uuid;

use crate::jwt::{TokenError, UserClaims};
use crate::rate_limit::{RateLimit, TokenBucket};

/// Limits and timings of a connection.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Any client message.
    pub messages: RateLimit,
    /// `join` requests (each costs an RPC and an SFU round trip).
    pub joins: RateLimit,
    /// A connection that has not authenticated by then is closed.
    pub auth_timeout: Duration,
    /// `token_expiring` is sent this long before the token's `exp`.
    pub expiry_warning: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            messages: RateLimit::new(30, 10.0),
            joins: RateLimit::new(5, 0.5),
            auth_timeout: Duration::from_secs(10),
            expiry_warning: Duration::from_secs(60),
        }
    }
}

/// The authenticated user of a connection.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    /// The current access token, used to call RPCs as the user.
    pub token: String,
    /// Token expiry (unix seconds).
    pub expires_at: u64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A voice operation, for the shell to run as the authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceRequest {
    Join {
        channel_id: Uuid,
        sdp: String,
    },
    Leave,
    Mute {
        muted: bool,
    },
    Deafen {
        deafened: bool,
    },
    ServerMute {
        channel_id: Uuid,
        user_id: Uuid,
        muted: bool,
    },
    Disconnect {
        channel_id: Uuid,
        user_id: Uuid,
    },
}

/// What to do with one client frame.
#[derive(Debug)]
pub enum Step {
    /// Send this and carry on.
    Reply(ServerMessage),
    /// Verify this access token, then call `token_verified` or `token_refused`.
    Verify { id: Option<u64>, token: String },
    /// Run this voice request as `identity`.
    Voice {
        id: Option<u64>,
        identity: Identity,
        request: VoiceRequest,
    },
}

/// How an accepted token changed the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthChange {
    /// First authentication of this connection.
    SignedIn(UserId),
    /// A fresh token for the same user.
    Refreshed(UserId),
    /// Refused; the connection keeps its previous state.
    Refused,
}

/// What the passage of time asks for.
#[derive(Debug)]
pub enum Tick {
    Idle,
    Send(ServerMessage),
    /// Send this, then close the connection.
    Close(ServerMessage),
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct ClientSession {
    cfg: SessionConfig,
    identity: Option<Identity>,
    messages: TokenBucket,
    joins: TokenBucket,
    opened: Instant,
    warned_for_exp: Option<u64>,
}

impl ClientSession {
    pub fn new(cfg: SessionConfig, now: Instant) -> Self {
        Self {
            messages: TokenBucket::new(cfg.messages, now),
            joins: TokenBucket::new(cfg.joins, now),
            cfg,
            identity: None,
            opened: now,
            warned_for_exp: None,
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// One text frame from the client.
    pub fn handle_text(&mut self, text: &str, now: Instant) -> Step {
        if let Err(wait) = self.messages.try_take(now) {
            return Step::Reply(rate_limited(None, wait));
        }
        let msg = match ClientMessage::decode(text) {
            Ok(msg) => msg,
            Err((id, e)) => return Step::Reply(ServerMessage::error(id, e.code(), e.to_string())),
        };
        let id = msg.id;
        let request = match msg.body {
            ClientRequest::Ping => return Step::Reply(ServerMessage::new(id, ServerEvent::Pong)),
            ClientRequest::Auth { access_token } => {
                return Step::Verify {
                    id,
                    token: access_token,
                }
            }
            ClientRequest::Join { channel_id, sdp } => VoiceRequest::Join { channel_id, sdp },
            ClientRequest::Leave => VoiceRequest::Leave,
            ClientRequest::Mute { muted } => VoiceRequest::Mute { muted },
            ClientRequest::Deafen { deafened } => VoiceRequest::Deafen { deafened },
            ClientRequest::ServerMute {
                channel_id,
                user_id,
                muted,
            } => VoiceRequest::ServerMute {
                channel_id,
                user_id,
                muted,
            },
            ClientRequest::Disconnect {
                channel_id,
                user_id,
            } => VoiceRequest::Disconnect {
                channel_id,
                user_id,
            },
        };
        let Some(identity) = self.identity.clone() else {
            return Step::Reply(ServerMessage::error(
                id,
                ErrorCode::Unauthenticated,
                "send `auth` with your access token first",
            ));
        };
        if matches!(request, VoiceRequest::Join { .. }) {
            if let Err(wait) = self.joins.try_take(now) {
                return Step::Reply(rate_limited(id, wait));
            }
        }
        Step::Voice {
            id,
            identity,
            request,
        }
    }

    /// A binary frame: not part of the protocol.
    pub fn handle_binary(&mut self, now: Instant) -> Step {
        if let Err(wait) = self.messages.try_take(now) {
            return Step::Reply(rate_limited(None, wait));
        }
        Step::Reply(ServerMessage::error(
            None,
            ErrorCode::BadMessage,
            "binary frames are not part of the protocol; send JSON text frames",
        ))
    }

    /// The token of an `auth` request verified as `claims`.
    pub fn token_verified(
        &mut self,
        id: Option<u64>,
        token: String,
        claims: &UserClaims,
    ) -> (ServerMessage, AuthChange) {
        let user = UserId(claims.sub);
        let change = match &self.identity {
            None => AuthChange::SignedIn(user),
            Some(current) if current.user == user => AuthChange::Refreshed(user),
            Some(_) => {
                return (
                    ServerMessage::error(
                        id,
                        ErrorCode::Unauthenticated,
                        "a connection cannot change users; open a new one",
                    ),
                    AuthChange::Refused,
                )
            }
        };
        self.identity = Some(Identity {
            user,
            token,
            expires_at: claims.exp,
        });
        (
            ServerMessage::new(
                id,
                ServerEvent::Ready {
                    user_id: user,
                    expires_at: claims.exp,
                },
            ),
            change,
        )
    }

    /// The token of an `auth` request was refused; an earlier identity stays valid.
    pub fn token_refused(&mut self, id: Option<u64>, err: &TokenError) -> ServerMessage {
        let code = match err {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthenticated,
        };
        ServerMessage::error(id, code, err.to_string())
    }

    /// Called about once a second: token expiry warnings, expiry, the auth deadline.
    pub fn tick(&mut self, now: Instant, now_unix: u64) -> Tick {
        let Some(identity) = &self.identity else {
            if now.saturating_duration_since(self.opened) >= self.cfg.auth_timeout {
                return Tick::Close(ServerMessage::error(
                    None,
                    ErrorCode::Unauthenticated,
                    "no `auth` received in time",
                ));
            }
            return Tick::Idle;
        };
        let exp = identity.expires_at;
        if now_unix >= exp {
            self.identity = None;
            return Tick::Close(ServerMessage::error(
                None,
                ErrorCode::TokenExpired,
                "the access token expired; reconnect with a fresh one",
            ));
        }
        if exp - now_unix <= self.cfg.expiry_warning.as_secs() && self.warned_for_exp != Some(exp) {
            self.warned_for_exp = Some(exp);
            return Tick::Send(ServerMessage::new(
                None,
                ServerEvent::TokenExpiring { expires_at: exp },
            ));
        }
        Tick::Idle
    }
}

fn rate_limited(id: Option<u64>, wait: Duration) -> ServerMessage {
    ServerMessage::error(
        id,
        ErrorCode::RateLimited,
        format!("slow down: retry in {} ms", wait.as_millis().max(1)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "6f1c1d1e-0000-4000-8000-000000000001";

    fn claims(user: &str, exp: u64) -> UserClaims {
        UserClaims {
            sub: user.parse().unwrap(),
            role: "authenticated".into(),
            exp,
            email: None,
            session_id: None,
        }
    }

    fn reply(step: Step) -> ServerMessage {
        match step {
            Step::Reply(m) => m,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn code(m: &ServerMessage) -> Option<ErrorCode> {
        match m.body {
            ServerEvent::Error { code, .. } => Some(code),
            _ => None,
        }
    }

    fn signed_in(now: Instant) -> ClientSession {
        let mut s = ClientSession::new(SessionConfig::default(), now);
        let (m, change) = s.token_verified(Some(1), "t1".into(), &claims(USER, 2_000));
        assert!(matches!(
            m.body,
            ServerEvent::Ready {
                expires_at: 2_000,
                ..
            }
        ));
        assert!(matches!(change, AuthChange::SignedIn(_)));
        s
    }

    #[test]
    fn requests_before_auth_are_refused_but_ping_and_auth_work() {
        let now = Instant::now();
        let mut s = ClientSession::new(SessionConfig::default(), now);
        let m = reply(s.handle_text(r#"{"v":1,"id":4,"type":"leave"}"#, now));
        assert_eq!(
            (m.id, code(&m)),
            (Some(4), Some(ErrorCode::Unauthenticated))
        );
        let m = reply(s.handle_text(r#"{"v":1,"id":5,"type":"ping"}"#, now));
        assert_eq!(m.body, ServerEvent::Pong);
        match s.handle_text(r#"{"v":1,"id":6,"type":"auth","access_token":"abc"}"#, now) {
            Step::Verify { id, token } => assert_eq!((id, token.as_str()), (Some(6), "abc")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_input_gets_an_error_and_the_session_goes_on() {
        let now = Instant::now();
        let mut s = signed_in(now);
        for (text, want) in [
            ("{", ErrorCode::BadMessage),
            (r#"{"v":1,"type":"warp"}"#, ErrorCode::BadMessage),
            (
                r#"{"v":1,"type":"mute","muted":"yes"}"#,
                ErrorCode::BadMessage,
            ),
            (r#"{"v":7,"type":"ping"}"#, ErrorCode::UnsupportedVersion),
        ] {
            assert_eq!(code(&reply(s.handle_text(text, now))), Some(want), "{text}");
        }
        let big = format!(r#"{{"v":1,"type":"join","sdp":"{}"}}"#, "a".repeat(70_000));
        assert_eq!(
            code(&reply(s.handle_text(&big, now))),
            Some(ErrorCode::TooLarge)
        );
        assert_eq!(
            code(&reply(s.handle_binary(now))),
            Some(ErrorCode::BadMessage)
        );
        match s.handle_text(r#"{"v":1,"id":9,"type":"mute","muted":true}"#, now) {
            Step::Voice {
                id,
                identity,
                request,
            } => {
                assert_eq!(id, Some(9));
                assert_eq!(identity.token, "t1");
                assert_eq!(request, VoiceRequest::Mute { muted: true });
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refresh_replaces_the_token_for_the_same_user_only() {
        let now = Instant::now();
        let mut s = signed_in(now);
        let (_, change) = s.token_verified(None, "t2".into(), &claims(USER, 3_000));
        assert!(matches!(change, AuthChange::Refreshed(_)));
        assert_eq!(s.identity().unwrap().token, "t2");
        assert_eq!(s.identity().unwrap().expires_at, 3_000);
        let other = "6f1c1d1e-0000-4000-8000-000000000002";
        let (m, change) = s.token_verified(Some(3), "t3".into(), &claims(other, 3_000));
        assert_eq!(change, AuthChange::Refused);
        assert_eq!(code(&m), Some(ErrorCode::Unauthenticated));
        assert_eq!(s.identity().unwrap().token, "t2");
        let m = s.token_refused(Some(4), &TokenError::Expired);
        assert_eq!(code(&m), Some(ErrorCode::TokenExpired));
        assert_eq!(
            s.identity().unwrap().token,
            "t2",
            "a refused refresh keeps the old token"
        );
    }

    #[test]
    fn messages_and_joins_are_rate_limited() {
        let now = Instant::now();
        let cfg = SessionConfig {
            messages: RateLimit::new(5, 1.0),
            joins: RateLimit::new(2, 0.1),
            ..Default::default()
        };
        let mut s = ClientSession::new(cfg, now);
        s.token_verified(None, "t".into(), &claims(USER, 2_000));
        let join = r#"{"v":1,"id":1,"type":"join","channel_id":"00000000-0000-4000-8000-000000000001","sdp":"v=0"}"#;
        assert!(matches!(s.handle_text(join, now), Step::Voice { .. }));
        assert!(matches!(s.handle_text(join, now), Step::Voice { .. }));
        assert_eq!(
            code(&reply(s.handle_text(join, now))),
            Some(ErrorCode::RateLimited)
        );
        assert!(matches!(
            s.handle_text(r#"{"v":1,"type":"ping"}"#, now),
            Step::Reply(_)
        ));
        assert!(matches!(
            s.handle_text(r#"{"v":1,"type":"ping"}"#, now),
            Step::Reply(_)
        ));
        let m = reply(s.handle_text(r#"{"v":1,"type":"ping"}"#, now));
        assert_eq!(code(&m), Some(ErrorCode::RateLimited));
        let later = now + Duration::from_secs(1);
        assert_eq!(
            reply(s.handle_text(r#"{"v":1,"type":"ping"}"#, later)).body,
            ServerEvent::Pong
        );
    }

    #[test]
    fn expiry_is_warned_once_then_closes() {
        let now = Instant::now();
        let mut s = signed_in(now);
        assert!(matches!(s.tick(now, 1_000), Tick::Idle));
        match s.tick(now, 1_950) {
            Tick::Send(m) => {
                assert_eq!(m.body, ServerEvent::TokenExpiring { expires_at: 2_000 })
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.tick(now, 1_951), Tick::Idle));
        match s.tick(now, 2_000) {
            Tick::Close(m) => assert_eq!(code(&m), Some(ErrorCode::TokenExpired)),
            other => panic!("{other:?}"),
        }
        assert!(s.identity().is_none());
    }

    #[test]
    fn unauthenticated_connections_are_closed_after_the_auth_timeout() {
        let now = Instant::now();
        let mut s = ClientSession::new(SessionConfig::default(), now);
        assert!(matches!(
            s.tick(now + Duration::from_secs(9), 0),
            Tick::Idle
        ));
        assert!(matches!(
            s.tick(now + Duration::from_secs(10), 0),
            Tick::Close(_)
        ));
    }
}
