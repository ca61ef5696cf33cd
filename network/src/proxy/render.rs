//! The renderer: one `iptables-restore --noflush` text (raw, filter, nat) from the model.
//! Every chain we own is declared (which flushes it) and refilled; chains of the previous
//! render that are no longer needed are declared and deleted (`-X`) in the same text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::objects::{ServiceInfo, SliceInfo, compact};

use super::model::{self, Proto};
use super::{HealthCheck, Problem, ProxyConfig};

/// The masquerade mark (kube-proxy's), as a match.
pub(super) const MASQ_MARK: &str = "0x4000/0x4000";
/// The masquerade bit, to set and clear.
pub(super) const MASQ_BIT: &str = "0x4000";
/// Port of the node-local DNS server.
pub(super) const DNS_PORT: u16 = 53;

/// A destination of UDP service traffic whose conntrack entries may go stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum UdpKey {
    /// Cluster IP, external IP or LB ingress IP and the service port.
    Ip(IpAddr, u16),
    /// A node port.
    NodePort(u16),
}

/// Per UDP destination, the endpoint addresses traffic is DNATed to.
pub(crate) type UdpState = BTreeMap<UdpKey, BTreeSet<IpAddr>>;

/// The output of [`render`].
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    /// The `iptables-restore -w --noflush` input.
    pub text: String,
    /// The per-service nat chains (`<prefix>-SVC-…`, `-SVL-`, `-EXT-`, `-FW-`, `-SEP-`) the
    /// text leaves in place: pass them as `previous_chains` to the next render.
    pub chains: BTreeSet<String>,
    /// Services that could not be programmed.
    pub problems: Vec<Problem>,
    /// Services programmed.
    pub services: usize,
    /// Lines of `text`.
    pub rules: usize,
    /// Health-check node ports to serve.
    pub health_checks: Vec<HealthCheck>,
    pub(crate) udp: UdpState,
    pub(crate) uses_sctp: bool,
}

/// Render the rules for `services`/`slices` (pure). `previous_chains` are the per-service nat
/// chains the last applied text left (from [`Rendered::chains`], or listed from the host after
/// a restart): those not needed any more are deleted in this text.
pub fn render(
    cfg: &ProxyConfig,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    previous_chains: &BTreeSet<String>,
) -> Rendered {
    render_with(
        cfg,
        &compact(services),
        &compact(slices),
        previous_chains,
        true,
    )
}

/// [`render`], with SCTP services turned into problems when `sctp` is false (the host's
/// iptables refused them).
pub(crate) fn render_with(
    cfg: &ProxyConfig,
    services: &[Arc<ServiceInfo>],
    slices: &[Arc<SliceInfo>],
    previous_chains: &BTreeSet<String>,
    sctp: bool,
) -> Rendered {
    let mut m = model::build(cfg, services, slices);
    if !sctp {
        let mut problems = Vec::new();
        m.services.retain(|s| {
            let bad = s.ports.iter().any(|p| p.proto == Proto::Sctp);
            if bad {
                problems.push(Problem::new(
                    s.ns,
                    s.name,
                    "UnsupportedProtocol",
                    "SCTP is not supported by this node's iptables".into(),
                ));
            }
            !bad
        });
        m.problems.extend(problems);
    }
    let mut w = Writer::new(cfg, m.services.len());
    let mut out = Rendered {
        problems: m.problems,
        services: m.services.len(),
        ..Default::default()
    };
    for s in &m.services {
        if s.local_dns {
            continue;
        }
        for p in &s.ports {
            out.uses_sctp |= p.proto == Proto::Sctp;
            w.port(s, p, &mut out.udp);
        }
        if let Some(port) = s.hc_node_port {
            let mut ips: Vec<IpAddr> = s
                .ports
                .iter()
                .flat_map(|p| p.local.iter().filter(|e| e.ready).map(|e| e.ip))
                .collect();
            ips.sort_unstable();
            ips.dedup();
            w.health_check(s, port);
            out.health_checks.push(HealthCheck {
                port,
                namespace: s.ns.into(),
                name: s.name.into(),
                local_endpoints: ips.len(),
            });
        }
    }
    out.health_checks.sort();
    out.text = w.finish(previous_chains, &mut out.chains);
    out.rules = out.text.bytes().filter(|b| *b == b'\n').count();
    out
}

/// Accumulates the sections of the text.
pub(super) struct Writer<'c> {
    pub(super) cfg: &'c ProxyConfig,
    pub(super) p: &'c str,
    pub(super) v4: bool,
    /// Declarations of per-service nat chains.
    pub(super) nat_decl: String,
    pub(super) nat_chains: Vec<String>,
    /// nat rules of `P-SERVICES` (service part), `P-NODEPORTS`, per-service chains.
    pub(super) nat_svc: String,
    pub(super) nat_np: String,
    pub(super) nat_rules: String,
    /// filter rules: `P-SERVICES`, `P-EXTERNAL`, `P-FIREWALL`, health-check accepts.
    pub(super) f_svc: String,
    pub(super) f_ext: String,
    pub(super) f_fw: String,
    pub(super) f_hc: String,
}

/// `ip/32` or `ip/128`.
pub(super) struct Host(pub(super) IpAddr);

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}/32"),
            IpAddr::V6(a) => write!(f, "{a}/128"),
        }
    }
}

/// `ip:port` or `[ip]:port`.
pub(super) struct SockAddr(pub(super) IpAddr, pub(super) u16);

impl std::fmt::Display for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// A `-m comment` of `ns/name[:port] what`, with anything that could break the restore
/// syntax replaced.
pub(super) struct Comment<'a>(
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
);

impl std::fmt::Display for Comment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        f.write_str("-m comment --comment \"")?;
        let clean = |f: &mut std::fmt::Formatter<'_>, s: &str| -> std::fmt::Result {
            for c in s.chars().take(64) {
                let ok = c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
                f.write_char(if ok { c } else { '_' })?;
            }
            Ok(())
        };
        clean(f, self.0)?;
        f.write_char('/')?;
        clean(f, self.1)?;
        if !self.2.is_empty() {
            f.write_char(':')?;
            clean(f, self.2)?;
        }
        f.write_char(' ')?;
        f.write_str(self.3)?;
        f.write_char('"')
    }
}

impl<'c> Writer<'c> {
    fn new(cfg: &'c ProxyConfig, services: usize) -> Self {
        let cap = services * 160;
        Self {
            cfg,
            p: &cfg.chain_prefix,
            v4: cfg.service_cidr.addr().is_ipv4(),
            nat_decl: String::with_capacity(cap),
            nat_chains: Vec::with_capacity(services * 3),
            nat_svc: String::with_capacity(cap),
            nat_np: String::new(),
            nat_rules: String::with_capacity(cap * 3),
            f_svc: String::new(),
            f_ext: String::new(),
            f_fw: String::new(),
            f_hc: String::new(),
        }
    }

    pub(super) fn reject(&self) -> &'static str {
        if self.v4 {
            "REJECT --reject-with icmp-port-unreachable"
        } else {
            "REJECT --reject-with icmp6-port-unreachable"
        }
    }

    pub(super) fn declare(&mut self, chain: &str) {
        // Names are unique per service port and endpoint (hashes of their identities).
        self.nat_chains.push(chain.to_string());
        w!(self.nat_decl, ":{chain} - [0:0]\n");
    }

    /// Write `rule(buf, "-d <node ip> ")` per node address, or with `-m addrtype --dst-type
    /// LOCAL` when the node's addresses are not known.
    pub(super) fn node_addresses(&self, buf: &mut String, mut rule: impl FnMut(&mut String, &str)) {
        let mine: Vec<&IpAddr> = self
            .cfg
            .node_ips
            .iter()
            .filter(|ip| ip.is_ipv4() == self.v4)
            .collect();
        if mine.is_empty() {
            let lo = if self.v4 { "127.0.0.0/8" } else { "::1/128" };
            rule(buf, &format!("-m addrtype --dst-type LOCAL ! -d {lo} "));
        } else {
            for ip in mine {
                rule(buf, &format!("-d {} ", Host(*ip)));
            }
        }
    }
}
