//! One snapshot of the cluster's DNS records: an index built once from Services and
//! EndpointSlices, and the lookup of a cluster name against it, with CoreDNS's `kubernetes`
//! plugin semantics (names, NXDOMAIN vs NODATA, SRV weights, reverse names). The index is
//! built in the `build` submodule.

mod build;
mod snapshot;

pub use snapshot::SnapshotError;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// CoreDNS's schema version, served as `dns-version.<domain>` TXT.
const DNS_SCHEMA_VERSION: &str = "1.1.0";

/// What a cluster name resolves to.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// NOERROR with these records.
    Answer {
        /// Answer section.
        answers: Vec<Record>,
        /// Additional section (addresses of SRV targets).
        additionals: Vec<Record>,
    },
    /// An ExternalName Service: the CNAME, and its target for the server to resolve.
    Alias {
        /// The CNAME record.
        cname: Box<Record>,
        /// The external name.
        target: Name,
    },
    /// The name exists without records of the asked type: NOERROR, SOA in authority.
    NoData,
    /// The name does not exist in the cluster zone: NXDOMAIN, SOA in authority.
    NxDomain,
    /// Not a cluster name: forward it.
    Forward,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: Box<str>,
    /// Lowercase.
    proto: Cow<'static, str>,
    port: u16,
}

/// A protocol name in lowercase (`tcp`, `udp` and `sctp` without an allocation).
fn proto_name(p: &str) -> Cow<'static, str> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Cow::Borrowed("tcp"),
        "udp" => Cow::Borrowed("udp"),
        "sctp" => Cow::Borrowed("sctp"),
        other => Cow::Owned(other.to_string()),
    }
}

#[derive(Debug)]
struct Endpoint {
    /// Lowercase first label: the hostname or the dashed IP.
    host: Box<str>,
    fqdn: Name,
    ip: IpAddr,
    /// Shared by the endpoints of one EndpointSlice.
    ports: Arc<Vec<Port>>,
}

#[derive(Debug)]
enum Kind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    External(Name),
}

#[derive(Debug)]
struct Svc {
    fqdn: Name,
    kind: Kind,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

/// A PTR target: a Service, or one endpoint of a Service (indices into `Records::services`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ptr {
    Service(u32),
    Endpoint(u32, u32),
}

/// The DNS records of the cluster at one moment, indexed for lookups.
#[derive(Debug)]
pub struct Records {
    /// Lowercase, no trailing dot.
    domain: Box<str>,
    origin: Name,
    ttl: u32,
    soa: Record,
    services: Vec<Svc>,
    /// `"<svc>.<ns>"` (lowercase) → index into `services`.
    by_name: HashMap<Box<str>, u32>,
    namespaces: HashSet<Box<str>>,
    /// IP → PTR targets (a ClusterIP names its Service only, as CoreDNS answers), as indices
    /// into `services` (the names are not copied: a few hundred bytes less per IP).
    reverse: HashMap<IpAddr, Vec<Ptr>>,
    /// The ClusterIPs of `kube-system/kube-dns`, served as `ns.dns.<domain>`.
    dns_ips: Vec<IpAddr>,
    endpoint_count: usize,
}

impl Records {
    /// Number of indexed Services and endpoints.
    pub fn len(&self) -> usize {
        self.services.len() + self.endpoint_count
    }

    /// Whether no Service is indexed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Serve the records with this TTL (also the SOA's minimum, as CoreDNS).
    pub(crate) fn set_ttl(&mut self, ttl: u32) {
        self.ttl = ttl;
        let serial = match &self.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 1,
        };
        self.soa = soa_record(&self.origin, serial, ttl);
    }

    /// The zone's SOA record (for the authority section).
    pub(crate) fn soa(&self) -> &Record {
        &self.soa
    }

    /// The cluster domain, lowercase, without the trailing dot.
    pub(crate) fn domain(&self) -> &str {
        &self.domain
    }

    /// Resolve `qname` (given as asked, and as `lower`: lowercase, dotted, no trailing dot).
    pub(crate) fn lookup(&self, lower: &str, qname: &Name, qtype: RecordType) -> Lookup {
        let domain = &*self.domain;
        if lower == domain {
            return self.apex(qname, qtype);
        }
        let rel = match lower.strip_suffix(domain) {
            Some(r) if r.ends_with('.') => &r[..r.len() - 1],
            _ => return self.reverse(lower, qname, qtype),
        };
        if rel == "dns-version" {
            return if qtype == RecordType::TXT {
                let rec = Record::from_rdata(
                    qname.clone(),
                    28800,
                    RData::TXT(TXT::new(vec![DNS_SCHEMA_VERSION.to_string()])),
                );
                answer(vec![rec], Vec::new())
            } else {
                Lookup::NoData
            };
        }
        if rel == "ns.dns" {
            return self.addresses(qname, qtype, self.dns_ips.iter().copied());
        }
        if rel == "svc" || rel == "pod" {
            return Lookup::NoData;
        }
        if let Some(rest) = rel.strip_suffix(".svc") {
            return self.service_name(rest, qname, qtype);
        }
        if let Some(rest) = rel.strip_suffix(".pod") {
            return self.pod_name(rest, qname, qtype);
        }
        Lookup::NxDomain
    }

    fn apex(&self, qname: &Name, qtype: RecordType) -> Lookup {
        match qtype {
            RecordType::SOA => {
                let mut soa = self.soa.clone();
                soa.name = qname.clone();
                answer(vec![soa], Vec::new())
            }
            RecordType::NS => {
                let ns_name = ns_name(&self.origin);
                let ns =
                    Record::from_rdata(qname.clone(), self.ttl, RData::NS(NS(ns_name.clone())));
                let extra = self
                    .dns_ips
                    .iter()
                    .map(|ip| addr_record(ns_name.clone(), self.ttl, *ip))
                    .collect();
                answer(vec![ns], extra)
            }
            _ => Lookup::NoData,
        }
    }

    /// `<ns>`, `<svc>.<ns>`, `<endpoint>.<svc>.<ns>` or `_<port>._<proto>.<svc>.<ns>`, each
    /// followed by `.svc.<domain>`.
    fn service_name(&self, rest: &str, qname: &Name, qtype: RecordType) -> Lookup {
        // Split off the namespace, then the service; what is left are 0, 1 or 2 labels.
        let Some((front, ns)) = rest.rsplit_once('.') else {
            // `<ns>.svc.<domain>`: exists while the namespace has Services.
            return if self.namespaces.contains(rest) {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        };
        let (prefix, svc_key) = match front.rsplit_once('.') {
            Some((prefix, svc)) => (Some(prefix), &rest[rest.len() - svc.len() - ns.len() - 1..]),
            None => (None, rest),
        };
        let Some(&idx) = self.by_name.get(svc_key) else {
            return Lookup::NxDomain;
        };
        let svc = &self.services[idx as usize];
        match prefix {
            None => self.service(svc, qname, qtype),
            Some(prefix) => match prefix.split_once('.') {
                None => self.endpoint(svc, prefix, qname, qtype),
                Some((port, proto)) if !proto.contains('.') => {
                    let port = port.strip_prefix('_').unwrap_or(port);
                    let proto = proto.strip_prefix('_').unwrap_or(proto);
                    self.service_port(svc, port, proto, qname, qtype)
                }
                Some(_) => Lookup::NxDomain,
            },
        }
    }

    fn service(&self, svc: &Svc, qname: &Name, qtype: RecordType) -> Lookup {
        match &svc.kind {
            Kind::External(target) => self.alias(qname, qtype, target),
            Kind::ClusterIp(ips) => match qtype {
                RecordType::SRV => self.cluster_ip_srv(svc, ips, qname, |_| true),
                _ => self.addresses(qname, qtype, ips.iter().copied()),
            },
            Kind::Headless => {
                // CoreDNS: a headless Service without endpoints does not exist.
                if svc.endpoints.is_empty() {
                    return Lookup::NxDomain;
                }
                match qtype {
                    RecordType::SRV => self.endpoint_srv(svc, qname, |_| true, |_| true),
                    _ => self.addresses(qname, qtype, svc.endpoints.iter().map(|e| e.ip)),
                }
            }
        }
    }

    fn endpoint(&self, svc: &Svc, host: &str, qname: &Name, qtype: RecordType) -> Lookup {
        if matches!(svc.kind, Kind::External(_)) || !svc.endpoints.iter().any(|e| &*e.host == host)
        {
            return Lookup::NxDomain;
        }
        match qtype {
            RecordType::SRV => self.endpoint_srv(svc, qname, |e| &*e.host == host, |_| true),
            _ => self.addresses(
                qname,
                qtype,
                svc.endpoints
                    .iter()
                    .filter(|e| &*e.host == host)
                    .map(|e| e.ip),
            ),
        }
    }

    fn service_port(
        &self,
        svc: &Svc,
        port: &str,
        proto: &str,
        qname: &Name,
        qtype: RecordType,
    ) -> Lookup {
        let matches = |p: &Port| &*p.name == port && &*p.proto == proto;
        match &svc.kind {
            Kind::External(_) => Lookup::NxDomain,
            Kind::ClusterIp(ips) => {
                if !svc.ports.iter().any(matches) {
                    return Lookup::NxDomain;
                }
                match qtype {
                    RecordType::SRV => self.cluster_ip_srv(svc, ips, qname, matches),
                    _ => self.addresses(qname, qtype, ips.iter().copied()),
                }
            }
            Kind::Headless => {
                if !svc.endpoints.iter().any(|e| e.ports.iter().any(matches)) {
                    return Lookup::NxDomain;
                }
                match qtype {
                    RecordType::SRV => self.endpoint_srv(svc, qname, |_| true, matches),
                    _ => self.addresses(
                        qname,
                        qtype,
                        svc.endpoints
                            .iter()
                            .filter(|e| e.ports.iter().any(matches))
                            .map(|e| e.ip),
                    ),
                }
            }
        }
    }

    fn alias(&self, qname: &Name, qtype: RecordType, target: &Name) -> Lookup {
        if qtype == RecordType::SRV {
            // CoreDNS serves no SRV for ExternalName Services.
            return Lookup::NoData;
        }
        Lookup::Alias {
            cname: Box::new(Record::from_rdata(
                qname.clone(),
                self.ttl,
                RData::CNAME(CNAME(target.clone())),
            )),
            target: target.clone(),
        }
    }

    /// A/AAAA records of the addresses of the asked family (deduplicated), NODATA for any
    /// other type or when none is of that family.
    fn addresses(
        &self,
        qname: &Name,
        qtype: RecordType,
        ips: impl Iterator<Item = IpAddr>,
    ) -> Lookup {
        let want_v4 = match qtype {
            RecordType::A => true,
            RecordType::AAAA => false,
            _ => return Lookup::NoData,
        };
        let mut answers: Vec<Record> = Vec::new();
        let mut seen: Vec<IpAddr> = Vec::new();
        for ip in ips {
            if ip.is_ipv4() != want_v4 || seen.contains(&ip) {
                continue;
            }
            seen.push(ip);
            answers.push(addr_record(qname.clone(), self.ttl, ip));
        }
        answer(answers, Vec::new())
    }

    fn cluster_ip_srv(
        &self,
        svc: &Svc,
        ips: &[IpAddr],
        qname: &Name,
        port_ok: impl Fn(&Port) -> bool,
    ) -> Lookup {
        let ports: Vec<&Port> = svc.ports.iter().filter(|p| port_ok(p)).collect();
        let weight = srv_weight(ports.len());
        let answers = ports
            .iter()
            .map(|p| {
                Record::from_rdata(
                    qname.clone(),
                    self.ttl,
                    RData::SRV(SRV::new(0, weight, p.port, svc.fqdn.clone())),
                )
            })
            .collect();
        let extra = if ports.is_empty() {
            Vec::new()
        } else {
            ips.iter()
                .map(|ip| addr_record(svc.fqdn.clone(), self.ttl, *ip))
                .collect()
        };
        answer(answers, extra)
    }

    fn endpoint_srv(
        &self,
        svc: &Svc,
        qname: &Name,
        ep_ok: impl Fn(&Endpoint) -> bool,
        port_ok: impl Fn(&Port) -> bool,
    ) -> Lookup {
        let pairs: Vec<(&Endpoint, &Port)> = svc
            .endpoints
            .iter()
            .filter(|e| ep_ok(e))
            .flat_map(|e| e.ports.iter().filter(|p| port_ok(p)).map(move |p| (e, p)))
            .collect();
        let weight = srv_weight(pairs.len());
        let mut answers = Vec::with_capacity(pairs.len());
        let mut extra: Vec<Record> = Vec::new();
        let mut with_extra: Vec<IpAddr> = Vec::new();
        for (ep, port) in pairs {
            answers.push(Record::from_rdata(
                qname.clone(),
                self.ttl,
                RData::SRV(SRV::new(0, weight, port.port, ep.fqdn.clone())),
            ));
            if !with_extra.contains(&ep.ip) {
                with_extra.push(ep.ip);
                extra.push(addr_record(ep.fqdn.clone(), self.ttl, ep.ip));
            }
        }
        answer(answers, extra)
    }

    /// `<a-b-c-d>.<ns>.pod.<domain>` (`pods insecure`: any IP, any namespace).
    fn pod_name(&self, rest: &str, qname: &Name, qtype: RecordType) -> Lookup {
        let Some((pod, ns)) = rest.split_once('.') else {
            // `<ns>.pod.<domain>`
            return Lookup::NoData;
        };
        if ns.contains('.') || pod.is_empty() {
            return Lookup::NxDomain;
        }
        let ip = if pod.matches('-').count() == 3 && !pod.contains("--") {
            pod.replace('-', ".")
                .parse::<Ipv4Addr>()
                .ok()
                .map(IpAddr::V4)
        } else {
            pod.replace('-', ":")
                .parse::<Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        };
        match ip {
            Some(ip) => self.addresses(qname, qtype, std::iter::once(ip)),
            None => Lookup::NxDomain,
        }
    }

    /// PTR for a known IP in `in-addr.arpa`/`ip6.arpa`; everything else there falls through.
    fn reverse(&self, lower: &str, qname: &Name, qtype: RecordType) -> Lookup {
        if qtype != RecordType::PTR
            || !(lower.ends_with(".in-addr.arpa") || lower.ends_with(".ip6.arpa"))
            || self.reverse.is_empty()
        {
            return Lookup::Forward;
        }
        let Ok(net) = qname.parse_arpa_name() else {
            return Lookup::Forward;
        };
        if net.prefix_len() != net.max_prefix_len() {
            return Lookup::Forward;
        }
        match self.reverse.get(&net.addr()) {
            Some(targets) => answer(
                targets
                    .iter()
                    .filter_map(|t| self.ptr_name(*t))
                    .map(|n| {
                        Record::from_rdata(qname.clone(), self.ttl, RData::PTR(PTR(n.clone())))
                    })
                    .collect(),
                Vec::new(),
            ),
            None => Lookup::Forward,
        }
    }

    fn ptr_name(&self, t: Ptr) -> Option<&Name> {
        match t {
            Ptr::Service(s) => self.services.get(s as usize).map(|s| &s.fqdn),
            Ptr::Endpoint(s, e) => self
                .services
                .get(s as usize)
                .and_then(|s| s.endpoints.get(e as usize))
                .map(|e| &e.fqdn),
        }
    }
}

fn ns_name(origin: &Name) -> Name {
    Name::from_ascii("ns.dns")
        .ok()
        .and_then(|n| n.append_domain(origin).ok())
        .unwrap_or_else(|| origin.clone())
}

fn soa_record(origin: &Name, serial: u32, ttl: u32) -> Record {
    let rname = Name::from_ascii("hostmaster")
        .ok()
        .and_then(|n| n.append_domain(origin).ok())
        .unwrap_or_else(|| origin.clone());
    let soa = SOA::new(ns_name(origin), rname, serial, 7200, 1800, 86400, ttl);
    Record::from_rdata(origin.clone(), ttl, RData::SOA(soa))
}

fn addr_record(name: Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, data)
}

/// CoreDNS's weight for `n` SRV records of one priority: 100/n, rounded down.
fn srv_weight(n: usize) -> u16 {
    100usize.checked_div(n).map_or(100, |w| w as u16)
}

fn answer(answers: Vec<Record>, additionals: Vec<Record>) -> Lookup {
    if answers.is_empty() {
        Lookup::NoData
    } else {
        Lookup::Answer {
            answers,
            additionals,
        }
    }
}

/// Write `name` lowercase, dotted, without the trailing dot into `out`; false when a label
/// holds a dot or a non-ASCII byte (such a name matches no cluster record).
pub(crate) fn lower_name(name: &Name, out: &mut String) -> bool {
    out.clear();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            if b == b'.' || !b.is_ascii() {
                return false;
            }
            out.push(b.to_ascii_lowercase() as char);
        }
    }
    true
}
