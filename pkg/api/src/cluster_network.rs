//! The cluster network settings the server publishes for its agents, as the ConfigMap
//! `kube-system/k8slite-network` (kubeadm keeps its cluster configuration the same way, in
//! `kube-system/kubeadm-config`). The server writes it at every start from its flags; every
//! agent reads it when it starts, so `--cluster-cidr`, `--service-cidr`, `--cluster-dns`,
//! `--cluster-domain` and `--network-backend` are given once, to the server.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Namespace of the ConfigMap.
pub const NAMESPACE: &str = "kube-system";
/// Name of the ConfigMap.
pub const CONFIG_MAP: &str = "k8slite-network";

const CLUSTER_CIDR: &str = "cluster-cidr";
const SERVICE_CIDR: &str = "service-cidr";
const CLUSTER_DNS: &str = "cluster-dns";
const CLUSTER_DOMAIN: &str = "cluster-domain";
const BACKEND: &str = "network-backend";
const MTU: &str = "network-mtu";
const SERVICELB: &str = "servicelb";
const DNS: &str = "dns";

/// What the ConfigMap holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNetwork {
    /// The pod network (`--cluster-cidr`).
    pub cluster_cidr: IpNet,
    /// The service range (`--service-cidr`).
    pub service_cidr: IpNet,
    /// The cluster DNS address (`--cluster-dns`; the `kube-dns` Service's ClusterIP).
    pub cluster_dns: IpAddr,
    /// The cluster domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// `vxlan`, `host-gw` or `none` (`--network-backend`).
    pub backend: String,
    /// MTU of the pod network when set on the server (`--network-mtu`); agents detect it
    /// otherwise.
    pub mtu: Option<u32>,
    /// Whether agents serve LoadBalancer Services (off with `--disable servicelb`).
    pub servicelb: bool,
    /// Whether agents run the embedded cluster DNS (off with `--disable dns`).
    pub dns: bool,
}

/// Why the ConfigMap could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterNetworkError {
    /// A key is missing.
    #[error("configmap {NAMESPACE}/{CONFIG_MAP} has no key {0:?}")]
    Missing(&'static str),
    /// A value does not parse.
    #[error("configmap {NAMESPACE}/{CONFIG_MAP}: {key} {value:?} is not valid")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
    },
}

impl ClusterNetwork {
    /// The ConfigMap for these settings.
    pub fn to_config_map(&self) -> ConfigMap {
        let mut data = BTreeMap::new();
        data.insert(CLUSTER_CIDR.to_string(), self.cluster_cidr.to_string());
        data.insert(SERVICE_CIDR.to_string(), self.service_cidr.to_string());
        data.insert(CLUSTER_DNS.to_string(), self.cluster_dns.to_string());
        data.insert(CLUSTER_DOMAIN.to_string(), self.cluster_domain.clone());
        data.insert(BACKEND.to_string(), self.backend.clone());
        if let Some(mtu) = self.mtu {
            data.insert(MTU.to_string(), mtu.to_string());
        }
        data.insert(SERVICELB.to_string(), self.servicelb.to_string());
        data.insert(DNS.to_string(), self.dns.to_string());
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIG_MAP.to_string()),
                namespace: Some(NAMESPACE.to_string()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "k8slite".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        }
    }

    /// The settings in `cm`.
    pub fn from_config_map(cm: &ConfigMap) -> Result<Self, ClusterNetworkError> {
        let empty = BTreeMap::new();
        let data = cm.data.as_ref().unwrap_or(&empty);
        let get = |k: &'static str| {
            data.get(k)
                .map(|v| v.trim().to_string())
                .ok_or(ClusterNetworkError::Missing(k))
        };
        fn parse<T: std::str::FromStr>(
            k: &'static str,
            v: String,
        ) -> Result<T, ClusterNetworkError> {
            v.parse()
                .map_err(|_| ClusterNetworkError::Invalid { key: k, value: v })
        }
        let flag = |k: &'static str| match data.get(k).map(|v| v.trim()) {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(ClusterNetworkError::Invalid {
                key: k,
                value: v.to_string(),
            }),
        };
        Ok(Self {
            cluster_cidr: parse::<IpNet>(CLUSTER_CIDR, get(CLUSTER_CIDR)?)?.trunc(),
            service_cidr: parse::<IpNet>(SERVICE_CIDR, get(SERVICE_CIDR)?)?.trunc(),
            cluster_dns: parse(CLUSTER_DNS, get(CLUSTER_DNS)?)?,
            cluster_domain: get(CLUSTER_DOMAIN)?,
            backend: get(BACKEND)?,
            mtu: match data.get(MTU) {
                Some(v) => Some(parse(MTU, v.trim().to_string())?),
                None => None,
            },
            servicelb: flag(SERVICELB)?,
            dns: flag(DNS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterNetwork {
        ClusterNetwork {
            cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
            service_cidr: "10.43.0.0/16".parse().expect("cidr"),
            cluster_dns: "10.43.0.10".parse().expect("ip"),
            cluster_domain: "cluster.local".into(),
            backend: "vxlan".into(),
            mtu: None,
            servicelb: true,
            dns: false,
        }
    }

    #[test]
    fn round_trips_through_the_config_map() {
        let mut s = sample();
        assert_eq!(
            ClusterNetwork::from_config_map(&s.to_config_map()).expect("parse"),
            s
        );
        s.mtu = Some(1400);
        let cm = s.to_config_map();
        assert_eq!(
            cm.data
                .as_ref()
                .and_then(|d| d.get("network-mtu"))
                .map(String::as_str),
            Some("1400")
        );
        assert_eq!(ClusterNetwork::from_config_map(&cm).expect("parse"), s);
    }

    #[test]
    fn bad_values_are_named() {
        let mut cm = sample().to_config_map();
        if let Some(d) = cm.data.as_mut() {
            d.insert("service-cidr".into(), "10.43.0.0".into());
        }
        let err = ClusterNetwork::from_config_map(&cm)
            .expect_err("bad")
            .to_string();
        assert!(
            err.contains("service-cidr") && err.contains("10.43.0.0"),
            "{err}"
        );
        if let Some(d) = cm.data.as_mut() {
            d.remove("service-cidr");
        }
        let err = ClusterNetwork::from_config_map(&cm)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("service-cidr"), "{err}");
    }
}
