//! Two client media stacks (str0m, RTP mode) talking through a minimal str0m forwarder that
//! behaves like the SFU (ICE-lite, answers each offer, forwards the speaker's RTP into the
//! listener's receive slot, announces the slot map on the data channel), over a simulated
//! network with loss, driven by simulated time. The clients are full [`VoiceCall`]s (media +
//! engine). Checks the offer shape, the RFC 6464 level on sent packets, slot-map routing,
//! speaking events, and that speech arrives intact.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use haven_client::voice::media::{haven_rtc_config, ClientMedia, Datagram, MediaConfig, OPUS_PT};
use haven_client::voice::{CallEvent, EngineConfig, VoiceCall, VoiceEngine};
use haven_proto::datachannel::{SfuToClient, SfuToClientBody, SlotEntry, DATA_CHANNEL_LABEL};
use haven_proto::{SessionId, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

const SFU: &str = "10.0.0.1:3478";

/// One SFU-side peer connection.
struct Leg {
    rtc: Rtc,
    timeout: Instant,
    channel: Option<ChannelId>,
    slot_mids: Vec<Mid>,
    received: Vec<(u32, Vec<u8>, Option<i8>)>,
}

impl Leg {
    fn answer(now: Instant, offer: &str) -> (Self, String) {
        let mut rtc = haven_rtc_config().set_ice_lite(true).build(now);
        rtc.add_local_candidate(Candidate::host(SFU.parse().unwrap(), "udp").unwrap());
        let offer = SdpOffer::from_sdp_string(offer).expect("client offer parses");
        let answer = rtc.sdp_api().accept_offer(offer).expect("offer accepted");
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
            Self {
                rtc,
                timeout: now,
                channel: None,
                slot_mids,
                received: Vec::new(),
            },
            text,
        )
    }

    fn drain(&mut self, now: Instant, net: &mut Net) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t.max(now + Duration::from_micros(100));
                    return;
                }
                Ok(Output::Transmit(t)) => net.send(
                    now,
                    Datagram {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.to_vec(),
                    },
                ),
                Ok(Output::Event(e)) => match e {
                    Event::ChannelOpen(id, label) => {
                        assert_eq!(label, DATA_CHANNEL_LABEL);
                        self.channel = Some(id);
                    }
                    Event::RtpPacket(p) => self.received.push((
                        p.header.timestamp,
                        p.payload.to_vec(),
                        p.header.ext_vals.audio_level,
                    )),
                    _ => {}
                },
                Err(e) => panic!("sfu leg: {e}"),
            }
        }
    }
}

struct Net {
    rng: StdRng,
    loss: f64,
    queue: BTreeMap<(Instant, u64), Datagram>,
    n: u64,
}

impl Net {
    fn send(&mut self, now: Instant, d: Datagram) {
        // Lose media only (large packets), never the handshake, so the test is about audio.
        if d.contents.len() > 60 && d.contents.len() < 400 && self.rng.gen_bool(self.loss) {
            return;
        }
        self.n += 1;
        let delay = Duration::from_millis(self.rng.gen_range(5..25));
        self.queue.insert((now + delay, self.n), d);
    }
}

#[test]
fn speech_flows_through_a_str0m_forwarder_into_the_listeners_slot() {
    let t0 = Instant::now();
    let a_addr: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let c_addr: SocketAddr = "10.0.0.3:5000".parse().unwrap();
    let alice = UserId::new_random();
    let carol = UserId::new_random();

    // Offers: a speaker (send track + slots) and a listen-only client (slots only).
    let speak = MediaConfig {
        can_speak: true,
        slots: 3,
    };
    let listen = MediaConfig {
        can_speak: false,
        slots: 3,
    };
    let (mut a, a_offer) =
        VoiceCall::offer(t0, alice, &[a_addr], speak, EngineConfig::default()).unwrap();
    let (mut c, c_offer) =
        VoiceCall::offer(t0, carol, &[c_addr], listen, EngineConfig::default()).unwrap();
    assert_eq!(a_offer.matches("m=audio").count(), 4);
    assert_eq!(a_offer.matches("a=sendonly").count(), 1);
    assert_eq!(c_offer.matches("m=audio").count(), 3);
    assert_eq!(
        c_offer.matches("a=sendonly").count(),
        0,
        "no send track without can_speak"
    );
    assert!(a_offer.contains("m=application"), "data channel offered");
    assert!(a_offer.contains("urn:ietf:params:rtp-hdrext:ssrc-audio-level"));
    assert!(a_offer.contains("useinbandfec=1") && a_offer.contains("usedtx=1"));

    let (mut leg_a, a_answer) = Leg::answer(t0, &a_offer);
    let (mut leg_c, c_answer) = Leg::answer(t0, &c_offer);
    a.accept_answer(t0, &a_answer).unwrap();
    c.accept_answer(t0, &c_answer).unwrap();
    assert!(
        a.accept_answer(t0, &a_answer).is_err(),
        "a second answer is refused, not a panic"
    );
    assert_eq!(leg_c.slot_mids.len(), 3);
    a.engine_mut().set_transmit(true);

    let mut net = Net {
        rng: StdRng::seed_from_u64(7),
        loss: 0.03,
        queue: BTreeMap::new(),
        n: 0,
    };
    let speech = common::speech_48k();
    let mut input = vec![0.0f32; 48_000 / 2]; // half a second to connect first
    input.extend_from_slice(&speech);
    input.extend(std::iter::repeat_n(0.0, 48_000));
    let mut played = Vec::new();
    let mut slot_map_sent = false;
    let mut speaking_sent = false;
    let mut events = Vec::new();
    let mut forwarded_seq: u64 = 1;
    let tick = Duration::from_millis(10);
    let sfu: SocketAddr = SFU.parse().unwrap();
    let mut now = t0;
    for chunk in input.chunks(480) {
        let end = now + tick;
        // Advance the network and all peers in 1 ms steps within this 10 ms tick.
        while now < end {
            while let Some(entry) = net.queue.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let d = entry.remove();
                if d.destination == sfu {
                    let leg = if d.source == a_addr {
                        &mut leg_a
                    } else {
                        &mut leg_c
                    };
                    let r =
                        Receive::new(Protocol::Udp, d.source, d.destination, &d.contents).unwrap();
                    leg.rtc.handle_input(Input::Receive(now, r)).unwrap();
                    leg.drain(now, &mut net);
                } else if d.destination == a_addr {
                    a.handle_datagram(now, d.source, d.destination, &d.contents);
                } else if d.destination == c_addr {
                    c.handle_datagram(now, d.source, d.destination, &d.contents);
                }
            }
            for leg in [&mut leg_a, &mut leg_c] {
                if leg.timeout <= now {
                    leg.rtc.handle_input(Input::Timeout(now)).unwrap();
                    leg.drain(now, &mut net);
                }
            }
            for call in [&mut a, &mut c] {
                if call.poll_timeout() <= now {
                    call.handle_timeout(now);
                }
            }
            // Forward what the SFU received from A into C's slot 0, as the SFU does.
            for (ts, payload, _) in leg_a.received.drain(..).collect::<Vec<_>>() {
                let mid = leg_c.slot_mids[0];
                let mut api = leg_c.rtc.direct_api();
                if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                    tx.write_rtp(RtpWrite::new(
                        OPUS_PT,
                        forwarded_seq.into(),
                        ts,
                        now,
                        payload,
                    ));
                    forwarded_seq += 1;
                }
                leg_c.drain(now, &mut net);
            }
            if let Some(id) = leg_c.channel {
                let mut send = |body: SfuToClientBody| {
                    let msg = SfuToClient::new(body).encode();
                    leg_c
                        .rtc
                        .channel(id)
                        .is_some_and(|mut ch| ch.write(false, &msg).is_ok())
                };
                if !slot_map_sent {
                    let slots = leg_c
                        .slot_mids
                        .iter()
                        .enumerate()
                        .map(|(i, mid)| SlotEntry {
                            slot: i as u8,
                            mid: mid.to_string(),
                            session: (i == 0).then(SessionId::new_random),
                            user: (i == 0).then_some(alice),
                        })
                        .collect();
                    slot_map_sent = send(SfuToClientBody::Slots { slots });
                } else if !speaking_sent {
                    speaking_sent = send(SfuToClientBody::Speaking {
                        session: SessionId::new_random(),
                        user: alice,
                        on: true,
                    });
                }
                leg_c.drain(now, &mut net);
            }
            for call in [&mut a, &mut c] {
                while let Some(d) = call.poll_transmit() {
                    net.send(now, d);
                }
            }
            while let Some(e) = c.poll_event() {
                events.push(e);
            }
            while a.poll_event().is_some() {}
            now += Duration::from_millis(1);
        }
        a.push_capture(now, chunk, 48_000, 1);
        let mut out = [0.0f32; 480];
        c.pull_playback(now, &mut out, 48_000, 1);
        played.extend_from_slice(&out);
    }

    assert!(a.is_connected() && c.is_connected());
    assert!(events.contains(&CallEvent::Connected));
    assert!(events
        .iter()
        .any(|e| matches!(e, CallEvent::Slots(s) if s[0].user == Some(alice))));
    assert!(events.contains(&CallEvent::Speaking {
        user: alice,
        on: true
    }));
    assert_eq!(
        c.engine_mut().slot_user(0),
        Some(alice),
        "the slot map routes slot 0 to alice"
    );
    let stats = c.engine_mut().slot_stats(0);
    assert!(stats.jitter.played > 100, "{stats:?}");
    // Speech arrives: align against the input (which started with half a second of silence).
    let reference = &input[..input.len() - 48_000];
    let (lag, ncc) = common::piecewise_ncc(reference, &played, 48_000 / 4, 9_600, 3 * 960);
    println!(
        "through str0m: ncc {ncc:.3}, delay {:.1} ms, {stats:?}",
        lag as f64 / 48.0
    );
    assert!(ncc >= 0.9, "ncc {ncc:.3}");
}

#[test]
fn audio_level_extension_rides_on_sent_packets() {
    let t0 = Instant::now();
    let a_addr: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let (mut a, offer) = ClientMedia::offer(t0, &[a_addr], MediaConfig::default()).unwrap();
    let (mut leg, answer) = Leg::answer(t0, &offer);
    a.accept_answer(t0, &answer).unwrap();
    let mut net = Net {
        rng: StdRng::seed_from_u64(1),
        loss: 0.0,
        queue: BTreeMap::new(),
        n: 0,
    };
    let mut engine = VoiceEngine::new(EngineConfig::default(), 5).unwrap();
    engine.set_transmit(true);
    let speech = common::synthesized_speech();
    let mut now = t0;
    for chunk in speech.chunks(480).take(150) {
        for _ in 0..10 {
            while let Some(entry) = net.queue.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let d = entry.remove();
                if d.destination == a_addr {
                    a.handle_receive(now, d.source, d.destination, &d.contents);
                } else {
                    let r =
                        Receive::new(Protocol::Udp, d.source, d.destination, &d.contents).unwrap();
                    leg.rtc.handle_input(Input::Receive(now, r)).unwrap();
                    leg.drain(now, &mut net);
                }
            }
            if leg.timeout <= now {
                leg.rtc.handle_input(Input::Timeout(now)).unwrap();
                leg.drain(now, &mut net);
            }
            if a.poll_timeout() <= now {
                a.handle_timeout(now);
            }
            while let Some(d) = a.poll_transmit() {
                net.send(now, d);
            }
            now += Duration::from_millis(1);
        }
        engine.push_capture(chunk, 48_000, 1);
        while let Some(f) = engine.poll_encoded() {
            a.send_frame(now, &f);
        }
        while let Some(d) = a.poll_transmit() {
            net.send(now, d);
        }
    }
    assert!(leg.received.len() > 50, "received {}", leg.received.len());
    let levels: Vec<i8> = leg.received.iter().filter_map(|(_, _, l)| *l).collect();
    assert_eq!(
        levels.len(),
        leg.received.len(),
        "every packet carries the RFC 6464 level"
    );
    assert!(
        levels.iter().any(|l| *l > -40),
        "speech is loud: {levels:?}"
    );
    // Garbage on the media socket is ignored.
    a.handle_receive(now, SFU.parse().unwrap(), a_addr, b"\x00\x01garbage");
    a.handle_receive(now, SFU.parse().unwrap(), a_addr, &[]);
}
