//! Join grants: the short-lived ES256 token signaling mints after it has authorised a voice
//! join, and the SFU verifies before it accepts an SDP offer. One implementation for both
//! sides so the pinned algorithm, issuer, audience and lifetime limit cannot drift apart.
//!
//! Time is an explicit argument (unix seconds) rather than read from the system clock, so
//! callers with simulated time (the SFU's tests) get deterministic results.
//!
//! Replay protection is not here: remembering used `jti`s is state, and it lives in the SFU.

use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{NodeId, RoomId, SessionId, UserId};

/// `iss` of every grant.
pub const GRANT_ISSUER: &str = "haven-signaling";
/// `aud` of every grant.
pub const GRANT_AUDIENCE: &str = "haven-sfu";
/// Upper bound on `exp - iat`, enforced when minting and when verifying.
pub const MAX_GRANT_LIFETIME: Duration = Duration::from_secs(60);
/// Tolerated clock difference between signaling and the SFU.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Tokens longer than this are refused before any parsing; real grants are ~600 bytes.
pub const MAX_GRANT_TOKEN_BYTES: usize = 4096;

/// What signaling decided about one join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinGrant {
    pub user: UserId,
    pub display_name: String,
    pub room: RoomId,
    pub can_speak: bool,
    pub session: SessionId,
    pub node: NodeId,
}

/// The JWT claims of a join grant, as signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGrantClaims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: UserId,
    /// Display name, shown to the other participants.
    pub name: String,
    pub room: RoomId,
    pub can_speak: bool,
    /// Session id.
    pub sid: SessionId,
    /// The SFU node the grant is valid on.
    pub node: NodeId,
    /// Unique per grant; the SFU refuses a second use.
    pub jti: Uuid,
    pub iat: u64,
    pub exp: u64,
}

impl JoinGrantClaims {
    pub fn grant(&self) -> JoinGrant {
        JoinGrant {
            user: self.sub,
            display_name: self.name.clone(),
            room: self.room,
            can_speak: self.can_speak,
            session: self.sid,
            node: self.node.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("grant is not a well-formed token: {0}")]
    Malformed(String),
    #[error("grant signature does not verify")]
    BadSignature,
    #[error("grant is not signed with ES256")]
    WrongAlgorithm,
    #[error("grant issuer is not {GRANT_ISSUER}")]
    WrongIssuer,
    #[error("grant audience is not {GRANT_AUDIENCE}")]
    WrongAudience,
    #[error("grant expired")]
    Expired,
    #[error("grant issued in the future")]
    NotYetValid,
    #[error("grant lifetime of {0} s exceeds the 60 s limit")]
    LifetimeTooLong(u64),
    #[error("invalid grant key: {0}")]
    InvalidKey(String),
    #[error("signing a grant failed: {0}")]
    Signing(String),
}

/// Signaling's half: holds the P-256 private key and mints grants.
pub struct GrantSigner {
    key: EncodingKey,
    pkcs8: Vec<u8>,
    public_point: Vec<u8>,
}

impl GrantSigner {
    /// A fresh random key (for tests and first start; persist it with [`Self::to_pkcs8_pem`]).
    pub fn generate() -> Result<Self, GrantError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|e| GrantError::InvalidKey(e.to_string()))?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// From a DER private key, PKCS#8 or SEC1.
    pub fn from_private_key_der(der: &[u8]) -> Result<Self, GrantError> {
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| GrantError::InvalidKey(e.to_string()))?;
        // jsonwebtoken wants PKCS#8 whatever the input was.
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|e| GrantError::InvalidKey(e.to_string()))?;
        Self::from_pkcs8_der(pkcs8.as_ref())
    }

    fn from_pkcs8_der(pkcs8: &[u8]) -> Result<Self, GrantError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| GrantError::InvalidKey(e.to_string()))?;
        Ok(Self {
            key: EncodingKey::from_ec_der(pkcs8),
            pkcs8: pkcs8.to_vec(),
            public_point: pair.public_key().as_ref().to_vec(),
        })
    }

    /// From a PEM `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC1) block.
    pub fn from_private_key_pem(pem: &str) -> Result<Self, GrantError> {
        let der = pem_decode(pem).ok_or_else(|| GrantError::InvalidKey("not PEM".into()))?;
        Self::from_private_key_der(&der)
    }

    pub fn to_pkcs8_pem(&self) -> String {
        pem_encode("PRIVATE KEY", &self.pkcs8)
    }

    /// The public key as a PEM `PUBLIC KEY` (SPKI) block, for the SFU's configuration.
    pub fn public_key_pem(&self) -> Result<String, GrantError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8)
            .map_err(|e| GrantError::InvalidKey(e.to_string()))?;
        let spki = pair
            .public_key()
            .as_der()
            .map_err(|e| GrantError::InvalidKey(e.to_string()))?;
        Ok(pem_encode("PUBLIC KEY", spki.as_ref()))
    }

    /// A verifier for this signer's public key.
    pub fn verifier(&self) -> GrantVerifier {
        GrantVerifier::from_public_point(&self.public_point)
    }

    /// Mint a compact JWT for `grant`, valid from `issued_at_unix` for `lifetime` (≤ 60 s).
    pub fn mint(
        &self,
        grant: &JoinGrant,
        issued_at_unix: u64,
        lifetime: Duration,
    ) -> Result<String, GrantError> {
        if lifetime > MAX_GRANT_LIFETIME {
            return Err(GrantError::LifetimeTooLong(lifetime.as_secs()));
        }
        let claims = JoinGrantClaims {
            iss: GRANT_ISSUER.to_owned(),
            aud: GRANT_AUDIENCE.to_owned(),
            sub: grant.user,
            name: grant.display_name.clone(),
            room: grant.room,
            can_speak: grant.can_speak,
            sid: grant.session,
            node: grant.node.clone(),
            jti: Uuid::new_v4(),
            iat: issued_at_unix,
            exp: issued_at_unix + lifetime.as_secs().max(1),
        };
        self.sign_claims(&claims)
    }

    /// Sign arbitrary claims without the lifetime check. Tests use it to forge bad grants.
    pub fn sign_claims(&self, claims: &JoinGrantClaims) -> Result<String, GrantError> {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.key)
            .map_err(|e| GrantError::Signing(e.to_string()))
    }
}

/// The SFU's half: verifies grants against signaling's public key.
#[derive(Clone)]
pub struct GrantVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl GrantVerifier {
    /// From signaling's PEM `PUBLIC KEY` (SPKI).
    pub fn from_public_key_pem(pem: &str) -> Result<Self, GrantError> {
        let key = DecodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| GrantError::InvalidKey(e.to_string()))?;
        Ok(Self::from_key(key))
    }

    /// From an uncompressed SEC1 point (65 bytes, `04 || x || y`).
    pub fn from_public_point(point: &[u8]) -> Self {
        Self::from_key(DecodingKey::from_ec_der(point))
    }

    fn from_key(key: DecodingKey) -> Self {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[GRANT_ISSUER]);
        validation.set_audience(&[GRANT_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Time checks are ours, against the caller's clock, with our own lifetime cap.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Self { key, validation }
    }

    /// Check signature, algorithm, issuer, audience and time; return the claims.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<JoinGrantClaims, GrantError> {
        if token.len() > MAX_GRANT_TOKEN_BYTES {
            return Err(GrantError::Malformed("token too long".into()));
        }
        let data = jsonwebtoken::decode::<JoinGrantClaims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => GrantError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    GrantError::WrongAlgorithm
                }
                ErrorKind::InvalidIssuer => GrantError::WrongIssuer,
                ErrorKind::InvalidAudience => GrantError::WrongAudience,
                ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidKeyFormat => {
                    GrantError::InvalidKey(e.to_string())
                }
                _ => GrantError::Malformed(e.to_string()),
            })?;
        let claims = data.claims;
        let skew = CLOCK_SKEW.as_secs();
        if claims.exp <= claims.iat {
            return Err(GrantError::Malformed("exp is not after iat".into()));
        }
        let lifetime = claims.exp - claims.iat;
        if lifetime > MAX_GRANT_LIFETIME.as_secs() {
            return Err(GrantError::LifetimeTooLong(lifetime));
        }
        if claims.iat > now_unix.saturating_add(skew) {
            return Err(GrantError::NotYetValid);
        }
        if claims.exp.saturating_add(skew) <= now_unix {
            return Err(GrantError::Expired);
        }
        Ok(claims)
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> JoinGrant {
        JoinGrant {
            user: UserId::new_random(),
            display_name: "Ada".into(),
            room: RoomId::new_random(),
            can_speak: true,
            session: SessionId::new_random(),
            node: NodeId::new("sfu-1"),
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn mint_then_verify_round_trips() {
        let signer = GrantSigner::generate().unwrap();
        let g = grant();
        let token = signer.mint(&g, NOW, Duration::from_secs(30)).unwrap();
        let claims = signer.verifier().verify(&token, NOW + 10).unwrap();
        assert_eq!(claims.grant(), g);
        assert_eq!(claims.exp - claims.iat, 30);
    }

    #[test]
    fn pem_keys_round_trip() {
        let signer = GrantSigner::generate().unwrap();
        let again = GrantSigner::from_private_key_pem(&signer.to_pkcs8_pem()).unwrap();
        let verifier =
            GrantVerifier::from_public_key_pem(&signer.public_key_pem().unwrap()).unwrap();
        let token = again.mint(&grant(), NOW, Duration::from_secs(10)).unwrap();
        verifier.verify(&token, NOW).unwrap();
    }

    #[test]
    fn refuses_expired_future_and_long_lived() {
        let signer = GrantSigner::generate().unwrap();
        let v = signer.verifier();
        let token = signer.mint(&grant(), NOW, Duration::from_secs(60)).unwrap();
        assert_eq!(v.verify(&token, NOW + 120), Err(GrantError::Expired));
        assert_eq!(v.verify(&token, NOW - 60), Err(GrantError::NotYetValid));
        assert!(matches!(
            signer.mint(&grant(), NOW, Duration::from_secs(61)),
            Err(GrantError::LifetimeTooLong(61))
        ));
        let mut claims = v.verify(&token, NOW).unwrap();
        claims.exp = claims.iat + 3600;
        let long = signer.sign_claims(&claims).unwrap();
        assert_eq!(v.verify(&long, NOW), Err(GrantError::LifetimeTooLong(3600)));
    }

    #[test]
    fn refuses_forged_and_foreign_tokens() {
        let signer = GrantSigner::generate().unwrap();
        let forger = GrantSigner::generate().unwrap();
        let v = signer.verifier();
        let forged = forger.mint(&grant(), NOW, Duration::from_secs(30)).unwrap();
        assert_eq!(v.verify(&forged, NOW), Err(GrantError::BadSignature));

        // Same key, but a token for someone else's audience / from someone else.
        let mut claims = v
            .verify(
                &signer.mint(&grant(), NOW, Duration::from_secs(30)).unwrap(),
                NOW,
            )
            .unwrap();
        claims.aud = "other".into();
        let t = signer.sign_claims(&claims).unwrap();
        assert_eq!(v.verify(&t, NOW), Err(GrantError::WrongAudience));
        claims.aud = GRANT_AUDIENCE.into();
        claims.iss = "mallory".into();
        let t = signer.sign_claims(&claims).unwrap();
        assert_eq!(v.verify(&t, NOW), Err(GrantError::WrongIssuer));

        // HS256 with the public point as the "secret": the classic algorithm confusion.
        claims.iss = GRANT_ISSUER.into();
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&signer.public_point),
        )
        .unwrap();
        assert_eq!(v.verify(&hs, NOW), Err(GrantError::WrongAlgorithm));

        // A tampered payload keeps the old signature.
        let good = signer.mint(&grant(), NOW, Duration::from_secs(30)).unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let other = signer.mint(&grant(), NOW, Duration::from_secs(30)).unwrap();
        let other_payload = other.split('.').nth(1).unwrap().to_owned();
        parts[1] = &other_payload;
        assert_eq!(
            v.verify(&parts.join("."), NOW),
            Err(GrantError::BadSignature)
        );
    }

    #[test]
    fn refuses_garbage() {
        let v = GrantSigner::generate().unwrap().verifier();
        assert!(matches!(v.verify("", NOW), Err(GrantError::Malformed(_))));
        assert!(matches!(
            v.verify("a.b.c", NOW),
            Err(GrantError::Malformed(_))
        ));
        assert!(matches!(
            v.verify(&"x".repeat(MAX_GRANT_TOKEN_BYTES + 1), NOW),
            Err(GrantError::Malformed(_))
        ));
    }
}
