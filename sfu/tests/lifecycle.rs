//! Participant lifecycle on the node: clients that vanish or never connect are dropped
//! with a reason, empty rooms go away, and control requests map to typed replies.

mod common;

use std::time::Duration;

use common::{Impairment, Talk, World};
use haven_proto::control::{ControlBody, ControlMessage, ErrorCode, Leave, LeaveReason, Offer};
use haven_proto::SessionId;
use haven_sfu::{DropReason, SfuEvent};

fn left_reason(w: &World, session: SessionId) -> Option<LeaveReason> {
    w.events.iter().find_map(|(_, e)| match e {
        SfuEvent::Left(l) if l.session == session => Some(l.reason),
        _ => None,
    })
}

#[test]
fn a_vanished_client_is_dropped_after_the_grace_period() {
    let mut w = World::new(51, Impairment::clean());
    let a = w.join(true, 3);
    let b = w.join(true, 3);
    w.connect_all(Duration::from_secs(10));
    w.talk(a, Talk::Speech(30));
    w.run_for(Duration::from_secs(1));
    let cut_at = w.now;
    w.cut(a);
    w.run_for(Duration::from_secs(10));
    assert_eq!(
        left_reason(&w, w.clients[a].session),
        None,
        "still within grace"
    );
    w.run_for(Duration::from_secs(30));
    assert_eq!(
        left_reason(&w, w.clients[a].session),
        Some(LeaveReason::Disconnected)
    );
    let (at, _) = w
        .events
        .iter()
        .find(|(_, e)| matches!(e, SfuEvent::Left(_)))
        .expect("left");
    assert!(*at - cut_at >= w.sfu.config().disconnect_grace);
    assert_eq!(w.sfu.participant_count(), 1);
    let roster = w.sfu.roster(w.room).expect("room");
    assert_eq!(roster.participants.len(), 1);
    assert_eq!(roster.participants[0].session, w.clients[b].session);
}

#[test]
fn a_client_that_never_connects_is_dropped() {
    let mut w = World::new(52, Impairment::clean());
    let (i, sdp) = w.new_client(true, 3);
    w.cut(i);
    let (user, session) = (w.clients[i].user, w.clients[i].session);
    let token = w.mint(&w.grant(user, session, true));
    w.submit(i, token, sdp).expect("admitted");
    w.run_for(Duration::from_secs(25));
    assert_eq!(left_reason(&w, session), Some(LeaveReason::ConnectTimeout));
    assert_eq!(w.sfu.participant_count(), 0);
    assert_eq!(w.sfu.rooms().count(), 0, "empty room removed");
}

#[test]
fn control_requests_get_typed_replies() {
    let mut w = World::new(53, Impairment::clean());
    let (i, sdp) = w.new_client(true, 3);
    let (user, session) = (w.clients[i].user, w.clients[i].session);
    let token = w.mint(&w.grant(user, session, true));
    let offer = ControlMessage::new(
        11,
        ControlBody::Offer(Offer {
            room: w.room,
            grant: token.clone(),
            sdp: sdp.clone(),
            slots: Some(2),
        }),
    );
    // Through the wire encoding, as the QUIC link will do it.
    let decoded = ControlMessage::decode(&offer.encode()).expect("decodes");
    let (now, wall) = (w.now, w.wall());
    let reply = w.sfu.handle_control(now, wall, &decoded).expect("reply");
    assert_eq!(reply.id, 11);
    let ControlBody::Answer(answer) = &reply.body else {
        panic!("expected answer, got {reply:?}");
    };
    assert_eq!(answer.session, session);
    // The room was created with 2 slots: the client's third recvonly m-line is answered
    // but stays unused, and the slot map lists only the two live ones.
    let answer = answer.clone();
    w.apply_answer(i, &answer);
    w.connect_all(Duration::from_secs(10));
    assert_eq!(w.slot_map(i).expect("slot map").len(), 2);
    let (now, wall) = (w.now, w.wall());

    let replay = w.sfu.handle_control(now, wall, &offer).expect("reply");
    assert!(matches!(&replay.body, ControlBody::Error(e) if e.code == ErrorCode::GrantReplayed));

    let leave = ControlMessage::new(12, ControlBody::Leave(Leave { session }));
    assert_eq!(
        w.sfu.handle_control(now, wall, &leave).map(|r| r.body),
        Some(ControlBody::Ack)
    );
    let again = w.sfu.handle_control(now, wall, &leave).expect("reply");
    assert!(matches!(&again.body, ControlBody::Error(e) if e.code == ErrorCode::UnknownSession));

    let wrong_way = ControlMessage::new(13, ControlBody::Ack);
    assert_eq!(w.sfu.handle_control(now, wall, &wrong_way), None);

    // Events become control messages for signaling.
    w.flush();
    let bodies: Vec<ControlBody> = w
        .events
        .iter()
        .filter_map(|(_, e)| w.sfu.control_body(e))
        .collect();
    assert!(bodies
        .iter()
        .any(|b| matches!(b, ControlBody::ParticipantLeft(l) if l.reason == LeaveReason::Left)));
}

/// A NAT rebinding mid-call (new public port, the client unaware): after the client's next
/// ICE check from the new port, its audio reaches the others again and theirs reaches it —
/// the SFU's lean SRTP egress follows the peer to its new address within seconds.
#[test]
fn audio_follows_a_nat_rebinding_both_ways() {
    let mut w = World::new(11, Impairment::clean());
    let a = w.join(true, 3);
    let b = w.join(true, 3);
    w.connect_all(Duration::from_secs(10));
    w.talk(a, Talk::Speech(30));
    w.talk(b, Talk::Speech(30));
    w.run_for(Duration::from_secs(2));

    let unknown_before = w.sfu.counters().dropped(DropReason::UnknownSource);
    w.rebind(a, 50_123);
    // Packets already in flight arrive for a moment; then the old mapping is dead until the
    // client's next ICE check from the new port teaches the SFU the new address.
    w.run_for(Duration::from_millis(100));
    let moved = w.now;
    // Bounded by the client's ICE check interval: the check teaches the SFU the new port,
    // and the first SRTP from it moves the SFU's sending there (str0m's own RTCP would
    // take ~14 s here).
    let both_ways = w.run_until(Duration::from_secs(4), |w| {
        w.heard_by(b, moved).contains(&a) && w.heard_by(a, moved).contains(&b)
    });
    let resumed = w.now;
    w.run_for(Duration::from_secs(2));
    assert!(
        both_ways,
        "after rebinding: b hears a {:?}, a hears b {:?}",
        w.heard_by(b, moved),
        w.heard_by(a, moved)
    );
    assert!(w.heard_by(a, resumed).contains(&b), "a keeps hearing b");
    assert!(w.heard_by(b, resumed).contains(&a), "b keeps hearing a");
    let unknown = w.sfu.counters().dropped(DropReason::UnknownSource) - unknown_before;
    eprintln!(
        "audio resumed both ways {:?} after the rebinding ({unknown} datagrams from the \
         unknown new port dropped before the ICE check)",
        resumed.saturating_duration_since(moved)
    );
}

/// Consent refreshes on the media pair are mostly answered by the SFU's lean responder,
/// and str0m still sees enough of them to keep the pair alive: after two minutes nobody
/// has left and everyone still hears everyone.
#[test]
fn consent_refreshes_are_answered_lean_and_connections_stay_up() {
    let mut w = World::new(57, Impairment::clean());
    let peers: Vec<usize> = (0..3).map(|_| w.join(true, 3)).collect();
    w.connect_all(Duration::from_secs(10));
    for &p in &peers {
        w.talk(p, Talk::Speech(30));
    }
    w.run_for(Duration::from_secs(120));
    let c = w.sfu.counters();
    // str0m clients refresh every 3 s: ~40 each in two minutes, a third of them to str0m.
    assert!(c.stun_lean >= 3 * 20, "{} answered lean", c.stun_lean);
    // str0m drops an ICE-lite pair after 15 s without a request it saw itself.
    assert_eq!(c.ice_disconnects, 0, "ICE went to disconnected");
    // A quiet participant's ICE-lite idle tick waits 9 s, not 3 s, and each request handed
    // to str0m restarts it: 12 timer wake-ups for the three in two minutes (84 without).
    assert!(c.rtc_timeouts <= 3 * 10, "{} Rtc timeouts", c.rtc_timeouts);
    // The clients check the lean replies' integrity: their checks all succeeded.
    for &p in &peers {
        assert_eq!(w.clients[p].ice_disconnects, 0, "client {p} lost ICE");
    }
    assert!(
        !w.events.iter().any(|(_, e)| matches!(e, SfuEvent::Left(_))),
        "someone left"
    );
    let since = w.now;
    w.run_for(Duration::from_secs(1));
    for &listener in &peers {
        let mut heard = w.heard_by(listener, since);
        heard.sort_unstable();
        let others: Vec<usize> = peers.iter().copied().filter(|p| *p != listener).collect();
        assert_eq!(
            heard, others,
            "what peer {listener} heard after two minutes"
        );
    }
}
