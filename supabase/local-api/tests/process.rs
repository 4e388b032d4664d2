//! The binary as a process: refuses to listen beyond loopback, keeps its key (and so every
//! issued token and API key) across restarts, stops cleanly on SIGTERM, and reports a database
//! without the shim clearly.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{access_token, LocalApi};
use serde_json::json;

#[test]
fn a_non_loopback_listen_address_is_refused() {
    let dir = common::fresh_state_dir();
    let mut cmd = common::command(&dir, &[]);
    // Later flags win in clap: override the test default.
    cmd.args(["--listen", "0.0.0.0:0"]);
    let out = cmd.output().expect("run haven-local-api");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(!dir.join("api.json").exists(), "nothing was started");
}

#[tokio::test]
async fn tokens_and_api_keys_survive_a_restart() {
    let dir = common::fresh_state_dir();
    let first = LocalApi::start_in(&dir, &[]);
    let (_, session) = first.sign_up_fresh("restart-password").await;
    let token = access_token(&session);
    let anon_key = first.anon_key.clone();
    let mode = std::fs::metadata(dir.join("signing-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is owner-only");
    let mode = std::fs::metadata(dir.join("api.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "api.json holds the service key");
    // Same address: the issuer (`iss`) names it, as a hosted project's URL is part of its tokens.
    let listen = first.url.trim_start_matches("http://").to_string();
    first.stop();

    let second = LocalApi::start_in(&dir, &["--listen", &listen]);
    assert_eq!(
        second.anon_key, anon_key,
        "API keys are stable across restarts"
    );
    let (status, user) = second.get("/auth/v1/user", Some(&token)).await;
    assert_eq!(status, 200, "{user}");
    let (status, body) = second
        .rpc(
            "create_community",
            &token,
            &json!({"p_name": "After Restart"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[test]
fn sigterm_stops_the_server_cleanly_even_if_the_launcher_blocked_it() {
    let dir = common::fresh_state_dir();
    // xtask blocks SIGINT/SIGTERM for itself, and children inherit the mask: spawn from a
    // thread with them blocked, as it does.
    let mut child = with_shutdown_signals_blocked(|| {
        common::command(&dir, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haven-local-api")
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("api.json").exists() {
        assert!(Instant::now() < deadline, "did not start");
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
}

#[test]
fn a_database_without_the_shim_is_reported_at_start() {
    let db = common::database();
    let dir = common::fresh_state_dir();
    // The `template1` database of the same cluster has no auth schema.
    let (base, _) = db.owner_url.rsplit_once('/').expect("URL has a database");
    let mut cmd = common::command(&dir, &[]);
    cmd.args(["--auth-db-uri", &format!("{base}/template1")]);
    let out = cmd.output().expect("run haven-local-api");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("local-shim.sql"), "{stderr}");
}

/// Run `f` with SIGINT and SIGTERM blocked in this thread (and so in children it spawns).
fn with_shutdown_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: changes only this test thread's signal mask, restored below.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let result = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}
