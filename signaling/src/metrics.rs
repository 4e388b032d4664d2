//! Prometheus metrics as a handful of atomics, rendered in the text exposition format.
//!
//! A dozen series do not justify a metrics framework: counters and gauges are `AtomicU64`s
//! updated without locks on hot paths, and the one latency histogram (join authorization)
//! has fixed buckets. `/metrics` renders them on demand.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if s <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every series the service exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub ws_connections: AtomicU64,
    pub ws_messages_in: AtomicU64,
    pub ws_messages_out: AtomicU64,
    pub ws_slow_consumers_dropped: AtomicU64,
    pub ws_errors_sent: AtomicU64,
    pub auth_ok: AtomicU64,
    pub auth_refused: AtomicU64,
    pub joins_ok: AtomicU64,
    pub joins_refused: AtomicU64,
    pub joins_failed: AtomicU64,
    pub voice_sessions: AtomicU64,
    pub revocations: AtomicU64,
    pub sfu_nodes: AtomicU64,
    pub sfu_requests_failed: AtomicU64,
    pub db_events: AtomicU64,
    pub db_events_dropped: AtomicU64,
    pub db_listener_reconnects: AtomicU64,
    pub db_errors: AtomicU64,
    pub events_delivered: AtomicU64,
    pub jwks_refreshes: AtomicU64,
    pub join_authorization_seconds: Histogram,
    pub join_seconds: Histogram,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn set(g: &AtomicU64, v: u64) {
    g.store(v, Ordering::Relaxed);
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let series: [(&str, &str, &str, &AtomicU64); 20] = [
            (
                "haven_signaling_ws_connections",
                "gauge",
                "Open WebSocket connections.",
                &self.ws_connections,
            ),
            (
                "haven_signaling_ws_messages_in_total",
                "counter",
                "Client frames received.",
                &self.ws_messages_in,
            ),
            (
                "haven_signaling_ws_messages_out_total",
                "counter",
                "Messages queued to clients.",
                &self.ws_messages_out,
            ),
            (
                "haven_signaling_ws_slow_consumers_dropped_total",
                "counter",
                "Connections closed because their send queue was full.",
                &self.ws_slow_consumers_dropped,
            ),
            (
                "haven_signaling_ws_errors_sent_total",
                "counter",
                "Error replies sent to clients.",
                &self.ws_errors_sent,
            ),
            (
                "haven_signaling_auth_ok_total",
                "counter",
                "Access tokens accepted.",
                &self.auth_ok,
            ),
            (
                "haven_signaling_auth_refused_total",
                "counter",
                "Access tokens refused.",
                &self.auth_refused,
            ),
            (
                "haven_signaling_joins_ok_total",
                "counter",
                "Voice joins completed.",
                &self.joins_ok,
            ),
            (
                "haven_signaling_joins_refused_total",
                "counter",
                "Voice joins the database refused.",
                &self.joins_refused,
            ),
            (
                "haven_signaling_joins_failed_total",
                "counter",
                "Voice joins that failed for lack of a database or SFU node.",
                &self.joins_failed,
            ),
            (
                "haven_signaling_voice_sessions",
                "gauge",
                "Voice sessions in progress.",
                &self.voice_sessions,
            ),
            (
                "haven_signaling_revocations_total",
                "counter",
                "Participants removed from voice by kick, ban or permission loss.",
                &self.revocations,
            ),
            (
                "haven_signaling_sfu_nodes",
                "gauge",
                "Registered SFU nodes.",
                &self.sfu_nodes,
            ),
            (
                "haven_signaling_sfu_requests_failed_total",
                "counter",
                "Control requests to SFU nodes that failed or timed out.",
                &self.sfu_requests_failed,
            ),
            (
                "haven_signaling_db_events_total",
                "counter",
                "NOTIFY events received.",
                &self.db_events,
            ),
            (
                "haven_signaling_db_events_dropped_total",
                "counter",
                "NOTIFY payloads that could not be parsed.",
                &self.db_events_dropped,
            ),
            (
                "haven_signaling_db_listener_reconnects_total",
                "counter",
                "Reconnections of the LISTEN connection.",
                &self.db_listener_reconnects,
            ),
            (
                "haven_signaling_db_errors_total",
                "counter",
                "Failed service-role database queries.",
                &self.db_errors,
            ),
            (
                "haven_signaling_events_delivered_total",
                "counter",
                "Events and roster updates delivered to connections.",
                &self.events_delivered,
            ),
            (
                "haven_signaling_jwks_refreshes_total",
                "counter",
                "JWKS fetches.",
                &self.jwks_refreshes,
            ),
        ];
        for (name, kind, help, v) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        self.join_authorization_seconds.render(
            &mut out,
            "haven_signaling_join_authorization_seconds",
            "Time of the authorize_voice_join RPC as the user.",
        );
        self.join_seconds.render(
            &mut out,
            "haven_signaling_join_seconds",
            "Time from a join request to the joined reply (authorization, placement, SFU offer/answer).",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        inc(&m.joins_ok);
        set(&m.sfu_nodes, 2);
        m.join_authorization_seconds
            .observe(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("haven_signaling_joins_ok_total 1\n"));
        assert!(
            text.contains("# TYPE haven_signaling_sfu_nodes gauge\nhaven_signaling_sfu_nodes 2\n")
        );
        assert!(
            text.contains("haven_signaling_join_authorization_seconds_bucket{le=\"0.0025\"} 0\n")
        );
        assert!(
            text.contains("haven_signaling_join_authorization_seconds_bucket{le=\"0.005\"} 1\n")
        );
        assert!(text.contains("haven_signaling_join_authorization_seconds_count 1\n"));
    }
}
