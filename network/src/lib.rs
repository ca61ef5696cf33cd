//! k8slite-network: the pod network of one node — the CNI conflist for the node's pod CIDR
//! (bridge + host-local with its own dataDir + portmap + loopback, the distro's plugins;
//! [`cni`]) and the host settings it needs (iptables on PATH, forwarding, br_netfilter;
//! [`host`]), plus teardown helpers for tests ([`teardown`]). Cross-node routes, the service
//! proxy and node-local DNS come later.

pub mod cni;
pub mod dns;
pub mod host;
pub mod objects;
pub mod persist;
pub mod proxy;
pub mod routes;
pub mod teardown;

pub use cni::{CniSettings, write_conflist};
pub use host::{HostPrep, PrepOptions, prepare};

/// Errors of the pod network setup.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A value (pod CIDR, bridge or network name) is unusable.
    #[error("{what}: {reason}")]
    Invalid {
        /// The value.
        what: String,
        /// Why.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        what: String,
        /// The path.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Something the host must provide is missing.
    #[error("prerequisite missing: {0}")]
    Prerequisite(String),
    /// A command failed.
    #[error("{what}: {stderr}")]
    Command {
        /// The command.
        what: String,
        /// Its standard error.
        stderr: String,
    },
}

/// Result of the pod network setup.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;
