//! Messages the SFU sends each participant over its data channel: which user is in which
//! receive slot, and who started or stopped speaking among those the participant does not
//! hear (a client sees a speaker it hears in the audio levels of the packets, with the meter
//! in [`crate::speaking`]). Small JSON, versioned, so a browser client can read them with
//! `JSON.parse`.

use serde::{Deserialize, Serialize};

use crate::ids::{SessionId, UserId};

/// Label of the data channel the client opens in its offer.
pub const DATA_CHANNEL_LABEL: &str = "haven";
pub const DATA_CHANNEL_VERSION: u16 = 1;
/// Larger incoming messages are refused without parsing.
pub const MAX_DATA_CHANNEL_MESSAGE_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SfuToClient {
    pub v: u16,
    #[serde(flatten)]
    pub body: SfuToClientBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum SfuToClientBody {
    /// The complete slot map; sent when the channel opens and whenever it changes.
    Slots { slots: Vec<SlotEntry> },
    /// Someone in the room the client does not hear in a slot (or anyone, while it is
    /// deafened) started (`on`) speaking; `off` follows every `on`. Speakers in the client's
    /// slots are not announced: their packets' RFC 6464 levels say it.
    Speaking {
        session: SessionId,
        user: UserId,
        on: bool,
    },
}

/// One receive slot: the client's `mid` for that recvonly m-line and who is in it now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotEntry {
    pub slot: u8,
    pub mid: String,
    #[serde(default)]
    pub session: Option<SessionId>,
    #[serde(default)]
    pub user: Option<UserId>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataChannelDecodeError {
    #[error("data channel message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("unsupported data channel version {0}")]
    UnsupportedVersion(u16),
    #[error("malformed data channel message: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl SfuToClient {
    pub fn new(body: SfuToClientBody) -> Self {
        Self {
            v: DATA_CHANNEL_VERSION,
            body,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Plain structs with string keys: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DataChannelDecodeError> {
        if bytes.len() > MAX_DATA_CHANNEL_MESSAGE_BYTES {
            return Err(DataChannelDecodeError::TooLarge(bytes.len()));
        }
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u16,
        }
        let VersionOnly { v } = serde_json::from_slice(bytes)?;
        if v != DATA_CHANNEL_VERSION {
            return Err(DataChannelDecodeError::UnsupportedVersion(v));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_message_is_small_flat_json() {
        let u = UserId::new_random();
        let s = SessionId::new_random();
        let msg = SfuToClient::new(SfuToClientBody::Slots {
            slots: vec![
                SlotEntry {
                    slot: 0,
                    mid: "1".into(),
                    session: Some(s),
                    user: Some(u),
                },
                SlotEntry {
                    slot: 1,
                    mid: "2".into(),
                    session: None,
                    user: None,
                },
            ],
        });
        let bytes = msg.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"v":1,"t":"slots","slots":[{"slot":0,"mid":"1","#));
        assert_eq!(SfuToClient::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn speaking_round_trips_and_versions_are_checked() {
        let msg = SfuToClient::new(SfuToClientBody::Speaking {
            session: SessionId::new_random(),
            user: UserId::new_random(),
            on: true,
        });
        assert_eq!(SfuToClient::decode(&msg.encode()).unwrap(), msg);
        assert!(matches!(
            SfuToClient::decode(br#"{"v":9,"t":"new"}"#),
            Err(DataChannelDecodeError::UnsupportedVersion(9))
        ));
        assert!(SfuToClient::decode(b"nope").is_err());
    }
}
