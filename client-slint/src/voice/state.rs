//! The voice model the UI shows and the engine obeys: where I am (joining, connected,
//! reconnecting, refused, kicked), who is in each voice channel and who is speaking, my
//! mute/deafen/push-to-talk state and per-user volumes.
//!
//! One rule decides whether my microphone is sent ([`VoiceState::transmitting`]); the engine
//! and the SFU signalling both follow it, so the UI can never show "unmuted" while nothing
//! is sent or the reverse.

use std::collections::{HashMap, HashSet};

use haven_proto::client::{LeftReason, VoiceParticipant};
use haven_proto::UserId;
use uuid::Uuid;

/// How the microphone opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputMode {
    /// Whenever I am not muted (the encoder's DTX keeps silence cheap).
    #[default]
    VoiceActivity,
    /// Only while the push-to-talk key is held.
    PushToTalk,
}

/// Where my voice connection is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VoicePhase {
    /// Not in voice.
    #[default]
    Idle,
    /// Join sent, waiting for the answer / media.
    Joining {
        /// Channel.
        channel_id: Uuid,
    },
    /// In the channel.
    Connected {
        /// Channel.
        channel_id: Uuid,
        /// Whether the server lets me speak.
        can_speak: bool,
    },
    /// Lost the connection; rejoining.
    Reconnecting {
        /// Channel.
        channel_id: Uuid,
    },
    /// The join was refused.
    Refused {
        /// Channel.
        channel_id: Uuid,
        /// Human-readable reason for the banner.
        reason: String,
    },
    /// Removed from voice by the server (kick, ban, moderator, permission lost).
    Removed {
        /// Channel.
        channel_id: Uuid,
        /// Why.
        reason: LeftReason,
    },
}

impl VoicePhase {
    /// The channel I am in or trying to be in.
    pub fn channel(&self) -> Option<Uuid> {
        match self {
            VoicePhase::Joining { channel_id }
            | VoicePhase::Connected { channel_id, .. }
            | VoicePhase::Reconnecting { channel_id } => Some(*channel_id),
            _ => None,
        }
    }
}

/// Someone in a voice channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// User.
    pub user_id: UserId,
    /// Name to show.
    pub display_name: String,
    /// Self-muted.
    pub muted: bool,
    /// Self-deafened.
    pub deafened: bool,
    /// Muted by a moderator.
    pub server_muted: bool,
    /// Speaking now.
    pub speaking: bool,
}

/// The voice model.
#[derive(Debug, Clone, Default)]
pub struct VoiceState {
    me: Option<UserId>,
    phase: VoicePhase,
    self_muted: bool,
    deafened: bool,
    /// Whether I was muted before deafening (restored on undeafen, like Discord).
    muted_before_deafen: bool,
    input_mode: InputMode,
    ptt_held: bool,
    /// My own voice activity from the level meter.
    self_speaking: bool,
    rosters: HashMap<Uuid, Vec<Participant>>,
    /// Speaking as reported by the SFU (data channel), which is fresher than voice_state.
    speaking: HashSet<UserId>,
    volumes: HashMap<UserId, f32>,
}

/// Readable text for why I left voice.
pub fn left_reason_text(reason: LeftReason) -> &'static str {
    match reason {
        LeftReason::Left => "You left the voice channel.",
        LeftReason::Moved => "You joined another voice channel.",
        LeftReason::Disconnected => "A moderator disconnected you from voice.",
        LeftReason::Kicked => "You were kicked from the community.",
        LeftReason::Banned => "You were banned from the community.",
        LeftReason::PermissionLost => "You no longer have access to this voice channel.",
        LeftReason::NodeLost => "The voice server went away.",
        LeftReason::ConnectionLost => "Your voice connection was lost.",
    }
}

impl VoiceState {
    /// A model for user `me`.
    pub fn new(me: UserId) -> Self {
        Self {
            me: Some(me),
            ..Self::default()
        }
    }

    /// Me.
    pub fn me(&self) -> Option<UserId> {
        self.me
    }

    /// The phase.
    pub fn phase(&self) -> &VoicePhase {
        &self.phase
    }

    /// Self-muted (includes the mute implied by deafen).
    pub fn self_muted(&self) -> bool {
        self.self_muted
    }

    /// Deafened.
    pub fn deafened(&self) -> bool {
        self.deafened
    }

    /// Input mode.
    pub fn input_mode(&self) -> InputMode {
        self.input_mode
    }

    /// PTT key held.
    pub fn ptt_held(&self) -> bool {
        self.ptt_held
    }

    /// Whether the server muted me (from the roster).
    pub fn server_muted(&self) -> bool {
        let (Some(me), Some(channel)) = (self.me, self.phase.channel()) else {
            return false;
        };
        self.rosters
            .get(&channel)
            .and_then(|r| r.iter().find(|p| p.user_id == me))
            .is_some_and(|p| p.server_muted)
    }

    /// Whether my microphone is sent right now.
    pub fn transmitting(&self) -> bool {
        let can_speak = matches!(
            self.phase,
            VoicePhase::Connected {
                can_speak: true,
                ..
            }
        );
        let key_ok = match self.input_mode {
            InputMode::VoiceActivity => true,
            InputMode::PushToTalk => self.ptt_held,
        };
        can_speak && key_ok && !self.self_muted && !self.deafened && !self.server_muted()
    }

    /// Whether to light my own speaking indicator.
    pub fn self_speaking_shown(&self) -> bool {
        self.transmitting() && self.self_speaking
    }

    /// Join requested.
    pub fn joining(&mut self, channel_id: Uuid) {
        self.phase = VoicePhase::Joining { channel_id };
    }

    /// The server accepted.
    pub fn joined(&mut self, channel_id: Uuid, can_speak: bool) {
        self.phase = VoicePhase::Connected {
            channel_id,
            can_speak,
        };
    }

    /// Connection lost; rejoin in progress.
    pub fn reconnecting(&mut self) {
        if let Some(channel_id) = self.phase.channel() {
            self.phase = VoicePhase::Reconnecting { channel_id };
        }
    }

    /// The join was refused.
    pub fn refused(&mut self, channel_id: Uuid, reason: impl Into<String>) {
        self.phase = VoicePhase::Refused {
            channel_id,
            reason: reason.into(),
        };
        self.speaking.clear();
    }

    /// The server removed me (or I left).
    pub fn left(&mut self, channel_id: Uuid, reason: LeftReason) {
        self.phase = if reason == LeftReason::Left {
            VoicePhase::Idle
        } else {
            VoicePhase::Removed { channel_id, reason }
        };
        self.speaking.clear();
        self.ptt_held = false;
    }

    /// I left on purpose.
    pub fn leave(&mut self) {
        self.phase = VoicePhase::Idle;
        self.speaking.clear();
        self.ptt_held = false;
    }

    /// Toggle self-mute; returns the new value (what to tell signaling). Unmuting while
    /// deafened also undeafens, as users expect.
    pub fn set_muted(&mut self, muted: bool) -> bool {
        self.self_muted = muted;
        if !muted && self.deafened {
            self.deafened = false;
        }
        self.self_muted
    }

    /// Toggle deafen; deafening also mutes, undeafening restores the earlier mute.
    pub fn set_deafened(&mut self, deafened: bool) -> (bool, bool) {
        if deafened && !self.deafened {
            self.muted_before_deafen = self.self_muted;
            self.self_muted = true;
        } else if !deafened && self.deafened {
            self.self_muted = self.muted_before_deafen;
        }
        self.deafened = deafened;
        (self.self_muted, self.deafened)
    }

    /// Choose the input mode (releases PTT).
    pub fn set_input_mode(&mut self, mode: InputMode) {
        self.input_mode = mode;
        self.ptt_held = false;
    }

    /// PTT key went down / up.
    pub fn set_ptt(&mut self, held: bool) {
        self.ptt_held = held;
    }

    /// My level meter's voice activity.
    pub fn set_self_speaking(&mut self, speaking: bool) {
        self.self_speaking = speaking;
    }

    /// A full roster from signaling.
    pub fn apply_voice_state(&mut self, channel_id: Uuid, participants: &[VoiceParticipant]) {
        let roster = participants
            .iter()
            .map(|p| Participant {
                user_id: p.user_id,
                display_name: p.display_name.clone(),
                muted: p.muted,
                deafened: p.deafened,
                server_muted: p.server_muted,
                speaking: p.speaking,
            })
            .collect::<Vec<_>>();
        if roster.is_empty() {
            self.rosters.remove(&channel_id);
        } else {
            self.rosters.insert(channel_id, roster);
        }
    }

    /// Speaking on/off from the SFU's data channel.
    pub fn set_speaking(&mut self, user: UserId, on: bool) {
        if on {
            self.speaking.insert(user);
        } else {
            self.speaking.remove(&user);
        }
    }

    /// Whether `user` is speaking: the SFU's word for others, my own meter for me.
    pub fn is_speaking(&self, user: UserId) -> bool {
        if Some(user) == self.me {
            return self.self_speaking_shown();
        }
        self.speaking.contains(&user)
    }

    /// Who is in a channel, with speaking merged in.
    pub fn roster(&self, channel_id: Uuid) -> Vec<Participant> {
        self.rosters
            .get(&channel_id)
            .map(|r| {
                r.iter()
                    .map(|p| Participant {
                        speaking: self.is_speaking(p.user_id)
                            || (p.speaking && Some(p.user_id) != self.me),
                        ..p.clone()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Per-user volume (1.0 = 100 %).
    pub fn volume(&self, user: UserId) -> f32 {
        self.volumes.get(&user).copied().unwrap_or(1.0)
    }

    /// Set a user's volume (clamped to 0 ..= 200 %).
    pub fn set_volume(&mut self, user: UserId, gain: f32) -> f32 {
        let gain = gain.clamp(0.0, crate::voice::mixer::MAX_GAIN);
        self.volumes.insert(user, gain);
        gain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn participant(user: UserId, server_muted: bool) -> VoiceParticipant {
        VoiceParticipant {
            user_id: user,
            display_name: "x".into(),
            muted: false,
            deafened: false,
            server_muted,
            speaking: false,
        }
    }

    #[test]
    fn transmitting_follows_mute_deafen_ptt_and_permissions() {
        let me = UserId::new_random();
        let ch = Uuid::new_v4();
        let mut v = VoiceState::new(me);
        assert!(!v.transmitting(), "not in voice");
        v.joining(ch);
        assert!(!v.transmitting());
        v.joined(ch, true);
        assert!(v.transmitting());
        v.set_deafened(true);
        assert!(v.self_muted() && v.deafened() && !v.transmitting());
        v.set_deafened(false);
        assert!(
            !v.self_muted() && v.transmitting(),
            "undeafen restores the earlier mute state"
        );
        v.set_muted(true);
        v.set_deafened(true);
        v.set_deafened(false);
        assert!(v.self_muted(), "muted before deafen stays muted");
        v.set_deafened(true);
        v.set_muted(false);
        assert!(!v.deafened(), "unmuting undeafens");

        v.set_input_mode(InputMode::PushToTalk);
        assert!(!v.transmitting());
        v.set_ptt(true);
        assert!(v.transmitting());
        v.set_self_speaking(true);
        assert!(v.is_speaking(me));
        v.set_ptt(false);
        assert!(!v.transmitting() && !v.is_speaking(me));

        v.set_input_mode(InputMode::VoiceActivity);
        v.apply_voice_state(ch, &[participant(me, true)]);
        assert!(v.server_muted() && !v.transmitting(), "server mute wins");
        v.apply_voice_state(ch, &[participant(me, false)]);
        v.joined(ch, false);
        assert!(!v.transmitting(), "listen-only channel");
    }

    #[test]
    fn roster_speaking_volume_and_removal() {
        let me = UserId::new_random();
        let bob = UserId::new_random();
        let ch = Uuid::new_v4();
        let mut v = VoiceState::new(me);
        v.joined(ch, true);
        v.apply_voice_state(ch, &[participant(me, false), participant(bob, false)]);
        v.set_speaking(bob, true);
        let roster = v.roster(ch);
        assert_eq!(roster.len(), 2);
        assert!(roster.iter().find(|p| p.user_id == bob).unwrap().speaking);
        v.set_speaking(bob, false);
        assert!(!v.roster(ch).iter().any(|p| p.speaking));
        assert_eq!(v.set_volume(bob, 3.0), 2.0);
        assert_eq!(v.volume(bob), 2.0);
        assert_eq!(v.volume(me), 1.0);
        v.left(ch, LeftReason::Kicked);
        assert_eq!(
            v.phase(),
            &VoicePhase::Removed {
                channel_id: ch,
                reason: LeftReason::Kicked
            }
        );
        assert_eq!(
            left_reason_text(LeftReason::Banned),
            "You were banned from the community."
        );
        v.apply_voice_state(ch, &[]);
        assert!(v.roster(ch).is_empty());
    }
}
