//! A 5-person call through the real services, measured: five client cores
//! ([`HeadlessClient`], in this one process) join "Haven Demo" / "Lounge" — demo, alice, bob
//! and two accounts `load1@`/`load2@haven.local` (signed up and invited by demo on first
//! use) — and all talk at once (speech looped through paced fake sound cards, playback
//! collected). Prints the process CPU share and RSS, total and per client, over 20 s.
//!
//! A measurement, not a check: `#[ignore]`d. Run it against a stack without the demo bots:
//! `HAVEN_STACK_FILE=... cargo test -p haven-client --test call_load -- --ignored --nocapture`.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_client::core::config::signaling_ws_url;
use haven_client::core::{ClientConfig, Communities, SessionManager};
use haven_client::headless::{HeadlessClient, HeadlessConfig};
use haven_client::voice::device::{AudioDevices, FakeSoundCard};
use haven_devstack::{StackInfo, STACK_FILE_ENV};
use haven_supabase::InviteExpiry;

const PASSWORD: &str = "haven-demo-password";

fn client_config() -> ClientConfig {
    let path = std::env::var_os(STACK_FILE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{STACK_FILE_ENV} is not set (run `cargo xtask test`)"));
    let info = StackInfo::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let (Some(api), Some(anon), Some(signaling)) =
        (info.api_url, info.anon_key, info.signaling_url)
    else {
        panic!(
            "the stack in {} lacks the API or signaling (api_url/anon_key/signaling_url)",
            path.display()
        );
    };
    let mut config = ClientConfig::new(api, anon).expect("config");
    config.signaling_url = Some(signaling_ws_url(&signaling));
    config.config_dir = std::env::temp_dir().join(format!("haven-load-{}", std::process::id()));
    config
}

/// Make sure `load1@`/`load2@haven.local` exist and are members of Haven Demo.
async fn ensure_load_users(config: &ClientConfig) {
    let demo = SessionManager::new(config.supabase().unwrap(), None);
    demo.sign_in("demo@haven.local", PASSWORD).await.unwrap();
    let communities = Communities::new(demo.clone());
    let community = communities
        .list_mine()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "Haven Demo")
        .expect("Haven Demo");
    for i in 1..=2 {
        let email = format!("load{i}@haven.local");
        let user = SessionManager::new(config.supabase().unwrap(), None);
        if user.sign_in(&email, PASSWORD).await.is_err() {
            user.sign_up(&email, PASSWORD, Some(&format!("load{i}")))
                .await
                .unwrap();
        }
        let mine = Communities::new(user.clone()).list_mine().await.unwrap();
        if !mine.iter().any(|c| c.id == community.id) {
            let invite = communities
                .create_invite(community.id, Some(1), InviteExpiry::AfterHours(1))
                .await
                .unwrap();
            Communities::new(user)
                .join_with_invite(&invite.code)
                .await
                .unwrap();
        }
    }
}

/// utime + stime of this process.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: needs a stack without the demo bots; run with --ignored"]
async fn five_person_call_cost() {
    let config = client_config();
    ensure_load_users(&config).await;
    let speech = common::speech_48k();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    let mut feeders = Vec::new();
    for (i, who) in ["demo", "alice", "bob", "load1", "load2"]
        .iter()
        .enumerate()
    {
        let card = FakeSoundCard::new(who);
        let devices_card = card.clone();
        let member = HeadlessConfig {
            client: config.clone(),
            email: format!("{who}@haven.local"),
            password: PASSWORD.into(),
            community: "Haven Demo".into(),
            channel: "Lounge".into(),
            noise_suppression: true,
        };
        let mut client = HeadlessClient::start(
            &member,
            Arc::new(move || AudioDevices::with_host(devices_card.host())),
        )
        .await
        .unwrap_or_else(|e| panic!("{who}: {e}"));
        client
            .wait_connected(Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        // Everyone talks: the speech looped with a pause, offset per person.
        let (speech, stop) = (speech.clone(), stop.clone());
        feeders.push(std::thread::spawn(move || {
            let pause = std::iter::repeat_n(0.0f32, 4_800 * (1 + i));
            let mut take = speech.into_iter().chain(pause).cycle();
            let mut heard = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let want = 9_600usize.saturating_sub(card.mic_pending());
                card.speak_into_mic(&take.by_ref().take(want).collect::<Vec<_>>());
                heard += card.take_played().iter().filter(|s| s.abs() > 1e-3).count();
                std::thread::sleep(Duration::from_millis(50));
            }
            heard
        }));
        clients.push(client);
    }
    // Keep every client's signaling and call events flowing.
    let mut drivers = Vec::new();
    for mut client in clients {
        drivers.push(tokio::spawn(async move {
            loop {
                if let Err(e) = client.next_event().await {
                    panic!("client failed: {e}");
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, t0) = (process_cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (cpu, wall) = (process_cpu() - cpu0, t0.elapsed());
    let (rss, hwm) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    stop.store(true, Ordering::Relaxed);
    let heard: Vec<usize> = feeders.into_iter().map(|f| f.join().unwrap()).collect();
    for d in drivers {
        d.abort();
    }
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    println!(
        "5-person call, 5 client cores in one process ({} build): CPU {share:.1} % of one core in total, {:.1} % per client; RSS {} MiB (peak {} MiB), {:.1} MiB per client; non-silent samples heard per client: {heard:?}",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        share / 5.0,
        rss / 1024,
        hwm / 1024,
        rss as f64 / 1024.0 / 5.0,
    );
    assert!(
        heard.iter().all(|h| *h > 48_000),
        "everyone hears the others"
    );
}
