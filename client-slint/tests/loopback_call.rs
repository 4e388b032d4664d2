//! Two real calls over UDP on 127.0.0.1 with paced fake sound cards: `CallRunner`s (socket
//! thread + device callbacks) for a speaker and a listener, and a small str0m forwarder
//! standing in for the SFU (ICE-lite, forwards the speaker's RTP into the listener's slot 0,
//! announces the slot map). Speech into the speaker's fake microphone must come out of the
//! listener's fake speaker (NCC ≥ 0.9), and the measured mouth-to-ear delay is printed.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use haven_client::voice::device::{AudioDevices, FakeSoundCard};
use haven_client::voice::media::{haven_rtc_config, MediaConfig, OPUS_PT};
use haven_client::voice::runner::{bind_media_socket, CallRunner};
use haven_client::voice::{CallEvent, EngineConfig, VoiceCall};
use haven_proto::datachannel::{SfuToClient, SfuToClientBody, SlotEntry};
use haven_proto::UserId;
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Leg {
    rtc: Rtc,
    peer: SocketAddr,
    channel: Option<ChannelId>,
    slot_mids: Vec<Mid>,
    timeout: Instant,
}

fn answer(now: Instant, sfu: SocketAddr, peer: SocketAddr, offer: &str) -> (Leg, String) {
    let mut rtc = haven_rtc_config().set_ice_lite(true).build(now);
    rtc.add_local_candidate(Candidate::host(sfu, "udp").unwrap());
    let answer = rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(offer).unwrap())
        .unwrap();
    let text = answer.to_sdp_string();
    let slot_mids = text
        .split("m=audio")
        .skip(1)
        .filter(|m| m.contains("a=sendonly"))
        .filter_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("a=mid:"))
                .map(|s| Mid::from(s.trim()))
        })
        .collect();
    (
        Leg {
            rtc,
            peer,
            channel: None,
            slot_mids,
            timeout: now,
        },
        text,
    )
}

/// Drain a leg: send its datagrams, return RTP it received (timestamp, payload).
fn drain(leg: &mut Leg, socket: &UdpSocket, now: Instant) -> Vec<(u32, Vec<u8>)> {
    let mut rtp = Vec::new();
    loop {
        match leg.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                leg.timeout = t;
                return rtp;
            }
            Ok(Output::Transmit(t)) => {
                let _ = socket.send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(Event::ChannelOpen(id, _))) => leg.channel = Some(id),
            Ok(Output::Event(Event::RtpPacket(p))) => {
                rtp.push((p.header.timestamp, p.payload.to_vec()))
            }
            Ok(Output::Event(_)) => {}
            Err(_) => {
                leg.timeout = now + Duration::from_millis(5);
                return rtp;
            }
        }
    }
}

#[test]
fn a_call_over_loopback_udp_with_fake_devices() {
    let alice = UserId::new_random();
    let carol = UserId::new_random();
    let t0 = Instant::now();
    let (a_socket, a_addr) = bind_media_socket("127.0.0.1".parse().unwrap()).unwrap();
    let (c_socket, c_addr) = bind_media_socket("127.0.0.1".parse().unwrap()).unwrap();
    let (a_call, a_offer) = VoiceCall::offer(
        t0,
        alice,
        &[a_addr],
        MediaConfig {
            can_speak: true,
            slots: 3,
        },
        EngineConfig::default(),
    )
    .unwrap();
    let (c_call, c_offer) = VoiceCall::offer(
        t0,
        carol,
        &[c_addr],
        MediaConfig {
            can_speak: false,
            slots: 3,
        },
        EngineConfig::default(),
    )
    .unwrap();

    let sfu_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sfu = sfu_socket.local_addr().unwrap();
    let (leg_a, a_answer) = answer(t0, sfu, a_addr, &a_offer);
    let (leg_c, c_answer) = answer(t0, sfu, c_addr, &c_offer);
    let (mut a_call, mut c_call) = (a_call, c_call);
    a_call.accept_answer(t0, &a_answer).unwrap();
    c_call.accept_answer(t0, &c_answer).unwrap();
    a_call.engine_mut().set_transmit(true);

    // The forwarder thread.
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    let forwarder = std::thread::spawn(move || {
        let (mut leg_a, mut leg_c) = (leg_a, leg_c);
        let mut buf = vec![0u8; 2048];
        let mut seq: u64 = 1;
        let mut slots_sent = false;
        while !halt.load(Ordering::Relaxed) {
            sfu_socket
                .set_read_timeout(Some(Duration::from_millis(2)))
                .unwrap();
            let now = Instant::now();
            if let Ok((n, from)) = sfu_socket.recv_from(&mut buf) {
                let leg = if from == leg_a.peer {
                    &mut leg_a
                } else {
                    &mut leg_c
                };
                if let Ok(r) = Receive::new(Protocol::Udp, from, sfu, &buf[..n]) {
                    let _ = leg.rtc.handle_input(Input::Receive(now, r));
                }
            }
            let now = Instant::now();
            for leg in [&mut leg_a, &mut leg_c] {
                if leg.timeout <= now {
                    let _ = leg.rtc.handle_input(Input::Timeout(now));
                }
            }
            let from_a = drain(&mut leg_a, &sfu_socket, now);
            for (ts, payload) in from_a {
                let mid = leg_c.slot_mids[0];
                if let Some(tx) = leg_c.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    tx.write_rtp(RtpWrite::new(OPUS_PT, seq.into(), ts, now, payload));
                    seq += 1;
                }
            }
            if !slots_sent {
                if let Some(id) = leg_c.channel {
                    let slots = leg_c
                        .slot_mids
                        .iter()
                        .enumerate()
                        .map(|(i, mid)| SlotEntry {
                            slot: i as u8,
                            mid: mid.to_string(),
                            session: None,
                            user: (i == 0).then_some(alice),
                        })
                        .collect();
                    let msg = SfuToClient::new(SfuToClientBody::Slots { slots }).encode();
                    slots_sent = leg_c
                        .rtc
                        .channel(id)
                        .is_some_and(|mut ch| ch.write(false, &msg).is_ok());
                }
            }
            drain(&mut leg_c, &sfu_socket, now);
        }
    });

    let card_a = FakeSoundCard::new("card-a");
    let card_c = FakeSoundCard::new("card-c");
    let runner_a = CallRunner::start(
        a_call,
        a_socket,
        &AudioDevices::with_host(card_a.host()),
        None,
        None,
    )
    .unwrap();
    let runner_c = CallRunner::start(
        c_call,
        c_socket,
        &AudioDevices::with_host(card_c.host()),
        None,
        None,
    )
    .unwrap();

    // Wait for both to connect and the slot map to arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut a_up, mut c_up, mut slots) = (false, false, false);
    while !(a_up && c_up && slots) {
        assert!(
            Instant::now() < deadline,
            "connect: a {a_up} c {c_up} slots {slots}"
        );
        while let Ok(e) = runner_a.events.try_recv() {
            a_up |= e == CallEvent::Connected;
        }
        while let Ok(e) = runner_c.events.try_recv() {
            c_up |= e == CallEvent::Connected;
            slots |= matches!(e, CallEvent::Slots(_));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect_ms = t0.elapsed().as_millis();

    let speech = common::speech_48k();
    card_c.take_played();
    card_a.speak_into_mic(&speech);
    std::thread::sleep(Duration::from_secs_f64(
        speech.len() as f64 / 48_000.0 + 0.8,
    ));
    let played = card_c.take_played();
    stop.store(true, Ordering::Relaxed);
    drop(runner_a);
    drop(runner_c);
    forwarder.join().unwrap();

    let (lag, ncc) = common::piecewise_ncc(&speech, &played, 48_000 / 2, 9_600, 3 * 960);
    println!(
        "loopback call: connected in {connect_ms} ms, ncc {ncc:.3}, mouth-to-ear {:.1} ms (fake mic → Opus → UDP → forwarder → UDP → jitter buffer → fake speaker)",
        lag as f64 / 48.0
    );
    assert!(ncc >= 0.9, "ncc {ncc:.3}");
    assert!(lag < 48 * 300, "mouth-to-ear {} ms", lag / 48);
}
