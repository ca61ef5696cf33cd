//! From Services and EndpointSlices to what the renderer programs: validated service ports
//! (bad ones become [`Problem`]s) with their endpoints, categorised as kube-proxy does (ready
//! ones, else serving-and-terminating ones; cluster-wide and node-local).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::{Problem, ProxyConfig};
use crate::objects::{ServiceInfo, SliceInfo};
use ipnet::IpNet;
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

/// An L4 protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    fn parse(p: Option<&str>) -> Option<Self> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// One endpoint of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ep {
    pub ip: IpAddr,
    pub port: u16,
    pub local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// One port of a service, with the endpoints traffic may go to.
#[derive(Debug)]
pub(crate) struct PortModel<'a> {
    pub name: &'a str,
    pub proto: Proto,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Endpoints for cluster-wide traffic (ready, else serving-and-terminating).
    pub cluster: Vec<Ep>,
    /// Endpoints on this node (same rule, on the local ones).
    pub local: Vec<Ep>,
}

/// One programmable service.
#[derive(Debug)]
pub(crate) struct SvcModel<'a> {
    pub ns: &'a str,
    pub name: &'a str,
    pub cluster_ip: IpAddr,
    pub external_ips: Vec<IpAddr>,
    pub lb_ips: Vec<IpAddr>,
    pub source_ranges: Vec<IpNet>,
    /// `externalTrafficPolicy: Local` on an externally reachable service.
    pub etp_local: bool,
    pub itp_local: bool,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity: Option<u32>,
    pub hc_node_port: Option<u16>,
    /// The cluster IP is the node-local DNS address: no DNAT, no REJECT.
    pub local_dns: bool,
    pub ports: Vec<PortModel<'a>>,
}

impl SvcModel<'_> {
    /// Reachable from outside the cluster (node ports, external IPs, LB ingress).
    pub(crate) fn external(&self, p: &PortModel<'_>) -> bool {
        p.node_port.is_some() || !self.external_ips.is_empty() || !self.lb_ips.is_empty()
    }
}

/// The model of one render.
#[derive(Debug, Default)]
pub(crate) struct Model<'a> {
    pub services: Vec<SvcModel<'a>>,
    pub problems: Vec<Problem>,
}

fn same_family(a: IpAddr, v4: bool) -> bool {
    a.is_ipv4() == v4
}

fn port_u16(v: i32) -> Option<u16> {
    u16::try_from(v).ok().filter(|p| *p != 0)
}

/// Build the model (never panics; unprogrammable services become problems).
pub(crate) fn build<'a>(
    cfg: &ProxyConfig,
    services: &'a [Arc<ServiceInfo>],
    slices: &'a [Arc<SliceInfo>],
) -> Model<'a> {
    let v4 = cfg.service_cidr.addr().is_ipv4();
    let mut by_svc: HashMap<(&str, &str), Vec<&SliceInfo>> = HashMap::new();
    for s in slices {
        let (Some(ns), Some(svc)) = (s.namespace(), s.service()) else {
            continue;
        };
        let family_ok = match &*s.address_type {
            "IPv4" => v4,
            "IPv6" => !v4,
            _ => false,
        };
        if family_ok {
            by_svc.entry((ns, svc)).or_default().push(s);
        }
    }
    let mut model = Model {
        services: Vec::with_capacity(services.len()),
        problems: Vec::new(),
    };
    for svc in services {
        let ns = svc.namespace().unwrap_or("default");
        let name = svc.name().unwrap_or("");
        match service(cfg, v4, ns, name, svc, by_svc.get(&(ns, name))) {
            Ok(Some(m)) => {
                if let Some(p) = foreign_external_ips(ns, name, svc, v4) {
                    model.problems.push(p);
                }
                model.services.push(m)
            }
            Ok(None) => {}
            Err((reason, message)) => {
                tracing::debug!(namespace = ns, name, reason, %message, "service not programmed");
                model.problems.push(Problem::new(ns, name, reason, message));
            }
        }
    }
    model
}

type Invalid = (&'static str, String);

/// External IPs of the other address family than this node's proxy programs: the service is
/// programmed without them, and the user is told (kube-proxy drops them silently).
fn foreign_external_ips(ns: &str, name: &str, svc: &ServiceInfo, v4: bool) -> Option<Problem> {
    let foreign: Vec<&str> = svc
        .spec
        .as_ref()?
        .external_ips
        .iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| s.parse::<IpAddr>().is_ok_and(|a| !same_family(a, v4)))
        .collect();
    (!foreign.is_empty()).then(|| {
        Problem::new(
            ns,
            name,
            "ExternalIPFamily",
            format!(
                "external IP(s) {} not served: this node's service proxy programs {} only",
                foreign.join(","),
                if v4 { "IPv4" } else { "IPv6" }
            ),
        )
    })
}

fn service<'a>(
    cfg: &ProxyConfig,
    v4: bool,
    ns: &'a str,
    name: &'a str,
    svc: &'a ServiceInfo,
    slices: Option<&Vec<&'a SliceInfo>>,
) -> Result<Option<SvcModel<'a>>, Invalid> {
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(None);
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return Ok(None);
    }
    let ips: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(list), _) if !list.is_empty() => list.iter().map(|s| &**s).collect(),
        (_, Some(ip)) => vec![&**ip],
        _ => Vec::new(),
    };
    if ips.is_empty() || ips.iter().all(|ip| ip.is_empty()) || ips[0] == "None" {
        return Ok(None); // headless or not allocated yet
    }
    let mut cluster_ip = None;
    for ip in &ips {
        match ip.parse::<IpAddr>() {
            Ok(a) if same_family(a, v4) && cluster_ip.is_none() => cluster_ip = Some(a),
            Ok(_) => {}
            Err(_) => {
                return Err((
                    "InvalidClusterIP",
                    format!("cluster IP {ip:?} is not an IP address"),
                ));
            }
        }
    }
    let Some(cluster_ip) = cluster_ip else {
        return Err((
            "WrongIPFamily",
            format!(
                "cluster IP(s) {} are not {} as the service CIDR {} of this node's proxy",
                ips.join(","),
                if v4 { "IPv4" } else { "IPv6" },
                cfg.service_cidr
            ),
        ));
    };
    let local_dns = cfg.local_dns == Some(cluster_ip);

    let mut external_ips = Vec::new();
    for ip in spec.external_ips.iter().flatten() {
        match ip.trim().parse::<IpAddr>() {
            Ok(a) if same_family(a, v4) => external_ips.push(a),
            Ok(_) => {}
            Err(_) => {
                return Err((
                    "InvalidExternalIP",
                    format!("external IP {ip:?} is not an IP address"),
                ));
            }
        }
    }
    let mut lb_ips = Vec::new();
    if ty == "LoadBalancer" {
        for ing in svc.ingress.iter() {
            if ing.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            let Some(ip) = ing.ip.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            match ip.parse::<IpAddr>() {
                Ok(a) if same_family(a, v4) => lb_ips.push(a),
                Ok(_) => {}
                Err(_) => {
                    return Err((
                        "InvalidLoadBalancerIP",
                        format!("load balancer ingress IP {ip:?} is not an IP address"),
                    ));
                }
            }
        }
    }
    let mut source_ranges = Vec::new();
    for r in spec.source_ranges.iter().flatten() {
        let r = r.trim();
        let net = r
            .parse::<IpNet>()
            .or_else(|_| r.parse::<IpAddr>().map(IpNet::from));
        match net {
            Ok(n) if same_family(n.addr(), v4) => source_ranges.push(n.trunc()),
            Ok(_) => {}
            Err(_) => {
                return Err((
                    "InvalidSourceRange",
                    format!("loadBalancerSourceRanges entry {r:?} is not a CIDR"),
                ));
            }
        }
    }
    let affinity = if spec.session_affinity.as_deref() == Some("ClientIP") {
        match spec.affinity_timeout {
            None => Some(DEFAULT_AFFINITY_SECONDS),
            Some(s) if (1..=86400).contains(&s) => Some(s.unsigned_abs()),
            Some(s) => {
                return Err((
                    "InvalidSessionAffinity",
                    format!("sessionAffinityConfig.clientIP.timeoutSeconds {s} is not in 1..86400"),
                ));
            }
        }
    } else {
        None
    };
    let node_ports_allowed = ty == "NodePort" || ty == "LoadBalancer";
    let hc_node_port = match spec.health_check_node_port {
        None | Some(0) => None,
        Some(p) => Some(port_u16(p).ok_or((
            "InvalidHealthCheckNodePort",
            format!("healthCheckNodePort {p} is not a port number"),
        ))?),
    };

    let empty = Vec::new();
    let slices = slices.unwrap_or(&empty);
    let mut ports: Vec<PortModel<'a>> = Vec::new();
    for sp in spec.ports.iter().flatten() {
        let pname = sp.name.as_deref().unwrap_or("");
        let proto = Proto::parse(sp.protocol.as_deref()).ok_or_else(|| {
            (
                "UnsupportedProtocol",
                format!(
                    "port {pname:?}: protocol {:?} is not TCP, UDP or SCTP",
                    sp.protocol.as_deref().unwrap_or("")
                ),
            )
        })?;
        let port = port_u16(sp.port).ok_or_else(|| {
            (
                "InvalidPort",
                format!("port {pname:?}: {} is not a port number", sp.port),
            )
        })?;
        let node_port = match sp.node_port {
            None | Some(0) => None,
            Some(np) => Some(port_u16(np).ok_or_else(|| {
                (
                    "InvalidNodePort",
                    format!("port {pname:?}: nodePort {np} is not a port number"),
                )
            })?),
        }
        .filter(|_| node_ports_allowed);
        if ports.iter().any(|p| p.proto == proto && p.port == port) {
            return Err((
                "DuplicatePort",
                format!("port {port}/{} is listed twice", proto.as_str()),
            ));
        }
        let (cluster, local) = endpoints(cfg, v4, slices, pname, proto);
        ports.push(PortModel {
            name: pname,
            proto,
            port,
            node_port,
            cluster,
            local,
        });
    }
    let externally = ports.iter().any(|p| p.node_port.is_some())
        || !external_ips.is_empty()
        || !lb_ips.is_empty();
    let etp_local = externally && spec.external_traffic_policy.as_deref() == Some("Local");
    Ok(Some(SvcModel {
        ns,
        name,
        cluster_ip,
        external_ips,
        lb_ips,
        source_ranges,
        etp_local,
        itp_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        affinity,
        hc_node_port: hc_node_port.filter(|_| etp_local),
        local_dns,
        ports,
    }))
}

/// The endpoints of service port `pname`/`proto`: (cluster, local).
fn endpoints(
    cfg: &ProxyConfig,
    v4: bool,
    slices: &[&SliceInfo],
    pname: &str,
    proto: Proto,
) -> (Vec<Ep>, Vec<Ep>) {
    let mut all: Vec<Ep> = Vec::new();
    for s in slices {
        let Some(port) = s.ports.iter().flatten().find_map(|p| {
            (p.name.as_deref().unwrap_or("") == pname
                && Proto::parse(p.protocol.as_deref()) == Some(proto))
            .then_some(p.port)
        }) else {
            continue;
        };
        let Some(port) = port.and_then(port_u16) else {
            continue;
        };
        for e in s.endpoints.iter() {
            let Some(ip) = e.addresses.first().and_then(|a| a.ip()) else {
                continue;
            };
            if !same_family(ip, v4) {
                continue;
            }
            let ready = e.ready.unwrap_or(true);
            all.push(Ep {
                ip,
                port,
                local: e.node_name.as_deref() == Some(cfg.node_name.as_str()),
                ready,
                serving: e.serving.unwrap_or(ready),
                terminating: e.terminating.unwrap_or(false),
            });
        }
    }
    // Stable order (an unchanged set renders the same text) and one entry per address:port
    // (an endpoint may sit in two slices while they are being rewritten; ready wins).
    all.sort_by(|a, b| {
        (a.ip, a.port)
            .cmp(&(b.ip, b.port))
            .then(b.ready.cmp(&a.ready))
    });
    all.dedup_by(|later, first| later.ip == first.ip && later.port == first.port);
    let pick = |local_only: bool| -> Vec<Ep> {
        let cand = || all.iter().filter(move |e| !local_only || e.local);
        let ready: Vec<Ep> = cand().filter(|e| e.ready).copied().collect();
        if !ready.is_empty() {
            return ready;
        }
        cand()
            .filter(|e| e.serving && e.terminating)
            .copied()
            .collect()
    };
    (pick(false), pick(true))
}
