//! Verification of Supabase access tokens, without IO.
//!
//! A `KeyRing` holds the keys a project signs with: the legacy HS256 project secret and
//! the asymmetric keys of its JWKS (ES256, RS256, EdDSA), each pinned to the one
//! algorithm its key type allows. The token's header never chooses the algorithm: it
//! only names a `kid`, and a header `alg` that differs from the key's pinned algorithm is
//! refused (closing the classic `alg: none` and RS256→HS256 confusion attacks).
//! Fetching and refreshing the JWKS is `jwks.rs`'s job; an unknown `kid` is reported as
//! such so the caller can refresh once and retry.

use std::collections::HashMap;

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("algorithm `{0}` is not accepted")]
    AlgorithmNotAccepted(String),
    #[error("token names key `{0}`, which the project does not publish")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token audience is not `authenticated`")]
    WrongAudience,
    #[error("token issuer is not this project's")]
    WrongIssuer,
    #[error("token is not a signed-in user's (role `{0}`)")]
    NotAUser(String),
}

/// The claims we rely on from a Supabase access token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct UserClaims {
    /// The auth user id.
    pub sub: Uuid,
    /// `authenticated` for signed-in users.
    pub role: String,
    /// Expiry (seconds since the Unix epoch).
    pub exp: u64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// Keys one Supabase project signs access tokens with.
#[derive(Default, Clone)]
pub struct KeyRing {
    hs256: Option<DecodingKey>,
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    issuer: Option<String>,
    leeway_s: u64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("hs256", &self.hs256.is_some())
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl KeyRing {
    /// An empty ring; add keys with [`KeyRing::with_hs256_secret`] and [`KeyRing::set_jwks`].
    pub fn new(issuer: Option<String>) -> Self {
        KeyRing {
            issuer,
            leeway_s: 30,
            ..Default::default()
        }
    }

    /// Accepts HS256 tokens signed with a legacy project's JWT secret.
    pub fn with_hs256_secret(mut self, secret: &[u8]) -> Self {
        self.hs256 = Some(DecodingKey::from_secret(secret));
        self
    }

    /// Clock-skew allowance for `exp` (seconds).
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway_s = seconds;
        self
    }

    /// Replaces the asymmetric keys with those of `set`. Keys without a `kid`, symmetric
    /// keys and curves we do not support are skipped; returns how many were taken.
    pub fn set_jwks(&mut self, set: &JwkSet) -> usize {
        self.by_kid.clear();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
                    Algorithm::ES384
                }
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                // A symmetric key in a public JWKS would let anyone forge tokens.
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                self.by_kid.insert(kid, (alg, key));
            }
        }
        self.by_kid.len()
    }

    /// Whether the ring knows `kid`.
    pub fn knows(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The `kid` a token names, if any (for deciding whether to refresh the JWKS).
    pub fn token_kid(token: &str) -> Option<String> {
        parse_header(token).ok().and_then(|h| h.kid)
    }

    /// Verifies a user's access token: signature with the pinned algorithm, `exp`,
    /// `aud = authenticated`, `iss` (when configured) and `role = authenticated`.
    pub fn verify(&self, token: &str) -> Result<UserClaims, TokenError> {
        let header = parse_header(token)?;
        let (alg, key) = match (header.alg.as_str(), header.kid.as_deref()) {
            ("HS256", kid) => match (&self.hs256, kid) {
                (Some(key), _) => (Algorithm::HS256, key),
                // HS256 with a kid we publish asymmetrically is a confusion attempt.
                (None, _) => return Err(TokenError::AlgorithmNotAccepted("HS256".into())),
            },
            (alg, Some(kid)) => {
                let (pinned, key) = self
                    .by_kid
                    .get(kid)
                    .ok_or_else(|| TokenError::UnknownKey(kid.to_string()))?;
                if format!("{pinned:?}") != alg {
                    return Err(TokenError::AlgorithmNotAccepted(alg.to_string()));
                }
                (*pinned, key)
            }
            (alg, None) => return Err(TokenError::AlgorithmNotAccepted(alg.to_string())),
        };
        let mut validation = Validation::new(alg);
        validation.set_audience(&["authenticated"]);
        validation.leeway = self.leeway_s;
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = jsonwebtoken::decode::<UserClaims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::InvalidAudience => TokenError::WrongAudience,
                K::InvalidIssuer => TokenError::WrongIssuer,
                K::InvalidSignature => TokenError::BadSignature,
                K::InvalidAlgorithm => TokenError::AlgorithmNotAccepted(format!("{alg:?}")),
                K::MissingRequiredClaim(c) if c == "iss" => TokenError::WrongIssuer,
                _ => TokenError::Malformed,
            }
        })?;
        if data.claims.role != "authenticated" {
            return Err(TokenError::NotAUser(data.claims.role));
        }
        Ok(data.claims)
    }
}

/// Reads the header ourselves: jsonwebtoken cannot even represent `alg: none`, and we
/// want to name the refused algorithm in the error.
fn parse_header(token: &str) -> Result<RawHeader, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const ISS: &str = "http://127.0.0.1:54321/auth/v1";

    struct Es256 {
        pkcs8: Vec<u8>,
        jwks: JwkSet,
    }

    fn es256(kid: &str) -> Es256 {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks: JwkSet = serde_json::from_value(json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }]}))
        .unwrap();
        Es256 {
            pkcs8: doc.as_ref().to_vec(),
            jwks,
        }
    }

    fn claims(exp_offset: i64) -> serde_json::Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        json!({
            "sub": "6f1c1d1e-0000-4000-8000-000000000001",
            "aud": "authenticated", "role": "authenticated", "iss": ISS,
            "exp": now + exp_offset, "iat": now, "email": "a@b.c", "session_id": "s1",
        })
    }

    fn sign_es(key: &Es256, kid: Option<&str>, c: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(str::to_string);
        encode(&h, c, &EncodingKey::from_ec_der(&key.pkcs8)).unwrap()
    }

    fn ring(key: &Es256) -> KeyRing {
        let mut r = KeyRing::new(Some(ISS.into())).with_leeway(0);
        assert_eq!(r.set_jwks(&key.jwks), 1);
        r
    }

    #[test]
    fn accepts_valid_es256_token() {
        let k = es256("k1");
        let c = ring(&k)
            .verify(&sign_es(&k, Some("k1"), &claims(60)))
            .unwrap();
        assert_eq!(c.role, "authenticated");
        assert_eq!(c.email.as_deref(), Some("a@b.c"));
    }

    #[test]
    fn accepts_valid_hs256_token_with_project_secret() {
        let r = KeyRing::new(Some(ISS.into()))
            .with_hs256_secret(b"super-secret-jwt-token-with-at-least-32-chars");
        let t = encode(
            &Header::new(Algorithm::HS256),
            &claims(60),
            &EncodingKey::from_secret(b"super-secret-jwt-token-with-at-least-32-chars"),
        )
        .unwrap();
        assert!(r.verify(&t).is_ok());
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims(60),
            &EncodingKey::from_secret(b"another-secret"),
        )
        .unwrap();
        assert_eq!(r.verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn refuses_alg_none() {
        let k = es256("k1");
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let t = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "kid": "k1"})),
            b64(claims(60))
        );
        assert_eq!(
            ring(&k).verify(&t),
            Err(TokenError::AlgorithmNotAccepted("none".into()))
        );
        let t = format!("{}.{}.", b64(json!({"alg": "none"})), b64(claims(60)));
        assert_eq!(
            ring(&k).verify(&t),
            Err(TokenError::AlgorithmNotAccepted("none".into()))
        );
    }

    #[test]
    fn refuses_hs256_when_only_asymmetric_keys_are_configured() {
        // The classic confusion: sign HS256 with the *public* key bytes as the secret.
        let k = es256("k1");
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let t = encode(
            &h,
            &claims(60),
            &EncodingKey::from_secret(b"public-key-bytes"),
        )
        .unwrap();
        assert_eq!(
            ring(&k).verify(&t),
            Err(TokenError::AlgorithmNotAccepted("HS256".into()))
        );
    }

    #[test]
    fn refuses_wrong_key_type_for_kid() {
        // An RS256 header naming an EC key: the key's pinned algorithm wins.
        let k = es256("k1");
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let t = format!(
            "{}.{}.c2ln",
            b64(json!({"alg": "RS256", "kid": "k1"})),
            b64(claims(60))
        );
        assert_eq!(
            ring(&k).verify(&t),
            Err(TokenError::AlgorithmNotAccepted("RS256".into()))
        );
    }

    #[test]
    fn refuses_bad_signature() {
        let k = es256("k1");
        let other = es256("k1");
        assert_eq!(
            ring(&k).verify(&sign_es(&other, Some("k1"), &claims(60))),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn reports_unknown_kid() {
        let k = es256("k1");
        assert_eq!(
            ring(&k).verify(&sign_es(&k, Some("k2"), &claims(60))),
            Err(TokenError::UnknownKey("k2".into()))
        );
        assert_eq!(
            KeyRing::token_kid(&sign_es(&k, Some("k2"), &claims(60))).as_deref(),
            Some("k2")
        );
    }

    #[test]
    fn refuses_expired() {
        let k = es256("k1");
        assert_eq!(
            ring(&k).verify(&sign_es(&k, Some("k1"), &claims(-5))),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn refuses_wrong_audience_issuer_and_role() {
        let k = es256("k1");
        let r = ring(&k);
        let mut c = claims(60);
        c["aud"] = json!("anon");
        assert_eq!(
            r.verify(&sign_es(&k, Some("k1"), &c)),
            Err(TokenError::WrongAudience)
        );
        let mut c = claims(60);
        c["iss"] = json!("https://evil.example/auth/v1");
        assert_eq!(
            r.verify(&sign_es(&k, Some("k1"), &c)),
            Err(TokenError::WrongIssuer)
        );
        let mut c = claims(60);
        c["role"] = json!("service_role");
        assert_eq!(
            r.verify(&sign_es(&k, Some("k1"), &c)),
            Err(TokenError::NotAUser("service_role".into()))
        );
    }

    #[test]
    fn refuses_garbage() {
        let k = es256("k1");
        let r = ring(&k);
        for t in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.sig"] {
            assert!(r.verify(t).is_err(), "{t} accepted");
        }
    }
}
