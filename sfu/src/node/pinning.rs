//! TLS verification of signaling's QUIC endpoint by certificate pinning: signaling serves a
//! self-signed certificate and the node is configured with its SHA-256 fingerprint. No CA,
//! no names: the certificate either is the pinned one or the handshake fails. The handshake
//! signature is still verified against the certificate's key, so presenting a copy of the
//! certificate without its private key does not pass.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CertPin([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a certificate fingerprint is 64 hex digits (colons allowed), got {0:?}")]
pub struct BadPin(String);

impl CertPin {
    /// From hex, as `openssl x509 -fingerprint -sha256` or signaling's log print it
    /// (upper or lower case, with or without colons).
    pub fn parse(text: &str) -> Result<Self, BadPin> {
        let hex: String = text.trim().chars().filter(|c| *c != ':').collect();
        let bad = || BadPin(text.to_owned());
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }

    /// The fingerprint of a DER certificate.
    pub fn of_der(cert_der: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertPin({})", self.to_hex())
    }
}

/// Accepts exactly the pinned certificate.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    pin: CertPin,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertVerifier {
    pub fn new(pin: CertPin, provider: Arc<CryptoProvider>) -> Self {
        Self { pin, provider }
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if CertPin::of_der(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_in_the_usual_spellings() {
        let lower = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let pin = CertPin::parse(lower).unwrap();
        assert_eq!(pin.to_hex(), lower);
        let colons: Vec<String> = (0..32)
            .map(|i| lower[2 * i..2 * i + 2].to_uppercase())
            .collect();
        assert_eq!(CertPin::parse(&colons.join(":")).unwrap(), pin);
        assert!(CertPin::parse("abcd").is_err());
        assert!(CertPin::parse(&"zz".repeat(32)).is_err());
        assert!(CertPin::parse(&"é".repeat(32)).is_err());
    }

    #[test]
    fn only_the_pinned_certificate_passes() {
        let cert = rcgen::generate_simple_self_signed(vec!["haven-signaling".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["haven-signaling".into()]).unwrap();
        let der = cert.cert.der().clone();
        let v = PinnedCertVerifier::new(
            CertPin::of_der(der.as_ref()),
            Arc::new(rustls::crypto::ring::default_provider()),
        );
        let name = ServerName::try_from("anything").unwrap();
        assert!(v
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_ok());
        assert!(v
            .verify_server_cert(other.cert.der(), &[], &name, &[], UnixTime::now())
            .is_err());
    }
}
