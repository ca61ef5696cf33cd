//! ResourceQuota admission: a new object's usage (pods and their compute requests/limits,
//! services, claims and storage, object counts `count/<resource>.<group>`) is added to the
//! `status.used` of every matching quota of its namespace with a compare-and-swap on the quota,
//! so concurrent creates cannot both slip under the limit; over the limit → 403 with upstream's
//! `exceeded quota: …` message. Quotas on compute resources require pods to specify them.
//! The quota controller recomputes `status.used` from the live objects.

use std::collections::{BTreeMap, BTreeSet};

use k8slite_api::quantity::{Quantity, ResourceList, pod_effective, pod_quota_usage};
use k8slite_api::{ApiError, ResourceInfo, meta};
use k8slite_datastore::StoreError;
use serde_json::{Value, json};

use super::forbidden;
use crate::ApiServer;
use crate::objects::{from_stored, to_stored};

/// Usage per resource name.
pub type Usage = BTreeMap<String, Quantity>;

/// Compute resources a quota can require pods to specify.
const COMPUTE: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

fn one() -> Quantity {
    Quantity::from_units(1)
}

fn count_name(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        format!("count/{}", info.plural)
    } else {
        format!("count/{}.{}", info.plural, info.group)
    }
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn from_json(v: &Value) -> Option<Quantity> {
    Quantity::from_json(v)
}

/// The effective requests or limits of a pod (`field`), by the rule shared with the quota
/// controller ([`pod_effective`]).
fn pod_resources(pod: &Value, field: &str) -> Usage {
    let list =
        |c: &Value| -> ResourceList { resource_list(c.pointer(&format!("/resources/{field}"))) };
    let of = |key: &str| -> Vec<ResourceList> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(list)
            .collect()
    };
    let overhead = resource_list(pod.pointer("/spec/overhead"));
    pod_effective(&of("containers"), &of("initContainers"), Some(&overhead))
}

/// What one object counts against quotas.
pub fn usage(info: &ResourceInfo, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let core = info.group.is_empty();
    if core && info.kind == "Pod" && is_terminal(obj) {
        return u;
    }
    u.insert(count_name(info), one());
    match (core, info.kind.as_str()) {
        (true, "Pod") => {
            u.insert("pods".into(), one());
            u.extend(pod_quota_usage(
                &pod_resources(obj, "requests"),
                &pod_resources(obj, "limits"),
            ));
        }
        (true, "Service") => {
            u.insert("services".into(), one());
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), one());
            }
            if ty == "LoadBalancer" || ty == "NodePort" {
                let n = obj
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                u.insert("services.nodeports".into(), Quantity::from_units(n as i64));
            }
        }
        (true, "PersistentVolumeClaim") => {
            u.insert("persistentvolumeclaims".into(), one());
            let storage = obj
                .pointer("/spec/resources/requests/storage")
                .and_then(from_json)
                .unwrap_or_default();
            u.insert("requests.storage".into(), storage);
            if let Some(sc) = obj
                .pointer("/spec/storageClassName")
                .and_then(Value::as_str)
            {
                u.insert(
                    format!("{sc}.storageclass.storage.k8s.io/persistentvolumeclaims"),
                    one(),
                );
                u.insert(
                    format!("{sc}.storageclass.storage.k8s.io/requests.storage"),
                    storage,
                );
            }
        }
        (true, "ConfigMap") => {
            u.insert("configmaps".into(), one());
        }
        (true, "Secret") => {
            u.insert("secrets".into(), one());
        }
        (true, "ReplicationController") => {
            u.insert("replicationcontrollers".into(), one());
        }
        (true, "ResourceQuota") => {
            u.insert("resourcequotas".into(), one());
        }
        _ => {}
    }
    u
}

fn has_compute(pod: &Value) -> bool {
    !pod_resources(pod, "requests").is_empty() || !pod_resources(pod, "limits").is_empty()
}

fn scope_matches(
    scope: &str,
    op: &str,
    values: &[String],
    info: &ResourceInfo,
    obj: &Value,
) -> bool {
    let is_pod = info.group.is_empty() && info.kind == "Pod";
    let holds = match scope {
        "Terminating" => is_pod && obj.pointer("/spec/activeDeadlineSeconds").is_some(),
        "NotTerminating" => is_pod && obj.pointer("/spec/activeDeadlineSeconds").is_none(),
        "BestEffort" => is_pod && !has_compute(obj),
        "NotBestEffort" => is_pod && has_compute(obj),
        "PriorityClass" => {
            if !is_pod {
                return false;
            }
            let pc = obj
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str);
            return match op {
                "In" => pc.is_some_and(|p| values.iter().any(|v| v == p)),
                "NotIn" => pc.is_none_or(|p| !values.iter().any(|v| v == p)),
                "Exists" => pc.is_some_and(|p| !p.is_empty()),
                "DoesNotExist" => pc.is_none_or(str::is_empty),
                _ => false,
            };
        }
        _ => false,
    };
    match op {
        "DoesNotExist" => !holds,
        _ => holds,
    }
}

/// Whether a quota's scopes select the object.
pub fn matches(quota: &Value, info: &ResourceInfo, obj: &Value) -> bool {
    let scopes = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for s in scopes {
        if !scope_matches(s.as_str().unwrap_or_default(), "Exists", &[], info, obj) {
            return false;
        }
    }
    let reqs = quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for r in reqs {
        let scope = r
            .get("scopeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let op = r
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let values: Vec<String> = r
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if !scope_matches(scope, op, &values, info, obj) {
            return false;
        }
    }
    true
}

fn resource_list(v: Option<&Value>) -> Usage {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| from_json(v).map(|q| (k.clone(), q)))
        .collect()
}

/// `a=1,b=2m` in sorted order, like upstream's prettyPrint.
fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What an update adds: the growth of each resource from `old` to `new` (shrinking is
/// returned by the quota controller's recount, like upstream).
pub fn growth(new: &Usage, old: &Usage) -> Usage {
    new.iter()
        .filter_map(|(k, v)| {
            let before = old.get(k).copied().unwrap_or_default();
            (*v > before).then(|| (k.clone(), *v - before))
        })
        .collect()
}

/// Pods must name every compute resource a quota limits: `must specify …`.
pub fn pod_constraints(hard: &Usage, pod: &Value) -> Result<(), String> {
    let required: Vec<&str> = COMPUTE
        .iter()
        .copied()
        .filter(|r| hard.contains_key(*r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for key in ["containers", "initContainers"] {
        for c in pod
            .pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            for r in &required {
                let (field, res) = match r.split_once('.') {
                    Some(("limits", res)) => ("limits", res),
                    Some((_, res)) => ("requests", res),
                    None => ("requests", *r),
                };
                if c.pointer(&format!("/resources/{field}/{res}")).is_none() {
                    missing.entry(r).or_default().insert(name.to_string());
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, cs)| {
            format!(
                "{r} for: {}",
                cs.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// Check `requested` against a quota; `Ok(new used of the requested resources)` or the
/// `exceeded quota: …` message.
pub fn check(name: &str, hard: &Usage, used: &Usage, requested: &Usage) -> Result<Usage, String> {
    let mut new_used = Usage::new();
    let mut exceeded = Vec::new();
    for (k, r) in requested {
        let Some(h) = hard.get(k) else { continue };
        let u = used.get(k).copied().unwrap_or_default();
        let n = u + *r;
        if n > *h {
            exceeded.push(k.clone());
        }
        new_used.insert(k.clone(), n);
    }
    if exceeded.is_empty() {
        return Ok(new_used);
    }
    let mask = |u: &Usage| -> Usage {
        exceeded
            .iter()
            .map(|k| (k.clone(), u.get(k).copied().unwrap_or_default()))
            .collect()
    };
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        pretty(&mask(requested)),
        pretty(&mask(used)),
        pretty(&mask(hard))
    ))
}

impl ApiServer {
    /// Usage of the objects of `info` in `ns` that `quota` selects (when its status has none).
    async fn listed_usage(
        &self,
        info: &ResourceInfo,
        ns: &str,
        quota: &Value,
    ) -> Result<Usage, ApiError> {
        let mut total = Usage::new();
        for o in self
            .list_objects(&info.group, &info.version, &info.plural, Some(ns))
            .await?
        {
            if matches(quota, info, &o) {
                for (k, v) in usage(info, &o) {
                    *total.entry(k).or_default() += v;
                }
            }
        }
        Ok(total)
    }

    /// Evaluate one quota for a new object: `Ok(None)` when it does not apply, else the
    /// updated quota to write.
    async fn evaluate_quota(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: &Value,
        delta: &Usage,
        quota: &Value,
    ) -> Result<Option<Value>, ApiError> {
        let hard = resource_list(quota.pointer("/spec/hard"));
        if hard.is_empty() || !matches(quota, info, obj) {
            return Ok(None);
        }
        let qname = meta::name(quota);
        if info.group.is_empty() && info.kind == "Pod" {
            pod_constraints(&hard, obj).map_err(|m| {
                forbidden(info, meta::name(obj), format!("failed quota: {qname}: {m}"))
            })?;
        }
        let requested: Usage = delta
            .iter()
            .filter(|(k, v)| hard.contains_key(*k) && !v.is_zero())
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if requested.is_empty() {
            return Ok(None);
        }
        let status_used = resource_list(quota.pointer("/status/used"));
        let mut used = Usage::new();
        let mut listed: Option<Usage> = None;
        for k in requested.keys() {
            let v = match status_used.get(k) {
                Some(v) => *v,
                None => {
                    if listed.is_none() {
                        listed = Some(self.listed_usage(info, ns, quota).await?);
                    }
                    listed
                        .as_ref()
                        .and_then(|l| l.get(k))
                        .copied()
                        .unwrap_or_default()
                }
            };
            used.insert(k.clone(), v);
        }
        let new_used = check(qname, &hard, &used, &requested)
            .map_err(|m| forbidden(info, meta::name(obj), m))?;
        let mut q = quota.clone();
        let st = q
            .as_object_mut()
            .map(|m| m.entry("status").or_insert_with(|| json!({})));
        if let Some(st) = st {
            st["hard"] = quota.pointer("/spec/hard").cloned().unwrap_or(json!({}));
            if !st.get("used").is_some_and(Value::is_object) {
                st["used"] = json!({});
            }
            for (k, v) in new_used {
                st["used"][k] = json!(v.canonical());
            }
        }
        Ok(Some(q))
    }

    /// Check and charge the namespace's quotas for a new object (no charge with `dry_run`).
    pub(crate) async fn charge_quota(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: &Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        self.charge_quota_delta(info, ns, obj, usage(info, obj), dry_run)
            .await
    }

    /// Check and charge `delta` (what `obj` adds) against the namespace's quotas.
    pub(crate) async fn charge_quota_delta(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: &Value,
        delta: Usage,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        if delta.is_empty() {
            return Ok(());
        }
        let reg = self.registry();
        let Some(qinfo) = reg.get("", "v1", "resourcequotas") else {
            return Ok(());
        };
        let prefix = qinfo.key_prefix_in(Some(ns));
        let internal = |e: StoreError| ApiError::internal(format!("reading resource quotas: {e}"));
        let quotas = self
            .store
            .list(
                &prefix,
                k8slite_datastore::ListOptions {
                    skip_count: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(internal)?;
        if quotas.items.is_empty() {
            return Ok(());
        }
        // Check every quota first, then charge each with a compare-and-swap (re-checking the
        // one that changed underneath).
        let mut charges = Vec::new();
        for kv in &quotas.items {
            let quota = from_stored(kv)?;
            if let Some(updated) = self.evaluate_quota(info, ns, obj, &delta, &quota).await? {
                charges.push((kv.clone(), updated));
            }
        }
        if dry_run {
            return Ok(());
        }
        for (mut kv, mut updated) in charges {
            for attempt in 0.. {
                match self
                    .store
                    .update(&kv.key, to_stored(&updated)?, kv.mod_revision)
                    .await
                {
                    Ok(_) => break,
                    Err(StoreError::Conflict { current, .. }) if attempt < 16 => {
                        kv = *current;
                        let quota = from_stored(&kv)?;
                        match self.evaluate_quota(info, ns, obj, &delta, &quota).await? {
                            Some(u) => updated = u,
                            None => break,
                        }
                    }
                    Err(e) => {
                        return Err(ApiError::internal(format!("charging resource quota: {e}")));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(plural: &str) -> std::sync::Arc<ResourceInfo> {
        k8slite_api::Registry::builtin()
            .get("", "v1", plural)
            .expect("resource")
    }

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect(s)
    }

    #[test]
    fn pod_usage() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "nvidia.com/gpu": "1"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}]}});
        let u = usage(&info("pods"), &pod);
        assert_eq!(u["pods"], q("1"));
        assert_eq!(u["count/pods"], q("1"));
        assert_eq!(u["requests.cpu"], q("1"), "init container is the floor");
        assert_eq!(u["cpu"], q("1"));
        assert_eq!(u["requests.memory"], q("64Mi"));
        assert_eq!(u["limits.cpu"], q("500m"));
        assert_eq!(u["requests.nvidia.com/gpu"], q("1"));
        let done = json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        assert!(usage(&info("pods"), &done).is_empty());
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        let u = usage(&info("services"), &svc);
        assert_eq!(u["services.nodeports"], q("2"));
        assert_eq!(u["count/services"], q("1"));
    }

    #[test]
    fn update_growth() {
        let pvcs = info("persistentvolumeclaims");
        let small = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let big = json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}}});
        let g = growth(&usage(&pvcs, &big), &usage(&pvcs, &small));
        assert_eq!(g.keys().collect::<Vec<_>>(), ["requests.storage"]);
        assert_eq!(g["requests.storage"].canonical(), "2Gi");
        assert!(growth(&usage(&pvcs, &small), &usage(&pvcs, &big)).is_empty());
    }

    #[test]
    fn exceeded_message() {
        let hard: Usage = [
            ("requests.cpu".to_string(), q("1")),
            ("pods".to_string(), q("10")),
        ]
        .into();
        let used: Usage = [
            ("requests.cpu".to_string(), q("1")),
            ("pods".to_string(), q("2")),
        ]
        .into();
        let req: Usage = [
            ("requests.cpu".to_string(), q("500m")),
            ("pods".to_string(), q("1")),
        ]
        .into();
        assert_eq!(
            check("compute", &hard, &used, &req).expect_err("over"),
            "exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=1, limited: requests.cpu=1"
        );
        let used: Usage = [("requests.cpu".to_string(), q("250m"))].into();
        let new = check("compute", &hard, &used, &req).expect("fits");
        assert_eq!(new["requests.cpu"], q("750m"));
        assert_eq!(new["pods"], q("1"));
    }

    #[test]
    fn must_specify_and_scopes() {
        let hard: Usage = [
            ("requests.cpu".to_string(), q("1")),
            ("limits.memory".to_string(), q("1Gi")),
        ]
        .into();
        let pod = json!({"spec": {"containers": [{"name": "b"}, {"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(
            pod_constraints(&hard, &pod).expect_err("missing"),
            "must specify limits.memory for: a,b; requests.cpu for: b"
        );
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        let pods = info("pods");
        assert!(matches(
            &json!({"spec": {"scopes": ["BestEffort"]}}),
            &pods,
            &be
        ));
        assert!(!matches(
            &json!({"spec": {"scopes": ["NotBestEffort"]}}),
            &pods,
            &be
        ));
        let hi = json!({"spec": {"priorityClassName": "high", "containers": []}});
        let sel = json!({"spec": {"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        assert!(matches(&sel, &pods, &hi));
        assert!(!matches(&sel, &pods, &be));
    }
}
