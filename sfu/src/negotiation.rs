//! Answering a client's offer: build the participant's `Rtc` from the SFU profile, let
//! str0m accept the SDP, and check that the offer asks for what Haven serves: at most one
//! Opus track to publish, receive slots, a data channel. Runs before the participant
//! exists, so a refusal leaves no state behind.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::rtp::{Extension, Ssrc};
use str0m::{Candidate, Rtc, RtcConfig};

use crate::egress::{build_capturing, ExtIds, KeySlot};
use crate::engine::JoinError;
use crate::offer::{audio_lines, OfferedDirection};
use crate::participant::{Outbox, Transmit};

/// An `Rtc` that has answered an offer, and what the offer turned out to contain.
pub(crate) struct NegotiatedRtc {
    pub rtc: Rtc,
    pub answer: SdpAnswer,
    pub opus_pt: Pt,
    /// Receive slots in offer order: the client's mid and our send stream's SSRC.
    pub slots: Vec<(Mid, Ssrc)>,
    /// When the new `Rtc` first wants a timeout.
    pub deadline: Instant,
    /// Filled with the SRTP keys when DTLS completes (the lean egress path).
    pub keys: KeySlot,
    /// Header extension ids the client negotiated for what we send it.
    pub ext_ids: ExtIds,
    /// The audio level extension id on what the client publishes.
    pub publish_level_id: Option<u8>,
}

/// Build an `Rtc` for one offer, accept it, and check it asks for what Haven offers:
/// at most one audio track to publish, receive slots, Opus.
pub(crate) fn negotiate_rtc(
    now: Instant,
    config: RtcConfig,
    media_addr: SocketAddr,
    sdp: &str,
    max_slots: usize,
    out: &mut Outbox,
) -> Result<NegotiatedRtc, JoinError> {
    let bad = |e: &dyn std::fmt::Display| JoinError::BadSdp(e.to_string());
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| bad(&e))?;
    let (mut rtc, keys) = build_capturing(config, now);
    let candidate = Candidate::host(media_addr, "udp").map_err(|e| bad(&e))?;
    rtc.add_local_candidate(candidate);
    drain_setup(&mut rtc, now, out).map_err(|e| bad(&e))?;
    let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| bad(&e))?;
    let deadline = drain_setup(&mut rtc, now, out).map_err(|e| bad(&e))?;

    let mut publish: Option<Mid> = None;
    let mut slot_mids = Vec::new();
    for line in audio_lines(sdp) {
        let mid = Mid::from(line.mid.as_str());
        // str0m accepted the same text, so it knows every mid; check that it agrees.
        let Some(media) = rtc.media(mid) else {
            return Err(JoinError::BadSdp(format!("unknown m-line {mid}")));
        };
        if media.kind() != MediaKind::Audio {
            continue;
        }
        match (line.direction, media.direction()) {
            (
                OfferedDirection::SendOnly | OfferedDirection::SendRecv,
                Direction::RecvOnly | Direction::SendRecv,
            ) => {
                if publish.is_some() {
                    return Err(JoinError::BadSdp(
                        "more than one audio track to publish".into(),
                    ));
                }
                publish = Some(mid);
            }
            (OfferedDirection::RecvOnly, Direction::SendOnly) => slot_mids.push(mid),
            _ => {}
        }
    }
    if slot_mids.len() > max_slots {
        return Err(JoinError::BadSdp(format!(
            "{} receive slots offered, at most {max_slots}",
            slot_mids.len()
        )));
    }
    if publish.is_none() && slot_mids.is_empty() {
        return Err(JoinError::BadSdp("no audio".into()));
    }
    let opus_pt = rtc
        .codec_config()
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt())
        .ok_or_else(|| JoinError::BadSdp("Opus not offered".into()))?;
    let all_mids = publish.iter().chain(&slot_mids);
    for mid in all_mids {
        let negotiated = rtc
            .media(*mid)
            .is_some_and(|m| m.remote_pts().contains(&opus_pt));
        if !negotiated {
            return Err(JoinError::BadSdp(format!(
                "m-line {mid} does not accept Opus"
            )));
        }
    }
    let ext_ids = slot_mids
        .first()
        .and_then(|mid| rtc.media(*mid))
        .map(|m| {
            let map = m.remote_extmap();
            ExtIds {
                audio_level: map.id_of(Extension::AudioLevel),
                mid: map.id_of(Extension::RtpMid),
            }
        })
        .unwrap_or_default();
    let publish_level_id = publish
        .and_then(|mid| rtc.media(mid))
        .and_then(|m| m.remote_extmap().id_of(Extension::AudioLevel));
    let mut slots = Vec::with_capacity(slot_mids.len());
    for mid in slot_mids {
        let ssrc = rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .map(|s| s.ssrc())
            .ok_or_else(|| JoinError::BadSdp(format!("no send stream for m-line {mid}")))?;
        slots.push((mid, ssrc));
    }
    Ok(NegotiatedRtc {
        rtc,
        answer,
        opus_pt,
        slots,
        deadline,
        keys,
        ext_ids,
        publish_level_id,
    })
}

/// Drain a not-yet-registered `Rtc` (ICE-lite sends nothing before the client's checks).
fn drain_setup(rtc: &mut Rtc, now: Instant, out: &mut Outbox) -> Result<Instant, str0m::RtcError> {
    loop {
        match rtc.poll_output()? {
            str0m::Output::Timeout(t) => return Ok(t.max(now)),
            str0m::Output::Transmit(t) => out.transmits.push_back(Transmit {
                source: t.source,
                destination: t.destination,
                contents: t.contents.into(),
            }),
            str0m::Output::Event(_) => {}
        }
    }
}
