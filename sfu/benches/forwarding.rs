//! CPU cost per forwarded packet inside the SFU core, in memory with simulated time.
//!
//! One speaker, N listen-only subscribers, real str0m peers (SRTP, RTCP, ICE keepalives
//! included). Only time spent inside `SfuEngine` calls counts, divided by RTP packets the
//! engine wrote to subscribers. Run: `cargo bench -p haven-sfu --bench forwarding`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Impairment, Talk, World};

const REPEATS: usize = 5;
const WINDOW: Duration = Duration::from_secs(20);

fn one_run(subscribers: usize, seed: u64) -> (f64, u64) {
    let mut w = World::new(seed, Impairment::clean());
    let speaker = w.join(true, 3);
    for _ in 0..subscribers {
        w.join(false, 3);
    }
    w.connect_all(Duration::from_secs(30));
    w.talk(speaker, Talk::Speech(30));
    w.run_for(Duration::from_secs(1));
    let busy = w.sfu_busy;
    let forwarded = w.sfu.counters().rtp_forwarded;
    w.run_for(WINDOW);
    let n = w.sfu.counters().rtp_forwarded - forwarded;
    let us = (w.sfu_busy - busy).as_secs_f64() * 1e6 / n as f64;
    (us, n)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    println!("subscribers  packets/run  median µs/forwarded packet  (runs)");
    let mut medians = Vec::new();
    for subscribers in [4usize, 50] {
        let mut runs = Vec::new();
        let mut packets = 0;
        for r in 0..REPEATS {
            let (us, n) = one_run(subscribers, 100 + r as u64);
            runs.push(us);
            packets = n;
        }
        let m = median(runs.clone());
        medians.push(m);
        let shown: Vec<String> = runs.iter().map(|u| format!("{u:.2}")).collect();
        println!(
            "{subscribers:>11}  {packets:>11}  {m:>26.2}  ({})",
            shown.join(", ")
        );
    }
    println!("ratio 50/4: {:.2}", medians[1] / medians[0]);
}
