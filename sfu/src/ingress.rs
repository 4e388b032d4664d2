//! The lean ingress path: a publisher's Opus is opened by the SFU instead of its str0m `Rtc`.
//!
//! Through str0m each received packet costs `handle_input` (demux, SRTP, RTP parsing,
//! receive statistics, NACK bookkeeping) and a full `poll_output` drain; on a live node that
//! was the largest cost left after [`crate::egress`]. Here, once str0m has delivered the
//! publisher's first RTP packet (which fixes its SSRC and extended sequence number), later
//! SRTP packets on that SSRC are authenticated and decrypted with the peer's half of the
//! DTLS-SRTP keys, checked against a replay window and handed straight to forwarding.
//! Everything else (RTCP, STUN, DTLS, other SSRCs) still goes to str0m.
//!
//! RFC 3711 §3.3: the packet index is estimated from the highest index seen (Appendix A),
//! authenticated before anything is trusted, and a 64-packet window refuses replays.

use ring::aead::Aad;
use str0m::crypto::{Aes128CmSha1_80, CryptoProvider};

use crate::egress::{gcm_iv, Cipher, SealerError, SrtpKeys, GCM_TAG_LEN};

/// One received RTP packet, decrypted, as forwarding needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub pt: u8,
    /// Extended sequence number (the SRTP index).
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// RFC 6464: level in −dBov (0..=127) and the voice flag, when the extension was there.
    pub audio_level: Option<(u8, bool)>,
    pub payload: Vec<u8>,
}

/// What the lean path made of a datagram.
#[derive(Debug)]
pub enum Opened {
    Packet(Inbound),
    /// Failed authentication or a replay: drop it (str0m would refuse it too).
    Refused,
    /// Not for the lean path (RTCP, another SSRC, an unusual header): give it to str0m.
    NotMine,
}

/// The fixed part of an RTP header and where the payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeaderView {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub padding: bool,
    pub header_len: usize,
    /// RFC 6464 value from a one-byte extension with `level_id`.
    pub audio_level: Option<(u8, bool)>,
}

/// Parse an RTP header (RFC 3550 §5.1, RFC 8285 one-byte extensions). `None` for anything
/// that is not plain RTP version 2 or is truncated; RTCP (RFC 5761 §4) is not RTP here.
pub fn parse_rtp_header(buf: &[u8], level_id: Option<u8>) -> Option<RtpHeaderView> {
    if buf.len() < 12 || buf[0] >> 6 != 2 {
        return None;
    }
    let pt = buf[1] & 0x7f;
    if (64..=95).contains(&pt) {
        return None;
    }
    let csrc = usize::from(buf[0] & 0x0f);
    let mut header_len = 12 + 4 * csrc;
    let mut audio_level = None;
    if buf[0] & 0x10 != 0 {
        let ext = buf.get(header_len..header_len + 4)?;
        let profile = u16::from_be_bytes([ext[0], ext[1]]);
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        let body = buf.get(header_len + 4..header_len + 4 + 4 * words)?;
        if profile == 0xbede {
            audio_level = level_id.and_then(|id| one_byte_ext(body, id));
        }
        header_len += 4 + 4 * words;
    }
    if header_len > buf.len() {
        return None;
    }
    Some(RtpHeaderView {
        marker: buf[1] & 0x80 != 0,
        pt,
        seq: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        padding: buf[0] & 0x20 != 0,
        header_len,
        audio_level,
    })
}

/// The audio level element `id` in a one-byte extension block, if present and well formed.
fn one_byte_ext(mut body: &[u8], id: u8) -> Option<(u8, bool)> {
    while let Some((&b, rest)) = body.split_first() {
        if b == 0 {
            body = rest; // padding
            continue;
        }
        let (eid, len) = (b >> 4, usize::from(b & 0x0f) + 1);
        if eid == 15 {
            return None; // reserved: stop parsing (RFC 8285 §4.2)
        }
        let data = rest.get(..len)?;
        if eid == id {
            return Some((data[0] & 0x7f, data[0] & 0x80 != 0));
        }
        body = &rest[len..];
    }
    None
}

/// RFC 3711 Appendix A index estimation plus a 64-packet replay window.
#[derive(Debug, Clone, Copy)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit i set: index `highest - i` was received.
    seen: u64,
}

impl ReplayWindow {
    /// Start from a packet already received (str0m delivered it).
    pub fn starting_at(index: u64) -> Self {
        Self {
            highest: index,
            seen: 1,
        }
    }

    /// The packet index `seq` most likely has, given what was received.
    pub fn estimate(&self, seq: u16) -> u64 {
        let roc = self.highest >> 16;
        let s_l = self.highest as u16;
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                roc.wrapping_sub(1)
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc + 1
        } else {
            roc
        };
        (v << 16) | u64::from(seq)
    }

    /// False if `index` was already received or is older than the window.
    pub fn check(&self, index: u64) -> bool {
        if index > self.highest {
            return true;
        }
        let behind = self.highest - index;
        behind < 64 && self.seen & (1 << behind) == 0
    }

    /// Record an authenticated packet.
    pub fn accept(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = index;
        } else {
            self.seen |= 1 << (self.highest - index);
        }
    }
}

/// Inbound SRTP for the RTP of one publisher's stream.
pub struct RtpOpener {
    cipher: Cipher,
    ssrc: u32,
    level_id: Option<u8>,
    window: ReplayWindow,
}

impl std::fmt::Debug for RtpOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpOpener")
            .field("ssrc", &self.ssrc)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RtpOpener {
    /// The opener for what the peer sends on `ssrc`, whose packet `index` was the last one
    /// str0m delivered. `level_id`: the audio level extension id the peer negotiated.
    pub fn new(
        crypto: &CryptoProvider,
        keys: &SrtpKeys,
        ssrc: u32,
        index: u64,
        level_id: Option<u8>,
    ) -> Result<Self, SealerError> {
        // The peer writes with the other half.
        let cipher = Cipher::new(crypto, keys, !keys.active, false)?;
        Ok(Self {
            cipher,
            ssrc,
            level_id,
            window: ReplayWindow::starting_at(index),
        })
    }

    /// Authenticate, decrypt and replay-check one datagram.
    pub fn open(&mut self, datagram: &[u8]) -> Opened {
        self.open_into(datagram, Vec::new())
    }

    /// [`Self::open`], with the payload written into `buf` (the engine hands in a pooled
    /// buffer and takes it back after forwarding: no allocation per packet).
    pub fn open_into(&mut self, datagram: &[u8], mut buf: Vec<u8>) -> Opened {
        let Some(h) = parse_rtp_header(datagram, self.level_id) else {
            return Opened::NotMine;
        };
        if h.ssrc != self.ssrc {
            return Opened::NotMine;
        }
        let index = self.window.estimate(h.seq);
        if !self.window.check(index) {
            return Opened::Refused;
        }
        let (header, body) = datagram.split_at(h.header_len);
        let mut payload = match &mut self.cipher {
            Cipher::Gcm { salt, key } => {
                if body.len() < GCM_TAG_LEN {
                    return Opened::Refused;
                }
                buf.clear();
                buf.extend_from_slice(body);
                let iv = gcm_iv(*salt, h.ssrc, index);
                match key.open_in_place(iv, Aad::from(header), &mut buf) {
                    Ok(plain) => {
                        let n = plain.len();
                        buf.truncate(n);
                        buf
                    }
                    Err(_) => return Opened::Refused,
                }
            }
            Cipher::CmSha1 {
                salt,
                auth_key,
                c: dec,
                hmac,
            } => {
                let Some(tag_at) = datagram.len().checked_sub(Aes128CmSha1_80::HMAC_TAG_LEN) else {
                    return Opened::Refused;
                };
                if tag_at < h.header_len {
                    return Opened::Refused;
                }
                let sha1 = |k: &[u8], p: &[&[u8]]| hmac.sha1_hmac(k, p);
                let (authed, tag) = datagram.split_at(tag_at);
                if !Aes128CmSha1_80::rtp_verify(sha1, auth_key, authed, index, tag) {
                    return Opened::Refused;
                }
                let iv = Aes128CmSha1_80::rtp_iv(*salt, h.ssrc, index);
                let input = &authed[h.header_len..];
                // The cipher wants a block of slack after the output.
                buf.clear();
                buf.resize(input.len() + 15, 0);
                if dec.decrypt(&iv, input, &mut buf).is_err() {
                    return Opened::Refused;
                }
                buf.truncate(input.len());
                buf
            }
        };
        self.window.accept(index);
        if h.padding {
            // RFC 3550 §5.1: the last octet counts the padding, itself included.
            let pad = payload.last().map_or(0, |p| usize::from(*p));
            if pad == 0 || pad > payload.len() {
                return Opened::Refused;
            }
            payload.truncate(payload.len() - pad);
        }
        Opened::Packet(Inbound {
            pt: h.pt,
            seq: index,
            timestamp: h.timestamp,
            marker: h.marker,
            audio_level: h.audio_level,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::{write_rtp, ExtIds, RtpFields, RtpSealer};
    use str0m::crypto::dtls::SrtpProfile;

    fn provider() -> CryptoProvider {
        str0m::crypto::from_feature_flags()
    }

    fn keys(profile: SrtpProfile, len: usize, active: bool) -> SrtpKeys {
        SrtpKeys {
            material: (0..len as u8).map(|b| b.wrapping_mul(7)).collect(),
            profile,
            active,
        }
    }

    fn packet(seq: u16, level: Option<(u8, bool)>, payload: &[u8]) -> (Vec<u8>, usize) {
        let mut buf = Vec::new();
        let ids = ExtIds {
            audio_level: Some(1),
            mid: Some(4),
        };
        let f = RtpFields {
            marker: seq == 7,
            pt: 111,
            seq,
            timestamp: u32::from(seq) * 960,
            ssrc: 4242,
            audio_level: level,
            mid: b"0",
        };
        let hl = write_rtp(&mut buf, &ids, &f, payload);
        (buf, hl)
    }

    /// What one side seals, the other side (the opposite DTLS role) opens, for every profile.
    #[test]
    fn opens_what_the_other_role_seals_for_every_profile() {
        let crypto = provider();
        for (profile, len) in [
            (SrtpProfile::AEAD_AES_128_GCM, 56),
            (SrtpProfile::AEAD_AES_256_GCM, 88),
            (SrtpProfile::AES128_CM_SHA1_80, 60),
        ] {
            let mut sender = RtpSealer::new(&crypto, &keys(profile, len, true)).unwrap();
            let mut opener =
                RtpOpener::new(&crypto, &keys(profile, len, false), 4242, 6, Some(1)).unwrap();
            let (rtp, hl) = packet(7, Some((42, true)), b"opus frame");
            let mut srtp = Vec::new();
            sender.seal(&rtp, hl, 4242, 7, &mut srtp).unwrap();
            match opener.open(&srtp) {
                Opened::Packet(p) => {
                    assert_eq!(p.payload, b"opus frame", "{profile:?}");
                    assert_eq!((p.seq, p.pt, p.marker), (7, 111, true));
                    assert_eq!(p.timestamp, 7 * 960);
                    assert_eq!(p.audio_level, Some((42, true)));
                }
                other => panic!("{profile:?}: {other:?}"),
            }
            // The same packet again is a replay.
            assert!(matches!(opener.open(&srtp), Opened::Refused), "{profile:?}");
            // A flipped bit in the header, the payload or the tag fails authentication,
            // and failed attempts do not move the window.
            let (rtp8, hl8) = packet(8, None, b"x");
            let mut fresh = Vec::new();
            sender.seal(&rtp8, hl8, 4242, 8, &mut fresh).unwrap();
            for i in [4, hl8, fresh.len() - 1] {
                let mut bad = fresh.clone();
                bad[i] ^= 1;
                assert!(
                    matches!(opener.open(&bad), Opened::Refused),
                    "{profile:?} byte {i}"
                );
            }
            assert!(matches!(opener.open(&fresh), Opened::Packet(_)));
            // `open_into` writes the payload into the buffer it is handed (the engine's
            // pool): old contents gone, no reallocation.
            let (rtp9, hl9) = packet(9, None, b"opus frame");
            let mut srtp9 = Vec::new();
            sender.seal(&rtp9, hl9, 4242, 9, &mut srtp9).unwrap();
            let mut pooled = Vec::with_capacity(1500);
            pooled.extend_from_slice(b"the previous packet's bytes");
            let at = pooled.as_ptr();
            match opener.open_into(&srtp9, pooled) {
                Opened::Packet(p) => {
                    assert_eq!(p.payload, b"opus frame", "{profile:?}");
                    assert_eq!(p.payload.as_ptr(), at, "{profile:?}: reallocated");
                }
                other => panic!("{profile:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_index_follows_the_sequence_across_a_wrap_and_refuses_replays() {
        let crypto = provider();
        let k = keys(SrtpProfile::AEAD_AES_128_GCM, 56, true);
        let mut sender = RtpSealer::new(&crypto, &k).unwrap();
        let peer = SrtpKeys {
            active: false,
            ..k.clone()
        };
        let mut opener = RtpOpener::new(&crypto, &peer, 4242, 65_533, None).unwrap();
        // 65534, 65535, then 0 and 1 of the next roll-over, one reordered.
        for index in [65_534u64, 65_536, 65_535, 65_537] {
            let (rtp, hl) = packet(index as u16, None, b"a");
            let mut srtp = Vec::new();
            sender.seal(&rtp, hl, 4242, index, &mut srtp).unwrap();
            match opener.open(&srtp) {
                Opened::Packet(p) => assert_eq!(p.seq, index),
                other => panic!("index {index}: {other:?}"),
            }
        }
        // Too old for the window.
        let (rtp, hl) = packet(65_400, None, b"a");
        let mut srtp = Vec::new();
        sender.seal(&rtp, hl, 4242, 65_400, &mut srtp).unwrap();
        assert!(matches!(opener.open(&srtp), Opened::Refused));
    }

    #[test]
    fn rtcp_other_ssrcs_and_garbage_are_not_for_the_lean_path() {
        let crypto = provider();
        let k = keys(SrtpProfile::AEAD_AES_128_GCM, 56, false);
        let mut opener = RtpOpener::new(&crypto, &k, 1, 0, None).unwrap();
        // RTCP sender report (PT 200).
        let rtcp = [0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(opener.open(&rtcp), Opened::NotMine));
        let (rtp, _) = packet(1, None, b"a");
        assert!(
            matches!(opener.open(&rtp), Opened::NotMine),
            "SSRC 4242 is not ours"
        );
        for junk in [
            &[][..],
            &[0x80][..],
            &[0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe],
        ] {
            assert!(matches!(opener.open(junk), Opened::NotMine));
        }
        // A header claiming more extension words than the datagram has.
        let lying = [
            0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0xff, 0xff,
        ];
        assert!(parse_rtp_header(&lying, Some(1)).is_none());
    }

    #[test]
    fn replay_window_edges() {
        let mut w = ReplayWindow::starting_at(100);
        assert!(!w.check(100));
        assert!(w.check(101));
        w.accept(200);
        assert!(!w.check(136), "64 behind is outside the window");
        assert!(w.check(137));
        w.accept(137);
        assert!(!w.check(137));
        assert_eq!(w.estimate(201), 201);
    }
}
