//! End-to-end tests of the real `haven-sfu` binary over loopback: a stand-in signaling peer
//! on the QUIC control link (the real protocol, through haven-proto's framing), real str0m
//! client peers on real UDP sockets joining with grants minted by `GrantSigner`.
//!
//! Timeouts are generous and nothing asserts tight timing: these run on a noisy 2-core box.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haven_proto::control::{ControlBody, ErrorCode, Kick, Leave, LeaveReason, Offer, ServerMute};
use haven_proto::grant::{GrantSigner, JoinGrant};
use haven_proto::{NodeId, RoomId, SessionId, UserId};
use haven_sfu::node::metrics::{sample, sum_samples};
use support::control_peer::ControlPeer;
use support::node_process::{NodeProcess, NodeSpec};
use support::udp_peer::{PeerGroup, UdpPeer};

const SECRET: &str = "test-node-secret-0123456789";
const T: Duration = Duration::from_secs(20);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_haven-sfu"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

struct Joined {
    peer: UdpPeer,
    session: SessionId,
    user: UserId,
    answer_sdp: String,
}

/// Offer → answer through the control link with a fresh grant.
fn join(sig: &ControlPeer, signer: &GrantSigner, node: &str, room: RoomId, index: u32) -> Joined {
    let (mut peer, sdp) = UdpPeer::new(index, true, 3);
    let user = UserId::new_random();
    let session = SessionId::new_random();
    let grant = JoinGrant {
        user,
        display_name: format!("peer-{index}"),
        room,
        can_speak: true,
        session,
        node: NodeId::new(node),
    };
    let token = signer
        .mint(&grant, unix_now(), Duration::from_secs(30))
        .unwrap();
    let reply = sig
        .request(
            ControlBody::Offer(Offer {
                room,
                grant: token,
                sdp,
                slots: None,
            }),
            T,
        )
        .expect("a reply to the offer");
    let ControlBody::Answer(answer) = reply else {
        panic!("offer refused: {reply:?}");
    };
    assert_eq!(answer.session, session);
    peer.accept_answer(&answer.sdp);
    Joined {
        peer,
        session,
        user,
        answer_sdp: answer.sdp,
    }
}

/// The port of the host candidate in an SDP answer.
fn candidate_addr(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let c = l.strip_prefix("a=candidate:")?;
        let f: Vec<&str> = c.split_whitespace().collect();
        format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()
    })
}

fn stun_from_stranger() -> Vec<u8> {
    use str0m::ice::{StunMessage, TransId};
    let msg = StunMessage::binding_request("nobody:stranger", TransId::new(), true, 1, 100, false);
    let mut buf = [0u8; 512];
    let len = msg
        .to_bytes(Some(b"password"), &mut buf, |_, _| [0u8; 20])
        .unwrap();
    buf[..len].to_vec()
}

#[test]
fn three_peers_hear_each_other_through_the_real_binary() {
    let sig = ControlPeer::start(SECRET);
    let signer = GrantSigner::generate().unwrap();
    let mut node = NodeProcess::spawn(&NodeSpec {
        binary: binary(),
        node_id: "sfu-e2e",
        signaling: sig.addr,
        fingerprint: &sig.fingerprint,
        secret: SECRET,
        signer: &signer,
        workers: 2,
        extra: &[
            "--drain-timeout-secs",
            "3",
            "--heartbeat-ms",
            "200",
            "--room-stats-secs",
            "1",
        ],
    });
    let fail = |what: &str, node: &NodeProcess| -> ! {
        panic!("{what}\n--- sfu log ---\n{}", node.log());
    };

    // Registration: the node id, its capacity and worker 0's media address.
    let reg = sig
        .wait_registration(1, T)
        .unwrap_or_else(|| fail("no registration", &node));
    assert_eq!(reg.node_id, NodeId::new("sfu-e2e"));
    assert_eq!(reg.media_addr, node.media[0]);
    assert_eq!(node.media.len(), 2);
    assert!(sig
        .wait_event(0, T, |m| match &m.body {
            ControlBody::Heartbeat(h) if !h.draining => Some(()),
            _ => None,
        })
        .is_some());

    // Three peers join one room; all land on the same worker.
    let room = RoomId::new_random();
    let joined: Vec<Joined> = (0..3)
        .map(|i| join(&sig, &signer, "sfu-e2e", room, i))
        .collect();
    let cands: Vec<SocketAddr> = joined
        .iter()
        .map(|j| candidate_addr(&j.answer_sdp).expect("candidate"))
        .collect();
    assert!(cands.iter().all(|c| *c == cands[0]), "{cands:?}");
    assert!(node.media.contains(&cands[0]));
    let sessions: Vec<SessionId> = joined.iter().map(|j| j.session).collect();
    let users: Vec<UserId> = joined.iter().map(|j| j.user).collect();
    let views: Vec<_> = joined.iter().map(|j| j.peer.view.clone()).collect();
    for v in &views {
        v.talking.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let mut group = PeerGroup::run(joined.into_iter().map(|j| j.peer).collect());

    // Everyone hears both others, never themselves.
    let heard_all = wait_until(T, || {
        (0..3u32).all(|i| {
            (0..3u32)
                .filter(|j| *j != i)
                .all(|j| views[i as usize].heard_from(j) >= 25)
        })
    });
    if !heard_all {
        let counts: Vec<_> = views
            .iter()
            .map(|v| v.heard.lock().unwrap().clone())
            .collect();
        fail(&format!("peers did not hear each other: {counts:?}"), &node);
    }
    for (i, v) in views.iter().enumerate() {
        assert_eq!(v.heard_from(i as u32), 0, "peer {i} heard itself");
        assert!(v.channel_open.load(std::sync::atomic::Ordering::Relaxed));
    }

    // Signaling got a roster with all three connected, and per-room stats.
    let roster_ok = sig.wait_event(0, T, |m| match &m.body {
        ControlBody::Roster(r)
            if r.room == room
                && r.participants.len() == 3
                && r.participants.iter().all(|p| p.connected) =>
        {
            Some(())
        }
        _ => None,
    });
    assert!(roster_ok.is_some(), "no full roster");
    assert!(sig
        .wait_event(0, T, |m| match &m.body {
            ControlBody::RoomStats(s) if s.room == room && s.rtp_forwarded > 0 => Some(()),
            _ => None,
        })
        .is_some());
    assert!(sig
        .wait_event(0, T, |m| match &m.body {
            ControlBody::Speaking(s) if s.room == room && s.speaking => Some(()),
            _ => None,
        })
        .is_some());

    // Garbage, truncated, oversized datagrams and STUN from strangers at every worker port.
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stun = stun_from_stranger();
    for port in &node.media {
        for i in 0..50u8 {
            attacker
                .send_to(&[0xff, i, 0, 1, 2, 3, 4, 5], port)
                .unwrap();
            attacker.send_to(&[0x80, 0x6f], port).unwrap(); // truncated RTP
            attacker.send_to(&stun, port).unwrap();
        }
        for _ in 0..5 {
            attacker.send_to(&[0x80; 3000], port).unwrap();
        }
    }
    let before: Vec<u64> = (0..3u32)
        .map(|i| views[0].heard_from(i) + views[1].heard_from(i) + views[2].heard_from(i))
        .collect();
    let counted = wait_until(T, || {
        let m = node.metrics();
        sum_samples(&m, "haven_sfu_dropped_total", &["reason=\"garbage\""]) >= 200.0
            && sum_samples(&m, "haven_sfu_dropped_total", &["reason=\"stranger_stun\""]) >= 100.0
            && sum_samples(&m, "haven_sfu_dropped_total", &["reason=\"oversized\""]) >= 10.0
    });
    if !counted {
        fail(&format!("drops not counted:\n{}", node.metrics()), &node);
    }
    // Media is undisturbed: every speaker keeps being heard.
    assert!(wait_until(T, || (0..3u32).all(|i| {
        let now: u64 = (0..3).map(|k| views[k].heard_from(i)).sum();
        now >= before[i as usize] + 40
    })));

    // Metrics: rooms, participants, forwarded packets, lateness histogram.
    let m = node.metrics();
    assert_eq!(sum_samples(&m, "haven_sfu_participants", &[]), 3.0, "{m}");
    assert_eq!(sum_samples(&m, "haven_sfu_rooms", &[]), 1.0);
    assert!(sum_samples(&m, "haven_sfu_rtp_packets_forwarded_total", &[]) > 100.0);
    // The real binary forwards on the lean egress path (SFU-sealed SRTP) and the str0m
    // peers above decrypted it.
    assert_eq!(
        sum_samples(&m, "haven_sfu_rtp_packets_forwarded_lean_total", &[]),
        sum_samples(&m, "haven_sfu_rtp_packets_forwarded_total", &[])
    );
    assert!(
        sum_samples(&m, "haven_sfu_rtp_packets_received_lean_total", &[])
            >= 0.95 * sum_samples(&m, "haven_sfu_rtp_packets_received_total", &[])
    );
    assert!(sum_samples(&m, "haven_sfu_udp_bytes_sent_total", &[]) > 0.0);
    assert!(sum_samples(&m, "haven_sfu_forwarding_lateness_seconds_count", &[]) > 0.0);
    assert_eq!(
        sample(&m, "haven_sfu_control_link_up{state=\"up\"}"),
        Some(1.0)
    );
    let (status, health) = node.get("/healthz").unwrap();
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("\"control_link\":\"up\""), "{health}");

    // Server mute: the others stop hearing peer 0.
    let reply = sig.request(
        ControlBody::ServerMute(ServerMute {
            session: sessions[0],
            muted: true,
        }),
        T,
    );
    assert_eq!(reply, Some(ControlBody::Ack));
    // Enforced at the SFU: its packets are dropped there and counted.
    assert!(wait_until(T, || sum_samples(
        &node.metrics(),
        "haven_sfu_dropped_total",
        &["reason=\"muted\""]
    ) >= 10.0));
    std::thread::sleep(Duration::from_millis(300));
    let muted_at = views[1].heard_from(0);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        views[1].heard_from(0) <= muted_at + 2,
        "muted peer still heard"
    );
    assert!(views[0].heard_from(1) > 0);

    // Kick peer 2: acknowledged, reported as left (kicked).
    let since = sig.log_len();
    let reply = sig.request(
        ControlBody::Kick(Kick {
            session: sessions[2],
            reason: "test".into(),
        }),
        T,
    );
    assert_eq!(reply, Some(ControlBody::Ack));
    let left = sig.wait_event(since, T, |m| match &m.body {
        ControlBody::ParticipantLeft(l) if l.session == sessions[2] => Some(*l),
        _ => None,
    });
    let left = left.expect("participant_left for the kicked peer");
    assert_eq!(left.reason, LeaveReason::Kicked);
    assert_eq!(left.user, users[2]);

    // A request for a session the node does not have.
    let reply = sig.request(
        ControlBody::Leave(Leave {
            session: SessionId::new_random(),
        }),
        T,
    );
    assert!(
        matches!(reply, Some(ControlBody::Error(ref e)) if e.code == ErrorCode::UnknownSession),
        "{reply:?}"
    );

    // Signaling restarts: the node re-registers; rooms keep running and their roster is
    // reported again.
    let since = sig.log_len();
    sig.drop_connection();
    let reg2 = sig.wait_registration(2, T);
    if reg2.is_none() {
        fail("no re-registration", &node);
    }
    assert_eq!(reg2.unwrap().load.participants, 2);
    assert!(sig
        .wait_event(since, T, |m| match &m.body {
            ControlBody::Roster(r) if r.room == room && r.participants.len() == 2 => Some(()),
            _ => None,
        })
        .is_some());
    let heard = views[0].heard_from(1);
    assert!(wait_until(T, || views[0].heard_from(1) > heard + 25));

    // SIGTERM: draining heartbeat, offers refused, exit after the drain timeout with the
    // room still occupied.
    let since = sig.log_len();
    node.signal(libc::SIGTERM);
    assert!(sig
        .wait_event(since, T, |m| match &m.body {
            ControlBody::Heartbeat(h) if h.draining => Some(()),
            _ => None,
        })
        .is_some());
    let (_peer, sdp) = UdpPeer::new(9, true, 3);
    let grant = JoinGrant {
        user: UserId::new_random(),
        display_name: "late".into(),
        room,
        can_speak: true,
        session: SessionId::new_random(),
        node: NodeId::new("sfu-e2e"),
    };
    let reply = sig.request(
        ControlBody::Offer(Offer {
            room,
            grant: signer
                .mint(&grant, unix_now(), Duration::from_secs(30))
                .unwrap(),
            sdp,
            slots: None,
        }),
        T,
    );
    assert!(
        matches!(reply, Some(ControlBody::Error(ref e)) if e.code == ErrorCode::NodeFull),
        "{reply:?}"
    );
    let status = node
        .wait_exit(T)
        .unwrap_or_else(|| fail("did not exit after the drain", &node));
    assert!(status.success(), "{status}");
    group.stop();
    let log = node.log();
    assert!(log.contains("drain timeout"), "{log}");
}

#[test]
fn a_drained_node_exits_as_soon_as_its_rooms_are_empty() {
    let sig = ControlPeer::start(SECRET);
    let signer = GrantSigner::generate().unwrap();
    let mut node = NodeProcess::spawn(&NodeSpec {
        binary: binary(),
        node_id: "sfu-drain",
        signaling: sig.addr,
        fingerprint: &sig.fingerprint,
        secret: SECRET,
        signer: &signer,
        workers: 1,
        extra: &["--drain-timeout-secs", "60"],
    });
    sig.wait_registration(1, T).expect("registration");
    let room = RoomId::new_random();
    let j = join(&sig, &signer, "sfu-drain", room, 0);
    let session = j.session;
    let view = j.peer.view.clone();
    let _group = PeerGroup::run(vec![j.peer]);
    assert!(wait_until(T, || view
        .connected
        .load(std::sync::atomic::Ordering::Relaxed)));

    node.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        node.wait_exit(Duration::ZERO).is_none(),
        "exited with a room still open"
    );
    let (status, health) = node.get("/healthz").unwrap();
    assert_eq!(status, 200);
    assert!(health.contains("\"draining\":true"), "{health}");
    // The last participant leaves: the node stops well before the 60 s drain timeout.
    assert_eq!(
        sig.request(ControlBody::Leave(Leave { session }), T),
        Some(ControlBody::Ack)
    );
    let status = node.wait_exit(T).expect("exit once empty");
    assert!(status.success());
    assert!(node.log().contains("no participants left"));
}

#[test]
fn a_node_with_the_wrong_secret_is_refused_and_keeps_trying() {
    let sig = ControlPeer::start(SECRET);
    let signer = GrantSigner::generate().unwrap();
    let mut node = NodeProcess::spawn(&NodeSpec {
        binary: binary(),
        node_id: "sfu-wrong",
        signaling: sig.addr,
        fingerprint: &sig.fingerprint,
        secret: "not-the-secret-at-all",
        signer: &signer,
        workers: 1,
        extra: &[],
    });
    assert!(wait_until(T, || sig.refused() >= 1));
    assert!(wait_until(T, || node.get("/healthz").is_some_and(
        |(s, b)| s == 200 && b.contains("\"control_link\":\"refused\"")
    )));
    assert!(sig
        .wait_registration(1, Duration::from_millis(200))
        .is_none());
    // Still serving; SIGTERM with nothing to drain exits at once.
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(T).expect("exit").success());
}

#[test]
fn a_node_refuses_a_signaling_certificate_it_did_not_pin() {
    let sig = ControlPeer::start(SECRET);
    let signer = GrantSigner::generate().unwrap();
    let wrong_pin = "00".repeat(32);
    let mut node = NodeProcess::spawn(&NodeSpec {
        binary: binary(),
        node_id: "sfu-pin",
        signaling: sig.addr,
        fingerprint: &wrong_pin,
        secret: SECRET,
        signer: &signer,
        workers: 1,
        extra: &[],
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(sig
        .wait_registration(1, Duration::from_millis(500))
        .is_none());
    assert_eq!(
        sig.refused(),
        0,
        "the secret must never reach an unpinned peer"
    );
    let (_, health) = node.get("/healthz").unwrap();
    assert!(!health.contains("\"control_link\":\"up\""), "{health}");
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(T).expect("exit").success());
}
