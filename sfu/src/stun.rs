//! Consent refreshes answered without str0m: the lean STUN responder.
//!
//! A connected client keeps its ICE pair alive with a STUN binding request every few
//! seconds (str0m's full agent: every 3 s). Handing each to str0m cost the node ~50 µs on a
//! cold cache (str0m's parse, an HMAC key built per message, a candidate-pair scan, then the
//! drain of its output): at 500 participants, ~170 a second, 2–3 % of the node's CPU for a
//! reply that only echoes the sender's address.
//!
//! So a participant answers the plain case itself: a binding request from the address its
//! media already goes to, with exactly the USERNAME this session negotiated
//! (`ours:theirs`), the client in the controlling role, and a MESSAGE-INTEGRITY that
//! verifies against our ICE password (the HMAC key is built once per participant). The
//! reply is the same one str0m sends: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT.
//!
//! str0m still has to see the pair alive: as an ICE-lite agent it drops a pair that has had
//! no binding request for 15 s. So a valid request goes to str0m whenever str0m has not been
//! handed one for [`TO_RTC_EVERY`]: with requests every 3 s that is every third, and str0m
//! never goes more than ~10 s without one (~13 s if one of them is lost). Anything else —
//! a new address, a role conflict, a wrong or missing USERNAME or integrity, other STUN
//! methods — goes to str0m exactly as before, so ICE behaviour (peer-reflexive candidates,
//! nomination, restarts, role conflicts) is still all str0m's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ring::hmac;
use str0m::ice::StunMessage;

/// A valid request is handed to str0m at least this often (str0m's ICE-lite cut-off is
/// 15 s without one).
pub const TO_RTC_EVERY: Duration = Duration::from_secs(7);

/// Largest reply: header 20 + XOR-MAPPED-ADDRESS (IPv6) 24 + MESSAGE-INTEGRITY 24 +
/// FINGERPRINT 8.
pub const MAX_REPLY: usize = 96;

/// What to do with a STUN message from a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunVerdict {
    /// Answered: the reply is in the buffer.
    Answered,
    /// str0m's: hand it over unchanged.
    ToRtc,
}

/// One participant's lean responder.
pub struct StunResponder {
    /// `ours:theirs`, as the client's requests carry it.
    username: String,
    /// HMAC-SHA1 keyed with our ICE password (RFC 8489 short-term credentials).
    key: hmac::Key,
    /// When str0m was last handed a request that passed these checks.
    last_to_rtc: Option<Instant>,
}

impl std::fmt::Debug for StunResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StunResponder")
            .field("username", &self.username)
            .field("last_to_rtc", &self.last_to_rtc)
            .finish_non_exhaustive()
    }
}

impl StunResponder {
    pub fn new(local_ufrag: &str, local_pass: &str, remote_ufrag: &str) -> Self {
        Self {
            username: format!("{local_ufrag}:{remote_ufrag}"),
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, local_pass.as_bytes()),
            last_to_rtc: None,
        }
    }

    fn sha1_hmac(&self, parts: &[&[u8]]) -> [u8; 20] {
        sha1_hmac(&self.key, parts)
    }

    /// Answer `datagram` from `source` into `reply` (cleared first) if it is a plain
    /// consent refresh and str0m has seen one recently enough; otherwise `ToRtc`. The
    /// caller has checked that `source` is where this participant's media goes.
    pub fn handle(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> StunVerdict {
        let Ok(msg) = StunMessage::parse(datagram) else {
            return StunVerdict::ToRtc;
        };
        let plain = msg.is_binding_request()
            && msg.username() == Some(self.username.as_str())
            && msg.ice_controlling().is_some()
            && msg.ice_controlled().is_none()
            && msg.verify(&[], |_, parts| self.sha1_hmac(parts));
        if !plain {
            return StunVerdict::ToRtc;
        }
        if self
            .last_to_rtc
            .is_none_or(|t| now.saturating_duration_since(t) >= TO_RTC_EVERY)
        {
            self.last_to_rtc = Some(now);
            return StunVerdict::ToRtc;
        }
        reply.clear();
        reply.resize(MAX_REPLY, 0);
        let written = StunMessage::binding_reply(msg.trans_id(), source).to_bytes(
            Some(&[]),
            reply,
            |_, parts| self.sha1_hmac(parts),
        );
        match written {
            Ok(len) => {
                reply.truncate(len);
                StunVerdict::Answered
            }
            Err(_) => {
                reply.clear();
                StunVerdict::ToRtc
            }
        }
    }
}

/// HMAC-SHA1 over `parts` in order, as STUN's MESSAGE-INTEGRITY wants it.
fn sha1_hmac(key: &hmac::Key, parts: &[&[u8]]) -> [u8; 20] {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// The ICE ufrag of an SDP (`a=ice-ufrag:`; a BUNDLEd offer has one transport).
pub fn remote_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
        .filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::ice::TransId;

    const OURS: &str = "srvr";
    const OUR_PASS: &str = "server-password-0123456789";
    const THEIRS: &str = "clnt";

    /// What a client does: the key from the password each time.
    fn hmac_sha1(password: &[u8], parts: &[&[u8]]) -> [u8; 20] {
        sha1_hmac(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password),
            parts,
        )
    }

    /// A client's request as str0m's agent builds it.
    fn request(username: &str, pass: &str, controlling: bool, trans: TransId) -> Vec<u8> {
        let msg = StunMessage::binding_request(username, trans, controlling, 7, 100, true);
        let mut buf = vec![0u8; 512];
        let len = msg
            .to_bytes(Some(pass.as_bytes()), &mut buf, hmac_sha1)
            .unwrap();
        buf.truncate(len);
        buf
    }

    fn addr() -> SocketAddr {
        "192.0.2.7:40123".parse().unwrap()
    }

    #[test]
    fn str0m_sees_a_request_every_few_seconds_and_the_rest_are_answered_here() {
        let mut r = StunResponder::new(OURS, OUR_PASS, THEIRS);
        let t0 = Instant::now();
        let mut reply = Vec::new();
        let mut to_rtc = Vec::new();
        for i in 0..10u64 {
            let now = t0 + Duration::from_secs(3 * i);
            let req = request(&format!("{OURS}:{THEIRS}"), OUR_PASS, true, TransId::new());
            if r.handle(now, addr(), &req, &mut reply) == StunVerdict::ToRtc {
                to_rtc.push(3 * i);
            }
        }
        // Every 7 s at least: requests at 0, 9, 18, 27 go to str0m, the others not.
        assert_eq!(to_rtc, vec![0, 9, 18, 27]);
        assert!(to_rtc.windows(2).all(|w| w[1] - w[0] < 15));
    }

    #[test]
    fn the_reply_is_a_verified_binding_success_with_the_source_address() {
        let mut r = StunResponder::new(OURS, OUR_PASS, THEIRS);
        let t0 = Instant::now();
        let mut reply = Vec::new();
        let user = format!("{OURS}:{THEIRS}");
        let first = request(&user, OUR_PASS, true, TransId::new());
        assert_eq!(r.handle(t0, addr(), &first, &mut reply), StunVerdict::ToRtc);
        let trans = TransId::new();
        let second = request(&user, OUR_PASS, true, trans);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(
            r.handle(now, addr(), &second, &mut reply),
            StunVerdict::Answered
        );

        let parsed = StunMessage::parse(&reply).expect("reply parses (fingerprint checked)");
        assert!(parsed.is_successful_binding_response());
        assert_eq!(parsed.trans_id(), trans);
        assert_eq!(parsed.mapped_address(), Some(addr()));
        // Integrity with our password, as the client checks it; not with another one.
        assert!(parsed.verify(OUR_PASS.as_bytes(), hmac_sha1));
        assert!(!parsed.verify(b"another password", hmac_sha1));
    }

    #[test]
    fn anything_but_a_plain_consent_refresh_goes_to_str0m() {
        let mut r = StunResponder::new(OURS, OUR_PASS, THEIRS);
        let t0 = Instant::now();
        let mut reply = Vec::new();
        let user = format!("{OURS}:{THEIRS}");
        // str0m has just seen one: the next valid one would be answered here...
        let ok = request(&user, OUR_PASS, true, TransId::new());
        assert_eq!(r.handle(t0, addr(), &ok, &mut reply), StunVerdict::ToRtc);
        let now = t0 + Duration::from_secs(1);
        assert_eq!(
            r.handle(now, addr(), &ok, &mut reply),
            StunVerdict::Answered
        );
        // ...but not these.
        let wrong_pass = request(&user, "not our password", true, TransId::new());
        let old_session = request(&format!("{OURS}:old1"), OUR_PASS, true, TransId::new());
        let controlled = request(&user, OUR_PASS, false, TransId::new());
        let mut truncated = ok.clone();
        truncated.truncate(ok.len() - 4);
        for (what, bytes) in [
            ("wrong password", wrong_pass.as_slice()),
            ("other remote ufrag", old_session.as_slice()),
            (
                "client claims controlled (role conflict)",
                controlled.as_slice(),
            ),
            ("truncated", truncated.as_slice()),
            ("garbage", &[0u8, 1, 0, 0][..]),
        ] {
            assert_eq!(
                r.handle(now, addr(), bytes, &mut reply),
                StunVerdict::ToRtc,
                "{what}"
            );
        }
        // Failed checks do not count as str0m having seen a valid request.
        let later = t0 + TO_RTC_EVERY;
        assert_eq!(r.handle(later, addr(), &ok, &mut reply), StunVerdict::ToRtc);
    }

    #[test]
    fn the_remote_ufrag_comes_from_the_offer() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:Ab3x\r\na=ice-pwd:whatever\r\n";
        assert_eq!(remote_ufrag(sdp), Some("Ab3x"));
        assert_eq!(remote_ufrag("v=0\r\na=ice-ufrag:\r\n"), None);
        assert_eq!(remote_ufrag("v=0\r\n"), None);
    }
}
