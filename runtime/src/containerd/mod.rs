//! containerd as a child process: the generated config (own root/state/socket, CNI dirs, the
//! pause image, cgroupfs driver, oom-score handling from the host's capabilities) and a
//! supervisor that restarts it when it dies.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use k8slite_runtime::containerd::{ContainerdConfig, Supervisor};
//! let cfg = ContainerdConfig::new("/var/lib/k8slite".as_ref(), "/run/k8slite".as_ref());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let containerd = Supervisor::start(cfg, shutdown.clone()).await?;
//! let runtime = containerd.runtime()?; // a CriRuntime on containerd.socket()
//! # Ok(()) }
//! ```
//!
//! With `--container-runtime-endpoint` there is no supervisor: use
//! [`crate::CriRuntime::connect`] on that socket.

mod config;
mod process;
mod supervisor;

use std::path::PathBuf;

pub use config::ContainerdConfig;
pub use supervisor::Supervisor;

/// What failed while running containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// A file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// containerd exited while starting.
    #[error("containerd exited while starting ({status}); last log lines:\n{log}")]
    Exited {
        /// Exit status.
        status: String,
        /// Tail of its log.
        log: String,
    },
    /// containerd did not answer on its socket in time.
    #[error("containerd at {} did not become ready: {reason}", socket.display())]
    NotReady {
        /// The socket.
        socket: PathBuf,
        /// Why.
        reason: String,
    },
}
