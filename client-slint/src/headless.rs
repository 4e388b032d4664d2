//! A UI-free client: the same core pieces the window uses — sign-in through
//! [`SessionManager`], the signaling socket ([`crate::signaling::socket`]) and a voice call
//! prepared and started through [`PendingCall`] — put together for bots, end-to-end tests
//! and measurements. It signs in, finds a voice channel by community and channel name, joins
//! it through signaling, runs the call on the audio devices it is given (a `FakeSoundCard`
//! usually), and keeps it up: token refresh, rejoin after a lost connection, a new offer
//! when signaling asks for one.

use std::sync::Arc;
use std::time::Duration;

use haven_proto::client::{LeftReason, VoiceParticipant};
use haven_proto::UserId;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use uuid::Uuid;

use crate::core::channels::load_channel_tree;
use crate::core::{ClientConfig, Communities, CoreError, SessionManager};
use crate::signaling::machine::SignalingEvent;
use crate::signaling::socket::{self, SignalingCommand, SignalingHandle};
use crate::voice::call::CallEvent;
use crate::voice::device::AudioDevices;
use crate::voice::session::{ActiveCall, CallCommand, PendingCall, SessionError, SessionReport};

/// Who signs in and which voice channel to join.
#[derive(Debug, Clone)]
pub struct HeadlessConfig {
    /// Supabase URL, anon key and the signaling WebSocket URL (required here).
    pub client: ClientConfig,
    /// Account email.
    pub email: String,
    /// Account password.
    pub password: String,
    /// Community name.
    pub community: String,
    /// Voice channel name.
    pub channel: String,
    /// Noise suppression on the sent voice (the app's default is on).
    pub noise_suppression: bool,
}

/// Why a headless client could not join or stay in voice.
#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    /// Sign-in or data access failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The config has no signaling URL.
    #[error("no signaling URL configured; voice needs the signaling service")]
    NoSignaling,
    /// Not a member of a community of that name.
    #[error("not a member of a community named {0:?}")]
    NoCommunity(String),
    /// No voice channel of that name in the community.
    #[error("community {community:?} has no voice channel named {channel:?}")]
    NoChannel {
        /// Community name.
        community: String,
        /// Channel name.
        channel: String,
    },
    /// Signaling refused the join.
    #[error("join refused: {0}")]
    JoinRefused(String),
    /// Signaling refused the token.
    #[error("signaling refused the token: {0}")]
    AuthFailed(String),
    /// The call could not be set up.
    #[error(transparent)]
    Call(#[from] SessionError),
    /// The call thread failed (devices, socket).
    #[error("call failed: {0}")]
    CallFailed(String),
    /// The signaling task ended.
    #[error("the signaling task ended")]
    SignalingGone,
    /// Removed from voice.
    #[error("removed from voice: {0:?}")]
    Left(LeftReason),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// What a running headless client observes.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadlessEvent {
    /// Media to the SFU is up.
    Connected,
    /// The SFU says this user started or stopped speaking.
    Speaking {
        /// Who.
        user: UserId,
        /// On or off.
        on: bool,
    },
    /// Who is in my voice channel (from signaling).
    Participants(Vec<VoiceParticipant>),
    /// Signaling dropped (it reconnects and rejoins on its own).
    SignalingDown,
    /// Joined (again) with a fresh call.
    Joined,
}

/// Makes the audio devices on the call thread (called once per join).
pub type DeviceFactory = Arc<dyn Fn() -> AudioDevices + Send + Sync>;

/// A signed-in client in a voice channel.
pub struct HeadlessClient {
    session: SessionManager,
    signaling_url: String,
    signaling: SignalingHandle,
    events: UnboundedReceiver<SignalingEvent>,
    reports_tx: UnboundedSender<SessionReport>,
    reports: UnboundedReceiver<SessionReport>,
    devices: DeviceFactory,
    pending: Option<PendingCall>,
    call: Option<ActiveCall>,
    can_speak: bool,
    noise_suppression: bool,
    /// My user id.
    pub user_id: Uuid,
    /// The voice channel.
    pub channel_id: Uuid,
    /// Its community.
    pub community_id: Uuid,
}

impl std::fmt::Debug for HeadlessClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadlessClient")
            .field("user_id", &self.user_id)
            .field("channel_id", &self.channel_id)
            .finish_non_exhaustive()
    }
}

impl HeadlessClient {
    /// Sign in, find the channel, connect to signaling and ask to join (must run inside a
    /// tokio runtime). The call starts when signaling answers, inside [`next_event`].
    ///
    /// [`next_event`]: Self::next_event
    pub async fn start(
        config: &HeadlessConfig,
        devices: DeviceFactory,
    ) -> Result<Self, HeadlessError> {
        let signaling_url = config
            .client
            .signaling_url
            .clone()
            .ok_or(HeadlessError::NoSignaling)?;
        let session = SessionManager::new(config.client.supabase()?, None);
        let signed_in = session.sign_in(&config.email, &config.password).await?;
        let community = Communities::new(session.clone())
            .list_mine()
            .await?
            .into_iter()
            .find(|c| c.name == config.community)
            .ok_or_else(|| HeadlessError::NoCommunity(config.community.clone()))?;
        let tree = load_channel_tree(&session, community.id).await?;
        let channel =
            tree.voice_named(&config.channel)
                .ok_or_else(|| HeadlessError::NoChannel {
                    community: config.community.clone(),
                    channel: config.channel.clone(),
                })?;
        let (signaling, events) = socket::spawn(signaling_url.clone());
        signaling.send(SignalingCommand::Start(signed_in.access_token.clone()));
        let (reports_tx, reports) = unbounded_channel();
        let mut client = Self {
            session,
            signaling_url,
            signaling,
            events,
            reports_tx,
            reports,
            devices,
            pending: None,
            call: None,
            can_speak: channel.can_speak,
            noise_suppression: config.noise_suppression,
            user_id: signed_in.user.id,
            channel_id: channel.id,
            community_id: community.id,
        };
        client.offer_and_join()?;
        Ok(client)
    }

    /// Run until media is connected (or fail), within `timeout`.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<(), HeadlessError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.next_event()).await {
                Err(_) => return Err(HeadlessError::Timeout("the media connection")),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(HeadlessEvent::Connected)) => return Ok(()),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Handle signaling and the call until something worth reporting happens. Errors are
    /// final (refused, removed, signaling gone); transient trouble is handled here.
    pub async fn next_event(&mut self) -> Result<HeadlessEvent, HeadlessError> {
        loop {
            tokio::select! {
                event = self.events.recv() => {
                    let event = event.ok_or(HeadlessError::SignalingGone)?;
                    if let Some(out) = self.on_signaling(event).await? {
                        return Ok(out);
                    }
                }
                report = self.reports.recv() => {
                    // We hold a sender, so the channel never closes.
                    let Some(report) = report else { continue };
                    match report {
                        SessionReport::Event(CallEvent::Connected) => {
                            return Ok(HeadlessEvent::Connected)
                        }
                        SessionReport::Event(CallEvent::Speaking { user, on }) => {
                            return Ok(HeadlessEvent::Speaking { user, on })
                        }
                        SessionReport::Event(CallEvent::Disconnected) => {
                            self.signaling.send(SignalingCommand::MediaFailed)
                        }
                        SessionReport::Event(CallEvent::Slots(_)) | SessionReport::Level(_) => {}
                        SessionReport::Failed(e) => return Err(HeadlessError::CallFailed(e)),
                    }
                }
            }
        }
    }

    /// Leave voice and disconnect.
    pub fn leave(mut self) {
        self.call = None;
        self.signaling.send(SignalingCommand::Leave);
        self.signaling.send(SignalingCommand::Stop);
    }

    fn offer_and_join(&mut self) -> Result<(), HeadlessError> {
        self.call = None;
        let (pending, sdp) = PendingCall::prepare(
            self.user_id.into(),
            &self.signaling_url,
            self.can_speak,
            self.noise_suppression,
        )?;
        self.pending = Some(pending);
        self.signaling.send(SignalingCommand::Join {
            channel_id: self.channel_id,
            sdp,
        });
        Ok(())
    }

    /// Refresh the access token and hand it to signaling. Takes clones, not `&self`: the
    /// client holds non-`Sync` audio state, and a borrow across `.await` would make the
    /// future non-`Send`.
    async fn refresh_token(
        session: SessionManager,
        signaling: SignalingHandle,
    ) -> Result<(), HeadlessError> {
        let session = session.valid_session().await?;
        signaling.send(SignalingCommand::SetToken(session.access_token));
        Ok(())
    }

    async fn on_signaling(
        &mut self,
        event: SignalingEvent,
    ) -> Result<Option<HeadlessEvent>, HeadlessError> {
        Ok(match event {
            SignalingEvent::Joined {
                channel_id,
                can_speak,
                sdp,
                ..
            } if channel_id == self.channel_id => {
                let Some(pending) = self.pending.take() else {
                    return Ok(None);
                };
                let tx = self.reports_tx.clone();
                let devices = self.devices.clone();
                let call = pending.start_with_devices(
                    &sdp,
                    move || devices(),
                    None,
                    None,
                    move |r| {
                        let _ = tx.send(r);
                    },
                )?;
                call.send(CallCommand::Transmit(can_speak));
                self.call = Some(call);
                Some(HeadlessEvent::Joined)
            }
            SignalingEvent::JoinRefused { message, .. } => {
                return Err(HeadlessError::JoinRefused(message))
            }
            SignalingEvent::Left { reason, .. } => return Err(HeadlessError::Left(reason)),
            SignalingEvent::RejoinVoice { channel_id } if channel_id == self.channel_id => {
                self.offer_and_join()?;
                None
            }
            SignalingEvent::TokenExpiring => {
                Self::refresh_token(self.session.clone(), self.signaling.clone()).await?;
                None
            }
            SignalingEvent::AuthFailed { message, .. } => {
                match Self::refresh_token(self.session.clone(), self.signaling.clone()).await {
                    Ok(()) => None,
                    Err(_) => return Err(HeadlessError::AuthFailed(message)),
                }
            }
            SignalingEvent::Disconnected { .. } => Some(HeadlessEvent::SignalingDown),
            SignalingEvent::VoiceState {
                channel_id,
                participants,
                ..
            } if channel_id == self.channel_id => Some(HeadlessEvent::Participants(participants)),
            _ => None,
        })
    }
}
