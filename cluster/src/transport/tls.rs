//! Mutual TLS between nodes: `PeerTls` holds the rustls server and client configurations built
//! from the cluster CA and this node's certificate and key.
//!
//! Both directions trust exactly one root, the cluster CA: the server requires a client
//! certificate chained to it (`WebPkiClientVerifier`), and the client verifies the server's
//! chain and name against it. The client dials a known node by the name `roost-node-<id>` (every
//! node certificate carries it, see `certs`), so a node reached at a stale address cannot
//! impersonate another; an address-only dial (joining through a seed) checks the address's host.
//! The accepting side checks the converse: the node id a dialer claims in its hello must be a
//! name its client certificate is valid for ([`check_peer_node`]), so one node's certificate
//! cannot speak for another node.
//! TLS 1.3 only (both ends are Roost), ring provider chosen explicitly, no 0-RTT.

use std::path::Path;
use std::sync::Arc;

use roost_engine::ids::NodeId;
use rustls::server::WebPkiClientVerifier;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::ServerName;

use super::TransportError;
use crate::certs::node_server_name;

/// Server and client TLS configurations for one node, both anchored at the cluster CA.
#[derive(Clone)]
pub struct PeerTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

impl PeerTls {
    /// From PEM files: the CA certificate, this node's certificate chain (leaf first) and key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TransportError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TransportError::ReadFile {
                path: path.to_owned(),
                source,
            })
        };
        let (ca_pem, cert_pem, key_pem) = (read(ca)?, read(cert)?, read(key)?);
        Self::build(&ca_pem, &cert_pem, &key_pem).map_err(|why| TransportError::Pem {
            path: [ca, cert, key]
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            why,
        })
    }

    /// From PEM text already in memory.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Self, TransportError> {
        Self::build(ca, cert, key).map_err(|why| TransportError::Pem {
            path: "(memory)".to_owned(),
            why,
        })
    }

    fn build(ca: &str, cert: &str, key: &str) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            let der = der.map_err(|e| format!("CA certificate: {e}"))?;
            roots.add(der).map_err(|e| format!("CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CA certificate (expected -----BEGIN CERTIFICATE-----)".to_owned());
        }
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("node certificate: {e}"))?;
        if chain.is_empty() {
            return Err("no node certificate (expected -----BEGIN CERTIFICATE-----)".to_owned());
        }
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("node key: {e}"))?;
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls13 = &[&rustls::version::TLS13];

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(tls13)
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("node certificate and key: {e}"))?;
        server.max_early_data_size = 0;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(tls13)
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("node certificate and key: {e}"))?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The configuration the accept loop uses.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The configuration outbound connections use.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

/// The name to verify the server by: `roost-node-<id>` for a known node, else the address's host.
pub fn server_name(node: Option<NodeId>, addr: &str) -> Result<ServerName<'static>, TransportError> {
    let name = match node {
        Some(node) => node_server_name(node),
        None => host_of(addr).to_owned(),
    };
    ServerName::try_from(name).map_err(|_| TransportError::InvalidAddress(addr.to_owned()))
}

/// Whether `cert`, the end-entity certificate an inbound peer presented, is valid for the name
/// `roost-node-<node>` of the node id it claims; the reason is what the refusal frame says.
pub(super) fn check_peer_node(cert: Option<&CertificateDer<'_>>, node: NodeId) -> Result<(), String> {
    let name = node_server_name(node);
    let cert = cert.ok_or_else(|| format!("claimed node id {node} without a client certificate"))?;
    let cert = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("claimed node id {node}; cannot read the client certificate: {e}"))?;
    let server_name = ServerName::try_from(name.as_str()).map_err(|e| format!("{name:?}: {e}"))?;
    cert.verify_is_valid_for_subject_name(&server_name)
        .map_err(|_| format!("claimed node id {node}, but the client certificate is not valid for {name}"))
}

/// `host` of `host:port` or `[v6]:port` (the whole string if there is no port).
fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    };
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("node1.example:7001"), "node1.example");
        assert_eq!(host_of("127.0.0.1:7001"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7001"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn server_names() {
        let by_id = server_name(Some(NodeId(4)), "10.1.2.3:7000").expect("name");
        assert_eq!(by_id.to_str(), "roost-node-4");
        let by_ip = server_name(None, "10.1.2.3:7000").expect("name");
        assert!(matches!(by_ip, ServerName::IpAddress(_)));
        assert!(server_name(None, "not a host:1").is_err());
    }

    #[test]
    fn a_node_certificate_speaks_only_for_its_own_node_id() {
        let ca = crate::certs::make_ca("tls-test").expect("ca");
        let (pem, _) = crate::certs::make_node_cert(&ca, NodeId(2), &[]).expect("node cert");
        let cert = CertificateDer::from_pem_slice(pem.as_bytes()).expect("der");
        assert_eq!(check_peer_node(Some(&cert), NodeId(2)), Ok(()));
        let other = check_peer_node(Some(&cert), NodeId(3)).expect_err("node 2's certificate claiming node 3");
        assert!(other.contains("node id 3") && other.contains("roost-node-3"), "{other}");
        assert!(check_peer_node(None, NodeId(2)).is_err());
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(check_peer_node(Some(&garbage), NodeId(2)).is_err());
    }
}
