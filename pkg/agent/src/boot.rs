//! A node on real containerd, start to finish: host preparation, containerd (supervised or an
//! existing endpoint), the images directory and k8slite's pause image, the node's certificates,
//! the CNI config once the node has a pod CIDR, the kubelet API, then [`crate::run`].

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::{AgentConfig, Error, Result};

/// Where a containerd-backed node keeps things and what it tells pods.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// Data directory (agent state in `<data-dir>/agent`).
    pub data_dir: PathBuf,
    /// Runtime state directory (containerd socket and state).
    pub run_dir: PathBuf,
    /// Use this containerd socket instead of supervising k8slite's own containerd.
    pub container_runtime_endpoint: Option<PathBuf>,
    /// Port of the kubelet API.
    pub kubelet_port: u16,
    /// Root of the container log directories.
    pub pod_log_dir: PathBuf,
    /// The host resolv.conf.
    pub resolv_conf: PathBuf,
    /// Cluster DNS servers for pods.
    pub cluster_dns: Vec<String>,
    /// Cluster domain.
    pub cluster_domain: String,
}

impl NodeSetup {
    /// `<data-dir>/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }
}

/// Join the server at `url` with `token` and run this machine as a node on containerd until
/// `shutdown`.
pub async fn run_joined(
    url: &str,
    token: &str,
    cfg: AgentConfig,
    setup: NodeSetup,
    shutdown: CancellationToken,
) -> Result<()> {
    let _ = (url, token, cfg, setup, shutdown);
    Err(Error::Config(
        "the containerd runtime is being wired (issue 4)".into(),
    ))
}
