//! A second session's message reaches the first live, through the real signaling
//! service: alice posts in Haven Demo's `general`, and demo's signaling client (the real
//! socket task over the real WebSocket, fed by Postgres NOTIFY and signaling's per-user
//! visibility filter) delivers it into demo's message store.
//!
//! Needs the stack of `cargo xtask test` (or `cargo xtask up`): API, signaling, Postgres.

use std::time::Duration;

use haven_client::core::channels::load_channel_tree;
use haven_client::core::config::signaling_ws_url;
use haven_client::core::messages::LiveMessageEvent;
use haven_client::core::{ClientConfig, Communities, MessageStore, Messages, SessionManager};
use haven_client::signaling::socket::{self, SignalingCommand};
use haven_client::signaling::SignalingEvent;
use haven_devstack::StackInfo;

const PASSWORD: &str = "haven-demo-password";

async fn signed_in(info: &StackInfo, email: &str) -> SessionManager {
    let config = ClientConfig::new(
        info.api_url.as_deref().expect("stack has an API url"),
        info.anon_key.as_deref().expect("anon key"),
    )
    .unwrap();
    let session = SessionManager::new(config.supabase().unwrap(), None);
    session.sign_in(email, PASSWORD).await.unwrap();
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_another_session_arrives_live_through_signaling() {
    let info = StackInfo::from_env(&haven_devstack::workspace_root())
        .expect("a running local stack (cargo xtask test)");
    let signaling = info
        .signaling_url
        .clone()
        .expect("the stack runs signaling (build haven-signaling)");
    let demo = signed_in(&info, "demo@haven.local").await;
    let alice = signed_in(&info, "alice@haven.local").await;

    let community = Communities::new(demo.clone())
        .list_mine()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "Haven Demo")
        .expect("seeded community")
        .id;
    let general = load_channel_tree(&demo, community)
        .await
        .unwrap()
        .first_text()
        .expect("general")
        .clone();

    let (handle, mut events) = socket::spawn(signaling_ws_url(&signaling));
    handle.send(SignalingCommand::Start(demo.access_token().await.unwrap()));
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.recv().await {
            if matches!(ev, SignalingEvent::Ready { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "signaling accepted demo's token");

    let mut store = MessageStore::new(general.id);
    let text = format!("live from alice {}", uuid::Uuid::new_v4().simple());
    let sent = Messages::new(alice.clone())
        .send(general.id, &text, None, "alice")
        .await
        .unwrap();

    let live = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.recv().await {
            if let SignalingEvent::Live {
                kind,
                channel_id,
                message_id,
                message,
                ..
            } = ev
            {
                if message_id == Some(sent.id) {
                    return LiveMessageEvent::from_event(
                        &kind,
                        channel_id,
                        message_id,
                        message.as_ref(),
                    );
                }
            }
        }
        None
    })
    .await
    .expect("the live event arrived within 10 s")
    .expect("it is a message event");
    assert!(store.apply(&live));
    assert_eq!(
        store.messages().last().map(|m| m.content.as_str()),
        Some(text.as_str()),
        "the content came with the event, fetched with demo's rights"
    );
    handle.send(SignalingCommand::Stop);
    Messages::new(alice)
        .delete(sent.id)
        .await
        .expect("clean up the test message");
}
