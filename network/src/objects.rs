//! Compact copies of what the service proxy and the cluster DNS read of Services and
//! EndpointSlices. A long-running agent keeps one per object (built when the watch delivers it)
//! instead of the k8s-openapi value: a Service + EndpointSlice pair is a dozen small heap
//! blocks here instead of about fifty, and a few hundred bytes instead of ≈ 3 KiB. Every field
//! keeps the API's meaning (absent stays absent), so code reading these decides exactly as it
//! would on the full objects; the proxy and the DNS accept either ([`ServiceInfo::from`]).

use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Values of enumerated API fields, stored without an allocation.
const KNOWN: [&str; 20] = [
    "ClusterIP",
    "NodePort",
    "LoadBalancer",
    "ExternalName",
    "TCP",
    "UDP",
    "SCTP",
    "None",
    "ClientIP",
    "Cluster",
    "Local",
    "IPv4",
    "IPv6",
    "FQDN",
    "VIP",
    "Proxy",
    "SingleStack",
    "PreferDualStack",
    "RequireDualStack",
    "",
];

/// A string field whose usual values are static (`TCP`, `ClusterIP`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Text {
    Static(&'static str),
    Owned(Box<str>),
}

impl Text {
    fn new(s: &str) -> Self {
        match KNOWN.iter().find(|k| **k == s) {
            Some(k) => Text::Static(k),
            None => Text::Owned(s.into()),
        }
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Owned(s) => s,
        }
    }
}

/// An endpoint address: parsed when its text is the canonical form of an IP address, else the
/// text as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Addr {
    Ip(IpAddr),
    Text(Box<str>),
}

impl Addr {
    fn new(s: &str) -> Self {
        match s.parse::<IpAddr>() {
            Ok(ip) if ip.to_string() == s => Addr::Ip(ip),
            _ => Addr::Text(s.into()),
        }
    }

    /// The address, as `text().parse()` gives it.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        match self {
            Addr::Ip(ip) => Some(*ip),
            Addr::Text(t) => t.parse().ok(),
        }
    }

    /// The address as written in the EndpointSlice.
    pub(crate) fn text(&self) -> Cow<'_, str> {
        match self {
            Addr::Ip(ip) => Cow::Owned(ip.to_string()),
            Addr::Text(t) => Cow::Borrowed(t),
        }
    }
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

fn text(s: &Option<String>) -> Option<Text> {
    s.as_deref().map(Text::new)
}

fn list(v: &Option<Vec<String>>) -> Option<Box<[Box<str>]>> {
    v.as_ref()
        .map(|v| v.iter().map(|s| Box::from(s.as_str())).collect())
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServicePortInfo {
    pub name: Option<Box<str>>,
    pub protocol: Option<Text>,
    pub port: i32,
    pub node_port: Option<i32>,
}

/// One load-balancer ingress of a Service's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IngressInfo {
    pub ip: Option<Box<str>>,
    pub ip_mode: Option<Text>,
}

/// The spec fields read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpecInfo {
    pub type_: Option<Text>,
    pub cluster_ip: Option<Box<str>>,
    pub cluster_ips: Option<Box<[Box<str>]>>,
    pub external_ips: Option<Box<[Box<str>]>>,
    pub external_name: Option<Box<str>>,
    pub source_ranges: Option<Box<[Box<str>]>>,
    pub session_affinity: Option<Text>,
    pub affinity_timeout: Option<i32>,
    pub health_check_node_port: Option<i32>,
    pub ports: Option<Box<[ServicePortInfo]>>,
    pub external_traffic_policy: Option<Text>,
    pub internal_traffic_policy: Option<Text>,
    pub publish_not_ready: Option<bool>,
}

/// What the service proxy and the cluster DNS read of a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub(crate) namespace: Option<Box<str>>,
    pub(crate) name: Option<Box<str>>,
    pub(crate) uid: Option<Box<str>>,
    pub(crate) spec: Option<SpecInfo>,
    pub(crate) ingress: Box<[IngressInfo]>,
}

impl ServiceInfo {
    /// `metadata.namespace`.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// `metadata.name`.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }
}

impl From<&Service> for ServiceInfo {
    fn from(s: &Service) -> Self {
        let spec = s.spec.as_ref().map(|sp| SpecInfo {
            type_: text(&sp.type_),
            cluster_ip: boxed(&sp.cluster_ip),
            cluster_ips: list(&sp.cluster_ips),
            external_ips: list(&sp.external_ips),
            external_name: boxed(&sp.external_name),
            source_ranges: list(&sp.load_balancer_source_ranges),
            session_affinity: text(&sp.session_affinity),
            affinity_timeout: sp
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds),
            health_check_node_port: sp.health_check_node_port,
            ports: sp.ports.as_ref().map(|ps| {
                ps.iter()
                    .map(|p| ServicePortInfo {
                        name: boxed(&p.name),
                        protocol: text(&p.protocol),
                        port: p.port,
                        node_port: p.node_port,
                    })
                    .collect()
            }),
            external_traffic_policy: text(&sp.external_traffic_policy),
            internal_traffic_policy: text(&sp.internal_traffic_policy),
            publish_not_ready: sp.publish_not_ready_addresses,
        });
        let ingress = s
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ing| {
                ing.iter()
                    .map(|i| IngressInfo {
                        ip: boxed(&i.ip),
                        ip_mode: text(&i.ip_mode),
                    })
                    .collect()
            })
            .unwrap_or_default();
        ServiceInfo {
            namespace: boxed(&s.metadata.namespace),
            name: boxed(&s.metadata.name),
            uid: boxed(&s.metadata.uid),
            spec,
            ingress,
        }
    }
}

/// One port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlicePortInfo {
    pub name: Option<Box<str>>,
    pub protocol: Option<Text>,
    pub port: Option<i32>,
}

/// One endpoint of an EndpointSlice (`conditions` absent: all three `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointInfo {
    pub addresses: Box<[Addr]>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub hostname: Option<Box<str>>,
    pub node_name: Option<Box<str>>,
}

/// What the service proxy and the cluster DNS read of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    pub(crate) namespace: Option<Box<str>>,
    /// The `kubernetes.io/service-name` label.
    pub(crate) service: Option<Box<str>>,
    pub(crate) address_type: Text,
    pub(crate) ports: Option<Box<[SlicePortInfo]>>,
    pub(crate) endpoints: Box<[EndpointInfo]>,
}

impl SliceInfo {
    /// `metadata.namespace`.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }
}

impl From<&EndpointSlice> for SliceInfo {
    fn from(s: &EndpointSlice) -> Self {
        let service = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(|v| Box::from(v.as_str()));
        SliceInfo {
            namespace: boxed(&s.metadata.namespace),
            service,
            address_type: Text::new(&s.address_type),
            ports: s.ports.as_ref().map(|ps| {
                ps.iter()
                    .map(|p| SlicePortInfo {
                        name: boxed(&p.name),
                        protocol: text(&p.protocol),
                        port: p.port,
                    })
                    .collect()
            }),
            endpoints: s
                .endpoints
                .iter()
                .map(|e| {
                    let c = e.conditions.as_ref();
                    EndpointInfo {
                        addresses: e.addresses.iter().map(|a| Addr::new(a)).collect(),
                        ready: c.and_then(|c| c.ready),
                        serving: c.and_then(|c| c.serving),
                        terminating: c.and_then(|c| c.terminating),
                        hostname: boxed(&e.hostname),
                        node_name: boxed(&e.node_name),
                    }
                })
                .collect(),
        }
    }
}

/// Compact copies of `objects`.
pub fn compact<'a, T: 'a, U>(objects: impl IntoIterator<Item = &'a Arc<T>>) -> Vec<Arc<U>>
where
    U: for<'b> From<&'b T>,
{
    objects
        .into_iter()
        .map(|o| Arc::new(U::from(&**o)))
        .collect()
}

#[cfg(test)]
mod tests;
