//! The client WebSocket (`/v1/ws`): the IO shell around [`ClientSession`].
//!
//! One task per connection reads frames and runs requests in order; a writer task drains the
//! connection's bounded queue (replies and pushed events share it, so they stay ordered).
//! The connection ends when the client closes, its token expires, it is a slow consumer
//! (queue full), or the server shuts down (close code 1001).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use haven_proto::client::{ErrorCode, ServerMessage, MAX_CLIENT_MESSAGE_BYTES};
use tracing::debug;

use crate::app::App;
use crate::hub::ConnId;
use crate::metrics::inc;
use crate::session::{AuthChange, ClientSession, Step, Tick};
use crate::voice::unix_now;

/// Frames above this are cut off by the WebSocket layer itself (connection closed); frames
/// between the protocol limit and this get a `too_large` error and the connection stays.
const HARD_FRAME_LIMIT: usize = 4 * MAX_CLIENT_MESSAGE_BYTES;
/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 4 * 1024;

pub async fn upgrade(ws: WebSocketUpgrade, State(app): State<Arc<App>>) -> Response {
    // Small buffers: most connections are idle most of the time, and tungstenite's 128 KiB
    // defaults would cost that much per connection (frames larger than the buffer still
    // arrive, in several reads). Writes go out at once instead of batching up to 128 KiB.
    ws.max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection(app, socket))
}

async fn connection(app: Arc<App>, socket: WebSocket) {
    if app.shutdown.is_cancelled() {
        return;
    }
    let (conn, mut outbox, kill) = app.hub.open_connection();
    let (mut sink, mut stream) = socket.split();

    let writer_kill = kill.clone();
    let shutdown = app.shutdown.clone();
    let writer = tokio::spawn(async move {
        let going_away = (1001, "server shutting down");
        let close = loop {
            tokio::select! {
                biased;
                _ = writer_kill.cancelled() => {
                    break if shutdown.is_cancelled() { going_away } else { (1008, "too slow: send queue full") };
                }
                m = outbox.recv() => match m {
                    Some(text) => {
                        if sink.send(Message::Text(Utf8Bytes::from(text))).await.is_err() {
                            return;
                        }
                    }
                    // The connection was closed on our side after its last message.
                    None => break if shutdown.is_cancelled() { going_away } else { (1000, "bye") },
                },
                _ = shutdown.cancelled() => break going_away,
            }
        };
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: close.0,
                reason: Utf8Bytes::from_static(close.1),
            })))
            .await;
        let _ = sink.close().await;
    });

    let mut session = ClientSession::new(app.session, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let frame = tokio::select! {
            _ = kill.cancelled() => break,
            _ = app.shutdown.cancelled() => break,
            _ = tick.tick() => {
                match session.tick(Instant::now(), unix_now()) {
                    Tick::Idle => {}
                    Tick::Send(m) => { app.hub.send_to_conn(conn, &m); }
                    Tick::Close(m) => {
                        app.hub.send_to_conn(conn, &m);
                        break;
                    }
                }
                continue;
            }
            f = stream.next() => f,
        };
        let step = match frame {
            Some(Ok(Message::Text(text))) => {
                inc(&app.metrics.ws_messages_in);
                session.handle_text(text.as_str(), Instant::now())
            }
            Some(Ok(Message::Binary(_))) => {
                inc(&app.metrics.ws_messages_in);
                session.handle_binary(Instant::now())
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(e)) => {
                debug!(error = %e, "websocket read error");
                break;
            }
        };
        if !run_step(&app, conn, &mut session, step).await {
            break;
        }
    }

    // Close: dropping the queue's sender lets the writer flush what is queued, then close.
    let user = app.hub.close_connection(conn);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if let Some(user) = user {
        crate::voice::schedule_grace(&app, user);
    }
}

/// Runs one step; false when the connection must close.
async fn run_step(app: &Arc<App>, conn: ConnId, session: &mut ClientSession, step: Step) -> bool {
    match step {
        Step::Reply(m) => {
            if matches!(m.body, haven_proto::client::ServerEvent::Error { .. }) {
                inc(&app.metrics.ws_errors_sent);
            }
            app.hub.send_to_conn(conn, &m);
        }
        Step::Verify { id, token } => match app.verifier.verify(&token).await {
            Ok(claims) => {
                let (reply, change) = session.token_verified(id, token, &claims);
                match change {
                    AuthChange::SignedIn(user) => {
                        // Memberships first; then, atomically, bind the connection, record
                        // them and queue `ready`: `ready` is the first message, and every
                        // event after it reaches this user.
                        let communities = load_memberships(app, user).await;
                        if let Err(e) = app.hub.sign_in(conn, user, communities.clone(), &reply) {
                            app.hub.send_to_conn(
                                conn,
                                &ServerMessage::error(id, ErrorCode::RateLimited, e.to_string()),
                            );
                            return false;
                        }
                        inc(&app.metrics.auth_ok);
                        let communities =
                            communities.unwrap_or_else(|| app.hub.lock().communities_of(user));
                        crate::fanout::send_voice_states_to(app, user, &communities).await;
                    }
                    AuthChange::Refreshed(_) => {
                        inc(&app.metrics.auth_ok);
                        app.hub.send_to_conn(conn, &reply);
                    }
                    AuthChange::Refused => {
                        inc(&app.metrics.auth_refused);
                        app.hub.send_to_conn(conn, &reply);
                    }
                }
            }
            Err(e) => {
                inc(&app.metrics.auth_refused);
                let m = session.token_refused(id, &e);
                app.hub.send_to_conn(conn, &m);
            }
        },
        Step::Voice {
            id,
            identity,
            request,
        } => {
            let reply = crate::voice::handle(app, conn, id, identity, request).await;
            app.hub.send_to_conn(conn, &reply);
        }
    }
    true
}

/// After the first `auth`: the user's communities, or `None` when another connection of
/// theirs already has them (or the database is unreachable: logged, and events are limited
/// to those addressed to the user until it is back).
async fn load_memberships(app: &Arc<App>, user: haven_proto::UserId) -> Option<Vec<uuid::Uuid>> {
    if app.hub.lock().is_online(user) {
        return None;
    }
    match app.db.communities_of(user).await {
        Ok(cs) => Some(cs),
        Err(e) => {
            inc(&app.metrics.db_errors);
            tracing::warn!(%user, error = %e, "could not load memberships; live events limited until the database is back");
            None
        }
    }
}
