//! Shared by the integration tests: start the real `haven-local-api` binary against the
//! database of the running local stack, and make requests to it.
//!
//! Each test gets its own API process (own port, own state directory), while the database is
//! the stack's (`HAVEN_STACK_FILE`, set by `cargo xtask test`; or `.haven/stack.json` of a
//! running `cargo xtask up`). Tests create their own users with unique emails, so they do not
//! interfere with each other or with the seed.

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use haven_devstack::{Service, StackInfo};
use serde_json::{json, Value};

/// Database URLs of the running stack.
pub struct Database {
    /// As the owner (`postgres`), for the auth tables.
    pub owner_url: String,
    /// As `authenticator`, for the REST layer.
    pub authenticator_url: String,
}

/// The stack's database; panics with instructions when no stack is running.
pub fn database() -> Database {
    let info = StackInfo::from_env(&haven_devstack::workspace_root())
        .unwrap_or_else(|e| panic!("no local stack: {e}"));
    let authenticator_url = with_user(
        &info.database_url,
        "authenticator",
        haven_devstack::postgres::LOCAL_PASSWORD,
    );
    Database {
        owner_url: info.database_url,
        authenticator_url,
    }
}

/// `postgres://user:pw@host/db` with other credentials.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("database URL has a scheme");
    let host_part = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
    format!("{scheme}://{user}:{password}@{host_part}")
}

/// A running `haven-local-api`, stopped when dropped.
pub struct LocalApi {
    service: Service,
    pub url: String,
    pub anon_key: String,
    pub service_role_key: String,
    pub issuer: String,
    pub state_dir: PathBuf,
}

/// A fresh state directory (removed by nobody: it lives in the temp dir, a few KB).
pub fn fresh_state_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("haven-local-api-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create state dir");
    dir
}

/// The command line used to start the binary on a free port.
pub fn command(state_dir: &Path, extra: &[&str]) -> Command {
    let db = database();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_haven-local-api"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--rest-pool-size",
        "4",
        "--bcrypt-cost",
        "4",
    ])
    .arg("--rest-db-uri")
    .arg(&db.authenticator_url)
    .arg("--auth-db-uri")
    .arg(&db.owner_url)
    .arg("--state-dir")
    .arg(state_dir)
    .args(extra)
    .env("RUST_LOG", "info");
    cmd
}

impl LocalApi {
    /// Start with a fresh state directory.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_in(&fresh_state_dir(), extra)
    }

    /// Start with `state_dir` (reused across restarts in the persistence test).
    pub fn start_in(state_dir: &Path, extra: &[&str]) -> Self {
        let api_file = state_dir.join("api.json");
        let _ = std::fs::remove_file(&api_file);
        let mut service = Service::spawn(
            "haven-local-api",
            command(state_dir, extra),
            &state_dir.join("api.log"),
        )
        .expect("spawn haven-local-api");
        service
            .wait_until(Duration::from_secs(60), || api_file.exists())
            .unwrap_or_else(|e| panic!("haven-local-api did not start: {e}"));
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(&api_file).expect("read api.json"))
                .expect("api.json is JSON");
        let s = |k: &str| {
            info[k]
                .as_str()
                .unwrap_or_else(|| panic!("api.json has no {k}"))
                .to_string()
        };
        LocalApi {
            service,
            url: s("url"),
            anon_key: s("anon_key"),
            service_role_key: s("service_role_key"),
            issuer: s("issuer"),
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// Fails the test if the process died (e.g. after bad input).
    pub fn assert_alive(&mut self) {
        self.service
            .check_alive()
            .expect("haven-local-api is still running");
    }

    /// Stop it now.
    pub fn stop(mut self) {
        self.service.stop();
    }

    /// A request with the anon key as `apikey`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        http()
            .request(method, format!("{}{path}", self.url))
            .header("apikey", &self.anon_key)
    }

    /// POST JSON to `path` with an optional user token; returns status and JSON (or text).
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.request(reqwest::Method::POST, path).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        send(req).await
    }

    /// POST raw bytes as JSON content.
    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut req = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        send(req).await
    }

    /// GET `path` with an optional user token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.request(reqwest::Method::GET, path);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        send(req).await
    }

    /// Sign up a fresh user and return (email, session JSON).
    pub async fn sign_up_fresh(&self, password: &str) -> (String, Value) {
        let name = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let email = format!("{name}@example.test");
        let (status, session) = self
            .post(
                "/auth/v1/signup",
                None,
                &json!({"email": email, "password": password, "data": {"username": name}}),
            )
            .await;
        assert_eq!(status, 200, "signup failed: {session}");
        (email, session)
    }

    /// Password grant; returns (status, body).
    pub async fn sign_in(&self, email: &str, password: &str) -> (u16, Value) {
        self.post(
            "/auth/v1/token?grant_type=password",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Call an RPC as a user.
    pub async fn rpc(&self, function: &str, token: &str, args: &Value) -> (u16, Value) {
        self.post(&format!("/rest/v1/rpc/{function}"), Some(token), args)
            .await
    }
}

/// One HTTP client per test process.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Send and decode (JSON when possible, else the text as a JSON string).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let response = req.send().await.expect("request reaches the server");
    let status = response.status().as_u16();
    let text = response.text().await.expect("read body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The access token of a session body.
pub fn access_token(session: &Value) -> String {
    session["access_token"]
        .as_str()
        .expect("session has access_token")
        .to_string()
}

/// Decode a JWT's payload without verifying it (to look at claims).
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("payload is base64url");
    serde_json::from_slice(&bytes).expect("payload is JSON")
}

/// Print past the test harness's output capture, so a skip reason shows in a passing run.
pub fn note(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "note: {message}");
}
