//! The media profile every Haven peer speaks: Opus only, with in-band FEC and DTX, the
//! RFC 6464 audio-level and MID header extensions, str0m in RTP mode.
//!
//! The SFU and every str0m-based client (desktop client, load harness, tests) build their
//! `RtcConfig` from [`haven_rtc_config`], so both sides of an offer agree by construction.
//! Behind the `media` feature so that crates without str0m (signaling) do not pull it in.

use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Pt};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::RtcConfig;

/// Opus payload type we offer (the WebRTC convention).
pub const OPUS_PT: Pt = Pt::new_with_value(111);
/// `a=extmap` id of `urn:ietf:params:rtp-hdrext:ssrc-audio-level`.
pub const AUDIO_LEVEL_EXT_ID: u8 = 1;
/// `a=extmap` id of `urn:ietf:params:rtp-hdrext:sdes:mid`.
pub const MID_EXT_ID: u8 = 4;
/// Largest Opus packet (RFC 6716: 1275 bytes per frame, up to 3 frames of 20 ms in 60 ms).
pub const MAX_OPUS_PAYLOAD: usize = 1275;

/// Base configuration for any Haven peer (SFU or client).
pub fn haven_rtc_config() -> RtcConfig {
    let mut exts = ExtensionMap::empty();
    exts.set(AUDIO_LEVEL_EXT_ID, Extension::AudioLevel);
    exts.set(MID_EXT_ID, Extension::RtpMid);
    let mut cfg = RtcConfig::new()
        .clear_codecs()
        .set_rtp_mode(true)
        .set_extension_map(exts)
        .set_stats_interval(None);
    cfg.codec_config().add_config(
        OPUS_PT,
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            use_dtx: Some(true),
            ..Default::default()
        },
    );
    cfg
}
