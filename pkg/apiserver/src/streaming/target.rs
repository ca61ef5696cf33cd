//! Which kubelet and container a streaming request addresses: the pod (from the store), its
//! node's kubelet endpoint (InternalIP + `status.daemonEndpoints.kubeletEndpoint.Port`), and the
//! container name (defaulted when the pod has exactly one container).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8slite_api::ApiError;
use serde_json::Value;

use crate::ApiServer;
use crate::objects::from_stored;

/// Default kubelet port when the node does not report one.
pub(crate) const DEFAULT_KUBELET_PORT: u16 = 10250;

/// A pod on a node, resolved.
pub(crate) struct PodTarget {
    pub pod: Value,
    pub node: SocketAddr,
}

/// An object of a core/v1 resource from the store (`None` when absent).
pub(crate) async fn object(
    server: &Arc<ApiServer>,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let registry = server.registry();
    let info = registry
        .get("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("resource {plural} not registered")))?;
    let kv = server
        .store()
        .get(&info.key(ns, name))
        .await
        .map_err(|e| ApiError::internal(format!("reading {plural} {name}: {e}")))?;
    kv.map(|kv| from_stored(&kv)).transpose()
}

/// The pod and its node's kubelet address.
pub(crate) async fn resolve(
    server: &Arc<ApiServer>,
    ns: &str,
    name: &str,
) -> Result<PodTarget, ApiError> {
    let pod = object(server, "pods", Some(ns), name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = kubelet(server, node_name).await?;
    Ok(PodTarget { pod, node })
}

/// The kubelet API address of node `node_name` (404 when there is no such node).
pub(crate) async fn kubelet(
    server: &Arc<ApiServer>,
    node_name: &str,
) -> Result<SocketAddr, ApiError> {
    let node = object(server, "nodes", None, node_name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?;
    kubelet_address(&node)
        .ok_or_else(|| ApiError::internal(format!("node {node_name} reports no usable address")))
}

/// A node object's kubelet API address: its address to dial and its reported kubelet port.
pub(crate) fn kubelet_address(node: &Value) -> Option<SocketAddr> {
    let addr = node_address(node)?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some(SocketAddr::new(addr, port))
}

/// The node's address to dial: InternalIP, then ExternalIP, then a Hostname that is an IP.
fn node_address(node: &Value) -> Option<IpAddr> {
    let addrs = node.pointer("/status/addresses")?.as_array()?;
    ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addrs.iter().find_map(|a| {
                (a.get("type").and_then(Value::as_str) == Some(kind))
                    .then(|| a.get("address").and_then(Value::as_str))
                    .flatten()
                    .and_then(|s| s.parse().ok())
            })
        })
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request names, or the pod's only container.
pub(crate) fn container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    match requested.filter(|c| !c.is_empty()) {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_defaulting() {
        let pod = serde_json::json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            container(&pod, None).expect_err("ambiguous").message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(container(&pod, Some("b")).expect("b"), "b");
        assert_eq!(container(&pod, Some("i")).expect("i"), "i");
        assert_eq!(container(&pod, Some("x")).expect_err("x").code, 400);
        let one =
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container(&one, None).expect("a"), "a");
        let node = serde_json::json!({"status": {"addresses": [
            {"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.7"}]}});
        assert_eq!(node_address(&node), "10.0.0.7".parse().ok());
    }
}
