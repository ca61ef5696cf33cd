//! Where a proxy request goes, as upstream's `ResourceLocation`s decide it: the name part
//! `[scheme:]name[:port]`, then the pod's IP and port, a ready endpoint of the service, or the
//! node's kubelet (or another port on the node).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8slite_api::ApiError;
use serde_json::Value;

use super::endpoints::{pick_endpoint, service_port_name};
use crate::ApiServer;
use crate::streaming::target;

/// `http` or `https` towards the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Plain HTTP.
    Http,
    /// TLS, the target's certificate not verified (as upstream).
    Https,
}

/// The parts of a proxy name (`SplitSchemeNamePort`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NameParts<'a> {
    pub scheme: Option<Scheme>,
    pub name: &'a str,
    pub port: &'a str,
}

/// Split `[scheme:]name[:port]` as upstream does: one part is a name, two are name and port,
/// three are scheme, name and port; the scheme is `http`, `https` or empty and the name is not.
pub(crate) fn split_scheme_name_port(id: &str) -> Option<NameParts<'_>> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    let scheme = match scheme {
        "" => None,
        "http" => Some(Scheme::Http),
        "https" => Some(Scheme::Https),
        _ => return None,
    };
    (!name.is_empty()).then_some(NameParts { scheme, name, port })
}

/// How the API server reaches the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// Through the tunnel of the kubelet at `kubelet` to a pod address of that node.
    Tunnel {
        /// The node's kubelet API.
        kubelet: SocketAddr,
        /// The pod's address.
        target: SocketAddr,
    },
    /// The kubelet API itself (TLS, the server's kubelet-client certificate).
    Kubelet(SocketAddr),
    /// A plain connection from the API server (a node port, a host-network pod, an endpoint
    /// of no known node).
    Direct(SocketAddr),
}

/// A resolved proxy target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub scheme: Scheme,
    pub via: Via,
}

impl Location {
    /// `host:port` for the `Host` header.
    pub(crate) fn authority(&self) -> String {
        match self.via {
            Via::Tunnel { target, .. } => target.to_string(),
            Via::Kubelet(a) | Via::Direct(a) => a.to_string(),
        }
    }
}

fn default_port(scheme: Scheme) -> u16 {
    match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    }
}

/// Resolve `{plural}/{id}/proxy` in namespace `ns`.
pub(crate) async fn resolve(
    server: &Arc<ApiServer>,
    plural: &str,
    ns: &str,
    id: &str,
) -> Result<Location, ApiError> {
    match plural {
        "pods" => pod(server, ns, id).await,
        "services" => service(server, ns, id).await,
        _ => node(server, id).await,
    }
}

async fn pod(server: &Arc<ApiServer>, ns: &str, id: &str) -> Result<Location, ApiError> {
    let parts = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid pod request {id:?}")))?;
    let pod = target::object(server, "pods", Some(ns), parts.name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "pods", parts.name))?;
    let scheme = parts.scheme.unwrap_or(Scheme::Http);
    let (ip, port) = pod_address(&pod, parts.port, scheme)?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let via = if node_name.is_empty() {
        Via::Direct(SocketAddr::new(ip, port))
    } else {
        via_node(server, node_name, SocketAddr::new(ip, port)).await?
    };
    Ok(Location { scheme, via })
}

/// The pod's IP and the port to use: the requested one (a number or a container port's name),
/// else the first declared container port, else the scheme's default.
pub(crate) fn pod_address(
    pod: &Value,
    port: &str,
    scheme: Scheme,
) -> Result<(IpAddr, u16), ApiError> {
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<IpAddr>().ok())
        .filter(is_global_unicast)
        .ok_or_else(|| ApiError::bad_request("address not allowed"))?;
    let container_ports = || {
        pod.pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("ports").and_then(Value::as_array))
            .flatten()
    };
    let number = |p: &Value| {
        p.get("containerPort")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
    };
    let port = if port.is_empty() {
        container_ports()
            .find_map(number)
            .unwrap_or(default_port(scheme))
    } else if let Ok(n) = port.parse::<u16>() {
        n
    } else {
        container_ports()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(port))
            .and_then(number)
            .ok_or_else(|| {
                ApiError::bad_request(format!("pod has no container port named {port:?}"))
            })?
    };
    Ok((ip, port))
}

/// Not unspecified, loopback, multicast, link-local or broadcast (Go's `IsGlobalUnicast`).
fn is_global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// Through the node's kubelet tunnel, or straight to the node when the address is the node's
/// own (a host-network pod).
async fn via_node(
    server: &Arc<ApiServer>,
    node_name: &str,
    target: SocketAddr,
) -> Result<Via, ApiError> {
    let kubelet = target::kubelet(server, node_name).await?;
    Ok(if kubelet.ip() == target.ip() {
        Via::Direct(target)
    } else {
        Via::Tunnel { kubelet, target }
    })
}

async fn node(server: &Arc<ApiServer>, id: &str) -> Result<Location, ApiError> {
    let parts = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid node request {id:?}")))?;
    let kubelet = target::kubelet(server, parts.name).await?;
    node_location(kubelet, &parts)
}

/// The kubelet itself when no port or the kubelet's port is asked, else that port of the node.
pub(crate) fn node_location(
    kubelet: SocketAddr,
    parts: &NameParts<'_>,
) -> Result<Location, ApiError> {
    if parts.port.is_empty() || parts.port == kubelet.port().to_string() {
        return Ok(Location {
            scheme: Scheme::Https,
            via: Via::Kubelet(kubelet),
        });
    }
    let port: u16 = parts
        .port
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid node port {:?}", parts.port)))?;
    Ok(Location {
        scheme: parts.scheme.unwrap_or(Scheme::Http),
        via: Via::Direct(SocketAddr::new(kubelet.ip(), port)),
    })
}

async fn service(server: &Arc<ApiServer>, ns: &str, id: &str) -> Result<Location, ApiError> {
    let parts = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid service request {id:?}")))?;
    let svc = target::object(server, "services", Some(ns), parts.name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "services", parts.name))?;
    let port_name = service_port_name(&svc, parts.name, parts.port)?;
    let endpoints = target::object(server, "endpoints", Some(ns), parts.name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "endpoints", parts.name))?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or_default();
    let ep = pick_endpoint(&endpoints, &port_name, seed, parts.name, id)?;
    let target = SocketAddr::new(ep.ip, ep.port);
    let node_name = match ep.node {
        Some(n) => Some(n),
        None => match ep.pod {
            Some(p) => target::object(server, "pods", Some(ns), &p)
                .await?
                .and_then(|p| {
                    p.pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                }),
            None => None,
        },
    };
    let via = match node_name.filter(|n| !n.is_empty()) {
        Some(n) => via_node(server, &n, target).await?,
        None => Via::Direct(target),
    };
    Ok(Location {
        scheme: parts.scheme.unwrap_or(Scheme::Http),
        via,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_split_as_upstream() {
        let p = |s, n, port| {
            Some(NameParts {
                scheme: s,
                name: n,
                port,
            })
        };
        assert_eq!(split_scheme_name_port("web"), p(None, "web", ""));
        assert_eq!(split_scheme_name_port("web:80"), p(None, "web", "80"));
        assert_eq!(
            split_scheme_name_port("https:web:metrics"),
            p(Some(Scheme::Https), "web", "metrics")
        );
        assert_eq!(
            split_scheme_name_port("http:web:"),
            p(Some(Scheme::Http), "web", "")
        );
        // Two parts are always name and port, as upstream reads them.
        assert_eq!(split_scheme_name_port("http:web"), p(None, "http", "web"));
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
    }

    #[test]
    fn pod_ports() {
        let pod = json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "ports": [{"name": "web", "containerPort": 8080}, {"containerPort": 9090}]}
        ]}, "status": {"podIP": "10.42.0.5"}});
        let ip: IpAddr = "10.42.0.5".parse().expect("ip");
        assert_eq!(
            pod_address(&pod, "", Scheme::Http).expect("first port"),
            (ip, 8080)
        );
        assert_eq!(
            pod_address(&pod, "81", Scheme::Http).expect("number"),
            (ip, 81)
        );
        assert_eq!(
            pod_address(&pod, "web", Scheme::Http).expect("named"),
            (ip, 8080)
        );
        assert_eq!(
            pod_address(&pod, "nope", Scheme::Http)
                .expect_err("unknown name")
                .code,
            400
        );
        let bare =
            json!({"spec": {"containers": [{"name": "a"}]}, "status": {"podIP": "10.42.0.5"}});
        assert_eq!(
            pod_address(&bare, "", Scheme::Https).expect("default"),
            (ip, 443)
        );
        for status in [
            json!({}),
            json!({"podIP": "127.0.0.1"}),
            json!({"podIP": ""}),
        ] {
            let e = pod_address(&json!({"status": status}), "80", Scheme::Http)
                .expect_err("no usable IP");
            assert_eq!((e.code, e.message.as_str()), (400, "address not allowed"));
        }
    }

    #[test]
    fn node_ports() {
        let kubelet: SocketAddr = "192.168.5.2:10250".parse().expect("addr");
        let parts = |port| NameParts {
            scheme: None,
            name: "n1",
            port,
        };
        let kl = Location {
            scheme: Scheme::Https,
            via: Via::Kubelet(kubelet),
        };
        assert_eq!(node_location(kubelet, &parts("")).expect("kubelet"), kl);
        assert_eq!(
            node_location(kubelet, &parts("10250")).expect("kubelet"),
            kl
        );
        assert_eq!(
            node_location(kubelet, &parts("9100")).expect("other port"),
            Location {
                scheme: Scheme::Http,
                via: Via::Direct("192.168.5.2:9100".parse().expect("addr"))
            }
        );
        assert!(node_location(kubelet, &parts("x")).is_err());
    }
}
