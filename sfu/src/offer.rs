//! The m-line layout of a client's offer: which audio m-line it publishes on and which are
//! its receive slots, in order.
//!
//! str0m parses and validates the SDP, but announces the m-lines (`Event::MediaAdded`) only
//! once media can flow. The SFU needs them at answer time, to refuse a bad offer and to
//! know the slots, so it reads the few attributes it needs from the offer text itself;
//! str0m's own parse has already accepted the SDP by the time this is used.

/// Direction as the client offered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferedDirection {
    SendOnly,
    RecvOnly,
    SendRecv,
    Inactive,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedAudio {
    pub mid: String,
    pub direction: OfferedDirection,
}

/// Audio m-lines of `sdp` in order, with their mid and direction.
pub fn audio_lines(sdp: &str) -> Vec<OfferedAudio> {
    let mut lines = Vec::new();
    let mut current: Option<(bool, Option<String>, OfferedDirection)> = None;
    let mut flush = |cur: Option<(bool, Option<String>, OfferedDirection)>| {
        if let Some((true, Some(mid), direction)) = cur {
            lines.push(OfferedAudio { mid, direction });
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            flush(current.take());
            // SDP default direction is sendrecv.
            current = Some((rest.starts_with("audio "), None, OfferedDirection::SendRecv));
            continue;
        }
        let Some((_, mid, direction)) = current.as_mut() else {
            continue;
        };
        match line {
            "a=sendonly" => *direction = OfferedDirection::SendOnly,
            "a=recvonly" => *direction = OfferedDirection::RecvOnly,
            "a=sendrecv" => *direction = OfferedDirection::SendRecv,
            "a=inactive" => *direction = OfferedDirection::Inactive,
            _ => {
                if let Some(m) = line.strip_prefix("a=mid:") {
                    *mid = Some(m.trim().to_owned());
                }
            }
        }
    }
    flush(current);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_audio_lines_in_order_and_skips_the_rest() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\na=mid:1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=recvonly\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\n";
        assert_eq!(
            audio_lines(sdp),
            vec![
                OfferedAudio {
                    mid: "0".into(),
                    direction: OfferedDirection::SendOnly
                },
                OfferedAudio {
                    mid: "1".into(),
                    direction: OfferedDirection::RecvOnly
                },
                OfferedAudio {
                    mid: "3".into(),
                    direction: OfferedDirection::SendRecv
                },
            ]
        );
    }

    #[test]
    fn garbage_yields_nothing() {
        assert!(audio_lines("").is_empty());
        assert!(audio_lines("m=audio\na=sendonly").is_empty());
    }
}
