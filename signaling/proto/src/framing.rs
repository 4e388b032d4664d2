//! Length-prefixed framing of [`ControlMessage`]s on the QUIC control stream, without IO.
//!
//! A QUIC stream is a byte stream: reads return arbitrary slices, so messages need a frame.
//! Each frame is a `u32` big-endian length followed by that many bytes of JSON. The length is
//! checked against a maximum *before* any body is buffered, so a peer cannot make us allocate
//! more than one maximum-size frame. The decoder is fed whatever bytes arrived
//! ([`FrameDecoder::push`]) and yields complete messages ([`FrameDecoder::next_message`]);
//! both ends of the link (signaling and the SFU) use this one implementation.

use crate::control::{ControlDecodeError, ControlMessage, MAX_CONTROL_MESSAGE_BYTES};

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a frame could not be produced or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame announced (or the message to send) is larger than allowed. Fatal: the
    /// stream cannot be resynchronised, so the link must be closed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The frame was complete but its body is not a control message we understand. The
    /// stream is still in sync; answer with an error and go on.
    #[error(transparent)]
    Message(#[from] ControlDecodeError),
}

impl FrameError {
    /// Whether the stream must be closed after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }
}

/// One message as a frame, ready to write.
pub fn encode_frame(msg: &ControlMessage) -> Result<Vec<u8>, FrameError> {
    let body = msg.encode();
    if body.len() > MAX_CONTROL_MESSAGE_BYTES {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_CONTROL_MESSAGE_BYTES,
        });
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    // Checked above: the length fits in u32.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Incremental decoder over a byte buffer.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of unread data in `buf`; compacted lazily to avoid a copy per frame.
    start: usize,
    max: usize,
    failed: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder enforcing [`MAX_CONTROL_MESSAGE_BYTES`].
    pub fn new() -> Self {
        Self::with_max(MAX_CONTROL_MESSAGE_BYTES)
    }

    /// A decoder enforcing a smaller (or larger) frame limit.
    pub fn with_max(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max,
            failed: false,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let pending = &self.buf[self.start..];
        if self.failed {
            return Err(FrameError::TooLarge {
                len: 0,
                max: self.max,
            });
        }
        let Some(header) = pending.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > self.max {
            // Drop what we hold: nothing after this point can be trusted to be in frame.
            self.failed = true;
            self.buf = Vec::new();
            self.start = 0;
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if pending.len() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        let begin = self.start + FRAME_HEADER_BYTES;
        self.start = begin + len;
        Ok(Some(&self.buf[begin..begin + len]))
    }

    /// The next complete message, if one is buffered. After a fatal error every call
    /// returns that error again.
    pub fn next_message(&mut self) -> Option<Result<ControlMessage, FrameError>> {
        match self.next_frame() {
            Ok(None) => None,
            Ok(Some(body)) => Some(ControlMessage::decode(body).map_err(FrameError::from)),
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ControlBody, Leave};
    use crate::SessionId;

    fn msg(id: u64) -> ControlMessage {
        ControlMessage::new(
            id,
            ControlBody::Leave(Leave {
                session: SessionId::new_random(),
            }),
        )
    }

    #[test]
    fn frames_round_trip_whatever_the_read_sizes() {
        let msgs: Vec<_> = (1..=5).map(msg).collect();
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode_frame(m).unwrap()).collect();
        for chunk in [1, 2, 3, 7, 64, bytes.len()] {
            let mut dec = FrameDecoder::new();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                dec.push(piece);
                while let Some(m) = dec.next_message() {
                    out.push(m.unwrap());
                }
            }
            assert_eq!(out, msgs, "chunk size {chunk}");
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn header_is_big_endian_length() {
        let frame = encode_frame(&ControlMessage::new(1, ControlBody::Ack)).unwrap();
        let body = br#"{"v":1,"id":1,"body":{"type":"ack"}}"#;
        assert_eq!(&frame[..4], &(body.len() as u32).to_be_bytes());
        assert_eq!(&frame[4..], body);
    }

    #[test]
    fn oversized_frames_are_fatal_before_buffering_the_body() {
        let mut dec = FrameDecoder::with_max(16);
        dec.push(&1_000_000u32.to_be_bytes());
        let err = dec.next_message().unwrap().unwrap_err();
        assert!(err.is_fatal());
        assert_eq!(dec.buffered(), 0);
        // Later bytes are ignored; the error sticks.
        dec.push(&encode_frame(&msg(1)).unwrap());
        assert!(dec.next_message().unwrap().unwrap_err().is_fatal());
    }

    #[test]
    fn a_bad_body_is_reported_and_the_stream_stays_in_sync() {
        let mut dec = FrameDecoder::new();
        let junk = b"not json";
        dec.push(&(junk.len() as u32).to_be_bytes());
        dec.push(junk);
        dec.push(&encode_frame(&msg(2)).unwrap());
        let err = dec.next_message().unwrap().unwrap_err();
        assert!(!err.is_fatal());
        assert_eq!(dec.next_message().unwrap().unwrap().id, 2);
        assert!(dec.next_message().is_none());
    }

    #[test]
    fn a_message_too_large_to_send_is_refused() {
        let huge = ControlMessage::new(
            1,
            ControlBody::Offer(crate::control::Offer {
                room: crate::RoomId::new_random(),
                grant: String::new(),
                sdp: "x".repeat(MAX_CONTROL_MESSAGE_BYTES),
                slots: None,
            }),
        );
        assert!(matches!(
            encode_frame(&huge),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
