//! The real `haven-sfu` binary as a load target (`--target haven-sfu`), and what every
//! real-node target shares: finding the binary, reading its Prometheus `/metrics`.
//!
//! The harness plays signaling: it runs the QUIC control peer ([`crate::control_peer`]),
//! generates a `GrantSigner` whose public key it hands to the node, spawns the node with the
//! peer's address, certificate fingerprint and a node secret, waits for its ready file and
//! its registration, then sends every join as a control `offer` with a freshly minted grant.
//! CPU and RSS are the node process's (`/proc/<pid>`); forwarded packets come from its
//! `/metrics` (`haven_sfu_rtp_packets_forwarded_total`), scraped with each sample.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use haven_proto::control::ControlBody;
use haven_proto::grant::GrantSigner;
use haven_proto::NodeId;

use haven_devstack::process::wait_for_exit;

use crate::control_peer::ControlPeer;
use crate::engine_shell::GrantMinter;
use crate::procstat::ProcTarget;
use crate::target::{JoinFailure, JoinRequest, ReplyTo, SfuCounters, SfuTarget};
use crate::LoadError;

const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(20);
const NODE_ID: &str = "loadtest-sfu";

/// A workspace binary: `$env_var`, else next to the running executable (so a release
/// harness runs the release node), else `target/debug`.
pub fn find_binary(name: &str, env_var: &str) -> Result<PathBuf, LoadError> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/haven-loadtest, or target/<profile>/deps/<test> under cargo test.
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join(name));
        }
    }
    candidates.push(haven_devstack::debug_bin_dir().join(name));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        LoadError::Target(format!(
            "no `{name}` binary next to the harness or in target/debug; build it \
                 (cargo build -p {name}) or set {env_var}"
        ))
    })
}

/// `GET http://addr/path` over a plain socket (HTTP/1.0, bounded by `timeout`).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    match body.split_once("\r\n\r\n") {
        Some((head, rest)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(rest.to_owned())
        }
        _ => Err(std::io::Error::other(format!(
            "GET {path}: unexpected response"
        ))),
    }
}

/// Sum of a metric over all its label sets in Prometheus text, if present.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.split_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // another metric whose name starts with `name`
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The node's counters, as its `/metrics` reports them.
pub fn counters_from_metrics(text: &str) -> Option<SfuCounters> {
    let get = |n: &str| metric_sum(text, n).map_or(0, |v| v as u64);
    // Without the forwarded counter the page is not the SFU's.
    metric_sum(text, "haven_sfu_rtp_packets_forwarded_total")?;
    Some(SfuCounters {
        forwarded: get("haven_sfu_rtp_packets_forwarded_total"),
        rtp_in: get("haven_sfu_rtp_packets_received_total"),
        udp_in: get("haven_sfu_udp_datagrams_received_total"),
        udp_out: get("haven_sfu_udp_datagrams_sent_total"),
        send_errors: get("haven_sfu_udp_send_errors_total"),
        participants: get("haven_sfu_participants"),
    })
}

/// Where a node's `/metrics` is: `http://host:port/metrics` → (address, path).
pub fn parse_metrics_url(url: &str) -> Result<(SocketAddr, String), LoadError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| LoadError::Target(format!("metrics URL {url:?} is not http://")))?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/metrics".to_owned()),
    };
    let addr = host
        .to_socket_addrs()
        .map_err(|e| LoadError::Target(format!("metrics URL {url:?}: {e}")))?
        .next()
        .ok_or_else(|| LoadError::Target(format!("metrics URL {url:?}: no address")))?;
    Ok((addr, path))
}

/// Scrape a node's counters (None when the scrape fails; the sample just lacks them).
pub fn scrape(addr: SocketAddr, path: &str) -> Option<SfuCounters> {
    let text = http_get(addr, path, Duration::from_millis(500)).ok()?;
    counters_from_metrics(&text)
}

/// The real node with the harness as its control peer.
pub struct HavenSfuTarget {
    peer: ControlPeer,
    minter: GrantMinter,
    child: Mutex<Option<Child>>,
    pid: u32,
    http: SocketAddr,
    media: String,
    dir: PathBuf,
}

fn free_port() -> Result<u16, LoadError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl HavenSfuTarget {
    pub fn start() -> Result<Self, LoadError> {
        let bin = find_binary("haven-sfu", "HAVEN_SFU_BIN")?;
        let dir = std::env::temp_dir().join(format!(
            "haven-loadtest-sfu-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let secret = format!("loadtest-{}", uuid::Uuid::new_v4());
        let peer = ControlPeer::start(&secret)?;
        let signer = GrantSigner::generate().map_err(|e| LoadError::Target(e.to_string()))?;
        let key = dir.join("grant-public-key.pem");
        std::fs::write(
            &key,
            signer
                .public_key_pem()
                .map_err(|e| LoadError::Target(e.to_string()))?,
        )?;
        let ready = dir.join("ready.json");
        let http: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = std::fs::File::create(dir.join("sfu.log"))?;
        let child = Command::new(&bin)
            .args(["--node-id", NODE_ID, "--media-bind", "127.0.0.1"])
            .args(["--signaling-addr", &peer.addr.to_string()])
            .args(["--signaling-cert-sha256", &peer.fingerprint])
            .args(["--node-secret", &secret])
            .arg("--grant-public-key")
            .arg(&key)
            .args(["--http-listen", &http.to_string()])
            .arg("--ready-file")
            .arg(&ready)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| LoadError::Target(format!("spawning {}: {e}", bin.display())))?;
        let pid = child.id();
        let mut target = Self {
            peer,
            minter: GrantMinter {
                signer,
                node: NodeId::new(NODE_ID),
            },
            child: Mutex::new(Some(child)),
            pid,
            http,
            media: String::new(),
            dir,
        };
        // From here on, dropping `target` (on error) stops the node.
        let info = target.wait_ready(&ready)?;
        target.media = info["media_bound"].to_string();
        if target.peer.wait_registration(START_TIMEOUT).is_none() {
            return Err(LoadError::Target(format!(
                "haven-sfu did not register over QUIC (refused: {}); log: {}",
                target.peer.refused(),
                target.dir.join("sfu.log").display()
            )));
        }
        Ok(target)
    }

    fn wait_ready(&self, ready: &Path) -> Result<serde_json::Value, LoadError> {
        let end = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(ready) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    return Ok(v);
                }
            }
            let exited = self
                .child
                .lock()
                .ok()
                .and_then(|mut c| c.as_mut().and_then(|c| c.try_wait().ok().flatten()));
            if let Some(status) = exited {
                return Err(LoadError::Target(format!(
                    "haven-sfu exited early ({status}); log: {}",
                    self.dir.join("sfu.log").display()
                )));
            }
            if Instant::now() >= end {
                return Err(LoadError::Target("haven-sfu wrote no ready file".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl SfuTarget for HavenSfuTarget {
    fn name(&self) -> String {
        format!("haven-sfu (pid {}, media {})", self.pid, self.media)
    }

    fn join(&self, req: JoinRequest, reply: ReplyTo) {
        let offer = match self.minter.offer(&req) {
            Ok(o) => o,
            Err(e) => return reply.send(Err(e)),
        };
        self.peer
            .request(ControlBody::Offer(offer), OFFER_TIMEOUT, move |r| {
                reply.send(match r {
                    Ok(ControlBody::Answer(a)) => Ok(a.sdp),
                    Ok(ControlBody::Error(e)) => {
                        Err(JoinFailure::new(format!("{:?}", e.code), e.message))
                    }
                    Ok(other) => Err(JoinFailure::new("control_unexpected", format!("{other:?}"))),
                    Err(e) => Err(JoinFailure::new("control", e.to_string())),
                })
            });
    }

    fn measured(&self) -> Option<ProcTarget> {
        Some(ProcTarget::process(self.pid))
    }

    fn rss_is_own(&self) -> bool {
        true
    }

    fn counters(&self) -> Option<SfuCounters> {
        scrape(self.http, "/metrics")
    }

    fn shutdown(&self) -> Option<bool> {
        let mut c = self.child.lock().ok()?.take()?;
        Some(stop_node(&mut c))
    }
}

/// How long a node may take to leave after its second SIGTERM (it closes every participant
/// and its control link, bounded by a few seconds) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Stop a node the way an operator does: SIGTERM starts its drain and a second one ends the
/// drain at once, so the node leaves through `main`. That is also when a build made for
/// profile-guided optimisation (`cargo xtask pgo`) writes its profile; a killed node writes
/// none. SIGKILL only if it is still there after [`STOP_TIMEOUT`]. True if it left by itself
/// with status 0 (a node that crashed on the way out, or before, is not clean either).
pub fn stop_node(child: &mut Child) -> bool {
    let Ok(pid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return false;
    };
    for wait in [Duration::from_millis(300), STOP_TIMEOUT] {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        // SAFETY: signalling our own child, which has not been reaped (try_wait said so).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if let Some(status) = wait_for_exit(child, wait) {
            return status.success();
        }
    }
    eprintln!("haven-sfu (pid {pid}) did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
    false
}

impl Drop for HavenSfuTarget {
    fn drop(&mut self) {
        self.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_labels() {
        let text = "# HELP x\nhaven_sfu_rtp_packets_forwarded_total{worker=\"0\"} 10\n\
                    haven_sfu_rtp_packets_forwarded_total{worker=\"1\"} 5\n\
                    haven_sfu_participants 3\nhaven_sfu_participants_extra 9\n";
        let c = counters_from_metrics(text).expect("counters");
        assert_eq!((c.forwarded, c.participants), (15, 3));
        assert!(counters_from_metrics("other 1\n").is_none());
        let (addr, path) = parse_metrics_url("http://127.0.0.1:9300/metrics").expect("url");
        assert_eq!((addr.port(), path.as_str()), (9300, "/metrics"));
    }
}
