//! A real PostgreSQL server for development and tests, run from Debian's binaries.
//!
//! `initdb` refuses to run as root and CI runs as root, so when we are root every
//! server process runs as the `postgres` system user with a data directory it owns.
//! The server is our child process (not daemonised by `pg_ctl`), so Ctrl-C or the
//! death of the parent stops it, and a fast shutdown is sent on drop.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{self, RunAs};
use crate::DevStackError;

/// Password of the local superuser and of `authenticator`. Local only: the server
/// listens on 127.0.0.1 and nothing here is ever used against a hosted project.
pub const LOCAL_PASSWORD: &str = "postgres";

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Where the cluster lives (`data/`, the socket dir and the log go inside).
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1; `None` picks 54322 when free, else any free port.
    pub port: Option<u16>,
}

/// A running PostgreSQL server owned by this process.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    child: Option<Child>,
}

impl PgCluster {
    /// Creates the cluster if needed (re-using existing data) and starts the server.
    pub fn start(opts: &PgOptions) -> Result<Self, DevStackError> {
        let bin = find_bindir()?;
        let run_as = RunAs::postgres_if_root()?;
        fs::create_dir_all(&opts.dir)?;
        run_as.chown(&opts.dir)?;
        let data = opts.dir.join("data");
        stop_stale_server(&bin, &data, &run_as);
        if !data.join("PG_VERSION").exists() {
            init_cluster(&bin, &opts.dir, &data, &run_as)?;
        }
        let port = match opts.port {
            Some(p) => p,
            None => crate::ports::preferred_or_free(54322)?,
        };
        let log_path = opts.dir.join("postgres.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        run_as.chown(&log_path)?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(&opts.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Durability is irrelevant for a dev/test cluster; start-up and the test
            // suite's many small transactions get much faster without fsync.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        run_as.apply(&mut cmd);
        process::die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| DevStackError::Spawn {
            program: "postgres".into(),
            source: e,
        })?;
        let mut cluster = PgCluster {
            dir: opts.dir.clone(),
            port,
            bin,
            child: Some(child),
        };
        cluster.wait_ready(Duration::from_secs(30), &log_path)?;
        Ok(cluster)
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the data dir, socket and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A `postgres://` URL for `user` (the local password) on database `db`.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{LOCAL_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Runs `psql` as the superuser against `db` with `ON_ERROR_STOP`, returning stdout.
    pub fn psql(&self, db: &str, args: &[&str]) -> Result<String, DevStackError> {
        let mut cmd = self.psql_command(db);
        cmd.args(args);
        process::output_checked(&mut cmd, "psql")
    }

    /// A `psql` command preconfigured for `db` (TCP, superuser, quiet, stop on error).
    pub fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .env("PGPASSWORD", LOCAL_PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// `pg_dump --schema-only` of `db`, for comparing schemas.
    pub fn dump_schema(&self, db: &str) -> Result<String, DevStackError> {
        let mut cmd = Command::new(self.bin.join("pg_dump"));
        cmd.args(["--schema-only", "--no-owner", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .env("PGPASSWORD", LOCAL_PASSWORD);
        process::output_checked(&mut cmd, "pg_dump")
    }

    /// Creates `db` unless it exists. Returns whether it was created.
    pub fn create_database(&self, db: &str) -> Result<bool, DevStackError> {
        let exists = self.psql(
            "postgres",
            &[
                "-tA",
                "-c",
                &format!("select 1 from pg_database where datname = '{db}'"),
            ],
        )?;
        if exists.trim() == "1" {
            return Ok(false);
        }
        self.psql("postgres", &["-c", &format!("create database \"{db}\"")])?;
        Ok(true)
    }

    /// Drops `db` if it exists (forcing other sessions off).
    pub fn drop_database(&self, db: &str) -> Result<(), DevStackError> {
        self.psql(
            "postgres",
            &[
                "-c",
                &format!("drop database if exists \"{db}\" with (force)"),
            ],
        )?;
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration, log: &Path) -> Result<(), DevStackError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(DevStackError::ServiceDied {
                        name: "postgres".into(),
                        status: status.to_string(),
                        log_tail: process::tail(log, 20),
                    });
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.psql("postgres", &["-c", "select 1"]).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DevStackError::Timeout {
                    what: format!("postgres on port {}", self.port),
                    log_tail: process::tail(log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fast shutdown: abort open transactions, then stop. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::interrupt_and_wait(&mut child, Duration::from_secs(20));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Debian installs server binaries under /usr/lib/postgresql/<major>/bin, off PATH.
fn find_bindir() -> Result<PathBuf, DevStackError> {
    if let Ok(dir) = std::env::var("HAVEN_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((major, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, p)| p)
        .ok_or(DevStackError::PostgresNotInstalled)
}

fn init_cluster(bin: &Path, dir: &Path, data: &Path, run_as: &RunAs) -> Result<(), DevStackError> {
    let pwfile = dir.join(".pwfile");
    {
        let mut f = fs::File::create(&pwfile)?;
        writeln!(f, "{LOCAL_PASSWORD}")?;
    }
    run_as.chown(&pwfile)?;
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(data)
        .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .arg("--no-sync");
    run_as.apply(&mut cmd);
    let result = process::output_checked(&mut cmd, "initdb");
    let _ = fs::remove_file(&pwfile);
    result.map(|_| ())
}

/// A server left running by a killed earlier run would hold the data dir: stop it.
fn stop_stale_server(bin: &Path, data: &Path, run_as: &RunAs) {
    let pidfile = data.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&pidfile) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: kill with signal 0 only checks whether the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return;
    }
    let mut cmd = Command::new(bin.join("pg_ctl"));
    cmd.arg("-D").arg(data).args(["stop", "-m", "fast", "-w"]);
    run_as.apply(&mut cmd);
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
}
