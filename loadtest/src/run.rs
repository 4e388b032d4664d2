//! One run, start to figures: build the seeded plan, start the target and the UDP echo,
//! spawn the client workers, sample /proc and the counters every second while a progress bar
//! runs, join everything (bounded), then turn the raw material into the figures
//! performance.md defines.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::audio::{AudioSummary, FrameTable};
use crate::echo::EchoServer;
use crate::engine_shell::{EngineProcessTarget, EngineThreadTarget};
use crate::fleet::{assign_rooms, LiveCounters, Timeline, Worker, WorkerConfig, WorkerReport};
use crate::impair::ImpairCounters;
use crate::procstat::{rate_series, window_bounds, CpuDelta, ProcTarget, Sample, SeriesPoint};
use crate::relay::{RelayFigures, ShadowRelay};
use crate::scenario::{Plan, Scenario, Topology};
use crate::sfu_node::HavenSfuTarget;
use crate::stack_target::StackTarget;
use crate::stats::{DurationHistogram, LossTotals};
use crate::target::{SfuTarget, TargetKind};
use crate::LoadError;

/// CPU and the harness's own counters are read this often (from `/proc` and memory: free
/// for the target).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The SFU's `/metrics` is scraped at the two instants that bound the measuring window and
/// this often in between (for the time series). A scrape is a TCP connection and a render
/// on the node's control thread, CPU charged to the SFU: at one per second it was about a
/// third of that thread's CPU and ~3 % of a 10-participant node's, four times what a
/// Prometheus scraping every 15 s would cost it.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
/// Seconds of audio in the frame table (each publisher loops it from its own offset).
const AUDIO_SECONDS: u32 = 30;

pub struct RunOptions {
    pub scenario: Scenario,
    pub target: TargetKind,
    /// The harness binary, for the `engine` target and the relay (child processes);
    /// default: this executable.
    pub exe: Option<PathBuf>,
    pub progress: bool,
    /// `stack`: start a fresh stack even if a stack file names a running one.
    pub own_stack: bool,
    /// A plain UDP relay beside the target, fed a copy of the same RTP (performance.md's bar).
    pub relay_baseline: bool,
}

impl RunOptions {
    /// The harness binary that serves the child processes (`serve-engine`, `serve-relay`).
    fn harness_exe(&self) -> std::io::Result<PathBuf> {
        match &self.exe {
            Some(e) => Ok(e.clone()),
            None => std::env::current_exe(),
        }
    }
}

/// p50/p95/p99 of a distribution, `null` when there were no samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub samples: u64,
}

impl Percentiles {
    pub fn of(h: &DurationHistogram) -> Self {
        Self {
            p50: h.percentile_ms(50.0),
            p95: h.percentile_ms(95.0),
            p99: h.percentile_ms(99.0),
            samples: h.count(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AddedLatency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PacketRates {
    /// Datagrams into / out of the SFU per second (its own counters).
    pub sfu_in: Option<f64>,
    pub sfu_out: Option<f64>,
    /// RTP packets forwarded to subscribers per second.
    pub sfu_forwarded: Option<f64>,
    /// Datagrams all clients sent / received per second.
    pub clients_tx: f64,
    pub clients_rx: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientFigures {
    /// Datagrams/s and bytes/s a talking participant sends (what mesh multiplies).
    pub uplink_packets_per_s_per_speaker: Option<f64>,
    pub uplink_bytes_per_s_per_speaker: Option<f64>,
    pub uplink_packets_per_s_per_client: Option<f64>,
    pub uplink_bytes_per_s_per_client: Option<f64>,
    pub downlink_packets_per_s_per_client: Option<f64>,
    /// The harness's client threads' CPU over the window, per participant (% of a core).
    pub cpu_pct_per_client: Option<f64>,
    pub cpu_pct_total: Option<f64>,
}

/// Every figure of one run, with its parameters. Key names are the stable JSON contract
/// (loadtest/README.md).
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub target: String,
    pub target_kind: TargetKind,
    pub topology: Topology,
    pub rooms: u32,
    pub participants: u32,
    pub participants_per_room: Option<u32>,
    pub speakers_per_room: Option<u32>,
    pub slots: Option<u8>,
    pub duration_s: f64,
    pub join_rate: f64,
    pub impair: String,
    pub seed: u64,
    pub scenario: Scenario,
    pub join_ms: Percentiles,
    pub join_connect_ms: Percentiles,
    pub join_answer_ms: Percentiles,
    pub sfu_added_latency_ms: AddedLatency,
    pub path_latency_ms: Percentiles,
    pub echo_latency_ms: Percentiles,
    pub loss_pct: f64,
    pub jitter_ms: f64,
    pub jitter_ms_max: f64,
    pub late_packets: u64,
    pub receive: LossTotals,
    pub forwarded_packets: Option<u64>,
    pub cpu_us_per_forwarded_packet: Option<f64>,
    pub cpu_us_per_forwarded_packet_schedstat: Option<f64>,
    /// `--relay-baseline`: the plain relay's figures over the same window (same packets,
    /// same receivers, see `relay.rs`), and SFU CPU per forwarded packet ÷ the relay's, by
    /// utime + stime (the definition) and by schedstat (ns; finer at low rates, where a
    /// 15 s window holds only a few 10 ms ticks).
    pub relay: Option<RelayFigures>,
    pub cpu_ratio_vs_relay: Option<f64>,
    pub cpu_ratio_vs_relay_schedstat: Option<f64>,
    pub sfu_cpu_pct: Option<f64>,
    pub sfu_rss_bytes: Option<u64>,
    pub sfu_rss_bytes_per_participant: Option<f64>,
    pub packets_per_s: PacketRates,
    pub clients: ClientFigures,
    pub errors: u64,
    pub error_counts: BTreeMap<String, u64>,
    pub latency_unmatched: u64,
    pub slot_map_stale: u64,
    pub slot_map_updates: u64,
    pub impairment_applied: BTreeMap<String, ImpairCounters>,
    pub audio: AudioSummary,
    pub steady_window_s: f64,
    pub wall_s: f64,
    /// For a target that is a process of its own (`haven-sfu`, `engine-process`): whether
    /// it exited by itself with status 0 when stopped (for the node: two SIGTERMs, as an
    /// operator stops it), rather than crashing or being killed.
    pub target_left_cleanly: Option<bool>,
    /// /proc/loadavg (1 min) before and after: other work on the machine skews every figure.
    pub machine_load_before: Option<f64>,
    pub machine_load_after: Option<f64>,
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A run's figures plus the raw material for charts.
pub struct RunOutcome {
    pub result: RunResult,
    pub latency: DurationHistogram,
    pub echo: DurationHistogram,
    /// (t s, SFU CPU %, forwarded pkt/s, client rx pkt/s).
    pub series: Vec<SeriesPoint>,
}

pub fn run(opts: &RunOptions) -> Result<RunOutcome, LoadError> {
    let s = &opts.scenario;
    let wall0 = Instant::now();
    let load_before = load_avg();
    let table = Arc::new(match &s.audio_wav {
        Some(p) => FrameTable::from_wav(p)?,
        None => FrameTable::synthetic(s.seed, AUDIO_SECONDS)?,
    });
    let plan = Arc::new(Plan::build(s, table.len()));
    let topology = if opts.target.is_mesh() {
        Topology::Mesh
    } else {
        Topology::Sfu
    };
    let target: Option<Arc<dyn SfuTarget>> = match &opts.target {
        TargetKind::EngineThread => Some(Arc::new(EngineThreadTarget::start()?)),
        TargetKind::EngineProcess => {
            Some(Arc::new(EngineProcessTarget::start(opts.harness_exe()?)?))
        }
        TargetKind::HavenSfu => Some(Arc::new(HavenSfuTarget::start()?)),
        TargetKind::Stack => Some(Arc::new(StackTarget::start(&plan, s, opts.own_stack)?)),
        TargetKind::Mesh => None,
    };
    let echo = EchoServer::start()?;
    let measured = target.as_ref().and_then(|t| t.measured());
    // performance.md's bar: a plain relay beside the target, fed a copy of the same RTP.
    let relay = if opts.relay_baseline && topology == Topology::Sfu {
        Some(ShadowRelay::start(&opts.harness_exe()?)?)
    } else {
        None
    };

    let start = Instant::now() + Duration::from_millis(300);
    let steady_start = start + plan.ramp + s.settle;
    let steady_end = steady_start + s.duration;
    let timeline = Timeline {
        start,
        steady_start,
        steady_end,
        hard_end: steady_end + Duration::from_secs(1),
    };

    let live = Arc::new(LiveCounters::default());
    let mut handles = Vec::new();
    let mut tids = Vec::new();
    for (index, rooms) in assign_rooms(&plan, s.client_threads)
        .into_iter()
        .enumerate()
    {
        if rooms.is_empty() {
            continue;
        }
        let tid = Arc::new(AtomicU32::new(0));
        tids.push(tid.clone());
        let worker = Worker::new(WorkerConfig {
            index,
            topology,
            plan: plan.clone(),
            rooms,
            timeline,
            impair: s.impair,
            seed: s.seed,
            table: table.clone(),
            target: target.clone(),
            echo: Some(echo.addr),
            relay: relay.as_ref().map(ShadowRelay::addr),
            late_after: s.late_after,
            join_timeout: s.join_timeout,
            live: live.clone(),
            tid,
        })?;
        handles.push(
            std::thread::Builder::new()
                .name(format!("clients-{index}"))
                .spawn(move || worker.run())?,
        );
    }

    let total = timeline.hard_end.saturating_duration_since(wall0);
    let bar = if opts.progress {
        let b = ProgressBar::new(total.as_millis() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    let participants = plan.clients.len() as u64;
    let mut samples: Vec<Sample> = Vec::new();
    let give_up = timeline.hard_end + Duration::from_secs(10);
    // The window's bounds are sampled (and scraped) as they pass, not up to a second late.
    let mut bounds = [timeline.steady_start, timeline.steady_end]
        .into_iter()
        .peekable();
    let mut next_scrape = Instant::now();
    loop {
        let now = Instant::now();
        let mut at_bound = false;
        while bounds.next_if(|b| now >= *b).is_some() {
            at_bound = true;
        }
        let sfu = measured.and_then(|m| m.sample().ok());
        let counters = if at_bound || now >= next_scrape {
            next_scrape = now + SCRAPE_EVERY;
            target.as_ref().and_then(|t| t.counters())
        } else {
            None
        };
        let clients_ticks = tids
            .iter()
            .filter_map(|t| match t.load(Ordering::Relaxed) {
                0 => None,
                tid => ProcTarget::own_thread(tid).sample().ok(),
            })
            .map(|r| r.ticks)
            .sum();
        let sample = Sample {
            at: now,
            sfu,
            sfu_forwarded: counters.map(|c| c.forwarded),
            sfu_udp_in: counters.map(|c| c.udp_in),
            sfu_udp_out: counters.map(|c| c.udp_out),
            clients_tx: live.tx_packets.load(Ordering::Relaxed),
            clients_rx: live.rx_packets.load(Ordering::Relaxed),
            clients_ticks,
            participants: live.joined.load(Ordering::Relaxed),
            relay: relay.as_ref().and_then(ShadowRelay::sample),
            relay_rx: live.relay_rx.load(Ordering::Relaxed),
        };
        if let Some(prev) = samples.last() {
            let dt = now
                .saturating_duration_since(prev.at)
                .as_secs_f64()
                .max(1e-3);
            let phase = if now < timeline.steady_start {
                "joining"
            } else if now < timeline.steady_end {
                "measuring"
            } else {
                "finishing"
            };
            bar.set_message(format!(
                "{phase} · joined {}/{participants} · rx {:.0} pkt/s · errors {}",
                sample.participants,
                sample.clients_rx.saturating_sub(prev.clients_rx) as f64 / dt,
                live.errors.load(Ordering::Relaxed)
            ));
        }
        bar.set_position(now.saturating_duration_since(wall0).as_millis() as u64);
        samples.push(sample);
        // Counters of the SFU (and of the other samples) keep coming while workers finish.
        if handles.iter().all(|h| h.is_finished()) || now >= give_up {
            break;
        }
        let next = bounds
            .peek()
            .map_or(now + SAMPLE_EVERY, |b| (*b).min(now + SAMPLE_EVERY));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    bar.finish_and_clear();
    let mut merged = WorkerReport::default();
    let mut client_cpu: Option<CpuDelta> = None;
    let mut impair_up = ImpairCounters::default();
    let mut impair_down = ImpairCounters::default();
    for h in handles {
        if !h.is_finished() {
            // Bounded: a worker that ignored its deadline is abandoned, not awaited.
            *merged.errors.entry("worker_stuck".into()).or_default() += 1;
            continue;
        }
        let r = h
            .join()
            .map_err(|_| LoadError::Target("a client worker panicked".into()))?;
        merged.join.merge(&r.join);
        merged.join_connect.merge(&r.join_connect);
        merged.join_answer.merge(&r.join_answer);
        merged.latency.merge(&r.latency);
        merged.echo.merge(&r.echo);
        merged.loss.merge(&r.loss);
        for (k, v) in r.errors {
            *merged.errors.entry(k).or_default() += v;
        }
        merged.latency_unmatched += r.latency_unmatched;
        merged.slot_map_stale += r.slot_map_stale;
        merged.slot_map_updates += r.slot_map_updates;
        merged.clients.extend(r.clients);
        impair_up.merge(&r.impair_up);
        impair_down.merge(&r.impair_down);
        if let Some(c) = r.cpu {
            client_cpu = Some(match client_cpu {
                None => c,
                Some(acc) => CpuDelta {
                    wall_s: acc.wall_s.max(c.wall_s),
                    cpu_s: acc.cpu_s + c.cpu_s,
                    sched_cpu_s: match (acc.sched_cpu_s, c.sched_cpu_s) {
                        (Some(a), Some(b)) => Some(a + b),
                        _ => None,
                    },
                },
            });
        }
    }
    let target_name = target
        .as_ref()
        .map_or_else(|| "mesh (peers connect to each other)".into(), |t| t.name());
    let rss_is_own = target.as_ref().is_some_and(|t| t.rss_is_own());
    let target_left_cleanly = target.as_ref().and_then(|t| t.shutdown());
    echo.stop();

    let mut result = figures(FigureInputs {
        s,
        plan: &plan,
        kind: opts.target.clone(),
        topology,
        target_name,
        timeline,
        samples: &samples,
        merged: &merged,
        client_cpu,
        rss_is_own,
        impair_up,
        impair_down,
        audio: table.summary(),
        wall_s: wall0.elapsed().as_secs_f64(),
        target_left_cleanly,
    });
    drop(relay);
    result.machine_load_before = load_before;
    result.machine_load_after = load_avg();
    Ok(RunOutcome {
        result,
        series: rate_series(&samples, start),
        latency: merged.latency,
        echo: merged.echo,
    })
}

struct FigureInputs<'a> {
    s: &'a Scenario,
    plan: &'a Plan,
    kind: TargetKind,
    topology: Topology,
    target_name: String,
    timeline: Timeline,
    samples: &'a [Sample],
    merged: &'a WorkerReport,
    client_cpu: Option<CpuDelta>,
    rss_is_own: bool,
    impair_up: ImpairCounters,
    impair_down: ImpairCounters,
    audio: AudioSummary,
    wall_s: f64,
    target_left_cleanly: Option<bool>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut n, mut sum) = (0usize, 0.0);
    for x in v {
        n += 1;
        sum += x;
    }
    (n > 0).then(|| sum / n as f64)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn figures(i: FigureInputs<'_>) -> RunResult {
    let s = i.s;
    let m = i.merged;
    let window = window_bounds(i.samples, i.timeline.steady_start, i.timeline.steady_end);
    let (mut cpu, mut forwarded, mut rates) = (None, None, PacketRates::default());
    let mut relay = None;
    if let Some((a, b)) = window {
        if let (Some(x), Some(y)) = (a.relay, b.relay) {
            relay = Some(RelayFigures::over(
                &x,
                &y,
                b.relay_rx.saturating_sub(a.relay_rx),
            ));
        }
        let wall = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-3);
        if let (Some(x), Some(y)) = (a.sfu, b.sfu) {
            cpu = Some(CpuDelta::between(&x, &y));
        }
        if let (Some(x), Some(y)) = (a.sfu_forwarded, b.sfu_forwarded) {
            forwarded = Some(y.saturating_sub(x));
            rates.sfu_forwarded = Some(y.saturating_sub(x) as f64 / wall);
        }
        rates.clients_tx = b.clients_tx.saturating_sub(a.clients_tx) as f64 / wall;
        rates.clients_rx = b.clients_rx.saturating_sub(a.clients_rx) as f64 / wall;
        // Datagrams in and out of the SFU, by its own counters.
        if let (Some(x), Some(y)) = (a.sfu_udp_in, b.sfu_udp_in) {
            rates.sfu_in = Some(y.saturating_sub(x) as f64 / wall);
        }
        if let (Some(x), Some(y)) = (a.sfu_udp_out, b.sfu_udp_out) {
            rates.sfu_out = Some(y.saturating_sub(x) as f64 / wall);
        }
    }
    // RSS slope: the SFU's memory before the first join vs. at the end of the window.
    let rss_before = i
        .samples
        .iter()
        .take_while(|x| x.at <= i.timeline.start)
        .filter_map(|x| x.sfu.and_then(|r| r.rss_bytes))
        .last();
    let rss_after = window.and_then(|(_, b)| b.sfu.and_then(|r| r.rss_bytes));
    let n = i.plan.clients.len() as u32;
    let rss_per = match (i.rss_is_own, rss_before, rss_after) {
        (true, Some(a), Some(b)) if n > 0 => Some(b.saturating_sub(a) as f64 / f64::from(n)),
        _ => None,
    };
    let client_util = i.client_cpu.map(|c| match c.sched_cpu_s {
        Some(ns_based) if c.wall_s > 0.0 => ns_based / c.wall_s,
        _ => c.utilisation(),
    });
    let speakers = m.clients.iter().filter(|c| c.speaker && c.seconds > 0.0);
    let all = m.clients.iter().filter(|c| c.seconds > 0.0);
    let clients = ClientFigures {
        uplink_packets_per_s_per_speaker: mean(
            speakers
                .clone()
                .map(|c| c.traffic.tx_packets as f64 / c.seconds),
        ),
        uplink_bytes_per_s_per_speaker: mean(
            speakers.map(|c| c.traffic.tx_bytes as f64 / c.seconds),
        ),
        uplink_packets_per_s_per_client: mean(
            all.clone().map(|c| c.traffic.tx_packets as f64 / c.seconds),
        ),
        uplink_bytes_per_s_per_client: mean(
            all.clone().map(|c| c.traffic.tx_bytes as f64 / c.seconds),
        ),
        downlink_packets_per_s_per_client: mean(
            all.map(|c| c.traffic.rx_packets as f64 / c.seconds),
        ),
        // schedstat (ns) when available: clock ticks are too coarse for a few clients.
        cpu_pct_per_client: client_util.map(|u| u * 100.0 / f64::from(n.max(1))),
        cpu_pct_total: client_util.map(|u| u * 100.0),
    };
    let path = Percentiles::of(&m.latency);
    let echo = Percentiles::of(&m.echo);
    let diff = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let uniform = s.uniform_room();
    let mut impairment_applied = BTreeMap::new();
    impairment_applied.insert("uplink".to_owned(), i.impair_up);
    impairment_applied.insert("downlink".to_owned(), i.impair_down);
    let cpu_per_packet = cpu.and_then(|c| forwarded.and_then(|f| c.us_per(f)));
    let cpu_per_packet_sched = cpu.and_then(|c| forwarded.and_then(|f| c.sched_us_per(f)));
    RunResult {
        target: i.target_name,
        target_kind: i.kind,
        topology: i.topology,
        rooms: s.rooms(),
        participants: n,
        participants_per_room: uniform.map(|g| g.participants),
        speakers_per_room: uniform.map(|g| g.speakers),
        slots: uniform.map(|g| g.slots),
        duration_s: s.duration.as_secs_f64(),
        join_rate: s.join_rate,
        impair: s.impair.to_string(),
        seed: s.seed,
        scenario: s.clone(),
        join_ms: Percentiles::of(&m.join),
        join_connect_ms: Percentiles::of(&m.join_connect),
        join_answer_ms: Percentiles::of(&m.join_answer),
        sfu_added_latency_ms: AddedLatency {
            p50: diff(m.latency.percentile_ms(50.0), m.echo.percentile_ms(50.0)),
            p99: diff(m.latency.percentile_ms(99.0), m.echo.percentile_ms(99.0)),
        },
        path_latency_ms: path,
        echo_latency_ms: echo,
        loss_pct: m.loss.loss_pct(),
        jitter_ms: m.loss.jitter_ms_mean,
        jitter_ms_max: m.loss.jitter_ms_max,
        late_packets: m.loss.late,
        receive: m.loss.clone(),
        forwarded_packets: forwarded,
        cpu_us_per_forwarded_packet: cpu_per_packet,
        cpu_us_per_forwarded_packet_schedstat: cpu_per_packet_sched,
        cpu_ratio_vs_relay: ratio(
            cpu_per_packet,
            relay.as_ref().and_then(|r| r.cpu_us_per_forwarded_packet),
        ),
        cpu_ratio_vs_relay_schedstat: ratio(
            cpu_per_packet_sched,
            relay
                .as_ref()
                .and_then(|r| r.cpu_us_per_forwarded_packet_schedstat),
        ),
        relay,
        sfu_cpu_pct: cpu.map(|c| c.utilisation() * 100.0),
        sfu_rss_bytes: if i.rss_is_own { rss_after } else { None },
        sfu_rss_bytes_per_participant: rss_per,
        packets_per_s: rates,
        clients,
        errors: m.errors.values().sum(),
        error_counts: m.errors.clone(),
        latency_unmatched: m.latency_unmatched,
        slot_map_stale: m.slot_map_stale,
        slot_map_updates: m.slot_map_updates,
        impairment_applied,
        audio: i.audio,
        steady_window_s: window.map_or(0.0, |(a, b)| {
            b.at.saturating_duration_since(a.at).as_secs_f64()
        }),
        wall_s: i.wall_s,
        target_left_cleanly: i.target_left_cleanly,
        machine_load_before: None,
        machine_load_after: None,
    }
}
