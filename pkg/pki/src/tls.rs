//! rustls configurations, always with the ring provider (never the process default).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::ca::CertAndKey;
use crate::{PkiError, Result};

/// DER of the first certificate in a PEM bundle (e.g. the leaf of [`CertAndKey::cert_pem`]).
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>> {
    crate::ca::first_der(pem, "certificate")
}

/// Certificates of a PEM bundle (at least one).
fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::parse(what, e))?;
    if certs.is_empty() {
        return Err(PkiError::invalid(what, "no certificate in PEM"));
    }
    Ok(certs)
}

fn key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::parse(what, e))
}

fn roots(ca_pem: &str, what: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem, what)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// The ring crypto provider.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serving configuration with optional, verified client certificates; ALPN h2 and http/1.1.
pub(crate) fn server_config(
    serving: &CertAndKey,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(client_ca_pem, "client CA")?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&serving.cert_pem, "serving certificate")?,
            key(&serving.key_pem, "serving key")?,
        )?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client configuration (ring provider) trusting only `ca_pem`, presenting `client` when
/// given; no ALPN (set `alpn_protocols` on a clone if needed). For agents and tests.
pub fn client_tls_config(
    ca_pem: &str,
    client: Option<&CertAndKey>,
) -> Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem, "server CA")?);
    let cfg = match client {
        Some(c) => builder.with_client_auth_cert(
            certs(&c.cert_pem, "client certificate")?,
            key(&c.key_pem, "client key")?,
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, ServerConnection};

    use super::*;
    use crate::{ClusterPki, PkiOptions, identity_from_cert};

    fn pki(dir: &std::path::Path) -> ClusterPki {
        ClusterPki::load_or_create(
            dir,
            &PkiOptions {
                cluster_domain: "cluster.local".into(),
                service_ip: "10.43.0.1".parse().expect("ip"),
                sans: vec!["192.0.2.10".into()],
                hostname: "edge-1".into(),
            },
        )
        .expect("pki")
    }

    /// Run a handshake in memory, then send one message from the client.
    fn handshake(
        server_cfg: Arc<rustls::ServerConfig>,
        client_cfg: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> std::result::Result<ServerConnection, rustls::Error> {
        let name = ServerName::try_from(name.to_string()).expect("server name");
        let mut client = ClientConnection::new(client_cfg, name).expect("client");
        let mut server = ServerConnection::new(server_cfg).expect("server");
        client.writer().write_all(b"ping").expect("queue");
        let mut buf = Vec::new();
        for _ in 0..20 {
            buf.clear();
            client.write_tls(&mut buf).expect("client write");
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                server.read_tls(&mut rd).expect("server read");
            }
            let srv = server.process_new_packets();
            buf.clear();
            server.write_tls(&mut buf).expect("server write");
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                client.read_tls(&mut rd).expect("client read");
            }
            srv?;
            client.process_new_packets()?;
            let mut got = [0u8; 4];
            if !server.is_handshaking() && server.reader().read_exact(&mut got).is_ok() {
                assert_eq!(&got, b"ping");
                return Ok(server);
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn admin_cert_is_seen_and_anonymous_clients_complete_the_handshake() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = pki(dir.path());
        let server_cfg = p.server_tls_config().expect("server config");

        // With the admin certificate: the server sees the verified peer certificate.
        let admin = client_tls_config(p.server_ca_pem(), Some(p.admin())).expect("client");
        for name in ["kubernetes.default.svc", "127.0.0.1", "10.43.0.1", "edge-1"] {
            let conn = handshake(server_cfg.clone(), admin.clone(), name).expect(name);
            assert_eq!(conn.alpn_protocol(), None, "client offered no ALPN");
            let peer = conn.peer_certificates().expect("peer certificate");
            let id = identity_from_cert(peer[0].as_ref()).expect("identity");
            assert_eq!(id.user, "system:admin");
            assert_eq!(id.groups, ["system:masters"]);
        }

        // A certificate with several groups verifies through webpki too.
        let multi = p
            .issue_client_cert("alice", &["devs".into(), "ops".into()])
            .expect("multi-group cert");
        let cfg = client_tls_config(p.server_ca_pem(), Some(&multi)).expect("client");
        let conn = handshake(server_cfg.clone(), cfg, "localhost").expect("multi-group");
        let peer = conn.peer_certificates().expect("peer certificate");
        let id = identity_from_cert(peer[0].as_ref()).expect("identity");
        assert_eq!(
            (id.user.as_str(), id.groups.as_slice()),
            ("alice", &["devs".to_string(), "ops".to_string()][..])
        );

        // Without a certificate: the handshake completes, no peer identity (→ 401 later).
        let mut anon = (*client_tls_config(p.server_ca_pem(), None).expect("client")).clone();
        anon.alpn_protocols = vec![b"h2".to_vec()];
        let conn = handshake(server_cfg.clone(), Arc::new(anon), "kubernetes").expect("anon");
        assert!(conn.peer_certificates().is_none());
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));

        // A certificate from another cluster's client CA is refused.
        let other_dir = tempfile::tempdir().expect("tmp");
        let other = pki(other_dir.path());
        let foreign = client_tls_config(p.server_ca_pem(), Some(other.admin())).expect("client");
        assert!(handshake(server_cfg.clone(), foreign, "localhost").is_err());

        // A name not on the serving certificate is refused by the client.
        assert!(handshake(server_cfg, admin, "example.com").is_err());
    }
}
