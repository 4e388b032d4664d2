//! The TLS identity of the QUIC control endpoint SFU nodes dial: a self-signed certificate
//! that signaling generates once (rcgen) and keeps in its state directory, and whose SHA-256
//! fingerprint nodes pin. No CA is needed for a link between our own processes, and pinning
//! makes the certificate's names irrelevant.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub use haven_proto::control::CONTROL_ALPN;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating the node certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Certificate and key of the control endpoint.
pub struct NodeTls {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Lower-case hex SHA-256 of a DER certificate, as nodes pin it.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl NodeTls {
    /// A fresh certificate for `names`.
    pub fn generate(names: Vec<String>) -> Result<Self, TlsError> {
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        })
    }

    /// The certificate in `dir` (`node-cert.der`, `node-key.der`), created on first use so
    /// the fingerprint nodes pin survives restarts.
    pub fn load_or_generate(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join("node-cert.der");
        let key_path = dir.join("node-key.der");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = std::fs::read(&key_path).map_err(io(&key_path))?;
            return Ok(Self {
                cert: CertificateDer::from(cert),
                key: PrivatePkcs8KeyDer::from(key),
            });
        }
        let tls = Self::generate(vec!["haven-signaling".into(), "localhost".into()])?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_private(&key_path, tls.key.secret_pkcs8_der()).map_err(io(&key_path))?;
        std::fs::write(&cert_path, tls.cert.as_ref()).map_err(io(&cert_path))?;
        Ok(tls)
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(self.cert.as_ref())
    }

    pub fn cert_der(&self) -> &[u8] {
        self.cert.as_ref()
    }

    /// The quinn server configuration: TLS 1.3 with our ALPN, keep-alives, idle timeout.
    pub fn server_config(&self, idle_timeout: Duration) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(|e| TlsError::Config(e.to_string()))?;
        tls.alpn_protocols = vec![CONTROL_ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(idle_timeout)
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            ))
            .keep_alive_interval(Some(idle_timeout / 3))
            // One control stream per node; a couple more for future use.
            .max_concurrent_bidi_streams(4u32.into())
            .max_concurrent_uni_streams(0u32.into());
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(bytes)
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_kept_across_restarts() {
        let dir = std::env::temp_dir().join(format!("haven-node-tls-{}", uuid::Uuid::new_v4()));
        let a = NodeTls::load_or_generate(&dir).unwrap();
        let b = NodeTls::load_or_generate(&dir).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        assert!(a.server_config(Duration::from_secs(10)).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
