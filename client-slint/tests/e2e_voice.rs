//! End to end through the real services: two client cores ([`HeadlessClient`]: real sign-in
//! through the local Supabase API, the real `SignalingMachine` + WebSocket to haven-signaling,
//! real `ClientMedia` to haven-sfu over loopback UDP) join "Haven Demo" / "Lounge" as alice
//! and bob with paced fake sound cards. Speech played into alice's microphone must come out
//! of bob's speaker (NCC ≥ 0.9 after alignment), and alice must never hear herself.
//!
//! Needs a stack that runs signaling and the SFU: `cargo xtask test` exports
//! HAVEN_STACK_FILE; by hand, `cargo xtask up` and `HAVEN_STACK_FILE=.haven/stack.json`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_client::core::config::signaling_ws_url;
use haven_client::core::ClientConfig;
use haven_client::headless::{HeadlessClient, HeadlessConfig, HeadlessEvent};
use haven_client::voice::device::{AudioDevices, FakeSoundCard};
use haven_devstack::{StackInfo, STACK_FILE_ENV};
use tokio::sync::{mpsc, oneshot};

/// The stack named by HAVEN_STACK_FILE, as a client config with signaling.
fn client_config() -> ClientConfig {
    let path = std::env::var_os(STACK_FILE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
            "{STACK_FILE_ENV} is not set: run `cargo xtask test`, or start `cargo xtask up` and \
             export {STACK_FILE_ENV}=.haven/stack.json"
        )
        });
    let info = StackInfo::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let (Some(api), Some(anon)) = (info.api_url, info.anon_key) else {
        panic!("the stack in {} has no local Supabase API (api_url/anon_key missing; build haven-local-api)", path.display());
    };
    let Some(signaling) = info.signaling_url else {
        panic!(
            "the stack in {} runs no signaling (signaling_url missing): build haven-signaling and \
             haven-sfu (`cargo build --workspace`) and restart the stack",
            path.display()
        );
    };
    let mut config = ClientConfig::new(api, anon).expect("config");
    config.signaling_url = Some(signaling_ws_url(&signaling));
    config.config_dir = std::env::temp_dir().join(format!("haven-e2e-{}", std::process::id()));
    config
}

fn member(client: &ClientConfig, who: &str) -> HeadlessConfig {
    HeadlessConfig {
        client: client.clone(),
        email: format!("{who}@haven.local"),
        password: "haven-demo-password".into(),
        community: "Haven Demo".into(),
        channel: "Lounge".into(),
        noise_suppression: true,
    }
}

/// A joined client driven on its own task: events come out of the channel, and the stop
/// sender makes it leave.
struct Driven {
    user: uuid::Uuid,
    events: mpsc::UnboundedReceiver<HeadlessEvent>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn join(config: HeadlessConfig, card: &FakeSoundCard) -> Driven {
    let card = card.clone();
    let mut client = HeadlessClient::start(
        &config,
        Arc::new(move || AudioDevices::with_host(card.host())),
    )
    .await
    .unwrap_or_else(|e| panic!("{} could not join: {e}", config.email));
    client
        .wait_connected(Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", config.email));
    let user = client.user_id;
    let (tx, events) = mpsc::unbounded_channel();
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                e = client.next_event() => match e {
                    Ok(e) => { let _ = tx.send(e); }
                    Err(e) => panic!("client failed: {e}"),
                }
            }
        }
        client.leave();
    });
    Driven {
        user,
        events,
        stop,
        task,
    }
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_goes_from_alice_to_bob_through_signaling_and_the_sfu() {
    let client = client_config();
    let (card_a, card_b) = (FakeSoundCard::new("alice"), FakeSoundCard::new("bob"));
    let t0 = Instant::now();
    let mut alice = join(member(&client, "alice"), &card_a).await;
    let mut bob = join(member(&client, "bob"), &card_b).await;
    let connect_ms = t0.elapsed().as_millis();
    // Let the SFU announce its slot map to both.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let speech = common::speech_48k();
    card_a.take_played();
    card_b.take_played();
    card_a.speak_into_mic(&speech);
    tokio::time::sleep(Duration::from_secs_f64(
        speech.len() as f64 / 48_000.0 + 1.0,
    ))
    .await;
    let heard_by_bob = card_b.take_played();
    let heard_by_alice = card_a.take_played();

    let mut speaking_seen = false;
    let mut others = Vec::new();
    while let Ok(e) = bob.events.try_recv() {
        speaking_seen |= matches!(e, HeadlessEvent::Speaking { on: true, .. });
        if let HeadlessEvent::Participants(list) = e {
            others = list
                .into_iter()
                .filter(|p| ![alice.user, bob.user].contains(&p.user_id.0))
                .map(|p| p.display_name)
                .collect();
        }
    }
    while alice.events.try_recv().is_ok() {}
    for d in [alice, bob] {
        let _ = d.stop.send(());
        d.task.await.expect("driver task");
    }

    assert!(
        others.is_empty(),
        "Lounge is not free: {others:?} are in it too (the demo bots of `cargo xtask up`?); \
         run this against a stack without them (`cargo xtask test`)"
    );
    let (lag, ncc) = common::piecewise_ncc(&speech, &heard_by_bob, 48_000, 9_600, 3 * 960);
    let own = common::best_alignment(&speech, &heard_by_alice, 48_000).1;
    println!(
        "e2e voice: joined in {connect_ms} ms, ncc {ncc:.3}, mouth-to-ear {:.1} ms (fake mic → engine → str0m → UDP → haven-sfu → UDP → jitter buffer → fake speaker); alice's own playback rms {:.5} (ncc {own:.3}); speaking seen by bob: {speaking_seen}",
        lag as f64 / 48.0,
        rms(&heard_by_alice)
    );
    assert!(ncc >= 0.9, "alice → bob ncc {ncc:.3}");
    assert!(lag < 48 * 400, "mouth-to-ear {} ms", lag / 48);
    assert!(
        rms(&heard_by_alice) < 0.01 * rms(&speech) && own < 0.2,
        "alice heard her own voice: rms {:.5}, ncc {own:.3}",
        rms(&heard_by_alice)
    );
}
