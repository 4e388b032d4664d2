//! End to end with the real SFU binary (`haven-sfu`, from `HAVEN_SFU_BIN` or the workspace's
//! `target/debug`): it dials signaling's QUIC endpoint with the pinned fingerprint, two
//! members join Lounge with real str0m WebRTC offers, ICE and DTLS complete against the SFU
//! and its data channel announces the receive slots; banning one of them removes them from
//! the SFU within 1 s. Skipped (with a message) when the binary has not been built.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use haven_proto::client::{ClientRequest, LeftReason, ServerEvent};
use haven_proto::datachannel::{SfuToClient, SfuToClientBody, DATA_CHANNEL_LABEL};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

fn sfu_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HAVEN_SFU_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = haven_devstack::debug_bin_dir().join("haven-sfu");
    p.exists().then_some(p)
}

struct SfuProcess {
    child: Child,
    http: SocketAddr,
}

impl Drop for SfuProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_sfu(bin: &PathBuf, h: &Harness, node_id: &str) -> SfuProcess {
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let key = temp_dir("sfu-grant-key").join("grant-public-key.pem");
    std::fs::write(&key, &h.server.grant_public_key_pem).unwrap();
    let child = Command::new(bin)
        .args([
            "--node-id",
            node_id,
            "--media-bind",
            "127.0.0.1",
            "--workers",
            "1",
        ])
        .args(["--signaling-addr", &h.server.node_addr.to_string()])
        .args(["--signaling-cert-sha256", &h.server.node_fingerprint])
        .args(["--node-secret", NODE_SECRET])
        .args(["--grant-public-key", &key.display().to_string()])
        .args(["--http-listen", &http.to_string(), "--heartbeat-ms", "200"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn haven-sfu");
    SfuProcess { child, http }
}

/// A client `Rtc` with Haven's shared media profile (`haven_proto::media`).
fn client_rtc() -> Rtc {
    haven_proto::media::haven_rtc_config()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .build(Instant::now())
}

#[derive(Debug, Clone, PartialEq)]
enum MediaEvent {
    Connected,
    ChannelOpen,
    Slots(usize),
    Disconnected,
}

/// A WebRTC client: an offer with one send track, three receive slots and the data channel.
struct MediaClient {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
}

impl MediaClient {
    async fn offer() -> (Self, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = client_rtc();
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        for _ in 0..3 {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        api.add_channel(DATA_CHANNEL_LABEL.to_owned());
        let (offer, pending) = api.apply().expect("an offer");
        let sdp = offer.to_sdp_string();
        (
            Self {
                rtc,
                socket,
                local,
                pending: Some(pending),
            },
            sdp,
        )
    }

    /// Applies the answer and drives the connection in the background.
    fn start(mut self, answer: &str) -> mpsc::UnboundedReceiver<MediaEvent> {
        let answer = SdpAnswer::from_sdp_string(answer).expect("answer parses");
        let pending = self.pending.take().unwrap();
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let deadline = match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => t,
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                        continue;
                    }
                    Ok(Output::Event(e)) => {
                        let m = match e {
                            Event::Connected => Some(MediaEvent::Connected),
                            Event::ChannelOpen(..) => Some(MediaEvent::ChannelOpen),
                            Event::ChannelData(d) => match SfuToClient::decode(&d.data) {
                                Ok(SfuToClient {
                                    body: SfuToClientBody::Slots { slots },
                                    ..
                                }) => Some(MediaEvent::Slots(slots.len())),
                                _ => None,
                            },
                            Event::IceConnectionStateChange(
                                str0m::IceConnectionState::Disconnected,
                            ) => Some(MediaEvent::Disconnected),
                            _ => None,
                        };
                        if let Some(m) = m {
                            if tx.send(m).is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    Err(_) => {
                        let _ = tx.send(MediaEvent::Disconnected);
                        return;
                    }
                };
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100));
                tokio::select! {
                    r = self.socket.recv_from(&mut buf) => {
                        let Ok((n, source)) = r else { return };
                        if let Ok(contents) = Receive::new(Protocol::Udp, source, self.local, &buf[..n]) {
                            let _ = self.rtc.handle_input(Input::Receive(Instant::now(), contents));
                        }
                    }
                    _ = tokio::time::sleep(wait) => {
                        if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                            return;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }
}

async fn wait_for(rx: &mut mpsc::UnboundedReceiver<MediaEvent>, want: MediaEvent) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(Some(e)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        rx.recv(),
    )
    .await
    {
        if e == want {
            return true;
        }
    }
    false
}

async fn sfu_participants(http: SocketAddr) -> Option<u64> {
    let v: serde_json::Value = reqwest::get(format!("http://{http}/healthz"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["participants"].as_u64()
}

async fn join_with_media(
    ws: &mut Ws,
    id: u64,
    channel: uuid::Uuid,
) -> (haven_proto::SessionId, mpsc::UnboundedReceiver<MediaEvent>) {
    let (client, sdp) = MediaClient::offer().await;
    ws.send_request(
        Some(id),
        ClientRequest::Join {
            channel_id: channel,
            sdp,
        },
    )
    .await;
    let reply = ws.reply(id).await;
    let ServerEvent::Joined {
        sdp, session_id, ..
    } = reply.body
    else {
        panic!("join refused: {reply:?}");
    };
    (session_id, client.start(&sdp))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sfu_connects_media_and_a_ban_removes_the_user_within_one_second() {
    let Some(bin) = sfu_binary() else {
        // `cargo xtask test` builds every binary first, so there a missing SFU is a bug.
        assert!(
            std::env::var_os(haven_devstack::STACK_FILE_ENV).is_none(),
            "no haven-sfu binary although cargo xtask test built the workspace"
        );
        println!("SKIPPED: no haven-sfu binary (build it or set HAVEN_SFU_BIN)");
        return;
    };
    let h = Harness::start().await;
    let c = h.community().await;
    let sfu = start_sfu(&bin, &h, "sfu-real");
    let mut registered = false;
    for _ in 0..100 {
        if h.server
            .app
            .hub
            .lock()
            .links
            .contains_key(&haven_proto::NodeId::new("sfu-real"))
        {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(registered, "the real SFU registered over QUIC");

    let mut owner_ws = h.connect(&c.owner).await;
    let mut a_ws = h.connect(&c.moderator).await;
    let mut b_ws = h.connect(&c.member).await;
    let (_, mut a_media) = join_with_media(&mut a_ws, 1, c.lounge).await;
    let (_, mut b_media) = join_with_media(&mut b_ws, 1, c.lounge).await;
    for (who, rx) in [("a", &mut a_media), ("b", &mut b_media)] {
        assert!(
            wait_for(rx, MediaEvent::Connected).await,
            "{who}: ICE + DTLS with the SFU"
        );
        assert!(
            wait_for(rx, MediaEvent::Slots(3)).await,
            "{who}: slot map on the data channel"
        );
    }
    // The node's gauges refresh on its own schedule.
    let mut seen = None;
    for _ in 0..60 {
        seen = sfu_participants(sfu.http).await;
        if seen == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Some(2), "the SFU counts both participants");
    owner_ws
        .recv_until(Duration::from_secs(3), |m| {
            matches!(&m.body, ServerEvent::VoiceState { participants, .. } if participants.len() == 2)
        })
        .await
        .expect("the roster shows both");

    // Self mute, deafen and a moderator's server mute are enforced by the real node.
    a_ws.send_request(Some(2), ClientRequest::Mute { muted: true })
        .await;
    assert_eq!(a_ws.reply(2).await.body, ServerEvent::Ok);
    a_ws.send_request(Some(3), ClientRequest::Deafen { deafened: true })
        .await;
    assert_eq!(a_ws.reply(3).await.body, ServerEvent::Ok);
    a_ws.send_request(
        Some(4),
        ClientRequest::ServerMute {
            channel_id: c.lounge,
            user_id: c.member.id,
            muted: true,
        },
    )
    .await;
    assert_eq!(a_ws.reply(4).await.body, ServerEvent::Ok);

    let banned_at = Instant::now();
    h.client
        .as_user(&c.owner.token)
        .ban_member(c.id, c.member.id, None)
        .await
        .unwrap();
    let mut gone = None;
    while banned_at.elapsed() < Duration::from_secs(3) {
        if sfu_participants(sfu.http).await == Some(1) {
            gone = Some(banned_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gone = gone.expect("the SFU dropped the banned participant");
    println!("ban → participant gone from the real SFU: {gone:?}");
    assert!(gone < Duration::from_secs(1), "{gone:?}");
    let left = b_ws
        .recv_until(Duration::from_secs(2), |m| {
            matches!(m.body, ServerEvent::Left { .. })
        })
        .await
        .unwrap();
    assert!(matches!(
        left.body,
        ServerEvent::Left {
            reason: LeftReason::Banned,
            ..
        }
    ));
    h.server.shutdown();
}
