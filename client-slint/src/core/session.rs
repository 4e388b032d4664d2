//! Signing in and staying signed in: sign up, sign in, refresh before the access token
//! expires, sign out, and the session persisted in the user's config directory.
//!
//! The session file holds a refresh token, which is a credential: it is written with mode
//! 0600 (created that way, never widened afterwards) and atomically (temp file + rename), so
//! a crash never leaves a half-written token behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use haven_supabase::{HavenClient, Session, SignOutScope};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::core::error::CoreError;

/// Refresh when the access token has less than this left, so no request (or the signaling
/// socket) ever presents an expired token.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// The persisted session: `<config dir>/session.json`, mode 0600.
#[derive(Debug, Clone)]
pub struct SessionFile {
    path: PathBuf,
}

impl SessionFile {
    /// The session file inside `config_dir`.
    pub fn in_dir(config_dir: &Path) -> Self {
        Self {
            path: config_dir.join("session.json"),
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored session, if any. A corrupt file counts as none (and is left for `save`
    /// or `clear` to replace): a broken file must never keep the user from signing in.
    pub fn load(&self) -> Result<Option<Session>, CoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Store `session`, readable and writable by the user only.
    pub fn save(&self, session: &Session) -> Result<(), CoreError> {
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
        let bytes = serde_json::to_vec(session).map_err(|e| self.error(e))?;
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, &bytes).map_err(|e| self.error(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.error(e))
    }

    /// Forget the stored session.
    pub fn clear(&self) -> Result<(), CoreError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: impl std::fmt::Display) -> CoreError {
        CoreError::SessionFile {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The signed-in user's session: hands out a valid access token, refreshing it first when
/// it is about to expire, and keeps the session file in step. Cheap to clone (shared).
#[derive(Clone)]
pub struct SessionManager {
    api: HavenClient,
    file: Option<SessionFile>,
    current: Arc<Mutex<Option<Session>>>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A manager persisting to `file` (`None`: memory only, e.g. a second test session).
    pub fn new(api: HavenClient, file: Option<SessionFile>) -> Self {
        Self {
            api,
            file,
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// The Supabase client.
    pub fn api(&self) -> &HavenClient {
        &self.api
    }

    /// Create an account (and sign in: our projects have email confirmation off).
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        username: Option<&str>,
    ) -> Result<Session, CoreError> {
        let data = username.map(|u| serde_json::json!({ "username": u }));
        let session = self.api.sign_up(email, password, data).await?;
        self.install(session).await
    }

    /// Sign in with email and password.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Session, CoreError> {
        let session = self.api.sign_in_with_password(email, password).await?;
        self.install(session).await
    }

    /// Resume the persisted session, refreshing it if it is about to expire. `Ok(None)`
    /// when there is none or it can no longer be refreshed (the file is then cleared).
    pub async fn restore(&self) -> Result<Option<Session>, CoreError> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let Some(stored) = file.load()? else {
            return Ok(None);
        };
        *self.current.lock().await = Some(stored);
        match self.valid_session().await {
            Ok(session) => Ok(Some(session)),
            Err(CoreError::SessionExpired) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The current session without refreshing it.
    pub async fn current(&self) -> Option<Session> {
        self.current.lock().await.clone()
    }

    /// My user id, if signed in.
    pub async fn user_id(&self) -> Option<Uuid> {
        self.current.lock().await.as_ref().map(|s| s.user.id)
    }

    /// A session whose access token is valid for at least [`REFRESH_MARGIN`].
    pub async fn valid_session(&self) -> Result<Session, CoreError> {
        let mut guard = self.current.lock().await;
        let Some(session) = guard.clone() else {
            return Err(CoreError::NotSignedIn);
        };
        if !session.expires_within(REFRESH_MARGIN.as_secs() as i64, Utc::now()) {
            return Ok(session);
        }
        match self.api.refresh_session(&session.refresh_token).await {
            Ok(fresh) => {
                if let Some(file) = &self.file {
                    file.save(&fresh)?;
                }
                *guard = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => {
                let e = CoreError::from(e);
                if matches!(e, CoreError::SessionExpired | CoreError::InvalidCredentials) {
                    *guard = None;
                    if let Some(file) = &self.file {
                        file.clear()?;
                    }
                    return Err(CoreError::SessionExpired);
                }
                Err(e)
            }
        }
    }

    /// Refresh now, whatever the expiry (signaling's `token_expiring`, tests).
    pub async fn refresh_now(&self) -> Result<Session, CoreError> {
        let refresh_token = {
            let guard = self.current.lock().await;
            guard
                .as_ref()
                .map(|s| s.refresh_token.clone())
                .ok_or(CoreError::NotSignedIn)?
        };
        let fresh = self
            .api
            .refresh_session(&refresh_token)
            .await
            .map_err(|e| match CoreError::from(e) {
                CoreError::InvalidCredentials => CoreError::SessionExpired,
                other => other,
            })?;
        self.install(fresh).await
    }

    /// A valid access token for one request.
    pub async fn access_token(&self) -> Result<String, CoreError> {
        Ok(self.valid_session().await?.access_token)
    }

    /// How long until the token should be refreshed (for a background refresh timer).
    pub async fn refresh_due_in(&self) -> Option<Duration> {
        let guard = self.current.lock().await;
        let session = guard.as_ref()?;
        let left = session.expires_at - Utc::now().timestamp() - REFRESH_MARGIN.as_secs() as i64;
        Some(Duration::from_secs(left.max(0) as u64))
    }

    /// Sign out this session on the server (best effort) and forget it locally.
    pub async fn sign_out(&self) -> Result<(), CoreError> {
        let session = self.current.lock().await.take();
        if let Some(file) = &self.file {
            file.clear()?;
        }
        if let Some(session) = session {
            // Local scope: signing out here must not end the user's other devices.
            match self
                .api
                .sign_out(&session.access_token, SignOutScope::Local)
                .await
            {
                Ok(())
                | Err(haven_supabase::Error::SessionExpired(_))
                | Err(haven_supabase::Error::Unauthenticated(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn install(&self, session: Session) -> Result<Session, CoreError> {
        if let Some(file) = &self.file {
            file.save(&session)?;
        }
        *self.current.lock().await = Some(session.clone());
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires_at: i64) -> Session {
        serde_json::from_value(serde_json::json!({
            "access_token": "a.b.c", "token_type": "bearer", "expires_in": 3600, "expires_at": expires_at,
            "refresh_token": "r1",
            "user": {"id": "975ab4ef-78db-45a9-aa69-b4526fa332ec", "created_at": "2026-11-25T11:21:18Z"}
        }))
        .unwrap()
    }

    #[test]
    fn session_file_is_private_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("haven-session-{}", Uuid::new_v4()));
        let file = SessionFile::in_dir(&dir);
        assert!(file.load().unwrap().is_none());
        file.save(&session(123)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(file.load().unwrap().unwrap().expires_at, 123);
        file.save(&session(456)).unwrap();
        assert_eq!(file.load().unwrap().unwrap().expires_at, 456);
        std::fs::write(file.path(), b"{garbage").unwrap();
        assert!(
            file.load().unwrap().is_none(),
            "a corrupt file is no session, not an error"
        );
        file.clear().unwrap();
        file.clear().unwrap();
        std::fs::remove_dir_all(dir).ok();
    }
}
