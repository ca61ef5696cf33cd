//! Building the index of one snapshot from Services and EndpointSlices.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Endpoint, Kind, Port, Ptr, Records, Svc, proto_name, soa_record};
use crate::objects::{ServiceInfo, SliceInfo, compact};

fn normalize_domain(domain: &str) -> Box<str> {
    domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase()
        .into()
}

pub(super) fn fqdn(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

pub(super) fn dashed(ip: &str) -> String {
    ip.replace(['.', ':'], "-")
}

/// An external name as an absolute DNS name (`example.com` → `example.com.`).
pub(super) fn fqdn_external(text: &str) -> Option<Name> {
    let text = text.trim().trim_end_matches('.');
    if text.is_empty() {
        return None;
    }
    fqdn(text)
}

impl Records {
    /// No records: every cluster name is NXDOMAIN (the intermediate nodes are NODATA), other
    /// names are forwarded.
    pub fn empty(domain: &str) -> Self {
        Self::build_compact(domain, &[], &[])
    }

    /// Index the Services and EndpointSlices of the cluster.
    pub fn build(domain: &str, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Self {
        Self::build_compact(domain, &compact(services), &compact(slices))
    }

    /// [`Records::build`] over the compact copies a watch cache keeps.
    pub fn build_compact(
        domain: &str,
        services: &[Arc<ServiceInfo>],
        slices: &[Arc<SliceInfo>],
    ) -> Self {
        let mut recs = Records::skeleton(domain, services.len());
        let mut publish_not_ready = Vec::with_capacity(services.len());
        for svc in services {
            let (Some(name), Some(ns)) = (svc.name(), svc.namespace()) else {
                continue;
            };
            let key = format!("{name}.{ns}").to_ascii_lowercase();
            let Some(fqdn) = fqdn(&format!("{key}.svc.{}", recs.domain)) else {
                continue;
            };
            let Some(spec) = &svc.spec else { continue };
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                match spec.external_name.as_deref().and_then(fqdn_external) {
                    Some(target) => Kind::External(target),
                    None => continue,
                }
            } else if spec.cluster_ip.as_deref() == Some("None") {
                Kind::Headless
            } else {
                let mut ips: Vec<IpAddr> = spec
                    .cluster_ips
                    .iter()
                    .flat_map(|l| l.iter())
                    .chain(spec.cluster_ip.iter())
                    .filter_map(|s| s.parse().ok())
                    .collect();
                ips.dedup();
                let mut seen = HashSet::new();
                ips.retain(|ip| seen.insert(*ip));
                Kind::ClusterIp(ips)
            };
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: p.name.as_deref().unwrap_or("").to_ascii_lowercase().into(),
                        proto: proto_name(p.protocol.as_deref().unwrap_or("TCP")),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect();
            if name == "kube-dns"
                && ns == "kube-system"
                && let Kind::ClusterIp(ips) = &kind
            {
                recs.dns_ips = ips.clone();
            }
            if recs.by_name.contains_key(key.as_str()) {
                continue;
            }
            recs.namespaces.insert(ns.to_ascii_lowercase().into());
            recs.by_name.insert(key.into(), recs.services.len() as u32);
            publish_not_ready.push(spec.publish_not_ready.unwrap_or(false));
            recs.services.push(Svc {
                fqdn,
                kind,
                ports,
                endpoints: Vec::new(),
            });
        }

        // Endpoints: per Service, deduplicated by (IP, name) across its slices (a Service whose
        // endpoints resolve named ports differently has one slice per port set).
        let mut seen: HashMap<(u32, IpAddr), usize> = HashMap::new();
        for slice in slices {
            if &*slice.address_type == "FQDN" {
                continue;
            }
            let (Some(ns), Some(svc_name)) = (slice.namespace(), slice.service()) else {
                continue;
            };
            let key = format!("{svc_name}.{ns}").to_ascii_lowercase();
            let Some(&idx) = recs.by_name.get(key.as_str()) else {
                continue;
            };
            let svc = &mut recs.services[idx as usize];
            if matches!(svc.kind, Kind::External(_)) {
                continue;
            }
            let all = publish_not_ready[idx as usize];
            let ports: Arc<Vec<Port>> = Arc::new(
                slice
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some(Port {
                            name: p.name.as_deref().unwrap_or("").to_ascii_lowercase().into(),
                            proto: proto_name(p.protocol.as_deref().unwrap_or("TCP")),
                            port: u16::try_from(p.port?).ok()?,
                        })
                    })
                    .collect(),
            );
            for ep in slice.endpoints.iter() {
                // A nil `ready` means ready (EndpointSlice API); publishNotReadyAddresses serves
                // them all.
                let ready = ep.ready != Some(false);
                if !ready && !all {
                    continue;
                }
                for addr in ep.addresses.iter() {
                    let Some(ip) = addr.ip() else {
                        continue;
                    };
                    if let Some(&at) = seen.get(&(idx, ip)) {
                        let existing = &mut svc.endpoints[at];
                        for p in ports.iter() {
                            if !existing.ports.contains(p) {
                                Arc::make_mut(&mut existing.ports).push(p.clone());
                            }
                        }
                        continue;
                    }
                    let host = match ep.hostname.as_deref() {
                        Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
                        _ => dashed(&addr.text()).to_ascii_lowercase(),
                    };
                    let Some(ep_fqdn) = Name::from_ascii(&host)
                        .ok()
                        .filter(|_| !host.contains('.'))
                        .and_then(|l| l.append_domain(&svc.fqdn).ok())
                    else {
                        continue;
                    };
                    seen.insert((idx, ip), svc.endpoints.len());
                    svc.endpoints.push(Endpoint {
                        host: host.into(),
                        fqdn: ep_fqdn,
                        ip,
                        ports: ports.clone(),
                    });
                    recs.endpoint_count += 1;
                }
            }
        }

        recs.index_reverse();
        recs
    }

    /// No services yet, for `domain`, with room for `services`.
    pub(super) fn skeleton(domain: &str, services: usize) -> Self {
        let domain = normalize_domain(domain);
        let origin = fqdn(&domain).unwrap_or_else(Name::root);
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Records {
            soa: soa_record(&origin, serial, 5),
            domain,
            origin,
            ttl: 5,
            services: Vec::with_capacity(services),
            by_name: HashMap::with_capacity(services),
            namespaces: HashSet::new(),
            reverse: HashMap::new(),
            dns_ips: Vec::new(),
            endpoint_count: 0,
        }
    }

    /// Reverse names: endpoints first, then ClusterIPs replace them (CoreDNS answers a
    /// Service IP with the Service name only).
    pub(super) fn index_reverse(&mut self) {
        for svc in &mut self.services {
            svc.endpoints.shrink_to_fit();
        }
        for (si, svc) in self.services.iter().enumerate() {
            for (ei, ep) in svc.endpoints.iter().enumerate() {
                let targets = self.reverse.entry(ep.ip).or_default();
                let known = targets.iter().any(|t| match *t {
                    Ptr::Endpoint(s, e) => {
                        self.services[s as usize].endpoints[e as usize].fqdn == ep.fqdn
                    }
                    Ptr::Service(_) => false,
                });
                if !known {
                    targets.push(Ptr::Endpoint(si as u32, ei as u32));
                }
            }
        }
        for (si, svc) in self.services.iter().enumerate() {
            if let Kind::ClusterIp(ips) = &svc.kind {
                for ip in ips {
                    self.reverse.insert(*ip, vec![Ptr::Service(si as u32)]);
                }
            }
        }
        self.reverse.shrink_to_fit();
        for t in self.reverse.values_mut() {
            t.shrink_to_fit();
        }
    }
}
