//! Service-role queries for fan-out filtering and voice revocation, straight to Postgres.
//!
//! Why not PostgREST (`/rest/v1/rpc/*_as` with the service key): these checks run on every
//! event for every connected member, and a direct connection answers a prepared statement in
//! one round trip, where PostgREST adds an HTTP hop, a JWT verification and a transaction
//! with `set_config` calls per request. The process already needs `DATABASE_URL` for LISTEN.
//! Least privilege is kept: each pooled connection runs `SET ROLE service_role` right after
//! connecting, so these queries have exactly the service role's rights (the `*_as` functions
//! and the table grants of supabase/API.md), never the superuser's.
//!
//! A few connections are kept (tokio-postgres pipelines concurrent queries on one), each
//! reconnected on demand when it breaks, so a database restart costs errors, not a crash.

use std::sync::Arc;
use std::time::Duration;

use haven_proto::UserId;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Statement};
use tracing::warn;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A user's voice rights in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceAccess {
    pub can_connect: bool,
    pub can_speak: bool,
}

struct Conn {
    client: Client,
    can_view: Statement,
    has_perm: Statement,
    voice_access: Statement,
    viewers: Statement,
    message: Statement,
    memberships: Statement,
}

impl Conn {
    async fn connect(url: &str) -> Result<Self, DbError> {
        let (client, connection) =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(url, NoTls))
                .await
                .map_err(|_| DbError::Unavailable("connect timed out".into()))?
                .map_err(|e| DbError::Unavailable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "service database connection ended");
            }
        });
        client.batch_execute("set role service_role").await?;
        Ok(Self {
            can_view: client
                .prepare("select coalesce(public.can_view_channel_as($1, $2), false)")
                .await?,
            has_perm: client
                .prepare("select coalesce(public.user_has_permission_as($1, $2, $3), false)")
                .await?,
            voice_access: client
                .prepare(
                    "select coalesce((a ->> 'can_connect')::boolean, false), \
                            coalesce((a ->> 'can_speak')::boolean, false) \
                     from public.voice_access_as($1, $2) a",
                )
                .await?,
            viewers: client
                .prepare("select v from public.channel_viewers_as($1) v")
                .await?,
            message: client
                .prepare(
                    "select jsonb_build_object( \
                       'id', m.id, 'community_id', m.community_id, 'channel_id', m.channel_id, \
                       'author_id', m.author_id, 'author_username', p.username, \
                       'author_display_name', coalesce(cm.nickname, p.username), \
                       'content', m.content, 'reply_to', m.reply_to, \
                       'created_at', m.created_at, 'edited_at', m.edited_at), \
                       m.is_hidden, m.deleted_at is not null \
                     from public.messages m \
                     left join public.profiles p on p.id = m.author_id \
                     left join public.community_members cm \
                       on cm.community_id = m.community_id and cm.user_id = m.author_id \
                     where m.id = $1",
                )
                .await?,
            memberships: client
                .prepare("select community_id from public.community_members where user_id = $1")
                .await?,
            client,
        })
    }
}

/// A message as delivered in `message.created`/`message.updated` events.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub json: serde_json::Value,
    pub is_hidden: bool,
    pub deleted: bool,
}

/// A small pool of service-role connections.
pub struct ServiceDb {
    url: String,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for ServiceDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDb")
            .field("connections", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl ServiceDb {
    /// A pool of `size` lazily opened connections to `url`.
    pub fn new(url: String, size: usize) -> Self {
        Self {
            url,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: Default::default(),
        }
    }

    async fn conn(&self) -> Result<Arc<Conn>, DbError> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.client.is_closed() {
                return Ok(Arc::clone(c));
            }
        }
        let c = Arc::new(Conn::connect(&self.url).await?);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    async fn query(
        &self,
        pick: impl Fn(&Conn) -> &Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, DbError> {
        let c = self.conn().await?;
        tokio::time::timeout(QUERY_TIMEOUT, c.client.query(pick(&c), params))
            .await
            .map_err(|_| DbError::Unavailable("query timed out".into()))?
            .map_err(DbError::from)
    }

    /// Checks the connection (for `/healthz`).
    pub async fn ping(&self) -> Result<(), DbError> {
        let c = self.conn().await?;
        c.client.simple_query("select 1").await?;
        Ok(())
    }

    pub async fn can_view_channel_as(&self, user: UserId, channel: Uuid) -> Result<bool, DbError> {
        let rows = self.query(|c| &c.can_view, &[&user.0, &channel]).await?;
        Ok(rows.first().map(|r| r.get::<_, bool>(0)).unwrap_or(false))
    }

    pub async fn user_has_permission_as(
        &self,
        user: UserId,
        community: Uuid,
        key: &str,
    ) -> Result<bool, DbError> {
        let rows = self
            .query(|c| &c.has_perm, &[&user.0, &community, &key])
            .await?;
        Ok(rows.first().map(|r| r.get::<_, bool>(0)).unwrap_or(false))
    }

    pub async fn voice_access_as(
        &self,
        user: UserId,
        channel: Uuid,
    ) -> Result<VoiceAccess, DbError> {
        let rows = self
            .query(|c| &c.voice_access, &[&user.0, &channel])
            .await?;
        Ok(rows
            .first()
            .map(|r| VoiceAccess {
                can_connect: r.get(0),
                can_speak: r.get(1),
            })
            .unwrap_or(VoiceAccess {
                can_connect: false,
                can_speak: false,
            }))
    }

    /// Members who can view the channel.
    pub async fn channel_viewers_as(&self, channel: Uuid) -> Result<Vec<UserId>, DbError> {
        let rows = self.query(|c| &c.viewers, &[&channel]).await?;
        Ok(rows.iter().map(|r| UserId(r.get::<_, Uuid>(0))).collect())
    }

    pub async fn message(&self, id: Uuid) -> Result<Option<MessageRow>, DbError> {
        let rows = self.query(|c| &c.message, &[&id]).await?;
        Ok(rows.first().map(|r| MessageRow {
            json: r.get(0),
            is_hidden: r.get(1),
            deleted: r.get(2),
        }))
    }

    pub async fn communities_of(&self, user: UserId) -> Result<Vec<Uuid>, DbError> {
        let rows = self.query(|c| &c.memberships, &[&user.0]).await?;
        Ok(rows.iter().map(|r| r.get::<_, Uuid>(0)).collect())
    }
}
