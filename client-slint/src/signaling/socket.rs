//! The thin async shell around [`SignalingMachine`]: one tokio task that owns the WebSocket,
//! feeds the machine frames, commands and time, and carries out what it asks for. All the
//! decisions (what to send, when to reconnect, what to rejoin) live in the machine.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::signaling::machine::{SignalingEvent, SignalingMachine, Transmit};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the app asks of the signaling task.
#[derive(Debug, Clone)]
pub enum SignalingCommand {
    /// Connect with this access token.
    Start(String),
    /// A refreshed token.
    SetToken(String),
    /// Join voice with an SDP offer.
    Join {
        /// Channel.
        channel_id: Uuid,
        /// Offer.
        sdp: String,
    },
    /// Leave voice.
    Leave,
    /// Self-mute.
    Mute(bool),
    /// Self-deafen.
    Deafen(bool),
    /// The media connection failed: rejoin.
    MediaFailed,
    /// Sign-out: disconnect for good.
    Stop,
}

/// Handle to the signaling task; dropping it ends the task.
#[derive(Debug, Clone)]
pub struct SignalingHandle {
    commands: mpsc::UnboundedSender<SignalingCommand>,
}

impl SignalingHandle {
    /// Send a command (ignored if the task has ended).
    pub fn send(&self, command: SignalingCommand) {
        let _ = self.commands.send(command);
    }
}

/// Spawn the task on the current tokio runtime; events arrive on the returned receiver.
pub fn spawn(url: String) -> (SignalingHandle, mpsc::UnboundedReceiver<SignalingEvent>) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(url, cmd_rx, ev_tx));
    (SignalingHandle { commands: cmd_tx }, ev_rx)
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn next_frame(
    ws: &mut Option<Socket>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn run(
    url: String,
    mut commands: mpsc::UnboundedReceiver<SignalingCommand>,
    events: mpsc::UnboundedSender<SignalingEvent>,
) {
    // Jitter must differ between clients so they do not reconnect in lockstep.
    let mut machine = SignalingMachine::new(Instant::now(), rand::random());
    let mut ws: Option<Socket> = None;
    loop {
        while let Some(t) = machine.poll_transmit() {
            match t {
                Transmit::Text(text) => {
                    let failed = match ws.as_mut() {
                        Some(socket) => socket.send(Message::Text(text.into())).await.is_err(),
                        None => false,
                    };
                    if failed {
                        ws = None;
                        machine.on_disconnected(Instant::now());
                    }
                }
                Transmit::Close => {
                    if let Some(mut socket) = ws.take() {
                        let _ = socket.close(None).await;
                    }
                }
            }
        }
        while let Some(e) = machine.poll_event() {
            if events.send(e).is_err() {
                return;
            }
        }
        if machine.poll_connect(Instant::now()) {
            match tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_tungstenite::connect_async(url.as_str()),
            )
            .await
            {
                Ok(Ok((socket, _))) => {
                    ws = Some(socket);
                    machine.on_connected(Instant::now());
                }
                Ok(Err(e)) => {
                    tracing::debug!("signaling connect failed: {e}");
                    machine.on_disconnected(Instant::now());
                }
                Err(_) => machine.on_disconnected(Instant::now()),
            }
            continue;
        }
        let wake = machine
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                let now = Instant::now();
                match command {
                    SignalingCommand::Start(token) => machine.start(now, token),
                    SignalingCommand::SetToken(token) => machine.set_token(now, token),
                    SignalingCommand::Join { channel_id, sdp } => machine.join(channel_id, sdp),
                    SignalingCommand::Leave => machine.leave(),
                    SignalingCommand::Mute(m) => machine.set_muted(m),
                    SignalingCommand::Deafen(d) => machine.set_deafened(d),
                    SignalingCommand::MediaFailed => machine.on_media_failed(),
                    SignalingCommand::Stop => machine.stop(),
                }
            }
            frame = next_frame(&mut ws) => {
                let now = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => machine.handle_text(now, text.as_str()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Binary(_))) => machine.handle_text(now, ""),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        ws = None;
                        machine.on_disconnected(now);
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => machine.handle_timeout(Instant::now()),
        }
    }
}
