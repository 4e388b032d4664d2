//! Server-side enforcement: server mute, can_speak = false, leave and kick, all decided at
//! the SFU by dropping packets or participants, never trusted to the client.

mod common;

use std::time::Duration;

use common::{Impairment, Talk, World};
use haven_proto::control::LeaveReason;
use haven_sfu::{DropReason, SfuEvent};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn server_mute_stops_forwarding_and_unmute_restores_it() {
    let mut w = World::new(21, Impairment::clean());
    let peers: Vec<usize> = (0..3).map(|_| w.join(true, 3)).collect();
    w.connect_all(secs(10));
    let (talker, listener) = (peers[0], peers[1]);
    w.talk(talker, Talk::Speech(30));
    w.run_for(secs(1));
    assert_eq!(w.heard_by(listener, w.start), vec![talker]);

    let session = w.clients[talker].session;
    let now = w.now;
    w.sfu
        .set_server_mute(now, session, true)
        .expect("known session");
    w.flush();
    // Allow for packets already on the wire to the listener.
    let muted_from = w.now + Duration::from_millis(50);
    w.run_for(secs(1));
    assert!(w.heard_by(listener, muted_from).is_empty());
    assert!(w.sfu.counters().dropped(DropReason::Muted) >= 45);
    let roster = w.sfu.roster(w.room).expect("room");
    assert!(roster
        .participants
        .iter()
        .any(|p| p.session == session && p.server_muted));
    // Muting ended the talker's speaking state, and the slot map no longer lists it.
    assert_eq!(
        w.slot_map(listener).expect("map").iter().flatten().count(),
        0
    );

    let now = w.now;
    w.sfu
        .set_server_mute(now, session, false)
        .expect("known session");
    let unmuted = w.now;
    w.run_for(secs(1));
    assert_eq!(w.heard_by(listener, unmuted), vec![talker]);
}

#[test]
fn can_speak_false_is_enforced_even_if_the_client_sends() {
    let mut w = World::new(22, Impairment::clean());
    let speaker = w.join(true, 3);
    // Grant says listen-only, but the client offers a send track anyway and uses it.
    let sneaky = w.join_with(false, true, 3);
    let listener = w.join(true, 3);
    w.connect_all(secs(10));
    w.talk(speaker, Talk::Speech(35));
    w.talk(sneaky, Talk::Speech(10));
    let since = w.now;
    w.run_for(secs(2));
    assert_eq!(w.heard_by(listener, since), vec![speaker]);
    assert_eq!(
        w.heard_by(sneaky, since),
        vec![speaker],
        "listen-only still hears"
    );
    assert_eq!(w.heard_by(speaker, since), Vec::<usize>::new());
    assert!(w.sfu.counters().dropped(DropReason::NotAllowedToSpeak) >= 90);
}

#[test]
fn leave_frees_the_slot_for_the_waiting_speaker_at_once() {
    let mut w = World::new(23, Impairment::clean());
    let peers: Vec<usize> = (0..6).map(|_| w.join(true, 3)).collect();
    w.connect_all(secs(10));
    for (&p, level) in peers[..4].iter().zip([20, 25, 30, 33]) {
        w.talk(p, Talk::Speech(level));
    }
    w.run_for(secs(2));
    let listener = peers[5];
    let before = w.now - Duration::from_millis(500);
    let heard = w.heard_by(listener, before);
    assert_eq!(heard.len(), 3, "three slots: {heard:?}");
    let waiting = *peers[..4]
        .iter()
        .find(|p| !heard.contains(p))
        .expect("one waits");
    let leaver = heard[0];

    let now = w.now;
    let session = w.clients[leaver].session;
    w.sfu.leave(now, session).expect("known");
    w.flush();
    let left_at = w.now;
    w.run_for(Duration::from_millis(60));
    let first = w.clients[listener]
        .received
        .iter()
        .find(|r| r.speaker == waiting && r.at >= left_at)
        .expect("waiting speaker promoted");
    // Promoted on its next packet: within one frame plus network delay.
    assert!(
        first.at - left_at <= Duration::from_millis(30),
        "{:?}",
        first.at - left_at
    );

    assert!(w.events.iter().any(|(_, e)| matches!(e,
        SfuEvent::Left(l) if l.session == session && l.reason == LeaveReason::Left)));
    let roster = w.sfu.roster(w.room).expect("room");
    assert!(roster.participants.iter().all(|p| p.session != session));
    assert!(w.sfu.leave(w.now, session).is_err(), "already gone");
}

#[test]
fn kick_removes_the_participant_with_a_reason() {
    let mut w = World::new(24, Impairment::clean());
    let a = w.join(true, 3);
    let b = w.join(true, 3);
    w.connect_all(secs(10));
    let session = w.clients[a].session;
    let now = w.now;
    w.sfu.kick(now, session, "rule 3").expect("known");
    w.flush();
    assert!(w.events.iter().any(|(_, e)| matches!(e,
        SfuEvent::Left(l) if l.session == session && l.reason == LeaveReason::Kicked)));
    w.talk(a, Talk::Speech(20));
    let since = w.now;
    w.run_for(secs(1));
    assert!(w.heard_by(b, since).is_empty());
    assert_eq!(w.sfu.participant_count(), 1);
}

#[test]
fn self_mute_and_deafen_are_enforced_at_the_sfu() {
    let mut w = World::new(25, Impairment::clean());
    let peers: Vec<usize> = (0..3).map(|_| w.join(true, 3)).collect();
    w.connect_all(secs(10));
    let (a, b, c) = (peers[0], peers[1], peers[2]);
    w.talk(a, Talk::Speech(30));
    w.talk(c, Talk::Speech(35));
    w.run_for(secs(1));

    // a mutes itself but its client keeps sending: nobody hears it.
    let now = w.now;
    w.sfu
        .set_self_mute(now, w.clients[a].session, true)
        .expect("known");
    let since = w.now + Duration::from_millis(50);
    w.run_for(secs(1));
    assert_eq!(w.heard_by(b, since), vec![c]);
    assert!(w.sfu.counters().dropped(DropReason::SelfMuted) >= 45);

    // Unmuted again; then b deafens: b hears nothing, c still hears a.
    let now = w.now;
    w.sfu
        .set_self_mute(now, w.clients[a].session, false)
        .expect("known");
    w.sfu
        .set_deafen(now, w.clients[b].session, true)
        .expect("known");
    let since = w.now + Duration::from_millis(50);
    w.run_for(secs(1));
    assert!(w.heard_by(b, since).is_empty());
    assert_eq!(w.heard_by(c, since), vec![a]);
    // And b hears again once undeafened.
    let now = w.now;
    w.sfu
        .set_deafen(now, w.clients[b].session, false)
        .expect("known");
    let since = w.now + Duration::from_millis(50);
    w.run_for(secs(1));
    assert_eq!(w.heard_by(b, since), vec![a, c]);
}
