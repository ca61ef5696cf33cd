//! rustls configuration (ring provider, never the process default) and identities from
//! verified client certificates.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::ca::CertAndKey;
use crate::{PkiError, Result};

/// Who a client certificate names: CN → user, every O → a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User (CN).
    pub user: String,
    /// Groups (O values).
    pub groups: Vec<String>,
}

fn parse_err(what: &str, e: impl std::fmt::Display) -> PkiError {
    PkiError::Parse {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// Certificates of a PEM bundle.
pub(crate) fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse_err(what, e))
}

/// The ring crypto provider shared by all TLS configurations.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serving configuration with optional, verified client certificates; ALPN h2 and http/1.1.
pub(crate) fn server_config(
    serving: &CertAndKey,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(client_ca_pem, "client CA")? {
        roots.add(c)?;
    }
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
        .map_err(|e| parse_err("serving key", e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&serving.cert_pem, "serving certificate")?, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The identity a (verified) client certificate carries.
pub fn identity_from_cert(der: &[u8]) -> Result<Identity> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(der).map_err(|e| parse_err("client certificate", e))?;
    let subject = x509.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    if user.is_empty() {
        return Err(parse_err("client certificate", "no common name"));
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Ok(Identity { user, groups })
}
