//! The Prometheus text exposition of the node's numbers, written by hand from the atomics
//! in [`NodeStats`] (a handful of families; a metrics framework would add more than it
//! saves). Every per-worker series carries a `worker` label; drops also carry `reason`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::counters::DropReason;
use crate::node::cpu::process_cpu_time;
use crate::node::stats::{NodeStats, WorkerGauges, LATENESS_BUCKETS};

type Field = fn(&WorkerGauges) -> &AtomicU64;

/// Per-worker families: (name, type, help, field).
const WORKER_FAMILIES: &[(&str, &str, &str, Field)] = &[
    ("haven_sfu_rooms", "gauge", "Rooms on the worker.", |g| {
        &g.rooms
    }),
    (
        "haven_sfu_participants",
        "gauge",
        "Participants on the worker.",
        |g| &g.participants,
    ),
    (
        "haven_sfu_udp_datagrams_received_total",
        "counter",
        "Datagrams read from the worker's socket.",
        |g| &g.datagrams_in,
    ),
    (
        "haven_sfu_udp_bytes_received_total",
        "counter",
        "Bytes read from the worker's socket.",
        |g| &g.bytes_in,
    ),
    (
        "haven_sfu_udp_datagrams_sent_total",
        "counter",
        "Datagrams handed to the kernel.",
        |g| &g.datagrams_out,
    ),
    (
        "haven_sfu_udp_bytes_sent_total",
        "counter",
        "Bytes handed to the kernel.",
        |g| &g.bytes_out,
    ),
    (
        "haven_sfu_udp_send_errors_total",
        "counter",
        "Datagrams the kernel refused.",
        |g| &g.send_errors,
    ),
    (
        "haven_sfu_udp_send_dropped_total",
        "counter",
        "Datagrams dropped because the socket buffer stayed full.",
        |g| &g.send_dropped,
    ),
    (
        "haven_sfu_udp_receive_errors_total",
        "counter",
        "Failed reads from the worker's socket.",
        |g| &g.recv_errors,
    ),
    (
        "haven_sfu_rtp_packets_received_total",
        "counter",
        "RTP packets received from publishers (after SRTP).",
        |g| &g.rtp_in,
    ),
    (
        "haven_sfu_rtp_packets_forwarded_total",
        "counter",
        "RTP packets written to subscribers.",
        |g| &g.rtp_forwarded,
    ),
    (
        "haven_sfu_rtp_packets_received_lean_total",
        "counter",
        "Of the received RTP packets, those opened by the SFU's lean ingress path.",
        |g| &g.rtp_in_lean,
    ),
    (
        "haven_sfu_rtp_packets_forwarded_lean_total",
        "counter",
        "Of the forwarded RTP packets, those sealed by the SFU's lean egress path.",
        |g| &g.rtp_forwarded_lean,
    ),
    (
        "haven_sfu_rtcp_packets_received_total",
        "counter",
        "RTCP packets from connected peers, counted and not read (audio forwarding uses none).",
        |g| &g.rtcp_in,
    ),
    (
        "haven_sfu_stun_answered_lean_total",
        "counter",
        "STUN consent refreshes answered by the SFU itself rather than str0m.",
        |g| &g.stun_lean,
    ),
    (
        "haven_sfu_ice_disconnects_total",
        "counter",
        "Times a participant's ICE connection went to disconnected (it may recover within the grace period).",
        |g| &g.ice_disconnects,
    ),
    (
        "haven_sfu_rtc_timeouts_total",
        "counter",
        "Times a participant's str0m Rtc was woken for its own timers (ICE, SCTP, DTLS).",
        |g| &g.rtc_timeouts,
    ),
    (
        "haven_sfu_rtp_packets_not_selected_total",
        "counter",
        "RTP packets from speakers not in any slot (normal).",
        |g| &g.rtp_not_selected,
    ),
    (
        "haven_sfu_joins_total",
        "counter",
        "Offers accepted.",
        |g| &g.joins_accepted,
    ),
    (
        "haven_sfu_grants_refused_total",
        "counter",
        "Offers refused for their join grant.",
        |g| &g.grants_refused,
    ),
    (
        "haven_sfu_offers_refused_total",
        "counter",
        "Offers refused for their SDP.",
        |g| &g.offers_refused,
    ),
    (
        "haven_sfu_participant_panics_total",
        "counter",
        "Participants dropped after their processing panicked.",
        |g| &g.participant_panics,
    ),
    (
        "haven_sfu_engine_resets_total",
        "counter",
        "Engines rebuilt after a panic outside a participant.",
        |g| &g.engine_resets,
    ),
    (
        "haven_sfu_worker_wakeups_total",
        "counter",
        "Worker loop turns (returns from poll).",
        |g| &g.wakeups,
    ),
    (
        "haven_sfu_worker_recv_batches_total",
        "counter",
        "recvmmsg calls that returned datagrams.",
        |g| &g.recv_batches,
    ),
    (
        "haven_sfu_worker_timer_runs_total",
        "counter",
        "Engine timeout runs (only due participants are woken).",
        |g| &g.timer_runs,
    ),
    (
        "haven_sfu_worker_cpu_seconds_total",
        "counter",
        "CPU time of the worker thread.",
        |g| &g.cpu_nanos,
    ),
    (
        "haven_sfu_worker_cpu_permille",
        "gauge",
        "Worker thread CPU over the last second, per mille of one core.",
        |g| &g.cpu_permille,
    ),
];

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The whole exposition.
pub fn render(stats: &NodeStats) -> String {
    let mut out = String::with_capacity(8 * 1024);

    header(
        &mut out,
        "haven_sfu_workers",
        "gauge",
        "Media worker threads.",
    );
    let _ = writeln!(out, "haven_sfu_workers {}", stats.workers.len());
    header(
        &mut out,
        "haven_sfu_capacity",
        "gauge",
        "Most participants the node accepts.",
    );
    let _ = writeln!(out, "haven_sfu_capacity {}", stats.capacity);
    header(
        &mut out,
        "haven_sfu_draining",
        "gauge",
        "1 while the node drains (refuses new offers).",
    );
    let _ = writeln!(out, "haven_sfu_draining {}", u8::from(stats.is_draining()));
    header(
        &mut out,
        "haven_sfu_control_link_up",
        "gauge",
        "1 while registered with signaling.",
    );
    let state = stats.link_state();
    let _ = writeln!(
        out,
        "haven_sfu_control_link_up{{state=\"{}\"}} {}",
        state.as_str(),
        u8::from(state == crate::node::stats::LinkState::Up)
    );
    for (name, help, a) in [
        (
            "haven_sfu_control_link_connects_total",
            "Registrations with signaling.",
            &stats.link_connects,
        ),
        (
            "haven_sfu_control_messages_received_total",
            "Control messages from signaling.",
            &stats.control_in,
        ),
        (
            "haven_sfu_control_messages_sent_total",
            "Control messages to signaling.",
            &stats.control_out,
        ),
        (
            "haven_sfu_control_messages_dropped_total",
            "Control messages dropped (link down or congested).",
            &stats.control_dropped,
        ),
        (
            "haven_sfu_offers_refused_draining_total",
            "Offers refused because the node drains.",
            &stats.offers_refused_draining,
        ),
    ] {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", get(a));
    }
    header(
        &mut out,
        "haven_sfu_process_cpu_permille",
        "gauge",
        "Process CPU over the last heartbeat interval, per mille of one core.",
    );
    let _ = writeln!(
        out,
        "haven_sfu_process_cpu_permille {}",
        get(&stats.process_cpu_permille)
    );
    header(
        &mut out,
        "process_cpu_seconds_total",
        "counter",
        "CPU time of the whole process.",
    );
    let _ = writeln!(
        out,
        "process_cpu_seconds_total {:.6}",
        process_cpu_time().as_secs_f64()
    );

    for (name, kind, help, field) in WORKER_FAMILIES {
        header(&mut out, name, kind, help);
        for (i, w) in stats.workers.iter().enumerate() {
            let v = get(field(&w.gauges));
            if *name == "haven_sfu_worker_cpu_seconds_total" {
                let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {:.6}", v as f64 / 1e9);
            } else {
                let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {v}");
            }
        }
    }

    header(
        &mut out,
        "haven_sfu_dropped_total",
        "counter",
        "Datagrams, packets or messages dropped, by reason.",
    );
    for (i, w) in stats.workers.iter().enumerate() {
        for (k, reason) in DropReason::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "haven_sfu_dropped_total{{worker=\"{i}\",reason=\"{}\"}} {}",
                reason.as_str(),
                get(&w.drops[k])
            );
        }
    }

    let name = "haven_sfu_forwarding_lateness_seconds";
    header(&mut out, name, "histogram", "From a batch of datagrams leaving the socket to everything it caused being handed to the kernel, per datagram.");
    for (i, w) in stats.workers.iter().enumerate() {
        let (buckets, sum, count) = w.lateness.snapshot();
        for (b, c) in LATENESS_BUCKETS.iter().zip(&buckets) {
            let _ = writeln!(out, "{name}_bucket{{worker=\"{i}\",le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{worker=\"{i}\",le=\"+Inf\"}} {}",
            buckets.last().copied().unwrap_or(0)
        );
        let _ = writeln!(out, "{name}_sum{{worker=\"{i}\"}} {sum:.9}");
        let _ = writeln!(out, "{name}_count{{worker=\"{i}\"}} {count}");
    }

    header(
        &mut out,
        "haven_sfu_worker_up",
        "gauge",
        "1 while the worker thread runs.",
    );
    for (i, w) in stats.workers.iter().enumerate() {
        let up = !w.stopped.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "haven_sfu_worker_up{{worker=\"{i}\"}} {}",
            u8::from(up)
        );
    }
    out
}

/// A sample's value from an exposition, by its full series name (with labels, as printed).
/// For tests and tools that scrape `/metrics`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Sum of every sample of `family` whose labels contain all of `labels` (`k="v"` pairs).
pub fn sum_samples(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            (name == family && labels.iter().all(|kv| rest.contains(kv)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_parses_back() {
        let stats = NodeStats::new(2, 100);
        stats.workers[1]
            .gauges
            .rtp_forwarded
            .store(42, Ordering::Relaxed);
        stats.workers[0].drops[1].store(7, Ordering::Relaxed);
        stats.workers[1]
            .lateness
            .observe(std::time::Duration::from_micros(80), 5);
        let text = render(&stats);
        for (name, ..) in WORKER_FAMILIES {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert_eq!(
            sample(&text, "haven_sfu_rtp_packets_forwarded_total{worker=\"1\"}"),
            Some(42.0)
        );
        assert_eq!(
            sum_samples(&text, "haven_sfu_dropped_total", &["reason=\"garbage\""]),
            7.0
        );
        assert_eq!(
            sample(
                &text,
                "haven_sfu_forwarding_lateness_seconds_bucket{worker=\"1\",le=\"0.0001\"}"
            ),
            Some(5.0)
        );
        assert_eq!(sample(&text, "haven_sfu_workers"), Some(2.0));
        // Every non-comment line is `series value` with a number.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{l}");
        }
    }
}
