//! The cluster's certificate authority and node certificates (`roost cluster certs`).
//!
//! Node-to-node traffic is mutual TLS: every node presents a certificate signed by the cluster CA
//! and accepts only peers whose chain ends at that CA (see `transport::tls`). This module makes
//! those certificates with rcgen (ring): one self-signed CA per cluster, and per node a leaf with
//! the SANs the transport dials by (`roost-node-<id>`, `localhost`, `127.0.0.1`, plus the hosts
//! given; IP addresses become IP SANs). Keys are ECDSA P-256 and are written 0600.
//!
//! A CA read back from disk is turned into an rcgen issuer without rcgen's `x509-parser` feature
//! (a large dependency tree for one field): the issuer needs only the CA's subject name, which
//! [`ca_subject`] reads with a tiny DER walk. It understands the names this module writes
//! (UTF8String or PrintableString common and organization names) and refuses anything else.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DistinguishedName;
use rcgen::DnType;
use rcgen::DnValue;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use roost_engine::ids::NodeId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why certificates could not be made, read or written. Each variant names what to check.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the CA certificate is not PEM: {0}")]
    CaPem(rustls_pki_types::pem::Error),
    #[error("the CA certificate was not made by `roost cluster certs` (cannot read its subject: {0})")]
    CaSubject(&'static str),
    #[error("{} already exists with other content; remove it or choose another directory", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
}

/// The cluster CA as PEM text: its self-signed certificate and its private key.
#[derive(Clone, Debug)]
pub struct CaBundle {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The DNS name a node's certificate carries and the transport dials it by.
pub fn node_server_name(node: NodeId) -> String {
    format!("roost-node-{node}")
}

/// A new self-signed CA for the cluster `cluster_name` (its subject: `Roost cluster CA`,
/// organization `cluster_name`).
pub fn make_ca(cluster_name: &str) -> Result<CaBundle, CertError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Roost cluster CA");
    name.push(DnType::OrganizationName, cluster_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CaBundle {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate and key (PEM) for `node_id`, signed by `ca`, valid as TLS server and client for
/// `roost-node-<id>`, `localhost`, `127.0.0.1` and `hosts` (IP addresses become IP SANs).
pub fn make_node_cert(ca: &CaBundle, node_id: NodeId, hosts: &[String]) -> Result<(String, String), CertError> {
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).map_err(CertError::CaPem)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = ca_subject(&ca_der)?;
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = Issuer::new(ca_params, KeyPair::from_pem(&ca.key_pem)?);

    let mut names = vec![
        node_server_name(node_id),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    for host in hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let mut params = CertificateParams::new(names)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, node_server_name(node_id));
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `ca.pem`, `ca.key` and, per node, `node-<id>.pem` and `node-<id>.key` into `dir`
/// (created if missing; keys 0600). Never overwrites a file with different content, so an
/// existing CA (see [`read_ca`]) can sign certificates for new nodes into the same directory.
pub fn write_bundle(dir: &Path, ca: &CaBundle, nodes: &[(NodeId, Vec<String>)]) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write_new(&dir.join("ca.pem"), &ca.cert_pem, false)?;
    write_new(&dir.join("ca.key"), &ca.key_pem, true)?;
    for (node, hosts) in nodes {
        let (cert, key) = make_node_cert(ca, *node, hosts)?;
        write_new(&dir.join(format!("node-{node}.pem")), &cert, false)?;
        write_new(&dir.join(format!("node-{node}.key")), &key, true)?;
    }
    Ok(())
}

/// The CA `write_bundle` wrote into `dir` (`ca.pem`, `ca.key`).
pub fn read_ca(dir: &Path) -> Result<CaBundle, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| CertError::Read { path, source })
    };
    Ok(CaBundle {
        cert_pem: read("ca.pem")?,
        key_pem: read("ca.key")?,
    })
}

/// Creates `path` with `content`; an existing file is accepted only if it holds exactly `content`.
fn write_new(path: &Path, content: &str, secret: bool) -> Result<(), CertError> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        return match existing == content {
            true => Ok(()),
            false => Err(CertError::Exists { path: path.to_owned() }),
        };
    }
    let write_error = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(write_error)?;
    file.write_all(content.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

/// One DER element: (tag, contents, rest). Only definite lengths (DER has no other).
fn der_element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CertError> {
    let truncated = CertError::CaSubject("truncated DER");
    let (&tag, rest) = input.split_first().ok_or(CertError::CaSubject("empty DER"))?;
    let (&first, rest) = rest.split_first().ok_or(CertError::CaSubject("truncated DER"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(truncated);
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return Err(truncated);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The subject name of a certificate (`Certificate.tbsCertificate.subject`).
fn ca_subject(cert: &[u8]) -> Result<DistinguishedName, CertError> {
    let (_, certificate, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(certificate)?;
    let (tag, _, after_version) = der_element(tbs)?;
    if tag == 0xa0 {
        tbs = after_version;
    }
    // serialNumber, signature, issuer, validity.
    for _ in 0..4 {
        tbs = der_element(tbs)?.2;
    }
    let (_, mut sets, _) = der_element(tbs)?;
    let mut name = DistinguishedName::new();
    while !sets.is_empty() {
        let (_, set, rest) = der_element(sets)?;
        sets = rest;
        let (_, attribute, _) = der_element(set)?;
        let (_, oid, value) = der_element(attribute)?;
        let (value_tag, value, _) = der_element(value)?;
        let kind = match oid {
            [0x55, 0x04, 0x03] => DnType::CommonName,
            [0x55, 0x04, 0x0a] => DnType::OrganizationName,
            _ => return Err(CertError::CaSubject("unexpected name attribute")),
        };
        let text = String::from_utf8(value.to_vec()).map_err(|_| CertError::CaSubject("name is not UTF-8"))?;
        let value = match value_tag {
            0x0c => DnValue::Utf8String(text),
            0x13 => DnValue::PrintableString(text.try_into()?),
            _ => return Err(CertError::CaSubject("unexpected string type")),
        };
        name.push(kind, value);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::PeerTls;

    #[test]
    fn ca_and_node_cert_load_into_peer_tls() {
        let ca = make_ca("test").expect("ca");
        let (cert, key) =
            make_node_cert(&ca, NodeId(7), &["10.0.0.7".to_owned(), "n7.example".to_owned()]).expect("node cert");
        PeerTls::from_pem(&ca.cert_pem, &cert, &key).expect("loads");
    }

    #[test]
    fn the_issuer_name_is_the_ca_subject() {
        let ca = make_ca("a cluster").expect("ca");
        let der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("pem");
        let subject = ca_subject(&der).expect("subject");
        assert_eq!(
            subject.get(&DnType::OrganizationName),
            Some(&DnValue::Utf8String("a cluster".to_owned()))
        );
        assert_eq!(
            subject.get(&DnType::CommonName),
            Some(&DnValue::Utf8String("Roost cluster CA".to_owned()))
        );
    }

    #[test]
    fn truncated_der_is_an_error() {
        let ca = make_ca("t").expect("ca");
        let der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("pem");
        for cut in [0, 1, 2, 10, der.len() / 2] {
            assert!(ca_subject(&der[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_key_that_is_not_the_cas_is_refused_by_peer_tls() {
        let ca = make_ca("x").expect("ca");
        let (cert, _) = make_node_cert(&ca, NodeId(1), &[]).expect("node cert");
        let (_, other_key) = make_node_cert(&ca, NodeId(2), &[]).expect("node cert");
        assert!(PeerTls::from_pem(&ca.cert_pem, &cert, &other_key).is_err());
    }

    #[test]
    fn write_bundle_writes_private_keys_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = make_ca("w").expect("ca");
        write_bundle(
            dir.path(),
            &ca,
            &[(NodeId(1), vec![]), (NodeId(2), vec!["h2".to_owned()])],
        )
        .expect("write");
        for name in [
            "ca.pem",
            "ca.key",
            "node-1.pem",
            "node-1.key",
            "node-2.pem",
            "node-2.key",
        ] {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("node-1.key"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(dir.path().join("ca.key"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Same CA, a new node: fine. Another CA into the same directory: refused.
        let read = read_ca(dir.path()).expect("read ca");
        write_bundle(dir.path(), &read, &[(NodeId(3), vec![])]).expect("add node 3");
        let other = make_ca("w").expect("ca");
        let err = write_bundle(dir.path(), &other, &[]).expect_err("other CA");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let tls = PeerTls::load(
            &dir.path().join("ca.pem"),
            &dir.path().join("node-3.pem"),
            &dir.path().join("node-3.key"),
        );
        assert!(tls.is_ok());
    }
}
