//! The bridge between signaling and a running call: prepare an offer (socket + media +
//! engine) for `join`, then, with the `joined` answer, run the call on its own thread with
//! the real audio devices. The app steers it with [`CallCommand`]s and hears back through a
//! callback (call events, my input level), so no audio object ever crosses threads.

use std::net::UdpSocket;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use haven_proto::UserId;

use crate::voice::call::{CallError, CallEvent, VoiceCall};
use crate::voice::device::AudioDevices;
use crate::voice::engine::EngineConfig;
use crate::voice::level::LevelReading;
use crate::voice::media::{MediaConfig, DEFAULT_SLOTS};
use crate::voice::runner::{bind_media_socket, local_address_towards, CallRunner, RunnerError};

/// Why a call could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Call setup.
    #[error(transparent)]
    Call(#[from] CallError),
    /// Socket or devices.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// The signaling URL has no usable host.
    #[error("signaling URL {0:?} has no host")]
    BadUrl(String),
}

/// What the app can change on a running call.
#[derive(Debug, Clone)]
pub enum CallCommand {
    /// Send my microphone or not (the voice model's `transmitting()`).
    Transmit(bool),
    /// Play nothing.
    Deafen(bool),
    /// A user's volume.
    Volume(UserId, f32),
    /// Noise suppression on/off.
    NoiseSuppression(bool),
}

/// What the call thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionReport {
    /// A call event.
    Event(CallEvent),
    /// My input level (about 20 times a second).
    Level(LevelReading),
    /// The call could not start (devices, socket).
    Failed(String),
}

/// An offer waiting for signaling's answer.
pub struct PendingCall {
    call: VoiceCall,
    socket: UdpSocket,
}

impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall").finish_non_exhaustive()
    }
}

impl PendingCall {
    /// Bind a socket on the interface that reaches the signaling host and build the offer.
    pub fn prepare(
        me: UserId,
        signaling_url: &str,
        can_speak: bool,
        noise_suppression: bool,
    ) -> Result<(Self, String), SessionError> {
        let host_port = signaling_url
            .split("://")
            .nth(1)
            .unwrap_or(signaling_url)
            .split('/')
            .next()
            .unwrap_or_default();
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_matches(|c| c == '[' || c == ']'),
                p.parse().unwrap_or(443),
            ),
            None => (host_port, 443),
        };
        if host.is_empty() {
            return Err(SessionError::BadUrl(signaling_url.to_string()));
        }
        let ip = local_address_towards(host, port)?;
        let (socket, addr) = bind_media_socket(ip)?;
        let (call, sdp) = VoiceCall::offer(
            Instant::now(),
            me,
            &[addr],
            MediaConfig {
                can_speak,
                slots: DEFAULT_SLOTS,
            },
            EngineConfig {
                noise_suppression,
                ..EngineConfig::default()
            },
        )?;
        Ok((Self { call, socket }, sdp))
    }

    /// Apply the answer and run the call on its own thread with the system's audio devices.
    pub fn start(
        self,
        answer: &str,
        input: Option<String>,
        output: Option<String>,
        report: impl Fn(SessionReport) + Send + 'static,
    ) -> Result<ActiveCall, SessionError> {
        self.start_with_devices(answer, AudioDevices::system, input, output, report)
    }

    /// Like [`start`](Self::start), with the devices `devices` opens on the call thread (a
    /// `FakeSoundCard`'s host for bots and tests; cpal hosts stay on the thread that uses
    /// them).
    pub fn start_with_devices(
        mut self,
        answer: &str,
        devices: impl FnOnce() -> AudioDevices + Send + 'static,
        input: Option<String>,
        output: Option<String>,
        report: impl Fn(SessionReport) + Send + 'static,
    ) -> Result<ActiveCall, SessionError> {
        self.call.accept_answer(Instant::now(), answer)?;
        let (tx, rx) = channel::<CallCommand>();
        std::thread::Builder::new()
            .name("haven-call".into())
            .spawn(move || {
                let devices = devices();
                let runner = match CallRunner::start(
                    self.call,
                    self.socket,
                    &devices,
                    input.as_deref(),
                    output.as_deref(),
                ) {
                    Ok(r) => r,
                    Err(e) => return report(SessionReport::Failed(e.to_string())),
                };
                loop {
                    match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(command) => runner.with_call(|c| {
                            let engine = c.engine_mut();
                            match command {
                                CallCommand::Transmit(on) => engine.set_transmit(on),
                                CallCommand::Deafen(on) => engine.set_deafened(on),
                                CallCommand::Volume(user, gain) => {
                                    engine.set_user_volume(user, gain)
                                }
                                CallCommand::NoiseSuppression(on) => {
                                    engine.set_noise_suppression(on)
                                }
                            }
                        }),
                        Err(RecvTimeoutError::Timeout) => {}
                        // The app dropped its handle: hang up.
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    while let Ok(event) = runner.events.try_recv() {
                        report(SessionReport::Event(event));
                    }
                    report(SessionReport::Level(
                        runner.with_call(|c| c.capture_level()),
                    ));
                }
            })
            .map_err(RunnerError::Io)?;
        Ok(ActiveCall { commands: tx })
    }
}

/// A running call; dropping it hangs up.
#[derive(Debug)]
pub struct ActiveCall {
    commands: Sender<CallCommand>,
}

impl ActiveCall {
    /// Change something on the call.
    pub fn send(&self, command: CallCommand) {
        let _ = self.commands.send(command);
    }
}
