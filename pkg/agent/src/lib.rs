//! k8slite-agent: the node agent.
//!
//! One agent runs one node: it joins the cluster ([`connect`]: the server CA pinned by the join
//! token, then the Kubernetes API over HTTPS with the token as bearer), registers its `Node`
//! and keeps its status ([`node`]), renews its `Lease` in `kube-node-lease` ([`lease`]), and runs
//! one worker per pod bound to it ([`pods`]) over a [`ContainerRuntime`]. With the fake runtime
//! several simulated nodes can share one process ([`run_fake_nodes`]).

pub mod boot;
pub mod certs;
pub mod connect;
pub mod host;
pub mod kubelet;
pub mod lease;
pub mod network;
pub mod node;
pub mod pods;
pub mod volumes;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use k8slite_runtime::{ContainerRuntime, FakeRuntime};
use tokio_util::sync::CancellationToken;

/// The kubelet version a k8slite agent reports.
pub const KUBELET_VERSION: &str = "v1.33.0+k8slite";

/// What failed in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The join token could not be parsed.
    #[error("join token: {0}")]
    Token(#[source] k8slite_pki::PkiError),
    /// The server URL is not a valid URL.
    #[error("server URL {url:?}: {reason}")]
    ServerUrl {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The CA the server presented does not match the token's hash.
    #[error(
        "the CA served at {0}/cacerts does not match the join token's CA hash (wrong server or token)"
    )]
    CaMismatch(String),
    /// The served CA bundle holds no certificate.
    #[error("the CA served at {url}/cacerts is unusable: {source}")]
    CaUnusable {
        /// Server URL.
        url: String,
        /// Parse error.
        #[source]
        source: k8slite_pki::PkiError,
    },
    /// A call to the Kubernetes API failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A container runtime call failed.
    #[error("{what}: {source}")]
    Runtime {
        /// What was being done.
        what: String,
        /// The runtime error.
        #[source]
        source: k8slite_runtime::RuntimeError,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Preparing, checking or storing the node's certificates failed.
    #[error("{what}: {source}")]
    Pki {
        /// What was being done.
        what: String,
        /// The PKI error.
        #[source]
        source: k8slite_pki::PkiError,
    },
    /// A file or directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: String,
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server's answer to the join request is unusable.
    #[error("joining: {0}")]
    Join(String),
    /// Setting up the pod network (CNI conflist) failed.
    #[error("pod network: {0}")]
    Network(#[source] k8slite_network::NetworkError),
}

impl Error {
    pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }
}

/// Run `f` again (up to 5 tries) while it fails with 409 Conflict: merge patches carry no
/// resourceVersion, so a conflict only means another writer got in between.
pub(crate) async fn retry_conflict<T, F, Fut>(mut f: F) -> std::result::Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, kube::Error>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(kube::Error::Api(s)) if s.code == 409 && tries < 4 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
            }
            other => return other,
        }
    }
}

/// Result of agent operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Resources a node reports as capacity (and allocatable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResources {
    /// CPU quantity (`4`, `3500m`).
    pub cpu: String,
    /// Memory quantity (`8Gi`).
    pub memory: String,
    /// Maximum pods.
    pub pods: u32,
    /// Ephemeral storage quantity.
    pub ephemeral_storage: String,
}

impl Default for NodeResources {
    fn default() -> Self {
        Self {
            cpu: "4".into(),
            memory: "8Gi".into(),
            pods: 110,
            ephemeral_storage: "50Gi".into(),
        }
    }
}

/// Configuration of one node agent.
#[derive(Clone)]
pub struct AgentConfig {
    /// Node name.
    pub node_name: String,
    /// Address reported as the node's InternalIP (and pods' hostIP).
    pub node_ip: IpAddr,
    /// Extra node labels.
    pub node_labels: BTreeMap<String, String>,
    /// Taints the node registers with.
    pub node_taints: Vec<Taint>,
    /// Capacity and allocatable.
    pub resources: NodeResources,
    /// Lease duration written into the node Lease (upstream: 40 s).
    pub lease_duration: Duration,
    /// How often the Lease is renewed (upstream: 10 s).
    pub lease_renew_interval: Duration,
    /// How often node status is computed and written when changed (upstream: 10 s).
    pub node_status_update_frequency: Duration,
    /// How often node status is written even when unchanged (upstream: 5 min).
    pub node_status_report_frequency: Duration,
    /// Pod worker settings.
    pub pods: pods::PodConfig,
    /// Report the real host's capacity, facts, pressure and images (`None`: a simulated node
    /// reporting [`Self::resources`] and made-up ids, as with `--runtime fake`).
    pub host: Option<host::HostConfig>,
    /// Port of the kubelet API (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: u16,
    /// Write the CNI conflist when the node learns its pod CIDR (`None`: simulated node).
    pub pod_network: Option<PodNetwork>,
    /// The node's part of the cluster network: overlay, service proxy, DNS (`None`:
    /// simulated node).
    pub node_network: Option<Arc<network::NodeNetwork>>,
    /// Pod volumes (`None` on simulated nodes: volumes are not set up).
    pub volumes: Option<Arc<dyn pods::VolumeHooks>>,
}

/// Where and how the agent writes the node's CNI conflist once `Node.spec.podCIDR` is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The agent's data dir (IPAM state under `<data-dir>/agent/cni/networks`).
    pub data_dir: std::path::PathBuf,
    /// containerd's CNI conf dir (`<data-dir>/agent/cni/net.d`).
    pub conf_dir: std::path::PathBuf,
    /// Bridge name (`k8slite0`).
    pub bridge: String,
    /// CNI network name (`k8slite`).
    pub network_name: String,
    /// Masquerade traffic leaving the pod CIDR.
    pub ip_masq: bool,
}

impl PodNetwork {
    /// Defaults for `data_dir`: conf dir `<data-dir>/agent/cni/net.d`, bridge `k8slite0`,
    /// network `k8slite`, ipMasq on.
    pub fn new(data_dir: impl Into<std::path::PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            conf_dir: k8slite_network::cni::conf_dir(&data_dir),
            data_dir,
            bridge: k8slite_network::cni::DEFAULT_BRIDGE.into(),
            network_name: k8slite_network::cni::DEFAULT_NETWORK_NAME.into(),
            ip_masq: true,
        }
    }

    /// Write the conflist for `pod_cidr` with `mtu` (the default when `None`); returns its
    /// path.
    pub fn write_conflist(&self, pod_cidr: &str, mtu: Option<u32>) -> Result<std::path::PathBuf> {
        let net = k8slite_network::cni::parse_pod_cidr(pod_cidr).map_err(Error::Network)?;
        let mut s = k8slite_network::CniSettings::new(&self.data_dir, net);
        s.bridge = self.bridge.clone();
        s.network_name = self.network_name.clone();
        s.ip_masq = self.ip_masq;
        s.mtu = mtu;
        k8slite_network::write_conflist(&self.conf_dir, &s).map_err(Error::Network)
    }
}

impl AgentConfig {
    /// Defaults like upstream's for a node called `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            node_labels: BTreeMap::new(),
            node_taints: Vec::new(),
            resources: NodeResources::default(),
            lease_duration: Duration::from_secs(40),
            lease_renew_interval: Duration::from_secs(10),
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            pods: pods::PodConfig::default(),
            host: None,
            kubelet_port: 10250,
            pod_network: None,
            node_network: None,
            volumes: None,
        }
    }
}

/// Parse `key=value:Effect` (or `key:Effect`) as k3s's `--node-taint`.
pub fn parse_taint(s: &str) -> Result<Taint> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("taint {s:?}: expected key[=value]:Effect")))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(Error::Config(format!(
            "taint {s:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
        )));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(Error::Config(format!("taint {s:?}: empty key")));
    }
    Ok(Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

/// Run one node agent with `runtime` until `shutdown`: register the node, then renew its Lease,
/// keep its status and run its pods.
pub async fn run(
    client: kube::Client,
    cfg: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<()> {
    let cfg = Arc::new(cfg);
    let node = tokio::select! {
        n = node::register(&client, &cfg, runtime.as_ref()) => n?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    tracing::info!(node = %cfg.node_name, "node registered");
    let node_uid = node.metadata.uid.clone().unwrap_or_default();
    let lease = lease::run(client.clone(), cfg.clone(), node_uid, shutdown.clone());
    let status = node::run_status(
        client.clone(),
        cfg.clone(),
        runtime.clone(),
        shutdown.clone(),
    );
    let pods = pods::run(client, cfg.clone(), runtime, shutdown.clone());
    let (l, s, p) = tokio::join!(lease, status, pods);
    l.and(s).and(p)
}

/// Run one simulated node on a [`FakeRuntime`] until `shutdown`.
pub async fn run_fake_node(
    client: kube::Client,
    cfg: AgentConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    run(client, cfg, Arc::new(FakeRuntime::new()), shutdown).await
}

/// Run `count` simulated nodes on fake runtimes in this process, named `<prefix>-1` …
/// `<prefix>-<count>`, all from `template` (node name and IP are replaced per node: the IP is
/// the template's with its last octet raised by the node's index).
pub async fn run_fake_nodes(
    client: kube::Client,
    template: AgentConfig,
    count: usize,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for i in 1..=count {
        let mut cfg = template.clone();
        cfg.node_name = format!("{}-{i}", template.node_name);
        cfg.node_ip = offset_ip(template.node_ip, i);
        let client = client.clone();
        let shutdown = shutdown.clone();
        set.spawn(async move {
            let rt: Arc<dyn ContainerRuntime> = Arc::new(FakeRuntime::new());
            run(client, cfg, rt, shutdown).await
        });
    }
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("simulated node failed: {e}");
                result = Err(e);
            }
            Err(e) => tracing::error!("simulated node task failed: {e}"),
        }
    }
    result
}

fn offset_ip(ip: IpAddr, i: usize) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let n = u32::from(v4).wrapping_add(u32::try_from(i).unwrap_or(0));
            IpAddr::V4(n.into())
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6).wrapping_add(i as u128);
            IpAddr::V6(n.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_like_k3s() {
        let t = parse_taint("dedicated=edge:NoSchedule").expect("taint");
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("edge"), "NoSchedule")
        );
        let t = parse_taint("gpu:NoExecute").expect("taint");
        assert_eq!((t.key.as_str(), t.value), ("gpu", None));
        assert!(parse_taint("gpu=1:Sometimes").is_err());
        assert!(parse_taint("nocolon").is_err());
    }

    #[test]
    fn fake_node_ips_are_offset() {
        assert_eq!(
            offset_ip("10.0.0.250".parse().expect("ip"), 10),
            "10.0.1.4".parse::<IpAddr>().expect("ip")
        );
    }
}
