//! Brings up the local stack in dependency order and tears it down in reverse.
//!
//! Used by both `up` (persistent state in `.haven/`) and `test` (a throw-away cluster
//! on free ports). Only services whose crates exist in the workspace are started, so
//! the stack grows as the product does without anything pretending to run.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use haven_devstack::{PgCluster, PgOptions, Service, StackInfo, SupabaseProject};

use crate::cargo;

/// The database every service uses, named like a hosted Supabase project's.
pub const MAIN_DB: &str = "postgres";

/// A running stack. Drop order matters: services first, Postgres last.
pub struct LocalStack {
    services: Vec<Service>,
    pub info: StackInfo,
    pub state_dir: PathBuf,
    pub pg: PgCluster,
}

/// Options shared by `up` and `test`.
pub struct StackOptions {
    pub state_dir: PathBuf,
    pub pg_port: Option<u16>,
    pub api_port: Option<u16>,
    pub seed: bool,
}

impl LocalStack {
    pub fn start(root: &Path, opts: &StackOptions) -> Result<Self> {
        std::fs::create_dir_all(&opts.state_dir)?;
        let pg = PgCluster::start(&PgOptions {
            dir: opts.state_dir.join("pg"),
            port: opts.pg_port,
        })
        .context("starting PostgreSQL")?;
        let project = SupabaseProject::at(root.join("supabase"));
        let report = project
            .apply(&pg, MAIN_DB, opts.seed)
            .context("applying the Supabase project")?;
        if !report.applied.is_empty() {
            eprintln!("xtask: applied migrations: {}", report.applied.join(", "));
        }
        let mut stack = LocalStack {
            services: Vec::new(),
            info: StackInfo {
                database_url: pg.url("postgres", MAIN_DB),
                api_url: None,
                anon_key: None,
                service_role_key: None,
                jwks_url: None,
                issuer: None,
            },
            state_dir: opts.state_dir.clone(),
            pg,
        };
        stack.start_local_api(root, opts.api_port)?;
        stack.write_info()?;
        Ok(stack)
    }

    /// The local Supabase stand-in (`/auth/v1` + `/rest/v1`), when its crate exists.
    fn start_local_api(&mut self, root: &Path, port: Option<u16>) -> Result<()> {
        let bin = cargo::bin_dir(root).join("haven-local-api");
        if !bin.exists() {
            return Ok(());
        }
        let port = match port {
            Some(p) => p,
            None => haven_devstack::ports::preferred_or_free(54321)?,
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

    use anyhow::{Context, Result};

    pub struct ApiJson {
        pub url: String,
        pub anon_key: String,
        pub service_role_key: String,
        pub jwks_url: Option<String>,
        pub issuer: Option<String>,
    }

    pub fn read_api_json(path: &Path) -> Result<ApiJson> {
        let text = std::fs::read_to_string(path)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        Ok(ApiJson {
            url: s("url").context("api.json: url")?,
            anon_key: s("anon_key").context("api.json: anon_key")?,
            service_role_key: s("service_role_key").context("api.json: service_role_key")?,
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
