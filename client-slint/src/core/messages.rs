//! Chat messages: history with keyset paging, send/edit/delete/reply, and a per-channel
//! store that merges history pages, my own sends and live events from signaling.
//!
//! The same message can arrive several ways (my send's reply, the live `message.created`
//! echo, a history page fetched after a reconnect), in any order. The store keys messages by
//! `(created_at, id)` — the server's keyset order — and dedups by id, so every path converges
//! on one ordered list whatever the arrival order.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use haven_supabase::{Message, MessageCursor, MessageView};
use serde::Deserialize;
use uuid::Uuid;

use crate::core::error::CoreError;
use crate::core::session::SessionManager;

/// Default history page size (the server clamps to 1..=100).
pub const PAGE_SIZE: i32 = 50;

/// A message as the client shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Message id.
    pub id: Uuid,
    /// Channel.
    pub channel_id: Uuid,
    /// Author (None once the account is deleted).
    pub author_id: Option<Uuid>,
    /// Nickname, else username, as the server resolved it.
    pub author_name: String,
    /// Text.
    pub content: String,
    /// The message this replies to.
    pub reply_to: Option<Uuid>,
    /// Sent at (server clock).
    pub created_at: DateTime<Utc>,
    /// Last edit.
    pub edited_at: Option<DateTime<Utc>>,
}

impl ChatMessage {
    /// From a history row.
    pub fn from_view(v: MessageView) -> Self {
        Self {
            id: v.id,
            channel_id: v.channel_id,
            author_id: v.author_id,
            author_name: v
                .author_display_name
                .or(v.author_username)
                .unwrap_or_else(|| "deleted user".into()),
            content: v.content,
            reply_to: v.reply_to,
            created_at: v.created_at,
            edited_at: v.edited_at,
        }
    }

    /// From a `send_message`/`edit_message` result, which has no display name: the caller
    /// knows its own.
    pub fn from_row(m: Message, author_name: &str) -> Self {
        Self {
            id: m.id,
            channel_id: m.channel_id,
            author_id: m.author_id,
            author_name: author_name.to_string(),
            content: m.content,
            reply_to: m.reply_to,
            created_at: m.created_at,
            edited_at: m.edited_at,
        }
    }

    /// The keyset cursor continuing history below this message.
    pub fn cursor(&self) -> MessageCursor {
        MessageCursor {
            before_created_at: self.created_at,
            before_id: self.id,
        }
    }

    #[cfg(test)]
    pub(crate) fn test(author: Uuid, content: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            channel_id: Uuid::nil(),
            author_id: Some(author),
            author_name: "someone".into(),
            content: content.into(),
            reply_to: None,
            created_at: Utc::now(),
            edited_at: None,
        }
    }
}

/// A change signaling pushed for a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveMessageEvent {
    /// New message (content included by signaling, filtered to what I may read).
    Created(ChatMessage),
    /// Edited message.
    Updated(ChatMessage),
    /// Deleted (or hidden) message.
    Deleted {
        /// Channel.
        channel_id: Uuid,
        /// Message.
        message_id: Uuid,
    },
}

/// The lenient shape of signaling's `message` payload: whatever of the row it carries.
#[derive(Deserialize)]
struct LivePayload {
    id: Uuid,
    channel_id: Uuid,
    #[serde(default)]
    author_id: Option<Uuid>,
    #[serde(default)]
    author_display_name: Option<String>,
    #[serde(default)]
    author_username: Option<String>,
    content: String,
    #[serde(default)]
    reply_to: Option<Uuid>,
    created_at: DateTime<Utc>,
    #[serde(default)]
    edited_at: Option<DateTime<Utc>>,
    #[serde(default)]
    deleted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    is_hidden: bool,
}

impl LiveMessageEvent {
    /// Interpret a signaling `event`. `None` for other kinds or a payload we cannot use
    /// (never a panic: the payload comes from the network).
    pub fn from_event(
        kind: &str,
        channel_id: Option<Uuid>,
        message_id: Option<Uuid>,
        message: Option<&serde_json::Value>,
    ) -> Option<Self> {
        let parse = || -> Option<(ChatMessage, bool)> {
            let p: LivePayload = serde_json::from_value(message?.clone()).ok()?;
            let gone = p.deleted_at.is_some() || p.is_hidden;
            let msg = ChatMessage {
                id: p.id,
                channel_id: p.channel_id,
                author_id: p.author_id,
                author_name: p
                    .author_display_name
                    .or(p.author_username)
                    .unwrap_or_else(|| "someone".into()),
                content: p.content,
                reply_to: p.reply_to,
                created_at: p.created_at,
                edited_at: p.edited_at,
            };
            Some((msg, gone))
        };
        match kind {
            "message.created" | "message.updated" => {
                let (msg, gone) = parse()?;
                if gone {
                    return Some(Self::Deleted {
                        channel_id: msg.channel_id,
                        message_id: msg.id,
                    });
                }
                Some(if kind == "message.created" {
                    Self::Created(msg)
                } else {
                    Self::Updated(msg)
                })
            }
            "message.deleted" => Some(Self::Deleted {
                channel_id: channel_id?,
                message_id: message_id?,
            }),
            _ => None,
        }
    }

    /// The channel it concerns.
    pub fn channel_id(&self) -> Uuid {
        match self {
            Self::Created(m) | Self::Updated(m) => m.channel_id,
            Self::Deleted { channel_id, .. } => *channel_id,
        }
    }
}

type Key = (DateTime<Utc>, Uuid);

/// The messages of one channel that the client holds, oldest first.
#[derive(Debug, Clone)]
pub struct MessageStore {
    channel_id: Uuid,
    ordered: BTreeMap<Key, ChatMessage>,
    keys: HashMap<Uuid, Key>,
    /// Ids deleted while we held them or before they arrived: a late `created` echo or an
    /// old history page must not resurrect them.
    deleted: std::collections::HashSet<Uuid>,
    reached_start: bool,
}

impl MessageStore {
    /// An empty store for `channel_id`.
    pub fn new(channel_id: Uuid) -> Self {
        Self {
            channel_id,
            ordered: BTreeMap::new(),
            keys: HashMap::new(),
            deleted: Default::default(),
            reached_start: false,
        }
    }

    /// The channel.
    pub fn channel_id(&self) -> Uuid {
        self.channel_id
    }

    /// Messages, oldest first.
    pub fn messages(&self) -> impl DoubleEndedIterator<Item = &ChatMessage> + ExactSizeIterator {
        self.ordered.values()
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// A message by id.
    pub fn get(&self, id: Uuid) -> Option<&ChatMessage> {
        self.keys.get(&id).and_then(|k| self.ordered.get(k))
    }

    /// Whether the oldest message of the channel has been loaded.
    pub fn reached_start(&self) -> bool {
        self.reached_start
    }

    /// Where the next (older) history page starts.
    pub fn older_cursor(&self) -> Option<MessageCursor> {
        self.ordered.values().next().map(ChatMessage::cursor)
    }

    /// Insert or replace by id. An edit never goes back to older content: a replacement
    /// with an older `edited_at` than what we hold is ignored.
    pub fn upsert(&mut self, msg: ChatMessage) -> bool {
        if msg.channel_id != self.channel_id || self.deleted.contains(&msg.id) {
            return false;
        }
        if let Some(key) = self.keys.get(&msg.id).copied() {
            if let Some(existing) = self.ordered.get(&key) {
                if existing.edited_at > msg.edited_at || *existing == msg {
                    return false;
                }
            }
            self.ordered.remove(&key);
        }
        let key = (msg.created_at, msg.id);
        self.keys.insert(msg.id, key);
        self.ordered.insert(key, msg);
        true
    }

    /// Remove by id (and remember it, so it does not come back).
    pub fn remove(&mut self, id: Uuid) -> bool {
        self.deleted.insert(id);
        match self.keys.remove(&id) {
            Some(key) => self.ordered.remove(&key).is_some(),
            None => false,
        }
    }

    /// Merge an older history page (newest first, as the server returns it). A page
    /// shorter than `limit` means the start of the channel was reached.
    pub fn merge_page(&mut self, page: Vec<MessageView>, limit: i32) -> usize {
        if (page.len() as i64) < i64::from(limit) {
            self.reached_start = true;
        }
        page.into_iter()
            .map(ChatMessage::from_view)
            .filter(|m| self.upsert(m.clone()))
            .count()
    }

    /// Apply a live event; returns whether anything changed. Events for other channels are
    /// ignored.
    pub fn apply(&mut self, event: &LiveMessageEvent) -> bool {
        if event.channel_id() != self.channel_id {
            return false;
        }
        match event {
            LiveMessageEvent::Created(m) | LiveMessageEvent::Updated(m) => self.upsert(m.clone()),
            LiveMessageEvent::Deleted { message_id, .. } => self.remove(*message_id),
        }
    }
}

/// Message operations as the signed-in user.
#[derive(Debug, Clone)]
pub struct Messages {
    session: SessionManager,
}

impl Messages {
    /// Operations for the user of `session`.
    pub fn new(session: SessionManager) -> Self {
        Self { session }
    }

    /// One page of history (newest first) strictly older than `before`.
    pub async fn page(
        &self,
        channel_id: Uuid,
        before: Option<MessageCursor>,
        limit: i32,
    ) -> Result<Vec<MessageView>, CoreError> {
        let token = self.session.access_token().await?;
        Ok(self
            .session
            .api()
            .as_user(&token)
            .list_channel_messages(channel_id, Some(limit), before)
            .await?)
    }

    /// Load the next older page into `store`; returns how many new messages it added.
    pub async fn load_older(
        &self,
        store: &mut MessageStore,
        limit: i32,
    ) -> Result<usize, CoreError> {
        if store.reached_start() {
            return Ok(0);
        }
        let page = self
            .page(store.channel_id(), store.older_cursor(), limit)
            .await?;
        Ok(store.merge_page(page, limit))
    }

    /// Fetch the newest page again (after a reconnect, to fill what live events missed).
    pub async fn refresh_latest(&self, store: &mut MessageStore) -> Result<usize, CoreError> {
        let page = self.page(store.channel_id(), None, PAGE_SIZE).await?;
        let added = page
            .into_iter()
            .map(ChatMessage::from_view)
            .filter(|m| store.upsert(m.clone()))
            .count();
        Ok(added)
    }

    /// Send (optionally as a reply); `my_name` labels it until the live echo replaces it.
    pub async fn send(
        &self,
        channel_id: Uuid,
        content: &str,
        reply_to: Option<Uuid>,
        my_name: &str,
    ) -> Result<ChatMessage, CoreError> {
        let token = self.session.access_token().await?;
        let row = self
            .session
            .api()
            .as_user(&token)
            .send_message(channel_id, content, reply_to)
            .await?;
        Ok(ChatMessage::from_row(row, my_name))
    }

    /// Edit my message.
    pub async fn edit(
        &self,
        message_id: Uuid,
        content: &str,
        my_name: &str,
    ) -> Result<ChatMessage, CoreError> {
        let token = self.session.access_token().await?;
        let row = self
            .session
            .api()
            .as_user(&token)
            .edit_message(message_id, content)
            .await?;
        Ok(ChatMessage::from_row(row, my_name))
    }

    /// Delete a message (mine, or any with `manage_messages`).
    pub async fn delete(&self, message_id: Uuid) -> Result<(), CoreError> {
        let token = self.session.access_token().await?;
        Ok(self
            .session
            .api()
            .as_user(&token)
            .delete_message(message_id)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn msg(channel: Uuid, at: DateTime<Utc>, content: &str) -> ChatMessage {
        ChatMessage {
            id: Uuid::new_v4(),
            channel_id: channel,
            author_id: None,
            author_name: "a".into(),
            content: content.into(),
            reply_to: None,
            created_at: at,
            edited_at: None,
        }
    }

    #[test]
    fn store_orders_dedups_and_never_resurrects() {
        let ch = Uuid::new_v4();
        let t0 = Utc::now();
        let mut store = MessageStore::new(ch);
        let m2 = msg(ch, t0 + Duration::seconds(2), "two");
        let m1 = msg(ch, t0 + Duration::seconds(1), "one");
        let m3 = msg(ch, t0 + Duration::seconds(3), "three");
        assert!(store.apply(&LiveMessageEvent::Created(m3.clone())));
        assert!(store.upsert(m1.clone()));
        assert!(store.upsert(m2.clone()));
        // The live echo of something we already hold changes nothing visible.
        store.apply(&LiveMessageEvent::Created(m2.clone()));
        assert_eq!(
            store
                .messages()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>(),
            ["one", "two", "three"]
        );
        assert_eq!(store.older_cursor().unwrap().before_id, m1.id);

        let mut edited = m2.clone();
        edited.content = "two (edited)".into();
        edited.edited_at = Some(t0 + Duration::seconds(10));
        assert!(store.apply(&LiveMessageEvent::Updated(edited.clone())));
        // A stale copy (from an old page) does not undo the edit.
        assert!(!store.upsert(m2.clone()));
        assert_eq!(store.get(m2.id).unwrap().content, "two (edited)");

        assert!(store.apply(&LiveMessageEvent::Deleted {
            channel_id: ch,
            message_id: m1.id
        }));
        assert!(!store.upsert(m1.clone()), "deleted messages stay deleted");
        assert_eq!(store.len(), 2);
        // Other channels' events are ignored.
        assert!(!store.apply(&LiveMessageEvent::Created(msg(
            Uuid::new_v4(),
            t0,
            "elsewhere"
        ))));
    }

    #[test]
    fn live_events_parse_leniently_and_never_panic() {
        let ch = Uuid::new_v4();
        let id = Uuid::new_v4();
        let payload = serde_json::json!({
            "id": id, "channel_id": ch, "community_id": Uuid::nil(), "author_id": null,
            "author_display_name": "alice", "content": "hi", "created_at": "2026-11-25T11:00:00Z",
            "extra_field": [1, 2, 3]
        });
        match LiveMessageEvent::from_event("message.created", Some(ch), Some(id), Some(&payload)) {
            Some(LiveMessageEvent::Created(m)) => {
                assert_eq!((m.id, m.author_name.as_str()), (id, "alice"))
            }
            other => panic!("{other:?}"),
        }
        let hidden = serde_json::json!({"id": id, "channel_id": ch, "content": "x",
            "created_at": "2026-11-25T11:00:00Z", "is_hidden": true});
        assert!(matches!(
            LiveMessageEvent::from_event("message.updated", None, None, Some(&hidden)),
            Some(LiveMessageEvent::Deleted { .. })
        ));
        assert_eq!(
            LiveMessageEvent::from_event("message.deleted", Some(ch), Some(id), None),
            Some(LiveMessageEvent::Deleted {
                channel_id: ch,
                message_id: id
            })
        );
        for junk in [
            serde_json::json!(null),
            serde_json::json!({"id": "nope"}),
            serde_json::json!([1]),
        ] {
            assert!(LiveMessageEvent::from_event(
                "message.created",
                Some(ch),
                Some(id),
                Some(&junk)
            )
            .is_none());
        }
        assert!(LiveMessageEvent::from_event("message.deleted", None, Some(id), None).is_none());
        assert!(LiveMessageEvent::from_event("member.joined", Some(ch), None, None).is_none());
    }

    #[test]
    fn signalings_documented_event_frame_parses() {
        // The `message.created` example of signaling/docs/protocol.md, verbatim.
        let frame = r#"{"v":1,"type":"event","kind":"message.created","community_id":"e97cb219-740e-44cb-94fd-6930b657ea9a","channel_id":"0b7e4c1a-2f7d-4e55-9a0c-3d1f6e8b2a44","message_id":"7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f","message":{"id":"7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f","community_id":"e97cb219-740e-44cb-94fd-6930b657ea9a","channel_id":"0b7e4c1a-2f7d-4e55-9a0c-3d1f6e8b2a44","author_id":"22222222-2222-4222-8222-222222222222","author_username":"alice","author_display_name":"alice","content":"Hi everyone","reply_to":null,"created_at":"2026-11-25T11:50:00.123456+00:00","edited_at":null}}"#;
        let msg = haven_proto::client::ServerMessage::decode(frame).unwrap();
        let haven_proto::client::ServerEvent::Event {
            kind,
            channel_id,
            message_id,
            message,
            ..
        } = msg.body
        else {
            panic!("not an event")
        };
        match LiveMessageEvent::from_event(&kind, channel_id, message_id, message.as_ref()) {
            Some(LiveMessageEvent::Created(m)) => {
                assert_eq!(
                    (m.author_name.as_str(), m.content.as_str()),
                    ("alice", "Hi everyone")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_pages_mark_the_start() {
        let mut store = MessageStore::new(Uuid::new_v4());
        assert_eq!(store.merge_page(Vec::new(), 50), 0);
        assert!(store.reached_start());
    }
}
