//! The one rate limit of the subset: failed password sign-ins per email.
//!
//! Enough to make password guessing against the demo account visibly fail the same way hosted
//! Auth does (429 `over_request_rate_limit`), without GoTrue's per-IP, per-endpoint limits that
//! would trip the test suites and load harness, which sign many users in from one address.
//! Time is passed in, so the window logic is tested without sleeping.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sliding-window counter of failures per key.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    /// Allow at most `max_failures` failures per key within `window`.
    pub fn new(max_failures: usize, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may try again at `now`.
    pub fn allows(&self, key: &str, now: Instant) -> bool {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match map.get_mut(key) {
            Some(times) => {
                prune(times, now, self.window);
                let allowed = times.len() < self.max_failures;
                if times.is_empty() {
                    map.remove(key);
                }
                allowed
            }
            None => true,
        }
    }

    /// Count a failure for `key` at `now`.
    pub fn record_failure(&self, key: &str, now: Instant) {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Bound memory under a flood of distinct emails: forget keys whose window has passed.
        if map.len() > 10_000 {
            map.retain(|_, times| {
                prune(times, now, self.window);
                !times.is_empty()
            });
        }
        let times = map.entry(key.to_string()).or_default();
        prune(times, now, self.window);
        times.push_back(now);
    }

    /// Forget `key`'s failures (after a successful sign-in).
    pub fn clear(&self, key: &str) {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.remove(key);
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_passes() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(limiter.allows("a@x", t0 + Duration::from_secs(i)));
            limiter.record_failure("a@x", t0 + Duration::from_secs(i));
        }
        assert!(!limiter.allows("a@x", t0 + Duration::from_secs(10)));
        assert!(
            limiter.allows("b@x", t0 + Duration::from_secs(10)),
            "per key"
        );
        assert!(
            limiter.allows("a@x", t0 + Duration::from_secs(61)),
            "window slides"
        );
    }

    #[test]
    fn a_success_clears_the_count() {
        let limiter = FailureLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        limiter.record_failure("a@x", t0);
        assert!(!limiter.allows("a@x", t0));
        limiter.clear("a@x");
        assert!(limiter.allows("a@x", t0));
    }
}
