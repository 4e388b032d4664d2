//! The lean egress path: forwarded Opus leaves the SFU without a trip through the
//! subscriber's str0m `Rtc`.
//!
//! Through str0m every forwarded packet costs a `write_rtp` plus a full `poll_output`
//! drain of the subscriber's `Rtc` (ICE, DTLS, SCTP, RTCP and timeout bookkeeping), which
//! on a live node with cold caches was ~36 % of the SFU's CPU. Here the SFU writes the RTP
//! header itself and seals it with SRTP keys taken from the same DTLS handshake, so one
//! forwarded packet is a header write plus one AEAD seal.
//!
//! Keys: str0m does not expose its SRTP keys, but it takes its DTLS implementation from a
//! pluggable [`DtlsProvider`]. [`capturing_provider`] wraps the real one; the instance it
//! creates for an `Rtc` built by [`build_capturing`] copies the DTLS-SRTP keying material
//! (RFC 5764 §4.2) into a [`KeySlot`] as it passes by, unchanged, on its way to str0m.
//!
//! Safety of sharing keys with str0m: str0m keeps sending RTCP and data channel traffic
//! with its own contexts, but it never sends RTP on a receive slot's SSRC (the SFU never
//! writes there through str0m once the lean path is on), so no (SSRC, index) pair — the
//! SRTP nonce — is ever used twice under the same key.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{
    AeadAes128Gcm, Aes128CmSha1_80, Aes128CmSha1_80Cipher, CryptoError, CryptoProvider,
    Sha1HmacProvider, SrtpProvider,
};
use str0m::{Rtc, RtcConfig};

/// DTLS-SRTP keying material as the handshake exported it, and our DTLS role.
#[derive(Clone)]
pub struct SrtpKeys {
    /// `client_key || server_key || client_salt || server_salt` (RFC 5764 §4.2).
    pub material: Vec<u8>,
    pub profile: SrtpProfile,
    /// True when we were the DTLS client: the client writes with the client half.
    pub active: bool,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Where one `Rtc`'s keys land once its DTLS handshake completes.
pub type KeySlot = Arc<Mutex<Option<SrtpKeys>>>;

thread_local! {
    /// The slot for the DTLS instance about to be created on this thread (see
    /// [`build_capturing`]); `RtcConfig::build` creates it synchronously.
    static NEXT_SLOT: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// Build an `Rtc` whose DTLS keys are copied into the returned slot. `config` must carry a
/// provider from [`capturing_provider`]; with any other the slot simply stays empty.
pub fn build_capturing(config: RtcConfig, now: Instant) -> (Rtc, KeySlot) {
    let slot = KeySlot::default();
    NEXT_SLOT.with(|s| *s.borrow_mut() = Some(slot.clone()));
    let rtc = config.build(now);
    // Cleared even if the provider was never asked (a foreign provider).
    NEXT_SLOT.with(|s| s.borrow_mut().take());
    (rtc, slot)
}

/// `base` with its DTLS provider wrapped so that [`build_capturing`] sees the keys.
pub fn capturing_provider(base: &CryptoProvider) -> CryptoProvider {
    // Providers are `&'static`; one wrapper per distinct inner provider is enough, and in
    // practice there is exactly one (aws-lc-rs).
    static WRAPPERS: OnceLock<Mutex<Vec<&'static CapturingDtlsProvider>>> = OnceLock::new();
    let inner = base.dtls_provider;
    let mut wrappers = WRAPPERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let existing = wrappers
        .iter()
        .find(|w| std::ptr::addr_eq(w.inner, inner))
        .copied();
    let wrapper = existing.unwrap_or_else(|| {
        let w: &'static CapturingDtlsProvider =
            Box::leak(Box::new(CapturingDtlsProvider { inner }));
        wrappers.push(w);
        w
    });
    CryptoProvider {
        dtls_provider: wrapper,
        ..base.clone()
    }
}

#[derive(Debug)]
struct CapturingDtlsProvider {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for CapturingDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.inner.new_dtls(cert, now, dtls_version, mtu)?;
        match NEXT_SLOT.with(|s| s.borrow_mut().take()) {
            Some(slot) => Ok(Box::new(CapturingDtls { inner, slot })),
            None => Ok(inner),
        }
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

#[derive(Debug)]
struct CapturingDtls {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
}

impl DtlsInstance for CapturingDtls {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active)
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(km, profile) = &out {
            let keys = SrtpKeys {
                material: km.to_vec(),
                profile: *profile,
                active: self.inner.is_active(),
            };
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(keys);
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

// RFC 3711 §4.3.1 key derivation labels (RTP only: RTCP stays with str0m).
const LABEL_RTP_ENCRYPTION: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;

/// Why a sealer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SealerError {
    #[error("SRTP profile {0:?} is not supported on the lean path")]
    UnsupportedProfile(SrtpProfile),
    #[error("the SRTP key was refused by the cipher")]
    BadKey,
    #[error("keying material is {got} bytes, {profile:?} needs {want}")]
    BadMaterialLength {
        profile: SrtpProfile,
        got: usize,
        want: usize,
    },
}

/// The RTP half of an SRTP context (RFC 3711 §4.3 / RFC 7714 §12 key derivation), one
/// direction. Shared by [`RtpSealer`] and [`crate::ingress::RtpOpener`].
// The key inline is the point (see `Gcm`); sealers and openers are boxed as a whole.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Cipher {
    /// AEAD_AES_128_GCM or AEAD_AES_256_GCM (RFC 7714), with ring's AES-GCM: its key
    /// schedule and GHASH table sit inline in `key` (str0m's aws-lc cipher keeps them two
    /// pointers away), so the fan-out's prefetch pass can ask for every line of a
    /// subscriber's key at once instead of missing on them one after another in the seal.
    Gcm { salt: [u8; 12], key: LessSafeKey },
    CmSha1 {
        salt: [u8; 14],
        auth_key: [u8; 20],
        c: Box<dyn Aes128CmSha1_80Cipher>,
        hmac: &'static dyn Sha1HmacProvider,
    },
}

/// Ask the CPU to start loading the cache line at `p` (x86-64 `prefetcht0`; nothing
/// elsewhere). A hint only: it never faults and changes no state.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, baseline on x86-64) does not access memory architecturally;
    // any address, even an invalid one, is allowed.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] every cache line of the `len` bytes from `p`.
#[inline(always)]
pub(crate) fn prefetch_bytes(p: *const u8, len: usize) {
    for offset in (0..len).step_by(64) {
        prefetch(p.wrapping_add(offset));
    }
}

/// [`prefetch`] every cache line of `v`.
#[inline(always)]
fn prefetch_all<T>(v: &T) {
    prefetch_bytes((v as *const T).cast::<u8>(), std::mem::size_of::<T>());
}

/// SRTP AES-GCM authentication tag length (both key sizes).
pub(crate) const GCM_TAG_LEN: usize = 16;

/// RFC 7714 §8.1 IV (the same for both key sizes).
pub(crate) fn gcm_iv(salt: [u8; 12], ssrc: u32, index: u64) -> Nonce {
    Nonce::assume_unique_for_key(AeadAes128Gcm::rtp_iv(
        salt,
        ssrc,
        (index >> 16) as u32,
        index as u16,
    ))
}

impl Cipher {
    /// Prefetch the state a seal or open reads (see [`prefetch`]).
    pub(crate) fn prefetch(&self) {
        match self {
            Cipher::Gcm { key, .. } => prefetch_all(key),
            Cipher::CmSha1 { c, .. } => prefetch(&**c),
        }
    }

    fn gcm(key: &[u8], salt: [u8; 12]) -> Result<Self, SealerError> {
        let algorithm = if key.len() == 16 {
            &AES_128_GCM
        } else {
            &AES_256_GCM
        };
        let key = UnboundKey::new(algorithm, key).map_err(|_| SealerError::BadKey)?;
        Ok(Cipher::Gcm {
            salt,
            key: LessSafeKey::new(key),
        })
    }

    /// The cipher for what the DTLS client (`client`) or server writes; `encrypt` picks the
    /// direction of the underlying AES-CM cipher (an AES-GCM key seals and opens alike).
    pub(crate) fn new(
        crypto: &CryptoProvider,
        keys: &SrtpKeys,
        client: bool,
        encrypt: bool,
    ) -> Result<Self, SealerError> {
        let srtp = crypto.srtp_provider;
        Ok(match keys.profile {
            SrtpProfile::AEAD_AES_128_GCM => {
                let (master, msalt) = material_half::<16, 12>(keys, client)?;
                let (mut key, mut salt) = ([0; 16], [0; 12]);
                kdf(srtp, &master, &msalt, LABEL_RTP_ENCRYPTION, &mut key);
                kdf(srtp, &master, &msalt, LABEL_RTP_SALT, &mut salt);
                Cipher::gcm(&key, salt)?
            }
            SrtpProfile::AEAD_AES_256_GCM => {
                let (master, msalt) = material_half::<32, 12>(keys, client)?;
                let (mut key, mut salt) = ([0; 32], [0; 12]);
                kdf(srtp, &master, &msalt, LABEL_RTP_ENCRYPTION, &mut key);
                kdf(srtp, &master, &msalt, LABEL_RTP_SALT, &mut salt);
                Cipher::gcm(&key, salt)?
            }
            SrtpProfile::AES128_CM_SHA1_80 => {
                let (master, msalt) = material_half::<16, 14>(keys, client)?;
                let (mut key, mut salt, mut auth_key) = ([0; 16], [0; 14], [0; 20]);
                kdf(srtp, &master, &msalt, LABEL_RTP_ENCRYPTION, &mut key);
                kdf(srtp, &master, &msalt, LABEL_RTP_AUTH, &mut auth_key);
                kdf(srtp, &master, &msalt, LABEL_RTP_SALT, &mut salt);
                let c = srtp.aes_128_cm_sha1_80().create_cipher(key, encrypt);
                let hmac = crypto.sha1_hmac_provider;
                Cipher::CmSha1 {
                    salt,
                    auth_key,
                    c,
                    hmac,
                }
            }
            other => return Err(SealerError::UnsupportedProfile(other)),
        })
    }
}

/// Outbound SRTP for RTP packets of one peer (every SSRC we send it).
pub struct RtpSealer {
    cipher: Cipher,
    /// AES-CM output scratch (the cipher wants 15 bytes of slack past the data).
    scratch: Vec<u8>,
}

impl RtpSealer {
    pub(crate) fn prefetch(&self) {
        self.cipher.prefetch();
    }
}

impl std::fmt::Debug for RtpSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let profile = match &self.cipher {
            Cipher::Gcm { key, .. } if key.algorithm() == &AES_128_GCM => "AEAD_AES_128_GCM",
            Cipher::Gcm { .. } => "AEAD_AES_256_GCM",
            Cipher::CmSha1 { .. } => "AES128_CM_SHA1_80",
        };
        f.debug_struct("RtpSealer")
            .field("profile", &profile)
            .finish_non_exhaustive()
    }
}

impl RtpSealer {
    /// The sealer for what we send: our half of the keys (RFC 5764 §4.2).
    pub fn new(crypto: &CryptoProvider, keys: &SrtpKeys) -> Result<Self, SealerError> {
        Ok(Self {
            cipher: Cipher::new(crypto, keys, keys.active, true)?,
            scratch: Vec::new(),
        })
    }

    /// Append the SRTP packet for RTP `packet` (header of `header_len` bytes, then payload)
    /// to `out`. `index` is the 48-bit SRTP packet index: ROC << 16 | sequence number.
    pub fn seal(
        &mut self,
        packet: &[u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let start = out.len();
        out.extend_from_slice(packet);
        let sealed = self.seal_in_place(out, start, header_len, ssrc, index);
        if sealed.is_err() {
            out.truncate(start);
        }
        sealed
    }

    /// Turn the plain RTP packet in `buf[start..]` (header of `header_len` bytes, then
    /// payload) into SRTP where it lies: the payload is encrypted in place and the tag
    /// appended. The forwarding path writes each subscriber's packet straight into the
    /// datagram buffer it is sent from, so no copy of the packet is made on the way.
    pub fn seal_in_place(
        &mut self,
        buf: &mut Vec<u8>,
        start: usize,
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<(), CryptoError> {
        let payload_at = start + header_len;
        if payload_at > buf.len() {
            return Err(CryptoError::Other(
                "RTP header longer than the packet".into(),
            ));
        }
        match &mut self.cipher {
            Cipher::Gcm { salt, key } => {
                let (header, payload) = buf[start..].split_at_mut(header_len);
                let tag = key
                    .seal_in_place_separate_tag(
                        gcm_iv(*salt, ssrc, index),
                        Aad::from(&*header),
                        payload,
                    )
                    .map_err(|_| CryptoError::Other("AES-GCM seal failed".into()))?;
                buf.extend_from_slice(tag.as_ref());
                Ok(())
            }
            Cipher::CmSha1 {
                salt,
                auth_key,
                c: enc,
                hmac,
            } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                let payload_len = buf.len() - payload_at;
                self.scratch.clear();
                self.scratch.resize(payload_len + 15, 0);
                enc.encrypt(&iv, &buf[payload_at..], &mut self.scratch)?;
                buf[payload_at..].copy_from_slice(&self.scratch[..payload_len]);
                let tag_at = buf.len();
                buf.resize(tag_at + Aes128CmSha1_80::HMAC_TAG_LEN, 0);
                let sha1 = |k: &[u8], p: &[&[u8]]| hmac.sha1_hmac(k, p);
                Aes128CmSha1_80::rtp_hmac(sha1, auth_key, &mut buf[start..], index, tag_at - start);
                Ok(())
            }
        }
    }
}

/// The client's (`client = true`) or the server's half: `(master key, master salt)`.
fn material_half<const KL: usize, const SL: usize>(
    keys: &SrtpKeys,
    client: bool,
) -> Result<([u8; KL], [u8; SL]), SealerError> {
    let want = 2 * KL + 2 * SL;
    if keys.material.len() != want {
        return Err(SealerError::BadMaterialLength {
            profile: keys.profile,
            got: keys.material.len(),
            want,
        });
    }
    // The DTLS client writes with the client halves (RFC 5764 §4.2).
    let (k, s) = if client {
        (0, 2 * KL)
    } else {
        (KL, 2 * KL + SL)
    };
    let mut master = [0; KL];
    let mut salt = [0; SL];
    master.copy_from_slice(&keys.material[k..k + KL]);
    salt.copy_from_slice(&keys.material[s..s + SL]);
    Ok((master, salt))
}

/// RFC 3711 §4.3.3 AES-CM PRF with key derivation rate 0: `x = salt ^ (label << 48)`,
/// output = AES(master, x || counter) for counter 0, 1, …
fn kdf(srtp: &dyn SrtpProvider, master: &[u8], salt: &[u8], label: u8, out: &mut [u8]) {
    let mut input = [0u8; 16];
    input[..salt.len()].copy_from_slice(salt);
    input[7] ^= label;
    let mut block = [0u8; 32];
    for (round, chunk) in out.chunks_mut(16).enumerate() {
        input[14..].copy_from_slice(&(round as u16).to_be_bytes());
        if master.len() == 32 {
            srtp.srtp_aes_256_ecb_round(master, &input, &mut block);
        } else {
            srtp.srtp_aes_128_ecb_round(master, &input, &mut block);
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// Header extension ids the subscriber negotiated (RFC 8285 one-byte form).
#[derive(Debug, Clone, Default)]
pub struct ExtIds {
    pub audio_level: Option<u8>,
    pub mid: Option<u8>,
}

/// A MID as the RTP header extension carries it (RFC 8843: 1 to 16 bytes), copied out of
/// str0m's `Mid` once per slot: its `Deref` checks UTF-8 and trims on every call, and did so
/// for every forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireMid {
    bytes: [u8; 16],
    len: u8,
}

impl WireMid {
    /// A MID longer than 16 bytes cannot be sent in a one-byte extension: it becomes empty,
    /// and [`write_rtp`] leaves the extension out.
    pub fn new(mid: &str) -> Self {
        let src = mid.as_bytes();
        let mut bytes = [0u8; 16];
        let len = if src.len() <= bytes.len() {
            src.len()
        } else {
            0
        };
        bytes[..len].copy_from_slice(&src[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The MID as text (it was made from a `&str`, so the bytes are UTF-8).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// Fields of one forwarded RTP packet.
#[derive(Debug, Clone, Copy)]
pub struct RtpFields<'a> {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// RFC 6464 level (0..=127 −dBov) and voice flag, written only when both are known.
    pub audio_level: Option<(u8, bool)>,
    pub mid: &'a [u8],
}

/// Write an RTP packet (header with one-byte extensions, then `payload`) into `buf`;
/// returns the header length.
pub fn write_rtp(buf: &mut Vec<u8>, ids: &ExtIds, f: &RtpFields<'_>, payload: &[u8]) -> usize {
    buf.clear();
    let mut ext: [u8; 24] = [0; 24];
    let mut ext_len = 0;
    if let (Some(id), Some((level, voice))) = (ids.audio_level, f.audio_level) {
        ext[0] = id << 4;
        ext[1] = (level & 0x7f) | if voice { 0x80 } else { 0 };
        ext_len = 2;
    }
    if let Some(id) = ids.mid.filter(|_| (1..=16).contains(&f.mid.len())) {
        ext[ext_len] = (id << 4) | (f.mid.len() as u8 - 1);
        ext[ext_len + 1..ext_len + 1 + f.mid.len()].copy_from_slice(f.mid);
        ext_len += 1 + f.mid.len();
    }
    let has_ext = ext_len > 0;
    buf.push(0x80 | if has_ext { 0x10 } else { 0 });
    buf.push(if f.marker { 0x80 } else { 0 } | (f.pt & 0x7f));
    buf.extend_from_slice(&f.seq.to_be_bytes());
    buf.extend_from_slice(&f.timestamp.to_be_bytes());
    buf.extend_from_slice(&f.ssrc.to_be_bytes());
    if has_ext {
        let words = ext_len.div_ceil(4);
        buf.extend_from_slice(&[0xbe, 0xde]);
        buf.extend_from_slice(&(words as u16).to_be_bytes());
        buf.extend_from_slice(&ext[..words * 4]);
    }
    let header_len = buf.len();
    buf.extend_from_slice(payload);
    header_len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_mids_are_the_mid_or_nothing() {
        assert_eq!(WireMid::new("1").as_bytes(), b"1");
        assert_eq!(WireMid::new("slot-2").as_bytes(), b"slot-2");
        assert_eq!(WireMid::new("slot-2").as_str(), "slot-2");
        assert_eq!(
            WireMid::new(&"m".repeat(16)).as_bytes(),
            "m".repeat(16).as_bytes()
        );
        assert_eq!(WireMid::new(&"m".repeat(17)).as_bytes(), b"");
        assert_eq!(WireMid::new("").as_bytes(), b"");
    }

    fn provider() -> CryptoProvider {
        str0m::crypto::from_feature_flags()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.3: the key derivation test vectors.
    #[test]
    fn kdf_matches_rfc_3711_b3() {
        let crypto = provider();
        let master = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut enc = [0u8; 16];
        let mut salt_out = [0u8; 14];
        let mut auth = [0u8; 20];
        kdf(
            crypto.srtp_provider,
            &master,
            &salt,
            LABEL_RTP_ENCRYPTION,
            &mut enc,
        );
        kdf(
            crypto.srtp_provider,
            &master,
            &salt,
            LABEL_RTP_SALT,
            &mut salt_out,
        );
        kdf(
            crypto.srtp_provider,
            &master,
            &salt,
            LABEL_RTP_AUTH,
            &mut auth,
        );
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(salt_out.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn header_carries_the_negotiated_extensions() {
        let mut buf = Vec::new();
        let ids = ExtIds {
            audio_level: Some(1),
            mid: Some(4),
        };
        let f = RtpFields {
            marker: true,
            pt: 111,
            seq: 0x1234,
            timestamp: 0xdead_beef,
            ssrc: 0x0102_0304,
            audio_level: Some((30, true)),
            mid: b"2",
        };
        let hl = write_rtp(&mut buf, &ids, &f, &[9, 9, 9]);
        assert_eq!(hl, 12 + 4 + 4);
        assert_eq!(
            &buf[..hl],
            &[
                0x90,
                0x80 | 111,
                0x12,
                0x34,
                0xde,
                0xad,
                0xbe,
                0xef,
                1,
                2,
                3,
                4,
                0xbe,
                0xde,
                0,
                1,
                0x10,
                0x80 | 30,
                0x40,
                b'2'
            ]
        );
        assert_eq!(&buf[hl..], &[9, 9, 9]);

        let none = ExtIds::default();
        assert_eq!(write_rtp(&mut buf, &none, &f, &[]), 12);
        assert_eq!(buf[0], 0x80, "no extension bit without extensions");
    }

    /// RFC 7714 §16.1.1: AEAD_AES_128_GCM on an RTP packet, from the session key and salt.
    #[test]
    fn gcm_128_matches_rfc_7714() {
        let key: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
        let plain = hex(concat!(
            "8040f17b8041f8d35501a0b2",
            "47616c6c696120657374206f6d6e697320646976697361",
            "20696e207061727465732074726573"
        ));
        let protected = hex(concat!(
            "8040f17b8041f8d35501a0b2",
            "f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b",
            "36de3adf8833899d7f27beb16a9152cf765ee4390cce"
        ));
        let mut sealer = RtpSealer {
            cipher: Cipher::gcm(&key, salt).unwrap(),
            scratch: Vec::new(),
        };
        let mut out = vec![0xaa];
        sealer
            .seal(&plain, 12, 0x5501_a0b2, 0xf17b, &mut out)
            .unwrap();
        assert_eq!(out[0], 0xaa, "appends, keeps what was there");
        assert_eq!(&out[1..], &protected[..]);
    }

    /// AES-CM + HMAC-SHA1-80: the payload decrypts with the same keystream and the tag
    /// authenticates header, ciphertext and the rollover counter (RFC 3711 §4.2).
    #[test]
    fn cm_sha1_80_encrypts_and_authenticates_with_the_roc() {
        let crypto = provider();
        let keys = SrtpKeys {
            material: (0u8..60).collect(),
            profile: SrtpProfile::AES128_CM_SHA1_80,
            active: true,
        };
        let mut sealer = RtpSealer::new(&crypto, &keys).unwrap();
        let mut rtp = Vec::new();
        let ids = ExtIds::default();
        let f = RtpFields {
            marker: false,
            pt: 111,
            seq: 5,
            timestamp: 960,
            ssrc: 77,
            audio_level: None,
            mid: b"1",
        };
        let payload: Vec<u8> = (0..37).collect();
        let hl = write_rtp(&mut rtp, &ids, &f, &payload);
        let index = (3u64 << 16) | 5;
        let mut out = Vec::new();
        sealer.seal(&rtp, hl, 77, index, &mut out).unwrap();
        assert_eq!(out.len(), rtp.len() + 10);
        assert_eq!(&out[..hl], &rtp[..hl], "header stays in the clear");
        assert_ne!(&out[hl..rtp.len()], &payload[..], "payload is encrypted");

        let (master, msalt) = material_half::<16, 14>(&keys, keys.active).unwrap();
        let (mut key, mut salt, mut auth) = ([0u8; 16], [0u8; 14], [0u8; 20]);
        kdf(
            crypto.srtp_provider,
            &master,
            &msalt,
            LABEL_RTP_ENCRYPTION,
            &mut key,
        );
        kdf(
            crypto.srtp_provider,
            &master,
            &msalt,
            LABEL_RTP_SALT,
            &mut salt,
        );
        kdf(
            crypto.srtp_provider,
            &master,
            &msalt,
            LABEL_RTP_AUTH,
            &mut auth,
        );
        let sha1 = |k: &[u8], p: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(k, p);
        let (body, tag) = out.split_at(rtp.len());
        assert!(Aes128CmSha1_80::rtp_verify(sha1, &auth, body, index, tag));
        assert!(
            !Aes128CmSha1_80::rtp_verify(sha1, &auth, body, 5, tag),
            "the tag covers the ROC"
        );
        let mut dec = crypto
            .srtp_provider
            .aes_128_cm_sha1_80()
            .create_cipher(key, false);
        let mut plain = vec![0u8; payload.len() + 15];
        let iv = Aes128CmSha1_80::rtp_iv(salt, 77, index);
        dec.decrypt(&iv, &body[hl..], &mut plain).unwrap();
        assert_eq!(&plain[..payload.len()], &payload[..]);
    }

    /// The client's keys are the first half, the server's the second (RFC 5764 §4.2).
    #[test]
    fn our_half_of_the_material_follows_the_dtls_role() {
        let material: Vec<u8> = (0u8..56).collect();
        let client = SrtpKeys {
            material: material.clone(),
            profile: SrtpProfile::AEAD_AES_128_GCM,
            active: true,
        };
        let server = SrtpKeys {
            active: false,
            ..client.clone()
        };
        let (k, s) = material_half::<16, 12>(&client, client.active).unwrap();
        assert_eq!((k[0], s[0]), (0, 32));
        let (k, s) = material_half::<16, 12>(&server, server.active).unwrap();
        assert_eq!((k[0], s[0]), (16, 44));
    }

    #[test]
    fn material_of_the_wrong_length_is_refused() {
        let keys = SrtpKeys {
            material: vec![0; 10],
            profile: SrtpProfile::AEAD_AES_128_GCM,
            active: false,
        };
        assert!(matches!(
            RtpSealer::new(&provider(), &keys),
            Err(SealerError::BadMaterialLength { want: 56, .. })
        ));
    }
}
