//! SQL against the shim's `auth.users`, `auth.sessions` and `auth.refresh_tokens`.
//!
//! Accounts live in `auth.users` (not a table of our own) so the migrations' profile trigger
//! fires on signup exactly as it does on a hosted project, and the seed's users can sign in.
//! Rotation and reuse detection run in one transaction with the token row locked, so two
//! concurrent refreshes with the same token cannot both succeed.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

/// Database failures the handlers tell apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `users_email_key` was violated.
    #[error("email already registered")]
    EmailTaken,
    /// Anything else from the database (including errors raised by triggers on auth.users).
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// A row of `auth.users`.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// Primary key; the `sub` claim.
    pub id: Uuid,
    /// Audience (`authenticated`).
    pub aud: String,
    /// Postgres role of the user's tokens.
    pub role: String,
    /// Email (stored lower-case).
    pub email: String,
    /// bcrypt hash.
    pub encrypted_password: Option<String>,
    /// When the email counts as confirmed (signup time: autoconfirm).
    pub email_confirmed_at: Option<DateTime<Utc>>,
    /// `raw_app_meta_data`.
    pub app_metadata: serde_json::Value,
    /// `raw_user_meta_data`.
    pub user_metadata: serde_json::Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last password sign-in.
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// Anonymous user (never, in the subset).
    pub is_anonymous: bool,
}

/// The `auth.users` columns [`UserRecord`] reads, as a literal so queries stay `&'static str`
/// (sqlx refuses dynamically built SQL).
macro_rules! user_columns {
    () => {
        "id, aud, role, email, encrypted_password, email_confirmed_at, raw_app_meta_data, \
         raw_user_meta_data, created_at, updated_at, last_sign_in_at, is_anonymous"
    };
}

impl UserRecord {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let now = Utc::now();
        Ok(Self {
            id: row.try_get("id")?,
            aud: row
                .try_get::<Option<String>, _>("aud")?
                .unwrap_or_else(|| "authenticated".into()),
            role: row
                .try_get::<Option<String>, _>("role")?
                .unwrap_or_else(|| "authenticated".into()),
            email: row
                .try_get::<Option<String>, _>("email")?
                .unwrap_or_default(),
            encrypted_password: row.try_get("encrypted_password")?,
            email_confirmed_at: row.try_get("email_confirmed_at")?,
            app_metadata: row
                .try_get::<Option<serde_json::Value>, _>("raw_app_meta_data")?
                .unwrap_or_else(|| serde_json::json!({})),
            user_metadata: row
                .try_get::<Option<serde_json::Value>, _>("raw_user_meta_data")?
                .unwrap_or_else(|| serde_json::json!({})),
            created_at: row
                .try_get::<Option<DateTime<Utc>>, _>("created_at")?
                .unwrap_or(now),
            updated_at: row
                .try_get::<Option<DateTime<Utc>>, _>("updated_at")?
                .unwrap_or(now),
            last_sign_in_at: row.try_get("last_sign_in_at")?,
            is_anonymous: row.try_get("is_anonymous")?,
        })
    }
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Lower-cased email.
    pub email: String,
    /// bcrypt hash.
    pub password_hash: String,
    /// `raw_user_meta_data` (signup `data`).
    pub user_metadata: serde_json::Value,
    /// `raw_app_meta_data`.
    pub app_metadata: serde_json::Value,
    /// Mark confirmed now (signup autoconfirm, admin `email_confirm`).
    pub confirmed: bool,
    /// Set `last_sign_in_at` (signup signs the user in).
    pub signed_in: bool,
}

/// A session and its current refresh-token lineage.
#[derive(Debug, Clone, Copy)]
pub struct SessionRecord {
    /// `session_id` claim.
    pub id: Uuid,
    /// When the user authenticated (the `amr` timestamp).
    pub created_at: DateTime<Utc>,
}

/// Outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    /// The token was current: it is now spent and the new one is the session's token.
    Rotated {
        /// The session's user.
        user: Box<UserRecord>,
        /// The session, unchanged.
        session: SessionRecord,
    },
    /// No such token.
    NotFound,
    /// The token was already spent; its whole session has been revoked.
    Reused,
}

/// Which sessions a logout ends (GoTrue's `scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// Every session of the user (GoTrue's default).
    Global,
    /// Only the token's session.
    Local,
    /// Every session but the token's.
    Others,
}

/// Auth database access over the owner's pool.
#[derive(Debug, Clone)]
pub struct AuthStore {
    pool: PgPool,
}

impl AuthStore {
    /// Wrap a pool connected as the database owner.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Look a user up by email, case-insensitively (the unique index is on `lower(email)`).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = concat!(
            "select ",
            user_columns!(),
            " from auth.users where lower(email) = lower($1)"
        );
        let row = sqlx::query(sql)
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(UserRecord::from_row).transpose()?)
    }

    /// Look a user up by id.
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
        let sql = concat!("select ", user_columns!(), " from auth.users where id = $1");
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(UserRecord::from_row).transpose()?)
    }

    /// Create a user, optionally with a first session and refresh token, in one transaction:
    /// a trigger failure (say, the profile trigger refusing a username) leaves nothing behind.
    pub async fn create_user(
        &self,
        new: &NewUser,
        first_refresh_digest: Option<&str>,
    ) -> Result<(UserRecord, Option<SessionRecord>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = concat!(
            "insert into auth.users (aud, role, email, encrypted_password, email_confirmed_at, \
                 raw_app_meta_data, raw_user_meta_data, last_sign_in_at) \
             values ('authenticated', 'authenticated', $1, $2, \
                 case when $3 then now() end, $4, $5, case when $6 then now() end) \
             returning ",
            user_columns!()
        );
        let row = sqlx::query(sql)
            .bind(&new.email)
            .bind(&new.password_hash)
            .bind(new.confirmed)
            .bind(&new.app_metadata)
            .bind(&new.user_metadata)
            .bind(new.signed_in)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.constraint() == Some("users_email_key") => {
                    StoreError::EmailTaken
                }
                _ => StoreError::Db(e),
            })?;
        let user = UserRecord::from_row(&row)?;
        let session = match first_refresh_digest {
            Some(digest) => Some(start_session(&mut tx, user.id, digest).await?),
            None => None,
        };
        tx.commit().await?;
        Ok((user, session))
    }

    /// Record a password sign-in and open a session with its first refresh token.
    pub async fn sign_in(
        &self,
        user_id: Uuid,
        refresh_digest: &str,
    ) -> Result<SessionRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("update auth.users set last_sign_in_at = now() where id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let session = start_session(&mut tx, user_id, refresh_digest).await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Spend the refresh token with digest `presented` and make `next` the session's token.
    ///
    /// A token that was already spent means it leaked or a client raced itself; either way the
    /// session is ended (GoTrue's reuse detection), so a stolen token buys at most one refresh.
    pub async fn rotate(&self, presented: &str, next: &str) -> Result<Rotation, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "select t.user_id, t.session_id, t.revoked, s.created_at as session_created_at \
             from auth.refresh_tokens t join auth.sessions s on s.id = t.session_id \
             where t.token = $1 for update of t, s",
        )
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Rotation::NotFound);
        };
        let user_id: Uuid = row.try_get("user_id")?;
        let session = SessionRecord {
            id: row.try_get("session_id")?,
            created_at: row.try_get("session_created_at")?,
        };
        if row.try_get::<bool, _>("revoked")? {
            // Cascades to every refresh token of the session.
            sqlx::query("delete from auth.sessions where id = $1")
                .bind(session.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Rotation::Reused);
        }
        sqlx::query(
            "update auth.refresh_tokens set revoked = true, updated_at = now() where token = $1",
        )
        .bind(presented)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into auth.refresh_tokens (token, user_id, session_id, parent) \
             values ($1, $2, $3, $4)",
        )
        .bind(next)
        .bind(user_id)
        .bind(session.id)
        .bind(presented)
        .execute(&mut *tx)
        .await?;
        sqlx::query("update auth.sessions set updated_at = now() where id = $1")
            .bind(session.id)
            .execute(&mut *tx)
            .await?;
        let sql = concat!("select ", user_columns!(), " from auth.users where id = $1");
        let user =
            UserRecord::from_row(&sqlx::query(sql).bind(user_id).fetch_one(&mut *tx).await?)?;
        tx.commit().await?;
        Ok(Rotation::Rotated {
            user: Box::new(user),
            session,
        })
    }

    /// Whether `session_id` is still open for `user_id`.
    pub async fn session_active(
        &self,
        session_id: Uuid,
        user_id: Uuid,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "select 1 from auth.sessions where id = $1 and user_id = $2 \
             and (not_after is null or not_after > now())",
        )
        .bind(session_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// End sessions (and with them their refresh tokens).
    pub async fn logout(
        &self,
        user_id: Uuid,
        current: Uuid,
        scope: LogoutScope,
    ) -> Result<(), StoreError> {
        let query = match scope {
            LogoutScope::Global => {
                sqlx::query("delete from auth.sessions where user_id = $1").bind(user_id)
            }
            LogoutScope::Local => {
                sqlx::query("delete from auth.sessions where user_id = $1 and id = $2")
                    .bind(user_id)
                    .bind(current)
            }
            LogoutScope::Others => {
                sqlx::query("delete from auth.sessions where user_id = $1 and id <> $2")
                    .bind(user_id)
                    .bind(current)
            }
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Delete a user (admin); sessions and tokens cascade. Returns whether it existed.
    pub async fn delete_user(&self, id: Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query("delete from auth.users where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

async fn start_session(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    refresh_digest: &str,
) -> Result<SessionRecord, StoreError> {
    let row =
        sqlx::query("insert into auth.sessions (user_id) values ($1) returning id, created_at")
            .bind(user_id)
            .fetch_one(&mut **tx)
            .await?;
    let session = SessionRecord {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
    };
    sqlx::query("insert into auth.refresh_tokens (token, user_id, session_id) values ($1, $2, $3)")
        .bind(refresh_digest)
        .bind(user_id)
        .bind(session.id)
        .execute(&mut **tx)
        .await?;
    Ok(session)
}
