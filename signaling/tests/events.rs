//! Live events against the real local stack: each user gets only what they may see, caches
//! follow role changes, and the LISTEN connection survives the database dropping it.

mod common;

use std::time::Duration;

use common::*;
use haven_proto::client::{ServerEvent, ServerMessage};
use uuid::Uuid;

fn is_event(m: &ServerMessage, kind: &str, channel: Option<Uuid>) -> bool {
    matches!(&m.body, ServerEvent::Event { kind: k, channel_id, .. }
        if k == kind && (channel.is_none() || *channel_id == channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_mods_only_reaches_the_moderator_and_not_the_member() {
    let h = Harness::start().await;
    let c = h.community().await;
    let mut member = h.connect(&c.member).await;
    let mut moderator = h.connect(&c.moderator).await;

    let sent = h
        .client
        .as_user(&c.owner.token)
        .send_message(c.mods_only, "for moderators only", None)
        .await
        .unwrap();
    let got = moderator
        .recv_until(Duration::from_secs(3), |m| {
            is_event(m, "message.created", Some(c.mods_only))
        })
        .await
        .expect("the moderator gets the event");
    let ServerEvent::Event {
        message,
        message_id,
        community_id,
        ..
    } = got.body
    else {
        unreachable!()
    };
    assert_eq!(message_id, Some(sent.id));
    assert_eq!(community_id, c.id);
    let message = message.expect("content is included");
    assert_eq!(message["content"], "for moderators only");
    assert_eq!(message["author_id"], c.owner.id.to_string());

    // A message in general reaches both; by the time the member has it, a mods-only event
    // would have arrived too (one ordered stream).
    h.client
        .as_user(&c.owner.token)
        .send_message(c.general, "hello everyone", None)
        .await
        .unwrap();
    let seen = member.drain(Duration::from_millis(1500)).await;
    assert!(
        seen.iter()
            .any(|m| is_event(m, "message.created", Some(c.general))),
        "member gets general: {seen:?}"
    );
    assert!(
        !seen.iter().any(|m| matches!(&m.body, ServerEvent::Event { channel_id: Some(ch), .. } if *ch == c.mods_only)),
        "member must not get anything about mods-only: {seen:?}"
    );
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_opens_a_channel_without_stale_cache() {
    let h = Harness::start().await;
    let c = h.community().await;
    let mut member = h.connect(&c.member).await;
    let owner = h.client.as_user(&c.owner.token);

    // Prime the cache: the member cannot see mods-only.
    owner
        .send_message(c.mods_only, "first", None)
        .await
        .unwrap();
    owner.send_message(c.general, "marker", None).await.unwrap();
    let seen = member
        .recv_until(Duration::from_secs(3), |m| {
            is_event(m, "message.created", Some(c.general))
        })
        .await;
    assert!(seen.is_some());

    // Promote the member to Moderator; the cached "no" must go.
    let role: Uuid =
        h.pg.query_one(
            "select id from public.roles where community_id = $1 and name = 'Moderator'",
            &[&c.id],
        )
        .await
        .unwrap()
        .get(0);
    owner.assign_role(c.id, c.member.id, role).await.unwrap();
    member
        .recv_until(Duration::from_secs(3), |m| {
            is_event(m, "member.roles_changed", None)
        })
        .await
        .expect("roles_changed reaches the member");
    owner
        .send_message(c.mods_only, "second", None)
        .await
        .unwrap();
    let got = member
        .recv_until(Duration::from_secs(3), |m| {
            is_event(m, "message.created", Some(c.mods_only))
        })
        .await
        .expect("after promotion the member sees mods-only");
    let ServerEvent::Event {
        message: Some(m), ..
    } = got.body
    else {
        panic!()
    };
    assert_eq!(m["content"], "second");
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_are_announced_to_ban_managers_and_look_like_leaving_to_others() {
    let h = Harness::start().await;
    let c = h.community().await;
    let target = h.account("target").await;
    h.join_community(&c, &target).await;
    let mut owner = h.connect(&c.owner).await;
    let mut member = h.connect(&c.member).await;
    let mut target_ws = h.connect(&target).await;

    h.client
        .as_user(&c.owner.token)
        .ban_member(c.id, target.id, None)
        .await
        .unwrap();
    owner
        .recv_until(Duration::from_secs(3), |m| {
            is_event(m, "member.banned", None)
        })
        .await
        .expect("owner (manage_bans) sees the ban");
    target_ws
        .recv_until(Duration::from_secs(3), |m| {
            is_event(m, "member.banned", None)
        })
        .await
        .expect("the banned user is told");
    let seen = member.drain(Duration::from_millis(1000)).await;
    assert!(
        seen.iter().any(|m| is_event(m, "member.left", None)),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|m| is_event(m, "member.banned", None)),
        "{seen:?}"
    );

    // After the ban, the banned user gets nothing from the community any more.
    h.client
        .as_user(&c.owner.token)
        .send_message(c.general, "after the ban", None)
        .await
        .unwrap();
    member
        .recv_until(Duration::from_secs(3), |m| {
            is_event(m, "message.created", Some(c.general))
        })
        .await
        .expect("member still gets messages");
    let seen = target_ws.drain(Duration::from_millis(500)).await;
    assert!(
        !seen.iter().any(|m| is_event(m, "message.created", None)),
        "{seen:?}"
    );
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_the_database_drops_it() {
    let h = Harness::start().await;
    let c = h.community().await;
    let mut member = h.connect(&c.member).await;

    // The database drops our LISTEN connection (as a restart or failover would).
    let killed =
        h.pg.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1",
            &[&h.server.app.listener_name],
        )
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let mut resumed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let metrics = h.server.app.metrics.render();
        if !metrics.contains("haven_signaling_db_listener_reconnects_total 0\n") {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "listener reconnected");
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.client
        .as_user(&c.owner.token)
        .send_message(c.general, "after reconnect", None)
        .await
        .unwrap();
    member
        .recv_until(Duration::from_secs(5), |m| {
            is_event(m, "message.created", Some(c.general))
        })
        .await
        .expect("events flow again");
    h.server.shutdown();
}
