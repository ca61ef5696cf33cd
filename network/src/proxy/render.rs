//! The renderer: one `iptables-restore --noflush` text (raw, filter, nat) from the model.
//! Every chain we own is declared (which flushes it) and refilled; chains of the previous
//! render that are no longer needed are declared and deleted (`-X`) in the same text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::chains::{self, FILTER_TOP, NAT_TOP, RAW_TOP};
use super::model::{self, Ep, PortModel, Proto, SvcModel};
use super::{HealthCheck, Problem, ProxyConfig};

/// The masquerade mark (kube-proxy's), as a match.
const MASQ_MARK: &str = "0x4000/0x4000";
/// The masquerade bit, to set and clear.
const MASQ_BIT: &str = "0x4000";
/// Port of the node-local DNS server.
const DNS_PORT: u16 = 53;

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
    render_with(cfg, services, slices, previous_chains, true)
}

/// [`render`], with SCTP services turned into problems when `sctp` is false (the host's
/// iptables refused them).
pub(crate) fn render_with(
    cfg: &ProxyConfig,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
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
struct Writer<'c> {
    cfg: &'c ProxyConfig,
    p: &'c str,
    v4: bool,
    /// Declarations of per-service nat chains.
    nat_decl: String,
    nat_chains: BTreeSet<String>,
    /// nat rules of `P-SERVICES` (service part), `P-NODEPORTS`, per-service chains.
    nat_svc: String,
    nat_np: String,
    nat_rules: String,
    /// filter rules: `P-SERVICES`, `P-EXTERNAL`, `P-FIREWALL`, health-check accepts.
    f_svc: String,
    f_ext: String,
    f_fw: String,
    f_hc: String,
}

/// Append formatted text to a String (writing to a String cannot fail).
macro_rules! w {
    ($buf:expr, $($arg:tt)*) => {{
        let _ = write!($buf, $($arg)*);
    }};
}

/// `ip/32` or `ip/128`.
struct Host(IpAddr);

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}/32"),
            IpAddr::V6(a) => write!(f, "{a}/128"),
        }
    }
}

/// `ip:port` or `[ip]:port`.
struct SockAddr(IpAddr, u16);

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
struct Comment<'a>(&'a str, &'a str, &'a str, &'a str);

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
            nat_chains: BTreeSet::new(),
            nat_svc: String::with_capacity(cap),
            nat_np: String::new(),
            nat_rules: String::with_capacity(cap * 3),
            f_svc: String::new(),
            f_ext: String::new(),
            f_fw: String::new(),
            f_hc: String::new(),
        }
    }

    fn reject(&self) -> &'static str {
        if self.v4 {
            "REJECT --reject-with icmp-port-unreachable"
        } else {
            "REJECT --reject-with icmp6-port-unreachable"
        }
    }

    fn declare(&mut self, chain: &str) {
        if self.nat_chains.insert(chain.to_string()) {
            w!(self.nat_decl, ":{chain} - [0:0]\n");
        }
    }

    /// The rules of one service port.
    fn port(&mut self, s: &SvcModel<'_>, pt: &PortModel<'_>, udp: &mut UdpState) {
        let p = self.p;
        let proto = pt.proto.as_str();
        let id = format!("{}/{}:{}/{}", s.ns, s.name, pt.name, proto);
        let external = s.external(pt);
        let uses_cluster = !pt.cluster.is_empty() && (!s.itp_local || external);
        let uses_local = !pt.local.is_empty() && (s.itp_local || s.etp_local);
        let has_internal = if s.itp_local {
            !pt.local.is_empty()
        } else {
            !pt.cluster.is_empty()
        };
        let has_external = if s.etp_local {
            !pt.local.is_empty()
        } else {
            !pt.cluster.is_empty()
        };
        let uses_ext_chain = external && (uses_cluster || uses_local);
        let d = chains::digest(&[id.as_bytes()]);
        let named = |used: bool, kind: &str| {
            if used {
                chains::name(p, kind, &d)
            } else {
                String::new()
            }
        };
        let use_fw = !s.source_ranges.is_empty() && !s.lb_ips.is_empty();
        let svc = named(uses_cluster, "SVC");
        let svl = named(uses_local, "SVL");
        let ext = named(uses_ext_chain, "EXT");
        let fw = named(use_fw && uses_ext_chain, "FW");
        let vip = Host(s.cluster_ip);
        let port = pt.port;

        // Entry points in P-SERVICES / P-NODEPORTS.
        let internal = if s.itp_local { &svl } else { &svc };
        if has_internal {
            w!(
                self.nat_svc,
                "-A {p}-SERVICES -d {vip} -p {proto} -m {proto} --dport {port} {} -j {internal}\n",
                Comment(s.ns, s.name, pt.name, "cluster IP")
            );
        } else {
            let target = if pt.cluster.is_empty() {
                self.reject()
            } else {
                "DROP"
            };
            let why = if pt.cluster.is_empty() {
                "has no endpoints"
            } else {
                "has no local endpoints"
            };
            w!(
                self.f_svc,
                "-A {p}-SERVICES -d {vip} -p {proto} -m {proto} --dport {port} {} -j {target}\n",
                Comment(s.ns, s.name, pt.name, why)
            );
        }
        if uses_ext_chain {
            for ip in &s.external_ips {
                w!(
                    self.nat_svc,
                    "-A {p}-SERVICES -d {} -p {proto} -m {proto} --dport {port} {} -j {ext}\n",
                    Host(*ip),
                    Comment(s.ns, s.name, pt.name, "external IP")
                );
            }
            for ip in &s.lb_ips {
                w!(
                    self.nat_svc,
                    "-A {p}-SERVICES -d {} -p {proto} -m {proto} --dport {port} {} -j {}\n",
                    Host(*ip),
                    Comment(s.ns, s.name, pt.name, "loadbalancer IP"),
                    if use_fw { &fw } else { &ext }
                );
            }
            if let Some(np) = pt.node_port {
                w!(
                    self.nat_np,
                    "-A {p}-NODEPORTS -p {proto} -m {proto} --dport {np} {} -j {ext}\n",
                    Comment(s.ns, s.name, pt.name, "node port")
                );
            }
        }
        if external && !has_external {
            let (target, why) = if pt.cluster.is_empty() {
                (self.reject(), "has no endpoints")
            } else {
                ("DROP", "has no local endpoints")
            };
            for ip in s.external_ips.iter().chain(&s.lb_ips) {
                w!(
                    self.f_ext,
                    "-A {p}-EXTERNAL -d {} -p {proto} -m {proto} --dport {port} {} -j {target}\n",
                    Host(*ip),
                    Comment(s.ns, s.name, pt.name, why)
                );
            }
            if let Some(np) = pt.node_port {
                let mut f_ext = std::mem::take(&mut self.f_ext);
                self.node_addresses(&mut f_ext, |buf, dst| {
                    w!(
                        buf,
                        "-A {p}-EXTERNAL {dst}-p {proto} -m {proto} --dport {np} {} -j {target}\n",
                        Comment(s.ns, s.name, pt.name, why)
                    );
                });
                self.f_ext = f_ext;
            }
        }
        if use_fw && uses_ext_chain {
            for ip in &s.lb_ips {
                w!(
                    self.f_fw,
                    "-A {p}-FIREWALL -d {} -p {proto} -m {proto} --dport {port} {} -j DROP\n",
                    Host(*ip),
                    Comment(
                        s.ns,
                        s.name,
                        pt.name,
                        "traffic not accepted by its source ranges"
                    )
                );
            }
        }

        // Endpoint chains, shared by the cluster and local chains.
        let mut seps: Vec<(Ep, String)> = Vec::new();
        let eps = pt
            .cluster
            .iter()
            .filter(|_| uses_cluster)
            .chain(pt.local.iter().filter(|_| uses_local));
        for e in eps {
            if seps.iter().any(|(o, _)| o.ip == e.ip && o.port == e.port) {
                continue;
            }
            let ep = SockAddr(e.ip, e.port).to_string();
            let name = chains::hashed(p, "SEP", &[id.as_bytes(), ep.as_bytes()]);
            self.declare(&name);
            w!(
                self.nat_rules,
                "-A {name} -s {} -j {p}-MARK-MASQ\n",
                Host(e.ip)
            );
            match s.affinity {
                Some(_) => w!(
                    self.nat_rules,
                    "-A {name} -p {proto} -m {proto} -m recent --name {name} --set -j DNAT --to-destination {ep}\n"
                ),
                None => w!(
                    self.nat_rules,
                    "-A {name} -p {proto} -m {proto} -j DNAT --to-destination {ep}\n"
                ),
            }
            seps.push((*e, name));
        }
        let sep_of = |e: &Ep| -> &str {
            seps.iter()
                .find(|(o, _)| o.ip == e.ip && o.port == e.port)
                .map(|(_, n)| n.as_str())
                .unwrap_or_default()
        };
        if uses_cluster {
            self.declare(&svc);
            if !s.itp_local {
                self.masq_outside(&svc, vip.0, proto, port);
            }
            let list: Vec<&str> = pt.cluster.iter().map(sep_of).collect();
            self.spread(&svc, &list, s.affinity);
        }
        if uses_local {
            self.declare(&svl);
            if s.itp_local {
                self.masq_outside(&svl, vip.0, proto, port);
            }
            let list: Vec<&str> = pt.local.iter().map(sep_of).collect();
            self.spread(&svl, &list, s.affinity);
        }
        if uses_ext_chain {
            self.declare(&ext);
            if s.etp_local {
                let cidr = self.cfg.cluster_cidr.trunc();
                if uses_cluster {
                    w!(
                        self.nat_rules,
                        "-A {ext} -s {cidr} {} -j {svc}\n",
                        Comment(
                            s.ns,
                            s.name,
                            pt.name,
                            "pod traffic to external destinations"
                        )
                    );
                    w!(
                        self.nat_rules,
                        "-A {ext} -m addrtype --src-type LOCAL -j {p}-MARK-MASQ\n-A {ext} -m addrtype --src-type LOCAL -j {svc}\n"
                    );
                }
                if uses_local {
                    w!(self.nat_rules, "-A {ext} -j {svl}\n");
                }
            } else {
                w!(
                    self.nat_rules,
                    "-A {ext} -j {p}-MARK-MASQ\n-A {ext} -j {svc}\n"
                );
            }
            if use_fw {
                self.declare(&fw);
                for r in &s.source_ranges {
                    w!(self.nat_rules, "-A {fw} -s {r} -j {ext}\n");
                }
                for ip in &s.lb_ips {
                    if s.source_ranges.iter().any(|r| r.contains(ip)) {
                        w!(self.nat_rules, "-A {fw} -s {} -j {ext}\n", Host(*ip));
                    }
                }
            }
        }

        if pt.proto == Proto::Udp {
            let used: BTreeSet<IpAddr> = seps.iter().map(|(e, _)| e.ip).collect();
            udp.insert(UdpKey::Ip(s.cluster_ip, port), used.clone());
            for ip in s.external_ips.iter().chain(&s.lb_ips) {
                udp.insert(UdpKey::Ip(*ip, port), used.clone());
            }
            if let Some(np) = pt.node_port {
                udp.insert(UdpKey::NodePort(np), used);
            }
        }
    }

    /// `! -s <cluster CIDR> -d <vip> … -j MARK-MASQ` in `chain`.
    fn masq_outside(&mut self, chain: &str, vip: IpAddr, proto: &str, port: u16) {
        w!(
            self.nat_rules,
            "-A {chain} ! -s {} -d {} -p {proto} -m {proto} --dport {port} -j {}-MARK-MASQ\n",
            self.cfg.cluster_cidr.trunc(),
            Host(vip),
            self.p
        );
    }

    /// Affinity checks, then random spreading over `seps`.
    fn spread(&mut self, chain: &str, seps: &[&str], affinity: Option<u32>) {
        if let Some(secs) = affinity {
            for sep in seps {
                w!(
                    self.nat_rules,
                    "-A {chain} -m recent --name {sep} --rcheck --seconds {secs} --reap -j {sep}\n"
                );
            }
        }
        let n = seps.len();
        for (i, sep) in seps.iter().enumerate() {
            if i + 1 < n {
                let prob = 1.0 / (n - i) as f64;
                w!(
                    self.nat_rules,
                    "-A {chain} -m statistic --mode random --probability {prob:.10} -j {sep}\n"
                );
            } else {
                w!(self.nat_rules, "-A {chain} -j {sep}\n");
            }
        }
    }

    /// Write `rule(buf, "-d <node ip> ")` per node address, or with `-m addrtype --dst-type
    /// LOCAL` when the node's addresses are not known.
    fn node_addresses(&self, buf: &mut String, mut rule: impl FnMut(&mut String, &str)) {
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

    fn health_check(&mut self, s: &SvcModel<'_>, port: u16) {
        w!(
            self.f_hc,
            "-A {}-INPUT -p tcp -m tcp --dport {port} {} -j ACCEPT\n",
            self.p,
            Comment(s.ns, s.name, "", "health check node port")
        );
    }

    /// Assemble the text.
    fn finish(mut self, previous: &BTreeSet<String>, chains_out: &mut BTreeSet<String>) -> String {
        let p = self.p;
        let cfg = self.cfg;
        let reject = self.reject();
        let mut t = String::with_capacity(
            self.nat_decl.len() + self.nat_svc.len() + self.nat_rules.len() + 4096,
        );
        // raw: node-local DNS without conntrack.
        t.push_str("*raw\n");
        for c in RAW_TOP {
            w!(t, ":{p}-{c} - [0:0]\n");
        }
        if let Some(dns) = cfg.local_dns.filter(|d| d.is_ipv4() == self.v4) {
            let d = Host(dns);
            for proto in ["udp", "tcp"] {
                w!(
                    t,
                    "-A {p}-PREROUTING -d {d} -p {proto} -m {proto} --dport {DNS_PORT} -m comment --comment \"node-local dns\" -j NOTRACK\n"
                );
                w!(
                    t,
                    "-A {p}-OUTPUT -d {d} -p {proto} -m {proto} --dport {DNS_PORT} -m comment --comment \"node-local dns\" -j NOTRACK\n"
                );
                w!(
                    t,
                    "-A {p}-OUTPUT -s {d} -p {proto} -m {proto} --sport {DNS_PORT} -m comment --comment \"node-local dns\" -j NOTRACK\n"
                );
            }
        }
        t.push_str("COMMIT\n*filter\n");
        for c in FILTER_TOP {
            w!(t, ":{p}-{c} - [0:0]\n");
        }
        let new = "-m conntrack --ctstate NEW";
        w!(
            t,
            "-A {p}-INPUT {new} -j {p}-FIREWALL\n-A {p}-INPUT {new} -j {p}-EXTERNAL\n"
        );
        t.push_str(&self.f_hc);
        let dns = cfg.local_dns.filter(|d| d.is_ipv4() == self.v4).map(Host);
        if let Some(d) = &dns {
            for proto in ["udp", "tcp"] {
                w!(
                    t,
                    "-A {p}-INPUT -d {d} -p {proto} -m {proto} --dport {DNS_PORT} -m comment --comment \"node-local dns\" -j ACCEPT\n"
                );
            }
        }
        w!(t, "-A {p}-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
        for c in ["FIREWALL", "SERVICES", "EXTERNAL"] {
            w!(t, "-A {p}-FORWARD {new} -j {p}-{c}\n");
        }
        let cidr = cfg.cluster_cidr.trunc();
        w!(
            t,
            "-A {p}-FORWARD -m mark --mark {MASQ_MARK} -m comment --comment \"k8slite forwarding rules\" -j ACCEPT\n"
        );
        w!(
            t,
            "-A {p}-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"k8slite forwarding conntrack rule\" -j ACCEPT\n"
        );
        w!(
            t,
            "-A {p}-FORWARD -s {cidr} -m comment --comment \"k8slite pod traffic\" -j ACCEPT\n"
        );
        w!(
            t,
            "-A {p}-FORWARD -d {cidr} -m comment --comment \"k8slite pod traffic\" -j ACCEPT\n"
        );
        for c in ["FIREWALL", "SERVICES", "EXTERNAL"] {
            w!(t, "-A {p}-OUTPUT {new} -j {p}-{c}\n");
        }
        if let Some(d) = &dns {
            for proto in ["udp", "tcp"] {
                w!(
                    t,
                    "-A {p}-OUTPUT -s {d} -p {proto} -m {proto} --sport {DNS_PORT} -m comment --comment \"node-local dns\" -j ACCEPT\n"
                );
            }
        }
        t.push_str(&self.f_fw);
        t.push_str(&self.f_ext);
        t.push_str(&self.f_svc);
        if let Some(d) = &dns {
            w!(
                t,
                "-A {p}-SERVICES -d {d} -m comment --comment \"node-local dns\" -j RETURN\n"
            );
        }
        w!(
            t,
            "-A {p}-SERVICES -d {} -m comment --comment \"service CIDR address no service owns\" -j {reject}\n",
            cfg.service_cidr.trunc()
        );
        t.push_str("COMMIT\n*nat\n");
        for c in NAT_TOP {
            w!(t, ":{p}-{c} - [0:0]\n");
        }
        t.push_str(&self.nat_decl);
        let stale: Vec<&String> = previous
            .iter()
            .filter(|c| !self.nat_chains.contains(*c))
            .filter(|c| {
                c.strip_prefix(p)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(chains::is_kind)
            })
            .collect();
        for c in &stale {
            w!(t, ":{c} - [0:0]\n");
        }
        w!(t, "-A {p}-MARK-MASQ -j MARK --or-mark {MASQ_BIT}\n");
        if cfg.masquerade_egress
            && let Some(pod) = cfg.pod_cidr.filter(|c| c.addr().is_ipv4() == self.v4)
        {
            w!(
                t,
                "-A {p}-POSTROUTING -s {} ! -d {cidr} -m comment --comment \"k8slite pod egress\" -j MASQUERADE --random-fully\n",
                pod.trunc()
            );
        }
        w!(
            t,
            "-A {p}-POSTROUTING -m mark ! --mark {MASQ_MARK} -j RETURN\n"
        );
        w!(t, "-A {p}-POSTROUTING -j MARK --xor-mark {MASQ_BIT}\n");
        w!(
            t,
            "-A {p}-POSTROUTING -m comment --comment \"k8slite service traffic requiring SNAT\" -j MASQUERADE --random-fully\n"
        );
        t.push_str(&self.nat_svc);
        let mut np = String::new();
        self.node_addresses(&mut np, |buf, dst| {
            w!(buf, "-A {p}-SERVICES {dst}-m comment --comment \"k8slite node ports\" -j {p}-NODEPORTS\n");
        });
        t.push_str(&np);
        t.push_str(&self.nat_np);
        t.push_str(&self.nat_rules);
        for c in &stale {
            w!(t, "-X {c}\n");
        }
        t.push_str("COMMIT\n");
        *chains_out = std::mem::take(&mut self.nat_chains);
        t
    }
}
