//! The core against the real local stack (Postgres + the local Supabase API): sign up,
//! session persistence and refresh, communities, channels, permissions, 120 messages sent
//! and paged back, replies/edits/deletes, a second session's message merged through the
//! signaling client, and refused actions surfacing as typed errors.
//!
//! Needs a running stack (`cargo xtask test` exports HAVEN_STACK_FILE; or `cargo xtask up`).

use std::path::PathBuf;
use std::time::Instant;

use haven_client::core::channels::load_channel_tree;
use haven_client::core::messages::{LiveMessageEvent, PAGE_SIZE};
use haven_client::core::{
    ClientConfig, Communities, CoreError, MessageStore, Messages, PermissionSnapshot, SessionFile,
    SessionManager,
};
use haven_client::signaling::{SignalingEvent, SignalingMachine};
use haven_devstack::StackInfo;
use haven_proto::client::{ServerEvent, ServerMessage};
use haven_supabase::{InviteExpiry, RedeemStatus, ServiceClient};
use uuid::Uuid;

const PASSWORD: &str = "correct-horse-battery";

struct Stack {
    url: String,
    anon: String,
    service: ServiceClient,
}

fn stack() -> Stack {
    let info = StackInfo::from_env(&haven_devstack::workspace_root())
        .expect("a running local stack (cargo xtask test)");
    let url = info.api_url.expect("stack has an API url");
    let anon = info.anon_key.expect("anon key");
    let service = ServiceClient::new(&url, &info.service_role_key.expect("service key"))
        .expect("service client");
    Stack { url, anon, service }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("haven-client-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn manager(stack: &Stack, dir: Option<&PathBuf>) -> SessionManager {
    let mut config = ClientConfig::new(&stack.url, &stack.anon).unwrap();
    if let Some(dir) = dir {
        config.config_dir = dir.clone();
    }
    SessionManager::new(
        config.supabase().unwrap(),
        dir.map(|d| SessionFile::in_dir(d)),
    )
}

fn email(tag: &str) -> String {
    format!("{tag}-{}@client-test.local", Uuid::new_v4().simple())
}

/// Restores the send_message rate limit (API.md default 5 per 5 s) even if the test fails.
struct RateLimitGuard<'a>(&'a ServiceClient);

impl Drop for RateLimitGuard<'_> {
    fn drop(&mut self) {
        let service = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .map(|rt| rt.block_on(service.set_rate_limit("send_message", 5, 5)))
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_is_persisted_private_refreshed_and_signed_out() {
    let stack = stack();
    let dir = temp_dir();
    let me = manager(&stack, Some(&dir));
    let address = email("session");
    let session = me
        .sign_up(&address, PASSWORD, Some("sess_user"))
        .await
        .unwrap();
    let file = dir.join("session.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // A new process restores it.
    let again = manager(&stack, Some(&dir));
    let restored = again.restore().await.unwrap().expect("restored");
    assert_eq!(restored.user.id, session.user.id);
    // Refresh rotates the refresh token and rewrites the file.
    let fresh = again.refresh_now().await.unwrap();
    assert_ne!(fresh.refresh_token, session.refresh_token);
    let on_disk: haven_supabase::Session =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk.refresh_token, fresh.refresh_token);
    assert!(again.refresh_due_in().await.unwrap().as_secs() > 60);
    // The first manager's refresh token is spent: it is told the session expired.
    assert!(matches!(
        me.refresh_now().await,
        Err(CoreError::SessionExpired)
    ));

    // Wrong password, duplicate sign-up: typed.
    let other = manager(&stack, None);
    assert!(matches!(
        other.sign_in(&address, "wrong-password").await,
        Err(CoreError::InvalidCredentials)
    ));
    assert!(matches!(
        other.sign_up(&address, PASSWORD, None).await,
        Err(CoreError::Conflict(_))
    ));

    again.sign_out().await.unwrap();
    assert!(!file.exists());
    assert!(manager(&stack, Some(&dir))
        .restore()
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        again.access_token().await,
        Err(CoreError::NotSignedIn)
    ));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn community_chat_paging_live_merge_and_refusals() {
    let stack = stack();
    let owner = manager(&stack, None);
    owner
        .sign_up(&email("owner"), PASSWORD, None)
        .await
        .unwrap();
    let member = manager(&stack, None);
    member
        .sign_up(&email("member"), PASSWORD, None)
        .await
        .unwrap();
    let outsider = manager(&stack, None);
    outsider
        .sign_up(&email("outsider"), PASSWORD, None)
        .await
        .unwrap();

    // Community, channels, permissions.
    let communities = Communities::new(owner.clone());
    let name = format!("Client test {}", &Uuid::new_v4().simple().to_string()[..8]);
    let community = communities
        .create(&name, Some("made by the client tests"))
        .await
        .unwrap();
    assert!(communities
        .list_mine()
        .await
        .unwrap()
        .iter()
        .any(|c| c.id == community && c.name == name));
    let tree = load_channel_tree(&owner, community).await.unwrap();
    let general = tree.first_text().expect("general").clone();
    assert_eq!(general.name, "general");
    let lounge = tree.voice_named("Lounge").expect("Lounge").clone();
    let perms = PermissionSnapshot::load(&owner, community, &tree)
        .await
        .unwrap();
    assert!(
        perms.can_create_invites()
            && perms.can_send_in(general.id)
            && perms.can_join_voice(lounge.id)
    );

    // Invite the member.
    let invite = communities
        .create_invite(community, Some(5), InviteExpiry::AfterHours(1))
        .await
        .unwrap();
    let joined = Communities::new(member.clone())
        .join_with_invite(&format!("  {}  ", invite.code.to_uppercase()))
        .await
        .unwrap();
    assert_eq!(joined, community);
    let member_tree = load_channel_tree(&member, community).await.unwrap();
    let member_perms = PermissionSnapshot::load(&member, community, &member_tree)
        .await
        .unwrap();
    assert!(
        !member_perms.can_create_invites(),
        "a plain member sees no invite button"
    );

    // 120 messages, paged back 50 at a time.
    stack
        .service
        .set_rate_limit("send_message", 10_000, 1)
        .await
        .unwrap();
    let _restore = RateLimitGuard(&stack.service);
    let owner_messages = Messages::new(owner.clone());
    let mut sent = Vec::new();
    for i in 0..120 {
        sent.push(
            owner_messages
                .send(general.id, &format!("message {i:03}"), None, "owner")
                .await
                .unwrap(),
        );
    }
    let mut store = MessageStore::new(general.id);
    let mut pages = Vec::new();
    loop {
        let added = owner_messages
            .load_older(&mut store, PAGE_SIZE)
            .await
            .unwrap();
        if added == 0 {
            break;
        }
        pages.push(added);
    }
    assert_eq!(pages, [50, 50, 20]);
    assert!(store.reached_start());
    let contents: Vec<&str> = store.messages().map(|m| m.content.as_str()).collect();
    let expected: Vec<String> = (0..120).map(|i| format!("message {i:03}")).collect();
    assert_eq!(
        contents,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // Reply, edit, delete.
    let reply = owner_messages
        .send(general.id, "replying", Some(sent[0].id), "owner")
        .await
        .unwrap();
    assert_eq!(reply.reply_to, Some(sent[0].id));
    store.upsert(reply.clone());
    let edited = owner_messages
        .edit(sent[1].id, "message 001 (edited)", "owner")
        .await
        .unwrap();
    assert!(edited.edited_at.is_some());
    store.upsert(edited);
    owner_messages.delete(sent[2].id).await.unwrap();
    store.remove(sent[2].id);
    let mut fresh = MessageStore::new(general.id);
    while owner_messages.load_older(&mut fresh, 100).await.unwrap() > 0 {}
    assert_eq!(fresh.len(), 120, "120 - 1 deleted + 1 reply");
    assert_eq!(
        fresh.get(sent[1].id).unwrap().content,
        "message 001 (edited)"
    );
    assert!(fresh.get(sent[2].id).is_none());
    assert_eq!(
        fresh.messages().map(|m| m.id).collect::<Vec<_>>(),
        store.messages().map(|m| m.id).collect::<Vec<_>>(),
        "the locally merged store matches the server"
    );

    // A second session's message arrives live: signaling's `event` frame goes through the
    // signaling client and into the store.
    let from_member = Messages::new(member.clone())
        .send(general.id, "hello from the member", None, "member")
        .await
        .unwrap();
    let frame = ServerMessage::new(
        None,
        ServerEvent::Event {
            kind: "message.created".into(),
            community_id: community,
            channel_id: Some(general.id),
            user_id: from_member.author_id,
            message_id: Some(from_member.id),
            message: Some(serde_json::json!({
                "id": from_member.id, "community_id": community, "channel_id": general.id,
                "author_id": from_member.author_id, "author_display_name": "member",
                "content": from_member.content, "reply_to": null,
                "created_at": from_member.created_at, "edited_at": null
            })),
        },
    )
    .encode();
    let mut machine = SignalingMachine::new(Instant::now(), 9);
    machine.handle_text(Instant::now(), &frame);
    let Some(SignalingEvent::Live {
        kind,
        channel_id,
        message_id,
        message,
        ..
    }) = machine.poll_event()
    else {
        panic!("live event expected")
    };
    let live = LiveMessageEvent::from_event(&kind, channel_id, message_id, message.as_ref())
        .expect("message event");
    assert!(store.apply(&live));
    assert_eq!(
        store.messages().last().map(|m| m.content.as_str()),
        Some("hello from the member")
    );
    assert!(!store.apply(&live), "the same event twice changes nothing");

    // Refusals are typed.
    let member_messages = Messages::new(member.clone());
    assert!(matches!(
        member_messages.edit(sent[3].id, "not mine", "member").await,
        Err(CoreError::PermissionDenied { .. })
    ));
    let denied = Communities::new(member.clone())
        .create_invite(community, None, InviteExpiry::Never)
        .await
        .unwrap_err();
    assert!(
        matches!(denied, CoreError::PermissionDenied { .. }),
        "{denied:?}"
    );
    assert_eq!(
        denied.banner(),
        haven_client::core::BannerKind::PermissionDenied
    );
    let outsider_messages = Messages::new(outsider.clone());
    assert!(matches!(
        outsider_messages.page(general.id, None, 10).await,
        Err(CoreError::PermissionDenied { .. })
    ));
    assert!(matches!(
        outsider_messages
            .send(general.id, "let me in", None, "outsider")
            .await,
        Err(CoreError::PermissionDenied { .. })
    ));
    let empty = owner_messages
        .send(general.id, "   ", None, "owner")
        .await
        .unwrap_err();
    assert!(matches!(empty, CoreError::InvalidInput { .. }), "{empty:?}");
    let leave = communities.leave(community).await.unwrap_err();
    assert_eq!(leave.hint(), Some("owner_cannot_leave"));
    assert!(matches!(
        Communities::new(outsider.clone())
            .join_with_invite("zzzzzzzzzz")
            .await,
        Err(CoreError::InviteRefused(RedeemStatus::Invalid))
    ));
    assert!(matches!(
        load_channel_tree(&outsider, community)
            .await
            .map(|t| t.sections.len()),
        Ok(0) | Err(CoreError::PermissionDenied { .. })
    ));

    // The member leaves; the community is gone from their list.
    Communities::new(member.clone())
        .leave(community)
        .await
        .unwrap();
    assert!(!Communities::new(member.clone())
        .list_mine()
        .await
        .unwrap()
        .iter()
        .any(|c| c.id == community));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_user_sees_the_demo_community() {
    let stack = stack();
    let demo = manager(&stack, None);
    demo.sign_in("demo@haven.local", "haven-demo-password")
        .await
        .unwrap();
    let mine = Communities::new(demo.clone()).list_mine().await.unwrap();
    let haven_demo = mine
        .iter()
        .find(|c| c.name == "Haven Demo")
        .expect("seeded community");
    let tree = load_channel_tree(&demo, haven_demo.id).await.unwrap();
    assert!(tree.voice_named("Lounge").is_some());
    assert!(
        tree.channels().any(|c| c.name == "mods-only"),
        "the owner sees moderator channels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_is_a_typed_error() {
    // Nothing listens on port 9 of localhost (discard; never bound here).
    let config = ClientConfig::new("http://127.0.0.1:9", "anon-key").unwrap();
    let session = SessionManager::new(config.supabase().unwrap(), None);
    let err = session.sign_in("a@b.c", "x").await.unwrap_err();
    assert!(matches!(err, CoreError::Offline(_)), "{err:?}");
    assert_eq!(err.banner(), haven_client::core::BannerKind::Offline);
}
