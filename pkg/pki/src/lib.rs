//! k8slite-pki: the cluster's certificate authorities, serving and client certificates, the
//! join token and kubeconfig files.
//!
//! Everything is created on first start under `<data-dir>/server/tls` and reused afterwards;
//! private keys are written 0600. Keys are ECDSA P-256 (fast to generate on small devices).
//! TLS configurations always use rustls' **ring** provider explicitly, never the process-wide
//! default.

mod ca;
mod cluster;
mod der;
mod files;
pub use files::write_atomic;
mod identity;
mod kubeconfig;
mod node;
mod sakey;
mod tls;
mod token;

pub use ca::CertAndKey;
pub use cluster::{ClusterPki, PkiOptions};
pub use identity::{Identity, identity_from_cert};
pub use kubeconfig::write_kubeconfig;
pub use node::{
    LeafSummary, NODE_CERTS_PATH, NODES_GROUP, NodeCertRequest, NodeCertResponse, NodeKeys,
    inspect_leaf, node_cert_request, node_user, normalize_san, validate_node_name,
};
pub use sakey::{SERVICE_ACCOUNT_KEY_FILE, ServiceAccountKey};
pub use tls::{client_tls_config, first_cert_der};
pub use token::{JoinToken, ca_hash};

/// Boxed cause of a parse failure (from x509-parser, rcgen or the PEM reader).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    /// Generating or signing a certificate or key failed.
    #[error("generating {what}: {source}")]
    Cert {
        /// Which certificate or key.
        what: String,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate, key or document could not be parsed or encoded.
    #[error("parsing {what}: {source}")]
    Parse {
        /// What was parsed (a file name or a description).
        what: String,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// Stored material is present but unusable (a CA without its key, a key that does not
    /// match its certificate, an invalid SAN, …).
    #[error("{what}: {reason}")]
    Invalid {
        /// What is wrong (a file name or a value).
        what: String,
        /// Why.
        reason: String,
    },
    /// Building a TLS configuration failed.
    #[error("building tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Building the client certificate verifier failed.
    #[error("building client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A join token is malformed.
    #[error("join token: {0}")]
    Token(String),
}

impl PkiError {
    pub(crate) fn parse(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Parse {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn cert(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Self {
        let what = what.into();
        move |source| Self::Cert { what, source }
    }
}

/// Result alias of the PKI.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;
