//! Seeded network impairment between the simulated clients and the SFU: loss, jitter,
//! reordering (and an optional fixed delay), applied inside the clients' own send and
//! receive paths, since they run on our own UDP sockets. Nothing outside the harness is
//! touched (no netem, no root).
//!
//! `--impair` figures are END-TO-END, publisher → subscriber, because that is what the
//! meter measures: a datagram crosses the stage twice (uplink into the SFU, downlink out of
//! it), so each direction drops with 1 − √(1 − loss), delays by uniform [0, jitter/2] and
//! reorders with 1 − √(1 − reorder). `loss=5%` therefore shows as 5 % measured loss.
//! A reordered datagram is held back by [`REORDER_HOLD`] so the next ones overtake it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Extra delay of a reordered datagram: two audio frames.
pub const REORDER_HOLD: Duration = Duration::from_millis(40);

/// End-to-end impairment, as given on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Impairment {
    /// Fraction 0..1 of datagrams lost publisher → subscriber.
    pub loss: f64,
    /// Extra delay is uniform in [0, jitter] end to end.
    #[serde(with = "duration_ms")]
    pub jitter: Duration,
    /// Fraction 0..1 of datagrams delivered after later ones.
    pub reorder: f64,
    /// Fixed extra delay end to end.
    #[serde(with = "duration_ms")]
    pub delay: Duration,
}

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: f64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImpairParseError {
    #[error("`{0}`: expected key=value (loss=2%, jitter=20ms, reorder=1%, delay=10ms)")]
    Syntax(String),
    #[error("unknown impairment `{0}` (known: loss, jitter, reorder, delay)")]
    UnknownKey(String),
    #[error("`{0}`: percentages are 0..100, e.g. 2% or 2")]
    BadPercent(String),
    #[error("`{0}`: durations look like 20ms or 0.5s")]
    BadDuration(String),
}

impl Impairment {
    pub fn is_none(&self) -> bool {
        self.loss <= 0.0 && self.reorder <= 0.0 && self.jitter.is_zero() && self.delay.is_zero()
    }

    /// What one direction applies so that two crossings add up to `self`.
    pub fn per_direction(&self) -> DirectionImpairment {
        let half = |p: f64| 1.0 - (1.0 - p.clamp(0.0, 1.0)).sqrt();
        DirectionImpairment {
            loss: half(self.loss),
            jitter: self.jitter / 2,
            reorder: half(self.reorder),
            delay: self.delay / 2,
        }
    }
}

impl FromStr for Impairment {
    type Err = ImpairParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut imp = Impairment::default();
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(imp);
        }
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| ImpairParseError::Syntax(part.into()))?;
            match k.trim() {
                "loss" => imp.loss = parse_percent(v)?,
                "reorder" => imp.reorder = parse_percent(v)?,
                "jitter" => imp.jitter = parse_duration(v)?,
                "delay" => imp.delay = parse_duration(v)?,
                other => return Err(ImpairParseError::UnknownKey(other.into())),
            }
        }
        Ok(imp)
    }
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        write!(
            f,
            "loss={}%,jitter={}ms,reorder={}%,delay={}ms",
            self.loss * 100.0,
            self.jitter.as_millis(),
            self.reorder * 100.0,
            self.delay.as_millis()
        )
    }
}

fn parse_percent(v: &str) -> Result<f64, ImpairParseError> {
    let t = v.trim();
    let n = t.strip_suffix('%').unwrap_or(t).trim();
    let p: f64 = n
        .parse()
        .map_err(|_| ImpairParseError::BadPercent(v.into()))?;
    if !(0.0..=100.0).contains(&p) {
        return Err(ImpairParseError::BadPercent(v.into()));
    }
    Ok(p / 100.0)
}

/// `20ms`, `0.5s`, `250us`, or a bare number of milliseconds.
pub fn parse_duration_str(v: &str) -> Option<Duration> {
    let t = v.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1e-3)
    };
    let x: f64 = num.trim().parse().ok()?;
    (x.is_finite() && x >= 0.0).then(|| Duration::from_secs_f64(x * scale))
}

fn parse_duration(v: &str) -> Result<Duration, ImpairParseError> {
    parse_duration_str(v).ok_or_else(|| ImpairParseError::BadDuration(v.into()))
}

/// One direction's share of the impairment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DirectionImpairment {
    pub loss: f64,
    pub jitter: Duration,
    pub reorder: f64,
    pub delay: Duration,
}

/// Counters of one stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImpairCounters {
    pub submitted: u64,
    pub dropped: u64,
    pub delayed: u64,
    pub reordered: u64,
}

impl ImpairCounters {
    pub fn merge(&mut self, o: &ImpairCounters) {
        self.submitted += o.submitted;
        self.dropped += o.dropped;
        self.delayed += o.delayed;
        self.reordered += o.reordered;
    }
}

struct Held<T> {
    at: Instant,
    order: u64,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Held<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

/// One direction of one worker: datagrams go in, come out now, later, or never.
pub struct ImpairStage<T> {
    cfg: DirectionImpairment,
    rng: StdRng,
    held: BinaryHeap<Reverse<Held<T>>>,
    order: u64,
    pub counters: ImpairCounters,
}

impl<T> ImpairStage<T> {
    pub fn new(cfg: DirectionImpairment, seed: u64) -> Self {
        Self {
            cfg,
            rng: StdRng::seed_from_u64(seed),
            held: BinaryHeap::new(),
            order: 0,
            counters: ImpairCounters::default(),
        }
    }

    /// Returns the item when it passes at once; `None` when dropped or held back.
    pub fn submit(&mut self, now: Instant, item: T) -> Option<T> {
        self.counters.submitted += 1;
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss.min(1.0)) {
            self.counters.dropped += 1;
            return None;
        }
        let mut delay = self.cfg.delay;
        if !self.cfg.jitter.is_zero() {
            let j = self.cfg.jitter.as_micros() as u64;
            delay += Duration::from_micros(self.rng.gen_range(0..=j));
        }
        if self.cfg.reorder > 0.0 && self.rng.gen_bool(self.cfg.reorder.min(1.0)) {
            self.counters.reordered += 1;
            delay += REORDER_HOLD;
        }
        if delay.is_zero() {
            return Some(item);
        }
        self.counters.delayed += 1;
        self.order += 1;
        self.held.push(Reverse(Held {
            at: now + delay,
            order: self.order,
            item,
        }));
        None
    }

    /// The next held item that is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.held.peek().is_some_and(|Reverse(h)| h.at <= now) {
            return self.held.pop().map(|Reverse(h)| h.item);
        }
        None
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| h.at)
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let i: Impairment = "loss=2%,jitter=20ms,reorder=1%".parse().unwrap();
        assert!((i.loss - 0.02).abs() < 1e-12);
        assert_eq!(i.jitter, Duration::from_millis(20));
        assert!((i.reorder - 0.01).abs() < 1e-12);
        assert!("none".parse::<Impairment>().unwrap().is_none());
        assert_eq!(
            "delay=0.5s".parse::<Impairment>().unwrap().delay,
            Duration::from_millis(500)
        );
        assert!("loss=200%".parse::<Impairment>().is_err());
        assert!("wobble=1".parse::<Impairment>().is_err());
        assert!("loss".parse::<Impairment>().is_err());
    }

    #[test]
    fn two_crossings_add_up_to_the_end_to_end_loss() {
        let d = Impairment {
            loss: 0.05,
            ..Default::default()
        }
        .per_direction();
        let through = (1.0 - d.loss) * (1.0 - d.loss);
        assert!((1.0 - through - 0.05).abs() < 1e-12);
    }

    #[test]
    fn seeded_loss_through_two_stages_is_five_percent() {
        let cfg = Impairment {
            loss: 0.05,
            ..Default::default()
        }
        .per_direction();
        let mut up = ImpairStage::new(cfg, 1);
        let mut down = ImpairStage::new(cfg, 2);
        let now = Instant::now();
        let n = 100_000;
        let arrived = (0..n)
            .filter_map(|i| up.submit(now, i))
            .filter_map(|i| down.submit(now, i))
            .count();
        let loss = 1.0 - arrived as f64 / n as f64;
        assert!((0.045..0.055).contains(&loss), "{loss}");
        // Same seed, same fate.
        let mut again = ImpairStage::new(cfg, 1);
        let first: Vec<_> = (0..1000).filter_map(|i| again.submit(now, i)).collect();
        let mut once_more = ImpairStage::new(cfg, 1);
        let second: Vec<_> = (0..1000).filter_map(|i| once_more.submit(now, i)).collect();
        assert_eq!(first, second);
    }

    #[test]
    fn jitter_delays_within_bounds_and_reorder_lets_others_overtake() {
        let imp: Impairment = "jitter=20ms,reorder=10%".parse().unwrap();
        let mut st = ImpairStage::new(imp.per_direction(), 3);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..1000u32 {
            // A zero jitter draw passes at once.
            if let Some(i) = st.submit(t0 + Duration::from_millis(20) * i, i) {
                out.push(i);
            }
        }
        let mut t = t0;
        assert!(out.len() < 20, "{}", out.len());
        while st.held() > 0 {
            t += Duration::from_millis(1);
            while let Some(i) = st.pop_due(t) {
                let sent = t0 + Duration::from_millis(20) * i;
                let delay = t - sent;
                assert!(delay <= Duration::from_millis(10 + 40 + 1), "{delay:?}");
                out.push(i);
            }
        }
        assert_eq!(out.len(), 1000);
        let inversions = out.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions > 20, "{inversions}");
        assert!(st.counters.reordered > 20);
    }

    #[test]
    fn no_impairment_passes_everything_at_once() {
        let mut st = ImpairStage::new(Impairment::default().per_direction(), 4);
        let now = Instant::now();
        assert!((0..100).all(|i| st.submit(now, i) == Some(i)));
        assert_eq!(st.counters.delayed, 0);
    }
}
