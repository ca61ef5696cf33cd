//! `k8slite agent`: flags → `k8slite_agent::AgentConfig` → `k8slite_agent::boot::run_joined`
//! (containerd) or `run_fake_nodes` (simulated nodes). The node flags are shared with the
//! server's embedded agent.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

/// Container runtimes the agent can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// Simulated containers (kubemark-style nodes for tests and benchmarks).
    Fake,
    /// containerd over CRI.
    Containerd,
}

/// Flags of the node agent, for `k8slite agent` and the agent embedded in `k8slite server`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Node name (default: the host name). With --fake-nodes, the prefix of the names.
    #[arg(long, env = "K8SLITE_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Address reported as the node's InternalIP. With --fake-nodes, the first node gets this
    /// address plus one, the next plus two, and so on.
    #[arg(long, env = "K8SLITE_NODE_IP", value_name = "IP")]
    pub node_ip: Option<IpAddr>,
    /// Extra node label `key=value`; repeatable.
    #[arg(
        long = "node-label",
        env = "K8SLITE_NODE_LABEL",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    node_label: Vec<String>,
    /// Taint the node registers with, `key=value:Effect`; repeatable.
    #[arg(
        long = "node-taint",
        env = "K8SLITE_NODE_TAINT",
        value_delimiter = ',',
        value_name = "KEY=VALUE:EFFECT"
    )]
    node_taint: Vec<String>,
    /// Maximum number of pods on the node.
    #[arg(
        long,
        env = "K8SLITE_MAX_PODS",
        default_value_t = 110,
        value_name = "N"
    )]
    max_pods: u32,
    /// Seconds between renewals of the node Lease.
    #[arg(
        long,
        env = "K8SLITE_NODE_LEASE_RENEW_INTERVAL",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    node_lease_renew_interval: u64,
    /// leaseDurationSeconds written into the node Lease.
    #[arg(
        long,
        env = "K8SLITE_NODE_LEASE_DURATION",
        default_value_t = 40,
        value_name = "SECONDS"
    )]
    node_lease_duration: u64,
    /// Seconds between node status computations (written when changed).
    #[arg(
        long,
        env = "K8SLITE_NODE_STATUS_UPDATE_FREQUENCY",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    node_status_update_frequency: u64,
    /// Seconds after which node status is written even if unchanged.
    #[arg(
        long,
        env = "K8SLITE_NODE_STATUS_REPORT_FREQUENCY",
        default_value_t = 300,
        value_name = "SECONDS"
    )]
    node_status_report_frequency: u64,
    /// First CrashLoopBackOff delay in seconds (doubles per restart).
    #[arg(
        long,
        env = "K8SLITE_RESTART_BACKOFF_INITIAL",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    restart_backoff_initial: f64,
    /// Maximum CrashLoopBackOff delay in seconds.
    #[arg(
        long,
        env = "K8SLITE_RESTART_BACKOFF_MAX",
        default_value_t = 300.0,
        value_name = "SECONDS"
    )]
    restart_backoff_max: f64,
    /// Socket of an existing containerd to use instead of starting k8slite's own
    /// (`/run/containerd/containerd.sock`).
    #[arg(long, env = "K8SLITE_CONTAINER_RUNTIME_ENDPOINT", value_name = "PATH")]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// Port of the kubelet API (logs, exec, attach, port-forward).
    #[arg(
        long,
        env = "K8SLITE_KUBELET_PORT",
        default_value_t = 10250,
        value_name = "PORT"
    )]
    pub kubelet_port: u16,
    /// Directory of the container logs (`<dir>/<ns>_<pod>_<uid>/<container>/<n>.log`).
    #[arg(
        long,
        env = "K8SLITE_POD_LOG_DIR",
        default_value = "/var/log/pods",
        value_name = "DIR"
    )]
    pub pod_log_dir: PathBuf,
    /// resolv.conf whose servers and search domains pods with `dnsPolicy: Default` get.
    #[arg(
        long,
        env = "K8SLITE_RESOLV_CONF",
        default_value = "/etc/resolv.conf",
        value_name = "FILE"
    )]
    pub resolv_conf: PathBuf,
    /// Directory for runtime state (containerd socket and state).
    #[arg(
        long,
        env = "K8SLITE_RUN_DIR",
        default_value = "/run/k8slite",
        value_name = "DIR"
    )]
    pub run_dir: PathBuf,
    /// Pod network between nodes: `vxlan` (works across routed networks), `host-gw` (routes
    /// via the nodes' addresses; nodes on one L2 segment) or `none` (another CNI provides the
    /// pod network). On the server: the cluster's (default vxlan); on an agent: overrides the
    /// server's for this node.
    #[arg(
        long,
        env = "K8SLITE_NETWORK_BACKEND",
        value_name = "BACKEND",
        value_parser = ["vxlan", "host-gw", "none"]
    )]
    pub network_backend: Option<String>,
    /// MTU of the pod network (default: the MTU of the node's interface, less 50 for vxlan).
    #[arg(long, env = "K8SLITE_NETWORK_MTU", value_name = "BYTES")]
    pub network_mtu: Option<u32>,
    /// Turn off tx checksum offload on the VXLAN device: a workaround for hosts whose NIC or
    /// kernel corrupts offloaded VXLAN checksums; it costs most of the throughput.
    #[arg(long, env = "K8SLITE_VXLAN_DISABLE_CHECKSUM_OFFLOAD")]
    pub vxlan_disable_checksum_offload: bool,
}

/// Flags of `k8slite agent`. Like the server's, every long flag can also be set in the config
/// file (same name) or as `K8SLITE_<FLAG_IN_CAPS>`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct AgentArgs {
    /// Config file (YAML; keys are the long flag names).
    #[arg(
        long,
        env = "K8SLITE_CONFIG",
        default_value = "/etc/k8slite/config.yaml",
        value_name = "FILE"
    )]
    config: PathBuf,
    /// URL of the server to join (`https://host:6443`).
    #[arg(long, env = "K8SLITE_JOIN", value_name = "URL")]
    join: String,
    /// Join token (`K10<ca hash>::server:<secret>`, from the server's data dir `server/token`).
    #[arg(
        long,
        env = "K8SLITE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "K8SLITE_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Container runtime.
    #[arg(
        long,
        env = "K8SLITE_RUNTIME",
        value_enum,
        default_value = "containerd"
    )]
    runtime: RuntimeKind,
    /// Run this many simulated nodes in one process, named `<node-name>-1` … (fake runtime).
    #[arg(long, env = "K8SLITE_FAKE_NODES", value_name = "N")]
    fake_nodes: Option<usize>,
    /// CPU capacity of a fake node.
    #[arg(
        long,
        env = "K8SLITE_NODE_CPU",
        default_value = "4",
        value_name = "QUANTITY"
    )]
    node_cpu: String,
    /// Memory capacity of a fake node.
    #[arg(
        long,
        env = "K8SLITE_NODE_MEMORY",
        default_value = "8Gi",
        value_name = "QUANTITY"
    )]
    node_memory: String,
    /// Ephemeral-storage capacity of a fake node.
    #[arg(
        long,
        env = "K8SLITE_NODE_EPHEMERAL_STORAGE",
        default_value = "50Gi",
        value_name = "QUANTITY"
    )]
    node_ephemeral_storage: String,
    /// Node settings shared with the server's embedded agent.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Data directory (agent state in `<data-dir>/agent`).
    #[arg(
        long,
        env = "K8SLITE_DATA_DIR",
        default_value = "/var/lib/k8slite",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// Cluster DNS address written into pods' resolv.conf and served on this node (default:
    /// the server's `--cluster-dns`).
    #[arg(long, env = "K8SLITE_CLUSTER_DNS", value_name = "IP")]
    cluster_dns: Option<IpAddr>,
    /// Cluster domain (default: the server's `--cluster-domain`).
    #[arg(long, env = "K8SLITE_CLUSTER_DOMAIN", value_name = "DOMAIN")]
    cluster_domain: Option<String>,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(
        long,
        env = "K8SLITE_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log: String,
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{flag} must be a non-negative number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// The agent configuration from the node flags; `default_ip` when `--node-ip` is not given.
pub fn node_config(n: &NodeArgs, default_ip: IpAddr) -> anyhow::Result<k8slite_agent::AgentConfig> {
    let name = match &n.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_ascii_lowercase())
            .context("reading the host name (set --node-name)")?,
    };
    let mut cfg = k8slite_agent::AgentConfig::new(name);
    cfg.node_ip = n.node_ip.unwrap_or(default_ip);
    let mut labels = BTreeMap::new();
    for l in &n.node_label {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--node-label {l:?}: expected key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    cfg.node_labels = labels;
    cfg.node_taints = n
        .node_taint
        .iter()
        .map(|t| k8slite_agent::parse_taint(t))
        .collect::<Result<_, _>>()?;
    cfg.resources.pods = n.max_pods;
    cfg.lease_renew_interval = Duration::from_secs(n.node_lease_renew_interval.max(1));
    cfg.lease_duration = Duration::from_secs(n.node_lease_duration.max(1));
    cfg.node_status_update_frequency = Duration::from_secs(n.node_status_update_frequency.max(1));
    cfg.node_status_report_frequency = Duration::from_secs(n.node_status_report_frequency.max(1));
    cfg.pods.backoff_initial = seconds(n.restart_backoff_initial, "restart-backoff-initial")?;
    cfg.pods.backoff_max = seconds(n.restart_backoff_max, "restart-backoff-max")?;
    Ok(cfg)
}

/// What the containerd-backed node needs besides [`k8slite_agent::AgentConfig`];
/// `cluster_dns`/`cluster_domain` override the server's published settings when given.
pub fn node_setup(
    n: &NodeArgs,
    data_dir: &std::path::Path,
    cluster_dns: Option<IpAddr>,
    cluster_domain: Option<&str>,
) -> k8slite_agent::boot::NodeSetup {
    let mut network = k8slite_agent::network::NetworkOptions::new();
    network.backend = n.network_backend.clone();
    network.mtu = n.network_mtu;
    network.tx_checksum_offload = !n.vxlan_disable_checksum_offload;
    network.cluster_dns = cluster_dns;
    network.cluster_domain = cluster_domain.map(str::to_string);
    k8slite_agent::boot::NodeSetup {
        data_dir: data_dir.to_path_buf(),
        run_dir: n.run_dir.clone(),
        container_runtime_endpoint: n.container_runtime_endpoint.clone(),
        kubelet_port: n.kubelet_port,
        pod_log_dir: n.pod_log_dir.clone(),
        resolv_conf: n.resolv_conf.clone(),
        network,
    }
}

fn read_token(a: &AgentArgs) -> anyhow::Result<String> {
    Ok(match (&a.token, &a.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading --token-file {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => bail!("--token or --token-file is required to join"),
    })
}

/// Run `k8slite agent`.
pub fn run(a: AgentArgs) -> anyhow::Result<()> {
    let token = read_token(&a)?;
    let default_ip = match a.runtime {
        RuntimeKind::Fake => IpAddr::from([127, 0, 0, 1]),
        RuntimeKind::Containerd => k8slite_server::detect_node_ip(),
    };
    let mut cfg = node_config(&a.node, default_ip)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("k8slite-agent")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            crate::wait_for_signal().await;
            tracing::info!("shutting down");
            signals.cancel();
        });
        if a.runtime == RuntimeKind::Containerd {
            let setup = node_setup(
                &a.node,
                &a.data_dir,
                a.cluster_dns,
                a.cluster_domain.as_deref(),
            );
            return k8slite_agent::boot::run_joined(&a.join, &token, cfg, setup, shutdown)
                .await
                .context("agent failed");
        }
        cfg.resources = k8slite_agent::NodeResources {
            cpu: a.node_cpu.clone(),
            memory: a.node_memory.clone(),
            pods: a.node.max_pods,
            ephemeral_storage: a.node_ephemeral_storage.clone(),
        };
        let Some(client) = k8slite_agent::connect::connect_with_retry(&a.join, &token, &shutdown)
            .await
            .context("joining the cluster")?
        else {
            return Ok(());
        };
        match a.fake_nodes {
            Some(n) => k8slite_agent::run_fake_nodes(client, cfg, n, shutdown).await,
            None => k8slite_agent::run_fake_node(client, cfg, shutdown).await,
        }
        .context("agent failed")
    })
}
