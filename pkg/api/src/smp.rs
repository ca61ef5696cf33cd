//! Strategic merge patch for the built-in types: lists merge by their patch merge keys
//! (containers by name, ports by containerPort, env by name, …) and the directives `$patch`,
//! `$setElementOrder`, `$retainKeys` and `$deleteFromPrimitiveList` are honoured.
//! Custom resources do not support strategic merge patch (upstream answers 415).

use serde_json::{Map, Value};

use crate::status::ApiError;

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// Lists of objects merged element-wise by this key.
    MergeBy(&'static str),
    /// Lists of scalars merged as a set (`finalizers`).
    MergeScalars,
    /// Replaced as a whole.
    Replace,
}

/// The merge strategy of list field `field`, whose parent field path (names of enclosing
/// object fields, innermost last) is `parents`.
pub(crate) fn list_strategy(parents: &[String], field: &str) -> ListStrategy {
    let parent = parents.last().map(String::as_str).unwrap_or_default();
    let in_container = matches!(
        parent,
        "containers" | "initContainers" | "ephemeralContainers"
    );
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::MergeBy("name"),
        "env" if in_container => ListStrategy::MergeBy("name"),
        "ports" if in_container => ListStrategy::MergeBy("containerPort"),
        "ports" if parent == "spec" => ListStrategy::MergeBy("port"),
        "volumeMounts" => ListStrategy::MergeBy("mountPath"),
        "volumeDevices" => ListStrategy::MergeBy("devicePath"),
        "hostAliases" | "podIPs" | "hostIPs" => ListStrategy::MergeBy("ip"),
        "conditions" => ListStrategy::MergeBy("type"),
        "addresses" if parent == "status" => ListStrategy::MergeBy("type"),
        "ownerReferences" => ListStrategy::MergeBy("uid"),
        "topologySpreadConstraints" => ListStrategy::MergeBy("topologyKey"),
        "finalizers" => ListStrategy::MergeScalars,
        _ => ListStrategy::Replace,
    }
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Apply a strategic merge `patch` to `original`.
pub fn apply(original: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    }
    merge_value(original, patch, &mut Vec::new())
}

fn merge_value(original: &Value, patch: &Value, path: &mut Vec<String>) -> Result<Value, ApiError> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => {
            merge_map(o, p, path).map(|m| m.map_or(Value::Null, Value::Object))
        }
        (_, Value::Object(p)) => {
            merge_map(&Map::new(), p, path).map(|m| m.map_or(Value::Null, Value::Object))
        }
        (_, other) => Ok(other.clone()),
    }
}

/// Merge a patch map into an original map. `None` means "delete this map" (`$patch: delete`).
fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<Option<Map<String, Value>>, ApiError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut out = patch.clone();
            out.remove("$patch");
            strip_directives(&mut out);
            return Ok(Some(out));
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type: {other} in map"
            )));
        }
    }
    let mut out = original.clone();
    for (key, pv) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with(SET_ORDER) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVE) {
            let remove: Vec<&Value> = pv
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|v| !remove.contains(&v));
            }
            continue;
        }
        if pv.is_null() {
            out.remove(key);
            continue;
        }
        let ov = original.get(key);
        let merged = match (ov, pv) {
            (Some(Value::Array(ol)), Value::Array(pl)) => {
                let order = patch
                    .get(&format!("{SET_ORDER}{key}"))
                    .and_then(Value::as_array);
                Some(Value::Array(merge_list(ol, pl, key, order, path)?))
            }
            (None, Value::Array(pl)) => {
                let order = patch
                    .get(&format!("{SET_ORDER}{key}"))
                    .and_then(Value::as_array);
                Some(Value::Array(merge_list(&[], pl, key, order, path)?))
            }
            (Some(Value::Object(om)), Value::Object(pm)) => {
                path.push(key.clone());
                let m = merge_map(om, pm, path)?;
                path.pop();
                m.map(Value::Object)
            }
            (_, Value::Object(pm)) => {
                path.push(key.clone());
                let m = merge_map(&Map::new(), pm, path)?;
                path.pop();
                m.map(Value::Object)
            }
            (_, other) => Some(other.clone()),
        };
        match merged {
            Some(v) => {
                out.insert(key.clone(), v);
            }
            None => {
                out.remove(key);
            }
        }
    }
    // Lists only reordered by $setElementOrder (no element patch) keep the given order.
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix(SET_ORDER)
            && !patch.contains_key(field)
            && let (Some(Value::Array(list)), Some(order)) =
                (out.get(field).cloned(), order.as_array())
        {
            let strategy = list_strategy(path, field);
            out.insert(
                field.to_string(),
                Value::Array(reorder(list, order, strategy)),
            );
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    strip_directives(&mut out);
    Ok(Some(out))
}

fn strip_directives(m: &mut Map<String, Value>) {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        match v {
            Value::Object(inner) => strip_directives(inner),
            Value::Array(items) => {
                for it in items {
                    if let Value::Object(inner) = it {
                        strip_directives(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

fn merge_list(
    original: &[Value],
    patch: &[Value],
    field: &str,
    order: Option<&Vec<Value>>,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, ApiError> {
    let strategy = list_strategy(path, field);
    // `[{"$patch": "replace"}, …]` replaces the whole list with the other elements.
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let mut out: Vec<Value> = patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .cloned()
            .collect();
        for e in &mut out {
            if let Value::Object(m) = e {
                strip_directives(m);
            }
        }
        return Ok(out);
    }
    let out = match strategy {
        ListStrategy::Replace => {
            let mut out = patch.to_vec();
            for e in &mut out {
                if let Value::Object(m) = e {
                    strip_directives(m);
                }
            }
            return Ok(out);
        }
        ListStrategy::MergeScalars => {
            let mut out = original.to_vec();
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            out
        }
        ListStrategy::MergeBy(key) => {
            let mut out = original.to_vec();
            path.push(field.to_string());
            for pe in patch {
                let Some(pm) = pe.as_object() else {
                    path.pop();
                    return Err(ApiError::bad_request(format!(
                        "{field}: expected a list of objects in the patch"
                    )));
                };
                let Some(kv) = pm.get(key) else {
                    path.pop();
                    return Err(ApiError::bad_request(format!(
                        "{field}: map in the list does not contain the merge key {key:?}"
                    )));
                };
                let pos = out.iter().position(|e| e.get(key) == Some(kv));
                let delete = pm.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let merged =
                            merge_map(out[i].as_object().unwrap_or(&Map::new()), pm, path)?;
                        match merged {
                            Some(m) => out[i] = Value::Object(m),
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    (None, false) => {
                        let mut m = pm.clone();
                        m.remove("$patch");
                        if let Some(merged) = merge_map(&Map::new(), &m, path)? {
                            out.push(Value::Object(merged));
                        }
                    }
                }
            }
            path.pop();
            out
        }
    };
    Ok(match order {
        Some(order) => reorder(out, order, strategy),
        None => out,
    })
}

/// Order `list` as `order` says; elements not named keep their relative order at the end.
fn reorder(list: Vec<Value>, order: &[Value], strategy: ListStrategy) -> Vec<Value> {
    let key_of = |v: &Value| -> Option<Value> {
        match strategy {
            ListStrategy::MergeBy(k) => v.get(k).cloned(),
            _ => Some(v.clone()),
        }
    };
    let mut rest = list;
    let mut out = Vec::with_capacity(rest.len());
    for o in order {
        let want = key_of(o);
        if let Some(i) = rest
            .iter()
            .position(|e| key_of(e) == want && want.is_some())
        {
            out.push(rest.remove(i));
        }
    }
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}, {"containerPort": 8080}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "busybox"}
        ]}}}, "metadata": {"finalizers": ["a"], "labels": {"x": "1"}}})
    }

    #[test]
    fn merges_by_key_and_deletes() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "web", "image": "nginx:2",
                "$setElementOrder/ports": [{"containerPort": 80}],
                "ports": [{"$patch": "delete", "containerPort": 8080}],
                "env": [{"$patch": "delete", "name": "B"}]}]}}}});
        let out = apply(&deployment(), &patch).expect("patch applies");
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "nginx:2");
        assert_eq!(c[0]["ports"], json!([{"containerPort": 80}]));
        assert_eq!(c[0]["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(c[1]["name"], "side");
    }

    #[test]
    fn scalars_and_null_and_replace() {
        let patch = json!({"metadata": {"finalizers": ["b"], "labels": {"x": null, "y": "2"},
            "$deleteFromPrimitiveList/finalizers": ["a"]}});
        let out = apply(&deployment(), &patch).expect("patch applies");
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only"}]}}}});
        let out = apply(&deployment(), &patch).expect("patch applies");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only"}])
        );
        let patch = json!({"spec": {"$patch": "delete"}});
        assert!(
            apply(&deployment(), &patch)
                .expect("applies")
                .get("spec")
                .is_none()
        );
    }

    #[test]
    fn retain_keys() {
        let orig = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = apply(&orig, &patch).expect("applies");
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert_eq!(apply(&deployment(), &patch).expect_err("no key").code, 400);
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "[a-z$/]{0,8}".prop_map(Value::String),
            any::<i32>().prop_map(|n| json!(n)),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("name".to_string()),
                        Just("containers".to_string()),
                        Just("$patch".to_string()),
                        Just("$retainKeys".to_string()),
                        Just("finalizers".to_string()),
                        Just("$setElementOrder/containers".to_string()),
                        "[a-z]{1,4}".prop_map(|s| s)
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn never_panics(orig in arb_json(), patch in arb_json()) {
            let _ = apply(&orig, &patch);
        }

        #[test]
        fn empty_patch_is_identity(orig in arb_json()) {
            if orig.is_object() {
                let out = apply(&orig, &json!({})).expect("empty patch applies");
                // directives in the original are stripped, everything else stays
                let mut expect = orig.clone();
                if let Value::Object(m) = &mut expect { strip_directives(m); }
                proptest::prop_assert_eq!(out, expect);
            }
        }
    }
}
