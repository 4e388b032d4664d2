//! Child-process plumbing shared by every service the dev stack starts.
//!
//! Services must never outlive the command that started them (a dangling Postgres
//! would hold a port and a data dir), so children get a parent-death signal and a
//! polite interrupt followed by a kill on shutdown.

use std::ffi::CString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::DevStackError;

/// Which Unix user a child runs as.
#[derive(Debug, Clone, Copy)]
pub enum RunAs {
    /// The current user.
    Me,
    /// Another user (uid, gid): `postgres` when we are root.
    User(u32, u32),
}

impl RunAs {
    /// `postgres` when running as root (initdb refuses root), else the current user.
    pub fn postgres_if_root() -> Result<Self, DevStackError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(RunAs::Me);
        }
        let name = CString::new("postgres").map_err(|_| DevStackError::NoPostgresUser)?;
        // SAFETY: getpwnam returns a pointer into static storage or null; we copy the
        // two integers out immediately and never keep the pointer.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return Err(DevStackError::NoPostgresUser);
        }
        // SAFETY: pw was checked to be non-null above.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Ok(RunAs::User(uid, gid))
    }

    /// Makes `cmd` run as this user.
    pub fn apply(&self, cmd: &mut Command) {
        if let RunAs::User(uid, gid) = *self {
            cmd.uid(uid).gid(gid);
            // The inherited HOME would be root's and unreadable.
            cmd.env("HOME", "/tmp");
        }
    }

    /// Gives `path` to this user (no-op for `Me`).
    pub fn chown(&self, path: &Path) -> Result<(), DevStackError> {
        if let RunAs::User(uid, gid) = *self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }
}

/// Asks the kernel to send SIGINT to the child when the spawning thread dies, so
/// services stop even if the parent is killed with SIGKILL; also clears the signal mask.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    default_signal_mask(cmd);
}

/// Clears the signal mask in the child. xtask blocks SIGINT/SIGTERM to wait for them
/// synchronously, and a blocked mask survives exec: every process it starts (cargo, the
/// tests, the services they spawn) would otherwise ignore Ctrl-C and SIGTERM.
pub fn default_signal_mask(cmd: &mut Command) {
    // SAFETY: sigemptyset and pthread_sigmask are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Sends SIGINT, waits up to `grace`, then SIGKILLs.
pub fn interrupt_and_wait(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    }
    if wait_for_exit(child, grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How `child` exited, if it does within `within` (polled; it is reaped then).
pub fn wait_for_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd`, returning stdout, or an error with stderr when it fails.
pub fn output_checked(cmd: &mut Command, name: &str) -> Result<String, DevStackError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DevStackError::Spawn {
            program: name.into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(DevStackError::CommandFailed {
            command: name.into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A long-running child service (local API, signaling, SFU...) with its log file.
/// Dropping it stops it: SIGINT, then SIGKILL after a grace period.
#[derive(Debug)]
pub struct Service {
    name: String,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self, DevStackError> {
        let file = fs::OpenOptions::new().create(true).append(true).open(log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| DevStackError::Spawn {
            program: name.into(),
            source: e,
        })?;
        Ok(Service {
            name: name.into(),
            log: log.to_path_buf(),
            child: Some(child),
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), DevStackError> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(DevStackError::ServiceDied {
                    name: self.name.clone(),
                    status: status.to_string(),
                    log_tail: tail(&self.log, 30),
                });
            }
        }
        Ok(())
    }

    /// Polls `ready` every 50 ms until it returns true, the process dies, or `timeout`.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), DevStackError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DevStackError::Timeout {
                    what: self.name.clone(),
                    log_tail: tail(&self.log, 30),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the service (idempotent).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            interrupt_and_wait(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}
