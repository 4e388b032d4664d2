//! CPU time of the calling thread and of the whole process, from the kernel's exact
//! per-thread/per-process accounting (machine-wide `/proc/stat` under-reports short bursts
//! on shared VMs, see performance.md). Feeds per-worker load and `NodeLoad.cpu_permille`.

use std::time::Duration;

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used are always supported
    // on the platforms we build for, and on failure `ts` stays zero.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed by the whole process (user + system, all threads).
pub fn process_cpu_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Turns successive CPU-time readings into "per mille of one core" over each interval.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    last_cpu: Duration,
    last_wall: std::time::Instant,
    permille: u32,
}

impl CpuMeter {
    pub fn new(cpu: Duration, wall: std::time::Instant) -> Self {
        Self {
            last_cpu: cpu,
            last_wall: wall,
            permille: 0,
        }
    }

    /// Feed a reading; the figure is recomputed once at least `min_interval` has passed.
    pub fn update(
        &mut self,
        cpu: Duration,
        wall: std::time::Instant,
        min_interval: Duration,
    ) -> u32 {
        let elapsed = wall.saturating_duration_since(self.last_wall);
        if elapsed >= min_interval && !elapsed.is_zero() {
            let used = cpu.saturating_sub(self.last_cpu);
            let permille = used.as_secs_f64() / elapsed.as_secs_f64() * 1000.0;
            self.permille = permille.round().clamp(0.0, f64::from(u32::MAX)) as u32;
            self.last_cpu = cpu;
            self.last_wall = wall;
        }
        self.permille
    }

    pub fn permille(&self) -> u32 {
        self.permille
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn thread_clock_advances_with_work() {
        let a = thread_cpu_time();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time() > a);
        assert!(process_cpu_time() >= thread_cpu_time());
    }

    #[test]
    fn meter_reports_per_mille_of_a_core() {
        let t0 = Instant::now();
        let mut m = CpuMeter::new(Duration::ZERO, t0);
        let s = Duration::from_secs(1);
        // Too early: keeps the previous figure.
        assert_eq!(
            m.update(Duration::from_millis(5), t0 + Duration::from_millis(10), s),
            0
        );
        assert_eq!(m.update(Duration::from_millis(250), t0 + s, s), 250);
        assert_eq!(m.update(Duration::from_millis(2250), t0 + 2 * s, s), 2000);
    }
}
