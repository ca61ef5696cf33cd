//! The node's part of the cluster network, run inside the agent (no helper pods):
//!
//! - the **overlay** ([`k8slite_network::routes`]): the VXLAN device or host-gw routes that
//!   connect this node's pod CIDR with every other node's, kept in step with the Node objects;
//!   the node publishes its VTEP MAC/IP as annotations on its Node;
//! - the **service proxy** ([`k8slite_network::proxy`]): Services and EndpointSlices rendered into
//!   one atomic `iptables-restore` per sync;
//! - the **cluster DNS** ([`k8slite_network::dns`]): a DNS server on the cluster DNS address,
//!   held by a dummy device on the node, answering from the watch cache.
//!
//! All three read one watch cache ([`cache::Cache`]). The cluster-wide settings (pod and
//! service ranges, DNS address and domain, backend) come from the server's ConfigMap
//! `kube-system/k8slite-network` ([`k8slite_api::cluster_network`]); flags of the agent
//! override them for this node. The settings and a snapshot of the DNS records are kept in
//! [`NetworkOptions::state_dir`] ([`state`]), so that after a restart the DNS answers before
//! the agent has joined ([`start_early_dns`]).

pub mod cache;
pub mod compact;
mod dns;
mod overlay;
mod proxy;
pub mod state;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8slite_api::cluster_network::{CONFIG_MAP, ClusterNetwork, NAMESPACE};
use k8slite_network::routes::{self, Backend, LocalOverlay, Overlay, OverlayConfig, RtNetlink};
use kube::Api;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// The agent's own network settings (flags), over the server's.
#[derive(Clone, Debug)]
pub struct NetworkOptions {
    /// `--network-backend` of this agent (the server's when `None`).
    pub backend: Option<String>,
    /// `--network-mtu` of this agent (the server's, else detected, when `None`).
    pub mtu: Option<u32>,
    /// Leave tx checksum offload on the VXLAN device (off only as a workaround for hosts whose
    /// NIC or kernel corrupts offloaded VXLAN checksums).
    pub tx_checksum_offload: bool,
    /// `--cluster-dns` of this agent (the server's when `None`).
    pub cluster_dns: Option<IpAddr>,
    /// `--cluster-domain` of this agent (the server's when `None`).
    pub cluster_domain: Option<String>,
    /// Prefix of the iptables chains (`K8SLITE`).
    pub chain_prefix: String,
    /// Dummy device holding the cluster DNS address (`k8slite-dns`).
    pub dns_device: String,
    /// Port the DNS server answers on (53).
    pub dns_port: u16,
    /// The node's resolv.conf: its name servers are the DNS server's upstreams.
    pub resolv_conf: PathBuf,
    /// The `iptables` to run (the host preparation's choice; its `-restore`/`-save` siblings
    /// are used too).
    pub iptables: PathBuf,
    /// Where the settings and the DNS records snapshot are kept across restarts
    /// (`<data-dir>/agent/network`; `None`: nothing is kept).
    pub state_dir: Option<PathBuf>,
}

impl NetworkOptions {
    /// Defaults: everything from the server, offload on, chains `K8SLITE`, DNS on
    /// `k8slite-dns` port 53, upstreams from /etc/resolv.conf, `iptables` from PATH.
    pub fn new() -> Self {
        Self {
            backend: None,
            mtu: None,
            tx_checksum_offload: true,
            cluster_dns: None,
            cluster_domain: None,
            chain_prefix: "K8SLITE".into(),
            dns_device: "k8slite-dns".into(),
            dns_port: 53,
            resolv_conf: "/etc/resolv.conf".into(),
            iptables: "iptables".into(),
            state_dir: None,
        }
    }
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Read the server's cluster network settings, retrying until they can be read (or
/// `shutdown`: `None`), with this agent's overrides applied.
pub async fn load_settings(
    client: &kube::Client,
    opts: &NetworkOptions,
    shutdown: &CancellationToken,
) -> Result<Option<ClusterNetwork>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let mut delay = Duration::from_millis(200);
    let cm = loop {
        match api.get_opt(CONFIG_MAP).await {
            Ok(Some(cm)) => break cm,
            Ok(None) => {
                tracing::info!("waiting for the server to publish {NAMESPACE}/{CONFIG_MAP}")
            }
            Err(e) => tracing::warn!("reading {NAMESPACE}/{CONFIG_MAP}: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    let s = ClusterNetwork::from_config_map(&cm)
        .map_err(|e| Error::Config(format!("cluster network settings: {e}")))?;
    if let Some(dir) = opts.state_dir.clone() {
        let saved = s.clone();
        let wrote = tokio::task::spawn_blocking(move || {
            state::save_settings(state::settings_store(&dir), &saved)
        })
        .await
        .unwrap_or(false);
        if wrote {
            tracing::info!("cluster network settings saved");
        }
    }
    Ok(Some(with_overrides(s, opts)))
}

/// The server's settings `s` with this agent's flags applied.
pub(crate) fn with_overrides(mut s: ClusterNetwork, opts: &NetworkOptions) -> ClusterNetwork {
    if let Some(b) = &opts.backend {
        s.backend = b.clone();
    }
    if opts.mtu.is_some() {
        s.mtu = opts.mtu;
    }
    if let Some(ip) = opts.cluster_dns {
        s.cluster_dns = ip;
    }
    if let Some(d) = &opts.cluster_domain {
        s.cluster_domain = d.clone();
    }
    s
}

pub use dns::{EarlyDns, start_early as start_early_dns};

/// Where the node's network stands, for its Ready condition.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Progress {
    /// No pod CIDR yet.
    WaitingForPodCidr,
    /// The device is set up; routes to the other nodes are not programmed yet.
    WaitingForRoutes,
    /// Set up and synced once (or nothing to do: backend `none`).
    Ready,
    /// Setting up failed (the message says why).
    Failed(String),
}

/// This node's network: settings, the overlay (once the pod CIDR is known) and its progress.
pub struct NodeNetwork {
    opts: NetworkOptions,
    cluster: ClusterNetwork,
    backend: Backend,
    node_name: String,
    node_ip: IpAddr,
    overlay: tokio::sync::Mutex<Option<Overlay<RtNetlink>>>,
    local: Mutex<Option<(IpNet, LocalOverlay)>>,
    progress: Mutex<Progress>,
    pod_cidr_known: tokio::sync::Notify,
    dns_handoff: Mutex<Option<dns::Handoff>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeNetwork {
    /// The network of node `node_name` at `node_ip` with `cluster` settings.
    pub fn new(
        opts: NetworkOptions,
        cluster: ClusterNetwork,
        node_name: impl Into<String>,
        node_ip: IpAddr,
    ) -> Result<Self> {
        let backend: Backend = cluster.backend.parse().map_err(|_| {
            Error::Config(format!(
                "network backend {:?}: expected vxlan, host-gw or none",
                cluster.backend
            ))
        })?;
        let progress = if backend == Backend::None {
            Progress::Ready
        } else {
            Progress::WaitingForPodCidr
        };
        Ok(Self {
            opts,
            cluster,
            backend,
            node_name: node_name.into(),
            node_ip,
            overlay: tokio::sync::Mutex::new(None),
            local: Mutex::new(None),
            progress: Mutex::new(progress),
            pod_cidr_known: tokio::sync::Notify::new(),
            dns_handoff: Mutex::new(None),
        })
    }

    /// Hand the DNS server started before joining (if any) to [`NodeNetwork::run`], and keep
    /// whatever DNS server it runs answering until `serve_until` (not only until its shutdown:
    /// the agent cancels `serve_until` last, when it exits, so the DNS answers from its last
    /// records while the rest of the agent shuts down).
    pub fn hand_over_dns(&self, early: Option<EarlyDns>, serve_until: CancellationToken) {
        *lock(&self.dns_handoff) = Some(dns::Handoff { early, serve_until });
    }

    /// The cluster settings in force on this node.
    pub fn cluster(&self) -> &ClusterNetwork {
        &self.cluster
    }

    /// The backend in force on this node.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This node's pod CIDR, once known.
    pub fn pod_cidr(&self) -> Option<IpNet> {
        lock(&self.local).as_ref().map(|(c, _)| *c)
    }

    /// The node's pod CIDR is `pod_cidr`: set up the overlay device for it. Returns the MTU
    /// the CNI conflist must use, or `None` when k8slite does not run the pod network
    /// (backend `none`: another CNI writes its own config).
    pub async fn on_pod_cidr(&self, pod_cidr: IpNet) -> Result<Option<u32>> {
        if self.backend == Backend::None {
            *lock(&self.local) = Some((
                pod_cidr,
                LocalOverlay {
                    mtu: 0,
                    vtep_mac: None,
                    vtep_ip: None,
                },
            ));
            self.pod_cidr_known.notify_waiters();
            return Ok(None);
        }
        if let Some((c, l)) = lock(&self.local).as_ref()
            && *c == pod_cidr
        {
            return Ok(Some(l.mtu));
        }
        let mut cfg = OverlayConfig::new(
            self.backend,
            self.node_ip,
            pod_cidr,
            self.cluster.cluster_cidr,
        );
        cfg.mtu = self.cluster.mtu;
        cfg.tx_checksum_offload = self.opts.tx_checksum_offload;
        let mut overlay = Overlay::new(cfg, RtNetlink);
        let local = match overlay.setup().await {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("setting up the {} network: {e}", self.backend);
                *lock(&self.progress) = Progress::Failed(msg.clone());
                return Err(Error::Config(msg));
            }
        };
        tracing::info!(backend = %self.backend, %pod_cidr, mtu = local.mtu, vtep_mac = ?local.vtep_mac, "pod network device ready");
        let mtu = local.mtu;
        *self.overlay.lock().await = Some(overlay);
        *lock(&self.local) = Some((pod_cidr, local));
        {
            let mut p = lock(&self.progress);
            if *p != Progress::Ready {
                *p = Progress::WaitingForRoutes;
            }
        }
        self.pod_cidr_known.notify_waiters();
        Ok(Some(mtu))
    }

    /// Why the node's network is not ready (for the node's Ready condition), `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        match &*lock(&self.progress) {
            Progress::Ready => None,
            Progress::WaitingForPodCidr => {
                Some("network not configured: waiting for the node's pod CIDR".into())
            }
            Progress::WaitingForRoutes => Some(format!(
                "network not configured: {} routes to the other nodes not programmed yet",
                self.backend
            )),
            Progress::Failed(m) => Some(format!("network not configured: {m}")),
        }
    }

    fn set_progress(&self, p: Progress) {
        *lock(&self.progress) = p;
    }

    async fn wait_pod_cidr(&self, shutdown: &CancellationToken) -> Option<(IpNet, LocalOverlay)> {
        loop {
            let notified = self.pod_cidr_known.notified();
            if let Some(l) = lock(&self.local).clone() {
                return Some(l);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    /// Run the overlay's peer sync, the service proxy and (unless disabled) the DNS server
    /// until `shutdown`.
    pub async fn run(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        let cache = cache::Cache::start(&client, &shutdown);
        let mut tasks = tokio::task::JoinSet::new();
        if self.backend != Backend::None {
            tasks.spawn(overlay::run(
                self.clone(),
                client.clone(),
                cache.clone(),
                shutdown.clone(),
            ));
        }
        tasks.spawn(proxy::run(
            self.clone(),
            client.clone(),
            cache.clone(),
            shutdown.clone(),
        ));
        if self.cluster.dns {
            tasks.spawn(dns::run(self.clone(), cache.clone(), shutdown.clone()));
        } else {
            let early = lock(&self.dns_handoff).take().and_then(|h| h.early);
            if let Some(early) = early {
                tracing::info!(
                    "cluster DNS disabled in the cluster settings: stopping the early DNS"
                );
                early.stop().await;
            }
        }
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!("network task failed: {e}");
            }
        }
    }
}

/// The cluster DNS address and service CIDR a pod's resolv.conf and the proxy use.
pub(crate) fn dns_address(n: &NodeNetwork) -> IpAddr {
    n.cluster.cluster_dns
}

/// Why [`next_change`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Something in the cache changed.
    Changed,
    /// The resync period passed.
    Timer,
}

/// Wait for a change in `rx` (or `period`; `None` on shutdown), then let more changes arrive
/// for `settle` so a burst becomes one sync.
pub(crate) async fn next_change(
    rx: &mut tokio::sync::watch::Receiver<cache::Generation>,
    period: Duration,
    settle: Duration,
    shutdown: &CancellationToken,
) -> Option<Woke> {
    let woke = tokio::select! {
        r = rx.changed() => match r {
            Ok(()) => Woke::Changed,
            Err(_) => return None,
        },
        _ = tokio::time::sleep(period) => Woke::Timer,
        _ = shutdown.cancelled() => return None,
    };
    if woke == Woke::Changed {
        tokio::select! {
            _ = tokio::time::sleep(settle) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
    Some(woke)
}

pub(crate) use routes::peers_from_nodes;
