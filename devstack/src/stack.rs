//! Brings up the local stack in dependency order and tears it down in reverse.
//!
//! Used by `cargo xtask up` (persistent state in `.haven/`), `cargo xtask test` (a
//! throw-away stack on free ports) and the load harness (which may start its own). Only services whose crates exist in the workspace are started, so
//! the stack grows as the product does without anything pretending to run.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{DevStackError, PgCluster, PgOptions, Service, StackInfo, SupabaseProject};

type Result<T> = std::result::Result<T, DevStackError>;

fn missing(file: &str, key: &str) -> DevStackError {
    DevStackError::StackFile {
        path: PathBuf::from(file),
        message: format!("missing `{key}`"),
    }
}

/// The database every service uses, named like a hosted Supabase project's.
pub const MAIN_DB: &str = "postgres";

/// A running stack. Drop order matters: services first, Postgres last.
pub struct LocalStack {
    services: Vec<Service>,
    /// What signaling wrote to its ready file (node endpoint, fingerprint, grant key).
    signaling_ready: Option<serde_json::Value>,
    pub info: StackInfo,
    pub state_dir: PathBuf,
    pub pg: PgCluster,
}

/// Options shared by `up` and `test`.
pub struct StackOptions {
    pub state_dir: PathBuf,
    pub pg_port: Option<u16>,
    pub api_port: Option<u16>,
    pub signaling_port: Option<u16>,
    pub seed: bool,
}

impl LocalStack {
    pub fn start(root: &Path, opts: &StackOptions) -> Result<Self> {
        std::fs::create_dir_all(&opts.state_dir)?;
        let pg = PgCluster::start(&PgOptions {
            dir: opts.state_dir.join("pg"),
            port: opts.pg_port,
        })?;
        let project = SupabaseProject::at(root.join("supabase"));
        let report = project.apply(&pg, MAIN_DB, opts.seed)?;
        if !report.applied.is_empty() {
            eprintln!(
                "devstack: applied migrations: {}",
                report.applied.join(", ")
            );
        }
        let mut stack = LocalStack {
            services: Vec::new(),
            signaling_ready: None,
            info: StackInfo {
                database_url: pg.url("postgres", MAIN_DB),
                api_url: None,
                anon_key: None,
                service_role_key: None,
                jwks_url: None,
                issuer: None,
                signaling_url: None,
                sfu_metrics_url: None,
                sfu_pid: None,
            },
            state_dir: opts.state_dir.clone(),
            pg,
        };
        stack.start_local_api(opts.api_port)?;
        stack.start_signaling(opts.signaling_port)?;
        stack.start_sfu()?;
        stack.write_info()?;
        Ok(stack)
    }

    /// The local Supabase stand-in (`/auth/v1` + `/rest/v1`), when its crate exists.
    fn start_local_api(&mut self, port: Option<u16>) -> Result<()> {
        let bin = crate::debug_bin_dir().join("haven-local-api");
        if !bin.exists() {
            return Ok(());
        }
        let port = match port {
            Some(p) => p,
            None => crate::ports::preferred_or_free(54321)?,
        };
        let dir = self.state_dir.join("api");
        std::fs::create_dir_all(&dir)?;
        let api_file = dir.join("api.json");
        let _ = std::fs::remove_file(&api_file);
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--rest-db-uri")
            .arg(self.pg.url("authenticator", MAIN_DB))
            .arg("--auth-db-uri")
            .arg(self.pg.url("postgres", MAIN_DB))
            .arg("--state-dir")
            .arg(&dir);
        let mut svc = Service::spawn("haven-local-api", cmd, &self.state_dir.join("api.log"))?;
        svc.wait_until(Duration::from_secs(30), || {
            api_file.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        let api: api_json::ApiJson = api_json::read_api_json(&api_file)?;
        self.info.api_url = Some(api.url);
        self.info.anon_key = Some(api.anon_key);
        self.info.service_role_key = Some(api.service_role_key);
        self.info.jwks_url = api.jwks_url;
        self.info.issuer = api.issuer;
        self.services.push(svc);
        Ok(())
    }

    /// The signaling service (WebSocket + QUIC endpoint for SFU nodes), when built.
    fn start_signaling(&mut self, port: Option<u16>) -> Result<()> {
        let bin = crate::debug_bin_dir().join("haven-signaling");
        let (Some(api), Some(anon), Some(jwks)) = (
            self.info.api_url.clone(),
            self.info.anon_key.clone(),
            self.info.jwks_url.clone(),
        ) else {
            return Ok(());
        };
        if !bin.exists() {
            return Ok(());
        }
        let port = match port {
            Some(p) => p,
            None => crate::ports::preferred_or_free(54330)?,
        };
        let dir = self.state_dir.join("signaling");
        std::fs::create_dir_all(&dir)?;
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--node-listen")
            .arg(format!("127.0.0.1:{}", crate::ports::free_udp_port()?))
            .args(["--supabase-url", &api, "--supabase-anon-key", &anon])
            .args(["--jwks-url", &jwks])
            .args(["--database-url", &self.info.database_url])
            .arg("--state-dir")
            .arg(&dir)
            .arg("--ready-file")
            .arg(&ready)
            .env("HAVEN_NODE_SECRET", node_secret(&self.state_dir)?);
        if let Some(iss) = &self.info.issuer {
            cmd.args(["--jwt-issuer", iss]);
        }
        let mut svc = Service::spawn(
            "haven-signaling",
            cmd,
            &self.state_dir.join("signaling.log"),
        )?;
        svc.wait_until(Duration::from_secs(30), || ready.exists())?;
        let ready: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready)?)?;
        let http = ready["http_addr"]
            .as_str()
            .ok_or_else(|| missing("signaling ready.json", "http_addr"))?;
        self.info.signaling_url = Some(format!("http://{http}"));
        self.signaling_ready = Some(ready);
        self.services.push(svc);
        Ok(())
    }

    /// One SFU node, registered with signaling over QUIC, when built.
    fn start_sfu(&mut self) -> Result<()> {
        let bin = crate::debug_bin_dir().join("haven-sfu");
        let Some(sig) = self.signaling_ready.clone() else {
            return Ok(());
        };
        if !bin.exists() {
            return Ok(());
        }
        let field = |k: &str| -> Result<String> {
            sig[k]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| missing("signaling ready.json", k))
        };
        let ready = self.state_dir.join("sfu-ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(bin);
        cmd.args(["--node-id", "local-1", "--media-bind", "127.0.0.1"])
            .args(["--signaling-addr", &field("node_addr")?])
            .args(["--signaling-cert-sha256", &field("node_fingerprint")?])
            // `=` form: the PEM starts with dashes, which would read as a flag.
            .arg(format!(
                "--grant-public-key={}",
                field("grant_public_key_pem")?
            ))
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--drain-timeout-secs", "2"])
            .arg("--ready-file")
            .arg(&ready)
            .env("HAVEN_SFU_NODE_SECRET", node_secret(&self.state_dir)?);
        let mut svc = Service::spawn("haven-sfu", cmd, &self.state_dir.join("sfu.log"))?;
        svc.wait_until(Duration::from_secs(30), || ready.exists())?;
        let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready)?)?;
        if let Some(http) = info["http"].as_str() {
            self.info.sfu_metrics_url = Some(format!("http://{http}/metrics"));
        }
        self.info.sfu_pid = svc.pid();
        self.services.push(svc);
        Ok(())
    }

    /// Path of this stack's `stack.json`.
    pub fn info_path(&self) -> PathBuf {
        self.state_dir.join("stack.json")
    }

    fn write_info(&self) -> Result<()> {
        self.info.write(&self.info_path())?;
        Ok(())
    }

    /// Fails if any service has died since start.
    pub fn check_alive(&mut self) -> Result<()> {
        for s in &mut self.services {
            s.check_alive()?;
        }
        Ok(())
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        while let Some(mut s) = self.services.pop() {
            s.stop();
        }
        let _ = std::fs::remove_file(self.info_path());
        self.pg.stop();
    }
}

/// `api.json` as written by haven-local-api.
mod api_json {
    use std::path::Path;

    use super::{missing, Result};

    pub struct ApiJson {
        pub url: String,
        pub anon_key: String,
        pub service_role_key: String,
        pub jwks_url: Option<String>,
        pub issuer: Option<String>,
    }

    pub fn read_api_json(path: &Path) -> Result<ApiJson> {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let need = |k: &str| s(k).ok_or_else(|| missing("api.json", k));
        Ok(ApiJson {
            url: need("url")?,
            anon_key: need("anon_key")?,
            service_role_key: need("service_role_key")?,
            jwks_url: s("jwks_url"),
            issuer: s("issuer"),
        })
    }
}

/// Where `up` keeps its state: `.haven/` in the checkout, unless the `postgres` user
/// cannot reach it (a checkout under a private home directory while running as root),
/// then a per-checkout folder under /var/lib/haven.
pub fn persistent_state_dir(root: &Path) -> PathBuf {
    let local = root.join(".haven");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || world_traversable(root) {
        return local;
    }
    let key: String = root
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/var/lib/haven").join(key)
}

/// Whether every ancestor of `path` lets other users through (mode o+x).
pub fn world_traversable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors().all(|p| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// The secret SFU nodes present to signaling: random on first use, kept (0600) in the
/// state dir so a restarted node and signaling still agree.
fn node_secret(state_dir: &Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("node-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if s.trim().len() >= 16 {
            return Ok(s.trim().to_string());
        }
    }
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut f, secret.as_bytes())?;
    Ok(secret)
}
