//! The channel sidebar's data: the channels I may see (`list_channels` already filters by
//! permission), grouped under their channel groups, text and voice apart.

use haven_supabase::{ChannelGroup, ChannelKind, ChannelSummary};
use uuid::Uuid;

use crate::core::error::CoreError;
use crate::core::session::SessionManager;

/// One section of the sidebar: ungrouped channels (no `group`) or one channel group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSection {
    /// The group, or `None` for channels outside any group.
    pub group: Option<ChannelGroup>,
    /// Text channels, in server order.
    pub text: Vec<ChannelSummary>,
    /// Voice channels, in server order.
    pub voice: Vec<ChannelSummary>,
}

/// All visible channels of a community, grouped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelTree {
    /// Ungrouped section first (if any), then groups by position.
    pub sections: Vec<ChannelSection>,
}

impl ChannelTree {
    /// Group `channels` (in `list_channels` order) under `groups`. Channels naming a group I
    /// cannot see (or that vanished meanwhile) go to the ungrouped section rather than
    /// disappearing.
    pub fn build(channels: Vec<ChannelSummary>, mut groups: Vec<ChannelGroup>) -> Self {
        groups.sort_by(|a, b| {
            a.position
                .cmp(&b.position)
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut ungrouped = ChannelSection {
            group: None,
            text: Vec::new(),
            voice: Vec::new(),
        };
        let mut sections: Vec<ChannelSection> = groups
            .into_iter()
            .map(|g| ChannelSection {
                group: Some(g),
                text: Vec::new(),
                voice: Vec::new(),
            })
            .collect();
        for channel in channels {
            let section = channel
                .group_id
                .and_then(|gid| {
                    sections
                        .iter_mut()
                        .find(|s| s.group.as_ref().is_some_and(|g| g.id == gid))
                })
                .unwrap_or(&mut ungrouped);
            match channel.kind {
                ChannelKind::Text => section.text.push(channel),
                ChannelKind::Voice => section.voice.push(channel),
            }
        }
        sections.retain(|s| !s.text.is_empty() || !s.voice.is_empty());
        if !ungrouped.text.is_empty() || !ungrouped.voice.is_empty() {
            sections.insert(0, ungrouped);
        }
        Self { sections }
    }

    /// Every channel, in sidebar order.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelSummary> {
        self.sections
            .iter()
            .flat_map(|s| s.text.iter().chain(s.voice.iter()))
    }

    /// A channel by id.
    pub fn find(&self, id: Uuid) -> Option<&ChannelSummary> {
        self.channels().find(|c| c.id == id)
    }

    /// The first text channel (what to open when entering a community).
    pub fn first_text(&self) -> Option<&ChannelSummary> {
        self.channels().find(|c| c.kind == ChannelKind::Text)
    }

    /// A voice channel by name (`Lounge`).
    pub fn voice_named(&self, name: &str) -> Option<&ChannelSummary> {
        self.channels()
            .find(|c| c.kind == ChannelKind::Voice && c.name == name)
    }
}

/// Fetch the tree for a community.
pub async fn load_channel_tree(
    session: &SessionManager,
    community_id: Uuid,
) -> Result<ChannelTree, CoreError> {
    let token = session.access_token().await?;
    let api = session.api().as_user(&token);
    let channels = api.list_channels(community_id).await?;
    let groups = api.list_channel_groups(community_id).await?;
    Ok(ChannelTree::build(channels, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str, kind: ChannelKind, group: Option<Uuid>) -> ChannelSummary {
        ChannelSummary {
            id: Uuid::new_v4(),
            community_id: Uuid::nil(),
            name: name.into(),
            topic: None,
            kind,
            position: 0,
            group_id: group,
            can_send: true,
            can_connect: true,
            can_speak: true,
        }
    }

    #[test]
    fn channels_are_grouped_text_and_voice_apart() {
        let g1 = ChannelGroup {
            id: Uuid::new_v4(),
            community_id: Uuid::nil(),
            name: "Games".into(),
            position: 1,
        };
        let g0 = ChannelGroup {
            id: Uuid::new_v4(),
            community_id: Uuid::nil(),
            name: "Info".into(),
            position: 0,
        };
        let empty = ChannelGroup {
            id: Uuid::new_v4(),
            community_id: Uuid::nil(),
            name: "Empty".into(),
            position: 2,
        };
        let tree = ChannelTree::build(
            vec![
                channel("general", ChannelKind::Text, None),
                channel("Lounge", ChannelKind::Voice, None),
                channel("rules", ChannelKind::Text, Some(g0.id)),
                channel("lfg", ChannelKind::Text, Some(g1.id)),
                channel("Raid", ChannelKind::Voice, Some(g1.id)),
                channel("orphan", ChannelKind::Text, Some(Uuid::new_v4())),
            ],
            vec![g1.clone(), g0.clone(), empty],
        );
        let names: Vec<Option<&str>> = tree
            .sections
            .iter()
            .map(|s| s.group.as_ref().map(|g| g.name.as_str()))
            .collect();
        assert_eq!(names, [None, Some("Info"), Some("Games")]);
        assert_eq!(
            tree.sections[0]
                .text
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["general", "orphan"]
        );
        assert_eq!(tree.sections[0].voice[0].name, "Lounge");
        assert_eq!(tree.sections[2].voice[0].name, "Raid");
        assert_eq!(tree.first_text().map(|c| c.name.as_str()), Some("general"));
        assert!(tree.voice_named("Raid").is_some());
    }
}
