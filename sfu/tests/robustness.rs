//! Bad input: garbage and truncated datagrams, STUN from strangers, oversized packets and
//! malformed SDP are dropped and counted; a panic inside one participant costs only that
//! participant.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Impairment, Talk, World};
use haven_proto::control::{ErrorCode, LeaveReason};
use haven_sfu::{DropReason, JoinError, SfuEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::ice::{StunMessage, TransId};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn stun_request(username: &str) -> Vec<u8> {
    let msg = StunMessage::binding_request(username, TransId::new(), true, 7, 100, true);
    let mut buf = vec![0u8; 512];
    // Wrong HMAC on purpose: the stranger does not know the password.
    let len = msg
        .to_bytes(Some(b"guess"), &mut buf, |_, _| [0x42; 20])
        .expect("stun encodes");
    buf.truncate(len);
    buf
}

#[test]
fn garbage_strangers_and_oversized_datagrams_are_dropped_and_counted() {
    let mut w = World::new(41, Impairment::clean());
    let a = w.join(true, 3);
    let b = w.join(true, 3);
    w.connect_all(secs(10));
    w.talk(a, Talk::Speech(30));
    w.run_for(secs(1));

    let stranger: SocketAddr = (Ipv4Addr::new(203, 0, 113, 9), 5555).into();
    let known = w.clients[b].addr;
    let before = w.sfu.counters().clone();

    w.inject(stranger, &[]);
    w.inject(stranger, &[0xff; 64]);
    w.inject(stranger, &[0x80, 0x6f]); // truncated RTP
    w.inject(stranger, &[0x00, 0x01, 0x00, 0x08, 0x21]); // truncated STUN
    w.inject(stranger, &vec![0x80; 4000]); // oversized
    w.inject(stranger, &stun_request("nosuchufrag:abcd"));
    w.inject(stranger, &[0x16; 40]); // DTLS-looking, unknown source
    w.inject(stranger, &[0x80; 100]); // RTP-looking, unknown source
    w.inject(known, &[0xfe; 30]); // garbage from a real client's address
    w.inject(known, &[0x80; 120]); // forged RTP from a real client's address (bad SRTP)

    let c = w.sfu.counters();
    let delta = |r| c.dropped(r) - before.dropped(r);
    assert_eq!(delta(DropReason::Garbage), 5);
    assert_eq!(delta(DropReason::Oversized), 1);
    assert_eq!(delta(DropReason::StrangerStun), 1);
    assert_eq!(delta(DropReason::UnknownSource), 2);

    // Seeded fuzz from the stranger and from a real client: nothing panics.
    let mut rng = StdRng::seed_from_u64(41);
    for i in 0..2000 {
        let len = rng.gen_range(0..1600);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if let Some(b0) = bytes.first_mut() {
            // Bias towards bytes that pass the first demux step.
            *b0 = [0x00, 0x01, 0x16, 0x17, 0x80, 0x90, *b0][i % 7];
        }
        let from = if i % 2 == 0 { stranger } else { known };
        w.inject(from, &bytes);
    }
    assert_eq!(w.sfu.counters().participant_panics, 0);

    // Media still flows.
    let since = w.now;
    w.run_for(secs(1));
    assert_eq!(w.heard_by(b, since), vec![a]);
    assert_eq!(w.sfu.participant_count(), 2);
}

#[test]
fn malformed_sdp_is_refused_with_a_typed_error() {
    let mut w = World::new(42, Impairment::clean());
    let try_sdp = |w: &mut World, sdp: String| {
        let (i, _) = w.new_client(true, 3);
        let (user, session) = (w.clients[i].user, w.clients[i].session);
        let token = w.mint(&w.grant(user, session, true));
        w.submit(i, token, sdp).expect_err("refused")
    };
    let (_, good) = w.new_client(true, 3);

    let cases = vec![
        "garbage".to_string(),
        String::new(),
        good.replace("a=fingerprint", "a=xfingerprint"),
        good.lines().take(6).collect::<Vec<_>>().join("\r\n"),
        good.replace("opus/48000/2", "PCMU/8000"),
        format!("{good}{}", "a=x-padding\r\n".repeat(10_000)),
    ];
    for sdp in cases {
        let e = try_sdp(&mut w, sdp);
        assert!(matches!(e, JoinError::BadSdp(_)), "{e:?}");
        assert_eq!(e.code(), ErrorCode::BadSdp);
    }
    assert_eq!(w.sfu.counters().offers_refused, 6);
    assert_eq!(w.sfu.participant_count(), 0);

    // Two publish tracks, or more slots than allowed.
    let two = good.replacen("a=recvonly", "a=sendonly", 1);
    assert!(matches!(try_sdp(&mut w, two), JoinError::BadSdp(_)));
    let (_, many) = w.new_client(false, 17);
    assert!(matches!(try_sdp(&mut w, many), JoinError::BadSdp(_)));
}

#[test]
fn a_panic_in_one_participant_drops_only_that_participant() {
    let mut w = World::new(43, Impairment::clean());
    let peers: Vec<usize> = (0..3).map(|_| w.join(true, 3)).collect();
    w.connect_all(secs(10));
    for (i, &p) in peers.iter().enumerate() {
        w.talk(p, Talk::Speech(25 + 5 * i as u8));
    }
    w.run_for(secs(1));

    let victim = peers[1];
    let session = w.clients[victim].session;
    assert!(w.sfu.inject_fault(session));
    let since = w.now;
    w.run_for(secs(2));

    assert_eq!(w.sfu.counters().participant_panics, 1);
    assert!(w.events.iter().any(|(_, e)| matches!(e,
        SfuEvent::Left(l) if l.session == session && l.reason == LeaveReason::Failed)));
    assert_eq!(w.sfu.participant_count(), 2);
    let later = since + Duration::from_millis(100);
    assert_eq!(w.heard_by(peers[0], later), vec![peers[2]]);
    assert_eq!(w.heard_by(peers[2], later), vec![peers[0]]);
}
