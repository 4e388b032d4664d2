//! CPU time and memory of a process (or of one thread) read from /proc, sampled over a run,
//! and the steady-window arithmetic behind "CPU µs per forwarded packet".
//!
//! performance.md: per-process accounting in `/proc/<pid>/stat` is exact, machine-wide
//! `/proc/stat` under-reports bursts on these VMs. `utime + stime` (fields 14 and 15, in
//! clock ticks) is the defined figure; `/proc/<pid>/schedstat` (ns on CPU) is read alongside
//! as a finer cross-check. Threads are read from `/proc/<pid>/task/<tid>/...`, which is how
//! the in-process SFU target and the harness's own client threads are measured.

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("unexpected format in {0}")]
    Format(String),
}

/// What to measure: a process, or one thread of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProcTarget {
    pub pid: u32,
    pub tid: Option<u32>,
}

impl ProcTarget {
    pub fn process(pid: u32) -> Self {
        Self { pid, tid: None }
    }

    /// A thread of this process.
    pub fn own_thread(tid: u32) -> Self {
        Self {
            pid: std::process::id(),
            tid: Some(tid),
        }
    }

    fn dir(&self) -> PathBuf {
        match self.tid {
            Some(t) => PathBuf::from(format!("/proc/{}/task/{t}", self.pid)),
            None => PathBuf::from(format!("/proc/{}", self.pid)),
        }
    }

    /// One reading now.
    pub fn sample(&self) -> Result<CpuReading, ProcError> {
        let dir = self.dir();
        let stat_path = dir.join("stat");
        let stat = read(&stat_path)?;
        let (utime, stime) = parse_stat_times(&stat)
            .ok_or_else(|| ProcError::Format(stat_path.display().to_string()))?;
        // schedstat is per thread: a process's is the sum over its tasks.
        let sched_ns = match self.tid {
            Some(_) => read_sched_ns(&dir.join("schedstat")),
            None => std::fs::read_dir(dir.join("task")).ok().map(|tasks| {
                tasks
                    .flatten()
                    .filter_map(|t| read_sched_ns(&t.path().join("schedstat")))
                    .sum()
            }),
        };
        // RSS is per process (threads share it).
        let statm = read(&PathBuf::from(format!("/proc/{}/statm", self.pid))).ok();
        let rss_bytes = statm
            .as_deref()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|pages| pages * page_size());
        Ok(CpuReading {
            at: Instant::now(),
            ticks: utime + stime,
            sched_ns,
            rss_bytes,
        })
    }
}

fn read(path: &std::path::Path) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn read_sched_ns(path: &std::path::Path) -> Option<u64> {
    read(path).ok()?.split_whitespace().next()?.parse().ok()
}

/// utime and stime from a `stat` line; the command name may contain spaces and parentheses,
/// so fields are counted after the last `)`.
pub fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// Clock ticks per second (USER_HZ) for `stat` times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// The calling thread's id (for [`ProcTarget::own_thread`]).
pub fn current_tid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuReading {
    pub at: Instant,
    /// utime + stime, clock ticks.
    pub ticks: u64,
    pub sched_ns: Option<u64>,
    pub rss_bytes: Option<u64>,
}

/// CPU used between two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CpuDelta {
    pub wall_s: f64,
    /// From utime + stime.
    pub cpu_s: f64,
    /// From schedstat, when available.
    pub sched_cpu_s: Option<f64>,
}

impl CpuDelta {
    pub fn between(a: &CpuReading, b: &CpuReading) -> Self {
        let hz = clock_ticks_per_sec() as f64;
        Self {
            wall_s: b.at.saturating_duration_since(a.at).as_secs_f64(),
            cpu_s: b.ticks.saturating_sub(a.ticks) as f64 / hz,
            sched_cpu_s: match (a.sched_ns, b.sched_ns) {
                (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64 / 1e9),
                _ => None,
            },
        }
    }

    /// Fraction of one core.
    pub fn utilisation(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.cpu_s / self.wall_s
        } else {
            0.0
        }
    }

    /// µs of CPU per event (e.g. per forwarded packet).
    pub fn us_per(&self, events: u64) -> Option<f64> {
        (events > 0).then(|| self.cpu_s * 1e6 / events as f64)
    }

    /// The same by schedstat, when it was read.
    pub fn sched_us_per(&self, events: u64) -> Option<f64> {
        let cpu_s = self.sched_cpu_s?;
        (events > 0).then(|| cpu_s * 1e6 / events as f64)
    }
}

/// One row of the time series the run keeps (every sample interval).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub at: Instant,
    /// SFU (or relay) process/thread.
    pub sfu: Option<CpuReading>,
    /// RTP packets the SFU forwarded so far (its own counter, or `None`).
    pub sfu_forwarded: Option<u64>,
    /// Datagrams the SFU received / sent so far (its own counters, or `None`).
    pub sfu_udp_in: Option<u64>,
    pub sfu_udp_out: Option<u64>,
    /// Harness totals so far: datagrams sent / received by all clients.
    pub clients_tx: u64,
    pub clients_rx: u64,
    /// CPU of the harness's client threads, summed, clock ticks.
    pub clients_ticks: u64,
    pub participants: u64,
    /// `--relay-baseline`: the relay process's CPU, and datagrams its receivers counted.
    pub relay: Option<CpuReading>,
    pub relay_rx: u64,
}

/// The readings that bound a window: the first at/after `start` and the first at/after
/// `end` (the run samples as each bound passes). When the SFU's counters were scraped at
/// all, only samples that carry them count, so CPU and packets cover the same interval.
pub fn window_bounds(samples: &[Sample], start: Instant, end: Instant) -> Option<(Sample, Sample)> {
    let scraped = samples.iter().any(|s| s.sfu_forwarded.is_some());
    let usable = |s: &&Sample| !scraped || s.sfu_forwarded.is_some();
    let first = samples.iter().filter(usable).find(|s| s.at >= start)?;
    let last = samples.iter().filter(usable).find(|s| s.at >= end)?;
    (last.at > first.at).then_some((*first, *last))
}

/// (seconds since start, SFU CPU %, forwarded pkt/s, client rx pkt/s).
pub type SeriesPoint = (f64, f64, f64, f64);

/// Rates over time for the charts: (seconds since `t0`, SFU CPU %, forwarded pkt/s, client
/// rx pkt/s) between consecutive samples.
pub fn rate_series(samples: &[Sample], t0: Instant) -> Vec<SeriesPoint> {
    let hz = clock_ticks_per_sec() as f64;
    samples
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].at.saturating_duration_since(w[0].at).as_secs_f64();
            if dt <= 0.0 {
                return None;
            }
            let cpu = match (w[0].sfu, w[1].sfu) {
                (Some(a), Some(b)) => b.ticks.saturating_sub(a.ticks) as f64 / hz / dt * 100.0,
                _ => 0.0,
            };
            let fwd = forwarded_rate_around(samples, w[1].at);
            let rx = w[1].clients_rx.saturating_sub(w[0].clients_rx) as f64 / dt;
            let t = w[1].at.saturating_duration_since(t0).as_secs_f64();
            Some((t, cpu, fwd, rx))
        })
        .collect()
}

/// The SFU's forwarding rate over the scrape interval that holds `at` (scrapes are rarer
/// than samples): between the last sample with counters before `at` and the first at or
/// after it. 0 where there is no such pair.
fn forwarded_rate_around(samples: &[Sample], at: Instant) -> f64 {
    let scraped = |s: &&Sample| s.sfu_forwarded.is_some();
    let before = samples.iter().filter(scraped).rfind(|s| s.at < at);
    let after = samples.iter().filter(scraped).find(|s| s.at >= at);
    match (before, after) {
        (Some(a), Some(b)) => {
            let dt = b.at.saturating_duration_since(a.at).as_secs_f64();
            let n = b
                .sfu_forwarded
                .unwrap_or(0)
                .saturating_sub(a.sfu_forwarded.unwrap_or(0));
            if dt > 0.0 {
                n as f64 / dt
            } else {
                0.0
            }
        }
        _ => 0.0,
    }
}

/// A short busy loop for tests and calibration.
pub fn burn(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line =
            "1234 (my (weird) proc) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 20 0 1 0 100 2000 300";
        assert_eq!(parse_stat_times(line), Some((111, 222)));
        assert_eq!(parse_stat_times("garbage"), None);
    }

    #[test]
    fn measures_this_threads_cpu() {
        let t = ProcTarget::own_thread(current_tid());
        let a = t.sample().expect("sample");
        std::hint::black_box(burn(Duration::from_millis(300)));
        let b = t.sample().expect("sample");
        let d = CpuDelta::between(&a, &b);
        // 300 ms of spinning: at least some of it on CPU even on a busy machine.
        assert!(d.cpu_s >= 0.05 && d.cpu_s <= d.wall_s + 0.02, "{d:?}");
        let s = d.sched_cpu_s.expect("schedstat");
        assert!(s >= 0.05 && s <= d.wall_s + 0.01, "{d:?}");
        assert!(a.rss_bytes.unwrap_or(0) > 1 << 20);
        // A whole process: stat times and schedstat summed over its threads.
        let whole = ProcTarget::process(std::process::id())
            .sample()
            .expect("process");
        assert!(whole.sched_ns.unwrap_or(0) >= b.sched_ns.unwrap_or(0) / 2);
        assert!(whole.ticks >= b.ticks);
        assert!(d.us_per(1000).is_some() && d.us_per(0).is_none());
    }

    #[test]
    fn steady_window_picks_inner_samples() {
        let t0 = Instant::now();
        let mk = |ms: u64, fwd: u64| Sample {
            at: t0 + Duration::from_millis(ms),
            sfu: Some(CpuReading {
                at: t0 + Duration::from_millis(ms),
                ticks: ms / 10,
                sched_ns: None,
                rss_bytes: None,
            }),
            sfu_forwarded: Some(fwd),
            sfu_udp_in: None,
            sfu_udp_out: None,
            clients_tx: 0,
            clients_rx: fwd,
            clients_ticks: 0,
            participants: 0,
            relay: None,
            relay_rx: 0,
        };
        let s: Vec<Sample> = (0..10).map(|i| mk(i * 250, i * 100)).collect();
        let (a, b) = window_bounds(
            &s,
            t0 + Duration::from_millis(600),
            t0 + Duration::from_millis(1900),
        )
        .unwrap();
        assert_eq!(a.sfu_forwarded, Some(300));
        assert_eq!(b.sfu_forwarded, Some(800));
        let r = rate_series(&s, t0);
        assert_eq!(r.len(), 9);
        assert!((r[0].2 - 400.0).abs() < 1e-6);
        // Scraped only now and then: bounds skip samples without counters, and the rate
        // between two scrapes holds for every sample between them.
        let sparse: Vec<Sample> = s
            .iter()
            .enumerate()
            .map(|(i, x)| Sample {
                sfu_forwarded: x.sfu_forwarded.filter(|_| i % 4 == 0),
                ..*x
            })
            .collect();
        let (a, b) = window_bounds(
            &sparse,
            t0 + Duration::from_millis(100),
            t0 + Duration::from_millis(1100),
        )
        .unwrap();
        assert_eq!((a.sfu_forwarded, b.sfu_forwarded), (Some(400), Some(800)));
        assert_eq!(a.at, t0 + Duration::from_millis(1000));
        let r = rate_series(&sparse, t0);
        assert!(r[..8].iter().all(|p| (p.2 - 400.0).abs() < 1e-6), "{r:?}");
        assert_eq!(r[8].2, 0.0, "no scrape after the last sample: no rate");
        // Never scraped (the relay target): any sample bounds the window.
        let bare: Vec<Sample> = s
            .iter()
            .map(|x| Sample {
                sfu_forwarded: None,
                ..*x
            })
            .collect();
        assert!(window_bounds(&bare, t0, t0 + Duration::from_millis(600)).is_some());
    }
}
