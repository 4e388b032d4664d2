//! Reconnect delays: exponential with full jitter, capped, reset once a connection has
//! proved itself. Jitter keeps a whole community from reconnecting in lockstep after a
//! signaling restart. The random source is injected so tests are deterministic.

use std::time::Duration;

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// 500 ms doubling up to 30 s.
    pub fn new(seed: u64) -> Self {
        Self::with_limits(Duration::from_millis(500), Duration::from_secs(30), seed)
    }

    /// Custom limits.
    pub fn with_limits(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
            seed: seed | 1,
        }
    }

    /// Failed attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt: uniformly in [ceiling/2, ceiling], where the
    /// ceiling doubles per attempt up to the cap (so the first retry is quick, never zero).
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = (ceiling - half).as_millis() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.next_random() % (span + 1)
        };
        half + Duration::from_millis(jitter)
    }

    /// After a connection succeeded (and stayed up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough for jitter, and reproducible from the seed.
        let mut x = self.seed;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jittered_and_capped_then_reset() {
        let mut b = Backoff::new(7);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(250) && delays[0] <= Duration::from_millis(500));
        assert!(delays[3] >= Duration::from_secs(2) && delays[3] <= Duration::from_secs(4));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(30)));
        assert!(delays[11] >= Duration::from_secs(15));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }
}
