//! End-to-end media behaviour of the SFU core with real str0m peers in memory: who hears
//! whom, loudest-N slot selection, seamless slot switches, what the data channel says and
//! what the answer negotiates.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Impairment, Talk, World, FRAME};
use haven_proto::datachannel::SfuToClientBody;
use haven_sfu::DropReason;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn three_peers_all_hear_each_other_under_loss_and_jitter() {
    let mut w = World::new(
        7,
        Impairment {
            loss: 0.02,
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(15),
        },
    );
    let peers: Vec<usize> = (0..3).map(|_| w.join(true, 3)).collect();
    w.connect_all(secs(10));
    for (i, &p) in peers.iter().enumerate() {
        w.talk(p, Talk::Speech(25 + i as u8 * 5));
    }
    let since = w.now;
    w.run_for(secs(4));
    for &p in &peers {
        w.talk(p, Talk::Quiet);
    }
    w.run_for(Duration::from_millis(200));

    for &listener in &peers {
        let mut per_speaker: HashMap<usize, usize> = HashMap::new();
        for r in w.clients[listener]
            .received
            .iter()
            .filter(|r| r.at >= since)
        {
            *per_speaker.entry(r.speaker).or_default() += 1;
        }
        assert!(
            !per_speaker.contains_key(&listener),
            "peer {listener} heard itself"
        );
        for &speaker in peers.iter().filter(|s| **s != listener) {
            let sent = w.clients[speaker]
                .sent
                .iter()
                .filter(|(t, _)| *t >= since)
                .count();
            let got = per_speaker.get(&speaker).copied().unwrap_or(0);
            // Two hops of 2 % loss each: expect well over 90 % through.
            assert!(
                got * 100 >= sent * 90,
                "peer {listener} got {got} of {sent} packets from {speaker}"
            );
        }
    } // Every forwarded packet took the lean egress path: sealed by the SFU with the keys
      // of each subscriber's DTLS handshake, and str0m peers decrypted all of them.
    let c = w.sfu.counters();
    assert!(c.rtp_forwarded > 0);
    assert_eq!(c.rtp_forwarded_lean, c.rtp_forwarded);
    // And publishers' packets were opened by the SFU once str0m had shown each stream
    // (str0m opens the first of each, and those before the first packet of a stream).
    assert!(
        c.rtp_in_lean * 100 >= c.rtp_in * 95,
        "{} of {} received packets opened on the lean path",
        c.rtp_in_lean,
        c.rtp_in
    );
}

/// Peers' RTCP is counted and left unread, and the SFU writes none: its str0m never sees
/// the forwarded packets, so its reports would be wrong. Audio flows throughout.
#[test]
fn rtcp_from_peers_is_counted_not_read_and_the_sfu_writes_none() {
    let mut w = World::new(21, Impairment::clean());
    let peers: Vec<usize> = (0..3).map(|_| w.join(true, 3)).collect();
    w.connect_all(secs(10));
    for &p in &peers {
        w.talk(p, Talk::Speech(30));
    }
    w.run_for(secs(12));
    let c = w.sfu.counters();
    // str0m peers report every 5 s: two rounds from each of the three in 12 s.
    assert!(c.rtcp_in >= 6, "{} RTCP packets counted", c.rtcp_in);
    assert_eq!(c.dropped(DropReason::RejectedByRtc), 0);
    assert_eq!(w.sfu_rtcp_out, 0, "the SFU wrote RTCP");
    let since = w.now;
    w.run_for(secs(1));
    for &listener in &peers {
        let mut heard = w.heard_by(listener, since);
        heard.sort_unstable();
        let others: Vec<usize> = peers.iter().copied().filter(|p| *p != listener).collect();
        assert_eq!(heard, others, "what peer {listener} heard after 12 s");
    }
}

/// Housekeeping runs when a speaking hold runs out, not on a fixed beat: a silent room
/// costs about one engine wake-up a second, and speaking still ends within 100 ms of its
/// 400 ms hold.
#[test]
fn a_silent_room_rarely_wakes_the_engine_and_speaking_ends_on_time() {
    let mut w = World::new(22, Impairment::clean());
    let peers: Vec<usize> = (0..3).map(|_| w.join(true, 3)).collect();
    w.connect_all(secs(10));
    for &p in &peers {
        w.talk(p, Talk::Dtx);
    }
    w.run_for(secs(2));
    let before = w.sfu_timeouts;
    w.run_for(secs(10));
    let idle = w.sfu_timeouts - before;
    assert!(idle <= 40, "{idle} engine timeouts in 10 s of silence");

    let speaker = peers[0];
    let speaker_user = w.clients[speaker].user;
    w.talk(speaker, Talk::Speech(30));
    w.run_for(secs(1));
    w.talk(speaker, Talk::Quiet);
    let last_speech = w.clients[speaker].sent.last().map(|(t, _)| *t).unwrap();
    w.run_for(secs(1));
    let off = w
        .events
        .iter()
        .find_map(|(at, e)| match e {
            haven_sfu::SfuEvent::Speaking(s) if s.user == speaker_user && !s.speaking => Some(*at),
            _ => None,
        })
        .expect("speaking turned off");
    let after = off.saturating_duration_since(last_speech);
    assert!(
        after >= Duration::from_millis(400) && after <= Duration::from_millis(520),
        "speaking ended {after:?} after the last speech packet"
    );
}

/// 12 peers, 3 slots: quiet talkers grab the slots first, louder ones arrive; every listener
/// ends up with exactly the three loudest.
#[test]
fn twelve_peers_three_slots_get_the_three_loudest() {
    loudest_three_of_twelve(Impairment::clean(), 12);
}

#[test]
fn twelve_peers_three_slots_get_the_three_loudest_under_loss_and_jitter() {
    for seed in [13, 14, 15] {
        loudest_three_of_twelve(
            Impairment {
                loss: 0.01,
                delay: Duration::from_millis(10),
                jitter: Duration::from_millis(10),
            },
            seed,
        );
    }
}

fn loudest_three_of_twelve(impairment: Impairment, seed: u64) {
    let mut w = World::new(seed, impairment);
    let peers: Vec<usize> = (0..12).map(|_| w.join(true, 3)).collect();
    w.connect_all(secs(10));
    for &p in &peers[6..] {
        w.talk(p, Talk::Dtx);
    }
    for (&p, level) in peers[..3].iter().zip([48, 46, 44]) {
        w.talk(p, Talk::Speech(level));
    }
    w.run_for(Duration::from_millis(300));
    for (&p, level) in peers[3..6].iter().zip([30, 22, 15]) {
        w.talk(p, Talk::Speech(level));
    }
    w.run_for(secs(4));
    let since = w.now;
    w.run_for(secs(1));

    let loudest: Vec<usize> = peers[3..6].to_vec();
    for &listener in &peers[6..] {
        assert_eq!(w.heard_by(listener, since), loudest, "listener {listener}");
        let mut map: Vec<usize> = w
            .slot_map(listener)
            .expect("slot map")
            .into_iter()
            .flatten()
            .filter_map(|u| w.index_of_user(u))
            .collect();
        map.sort();
        assert_eq!(map, loudest, "slot map of listener {listener}");
    }
    // A selected speaker hears the other two loudest plus the runner-up, never itself.
    for &s in &loudest {
        let heard = w.heard_by(s, since);
        assert!(!heard.contains(&s));
        for &o in loudest.iter().filter(|o| **o != s) {
            assert!(
                heard.contains(&o),
                "speaker {s} does not hear {o}: {heard:?}"
            );
        }
    }
}

/// Check one slot stream at a listener: consecutive sequence numbers, rising timestamps.
fn assert_continuous(w: &World, listener: usize, slot: usize) -> usize {
    let stream: Vec<_> = w.clients[listener]
        .received
        .iter()
        .filter(|r| r.slot == slot)
        .collect();
    let mut switches = 0;
    for pair in stream.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert_eq!(
            b.seq,
            a.seq + 1,
            "slot {slot}: seq gap {} -> {}",
            a.seq,
            b.seq
        );
        assert!(
            b.timestamp.wrapping_sub(a.timestamp) > 0
                && b.timestamp.wrapping_sub(a.timestamp) < 48_000 * 10,
            "slot {slot}: timestamp {} -> {}",
            a.timestamp,
            b.timestamp
        );
        if a.speaker != b.speaker {
            switches += 1;
            assert!(b.marker, "slot {slot}: no marker at speaker change");
        }
    }
    switches
}

#[test]
fn speakers_change_without_clipping_or_gaps() {
    let mut w = World::new(3, Impairment::clean());
    let peers: Vec<usize> = (0..12).map(|_| w.join(true, 3)).collect();
    w.connect_all(secs(10));
    let listener = peers[11];

    // Turn 1: 0, 1, 2 talk, then fall silent (DTX).
    for (&p, level) in peers[..3].iter().zip([25, 30, 35]) {
        w.talk(p, Talk::Speech(level));
    }
    w.run_for(secs(2));
    for &p in &peers[..3] {
        w.talk(p, Talk::Dtx);
    }
    // A natural pause between turns.
    w.run_for(Duration::from_millis(500));

    // Turn 2: 3, 4, 5 take over; none of their speech may be clipped.
    let turn2 = w.now;
    for (&p, level) in peers[3..6].iter().zip([25, 30, 35]) {
        w.talk(p, Talk::Speech(level));
    }
    w.run_for(secs(2));

    // Turn 3: 6 starts, clearly louder, while 3, 4, 5 keep talking: it takes a slot from
    // its very first packet, replacing the quietest non-dominant holder (5).
    let turn3 = w.now;
    w.talk(peers[6], Talk::Speech(10));
    w.run_for(secs(1));

    let got = &w.clients[listener].received;
    for &s in &peers[3..6] {
        let sent: Vec<u64> = w.clients[s]
            .sent
            .iter()
            .filter(|(t, _)| *t >= turn2 && *t < turn3)
            .map(|(_, q)| *q)
            .collect();
        for q in &sent {
            assert!(
                got.iter().any(|r| r.speaker == s && r.speaker_seq == *q),
                "listener missed packet {q} of speaker {s} (clipped)"
            );
        }
    }
    let first6 = w.clients[peers[6]].sent.first().expect("6 sent").1;
    assert!(
        got.iter()
            .any(|r| r.speaker == peers[6] && r.speaker_seq == first6),
        "the new loud speaker's first packet was not forwarded"
    );

    let mut switches = 0;
    for slot in 0..3 {
        switches += assert_continuous(&w, listener, slot);
    }
    assert!(
        switches >= 4,
        "expected speaker changes in the slots, saw {switches}"
    );

    // The takeover in turn 3: 5's last packet and 6's first are one packet apart.
    let slot6 = got
        .iter()
        .find(|r| r.speaker == peers[6])
        .map(|r| r.slot)
        .expect("6 heard");
    let stream: Vec<_> = got.iter().filter(|r| r.slot == slot6).collect();
    let i = stream
        .iter()
        .position(|r| r.speaker == peers[6])
        .expect("6 in slot");
    let (before, after) = (stream[i - 1], stream[i]);
    assert_eq!(before.speaker, peers[5]);
    assert_eq!(after.seq, before.seq + 1);
    assert!(after.at - before.at <= FRAME + Duration::from_millis(1));
}

/// Speaking `on`/`off` messages one client got over its data channel about `user`.
fn speaking_told(w: &World, client: usize, user: haven_proto::UserId) -> Vec<bool> {
    w.clients[client]
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            SfuToClientBody::Speaking { user: u, on, .. } if *u == user => Some(*on),
            _ => None,
        })
        .collect()
}

#[test]
fn data_channel_carries_slot_map_and_speaking_events() {
    // Listener 2 has two slots and hears the speaker: it sees the speech in-band (the
    // forwarded packets' levels) and gets no speaking message. Listener 3 has one slot,
    // taken by a louder speaker, so it is told about the quieter one over the data channel.
    let mut w = World::new(5, Impairment::clean());
    let speaker = w.join(true, 2);
    let loud = w.join(true, 2);
    let listener = w.join(true, 2);
    let narrow = w.join(true, 1);
    w.connect_all(secs(10));
    let (speaker_user, loud_user) = (w.clients[speaker].user, w.clients[loud].user);
    w.talk(loud, Talk::Speech(10));
    w.run_for(secs(1));
    w.talk(speaker, Talk::Speech(30));
    w.run_for(secs(1));
    w.talk(speaker, Talk::Quiet);
    w.run_for(secs(1));

    assert_eq!(speaking_told(&w, narrow, speaker_user), vec![true, false]);
    assert_eq!(w.slot_map(narrow), Some(vec![Some(loud_user)]));
    assert!(speaking_told(&w, narrow, loud_user).is_empty());
    assert!(speaking_told(&w, listener, speaker_user).is_empty());
    assert!(speaking_told(&w, listener, loud_user).is_empty());
    // Nobody is told about themselves.
    assert!(speaking_told(&w, speaker, speaker_user).is_empty());

    let msgs = &w.clients[listener].messages;
    let map = w.slot_map(listener).expect("slot map");
    assert_eq!(map.len(), 2);
    assert!(map.contains(&Some(speaker_user)) && map.contains(&Some(loud_user)));
    // The map names the client's own mids, in offer order.
    let SfuToClientBody::Slots { slots } = &msgs
        .iter()
        .rev()
        .find(|m| matches!(m.body, SfuToClientBody::Slots { .. }))
        .expect("slots")
        .body
    else {
        unreachable!()
    };
    let mids: Vec<String> = w.clients[listener]
        .slot_mids
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(
        slots.iter().map(|s| s.mid.clone()).collect::<Vec<_>>(),
        mids
    );
    // Forwarded packets keep their RFC 6464 level (what the listener's meter reads).
    assert!(w.clients[listener]
        .received
        .iter()
        .filter(|r| r.speaker == speaker)
        .all(|r| r.level == Some(-30)));
}

#[test]
fn a_deafened_client_is_told_who_speaks_and_told_off_after() {
    let mut w = World::new(6, Impairment::clean());
    let speaker = w.join(true, 2);
    let listener = w.join(true, 2);
    w.connect_all(secs(10));
    let speaker_user = w.clients[speaker].user;
    w.talk(speaker, Talk::Speech(30));
    w.run_for(secs(1));
    // Heard in a slot: nothing on the data channel.
    assert!(speaking_told(&w, listener, speaker_user).is_empty());
    // Deafened mid-sentence: its slots go quiet, so the SFU says who is speaking.
    let now = w.now;
    w.sfu
        .set_deafen(now, w.clients[listener].session, true)
        .expect("known");
    w.run_for(secs(1));
    assert_eq!(speaking_told(&w, listener, speaker_user), vec![true]);
    // Undeafened: what it was told on is told off when the speaker stops.
    let now = w.now;
    w.sfu
        .set_deafen(now, w.clients[listener].session, false)
        .expect("known");
    w.run_for(secs(1));
    w.talk(speaker, Talk::Quiet);
    w.run_for(secs(1));
    assert_eq!(speaking_told(&w, listener, speaker_user), vec![true, false]);
    // A second sentence is heard in-band again.
    w.talk(speaker, Talk::Speech(30));
    w.run_for(secs(1));
    w.talk(speaker, Talk::Quiet);
    w.run_for(secs(1));
    assert_eq!(speaking_told(&w, listener, speaker_user), vec![true, false]);
}

#[test]
fn answer_negotiates_opus_fec_dtx_audio_level_and_ice_lite() {
    let mut w = World::new(1, Impairment::clean());
    let (i, sdp) = w.new_client(true, 3);
    let (user, session) = (w.clients[i].user, w.clients[i].session);
    let token = w.mint(&w.grant(user, session, true));
    let answer = w.submit(i, token, sdp).expect("accepted");
    let a = answer.sdp;
    assert!(a.contains("a=ice-lite"), "{a}");
    assert!(a.contains("opus/48000/2"), "{a}");
    assert!(a.contains("useinbandfec=1"), "{a}");
    assert!(a.contains("usedtx=1"), "{a}");
    assert!(
        a.contains("urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        "{a}"
    );
    assert!(a.contains("webrtc-datachannel"), "{a}");
    assert_eq!(a.matches("a=sendonly").count(), 3, "three slots: {a}");
    assert_eq!(a.matches("a=recvonly").count(), 1, "one publish track: {a}");
    assert!(!a.contains("VP8") && !a.contains("H264"), "{a}");
}

#[test]
fn a_late_joiner_gets_the_current_slot_map_and_audio() {
    let mut w = World::new(9, Impairment::clean());
    let a = w.join(true, 3);
    let b = w.join(true, 3);
    w.connect_all(secs(10));
    w.talk(a, Talk::Speech(30));
    w.talk(b, Talk::Speech(35));
    w.run_for(secs(1));
    let late = w.join(false, 3);
    w.connect_all(secs(10));
    let since = w.now;
    w.run_for(secs(1));
    assert_eq!(w.heard_by(late, since), vec![a, b]);
    let mut map: Vec<usize> = w
        .slot_map(late)
        .expect("map")
        .into_iter()
        .flatten()
        .filter_map(|u| w.index_of_user(u))
        .collect();
    map.sort();
    assert_eq!(map, vec![a, b]);
}
