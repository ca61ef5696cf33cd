//! The service proxy of a node (kube-proxy's iptables mode, written for k8slite).
//!
//! - [`render`] turns Services and EndpointSlices (plain values from the agent's watch cache)
//!   into one `iptables-restore` text over k8slite's own chains (nat, filter, raw). It is pure:
//!   no host access, so every behaviour is unit-tested on the text.
//! - [`RuleBackend`] applies it: [`IptablesBackend`] runs ONE `iptables-restore -w --noflush`
//!   per sync (every owned chain declared, which flushes it, and refilled; chains no longer
//!   needed declared and `-X`ed in the same transaction), and ensures the jumps from the
//!   built-in chains to our top chains (check, then insert) — the only non-transactional rules.
//!   [`RecordingBackend`] records for tests.
//! - [`Conntrack`] deletes stale UDP conntrack entries ([`ConntrackTool`] runs `conntrack`,
//!   [`RecordingConntrack`] records).
//! - [`Proxier`] ties them: partial syncs (only the chains that changed are restored, see
//!   `partial.rs`), a full sync at the start, after a failure and every
//!   [`FULL_SYNC_EVERY`], skipped restore when nothing changed, stale chain removal, UDP
//!   conntrack cleanup from the previous model.
//! - [`HealthChecks`] serves `healthCheckNodePort`s of `externalTrafficPolicy: Local` services.
//!
//! Wiring (agent): build one `Proxier::new(cfg, IptablesBackend::new(<HostPrep::iptables>),
//! ConntrackTool)`, call [`Proxier::sync`] from `spawn_blocking` with the watch cache's
//! Services and EndpointSlices (coalesced changes plus a periodic full resync), turn
//! [`SyncReport::problems`] into Warning Events on the Services, and pass
//! [`SyncReport::health_checks`] to [`HealthChecks::update`] (its problems too). On uninstall,
//! [`Proxier::cleanup`]. The node should not send ICMP redirects on the pod bridge
//! (`net.ipv4.conf.{all,<bridge>}.send_redirects=0`): pod → service → pod on the same bridge
//! triggers them, and they use up the per-peer ICMP budget that the REJECT answers need.
//!
//! Chains (prefix `P`, `K8SLITE` in the agent):
//!
//! | table | top chain (jumped to from) | contents |
//! |---|---|---|
//! | nat | `P-SERVICES` (PREROUTING, OUTPUT) | per service port: cluster IP, external IPs, LB ingress → `P-SVC-*`/`P-SVL-*`/`P-EXT-*`/`P-FW-*`; node addresses → `P-NODEPORTS` |
//! | nat | `P-POSTROUTING` (POSTROUTING) | pod egress masquerade, masquerade of packets marked by `P-MARK-MASQ` |
//! | filter | `P-INPUT`, `P-FORWARD`, `P-OUTPUT` | `P-FIREWALL` (LB source ranges), `P-SERVICES` (REJECT: no endpoints, unowned service CIDR), `P-EXTERNAL` (REJECT/DROP for external addresses), forward accepts, health-check ports, node-local DNS |
//! | raw | `P-PREROUTING`, `P-OUTPUT` | NOTRACK for the node-local DNS address and (vxlan backend) the encapsulated overlay packets |
//!
//! Per-packet cost: a forwarded packet of an established flow matches the first rule of
//! `P-FORWARD`; an encapsulated VXLAN packet (with [`ProxyConfig::vxlan_port`]) is NOTRACKed
//! by the first rule of the raw chains and returns at the first rule of `P-INPUT`/`P-OUTPUT`.

/// Append formatted text to a String (writing to a String cannot fail).
macro_rules! w {
    ($buf:expr, $($arg:tt)*) => {{
        let _ = write!($buf, $($arg)*);
    }};
}

mod backend;
mod chains;
mod conntrack;
mod health;
mod model;
mod partial;
mod proxier;
mod render;
mod render_dns;
mod render_port;
mod render_top;
mod render_underlay;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use ipnet::IpNet;

pub use backend::{IptablesBackend, RecordingBackend, RuleBackend};
pub use conntrack::{Conntrack, ConntrackFilter, ConntrackTool, RecordingConntrack};
pub use health::HealthChecks;
pub use proxier::{FULL_SYNC_EVERY, Proxier};
pub use render::{Rendered, render};

/// Errors of the service proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration is unusable.
    #[error("invalid proxy configuration: {0}")]
    Invalid(String),
    /// A command could not be started or waited for.
    #[error("running {what}")]
    Spawn {
        /// The command.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{what} failed: {stderr}")]
    Command {
        /// The command.
        what: String,
        /// Its standard error (and, for a restore, the failing line).
        stderr: String,
    },
    /// Something the host must provide is missing.
    #[error("prerequisite missing: {0}")]
    Prerequisite(String),
}

/// Result of the service proxy.
pub type Result<T, E = ProxyError> = std::result::Result<T, E>;

/// What the proxy of one node needs to know besides Services and EndpointSlices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name (`endpoint.nodeName == node_name` is a local endpoint).
    pub node_name: String,
    /// The node's addresses: NodePorts are served on these (all local addresses when empty).
    pub node_ips: Vec<IpAddr>,
    /// The cluster (all pods) CIDR: sources outside it going to a ClusterIP are masqueraded.
    pub cluster_cidr: IpNet,
    /// This node's pod CIDR (for pod egress masquerade), once known.
    pub pod_cidr: Option<IpNet>,
    /// The service CIDR: addresses in it no service owns are rejected. Its family is the
    /// family programmed (IPv4 → `iptables`, IPv6 → `ip6tables`).
    pub service_cidr: IpNet,
    /// Prefix of every chain (`K8SLITE`; tests use unique ones). At most 12 characters of
    /// `A-Z0-9_`.
    pub chain_prefix: String,
    /// The node-local DNS address (the cluster DNS ClusterIP held by a dummy device): the
    /// service owning it is not DNATed, its traffic is NOTRACKed.
    pub local_dns: Option<IpAddr>,
    /// Masquerade pod traffic leaving the cluster CIDR (`-s <pod CIDR> ! -d <cluster CIDR>`).
    pub masquerade_egress: bool,
    /// The UDP port of the VXLAN overlay (the vxlan backend's 8472), None with other backends.
    /// When set, the encapsulated packets (`-d`/`-s` a node address, UDP to this port, not to
    /// the service CIDR) are NOTRACKed in the raw table and return first from our filter
    /// input/output chains: they never walk the service chains and cost no conntrack entry.
    /// k8slite never NATs the underlay, so nothing needs them tracked.
    pub vxlan_port: Option<u16>,
}

impl ProxyConfig {
    /// A configuration with prefix `K8SLITE`, no pod CIDR yet, no node-local DNS, egress
    /// masquerade on, no VXLAN port.
    pub fn new(
        node_name: impl Into<String>,
        node_ips: Vec<IpAddr>,
        cluster_cidr: IpNet,
        service_cidr: IpNet,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            node_ips,
            cluster_cidr,
            pod_cidr: None,
            service_cidr,
            chain_prefix: "K8SLITE".into(),
            local_dns: None,
            masquerade_egress: true,
            vxlan_port: None,
        }
    }

    /// Check what [`render`] cannot program at all (prefix, families).
    pub fn validate(&self) -> Result<()> {
        let p = &self.chain_prefix;
        if p.is_empty()
            || p.len() > chains::MAX_PREFIX
            || !p
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ProxyError::Invalid(format!(
                "chain prefix {p:?}: 1 to {} characters of A-Z, 0-9 and _",
                chains::MAX_PREFIX
            )));
        }
        let v4 = self.service_cidr.addr().is_ipv4();
        if self.cluster_cidr.addr().is_ipv4() != v4 {
            return Err(ProxyError::Invalid(format!(
                "cluster CIDR {} and service CIDR {} are of different families",
                self.cluster_cidr, self.service_cidr
            )));
        }
        if let Some(pc) = self.pod_cidr
            && pc.addr().is_ipv4() != v4
        {
            return Err(ProxyError::Invalid(format!(
                "pod CIDR {pc} and service CIDR {} are of different families",
                self.service_cidr
            )));
        }
        Ok(())
    }
}

/// A Service the proxy could not (fully) program; the agent reports it as a Warning Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Event reason (CamelCase).
    pub reason: String,
    /// Event message.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(ns: &str, name: &str, reason: &str, message: String) -> Self {
        Self {
            namespace: ns.into(),
            name: name.into(),
            reason: reason.into(),
            message,
        }
    }
}

/// What one [`Proxier::sync`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Services that could not be programmed (skipped; the others are programmed).
    pub problems: Vec<Problem>,
    /// Services programmed.
    pub services: usize,
    /// Lines of the rendered restore text.
    pub rules: usize,
    /// Health-check node ports to serve (give them to [`HealthChecks::update`]).
    pub health_checks: Vec<HealthCheck>,
    /// Whether a restore ran (false when nothing changed since the last applied one).
    pub applied: bool,
    /// Whether the restore was full (every chain of ours written), not only the changed
    /// chains.
    pub full: bool,
}

/// One `healthCheckNodePort` of an `externalTrafficPolicy: Local` service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HealthCheck {
    /// The port.
    pub port: u16,
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Ready endpoints of the service on this node.
    pub local_endpoints: usize,
}
