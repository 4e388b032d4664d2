//! Admission: only an offer with a valid, unused grant for this node and room reaches
//! str0m; every refusal is typed.

mod common;

use std::time::Duration;

use common::{Impairment, World};
use haven_proto::control::ErrorCode;
use haven_proto::grant::{GrantError, GrantSigner};
use haven_proto::{NodeId, RoomId};
use haven_sfu::admission::AdmissionError;
use haven_sfu::JoinError;

fn refused(w: &mut World, token: String) -> JoinError {
    let (i, sdp) = w.new_client(true, 3);
    w.submit(i, token, sdp).expect_err("must be refused")
}

#[test]
fn forged_expired_wrong_room_wrong_node_and_replayed_grants_are_refused() {
    let mut w = World::new(31, Impairment::clean());
    let (i, sdp) = w.new_client(true, 3);
    let (user, session) = (w.clients[i].user, w.clients[i].session);
    let grant = w.grant(user, session, true);
    let now = w.unix_now();

    // Forged: signed by someone else's key.
    let forger = GrantSigner::generate().unwrap();
    let forged = forger.mint(&grant, now, Duration::from_secs(30)).unwrap();
    assert_eq!(
        refused(&mut w, forged),
        JoinError::Admission(AdmissionError::Grant(GrantError::BadSignature))
    );

    // Expired: minted 90 s ago for 60 s.
    let expired = w
        .signer
        .mint(&grant, now - 90, Duration::from_secs(60))
        .unwrap();
    let e = refused(&mut w, expired);
    assert_eq!(
        e,
        JoinError::Admission(AdmissionError::Grant(GrantError::Expired))
    );
    assert_eq!(e.code(), ErrorCode::GrantExpired);

    // Longer-lived than 60 s, even if properly signed.
    let mut claims = w.signer.verifier().verify(&w.mint(&grant), now).unwrap();
    claims.exp = claims.iat + 600;
    let long = w.signer.sign_claims(&claims).unwrap();
    assert!(matches!(
        refused(&mut w, long),
        JoinError::Admission(AdmissionError::Grant(GrantError::LifetimeTooLong(600)))
    ));

    // Wrong room.
    let mut other_room = grant.clone();
    other_room.room = RoomId::new_random();
    let token = w.mint(&other_room);
    let e = refused(&mut w, token);
    assert!(matches!(
        e,
        JoinError::Admission(AdmissionError::WrongRoom { .. })
    ));
    assert_eq!(e.code(), ErrorCode::GrantWrongRoom);

    // Wrong node.
    let mut other_node = grant.clone();
    other_node.node = NodeId::new("sfu-elsewhere");
    let token = w.mint(&other_node);
    assert_eq!(refused(&mut w, token).code(), ErrorCode::GrantWrongNode);

    // Garbage.
    assert_eq!(
        refused(&mut w, "not.a.jwt".into()).code(),
        ErrorCode::GrantInvalid
    );

    assert_eq!(w.sfu.participant_count(), 0);
    assert_eq!(w.sfu.counters().grants_refused, 6);

    // The genuine grant works once...
    let token = w.mint(&grant);
    w.submit(i, token.clone(), sdp)
        .expect("valid grant admitted");
    // ...and is refused when replayed.
    assert_eq!(
        refused(&mut w, token),
        JoinError::Admission(AdmissionError::Replayed)
    );
    assert_eq!(w.sfu.participant_count(), 1);
}

#[test]
fn a_rejoin_with_the_same_session_replaces_the_old_connection() {
    let mut w = World::new(32, Impairment::clean());
    let a = w.join(true, 3);
    let _b = w.join(true, 3);
    w.connect_all(Duration::from_secs(10));
    let (user, session) = (w.clients[a].user, w.clients[a].session);
    let (i, sdp) = w.new_client(true, 3);
    let token = w.mint(&w.grant(user, session, true));
    w.submit(i, token, sdp).expect("rejoin admitted");
    assert_eq!(w.sfu.participant_count(), 2);
    assert!(w.events.iter().any(|(_, e)| matches!(e,
        haven_sfu::SfuEvent::Left(l) if l.session == session
            && l.reason == haven_proto::control::LeaveReason::Replaced)));
}
