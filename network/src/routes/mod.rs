//! The pod network across nodes: how this node reaches the pod CIDRs of the others.
//!
//! Backends (`--network-backend`):
//! - **vxlan** (default, as k3s): one VXLAN device ([`VXLAN_DEVICE`], VNI 1, UDP 8472, local =
//!   the node IP, learning off, MTU = parent − 50) holding `<own-pod-cidr>.0/32`; per remote
//!   node an onlink route `<remote-pod-cidr> via <remote-pod-cidr>.0 dev k8slite.1 onlink`, a
//!   permanent neighbour `<remote-pod-cidr>.0 lladdr <remote VTEP MAC>` and an FDB entry
//!   `<remote VTEP MAC> dst <remote node IP>` (the commands of the cri-lab's `vxlan-lab.sh`, over
//!   netlink). Each node publishes its VTEP MAC and IP on its Node ([`local_annotations`]).
//! - **host-gw**: a route `<remote-pod-cidr> via <remote node IP>` per remote node (the nodes
//!   share one L2 segment).
//! - **none**: nothing (another CNI does pod networking).
//!
//! Every route installed carries the route protocol [`RTPROT_K8SLITE`], so stale ones are found
//! (after an agent restart too) and removed without touching anybody else's. [`Overlay::sync`]
//! reads what the kernel holds and only fixes differences: a second sync has no effect.
//!
//! All kernel effects go through the [`Netlink`] trait: [`RtNetlink`] is the real one (a netlink
//! socket per call, opened in the calling thread's network namespace), [`RecordingNetlink`] an
//! in-memory kernel for unit tests.

mod diff;
mod dummy;
mod fake;
mod msg;
mod nl;
mod overlay;
mod rtnl;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

pub use diff::SyncReport;
pub use dummy::{ensure_dummy_address, remove_dummy};
pub use fake::{NetState, NlEffect, RecordingNetlink};
pub use nl::{
    Address, FdbEntry, Link, LinkKind, MacAddr, Neighbour, Netlink, Route, VxlanAttrs, VxlanSpec,
};
pub use overlay::Overlay;
pub use rtnl::RtNetlink;

/// Annotation on a Node: the MAC address of its VXLAN device (VTEP).
pub const VTEP_MAC_ANNOTATION: &str = "network.k8slite.io/vtep-mac";
/// Annotation on a Node: the IP address its VXLAN device sends from (the node IP).
pub const VTEP_IP_ANNOTATION: &str = "network.k8slite.io/vtep-ip";
/// Annotation on a Node: the backend its agent runs.
pub const BACKEND_ANNOTATION: &str = "network.k8slite.io/backend";
/// Default name of the VXLAN device (`flannel.1` in flannel).
pub const VXLAN_DEVICE: &str = "k8slite.1";
/// Default VXLAN UDP port (the Linux kernel's and flannel's, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;
/// Default VXLAN network identifier.
pub const VXLAN_VNI: u32 = 1;
/// Route protocol number of the routes k8slite installs (`ip route show proto 117`); not one
/// of the numbers in iproute2's `rt_protos`.
pub const RTPROT_K8SLITE: u8 = 117;
/// Bytes VXLAN adds over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// Bytes VXLAN adds over IPv6.
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// Errors of the cross-node pod network.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// `--network-backend` names no backend.
    #[error("unknown network backend {0:?} (expected vxlan, host-gw or none)")]
    UnknownBackend(String),
    /// No link holds the node IP (so neither the VXLAN parent nor the MTU is known).
    #[error("no network interface holds the node IP {0}")]
    NodeIpNotFound(IpAddr),
    /// A MAC address does not parse.
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
    /// A value is unusable.
    #[error("{what}: {reason}")]
    Invalid {
        /// The value.
        what: String,
        /// Why.
        reason: String,
    },
    /// A netlink request failed.
    #[error("netlink: {what}")]
    Netlink {
        /// The request.
        what: String,
        /// Cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// The kernel answered something we cannot use.
    #[error("netlink: {what}: {reason}")]
    Unexpected {
        /// The request.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// Something the host must provide is missing.
    #[error("prerequisite missing: {0}")]
    Prerequisite(String),
    /// A command failed to start.
    #[error("running {what}")]
    Spawn {
        /// The command.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{what}: {stderr}")]
    Command {
        /// The command.
        what: String,
        /// Its standard error.
        stderr: String,
    },
}

/// Result of the cross-node pod network.
pub type Result<T, E = RoutesError> = std::result::Result<T, E>;

/// How pod CIDRs of other nodes are reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// One VXLAN device, per remote node a route, neighbour and FDB entry.
    #[default]
    Vxlan,
    /// Routes via the other nodes' IPs (one L2 segment).
    HostGw,
    /// Nothing: another CNI does it.
    None,
}

impl Backend {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::None => "none",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = RoutesError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" | "hostgw" | "host_gw" => Ok(Backend::HostGw),
            "none" => Ok(Backend::None),
            _ => Err(RoutesError::UnknownBackend(s.into())),
        }
    }
}

/// What this node's overlay is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayConfig {
    /// The backend.
    pub backend: Backend,
    /// This node's IP (its InternalIP): the VXLAN local address, and how the MTU is detected.
    pub node_ip: IpAddr,
    /// This node's pod CIDR.
    pub pod_cidr: IpNet,
    /// The cluster CIDR (all pod CIDRs).
    pub cluster_cidr: IpNet,
    /// `--network-mtu`: the pod MTU, instead of the detected one.
    pub mtu: Option<u32>,
    /// Name of the VXLAN device.
    pub vxlan_device: String,
    /// VXLAN UDP port.
    pub vxlan_port: u16,
    /// VXLAN network identifier.
    pub vni: u32,
    /// Leave tx checksum offload on the VXLAN device (default). Off runs
    /// `ethtool -K <dev> tx-checksum-ip-generic off` (flannel's workaround for a kernel/NIC bug;
    /// it cut throughput from 13.6 to 2.9 Gbit/s in the lab).
    pub tx_checksum_offload: bool,
}

impl OverlayConfig {
    /// Defaults: device [`VXLAN_DEVICE`], port [`VXLAN_PORT`], VNI [`VXLAN_VNI`], checksum
    /// offload on, MTU detected.
    pub fn new(backend: Backend, node_ip: IpAddr, pod_cidr: IpNet, cluster_cidr: IpNet) -> Self {
        Self {
            backend,
            node_ip,
            pod_cidr: pod_cidr.trunc(),
            cluster_cidr: cluster_cidr.trunc(),
            mtu: None,
            vxlan_device: VXLAN_DEVICE.into(),
            vxlan_port: VXLAN_PORT,
            vni: VXLAN_VNI,
            tx_checksum_offload: true,
        }
    }
}

/// Another node, as this node needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Node name.
    pub name: String,
    /// Its IP (InternalIP; the VXLAN tunnel endpoint and the host-gw gateway).
    pub node_ip: IpAddr,
    /// Its pod CIDR.
    pub pod_cidr: IpNet,
    /// Its VTEP MAC ([`VTEP_MAC_ANNOTATION`]), once it has published one.
    pub vtep_mac: Option<String>,
}

/// What [`Overlay::setup`] found or made on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalOverlay {
    /// The pod MTU (the CNI conflist uses it).
    pub mtu: u32,
    /// MAC of the VXLAN device (vxlan only).
    pub vtep_mac: Option<String>,
    /// IP the VXLAN device sends from (vxlan only).
    pub vtep_ip: Option<IpAddr>,
}

/// The other nodes as peers: skips `local_node`, nodes without a pod CIDR and nodes without an
/// InternalIP. The node IP is the InternalIP of the pod CIDR's family (the first InternalIP
/// otherwise), or the [`VTEP_IP_ANNOTATION`] when it names one of the node's InternalIPs.
pub fn peers_from_nodes<'a>(
    local_node: &str,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Vec<Peer> {
    let mut out = Vec::new();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        if name == local_node {
            continue;
        }
        let spec = node.spec.as_ref();
        let cidr = spec
            .and_then(|s| s.pod_cidr.as_deref())
            .or_else(|| {
                spec.and_then(|s| s.pod_cidrs.as_ref())
                    .and_then(|v| v.first().map(String::as_str))
            })
            .and_then(|c| c.trim().parse::<IpNet>().ok())
            .map(|c| c.trunc());
        let Some(pod_cidr) = cidr else {
            tracing::debug!(node = name, "node has no pod CIDR yet");
            continue;
        };
        let internal: Vec<IpAddr> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .filter_map(|a| a.address.trim().parse::<IpAddr>().ok())
                    .collect()
            })
            .unwrap_or_default();
        let annotations = node.metadata.annotations.as_ref();
        let vtep_ip = annotations
            .and_then(|a| a.get(VTEP_IP_ANNOTATION))
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .filter(|ip| internal.contains(ip));
        let node_ip = vtep_ip.or_else(|| {
            internal
                .iter()
                .find(|ip| ip.is_ipv4() == pod_cidr.addr().is_ipv4())
                .or(internal.first())
                .copied()
        });
        let Some(node_ip) = node_ip else {
            tracing::debug!(node = name, "node has no InternalIP yet");
            continue;
        };
        let vtep_mac = annotations
            .and_then(|a| a.get(VTEP_MAC_ANNOTATION))
            .map(|m| m.trim().to_ascii_lowercase())
            .filter(|m| !m.is_empty());
        out.push(Peer {
            name: name.into(),
            node_ip,
            pod_cidr,
            vtep_mac,
        });
    }
    out
}

/// The annotations the agent puts on its own Node: the backend, and for vxlan the VTEP MAC and
/// IP (absent values are left out).
pub fn local_annotations(backend: Backend, local: &LocalOverlay) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(BACKEND_ANNOTATION.into(), backend.as_str().into());
    if backend == Backend::Vxlan {
        if let Some(mac) = &local.vtep_mac {
            m.insert(VTEP_MAC_ANNOTATION.into(), mac.clone());
        }
        if let Some(ip) = local.vtep_ip {
            m.insert(VTEP_IP_ANNOTATION.into(), ip.to_string());
        }
    }
    m
}
