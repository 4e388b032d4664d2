//! Voice acceptance against the real local stack and an SFU node on the real control link:
//! joins (granted and refused), the audio path set-up (offer → node → answer), leave, mute,
//! deafen, moderation, revocation by ban within 1 s, node loss.

mod common;

use std::time::{Duration, Instant};

use common::*;
use haven_proto::client::{ClientRequest, ErrorCode, LeftReason, ServerEvent};
use haven_proto::control::ControlBody;
use haven_supabase::OverwriteFlags;
use uuid::Uuid;

fn join(channel_id: Uuid) -> ClientRequest {
    ClientRequest::Join {
        channel_id,
        sdp: OFFER_SDP.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_joins_lounge_and_gets_the_audio_path_set_up() {
    let h = Harness::start().await;
    let c = h.community().await;
    let mut node = h.fake_node("sfu-a").await;
    let mut owner_ws = h.connect(&c.owner).await;
    let mut ws = h.connect(&c.member).await;

    ws.send_request(Some(7), join(c.lounge)).await;
    let reply = ws.reply(7).await;
    let ServerEvent::Joined {
        channel_id,
        session_id,
        can_speak,
        sdp,
    } = reply.body
    else {
        panic!("expected joined, got {reply:?}");
    };
    assert_eq!(channel_id, c.lounge);
    assert!(can_speak);
    assert!(
        sdp.contains(&format!("fake-answer-for-{session_id}")),
        "the node's answer is relayed"
    );

    // The node got the client's offer with a grant it could verify (it answered).
    let (_, offer) = node
        .expect(Duration::from_secs(1), |m| {
            matches!(m.body, ControlBody::Offer(_))
        })
        .await
        .expect("offer reached the node");
    let ControlBody::Offer(offer) = offer.body else {
        unreachable!()
    };
    assert_eq!(offer.room.0, c.lounge);
    assert_eq!(offer.sdp, OFFER_SDP);

    // Members who can see Lounge get the roster.
    let state = owner_ws
        .recv_until(Duration::from_secs(3), |m| {
            matches!(&m.body, ServerEvent::VoiceState { channel_id, participants, .. }
                if *channel_id == c.lounge && !participants.is_empty())
        })
        .await
        .expect("owner sees the roster");
    let ServerEvent::VoiceState {
        participants,
        community_id,
        ..
    } = state.body
    else {
        unreachable!()
    };
    assert_eq!(community_id, c.id);
    assert_eq!(participants[0].user_id.0, c.member.id);

    // Mute and deafen reach the node and the roster.
    ws.send_request(Some(8), ClientRequest::Mute { muted: true })
        .await;
    assert_eq!(ws.reply(8).await.body, ServerEvent::Ok);
    node.expect(
        Duration::from_secs(1),
        |m| matches!(m.body, ControlBody::SelfMute(s) if s.muted),
    )
    .await
    .expect("self mute at the node");
    ws.send_request(Some(9), ClientRequest::Deafen { deafened: true })
        .await;
    assert_eq!(ws.reply(9).await.body, ServerEvent::Ok);
    node.expect(
        Duration::from_secs(1),
        |m| matches!(m.body, ControlBody::Deafen(d) if d.deafened),
    )
    .await
    .expect("deafen at the node");
    owner_ws
        .recv_until(Duration::from_secs(3), |m| {
            matches!(&m.body, ServerEvent::VoiceState { participants, .. }
                if participants.first().is_some_and(|p| p.muted && p.deafened))
        })
        .await
        .expect("roster shows muted and deafened");

    // Leave.
    ws.send_request(Some(10), ClientRequest::Leave).await;
    assert_eq!(ws.reply(10).await.body, ServerEvent::Ok);
    node.expect(
        Duration::from_secs(1),
        |m| matches!(m.body, ControlBody::Leave(l) if l.session == session_id),
    )
    .await
    .expect("leave at the node");
    ws.send_request(Some(11), ClientRequest::Leave).await;
    assert_eq!(error_code(&ws.reply(11).await), Some(ErrorCode::NotInVoice));
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsider_banned_and_overwrite_denied_users_are_refused_and_text_is_not_voice() {
    let h = Harness::start().await;
    let c = h.community().await;
    let _node = h.fake_node("sfu-refusals").await;
    let owner = h.client.as_user(&c.owner.token);

    let outsider = h.account("outsider").await;
    let banned = h.account("banned").await;
    h.join_community(&c, &banned).await;
    owner
        .ban_member(c.id, banned.id, Some("test"))
        .await
        .unwrap();
    let denied = h.account("denied").await;
    h.join_community(&c, &denied).await;
    h.member_overwrite(
        &c.owner,
        c.lounge,
        denied.id,
        OverwriteFlags {
            can_connect: Some(false),
            ..Default::default()
        },
    )
    .await;

    for (who, account) in [
        ("outsider", &outsider),
        ("banned", &banned),
        ("denied", &denied),
    ] {
        let mut ws = h.connect(account).await;
        ws.send_request(Some(1), join(c.lounge)).await;
        let reply = ws.reply(1).await;
        assert_eq!(
            error_code(&reply),
            Some(ErrorCode::Forbidden),
            "{who}: {reply:?}"
        );
        let ServerEvent::Error { message, .. } = &reply.body else {
            unreachable!()
        };
        assert!(message.contains("42501"), "{who}: {message}");
        // A channel that does not exist looks exactly the same.
        ws.send_request(Some(2), join(Uuid::new_v4())).await;
        assert_eq!(error_code(&ws.reply(2).await), Some(ErrorCode::Forbidden));
    }

    let mut ws = h.connect(&c.member).await;
    ws.send_request(Some(3), join(c.general)).await;
    assert_eq!(
        error_code(&ws.reply(3).await),
        Some(ErrorCode::NotVoiceChannel)
    );
    assert_eq!(
        h.server
            .app
            .metrics
            .render()
            .lines()
            .find(|l| l.starts_with("haven_signaling_joins_ok_total")),
        Some("haven_signaling_joins_ok_total 0")
    );
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banning_a_user_in_voice_removes_them_from_the_sfu_within_one_second() {
    let h = Harness::start().await;
    let c = h.community().await;
    let mut node = h.fake_node("sfu-ban").await;
    let mut ws = h.connect(&c.member).await;
    ws.send_request(Some(1), join(c.lounge)).await;
    let ServerEvent::Joined { session_id, .. } = ws.reply(1).await.body else {
        panic!("join failed");
    };

    let banned_at = Instant::now();
    h.client
        .as_user(&c.owner.token)
        .ban_member(c.id, c.member.id, Some("spam"))
        .await
        .unwrap();
    let (kicked_at, kick) = node
        .expect(
            Duration::from_secs(2),
            |m| matches!(&m.body, ControlBody::Kick(k) if k.session == session_id),
        )
        .await
        .expect("kick reached the node");
    let elapsed = kicked_at.duration_since(banned_at);
    println!("ban → kick at the SFU: {elapsed:?} ({kick:?})");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");

    let left = ws
        .recv_until(Duration::from_secs(2), |m| {
            matches!(m.body, ServerEvent::Left { .. })
        })
        .await
        .expect("the user is told");
    assert_eq!(
        left.body,
        ServerEvent::Left {
            channel_id: c.lounge,
            session_id: Some(session_id),
            reason: LeftReason::Banned
        }
    );
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_and_losing_connect_by_overwrite_revoke_voice() {
    let h = Harness::start().await;
    let c = h.community().await;
    let mut node = h.fake_node("sfu-revoke").await;
    let owner = h.client.as_user(&c.owner.token);

    // Kick.
    let mut ws = h.connect(&c.member).await;
    ws.send_request(Some(1), join(c.lounge)).await;
    assert!(matches!(ws.reply(1).await.body, ServerEvent::Joined { .. }));
    owner.kick_member(c.id, c.member.id).await.unwrap();
    node.expect(Duration::from_secs(1), |m| {
        matches!(m.body, ControlBody::Kick(_))
    })
    .await
    .expect("kick at the node");
    let left = ws
        .recv_until(Duration::from_secs(2), |m| {
            matches!(m.body, ServerEvent::Left { .. })
        })
        .await
        .unwrap();
    assert!(matches!(
        left.body,
        ServerEvent::Left {
            reason: LeftReason::Kicked,
            ..
        }
    ));

    // Overwrite: the moderator loses connect on Lounge, then speak is taken from a member.
    let mut mod_ws = h.connect(&c.moderator).await;
    mod_ws.send_request(Some(2), join(c.lounge)).await;
    let ServerEvent::Joined { session_id, .. } = mod_ws.reply(2).await.body else {
        panic!()
    };
    let at = Instant::now();
    h.member_overwrite(
        &c.owner,
        c.lounge,
        c.moderator.id,
        OverwriteFlags {
            can_connect: Some(false),
            ..Default::default()
        },
    )
    .await;
    let (t, _) = node
        .expect(
            Duration::from_secs(2),
            |m| matches!(&m.body, ControlBody::Kick(k) if k.session == session_id),
        )
        .await
        .expect("kick after losing connect");
    assert!(t.duration_since(at) < Duration::from_secs(1));
    let left = mod_ws
        .recv_until(Duration::from_secs(2), |m| {
            matches!(m.body, ServerEvent::Left { .. })
        })
        .await
        .unwrap();
    assert!(matches!(
        left.body,
        ServerEvent::Left {
            reason: LeftReason::PermissionLost,
            ..
        }
    ));

    let speaker = h.account("speaker").await;
    h.join_community(&c, &speaker).await;
    let mut sp = h.connect(&speaker).await;
    sp.send_request(Some(3), join(c.lounge)).await;
    let ServerEvent::Joined {
        session_id,
        can_speak: true,
        ..
    } = sp.reply(3).await.body
    else {
        panic!()
    };
    h.member_overwrite(
        &c.owner,
        c.lounge,
        speaker.id,
        OverwriteFlags {
            can_speak: Some(false),
            ..Default::default()
        },
    )
    .await;
    node.expect(
        Duration::from_secs(2),
        |m| matches!(&m.body, ControlBody::ServerMute(s) if s.session == session_id && s.muted),
    )
    .await
    .expect("server mute when speak is lost");
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_can_server_mute_and_disconnect_below_them_only() {
    let h = Harness::start().await;
    let c = h.community().await;
    let mut node = h.fake_node("sfu-mod").await;
    let mut member_ws = h.connect(&c.member).await;
    member_ws.send_request(Some(1), join(c.lounge)).await;
    let ServerEvent::Joined { session_id, .. } = member_ws.reply(1).await.body else {
        panic!()
    };
    let mut mod_ws = h.connect(&c.moderator).await;

    // A plain member cannot moderate the moderator.
    let other = h.account("other").await;
    h.join_community(&c, &other).await;
    let mut other_ws = h.connect(&other).await;
    other_ws
        .send_request(
            Some(2),
            ClientRequest::ServerMute {
                channel_id: c.lounge,
                user_id: c.member.id,
                muted: true,
            },
        )
        .await;
    assert_eq!(
        error_code(&other_ws.reply(2).await),
        Some(ErrorCode::Forbidden)
    );

    mod_ws
        .send_request(
            Some(3),
            ClientRequest::ServerMute {
                channel_id: c.lounge,
                user_id: c.member.id,
                muted: true,
            },
        )
        .await;
    assert_eq!(mod_ws.reply(3).await.body, ServerEvent::Ok);
    node.expect(
        Duration::from_secs(1),
        |m| matches!(&m.body, ControlBody::ServerMute(s) if s.session == session_id && s.muted),
    )
    .await
    .expect("server mute at the node");
    // Someone not in voice.
    mod_ws
        .send_request(
            Some(4),
            ClientRequest::ServerMute {
                channel_id: c.lounge,
                user_id: other.id,
                muted: true,
            },
        )
        .await;
    assert_eq!(
        error_code(&mod_ws.reply(4).await),
        Some(ErrorCode::NotInVoice)
    );
    // The moderator cannot act on the owner (hierarchy).
    mod_ws
        .send_request(
            Some(5),
            ClientRequest::Disconnect {
                channel_id: c.lounge,
                user_id: c.owner.id,
            },
        )
        .await;
    assert_eq!(
        error_code(&mod_ws.reply(5).await),
        Some(ErrorCode::Forbidden)
    );

    mod_ws
        .send_request(
            Some(6),
            ClientRequest::Disconnect {
                channel_id: c.lounge,
                user_id: c.member.id,
            },
        )
        .await;
    assert_eq!(mod_ws.reply(6).await.body, ServerEvent::Ok);
    node.expect(
        Duration::from_secs(1),
        |m| matches!(&m.body, ControlBody::Kick(k) if k.session == session_id),
    )
    .await
    .expect("disconnect at the node");
    let left = member_ws
        .recv_until(Duration::from_secs(2), |m| {
            matches!(m.body, ServerEvent::Left { .. })
        })
        .await
        .unwrap();
    assert!(matches!(
        left.body,
        ServerEvent::Left {
            reason: LeftReason::Disconnected,
            ..
        }
    ));
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_another_channel_moves_and_no_node_or_a_lost_node_is_a_clear_error() {
    let h = Harness::start().await;
    let c = h.community().await;
    let mut ws = h.connect(&c.member).await;

    // No SFU node yet.
    ws.send_request(Some(1), join(c.lounge)).await;
    let reply = ws.reply(1).await;
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::Unavailable),
        "{reply:?}"
    );

    let node = h.fake_node("sfu-lost").await;
    ws.send_request(Some(2), join(c.lounge)).await;
    assert!(matches!(ws.reply(2).await.body, ServerEvent::Joined { .. }));

    // A second voice channel: joining it moves the user.
    let stage = h
        .client
        .as_user(&c.owner.token)
        .create_channel(
            c.id,
            &haven_supabase::NewChannel {
                name: "Stage".into(),
                kind: haven_supabase::ChannelKind::Voice,
                topic: None,
                group_id: None,
                position: None,
            },
        )
        .await
        .unwrap();
    ws.send_request(Some(3), join(stage)).await;
    let mut saw_moved = false;
    let mut saw_joined = false;
    for m in ws.drain(Duration::from_millis(800)).await {
        match m.body {
            ServerEvent::Left {
                channel_id,
                reason: LeftReason::Moved,
                ..
            } if channel_id == c.lounge => saw_moved = true,
            ServerEvent::Joined { channel_id, .. } if channel_id == stage => saw_joined = true,
            _ => {}
        }
    }
    assert!(saw_moved && saw_joined);

    // The node goes away: the user is told, and the next join is a clear error.
    node.close();
    let left = ws
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.body, ServerEvent::Left { .. })
        })
        .await
        .expect("left after node loss");
    assert!(matches!(
        left.body,
        ServerEvent::Left {
            reason: LeftReason::NodeLost,
            ..
        }
    ));
    ws.send_request(Some(4), join(stage)).await;
    assert_eq!(error_code(&ws.reply(4).await), Some(ErrorCode::Unavailable));

    // A node that comes back gets new rooms.
    let _node2 = h.fake_node("sfu-lost-2").await;
    ws.send_request(Some(5), join(stage)).await;
    assert!(matches!(ws.reply(5).await.body, ServerEvent::Joined { .. }));
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_refused() {
    let h = Harness::start().await;
    let err = FakeNode::connect(
        h.server.node_addr,
        &h.server.node_fingerprint,
        "intruder",
        "not-the-node-secret",
        &h.server.grant_public_key_pem,
    )
    .await
    .err()
    .expect("refused");
    assert!(
        err.contains("Unauthorized") || err.contains("closed"),
        "{err}"
    );
    // And a wrong pinned fingerprint never gets to talk.
    let err = FakeNode::connect(
        h.server.node_addr,
        &"00".repeat(32),
        "mitm",
        NODE_SECRET,
        &h.server.grant_public_key_pem,
    )
    .await
    .err()
    .expect("fingerprint mismatch");
    assert!(
        err.contains("fingerprint") || err.contains("certificate"),
        "{err}"
    );
    h.server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_a_node_reports_but_signaling_does_not_know_are_kicked() {
    let h = Harness::start().await;
    let mut node = h.fake_node("sfu-stale").await;
    let ghost = haven_proto::SessionId::new_random();
    node.send_event(ControlBody::Roster(haven_proto::control::RoomRoster {
        room: haven_proto::RoomId::new_random(),
        participants: vec![haven_proto::control::RosterEntry {
            session: ghost,
            user: haven_proto::UserId::new_random(),
            display_name: "ghost".into(),
            can_speak: true,
            server_muted: false,
            connected: true,
            speaking: false,
        }],
    }));
    node.expect(Duration::from_secs(2), |m| {
        matches!(&m.body, ControlBody::Kick(k) if k.session == ghost) && m.id != 0
    })
    .await
    .expect("the stale session is kicked");
    h.server.shutdown();
}
