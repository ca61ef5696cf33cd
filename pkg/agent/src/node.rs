//! The `Node` object: registration (labels, taints, capacity, addresses, conditions, node info)
//! and the status loop (computed every `node_status_update_frequency`, written when it changed
//! or `node_status_report_frequency` passed, like the kubelet).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use k8slite_runtime::ContainerRuntime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::{AgentConfig, Error, KUBELET_VERSION, Result};

/// `kubernetes.io/arch` value of this machine (Go's GOARCH names).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Seconds-precision now (what the API stores).
pub(crate) fn now_secs() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// The node object an agent registers (metadata and spec; status from [`node_status`]).
pub fn desired_node(cfg: &AgentConfig) -> Node {
    let arch = go_arch();
    let mut labels = BTreeMap::from([
        ("beta.kubernetes.io/arch".to_string(), arch.to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
        ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
    ]);
    labels.extend(cfg.node_labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!cfg.node_taints.is_empty()).then(|| cfg.node_taints.clone()),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// Facts about the node that do not change while it runs.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// Container runtime version (`fake://0.1.0`, `containerd://1.6.20`).
    pub runtime_version: String,
    /// Kernel version.
    pub kernel_version: String,
    /// OS image (PRETTY_NAME of /etc/os-release).
    pub os_image: String,
    /// Machine id (empty: one made up from the node name, for simulated nodes).
    pub machine_id: String,
    /// System UUID (empty: made up from the node name).
    pub system_uuid: String,
    /// Boot id (empty: made up from the node name).
    pub boot_id: String,
}

impl NodeFacts {
    /// Read them from this machine (through `cfg.host` when set) and `runtime`.
    pub async fn gather(cfg: &AgentConfig, runtime: &dyn ContainerRuntime) -> Self {
        let runtime_version = match runtime.version().await {
            Ok(v) => format!("{}://{}", v.runtime_name, v.runtime_version),
            Err(e) => {
                tracing::warn!("runtime version: {e}");
                String::new()
            }
        };
        let reader: &dyn crate::host::HostReader = match &cfg.host {
            Some(h) => h.reader.as_ref(),
            None => &crate::host::RealHost,
        };
        let f = crate::host::facts(reader);
        let (machine_id, system_uuid, boot_id) = match cfg.host {
            Some(_) => (f.machine_id, f.system_uuid, f.boot_id),
            None => Default::default(),
        };
        Self {
            runtime_version,
            kernel_version: f.kernel_version,
            os_image: f.os_image,
            machine_id,
            system_uuid,
            boot_id,
        }
    }
}

/// Most images reported in `status.images` (the kubelet's default).
pub const MAX_STATUS_IMAGES: usize = 50;

/// What the status loop observed this round on a real host: capacity and pressure, and the
/// runtime's images. Empty for simulated nodes.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Capacity, allocatable and pressure from the host.
    pub host: Option<crate::host::HostSample>,
    /// `status.images`.
    pub images: Option<Vec<ContainerImage>>,
    /// Why the node's network is not ready (the runtime's NetworkReady condition, then this
    /// node's pod network devices and routes); `None` when it is.
    pub network_not_ready: Option<String>,
}

/// `status.images` from the runtime's images: the largest [`MAX_STATUS_IMAGES`] (as the
/// kubelet orders them), names = digests then tags.
pub fn status_images(mut images: Vec<k8slite_runtime::Image>) -> Vec<ContainerImage> {
    images.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
    images
        .into_iter()
        .take(MAX_STATUS_IMAGES)
        .map(|i| {
            let mut names: Vec<String> = i.repo_digests.into_iter().chain(i.repo_tags).collect();
            if names.is_empty() {
                names.push(i.id);
            }
            ContainerImage {
                names: Some(names),
                size_bytes: i64::try_from(i.size).ok(),
            }
        })
        .collect()
}

/// Observe the host and the runtime's images when `cfg.host` is set (nothing otherwise).
pub async fn observe(cfg: &AgentConfig, runtime: &dyn ContainerRuntime) -> Observed {
    let Some(host) = &cfg.host else {
        return Observed::default();
    };
    let images = match runtime.list_images().await {
        Ok(i) => Some(status_images(i)),
        Err(e) => {
            tracing::warn!("listing images for the node status: {e}");
            None
        }
    };
    // As the kubelet: the node is not Ready while the runtime's network is not, and (ours)
    // while this node's pod network devices and routes are not programmed.
    let network_not_ready = match runtime.network_not_ready().await {
        Ok(Some(why)) => Some(format!("container runtime network not ready: {why}")),
        Ok(None) => cfg.node_network.as_ref().and_then(|n| n.not_ready()),
        Err(e) => Some(format!("container runtime status check failed: {e}")),
    };
    Observed {
        host: Some(crate::host::sample(host, cfg.resources.pods)),
        images,
        network_not_ready,
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: None,
        last_transition_time: None,
    }
}

fn fake_id(name: &str, salt: u8) -> String {
    use std::hash::{Hash, Hasher};
    let mut out = String::new();
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (name, salt, i).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The node status the agent reports, given the status currently stored (for transition
/// times) and `now` (heartbeat). A simulated node's: nothing observed.
pub fn node_status(
    cfg: &AgentConfig,
    facts: &NodeFacts,
    current: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    node_status_observed(cfg, facts, &Observed::default(), current, now)
}

fn pressure(type_: &str, on: bool) -> NodeCondition {
    let (status, reason, message) = match (type_, on) {
        ("MemoryPressure", false) => (
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("MemoryPressure", true) => (
            "True",
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        ("DiskPressure", false) => (
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        ("DiskPressure", true) => (
            "True",
            "KubeletHasDiskPressure",
            "kubelet has disk pressure",
        ),
        (_, false) => (
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        (_, true) => (
            "True",
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
    };
    condition(type_, status, reason, message)
}

/// [`node_status`] with what was `observed` on a real host (capacity, pressure, images).
pub fn node_status_observed(
    cfg: &AgentConfig,
    facts: &NodeFacts,
    observed: &Observed,
    current: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let r = &cfg.resources;
    let (capacity, allocatable, mem_p, disk_p, pid_p) = match &observed.host {
        Some(h) => (
            h.capacity.clone(),
            h.allocatable.clone(),
            h.memory_pressure,
            h.disk_pressure,
            h.pid_pressure,
        ),
        None => {
            let resources = BTreeMap::from([
                ("cpu".to_string(), Quantity(r.cpu.clone())),
                (
                    "ephemeral-storage".to_string(),
                    Quantity(r.ephemeral_storage.clone()),
                ),
                ("hugepages-1Gi".to_string(), Quantity("0".into())),
                ("hugepages-2Mi".to_string(), Quantity("0".into())),
                ("memory".to_string(), Quantity(r.memory.clone())),
                ("pods".to_string(), Quantity(r.pods.to_string())),
            ]);
            (resources.clone(), resources, false, false, false)
        }
    };
    let mut conditions = vec![
        pressure("MemoryPressure", mem_p),
        pressure("DiskPressure", disk_p),
        pressure("PIDPressure", pid_p),
        match &observed.network_not_ready {
            None => condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            ),
            Some(why) => condition("Ready", "False", "KubeletNotReady", why),
        },
    ];
    let old = current.and_then(|s| s.conditions.as_ref());
    for c in &mut conditions {
        let prev = old.and_then(|o| o.iter().find(|p| p.type_ == c.type_));
        c.last_heartbeat_time = Some(Time(now));
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => None,
        }
        .or(Some(Time(now)));
    }
    let arch = go_arch();
    let id = |v: &str, salt: u8| {
        if v.is_empty() {
            fake_id(&cfg.node_name, salt)
        } else {
            v.to_string()
        }
    };
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.node_name.clone(),
            },
        ]),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(cfg.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch.into(),
            boot_id: id(&facts.boot_id, 1),
            container_runtime_version: facts.runtime_version.clone(),
            kernel_version: facts.kernel_version.clone(),
            kube_proxy_version: KUBELET_VERSION.into(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: id(&facts.machine_id, 2),
            operating_system: "linux".into(),
            os_image: facts.os_image.clone(),
            system_uuid: id(&facts.system_uuid, 3),
            swap: None,
        }),
        images: observed.images.clone(),
        ..NodeStatus::default()
    }
}

/// Whether two statuses differ in anything but heartbeat times.
pub fn status_changed(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        if let Some(cs) = s.conditions.as_mut() {
            for c in cs.iter_mut() {
                c.last_heartbeat_time = None;
            }
            cs.sort_by(|a, b| a.type_.cmp(&b.type_));
        }
        (
            s.capacity,
            s.allocatable,
            s.addresses,
            s.conditions,
            s.node_info,
            s.daemon_endpoints,
            s.images,
        )
    };
    strip(old) != strip(new)
}

async fn patch_status(api: &Api<Node>, name: &str, status: &NodeStatus) -> Result<Node> {
    let body = serde_json::json!({ "status": status });
    let (pp, patch) = (PatchParams::default(), Patch::Merge(&body));
    crate::retry_conflict(|| api.patch_status(name, &pp, &patch))
        .await
        .map_err(Error::kube(format!("updating the status of node {name}")))
}

/// Pod CIDR used until the server assigns one (`spec.podCIDR`): a /24 of 10.42.0.0/16 chosen by
/// a hash of the node name, so simulated nodes rarely share pod IPs.
pub fn fallback_pod_cidr(node_name: &str) -> String {
    // FNV-1a: stable across processes and builds.
    let h = node_name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("10.42.{}.0/24", h % 256)
}

/// Hand the node's pod CIDR to the runtime and, when it was assigned by the server and
/// `cfg.pod_network` is set, set up the node's pod network devices for it
/// (`cfg.node_network`) and write the CNI conflist with their MTU (before the runtime is told,
/// so containerd finds the network when it reloads). With the network backend `none` no
/// conflist is written: another CNI provides the pod network.
pub async fn apply_pod_cidr(
    cfg: &AgentConfig,
    runtime: &dyn ContainerRuntime,
    cidr: &str,
    assigned: bool,
) {
    if let (true, Some(net)) = (assigned, &cfg.pod_network) {
        let mtu = match (&cfg.node_network, cidr.parse::<ipnet::IpNet>()) {
            (None, _) => Some(None),
            (Some(_), Err(e)) => {
                tracing::warn!(node = %cfg.node_name, "pod CIDR {cidr}: {e}");
                Some(None)
            }
            (Some(nn), Ok(c)) => match nn.on_pod_cidr(c.trunc()).await {
                Ok(Some(mtu)) => Some(Some(mtu)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(node = %cfg.node_name, "pod CIDR {cidr}: {e}");
                    Some(None)
                }
            },
        };
        if let Some(mtu) = mtu
            && let Err(e) = net.write_conflist(cidr, mtu)
        {
            tracing::warn!(node = %cfg.node_name, "pod CIDR {cidr}: {e}");
        }
    }
    if let Err(e) = runtime.update_pod_cidr(cidr).await {
        tracing::warn!("pod CIDR {cidr}: {e}");
    }
}

/// Register the node (create it, or update labels of an existing one) and write its status.
pub async fn register(
    client: &kube::Client,
    cfg: &AgentConfig,
    runtime: &dyn ContainerRuntime,
) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let facts = NodeFacts::gather(cfg, runtime).await;
    let desired = desired_node(cfg);
    let mut delay = Duration::from_millis(500);
    let node = loop {
        let attempt = match api.create(&PostParams::default(), &desired).await {
            Ok(n) => Ok(n),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let body = serde_json::json!({ "metadata": {
                    "labels": desired.metadata.labels,
                    "annotations": desired.metadata.annotations,
                }});
                api.patch(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&body),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match attempt {
            Ok(n) => break n,
            Err(e) => {
                tracing::warn!(node = %cfg.node_name, "registering the node: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    };
    let cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .unwrap_or_else(|| fallback_pod_cidr(&cfg.node_name));
    let assigned = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some();
    apply_pod_cidr(cfg, runtime, &cidr, assigned).await;
    let mut delay = Duration::from_millis(500);
    loop {
        let observed = observe(cfg, runtime).await;
        let status = node_status_observed(cfg, &facts, &observed, node.status.as_ref(), now_secs());
        match patch_status(&api, &cfg.node_name, &status).await {
            Ok(n) => {
                // The server's node IPAM may have assigned a pod CIDR meanwhile.
                if let Some(c) = n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
                    apply_pod_cidr(cfg, runtime, c, true).await;
                }
                return Ok(n);
            }
            Err(e) => {
                tracing::warn!(node = %cfg.node_name, "{e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Keep the node status up to date until `shutdown`.
pub async fn run_status(
    client: kube::Client,
    cfg: Arc<AgentConfig>,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let facts = NodeFacts::gather(&cfg, runtime.as_ref()).await;
    let mut last_report = Instant::now();
    let mut pod_cidr: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.node_status_update_frequency) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        let node = match api.get(&cfg.node_name).await {
            Ok(n) => n,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                tracing::warn!(node = %cfg.node_name, "node object deleted; registering again");
                match register(&client, &cfg, runtime.as_ref()).await {
                    Ok(_) => last_report = Instant::now(),
                    Err(e) => tracing::warn!("{e}"),
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(node = %cfg.node_name, "reading the node: {e}");
                continue;
            }
        };
        let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
        if cidr.is_some() && cidr != pod_cidr {
            if let Some(c) = cidr.as_deref() {
                apply_pod_cidr(&cfg, runtime.as_ref(), c, true).await;
            }
            pod_cidr = cidr;
        }
        let observed = observe(&cfg, runtime.as_ref()).await;
        let status =
            node_status_observed(&cfg, &facts, &observed, node.status.as_ref(), now_secs());
        if status_changed(node.status.as_ref(), &status)
            || last_report.elapsed() >= cfg.node_status_report_frequency
        {
            match patch_status(&api, &cfg.node_name, &status).await {
                Ok(_) => last_report = Instant::now(),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            runtime_version: "fake://0.1.0".into(),
            kernel_version: "6.1.0".into(),
            os_image: "Debian".into(),
            ..NodeFacts::default()
        }
    }

    #[test]
    fn registered_node_has_kubelet_labels_and_status() {
        let mut cfg = AgentConfig::new("node-1");
        cfg.node_labels.insert("zone".into(), "a".into());
        cfg.node_taints
            .push(crate::parse_taint("k=v:NoSchedule").expect("taint"));
        let n = desired_node(&cfg);
        let labels = n.metadata.labels.expect("labels");
        assert_eq!(labels["kubernetes.io/hostname"], "node-1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], go_arch());
        assert_eq!(labels["zone"], "a");
        assert!(!labels.keys().any(|k| k.starts_with("node-role")));
        assert_eq!(n.spec.and_then(|s| s.taints).map(|t| t.len()), Some(1));

        let now = now_secs();
        let s = node_status(&cfg, &facts(), None, now);
        let cap = s.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "8Gi");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(s.allocatable, s.capacity);
        let ready = s
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        let info = s.node_info.as_ref().expect("nodeInfo");
        assert_eq!(info.kubelet_version, "v1.33.0+k8slite");
        let addrs: Vec<_> = s
            .addresses
            .as_ref()
            .expect("addresses")
            .iter()
            .map(|a| (a.type_.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(addrs, [("InternalIP", "127.0.0.1"), ("Hostname", "node-1")]);
    }

    #[test]
    fn heartbeat_alone_is_no_change_and_transitions_keep_their_time() {
        let cfg = AgentConfig::new("n");
        let t0 = Timestamp::from_second(1_700_000_000).expect("ts");
        let t1 = Timestamp::from_second(1_700_000_100).expect("ts");
        let s0 = node_status(&cfg, &facts(), None, t0);
        let s1 = node_status(&cfg, &facts(), Some(&s0), t1);
        assert!(!status_changed(Some(&s0), &s1));
        let ready = |s: &NodeStatus| {
            s.conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned())
                .expect("Ready")
        };
        assert_eq!(ready(&s1).last_transition_time, Some(Time(t0)));
        assert_eq!(ready(&s1).last_heartbeat_time, Some(Time(t1)));
        // The node lifecycle controller marked it Unknown: the agent's status differs.
        let mut unknown = s1.clone();
        for c in unknown.conditions.iter_mut().flatten() {
            if c.type_ == "Ready" {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
            }
        }
        let s2 = node_status(&cfg, &facts(), Some(&unknown), t1);
        assert!(status_changed(Some(&unknown), &s2));
        assert_eq!(ready(&s2).last_transition_time, Some(Time(t1)));
    }

    #[test]
    fn host_status_reports_capacity_pressure_ids_and_images() {
        use crate::host::{FakeHost, FsStats, HostConfig};
        let host = FakeHost {
            fs: Some(FsStats {
                total_bytes: 10 << 30,
                available_bytes: 1 << 28,
            }),
            ..FakeHost::default()
        }
        .with("/sys/devices/system/cpu/online", "0-1")
        .with(
            "/proc/meminfo",
            "MemTotal: 2048000 kB\nMemAvailable: 50000 kB\n",
        );
        let mut cfg = AgentConfig::new("edge");
        cfg.kubelet_port = 10251;
        cfg.host = Some(HostConfig {
            reader: Arc::new(host),
            data_dir: "/data".into(),
            cpu: None,
            memory: None,
            ephemeral_storage: None,
        });
        let f = NodeFacts {
            machine_id: "m-1".into(),
            boot_id: "b-1".into(),
            system_uuid: "u-1".into(),
            ..facts()
        };
        let images: Vec<k8slite_runtime::Image> = (0..60u64)
            .map(|i| k8slite_runtime::Image {
                id: format!("sha256:{i:02}"),
                repo_tags: vec![format!("docker.io/library/img{i}:latest")],
                repo_digests: vec![format!("docker.io/library/img{i}@sha256:{i:02}")],
                size: i * 1000,
                uid: None,
                username: String::new(),
            })
            .collect();
        let observed = Observed {
            host: Some(crate::host::sample(cfg.host.as_ref().expect("host"), 110)),
            images: Some(status_images(images)),
            network_not_ready: None,
        };
        let not_ready = Observed {
            network_not_ready: Some(
                "container runtime network not ready: NetworkReady=false".into(),
            ),
            ..observed.clone()
        };
        let s = node_status_observed(&cfg, &f, &not_ready, None, now_secs());
        let ready = s
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned())
            .expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert!(
            ready
                .message
                .as_deref()
                .is_some_and(|m| m.contains("network not ready")),
            "{ready:?}"
        );
        let s = node_status_observed(&cfg, &f, &observed, None, now_secs());
        let cap = s.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "2048000Ki");
        assert_eq!(
            s.allocatable.as_ref().expect("alloc")["memory"].0,
            "1945600Ki"
        );
        let cond = |t: &str| {
            s.conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == t).cloned())
                .expect("condition")
        };
        let m = cond("MemoryPressure");
        assert_eq!(
            (m.status.as_str(), m.reason.as_deref()),
            ("True", Some("KubeletHasInsufficientMemory"))
        );
        let d = cond("DiskPressure");
        assert_eq!(
            (d.status.as_str(), d.reason.as_deref()),
            ("True", Some("KubeletHasDiskPressure"))
        );
        assert_eq!(cond("PIDPressure").status, "False");
        assert_eq!(cond("Ready").reason.as_deref(), Some("KubeletReady"));
        let info = s.node_info.as_ref().expect("info");
        assert_eq!(
            (
                info.machine_id.as_str(),
                info.boot_id.as_str(),
                info.system_uuid.as_str()
            ),
            ("m-1", "b-1", "u-1")
        );
        assert_eq!(
            s.daemon_endpoints
                .as_ref()
                .and_then(|d| d.kubelet_endpoint.as_ref())
                .map(|e| e.port),
            Some(10251)
        );
        let imgs = s.images.as_ref().expect("images");
        assert_eq!(imgs.len(), MAX_STATUS_IMAGES);
        assert_eq!(imgs[0].size_bytes, Some(59_000));
        assert_eq!(
            imgs[0].names.as_deref(),
            Some(
                &[
                    "docker.io/library/img59@sha256:59".to_string(),
                    "docker.io/library/img59:latest".to_string()
                ][..]
            )
        );
        // A new image is a change worth writing.
        let mut fewer = observed.clone();
        fewer.images = Some(Vec::new());
        let s2 = node_status_observed(&cfg, &f, &fewer, Some(&s), now_secs());
        assert!(status_changed(Some(&s), &s2));
        // Simulated nodes report no images and made-up ids.
        let plain = node_status(&AgentConfig::new("edge"), &facts(), None, now_secs());
        assert!(plain.images.is_none());
        assert_eq!(
            plain.node_info.expect("info").machine_id,
            fake_id("edge", 2)
        );
    }

    #[tokio::test]
    async fn assigned_pod_cidr_writes_the_conflist() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut cfg = AgentConfig::new("n");
        cfg.pod_network = Some(crate::PodNetwork::new(tmp.path()));
        let rt = k8slite_runtime::FakeRuntime::new();
        let file = tmp.path().join("agent/cni/net.d/10-k8slite.conflist");
        apply_pod_cidr(&cfg, &rt, "10.42.0.0/24", false).await;
        assert!(!file.exists(), "fallback CIDRs are not written");
        apply_pod_cidr(&cfg, &rt, "10.42.5.0/24", true).await;
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("conflist")).expect("json");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.5.0/24"
        );
        assert_eq!(v["plugins"][0]["bridge"], "k8slite0");
    }
}
