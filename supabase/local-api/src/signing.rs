//! The single ES256 key that signs every token the local stack issues.
//!
//! Hosted Supabase projects with asymmetric keys sign access tokens with ES256 and publish the
//! public half as a JWKS; the API keys, user tokens and the REST layer's verification all hang
//! off that one key here too, so verification code is the same against both. The key is kept
//! in the state directory (PKCS#8 PEM, mode 0600) so tokens survive restarts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// File name of the private key inside the state directory.
pub const KEY_FILE: &str = "signing-key.pem";

/// Why the signing key could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is not a P-256 PKCS#8 key.
    #[error("signing key file {path} is not a P-256 PKCS#8 PEM key: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The crypto library refused to generate a key.
    #[error("could not generate a P-256 key")]
    Generate,
    /// Signing or deriving the public key failed.
    #[error("JWT operation failed: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

/// The ES256 key with its `kid` and public JWK.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    public_jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    // Never print key material, even by accident in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Load `<state_dir>/signing-key.pem`, creating the directory and a fresh key on first start.
    pub fn load_or_generate(state_dir: &Path) -> Result<Self, KeyError> {
        let path = state_dir.join(KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(io)?;
        match fs::read_to_string(&path) {
            Ok(pem) => {
                // Tighten a key file someone copied with default permissions.
                let mode = fs::metadata(&path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
                Self::from_pkcs8_pem(&pem).map_err(|reason| KeyError::Malformed {
                    path: path.clone(),
                    reason,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 = generate_pkcs8()?;
                let pem = pkcs8_to_pem(&pkcs8);
                write_private(&path, pem.as_bytes()).map_err(io)?;
                tracing::info!(path = %path.display(), "generated a new ES256 signing key");
                Self::from_pkcs8_der(&pkcs8).map_err(|reason| KeyError::Malformed {
                    path: path.clone(),
                    reason,
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A fresh key that lives only in memory (tests).
    pub fn ephemeral() -> Result<Self, KeyError> {
        let pkcs8 = generate_pkcs8()?;
        Self::from_pkcs8_der(&pkcs8).map_err(|reason| KeyError::Malformed {
            path: PathBuf::from("<memory>"),
            reason,
        })
    }

    fn from_pkcs8_pem(pem: &str) -> Result<Self, String> {
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .map(str::trim)
            .collect();
        if !pem.contains("-----BEGIN PRIVATE KEY-----") {
            return Err("expected a -----BEGIN PRIVATE KEY----- block".into());
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("bad base64: {e}"))?;
        Self::from_pkcs8_der(&der)
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, String> {
        // Parse with aws-lc first: jsonwebtoken accepts any bytes here and would only fail at
        // the first signature, far from the cause.
        aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
        )
        .map_err(|e| format!("not a P-256 key: {e}"))?;
        let encoding = EncodingKey::from_ec_der(der);
        let mut public_jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(|e| e.to_string())?;
        // RFC 7638 thumbprint: stable for the key, so the kid survives restarts with it.
        let kid = public_jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| e.to_string())?;
        public_jwk.common.key_id = Some(kid.clone());
        public_jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&public_jwk).map_err(|e| e.to_string())?;
        Ok(Self {
            encoding,
            decoding,
            kid,
            public_jwk,
        })
    }

    /// The key id every issued token names in its header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `{"keys": [<public JWK>]}`, as `/auth/v1/.well-known/jwks.json` serves it.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.public_jwk] })
    }

    /// Sign `claims` as an ES256 JWT whose header names this key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// Verify a token signed by this key. The algorithm is fixed to ES256 whatever the token
    /// header says (no `alg` confusion); `validation` adds the claim checks.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<T, jsonwebtoken::errors::Error> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidSignature.into());
        }
        let mut validation = validation.clone();
        validation.algorithms = vec![Algorithm::ES256];
        Ok(jsonwebtoken::decode::<T>(token, &self.decoding, &validation)?.claims)
    }
}

fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .map_err(|_| KeyError::Generate)?;
    Ok(doc.as_ref().to_vec())
}

fn pkcs8_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Write a secret file readable by its owner only, atomically (no half-written key after a
/// crash, no window where it is world-readable).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_generated_key_persists_with_owner_only_permissions_and_keeps_its_kid() {
        let dir = tempdir();
        let first = SigningKey::load_or_generate(&dir).unwrap();
        let mode = fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SigningKey::load_or_generate(&dir).unwrap();
        assert_eq!(first.kid(), again.kid());
        // A token from before the "restart" verifies after it.
        let token = first
            .sign(&json!({"sub": "x", "exp": 4_000_000_000u64}))
            .unwrap();
        let claims: serde_json::Value = again
            .verify(&token, &Validation::new(Algorithm::ES256))
            .unwrap();
        assert_eq!(claims["sub"], "x");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tokens_name_the_kid_and_the_jwks_publishes_only_the_public_key() {
        let key = SigningKey::ephemeral().unwrap();
        let token = key.sign(&json!({"exp": 4_000_000_000u64})).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let jwks = key.jwks();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(jwk["alg"], "ES256");
        assert!(jwk.get("d").is_none(), "private part must not be published");
    }

    #[test]
    fn a_token_from_another_key_or_without_kid_is_refused() {
        let ours = SigningKey::ephemeral().unwrap();
        let theirs = SigningKey::ephemeral().unwrap();
        let v = Validation::new(Algorithm::ES256);
        let forged = theirs.sign(&json!({"exp": 4_000_000_000u64})).unwrap();
        assert!(ours.verify::<serde_json::Value>(&forged, &v).is_err());
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": 4_000_000_000u64}),
            &EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        assert!(ours.verify::<serde_json::Value>(&hs, &v).is_err());
    }

    #[test]
    fn a_malformed_key_file_is_reported_not_replaced() {
        let dir = tempdir();
        fs::write(
            dir.join(KEY_FILE),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(
            SigningKey::load_or_generate(&dir),
            Err(KeyError::Malformed { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("haven-signing-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
