//! TLS for the public listener: a rustls `ServerConfig` from PEM files, and self-signed
//! development certificates (`roost cert dev`).
//!
//! The crypto provider is chosen explicitly (ring), so the server does not depend on which
//! provider some other crate in the build installs as the process default. 0-RTT (early data) is
//! off: replayed early data could repeat a login or a send.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;

/// Why the TLS configuration could not be built. Each variant names the file to check.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate chain {}: {source}", path.display())]
    Certificate {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read the TLS private key {}: {source} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)", path.display())]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the TLS certificate and key are not usable together: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A server configuration for `cert` (PEM chain, leaf first) and `key` (PEM private key):
/// TLS 1.2 and 1.3 with the ring provider's safe defaults, ALPN `http/1.1`, no 0-RTT.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let certificate_error = |source| TlsError::Certificate {
        path: cert.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(certificate_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(certificate_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.to_owned() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    server_config(chain, key)
}

/// Like [`load_server_config`], from PEM text already in memory.
pub fn server_config_from_pem(cert_pem: &str, key_pem: &str) -> Result<ServerConfig, TlsError> {
    let certificate_error = |source| TlsError::Certificate {
        path: PathBuf::from("(memory)"),
        source,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(certificate_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: PathBuf::from("(memory)"),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| TlsError::Key {
        path: PathBuf::from("(memory)"),
        source,
    })?;
    server_config(chain, key)
}

fn server_config(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No 0-RTT: early data can be replayed by an attacker.
    config.max_early_data_size = 0;
    Ok(config)
}

/// A self-signed certificate and its private key, as PEM text, valid for `hosts` (DNS names or
/// IP addresses). For development only: clients must be told to trust it explicitly.
pub fn make_dev_cert(hosts: &[String]) -> Result<(String, String), TlsError> {
    let certified = rcgen::generate_simple_self_signed(hosts.to_vec())?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_pair() -> (String, String) {
        make_dev_cert(&["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("generates")
    }

    #[test]
    fn loads_a_generated_dev_cert_from_files() {
        let (cert_pem, key_pem) = dev_pair();
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, cert_pem).expect("write cert");
        std::fs::write(&key, key_pem).expect("write key");
        let config = load_server_config(&cert, &key).expect("loads");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn no_zero_rtt() {
        let (cert_pem, key_pem) = dev_pair();
        let config = server_config_from_pem(&cert_pem, &key_pem).expect("builds");
        assert_eq!(config.max_early_data_size, 0);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").expect("write");
        let err = load_server_config(&empty, &empty).expect_err("no certificate");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = load_server_config(&missing, &missing).expect_err("missing");
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let (cert_pem, _) = dev_pair();
        let (_, other_key) = dev_pair();
        assert!(server_config_from_pem(&cert_pem, &other_key).is_err());
    }
}
