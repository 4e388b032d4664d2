//! What a run leaves behind: the summary table on stdout, the JSON file (every figure and
//! the parameters; stable keys documented in loadtest/README.md), and an HTML page with SVG
//! charts (latency histogram, CPU and packets over time) drawn with plotters' SVG backend.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::procstat::SeriesPoint;
use crate::run::{RunOutcome, RunResult};
use crate::LoadError;

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

/// (label, value as text, value as number for ratios).
fn rows(r: &RunResult) -> Vec<(&'static str, String, Option<f64>)> {
    let relay_us = r.relay.as_ref().and_then(|x| x.cpu_us_per_forwarded_packet);
    let relay_us_sched = r
        .relay
        .as_ref()
        .and_then(|x| x.cpu_us_per_forwarded_packet_schedstat);
    let relay_rate = r.relay.as_ref().map(|x| x.forwarded_per_s);
    let kib = |b: Option<f64>| b.map(|x| x / 1024.0);
    vec![
        ("target", r.target.clone(), None),
        (
            "rooms × participants",
            format!("{} rooms, {} participants", r.rooms, r.participants),
            None,
        ),
        ("impairment", r.impair.clone(), None),
        (
            "steady window (s)",
            format!("{:.1}", r.steady_window_s),
            None,
        ),
        ("join p50 (ms)", f(r.join_ms.p50, 1), r.join_ms.p50),
        ("join p95 (ms)", f(r.join_ms.p95, 1), r.join_ms.p95),
        ("join p99 (ms)", f(r.join_ms.p99, 1), r.join_ms.p99),
        (
            "  to DTLS connected p50 (ms)",
            f(r.join_connect_ms.p50, 1),
            r.join_connect_ms.p50,
        ),
        (
            "path latency p50 (ms)",
            f(r.path_latency_ms.p50, 2),
            r.path_latency_ms.p50,
        ),
        (
            "path latency p99 (ms)",
            f(r.path_latency_ms.p99, 2),
            r.path_latency_ms.p99,
        ),
        (
            "UDP echo p50 / p99 (ms)",
            format!(
                "{} / {}",
                f(r.echo_latency_ms.p50, 2),
                f(r.echo_latency_ms.p99, 2)
            ),
            None,
        ),
        (
            "SFU-added latency p50 (ms)",
            f(r.sfu_added_latency_ms.p50, 2),
            r.sfu_added_latency_ms.p50,
        ),
        (
            "SFU-added latency p99 (ms)",
            f(r.sfu_added_latency_ms.p99, 2),
            r.sfu_added_latency_ms.p99,
        ),
        ("loss (%)", format!("{:.3}", r.loss_pct), Some(r.loss_pct)),
        (
            "jitter RFC 3550 mean (ms)",
            format!("{:.2}", r.jitter_ms),
            Some(r.jitter_ms),
        ),
        (
            "late packets",
            r.late_packets.to_string(),
            Some(r.late_packets as f64),
        ),
        (
            "forwarded packets",
            r.forwarded_packets.map_or("n/a".into(), |x| x.to_string()),
            r.forwarded_packets.map(|x| x as f64),
        ),
        ("SFU CPU (% of a core)", f(r.sfu_cpu_pct, 1), r.sfu_cpu_pct),
        (
            "SFU CPU µs / forwarded pkt",
            f(r.cpu_us_per_forwarded_packet, 2),
            r.cpu_us_per_forwarded_packet,
        ),
        (
            "  (schedstat)",
            f(r.cpu_us_per_forwarded_packet_schedstat, 2),
            r.cpu_us_per_forwarded_packet_schedstat,
        ),
        ("plain relay µs / forwarded pkt", f(relay_us, 2), relay_us),
        ("  (schedstat)", f(relay_us_sched, 2), relay_us_sched),
        ("  relay forwarded pkt/s", f(relay_rate, 0), relay_rate),
        (
            "SFU ÷ relay CPU per pkt",
            f(r.cpu_ratio_vs_relay, 2),
            r.cpu_ratio_vs_relay,
        ),
        (
            "  (schedstat)",
            f(r.cpu_ratio_vs_relay_schedstat, 2),
            r.cpu_ratio_vs_relay_schedstat,
        ),
        (
            "SFU RSS per participant (KiB)",
            f(kib(r.sfu_rss_bytes_per_participant), 1),
            kib(r.sfu_rss_bytes_per_participant),
        ),
        (
            "SFU pkt/s in",
            f(r.packets_per_s.sfu_in, 0),
            r.packets_per_s.sfu_in,
        ),
        (
            "SFU pkt/s out",
            f(r.packets_per_s.sfu_out, 0),
            r.packets_per_s.sfu_out,
        ),
        (
            "clients pkt/s tx / rx",
            format!(
                "{:.0} / {:.0}",
                r.packets_per_s.clients_tx, r.packets_per_s.clients_rx
            ),
            None,
        ),
        (
            "uplink pkt/s per speaker",
            f(r.clients.uplink_packets_per_s_per_speaker, 1),
            r.clients.uplink_packets_per_s_per_speaker,
        ),
        (
            "uplink kbit/s per speaker",
            f(
                r.clients
                    .uplink_bytes_per_s_per_speaker
                    .map(|b| b * 8.0 / 1000.0),
                1,
            ),
            r.clients
                .uplink_bytes_per_s_per_speaker
                .map(|b| b * 8.0 / 1000.0),
        ),
        (
            "client CPU per participant (%)",
            f(r.clients.cpu_pct_per_client, 3),
            r.clients.cpu_pct_per_client,
        ),
        ("errors", r.errors.to_string(), Some(r.errors as f64)),
        (
            "machine load avg before / after",
            format!(
                "{} / {}",
                f(r.machine_load_before, 2),
                f(r.machine_load_after, 2)
            ),
            None,
        ),
    ]
}

/// The summary table for one run.
pub fn summary_table(r: &RunResult) -> String {
    let rows = rows(r);
    let w = rows
        .iter()
        .map(|(k, _, _)| k.chars().count())
        .max()
        .unwrap_or(10);
    let mut out = String::new();
    for (k, v, _) in &rows {
        let _ = writeln!(out, "{k:<w$}  {v}");
    }
    if !r.error_counts.is_empty() {
        let kinds: Vec<String> = r
            .error_counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "{:<w$}  {}", "error kinds", kinds.join(", "));
    }
    out
}

/// Side by side, with B/A ratios.
pub fn compare_table(a: &RunResult, b: &RunResult) -> String {
    let (ra, rb) = (rows(a), rows(b));
    let w = ra
        .iter()
        .map(|(k, _, _)| k.chars().count())
        .max()
        .unwrap_or(10);
    let cw = ra
        .iter()
        .map(|(_, v, _)| v.chars().count())
        .max()
        .unwrap_or(10)
        .clamp(12, 44);
    let mut out = String::new();
    let _ = writeln!(out, "{:<w$}  {:<cw$}  {:<cw$}  B/A", "", "A", "B");
    for ((k, va, na), (_, vb, nb)) in ra.iter().zip(&rb) {
        let ratio = match (na, nb) {
            (Some(x), Some(y)) if x.abs() > 1e-12 => format!("{:.2}×", y / x),
            _ => String::new(),
        };
        let _ = writeln!(out, "{k:<w$}  {va:<cw$}  {vb:<cw$}  {ratio}");
    }
    out
}

/// Ratios B/A of the headline figures, for the JSON of a `--compare` run.
pub fn ratios(a: &RunResult, b: &RunResult) -> serde_json::Value {
    let r = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if x.abs() > 1e-12 => Some(y / x),
        _ => None,
    };
    serde_json::json!({
        "join_ms_p50": r(a.join_ms.p50, b.join_ms.p50),
        "join_ms_p99": r(a.join_ms.p99, b.join_ms.p99),
        "path_latency_ms_p50": r(a.path_latency_ms.p50, b.path_latency_ms.p50),
        "sfu_added_latency_ms_p50": r(a.sfu_added_latency_ms.p50, b.sfu_added_latency_ms.p50),
        "cpu_us_per_forwarded_packet": r(a.cpu_us_per_forwarded_packet, b.cpu_us_per_forwarded_packet),
        "uplink_packets_per_s_per_speaker": r(a.clients.uplink_packets_per_s_per_speaker, b.clients.uplink_packets_per_s_per_speaker),
        "uplink_bytes_per_s_per_speaker": r(a.clients.uplink_bytes_per_s_per_speaker, b.clients.uplink_bytes_per_s_per_speaker),
        "client_cpu_pct_per_client": r(a.clients.cpu_pct_per_client, b.clients.cpu_pct_per_client),
        "loss_pct": r(Some(a.loss_pct), Some(b.loss_pct)),
    })
}

#[derive(Serialize)]
struct CompareJson<'a> {
    compare: [&'a RunResult; 2],
    ratios_b_over_a: serde_json::Value,
}

pub fn write_json(path: &Path, runs: &[&RunOutcome]) -> Result<(), LoadError> {
    let text = match runs {
        [one] => serde_json::to_string_pretty(&one.result),
        [a, b] => serde_json::to_string_pretty(&CompareJson {
            compare: [&a.result, &b.result],
            ratios_b_over_a: ratios(&a.result, &b.result),
        }),
        _ => return Err(LoadError::Report("one or two runs".into())),
    }
    .map_err(|e| LoadError::Report(e.to_string()))?;
    std::fs::write(path, text)?;
    Ok(())
}

fn draw_err<E: std::fmt::Debug>(e: E) -> LoadError {
    LoadError::Report(format!("chart: {e:?}"))
}

/// Histogram of path latency (through the target) and of the UDP echo, 0.5 ms bins.
pub fn latency_svg(o: &RunOutcome) -> Result<String, LoadError> {
    let bin = 0.5;
    let path = o.latency.bins(bin, 80);
    let echo = o.echo.bins(bin, 80);
    let norm = |v: &[u64]| {
        let n: u64 = v.iter().sum();
        v.iter()
            .map(|&c| {
                if n > 0 {
                    c as f64 * 100.0 / n as f64
                } else {
                    0.0
                }
            })
            .collect::<Vec<f64>>()
    };
    let (p, e) = (norm(&path), norm(&echo));
    let top = p.iter().chain(&e).cloned().fold(1.0, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Latency publisher → subscriber (and UDP echo)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..(bin * 80.0), 0.0..top)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("ms")
            .y_desc("% of packets")
            .draw()
            .map_err(draw_err)?;
        for (series, color, label) in [(&p, BLUE, "through target"), (&e, RED, "UDP echo")] {
            chart
                .draw_series(LineSeries::new(
                    series
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| (i as f64 * bin + bin / 2.0, v)),
                    color.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// A labelled line: which value of each series point to draw.
type ChartLine<'a> = (&'a str, RGBColor, fn(&SeriesPoint) -> f64);

/// One line chart over time from the run's series.
fn series_svg(
    o: &RunOutcome,
    caption: &str,
    y_desc: &str,
    lines: &[ChartLine<'_>],
) -> Result<String, LoadError> {
    let s = &o.series;
    let t_max = s.iter().map(|x| x.0).fold(1.0, f64::max);
    let y_max = s
        .iter()
        .flat_map(|x| lines.iter().map(move |(_, _, g)| g(x)))
        .fold(1.0, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("s since first join")
            .y_desc(y_desc)
            .draw()
            .map_err(draw_err)?;
        for &(label, color, g) in lines {
            chart
                .draw_series(LineSeries::new(
                    s.iter().map(|x| (x.0, g(x))),
                    color.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `DIR/index.html` with the table(s) and inline SVG charts, plus each chart as a file.
pub fn write_html(dir: &Path, runs: &[&RunOutcome]) -> Result<(), LoadError> {
    std::fs::create_dir_all(dir)?;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>haven-loadtest report</title>\
         <style>body{font-family:sans-serif;max-width:960px;margin:2em auto}\
         pre{background:#f4f4f4;padding:1em;overflow-x:auto}</style></head><body>\
         <h1>haven-loadtest report</h1>",
    );
    let table = match runs {
        [a, b] => compare_table(&a.result, &b.result),
        [one] => summary_table(&one.result),
        _ => return Err(LoadError::Report("one or two runs".into())),
    };
    let _ = write!(html, "<pre>{}</pre>", escape(&table));
    for (k, o) in runs.iter().enumerate() {
        let name = ["a", "b"][k.min(1)];
        let _ = write!(html, "<h2>{}</h2>", escape(&o.result.target));
        let charts = [
            ("latency", latency_svg(o)?),
            (
                "cpu",
                series_svg(
                    o,
                    "SFU CPU over time",
                    "% of one core",
                    &[("SFU process/thread", BLUE, |x| x.1)],
                )?,
            ),
            (
                "packets",
                series_svg(
                    o,
                    "Packets over time",
                    "packets/s",
                    &[
                        ("SFU forwarded RTP", BLUE, |x| x.2),
                        ("received by clients", RED, |x| x.3),
                    ],
                )?,
            ),
        ];
        for (chart, svg) in charts {
            std::fs::write(dir.join(format!("{chart}-{name}.svg")), &svg)?;
            html.push_str(&svg);
        }
    }
    html.push_str("</body></html>\n");
    std::fs::write(dir.join("index.html"), html)?;
    Ok(())
}
