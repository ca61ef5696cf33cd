//! TLS of the kubelet API: the node's serving certificate; client certificates **required** and
//! verified against the cluster's client CA (ring provider).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::{KubeletError, KubeletServerConfig};

fn err(what: &str) -> impl FnOnce(String) -> KubeletError + '_ {
    move |e| KubeletError::Tls(format!("{what}: {e}"))
}

/// The rustls server configuration (ALPN `http/1.1`: the API server relays WebSockets).
pub(crate) fn server_config(
    cfg: &KubeletServerConfig,
) -> Result<Arc<rustls::ServerConfig>, KubeletError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cfg.client_ca_pem.as_bytes()) {
        let c = c.map_err(|e| err("client CA")(e.to_string()))?;
        roots.add(c).map_err(|e| err("client CA")(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("client CA")("no certificate in PEM".into()));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err("client certificate verifier")(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(cfg.serving_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("serving certificate")(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("serving certificate")("no certificate in PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(cfg.serving_key_pem.as_bytes())
        .map_err(|e| err("serving key")(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("protocol versions")(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| err("serving certificate")(e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
