//! What the UI may offer: my permission keys in a community plus per-channel flags. Only a
//! hint for which controls to show; the server decides every action again.

use std::collections::{HashMap, HashSet};

use haven_supabase::ChannelSummary;
use uuid::Uuid;

use crate::core::channels::ChannelTree;
use crate::core::error::CoreError;
use crate::core::messages::ChatMessage;
use crate::core::session::SessionManager;

/// Per-channel flags as `list_channels` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelFlags {
    /// May send messages.
    pub can_send: bool,
    /// May join voice.
    pub can_connect: bool,
    /// May speak in voice.
    pub can_speak: bool,
}

/// My permissions in one community at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermissionSnapshot {
    /// The community.
    pub community_id: Uuid,
    /// My permission keys (`my_permissions`; the owner has all).
    pub keys: HashSet<String>,
    /// Flags per visible channel.
    pub channels: HashMap<Uuid, ChannelFlags>,
}

impl PermissionSnapshot {
    /// From `my_permissions` and the channel list.
    pub fn new<'a>(
        community_id: Uuid,
        keys: Vec<String>,
        channels: impl IntoIterator<Item = &'a ChannelSummary>,
    ) -> Self {
        Self {
            community_id,
            keys: keys.into_iter().collect(),
            channels: channels
                .into_iter()
                .map(|c| {
                    (
                        c.id,
                        ChannelFlags {
                            can_send: c.can_send,
                            can_connect: c.can_connect,
                            can_speak: c.can_speak,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Fetch for `community_id` (the tree gives the channel flags).
    pub async fn load(
        session: &SessionManager,
        community_id: Uuid,
        tree: &ChannelTree,
    ) -> Result<Self, CoreError> {
        let token = session.access_token().await?;
        let keys = session
            .api()
            .as_user(&token)
            .my_permissions(community_id)
            .await?;
        Ok(Self::new(community_id, keys, tree.channels()))
    }

    /// Whether I hold `key`.
    pub fn has(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Show "create invite".
    pub fn can_create_invites(&self) -> bool {
        self.has("manage_invites")
    }

    /// Show the composer in `channel`.
    pub fn can_send_in(&self, channel: Uuid) -> bool {
        self.channels.get(&channel).is_some_and(|f| f.can_send)
    }

    /// Enable "join voice" for `channel`.
    pub fn can_join_voice(&self, channel: Uuid) -> bool {
        self.channels.get(&channel).is_some_and(|f| f.can_connect)
    }

    /// Offer a send track (and the mic controls) in `channel`.
    pub fn can_speak_in(&self, channel: Uuid) -> bool {
        self.channels.get(&channel).is_some_and(|f| f.can_speak)
    }

    /// Show "edit" on a message: authors only.
    pub fn can_edit(&self, message: &ChatMessage, me: Uuid) -> bool {
        message.author_id == Some(me)
    }

    /// Show "delete" on a message: author, or `manage_messages` (the owner holds every key).
    pub fn can_delete(&self, message: &ChatMessage, me: Uuid) -> bool {
        message.author_id == Some(me) || self.has("manage_messages")
    }

    /// Show the server-mute control on others in voice.
    pub fn can_server_mute(&self) -> bool {
        self.has("mute_members")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_follow_keys_and_flags() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        let chan = Uuid::new_v4();
        let mut snap = PermissionSnapshot::new(Uuid::nil(), vec!["send_messages".into()], []);
        snap.channels.insert(
            chan,
            ChannelFlags {
                can_send: true,
                can_connect: true,
                can_speak: false,
            },
        );
        let mine = ChatMessage::test(me, "hi");
        let theirs = ChatMessage::test(other, "yo");
        assert!(snap.can_edit(&mine, me) && !snap.can_edit(&theirs, me));
        assert!(snap.can_delete(&mine, me) && !snap.can_delete(&theirs, me));
        assert!(!snap.can_create_invites());
        assert!(snap.can_send_in(chan) && snap.can_join_voice(chan) && !snap.can_speak_in(chan));
        assert!(!snap.can_send_in(Uuid::new_v4()));
        snap.keys.insert("manage_messages".into());
        assert!(snap.can_delete(&theirs, me));
    }
}
