//! Keeps the [`KeyRing`] current: fetches the project's JWKS at start, refreshes it
//! periodically, and refetches once when a token names a key we do not know (a rotated key),
//! at most once per cooldown so a stream of forged `kid`s cannot turn us into a request
//! amplifier against the auth server.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::jwt::{KeyRing, TokenError, UserClaims};
use crate::metrics::{inc, Metrics};

/// Default minimum time between two refetches caused by unknown `kid`s.
pub const DEFAULT_REFETCH_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching the JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the JWKS at {0} has no usable signing key")]
    NoKeys(String),
}

/// Decides whether an unknown `kid` may trigger a refetch now. No IO.
#[derive(Debug)]
pub struct RefetchGate {
    cooldown: Duration,
    last: Option<Instant>,
}

impl RefetchGate {
    pub fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            last: None,
        }
    }

    /// True (and starts a new cooldown) when the last refetch is at least `cooldown` ago.
    pub fn try_begin(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.cooldown => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[derive(Debug)]
struct JwksSource {
    url: String,
    http: reqwest::Client,
    gate: Mutex<RefetchGate>,
}

/// Verifies access tokens against a key ring that follows the project's JWKS.
#[derive(Debug)]
pub struct TokenVerifier {
    ring: RwLock<KeyRing>,
    source: Option<JwksSource>,
    metrics: Arc<Metrics>,
}

impl TokenVerifier {
    /// A verifier with fixed keys (HS256 secret only, or tests).
    pub fn fixed(ring: KeyRing, metrics: Arc<Metrics>) -> Self {
        Self {
            ring: RwLock::new(ring),
            source: None,
            metrics,
        }
    }

    /// A verifier that fetches `jwks_url` now (a failure is logged, not fatal: the keys are
    /// fetched again on the first token) and on demand afterwards.
    pub async fn with_jwks(
        ring: KeyRing,
        jwks_url: String,
        cooldown: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let verifier = Self {
            ring: RwLock::new(ring),
            source: Some(JwksSource {
                url: jwks_url,
                http,
                gate: Mutex::new(RefetchGate::new(cooldown)),
            }),
            metrics,
        };
        if let Err(e) = verifier.refresh().await {
            warn!(error = %e, "initial JWKS fetch failed; will retry when a token arrives");
        }
        verifier
    }

    /// Fetches the JWKS and replaces the asymmetric keys; the old keys stay on failure.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let Some(source) = &self.source else {
            return Ok(0);
        };
        inc(&self.metrics.jwks_refreshes);
        let fetch = |reason: String| JwksError::Fetch {
            url: source.url.clone(),
            reason,
        };
        let response = source
            .http
            .get(&source.url)
            .send()
            .await
            .map_err(|e| fetch(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fetch(format!("HTTP {}", response.status())));
        }
        let set: JwkSet = response.json().await.map_err(|e| fetch(e.to_string()))?;
        let mut candidate = self.ring.read().map(|r| r.clone()).unwrap_or_default();
        let n = candidate.set_jwks(&set);
        if n == 0 {
            return Err(JwksError::NoKeys(source.url.clone()));
        }
        if let Ok(mut ring) = self.ring.write() {
            *ring = candidate;
        }
        info!(keys = n, "JWKS loaded");
        Ok(n)
    }

    fn verify_now(&self, token: &str) -> Result<UserClaims, TokenError> {
        match self.ring.read() {
            Ok(ring) => ring.verify(token),
            // A poisoned lock means a panic while swapping keys; refuse rather than guess.
            Err(_) => Err(TokenError::Malformed),
        }
    }

    /// Verifies a user's access token, refetching the JWKS once for an unknown `kid`.
    pub async fn verify(&self, token: &str) -> Result<UserClaims, TokenError> {
        match self.verify_now(token) {
            Err(TokenError::UnknownKey(kid)) => {
                let Some(source) = &self.source else {
                    return Err(TokenError::UnknownKey(kid));
                };
                {
                    // Holding the gate while fetching makes concurrent callers wait for
                    // the one refetch instead of each starting their own.
                    let mut gate = source.gate.lock().await;
                    let known = self.ring.read().map(|r| r.knows(&kid)).unwrap_or(false);
                    if !known && gate.try_begin(Instant::now()) {
                        if let Err(e) = self.refresh().await {
                            warn!(error = %e, "JWKS refetch for an unknown kid failed");
                        }
                    }
                }
                self.verify_now(token)
            }
            other => other,
        }
    }

    /// Refreshes the keys every `period` until `stop` is cancelled.
    pub fn spawn_periodic_refresh(
        self: &Arc<Self>,
        period: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if self.source.is_none() {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = me.refresh().await {
                            warn!(error = %e, "periodic JWKS refresh failed; keeping the current keys");
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kids_refetch_at_most_once_per_cooldown() {
        let t0 = Instant::now();
        let mut gate = RefetchGate::new(Duration::from_secs(30));
        assert!(gate.try_begin(t0));
        assert!(!gate.try_begin(t0));
        assert!(!gate.try_begin(t0 + Duration::from_secs(29)));
        assert!(gate.try_begin(t0 + Duration::from_secs(30)));
        assert!(!gate.try_begin(t0 + Duration::from_secs(31)));
    }
}
