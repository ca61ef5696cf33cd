//! A container's environment as the kubelet builds it: `envFrom` (configMaps and secrets, with
//! prefixes), then `env` in order with `$(VAR)` expansion against what came before, values from
//! `fieldRef`, `resourceFieldRef`, `configMapKeyRef` and `secretKeyRef`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8slite_api::quantity::Quantity;

use super::spec::{ConfigError, NodeContext, expand};

/// Where configMaps and secrets come from (the agent's API client; a map in tests).
#[async_trait::async_trait]
pub trait Objects: Send + Sync {
    /// The configMap `ns/name`, `None` when it does not exist.
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    /// The secret `ns/name`, `None` when it does not exist.
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String>;
}

fn cm_data(cm: &ConfigMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned())),
    );
    out
}

fn secret_data(s: &Secret) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    out.extend(
        s.string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    out
}

/// A C identifier-ish env name, as upstream accepts (`[-._a-zA-Z][-._a-zA-Z0-9]*`).
fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    match env.iter_mut().find(|(n, _)| *n == name) {
        Some(e) => e.1 = value,
        None => env.push((name, value)),
    }
}

/// The value of a `fieldRef`.
fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, ConfigError> {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let get = |map: &Option<std::collections::BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['").or_else(|| r.strip_prefix("[\"")))
            .and_then(|r| r.strip_suffix("']").or_else(|| r.strip_suffix("\"]")))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        _ => {
            if let Some(k) = subscript("metadata.labels") {
                get(&m.labels, &k)
            } else if let Some(k) = subscript("metadata.annotations") {
                get(&m.annotations, &k)
            } else {
                return Err(ConfigError::Missing(format!(
                    "unsupported fieldRef fieldPath {path:?}"
                )));
            }
        }
    })
}

/// The value of a `resourceFieldRef` for container `c` (limits default to node allocatable).
fn resource_value(
    pod: &Pod,
    this: &Container,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
    node: &NodeContext,
) -> Result<String, ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let c = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == n)
            .cloned()
            .ok_or_else(|| ConfigError::Missing(format!("container {n:?} not found in the pod")))?,
        None => this.clone(),
    };
    let res = c.resources.clone().unwrap_or_default();
    let (kind, key) = r
        .resource
        .split_once('.')
        .ok_or_else(|| ConfigError::Missing(format!("unsupported resource {:?}", r.resource)))?;
    let list = if kind == "limits" {
        &res.limits
    } else {
        &res.requests
    };
    let mut q = list
        .as_ref()
        .and_then(|l| l.get(key))
        .and_then(Quantity::from_k8s);
    if q.is_none() && kind == "limits" {
        q = match key {
            "cpu" => Some(Quantity::from_milli(i128::from(node.allocatable_cpu_milli))),
            "memory" => Some(Quantity::from_milli(
                i128::from(node.allocatable_memory) * 1000,
            )),
            _ => None,
        };
    }
    let q = q.unwrap_or_else(|| Quantity::from_milli(0));
    let divisor = r
        .divisor
        .as_ref()
        .and_then(Quantity::from_k8s)
        .filter(|d| !d.is_zero())
        .unwrap_or_else(|| Quantity::from_units(1));
    // Rounded up, as upstream (1 CPU for 250m with divisor 1).
    let (n, d) = (q.milli(), divisor.milli());
    let v = (n + d - 1).div_euclid(d).max(if n > 0 { 1 } else { 0 });
    Ok(v.to_string())
}

/// The value of `key` in a configMap's or secret's data (`None`: the object is missing), with
/// the kubelet's messages.
fn key_of(
    data: Option<Vec<(String, String)>>,
    key: &str,
    kind: &str,
    lower: &str,
    ns: &str,
    name: &str,
) -> Result<String, ConfigError> {
    let data = data.ok_or_else(|| ConfigError::Missing(format!("{lower} {name:?} not found")))?;
    data.into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .ok_or_else(|| {
            ConfigError::Missing(format!("couldn't find key {key} in {kind} {ns}/{name}"))
        })
}

/// Resolve the environment of container `c` of `pod` (in order, later names replacing earlier
/// values).
pub async fn resolve(
    pod: &Pod,
    c: &Container,
    objects: &dyn Objects,
    pod_ip: &str,
    host_ip: &str,
    node: &NodeContext,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional) = if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match objects
                .config_map(ns, &r.name)
                .await
                .map_err(ConfigError::Missing)?
            {
                Some(cm) => (cm_data(&cm), optional),
                None if optional => continue,
                None => {
                    return Err(ConfigError::Missing(format!(
                        "configmap {:?} not found",
                        r.name
                    )));
                }
            }
        } else if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match objects
                .secret(ns, &r.name)
                .await
                .map_err(ConfigError::Missing)?
            {
                Some(s) => (secret_data(&s), optional),
                None if optional => continue,
                None => {
                    return Err(ConfigError::Missing(format!(
                        "secret {:?} not found",
                        r.name
                    )));
                }
            }
        } else {
            continue;
        };
        let _ = optional;
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            if valid_name(&name) {
                set(&mut env, name, v);
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let map: HashMap<String, String> = env.iter().cloned().collect();
            expand(v, &map)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_value(pod, &f.field_path, pod_ip, host_ip)?
            } else if let Some(r) = &src.resource_field_ref {
                resource_value(pod, c, r, node)?
            } else if let Some(r) = &src.config_map_key_ref {
                let data = objects
                    .config_map(ns, &r.name)
                    .await
                    .map_err(ConfigError::Missing)?
                    .map(|cm| cm_data(&cm));
                let found = key_of(data, &r.key, "ConfigMap", "configmap", ns, &r.name);
                match found {
                    Ok(v) => v,
                    Err(_) if r.optional.unwrap_or(false) => continue,
                    Err(e) => return Err(e),
                }
            } else if let Some(r) = &src.secret_key_ref {
                let data = objects
                    .secret(ns, &r.name)
                    .await
                    .map_err(ConfigError::Missing)?
                    .map(|s| secret_data(&s));
                match key_of(data, &r.key, "Secret", "secret", ns, &r.name) {
                    Ok(v) => v,
                    Err(_) if r.optional.unwrap_or(false) => continue,
                    Err(e) => return Err(e),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

/// No objects at all (simulated nodes without an API behind them).
pub struct NoObjects;

#[async_trait::async_trait]
impl Objects for NoObjects {
    async fn config_map(&self, _ns: &str, _name: &str) -> Result<Option<ConfigMap>, String> {
        Ok(None)
    }
    async fn secret(&self, _ns: &str, _name: &str) -> Result<Option<Secret>, String> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed(ConfigMap, Secret);

    #[async_trait::async_trait]
    impl Objects for Fixed {
        async fn config_map(&self, _ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
            Ok((self.0.metadata.name.as_deref() == Some(name)).then(|| self.0.clone()))
        }
        async fn secret(&self, _ns: &str, name: &str) -> Result<Option<Secret>, String> {
            Ok((self.1.metadata.name.as_deref() == Some(name)).then(|| self.1.clone()))
        }
    }

    fn fixed() -> Fixed {
        Fixed(
            serde_json::from_value(
                json!({"metadata": {"name": "cfg"}, "data": {"COLOR": "blue", "bad key": "x"}}),
            )
            .expect("cm"),
            serde_json::from_value(
                json!({"metadata": {"name": "sec"}, "data": {"PASS": "czNjcjN0"}}),
            )
            .expect("secret"),
        )
    }

    #[tokio::test]
    async fn env_from_sources_in_order_with_expansion() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}],
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "B", "value": "$(A)-$(CM_COLOR)-$(NOPE)"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASS"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k", "optional": true}}}
                ]}]}
        }))
        .expect("pod");
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let env = resolve(
            &pod,
            c,
            &fixed(),
            "10.42.0.7",
            "192.0.2.1",
            &NodeContext::default(),
        )
        .await
        .expect("env");
        let m: HashMap<_, _> = env.iter().cloned().collect();
        assert_eq!(m["CM_COLOR"], "blue");
        assert!(!m.contains_key("CM_bad key"));
        assert_eq!(m["B"], "1-blue-$(NOPE)");
        assert_eq!(m["POD"], "p");
        assert_eq!(m["APP"], "web");
        assert_eq!(m["IP"], "10.42.0.7");
        assert_eq!(m["MEM"], "64");
        assert_eq!(m["CPU"], "1");
        assert_eq!(m["PASS"], "s3cr3t");
        assert!(!m.contains_key("OPT"));
    }

    #[tokio::test]
    async fn missing_references_fail_like_the_kubelet() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "env": [
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "NOPE"}}}]}]}
        }))
        .expect("pod");
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let e = resolve(&pod, c, &fixed(), "", "", &NodeContext::default())
            .await
            .expect_err("missing key");
        assert_eq!(e.to_string(), "couldn't find key NOPE in ConfigMap ns/cfg");
    }
}
