//! A node on real containerd, start to finish: host preparation, containerd (supervised or an
//! existing endpoint), the images directory and k8slite's pause image, the node's certificates,
//! the CNI config once the node has a pod CIDR, the kubelet API, then [`crate::run`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8slite_runtime::containerd::{ContainerdConfig, Supervisor};
use k8slite_runtime::images::ImportDir;
use k8slite_runtime::{ContainerRuntime, CriRuntime};
use tokio_util::sync::CancellationToken;

use crate::certs::{self, NodeCertSpec};
use crate::connect::{self, JoinOptions};
use crate::{AgentConfig, Error, PodNetwork, Result, host, kubelet, pods, volumes};

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
    /// This node's network settings over the server's (cluster DNS address and domain, network
    /// backend, MTU, …).
    pub network: crate::network::NetworkOptions,
}

impl NodeSetup {
    /// `<data-dir>/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::Config(format!("{what}: {e}"))
}

/// The container runtime: k8slite's own supervised containerd, or an existing endpoint.
async fn start_runtime(
    setup: &NodeSetup,
    extra_path: Vec<PathBuf>,
    shutdown: &CancellationToken,
) -> Result<(CriRuntime, PathBuf, Option<Supervisor>)> {
    if let Some(ep) = &setup.container_runtime_endpoint {
        let rt = CriRuntime::connect(&ep.to_string_lossy()).map_err(|source| Error::Runtime {
            what: format!("connecting to the container runtime at {}", ep.display()),
            source,
        })?;
        return Ok((rt, ep.clone(), None));
    }
    let mut cfg = ContainerdConfig::new(&setup.data_dir, &setup.run_dir);
    cfg.extra_path = extra_path;
    cfg.cni_conf_dir = k8slite_network::cni::conf_dir(&setup.data_dir);
    let sup = Supervisor::start(cfg, shutdown.clone())
        .await
        .map_err(|e| Error::Config(format!("starting containerd: {e}")))?;
    let rt = sup.runtime().map_err(|source| Error::Runtime {
        what: "connecting to containerd".into(),
        source,
    })?;
    let socket = sup.socket().to_path_buf();
    Ok((rt, socket, Some(sup)))
}

/// k8slite's pause image, then every tarball of the images directory (a first pass before
/// any pod starts, then watched).
async fn import_images(
    socket: &std::path::Path,
    images_dir: PathBuf,
    shutdown: &CancellationToken,
) {
    match k8slite_runtime::images::connect(socket).await {
        Ok(backend) => {
            match k8slite_runtime::images::import_pause_image(
                &backend,
                k8slite_runtime::PAUSE_IMAGE,
                k8slite_runtime::pause_binary(),
            )
            .await
            {
                Ok(_) => tracing::debug!(image = k8slite_runtime::PAUSE_IMAGE, "pause image ready"),
                Err(e) => tracing::error!("importing the pause image: {e}"),
            }
            let mut dir = ImportDir::new(socket, images_dir);
            if let Err(e) = dir.scan(&backend).await {
                tracing::warn!("importing images: {e}");
            }
            tokio::spawn(dir.run(shutdown.clone()));
        }
        Err(e) => tracing::error!("connecting to containerd's image service: {e}"),
    }
}

/// Join the server at `url` with `token` and run this machine as a node on containerd until
/// `shutdown`.
pub async fn run_joined(
    url: &str,
    token: &str,
    mut cfg: AgentConfig,
    setup: NodeSetup,
    shutdown: CancellationToken,
) -> Result<()> {
    let agent_dir = setup.agent_dir();
    for d in [&agent_dir, &agent_dir.join("images"), &setup.pod_log_dir] {
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    let mut net_opts = setup.network.clone();
    net_opts.resolv_conf = setup.resolv_conf.clone();
    if net_opts.state_dir.is_none() {
        net_opts.state_dir = Some(agent_dir.join("network"));
    }
    // The cluster DNS first, from the settings and records the last run saved: pods on this
    // node keep resolving while the rest starts (and while the API server is unreachable).
    // Whatever DNS server runs answers until this function returns.
    let dns_until = CancellationToken::new();
    let _dns_until = dns_until.clone().drop_guard();
    let early_dns = crate::network::start_early_dns(&net_opts, &dns_until).await;
    let prep = k8slite_network::prepare(
        &k8slite_network::host::RealHost,
        &k8slite_network::PrepOptions::new(&setup.run_dir),
    )
    .map_err(|e| Error::Config(format!("preparing the host network: {e}")))?;
    for w in &prep.warnings {
        tracing::warn!("{w}");
    }
    let (runtime, socket, _supervisor) =
        start_runtime(&setup, prep.path_dirs.clone(), &shutdown).await?;
    let version = runtime
        .wait_ready(Duration::from_secs(120))
        .await
        .map_err(|source| Error::Runtime {
            what: "waiting for the container runtime".into(),
            source,
        })?;
    tracing::info!(runtime = %version.runtime_name, version = %version.runtime_version, "container runtime ready");
    import_images(&socket, agent_dir.join("images"), &shutdown).await;

    let opts = JoinOptions {
        server: url.to_string(),
        token: token.to_string(),
        spec: NodeCertSpec {
            node_name: cfg.node_name.clone(),
            addresses: vec![cfg.node_ip.to_string()],
        },
        certs_dir: certs::certs_dir(&setup.data_dir),
    };
    let Some(joined) = connect::join_with_retry(&opts, &shutdown).await? else {
        return Ok(());
    };
    net_opts.iptables = prep.iptables.clone();
    let Some(cluster) = crate::network::load_settings(&joined.client, &net_opts, &shutdown).await?
    else {
        return Ok(());
    };
    tracing::info!(
        backend = %cluster.backend,
        cluster_cidr = %cluster.cluster_cidr,
        service_cidr = %cluster.service_cidr,
        cluster_dns = %cluster.cluster_dns,
        "cluster network settings"
    );
    let node_network = Arc::new(crate::network::NodeNetwork::new(
        net_opts,
        cluster.clone(),
        cfg.node_name.clone(),
        cfg.node_ip,
    )?);
    let read = |f: &str| {
        let p = joined.certs.path(f);
        std::fs::read_to_string(&p).map_err(io(format!("reading {}", p.display())))
    };
    let kubelet_cfg = kubelet::KubeletServerConfig {
        addr: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), setup.kubelet_port),
        serving_cert_pem: read(certs::SERVING_CERT)?,
        serving_key_pem: read(certs::SERVING_KEY)?,
        client_ca_pem: read(certs::CLIENT_CA)?,
        log_root: setup.pod_log_dir.clone(),
    };
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(runtime);
    {
        let (rt, token) = (runtime.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = kubelet::serve(kubelet_cfg, rt, token).await {
                tracing::error!("kubelet API: {e}");
            }
        });
    }

    let host_cfg = host::HostConfig::real(&setup.data_dir);
    let sample = host::sample(&host_cfg, cfg.resources.pods);
    let milli = |k: &str| {
        sample
            .allocatable
            .get(k)
            .and_then(k8slite_api::quantity::Quantity::from_k8s)
            .map_or(0, |q| q.milli_i64())
    };
    let host_dns = std::fs::read_to_string(&setup.resolv_conf)
        .map(|t| pods::spec::parse_resolv_conf(&t))
        .unwrap_or_default();
    cfg.pods.runtime_scheme = "containerd".into();
    cfg.pods.node = pods::spec::NodeContext {
        cluster_dns: vec![cluster.cluster_dns.to_string()],
        cluster_domain: cluster.cluster_domain.clone(),
        log_root: setup.pod_log_dir.clone(),
        pods_dir: agent_dir.join("pods"),
        cgroup_root: format!("/k8slite-{}", cfg.node_name),
        host_dns,
        allocatable_cpu_milli: milli("cpu"),
        allocatable_memory: milli("memory") / 1000,
    };
    let storage_opts = k8slite_storage::Options {
        node_allocatable: sample
            .allocatable
            .iter()
            .filter_map(|(k, v)| {
                k8slite_api::quantity::Quantity::from_k8s(v).map(|q| (k.clone(), q))
            })
            .collect(),
        ..k8slite_storage::Options::default()
    };
    let volumes = volumes::PodVolumes::new(&setup.data_dir, joined.client.clone(), storage_opts);
    if let Err(e) = volumes.share_pods_dir() {
        tracing::warn!("mount propagation into pods will not work: {e}");
    }
    cfg.volumes = Some(Arc::new(volumes));
    cfg.host = Some(host_cfg);
    cfg.kubelet_port = setup.kubelet_port;
    let mut pod_network = PodNetwork::new(&setup.data_dir);
    // Pod egress is masqueraded by the service proxy's rules (`--random-fully`), never pod to
    // pod across nodes, which the bridge plugin's ipMasq would do.
    pod_network.ip_masq = false;
    cfg.pod_network = Some(pod_network);
    node_network.hand_over_dns(early_dns, dns_until.clone());
    cfg.node_network = Some(node_network.clone());
    let net_task = tokio::spawn(node_network.run(joined.client.clone(), shutdown.clone()));
    let result = crate::run(joined.client, cfg, runtime, shutdown).await;
    if let Err(e) = net_task.await {
        tracing::warn!("network task: {e}");
    }
    result
}
