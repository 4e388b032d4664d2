//! What to run: the command line (clap), the scenario file (TOML, for mixed rooms), and the
//! concrete plan both turn into — every room, every participant, who speaks, when each one
//! joins — derived deterministically from the seed, so `--compare` and repeated runs load
//! the SFU identically.
//!
//! Timeline of a run: joins spread at `--join-rate` (per room, speakers first), then
//! `settle`, then the steady window of `--duration` where every rate, CPU and receive
//! figure is measured, then teardown. The whole run is bounded: it ends at
//! `steady_end + 1 s` whatever happens.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use haven_proto::{RoomId, SessionId, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::impair::{parse_duration_str, Impairment};
use crate::target::TargetKind;
use crate::LoadError;

/// Hard limits so a typo cannot take the machine down.
pub const MAX_PARTICIPANTS: u32 = 5000;
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, Parser)]
#[command(
    name = "haven-loadtest",
    version,
    about = "Load harness for Haven voice: simulated str0m participants sending real Opus \
             through the SFU (or a full mesh), with join time, SFU-added latency, loss, \
             jitter and SFU CPU per forwarded packet.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Internal: run the SFU engine for the `engine` target (JSON lines on stdin/stdout).
    #[command(hide = true)]
    ServeEngine,
    /// Internal: the plain UDP relay of `--relay-baseline`.
    #[command(hide = true)]
    ServeRelay,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Rooms (uniform scenario).
    #[arg(long)]
    pub rooms: Option<u32>,
    /// Participants per room.
    #[arg(long)]
    pub participants: Option<u32>,
    /// Participants talking at once per room (talk spurts with DTX silences); the others
    /// only listen.
    #[arg(long)]
    pub speakers: Option<u32>,
    /// Receive slots per subscriber (loudest-N forwarding).
    #[arg(long)]
    pub slots: Option<u8>,
    /// Steady measurement window, e.g. 30s (joins and settling come before it).
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Joins per second across the run.
    #[arg(long)]
    pub join_rate: Option<f64>,
    /// Impairment between clients and the SFU, end to end: loss=2%,jitter=20ms,reorder=1%
    /// (also delay=10ms).
    #[arg(long)]
    pub impair: Option<Impairment>,
    /// Seed for rooms, users, audio, talk patterns and impairment.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Scenario file (TOML) with mixed rooms; flags given explicitly override it.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// What to load: engine (haven-sfu's engine in a child process), engine-thread,
    /// haven-sfu, stack, mesh.
    #[arg(long, default_value = "engine")]
    pub target: TargetKind,
    /// sfu (default) or mesh: mesh is the same as --target mesh.
    #[arg(long, default_value = "sfu")]
    pub topology: Topology,
    /// Run two targets under the identical seeded load and print ratios, e.g. engine,mesh.
    #[arg(long, value_delimiter = ',')]
    pub compare: Option<Vec<TargetKind>>,
    /// Write every figure and the parameters as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HTML report with SVG charts into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Client worker threads (rooms are spread over them).
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// Time between the last join and the steady window.
    #[arg(long, value_parser = parse_duration_arg)]
    pub settle: Option<Duration>,
    /// A join not done (first media received) after this counts as an error.
    #[arg(long, value_parser = parse_duration_arg)]
    pub join_timeout: Option<Duration>,
    /// Jitter-buffer depth for "late packets".
    #[arg(long, value_parser = parse_duration_arg)]
    pub late_after: Option<Duration>,
    /// Send this 48 kHz mono 16-bit WAV instead of synthetic speech.
    #[arg(long)]
    pub audio_wav: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// `--target stack`: start a fresh local stack (temp dir, free ports) even when
    /// HAVEN_STACK_FILE / .haven/stack.json names a running one.
    #[arg(long)]
    pub own_stack: bool,
    /// Run a plain recvmmsg/sendmmsg UDP relay (child process) beside the SFU, fed a copy of
    /// every RTP packet the clients send it, and report SFU ÷ relay CPU per forwarded packet
    /// over the same window.
    #[arg(long)]
    pub relay_baseline: bool,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    // Bare numbers are seconds on the command line (`--duration 30`).
    if let Ok(secs) = s.trim().parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    parse_duration_str(s).ok_or_else(|| format!("`{s}`: use e.g. 30s, 500ms or 2m"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    Sfu,
    Mesh,
}

/// A group of identical rooms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomGroup {
    #[serde(default = "one")]
    pub count: u32,
    pub participants: u32,
    #[serde(default = "one")]
    pub speakers: u32,
    #[serde(default = "three")]
    pub slots: u8,
}

fn one() -> u32 {
    1
}
fn three() -> u8 {
    3
}

/// The scenario file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub duration: Option<String>,
    pub join_rate: Option<f64>,
    pub seed: Option<u64>,
    pub impair: Option<String>,
    pub settle: Option<String>,
    pub client_threads: Option<usize>,
    #[serde(default)]
    pub rooms: Vec<RoomGroup>,
}

/// Everything a run needs, resolved.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    pub groups: Vec<RoomGroup>,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    pub join_rate: f64,
    pub impair: Impairment,
    pub seed: u64,
    #[serde(serialize_with = "secs")]
    pub settle: Duration,
    #[serde(serialize_with = "secs")]
    pub join_timeout: Duration,
    #[serde(serialize_with = "secs")]
    pub late_after: Duration,
    pub client_threads: usize,
    pub audio_wav: Option<PathBuf>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Scenario {
    /// Defaults: 20 rooms × 5 participants × 1 speaker, 3 slots, 30 s, 50 joins/s.
    pub fn from_args(a: &RunArgs) -> Result<Self, LoadError> {
        let file = match &a.scenario {
            Some(p) => {
                let text = std::fs::read_to_string(p)?;
                toml::from_str::<ScenarioFile>(&text)
                    .map_err(|e| LoadError::Scenario(format!("{}: {e}", p.display())))?
            }
            None => ScenarioFile::default(),
        };
        let dur = |s: &Option<String>, what: &str| -> Result<Option<Duration>, LoadError> {
            s.as_deref()
                .map(|v| {
                    parse_duration_arg(v).map_err(|e| LoadError::Scenario(format!("{what}: {e}")))
                })
                .transpose()
        };
        let uniform = a.rooms.is_some() || a.participants.is_some() || a.speakers.is_some();
        let groups = if file.rooms.is_empty() || uniform {
            vec![RoomGroup {
                count: a.rooms.unwrap_or(20),
                participants: a.participants.unwrap_or(5),
                speakers: a.speakers.unwrap_or(1),
                slots: a.slots.unwrap_or(3),
            }]
        } else {
            let mut g = file.rooms.clone();
            if let Some(s) = a.slots {
                g.iter_mut().for_each(|r| r.slots = s);
            }
            g
        };
        let impair = match (&a.impair, &file.impair) {
            (Some(i), _) => *i,
            (None, Some(s)) => s
                .parse()
                .map_err(|e| LoadError::Scenario(format!("impair: {e}")))?,
            (None, None) => Impairment::default(),
        };
        let s = Scenario {
            groups,
            duration: a
                .duration
                .or(dur(&file.duration, "duration")?)
                .unwrap_or(Duration::from_secs(30)),
            join_rate: a.join_rate.or(file.join_rate).unwrap_or(50.0),
            impair,
            seed: a.seed.or(file.seed).unwrap_or(1),
            settle: a
                .settle
                .or(dur(&file.settle, "settle")?)
                .unwrap_or(Duration::from_secs(2)),
            join_timeout: a.join_timeout.unwrap_or(Duration::from_secs(10)),
            late_after: a.late_after.unwrap_or(Duration::from_millis(60)),
            client_threads: a.client_threads.or(file.client_threads).unwrap_or(1),
            audio_wav: a.audio_wav.clone(),
        };
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Scenario(m));
        if self.groups.is_empty() || self.total_participants() == 0 {
            return bad("no participants".into());
        }
        if self.total_participants() > MAX_PARTICIPANTS {
            return bad(format!("more than {MAX_PARTICIPANTS} participants"));
        }
        for g in &self.groups {
            if g.speakers > g.participants {
                return bad(format!(
                    "{} speakers in a room of {}",
                    g.speakers, g.participants
                ));
            }
            if g.slots == 0 {
                return bad("slots must be at least 1".into());
            }
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad(format!("duration must be in (0, {MAX_DURATION:?}]"));
        }
        if !(self.join_rate.is_finite() && self.join_rate > 0.0) {
            return bad("join rate must be positive".into());
        }
        if self.client_threads == 0 || self.client_threads > 64 {
            return bad("client threads must be 1..=64".into());
        }
        Ok(())
    }

    pub fn rooms(&self) -> u32 {
        self.groups.iter().map(|g| g.count).sum()
    }

    pub fn total_participants(&self) -> u32 {
        self.groups.iter().map(|g| g.count * g.participants).sum()
    }

    /// Participants per room when all rooms are alike, else `None`.
    pub fn uniform_room(&self) -> Option<&RoomGroup> {
        match self.groups.as_slice() {
            [g] => Some(g),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RoomPlan {
    pub index: usize,
    pub id: RoomId,
    pub slots: u8,
    pub speakers: u32,
    /// Client ids, in join order.
    pub members: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct ClientPlan {
    pub id: usize,
    pub room: usize,
    pub speaker: bool,
    /// When to join, from the run's start.
    pub join_offset: Duration,
    pub user: UserId,
    pub session: SessionId,
    pub name: String,
    /// Where in the frame table this publisher starts.
    pub frame_offset: usize,
    /// False for a lone speaker, who hears nobody and so has no "first media".
    pub expects_media: bool,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub rooms: Vec<RoomPlan>,
    pub clients: Vec<ClientPlan>,
    /// Offset of the last join.
    pub ramp: Duration,
}

impl Plan {
    pub fn build(s: &Scenario, table_len: usize) -> Plan {
        let mut rng = StdRng::seed_from_u64(s.seed);
        let uuid = |rng: &mut StdRng| uuid::Builder::from_random_bytes(rng.gen()).into_uuid();
        let mut rooms = Vec::new();
        for g in &s.groups {
            for _ in 0..g.count {
                rooms.push((
                    RoomPlan {
                        index: rooms.len(),
                        id: RoomId(uuid(&mut rng)),
                        slots: g.slots,
                        speakers: g.speakers,
                        members: Vec::new(),
                    },
                    g.participants,
                ));
            }
        }
        // Interleave rooms so they fill together; within a room speakers join first.
        let most = rooms.iter().map(|r| r.1).max().unwrap_or(0);
        let mut clients = Vec::new();
        for k in 0..most {
            for (room, n) in rooms.iter_mut() {
                if k >= *n {
                    continue;
                }
                let id = clients.len();
                let speaker = k < room.speakers;
                clients.push(ClientPlan {
                    id,
                    room: room.index,
                    speaker,
                    join_offset: Duration::from_secs_f64(id as f64 / s.join_rate),
                    user: UserId(uuid(&mut rng)),
                    session: SessionId(uuid(&mut rng)),
                    name: format!("load-{}-{}", room.index, k),
                    frame_offset: rng.gen_range(0..table_len.max(1)),
                    expects_media: !speaker || room.speakers > 1,
                });
                room.members.push(id);
            }
        }
        let ramp = clients.last().map_or(Duration::ZERO, |c| c.join_offset);
        Plan {
            rooms: rooms.into_iter().map(|r| r.0).collect(),
            clients,
            ramp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> RunArgs {
        let mut all = vec!["haven-loadtest"];
        all.extend_from_slice(v);
        Cli::try_parse_from(all).expect("parses").run
    }

    #[test]
    fn defaults_are_the_acceptance_scenario() {
        let s = Scenario::from_args(&args(&[])).unwrap();
        assert_eq!((s.rooms(), s.total_participants()), (20, 100));
        assert_eq!(s.duration, Duration::from_secs(30));
        assert!(s.impair.is_none());
    }

    #[test]
    fn flags_parse() {
        let a = args(&[
            "--rooms",
            "2",
            "--participants",
            "3",
            "--speakers",
            "2",
            "--duration",
            "5s",
            "--join-rate",
            "20",
            "--impair",
            "loss=5%,jitter=20ms",
            "--seed",
            "9",
            "--compare",
            "engine,mesh",
        ]);
        let s = Scenario::from_args(&a).unwrap();
        assert_eq!(s.total_participants(), 6);
        assert_eq!(s.duration, Duration::from_secs(5));
        assert!((s.impair.loss - 0.05).abs() < 1e-9);
        assert_eq!(
            a.compare,
            Some(vec![TargetKind::EngineProcess, TargetKind::Mesh])
        );
        assert!(
            Cli::try_parse_from(["x", "--speakers", "6", "--participants", "5"])
                .map(|c| Scenario::from_args(&c.run).is_err())
                .unwrap()
        );
    }

    #[test]
    fn scenario_file_mixes_rooms() {
        let dir = std::env::temp_dir().join(format!("lt-scn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("mixed.toml");
        std::fs::write(
            &f,
            "duration = \"10s\"\nimpair = \"loss=1%\"\n\n[[rooms]]\ncount = 3\nparticipants = 5\n\n\
             [[rooms]]\nparticipants = 50\nspeakers = 3\nslots = 3\n",
        )
        .unwrap();
        let s = Scenario::from_args(&args(&["--scenario", f.to_str().unwrap()])).unwrap();
        assert_eq!(s.rooms(), 4);
        assert_eq!(s.total_participants(), 65);
        assert_eq!(s.duration, Duration::from_secs(10));
        assert!((s.impair.loss - 0.01).abs() < 1e-9);
        std::fs::write(&f, "bogus = 1\n").unwrap();
        assert!(Scenario::from_args(&args(&["--scenario", f.to_str().unwrap()])).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plan_is_seeded_and_speakers_join_first() {
        let s = Scenario::from_args(&args(&["--rooms", "3", "--participants", "4"])).unwrap();
        let a = Plan::build(&s, 1000);
        let b = Plan::build(&s, 1000);
        assert_eq!(a.clients.len(), 12);
        assert_eq!(a.clients[5].user, b.clients[5].user);
        assert_eq!(a.rooms[1].id, b.rooms[1].id);
        for r in &a.rooms {
            assert!(a.clients[r.members[0]].speaker);
            assert!(
                !a.clients[r.members[0]].expects_media,
                "a lone speaker hears nobody"
            );
            assert!(r.members[1..].iter().all(|&m| !a.clients[m].speaker));
        }
        assert_eq!(a.ramp, Duration::from_secs_f64(11.0 / 50.0));
    }
}
