//! Which participant an incoming datagram belongs to, decided from its first bytes.
//!
//! RFC 7983 multiplexing: STUN is routed by the ICE ufrag in its USERNAME (the only thing a
//! new or moved client can be recognised by); everything else by the remote address learnt
//! from ICE. Both are hash-map lookups in the engine, never a scan over participants.

use str0m::ice::StunMessage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind<'a> {
    /// A STUN message; `local_ufrag` is our half of USERNAME (`ours:theirs`), if present.
    Stun { local_ufrag: Option<&'a str> },
    /// DTLS, RTP or RTCP: routed by source address.
    Media,
    /// Anything else, including STUN that does not parse.
    Garbage,
}

pub fn classify(bytes: &[u8]) -> DatagramKind<'_> {
    let Some(&first) = bytes.first() else {
        return DatagramKind::Garbage;
    };
    match first {
        0..=3 => match StunMessage::parse(bytes) {
            Ok(msg) => DatagramKind::Stun {
                local_ufrag: msg
                    .username()
                    .and_then(|u| u.split_once(':'))
                    .map(|(ours, _)| ours),
            },
            Err(_) => DatagramKind::Garbage,
        },
        // DTLS records; RTP/RTCP need at least a fixed header to be worth handing on.
        20..=63 if bytes.len() >= 13 => DatagramKind::Media,
        128..=191 if bytes.len() >= 12 => DatagramKind::Media,
        _ => DatagramKind::Garbage,
    }
}

/// RTCP rather than RTP (RFC 5761 section 4: packet types 192-223 in the second byte, where
/// RTP has its marker bit and payload type). For a datagram already classified as media.
pub fn is_rtcp(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0] >> 6 == 2 && (192..=223).contains(&bytes[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncated_input_is_recognised() {
        assert_eq!(classify(&[]), DatagramKind::Garbage);
        assert_eq!(classify(&[0x00, 0x01, 0x00]), DatagramKind::Garbage);
        assert_eq!(classify(&[0xff; 40]), DatagramKind::Garbage);
        assert_eq!(classify(&[0x80, 0x6f, 0x00]), DatagramKind::Garbage);
        assert_eq!(classify(&[0x16; 5]), DatagramKind::Garbage);
        assert_eq!(classify(&[0x80; 12]), DatagramKind::Media);
        assert_eq!(classify(&[0x16; 13]), DatagramKind::Media);
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_its_packet_type() {
        // Receiver report (201), sender report (200), and the Opus payload type 111 with
        // and without the marker bit.
        assert!(is_rtcp(&[0x81, 201, 0, 1, 0, 0, 0, 1]));
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0]));
        assert!(!is_rtcp(&[0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 111 | 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]));
        // DTLS and truncated headers are not RTCP.
        assert!(!is_rtcp(&[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_rtcp(&[0x80, 200, 0]));
    }

    #[test]
    fn stun_binding_request_yields_our_ufrag() {
        use str0m::ice::TransId;
        let msg = StunMessage::binding_request("abcd:wxyz", TransId::new(), true, 1, 100, false);
        let mut buf = [0u8; 256];
        let len = msg
            .to_bytes(Some(b"pass"), &mut buf, |_, _| [0u8; 20])
            .unwrap();
        assert_eq!(
            classify(&buf[..len]),
            DatagramKind::Stun {
                local_ufrag: Some("abcd")
            }
        );
        // Same message cut short.
        assert_eq!(classify(&buf[..len - 4]), DatagramKind::Garbage);
    }
}
