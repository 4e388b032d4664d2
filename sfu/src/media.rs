//! The SFU's str0m configuration: Haven's shared media profile
//! ([`haven_proto::media`]) plus what only the SFU sets (ICE-lite, its DTLS certificate).

use std::sync::Arc;
use std::time::Duration;

use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::RtcConfig;

pub use haven_proto::media::{
    haven_rtc_config, AUDIO_LEVEL_EXT_ID, MAX_OPUS_PAYLOAD, MID_EXT_ID, OPUS_PT,
};

/// The SFU's configuration: ICE-lite (it has a public address and only answers checks),
/// one DTLS certificate per worker (generating one per join would cost a key pair each).
///
/// SRTP profile: str0m 0.25 offers AEAD_AES_256_GCM, AEAD_AES_128_GCM, then
/// AES_CM_128_HMAC_SHA1_80, so GCM is chosen whenever the client supports it (browsers do).
///
/// RTCP reports: forwarded audio bypasses str0m in both directions (`egress.rs`,
/// `ingress.rs`), so the sender reports str0m would write for the slots (0 packets sent, an
/// RTP clock it never saw advance) and its receiver reports on publishers (the stream
/// stopping after its first packets) would be wrong. str0m is told to write them at most
/// every [`SFU_RTCP_REPORT_INTERVAL`], which in practice means never: a wrong report is
/// worse than none, and each one cost a timer wake-up plus an SRTCP seal.
pub fn sfu_rtc_config(crypto: Arc<CryptoProvider>, cert: DtlsCert) -> RtcConfig {
    haven_rtc_config()
        .set_ice_lite(true)
        .set_crypto_provider(crypto)
        .set_dtls_cert(cert)
        .set_rtcp_report_interval_audio(SFU_RTCP_REPORT_INTERVAL)
}

/// See [`sfu_rtc_config`]: longer than any call, short enough for `Instant` arithmetic.
pub const SFU_RTCP_REPORT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
