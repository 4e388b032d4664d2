//! The real `haven-sfu` binary as a child process: started with flags pointing at a
//! [`ControlPeer`](super::control_peer::ControlPeer), its ports read from `--ready-file`,
//! its `/healthz` and `/metrics` fetched over plain HTTP/1.1, stopped with SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use haven_proto::grant::GrantSigner;

pub struct NodeProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub media: Vec<SocketAddr>,
    pub node_id: String,
}

#[derive(serde::Deserialize)]
struct Ready {
    http: SocketAddr,
    media: Vec<SocketAddr>,
}

/// What to start: the binary, and who it registers with.
pub struct NodeSpec<'a> {
    pub binary: &'a Path,
    pub node_id: &'a str,
    pub signaling: SocketAddr,
    pub fingerprint: &'a str,
    pub secret: &'a str,
    pub signer: &'a GrantSigner,
    pub workers: usize,
    /// More flags.
    pub extra: &'a [&'a str],
}

impl NodeProcess {
    /// Start the binary and wait for its ready file.
    pub fn spawn(spec: &NodeSpec<'_>) -> Self {
        let NodeSpec {
            binary,
            node_id,
            signaling,
            fingerprint,
            secret,
            signer,
            workers,
            extra,
        } = *spec;
        let dir = std::env::temp_dir().join(format!("haven-sfu-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("grant.pub.pem");
        std::fs::write(&key, signer.public_key_pem().unwrap()).unwrap();
        let secret_file = dir.join("node-secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let ready = dir.join("ready.json");
        let log = std::fs::File::create(dir.join("sfu.log")).unwrap();
        let child = Command::new(binary)
            .args(["--node-id", node_id])
            .args(["--signaling-addr", &signaling.to_string()])
            .args(["--signaling-cert-sha256", fingerprint])
            .arg("--node-secret-file")
            .arg(&secret_file)
            .arg("--grant-public-key")
            .arg(&key)
            .args(["--workers", &workers.to_string()])
            .args(["--http-listen", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .env("RUST_LOG", "info,haven_sfu=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start haven-sfu");
        let mut node = Self {
            child,
            dir,
            http: "127.0.0.1:0".parse().unwrap(),
            media: Vec::new(),
            node_id: node_id.to_owned(),
        };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(r) = serde_json::from_str::<Ready>(&text) {
                    node.http = r.http;
                    node.media = r.media;
                    break;
                }
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("haven-sfu exited early ({status}):\n{}", node.log());
            }
            assert!(Instant::now() < end, "no ready file:\n{}", node.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sfu.log")).unwrap_or_default()
    }

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http, path)
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: sending a signal to our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time of the process from /proc, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds_precise(self.child.id())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// CPU time of every live thread of `pid`, from /proc/<pid>/task/*/schedstat (nanosecond
/// resolution, unlike the 10 ms ticks of /proc/<pid>/stat), in seconds. Falls back to
/// `proc_cpu_seconds` when schedstat is unavailable.
pub fn proc_cpu_seconds_precise(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return proc_cpu_seconds(pid);
    };
    let mut nanos = 0u64;
    let mut any = false;
    for t in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        if let Some(v) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            nanos += v;
            any = true;
        }
    }
    if any {
        nanos as f64 / 1e9
    } else {
        proc_cpu_seconds(pid)
    }
}

/// utime + stime of `pid` (all threads) from /proc/<pid>/stat, in seconds.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after ") ".
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz.max(1.0)
}
