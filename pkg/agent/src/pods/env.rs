//! A container's environment as the kubelet builds it: `envFrom` (configMaps and secrets, with
//! prefixes), then `env` in order with `$(VAR)` expansion against what came before, values from
//! `fieldRef`, `resourceFieldRef`, `configMapKeyRef` and `secretKeyRef`, then the Service
//! variables ([`super::service_env`]) not set by those. `$(VAR)` also expands Service variables.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use k8slite_api::quantity::Quantity;

use super::service_env::{self, MASTER_NAMESPACE};
use super::spec::{ConfigError, NodeContext, expand};

/// Where configMaps, secrets and Services come from (the agent's API client; a map in tests).
#[async_trait::async_trait]
pub trait Objects: Send + Sync {
    /// The configMap `ns/name`, `None` when it does not exist.
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    /// The secret `ns/name`, `None` when it does not exist.
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String>;
    /// The Services of namespace `ns`.
    async fn services(&self, ns: &str) -> Result<Vec<Service>, String>;
}

/// The Service variables of `pod` (upstream `getServiceEnvVarMap`): the master services of
/// `default` always, the pod's namespace's Services unless `enableServiceLinks: false`.
pub async fn service_variables(
    pod: &Pod,
    objects: &dyn Objects,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let list = |ns: &str| {
        let ns = ns.to_string();
        async move {
            objects.services(&ns).await.map_err(|e| {
                ConfigError::Missing(format!(
                    "failed to list services when setting up env vars: {e}"
                ))
            })
        }
    };
    let master = list(MASTER_NAMESPACE).await?;
    let own = if !links {
        Vec::new()
    } else if ns == MASTER_NAMESPACE {
        master.clone()
    } else {
        list(ns).await?
    };
    Ok(service_env::service_env(ns, links, &master, &own))
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
    let services = service_variables(pod, objects).await?;
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
        let value = if let Some(v) = e.value.as_ref().filter(|v| !v.is_empty()) {
            // What came before, then the Service variables (upstream's mapping order).
            let mut map: HashMap<String, String> = services.clone().into_iter().collect();
            map.extend(env.iter().cloned());
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
    // Service variables last, unless the container sets the name itself.
    for (k, v) in services {
        if !env.iter().any(|(n, _)| *n == k) {
            env.push((k, v));
        }
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
    async fn services(&self, _ns: &str) -> Result<Vec<Service>, String> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed(ConfigMap, Secret, Vec<Service>);

    #[async_trait::async_trait]
    impl Objects for Fixed {
        async fn config_map(&self, _ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
            Ok((self.0.metadata.name.as_deref() == Some(name)).then(|| self.0.clone()))
        }
        async fn secret(&self, _ns: &str, name: &str) -> Result<Option<Secret>, String> {
            Ok((self.1.metadata.name.as_deref() == Some(name)).then(|| self.1.clone()))
        }
        async fn services(&self, ns: &str) -> Result<Vec<Service>, String> {
            Ok(self
                .2
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
                .cloned()
                .collect())
        }
    }

    fn services() -> Vec<Service> {
        serde_json::from_value(json!([
            {"metadata": {"name": "kubernetes", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443}]}},
            {"metadata": {"name": "db", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.20", "ports": [{"port": 5432}]}},
            {"metadata": {"name": "web-api", "namespace": "ns"},
             "spec": {"clusterIP": "10.43.3.4", "ports": [{"name": "http", "port": 8080}]}}
        ]))
        .expect("services")
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
            services(),
        )
    }

    fn pod_with_env(ns: &str, links: Option<bool>, env: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": ns},
            "spec": {"enableServiceLinks": links, "containers": [{"name": "c", "env": env}]}
        }))
        .expect("pod")
    }

    async fn env_of(pod: &Pod) -> Vec<(String, String)> {
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        resolve(pod, c, &fixed(), "", "", &NodeContext::default())
            .await
            .expect("env")
    }

    #[tokio::test]
    async fn service_variables_follow_explicit_env_which_wins_and_expands_them() {
        let pod = pod_with_env(
            "ns",
            None,
            json!([
                {"name": "URL", "value": "https://$(KUBERNETES_SERVICE_HOST):$(WEB_API_SERVICE_PORT_HTTP)"},
                {"name": "WEB_API_SERVICE_HOST", "value": "mine"}
            ]),
        );
        let env = env_of(&pod).await;
        assert_eq!(env[0], ("URL".into(), "https://10.43.0.1:8080".into()));
        assert_eq!(env[1], ("WEB_API_SERVICE_HOST".into(), "mine".into()));
        let m: HashMap<_, _> = env.iter().cloned().collect();
        assert_eq!(m.len(), env.len(), "no duplicate names: {env:?}");
        assert_eq!(m["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(m["WEB_API_PORT_8080_TCP"], "tcp://10.43.3.4:8080");
        // `db` lives in `default`, not in the pod's namespace
        assert!(!m.contains_key("DB_SERVICE_HOST"));
    }

    #[tokio::test]
    async fn service_links_off_keeps_only_the_master_service() {
        let env = env_of(&pod_with_env("ns", Some(false), json!([]))).await;
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"KUBERNETES_SERVICE_HOST"), "{names:?}");
        assert!(
            names.iter().all(|n| n.starts_with("KUBERNETES_")),
            "{names:?}"
        );
        // in `default` itself, links on: every Service of default
        let env = env_of(&pod_with_env("default", None, json!([]))).await;
        let m: HashMap<_, _> = env.into_iter().collect();
        assert_eq!(m["DB_SERVICE_HOST"], "10.43.0.20");
        assert_eq!(m["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
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
