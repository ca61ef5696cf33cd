//! k8slite-pki: the cluster's certificate authorities, serving and client certificates, the
//! join token and kubeconfig files.
//!
//! Everything is created on first start under `<data-dir>/server/tls` and reused afterwards;
//! private keys are written 0600. Keys are ECDSA P-256 (fast to generate on small devices).

mod ca;
mod files;
mod kubeconfig;
mod tls;
mod token;

pub use ca::{CertAndKey, ClusterPki, PkiOptions};
pub use kubeconfig::write_kubeconfig;
pub use tls::{Identity, identity_from_cert};
pub use token::{JoinToken, ca_hash};

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted (`reading`, `writing`, …).
        op: &'static str,
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating or signing a certificate failed.
    #[error("certificate {what}: {source}")]
    Cert {
        /// Which certificate.
        what: String,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
    /// A stored certificate or key could not be parsed.
    #[error("parsing {what}: {message}")]
    Parse {
        /// What was parsed.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// Building the TLS configuration failed.
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Building the client verifier failed.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A join token is malformed.
    #[error("join token: {0}")]
    Token(String),
}

/// Result alias of the PKI.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;
