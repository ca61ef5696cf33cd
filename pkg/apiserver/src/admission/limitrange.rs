//! LimitRanger: defaults (`default` → limits, `defaultRequest` → requests) filled into the
//! containers of new pods, and `min` / `max` / `maxLimitRequestRatio` enforced per Container,
//! per Pod and per PersistentVolumeClaim with upstream's messages.

use std::collections::BTreeMap;

use k8slite_api::quantity::Quantity;
use k8slite_api::{ApiError, ResourceInfo, meta};
use serde_json::{Map, Value, json};

use super::forbidden;

/// Annotation recording which defaults were applied.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

type Resources = BTreeMap<String, Value>;

fn res(v: Option<&Value>) -> Resources {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The `limits` items of all LimitRanges, with upstream's item defaulting applied (default
/// limit from max, default request from the default limit, then from min).
fn items(ranges: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for lr in ranges {
        for item in lr
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut item = item.clone();
            if item.get("type").and_then(Value::as_str) == Some("Container") {
                let mut default = res(item.get("default"));
                let mut default_request = res(item.get("defaultRequest"));
                for (k, v) in res(item.get("max")) {
                    default.entry(k).or_insert(v);
                }
                for (k, v) in &default {
                    default_request.entry(k.clone()).or_insert(v.clone());
                }
                for (k, v) in res(item.get("min")) {
                    default_request.entry(k).or_insert(v);
                }
                item["default"] = json!(default);
                item["defaultRequest"] = json!(default_request);
            }
            out.push(item);
        }
    }
    out
}

fn item_type(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// Fill in container defaults of a pod being created and record them in the annotation.
pub fn default_pod(pod: &mut Value, ranges: &[Value]) {
    let items: Vec<Value> = items(ranges)
        .into_iter()
        .filter(|i| item_type(i) == "Container")
        .collect();
    if items.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (key, label) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        let Some(cs) = pod
            .pointer_mut(&format!("/spec/{key}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let cname = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let Some(cm) = c.as_object_mut() else {
                continue;
            };
            let resources = cm.entry("resources").or_insert_with(|| json!({}));
            let Some(rm) = resources.as_object_mut() else {
                continue;
            };
            let set = |field: &str, src: &str, rm: &mut Map<String, Value>| -> Vec<String> {
                let mut names = Vec::new();
                for item in &items {
                    for (k, v) in res(item.get(src)) {
                        let target = rm.entry(field).or_insert_with(|| json!({}));
                        if let Some(t) = target.as_object_mut()
                            && !t.contains_key(&k)
                        {
                            t.insert(k.clone(), v);
                            names.push(k);
                        }
                    }
                }
                if rm
                    .get(field)
                    .and_then(Value::as_object)
                    .is_some_and(Map::is_empty)
                {
                    rm.remove(field);
                }
                names.sort();
                names
            };
            let reqs = set("requests", "defaultRequest", rm);
            let lims = set("limits", "default", rm);
            if !reqs.is_empty() {
                notes.push(format!("{} request for {label} {cname}", reqs.join(", ")));
            }
            if !lims.is_empty() {
                notes.push(format!("{} limit for {label} {cname}", lims.join(", ")));
            }
        }
    }
    if !notes.is_empty() {
        let md = meta::metadata_mut(pod);
        let ann = md.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert(
                ANNOTATION.into(),
                json!(format!("LimitRanger plugin set: {}", notes.join("; "))),
            );
        }
    }
}

fn q(v: &Value) -> Option<Quantity> {
    Quantity::from_json(v)
}

fn min_constraint(
    kind: &str,
    r: &str,
    enforced: &Value,
    req: &Resources,
    lim: &Resources,
) -> Option<String> {
    let e = q(enforced)?;
    let Some(rq) = req.get(r).and_then(q) else {
        return Some(format!(
            "minimum {r} usage per {kind} is {e}.  No request is specified"
        ));
    };
    if rq < e {
        return Some(format!(
            "minimum {r} usage per {kind} is {e}, but request is {rq}"
        ));
    }
    if let Some(l) = lim.get(r).and_then(q)
        && l < e
    {
        return Some(format!(
            "minimum {r} usage per {kind} is {e}, but limit is {l}"
        ));
    }
    None
}

fn max_constraint(
    kind: &str,
    r: &str,
    enforced: &Value,
    req: &Resources,
    lim: &Resources,
) -> Option<String> {
    let e = q(enforced)?;
    let Some(l) = lim.get(r).and_then(q) else {
        return Some(format!(
            "maximum {r} usage per {kind} is {e}.  No limit is specified"
        ));
    };
    if l > e {
        return Some(format!(
            "maximum {r} usage per {kind} is {e}, but limit is {l}"
        ));
    }
    if let Some(rq) = req.get(r).and_then(q)
        && rq > e
    {
        return Some(format!(
            "maximum {r} usage per {kind} is {e}, but request is {rq}"
        ));
    }
    None
}

fn ratio_constraint(
    kind: &str,
    r: &str,
    enforced: &Value,
    req: &Resources,
    lim: &Resources,
) -> Option<String> {
    let e = q(enforced)?;
    let rq = req.get(r).and_then(q).filter(|x| !x.is_zero());
    let Some(rq) = rq else {
        return Some(format!(
            "{r} max limit to request ratio per {kind} is {e}, but no request is specified or request is 0"
        ));
    };
    let l = lim.get(r).and_then(q).filter(|x| !x.is_zero());
    let Some(l) = l else {
        return Some(format!(
            "{r} max limit to request ratio per {kind} is {e}, but no limit is specified or limit is 0"
        ));
    };
    let observed = l.milli() as f64 / rq.milli() as f64;
    (observed > e.as_f64() + 1e-9).then(|| {
        format!(
            "{r} max limit to request ratio per {kind} is {e}, but provided ratio is {observed:.6}"
        )
    })
}

fn check(kind: &str, item: &Value, req: &Resources, lim: &Resources, errs: &mut Vec<String>) {
    for (k, v) in res(item.get("min")) {
        errs.extend(min_constraint(kind, &k, &v, req, lim));
    }
    for (k, v) in res(item.get("max")) {
        errs.extend(max_constraint(kind, &k, &v, req, lim));
    }
    for (k, v) in res(item.get("maxLimitRequestRatio")) {
        errs.extend(ratio_constraint(kind, &k, &v, req, lim));
    }
}

fn sum_into(total: &mut BTreeMap<String, Quantity>, r: &Resources) {
    for (k, v) in r {
        if let Some(x) = q(v) {
            *total.entry(k.clone()).or_default() += x;
        }
    }
}

fn max_into(total: &mut BTreeMap<String, Quantity>, r: &Resources) {
    for (k, v) in r {
        if let Some(x) = q(v) {
            let e = total.entry(k.clone()).or_default();
            if x > *e {
                *e = x;
            }
        }
    }
}

fn as_resources(m: BTreeMap<String, Quantity>) -> Resources {
    m.into_iter()
        .map(|(k, v)| (k, json!(v.canonical())))
        .collect()
}

/// Enforce the LimitRanges of the namespace on a pod or claim being created.
pub fn validate(info: &ResourceInfo, obj: &Value, ranges: &[Value]) -> Result<(), ApiError> {
    let items = items(ranges);
    let mut errs = Vec::new();
    if info.kind == "Pod" {
        let containers = |k: &str| -> Vec<(Resources, Resources)> {
            obj.pointer(&format!("/spec/{k}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        res(c.pointer("/resources/requests")),
                        res(c.pointer("/resources/limits")),
                    )
                })
                .collect()
        };
        let (main, init) = (containers("containers"), containers("initContainers"));
        for item in &items {
            match item_type(item) {
                "Container" => {
                    for (req, lim) in main.iter().chain(init.iter()) {
                        check("Container", item, req, lim, &mut errs);
                    }
                }
                "Pod" => {
                    let (mut req, mut lim) = (BTreeMap::new(), BTreeMap::new());
                    for (r, l) in &main {
                        sum_into(&mut req, r);
                        sum_into(&mut lim, l);
                    }
                    for (r, l) in &init {
                        max_into(&mut req, r);
                        max_into(&mut lim, l);
                    }
                    check(
                        "Pod",
                        item,
                        &as_resources(req),
                        &as_resources(lim),
                        &mut errs,
                    );
                }
                _ => {}
            }
        }
    } else if info.kind == "PersistentVolumeClaim" {
        let req = res(obj.pointer("/spec/resources/requests"));
        for item in items
            .iter()
            .filter(|i| item_type(i) == "PersistentVolumeClaim")
        {
            for (k, v) in res(item.get("min")) {
                errs.extend(min_constraint(
                    "PersistentVolumeClaim",
                    &k,
                    &v,
                    &req,
                    &Resources::new(),
                ));
            }
            for (k, v) in res(item.get("max")) {
                // claims have no limits: the request is what is bounded
                errs.extend(
                    max_constraint("PersistentVolumeClaim", &k, &v, &req, &req).map(|m| {
                        m.replace("but limit is", "but request is")
                            .replace("No limit is specified", "No request is specified")
                    }),
                );
            }
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(forbidden(info, meta::name(obj), &errs[0])),
        _ => Err(forbidden(
            info,
            meta::name(obj),
            format!("[{}]", errs.join(", ")),
        )),
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

    fn lr(items: Value) -> Vec<Value> {
        vec![json!({"metadata": {"name": "lr"}, "spec": {"limits": items}})]
    }

    #[test]
    fn defaults_filled_in_with_annotation() {
        let ranges = lr(
            json!([{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "100m"}}]),
        );
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}]}});
        default_pod(&mut pod, &ranges);
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
        // memory request defaults to the default limit (item defaulting)
        assert_eq!(a["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(b["limits"], json!({"cpu": "1", "memory": "128Mi"}));
        assert_eq!(b["requests"], json!({"cpu": "1", "memory": "128Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; memory request for container b; memory limit for container b"
        );
    }

    #[test]
    fn min_max_ratio_messages() {
        let ranges = lr(
            json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"}, "maxLimitRequestRatio": {"cpu": "2"}}]),
        );
        let pod = json!({"metadata": {"name": "x"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "1"}}}]}});
        let e = validate(&info("pods"), &pod, &ranges).expect_err("over max");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"x\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        );
        let pod = json!({"metadata": {"name": "x"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "50m"}}}]}});
        let e = validate(&info("pods"), &pod, &ranges).expect_err("under min, ratio");
        assert_eq!(
            e.message,
            "pods \"x\" is forbidden: [minimum cpu usage per Container is 100m, but request is 50m, cpu max limit to request ratio per Container is 2, but provided ratio is 20.000000]"
        );
        let pod = json!({"metadata": {"name": "x"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "500m"}}}]}});
        validate(&info("pods"), &pod, &ranges).expect("within");
        let pod = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a"}]}});
        let e = validate(&info("pods"), &pod, &ranges).expect_err("nothing specified");
        assert!(
            e.message
                .contains("maximum cpu usage per Container is 1.  No limit is specified"),
            "{}",
            e.message
        );
    }

    #[test]
    fn pod_sum_and_pvc() {
        let ranges = lr(
            json!([{"type": "Pod", "max": {"memory": "1Gi"}}, {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]),
        );
        let pod = json!({"metadata": {"name": "x"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "768Mi"}}},
            {"name": "b", "resources": {"limits": {"memory": "512Mi"}}}]}});
        let e = validate(&info("pods"), &pod, &ranges).expect_err("pod sum over");
        assert_eq!(
            e.message,
            "pods \"x\" is forbidden: maximum memory usage per Pod is 1Gi, but limit is 1280Mi"
        );
        let pvc = json!({"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": "5Gi"}}}});
        let e = validate(&info("persistentvolumeclaims"), &pvc, &ranges).expect_err("pvc over");
        assert_eq!(
            e.message,
            "persistentvolumeclaims \"c\" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"
        );
        let pvc = json!({"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": "500Mi"}}}});
        let e = validate(&info("persistentvolumeclaims"), &pvc, &ranges).expect_err("pvc under");
        assert_eq!(
            e.message,
            "persistentvolumeclaims \"c\" is forbidden: minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"
        );
    }
}
