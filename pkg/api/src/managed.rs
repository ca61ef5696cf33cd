//! Field ownership (`metadata.managedFields`, FieldsV1) for server-side apply: which manager set
//! which field, conflicts between appliers, and removal of fields an applier stopped applying.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::smp::{ListStrategy, list_strategy};
use crate::status::{ApiError, Cause};

/// One element of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    /// An object field (`f:name`).
    Field(String),
    /// A list element by its merge key (`k:{"name":"web"}`), the key as canonical JSON.
    Key(String),
    /// A set element (`v:"x"`), as JSON.
    Value(String),
}

/// A field path.
pub type FieldPath = Vec<PathElement>;

/// A set of field paths (leaves and the list items they live in).
pub type FieldSet = BTreeSet<FieldPath>;

const SKIP_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// The fields set in `obj` (apiVersion/kind and system metadata excluded; `status` excluded
/// unless `status_only`, in which case only status).
pub fn fields_of(obj: &Value, status_only: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" || (k == "status") != status_only {
            continue;
        }
        let mut path = vec![PathElement::Field(k.clone())];
        if k == "metadata" {
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if SKIP_META.contains(&mk.as_str()) {
                    continue;
                }
                path.push(PathElement::Field(mk.clone()));
                walk(
                    mv,
                    &mut path,
                    &mut vec!["metadata".to_string()],
                    mk,
                    &mut out,
                );
                path.pop();
            }
            continue;
        }
        walk(v, &mut path, &mut Vec::new(), k, &mut out);
    }
    out
}

fn walk(
    v: &Value,
    path: &mut FieldPath,
    parents: &mut Vec<String>,
    field: &str,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            parents.push(field.to_string());
            for (k, cv) in m {
                path.push(PathElement::Field(k.clone()));
                walk(cv, path, parents, k, out);
                path.pop();
            }
            parents.pop();
        }
        Value::Array(items) => match list_strategy(parents, field) {
            ListStrategy::MergeBy(key) => {
                parents.push(field.to_string());
                for it in items {
                    let Some(kv) = it.get(key) else {
                        out.insert(path.clone());
                        continue;
                    };
                    let mut km = Map::new();
                    km.insert(key.to_string(), kv.clone());
                    path.push(PathElement::Key(Value::Object(km).to_string()));
                    out.insert(path.clone());
                    if let Some(m) = it.as_object() {
                        for (k, cv) in m {
                            path.push(PathElement::Field(k.clone()));
                            walk(cv, path, parents, k, out);
                            path.pop();
                        }
                    }
                    path.pop();
                }
                parents.pop();
            }
            ListStrategy::MergeScalars => {
                for it in items {
                    path.push(PathElement::Value(it.to_string()));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListStrategy::Replace => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Value at a path (`None` when absent).
pub fn value_at<'a>(obj: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = match el {
            PathElement::Field(f) => cur.get(f)?,
            PathElement::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                let (kn, kv) = key.iter().next()?;
                cur.as_array()?.iter().find(|e| e.get(kn) == Some(kv))?
            }
            PathElement::Value(v) => {
                let want: Value = serde_json::from_str(v).ok()?;
                cur.as_array()?.iter().find(|e| **e == want)?
            }
        };
    }
    Some(cur)
}

/// `.spec.replicas`, `.spec.containers[name="web"].image` — upstream's path rendering.
pub fn render(path: &[PathElement]) -> String {
    let mut s = String::new();
    for el in path {
        match el {
            PathElement::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            PathElement::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let inner: Vec<String> = key.iter().map(|(n, v)| format!("{n}={v}")).collect();
                s.push_str(&format!("[{}]", inner.join(",")));
            }
            PathElement::Value(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

/// Encode a set as FieldsV1.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            let k = match el {
                PathElement::Field(f) => format!("f:{f}"),
                PathElement::Key(k) => format!("k:{k}"),
                PathElement::Value(v) => format!("v:{v}"),
            };
            let entry = cur.entry(k).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            let Value::Object(m) = entry else {
                unreachable!("just set to an object")
            };
            cur = m;
        }
        if matches!(path.last(), Some(PathElement::Key(_))) {
            cur.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// Decode FieldsV1 into a set of leaf paths.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(m: &Map<String, Value>, path: &mut FieldPath, out: &mut FieldSet) {
        let mut leaf = true;
        for (k, child) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            leaf = false;
            let el = if let Some(f) = k.strip_prefix("f:") {
                PathElement::Field(f.to_string())
            } else if let Some(kk) = k.strip_prefix("k:") {
                PathElement::Key(kk.to_string())
            } else if let Some(vv) = k.strip_prefix("v:") {
                PathElement::Value(vv.to_string())
            } else {
                continue;
            };
            path.push(el);
            match child.as_object() {
                Some(cm) => rec(cm, path, out),
                None => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
        if leaf && !path.is_empty() {
            out.insert(path.clone());
        }
    }
    let mut out = FieldSet::new();
    if let Some(m) = v.as_object() {
        rec(m, &mut Vec::new(), &mut out);
    }
    out
}

/// One entry of `managedFields`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the fields were set through.
    pub api_version: String,
    /// `status` for status-subresource entries, empty otherwise.
    pub subresource: String,
    /// Owned fields.
    pub fields: FieldSet,
}

/// Read `metadata.managedFields`.
pub fn read(obj: &Value) -> Vec<Entry> {
    crate::meta::metadata(obj)
        .get("managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            operation: e
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("Update")
                .to_string(),
            api_version: e
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

/// Write `metadata.managedFields` (entries without fields are dropped).
pub fn write(obj: &mut Value, entries: &[Entry], now: &str) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": now, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields)});
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let md = crate::meta::metadata_mut(obj);
    if list.is_empty() {
        md.remove("managedFields");
    } else {
        md.insert("managedFields".into(), Value::Array(list));
    }
}

/// Record an Update-style write by `manager`: fields that changed between `old` and `new` now
/// belong to `manager`; fields that disappeared belong to nobody.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    now: &str,
) {
    let status_only = subresource == "status";
    let mut entries = old.map(read).unwrap_or_default();
    let new_fields = fields_of(new, status_only);
    let old_fields = old.map(|o| fields_of(o, status_only)).unwrap_or_default();
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| match old {
            None => true,
            Some(o) => !old_fields.contains(*p) || differs(o, new, p),
        })
        .cloned()
        .collect();
    for e in &mut entries {
        e.fields
            .retain(|p| new_fields.contains(p) || !same_scope(p, status_only));
        if e.manager != manager || e.operation != "Update" {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => e.fields.extend(changed),
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                subresource: subresource.to_string(),
                fields: changed,
            }),
        }
    }
    write(new, &entries, now);
}

fn same_scope(p: &FieldPath, status_only: bool) -> bool {
    matches!(p.first(), Some(PathElement::Field(f)) if (f == "status") == status_only)
}

/// Server-side apply: check `applied` (the configuration) of `manager` against the owners of
/// `current`'s fields. Returns the fields the applier now owns and the fields it gave up (set by
/// its previous apply, absent now, owned by nobody else: they are to be removed).
pub fn apply_check(
    current: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    entries: &mut [Entry],
) -> Result<(FieldSet, FieldSet), ApiError> {
    let applied_fields = fields_of(applied, false);
    let mut conflicts: BTreeMap<String, Vec<FieldPath>> = BTreeMap::new();
    for p in &applied_fields {
        if value_at(current, p).is_none() || !differs(current, applied, p) {
            continue;
        }
        for e in entries.iter() {
            if e.manager != manager && e.fields.contains(p) {
                conflicts
                    .entry(format!(
                        "conflict with \"{}\" using {}",
                        e.manager, e.api_version
                    ))
                    .or_default()
                    .push(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let n: usize = conflicts.values().map(Vec::len).sum();
        let mut causes = Vec::new();
        let mut lines = Vec::new();
        for (who, paths) in &conflicts {
            for p in paths {
                causes.push(Cause::new("FieldManagerConflict", &render(p), who.clone()));
                lines.push(format!("- {who}: {}", render(p)));
            }
        }
        let msg = if n == 1 {
            format!(
                "Apply failed with 1 conflict: {}: {}",
                conflicts
                    .keys()
                    .next()
                    .map(String::as_str)
                    .unwrap_or_default(),
                render(&causes_path(&conflicts))
            )
        } else {
            format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
        };
        let mut e = ApiError::new(409, "Conflict", msg);
        e.causes = causes;
        return Err(e);
    }
    // Forced (or no conflicts): others lose the applied fields whose values change.
    for e in entries.iter_mut() {
        if e.manager != manager {
            e.fields
                .retain(|p| !(applied_fields.contains(p) && differs(current, applied, p)));
        }
    }
    let previous: FieldSet = entries
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply")
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let dropped: FieldSet = previous
        .difference(&applied_fields)
        .filter(|p| !others.contains(*p))
        .cloned()
        .collect();
    Ok((applied_fields, dropped))
}

/// Whether `applied` gives `p` another value than `current` has. A keyed list item is owned as
/// a membership (its fields are compared one by one, each a path of its own): present in both,
/// it is the same item even when the live one carries defaulted fields the applied one leaves
/// out. Leaves compare by value.
fn differs(current: &Value, applied: &Value, p: &[PathElement]) -> bool {
    match (value_at(current, p), value_at(applied, p)) {
        (Some(c), Some(a)) if c.is_object() && a.is_object() => false,
        (c, a) => c != a,
    }
}

fn causes_path(c: &BTreeMap<String, Vec<FieldPath>>) -> FieldPath {
    c.values()
        .next()
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default()
}

/// Remove the value at `path` from `obj` (no-op when absent).
pub fn remove_at(obj: &mut Value, path: &[PathElement]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parent {
        let next = match el {
            PathElement::Field(f) => cur.get_mut(f),
            PathElement::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                match key.iter().next() {
                    Some((kn, kv)) => cur
                        .as_array_mut()
                        .and_then(|a| a.iter_mut().find(|e| e.get(kn) == Some(kv))),
                    None => None,
                }
            }
            PathElement::Value(_) => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        PathElement::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        PathElement::Key(k) => {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            if let (Some((kn, kv)), Some(a)) = (key.iter().next(), cur.as_array_mut()) {
                a.retain(|e| e.get(kn) != Some(kv));
            }
        }
        PathElement::Value(v) => {
            if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
                a.retain(|e| *e != want);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "1"}, "finalizers": ["x"]},
               "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "n:1", "args": ["a", "b"]}]}}}})
    }

    #[test]
    fn fields_roundtrip_through_fields_v1() {
        let f = fields_of(&dep(), false);
        assert!(f.contains(&vec![
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
        let v1 = to_fields_v1(&f);
        assert!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."]
                .is_object()
        );
        assert!(v1["f:metadata"]["f:finalizers"]["v:\"x\""].is_object());
        assert_eq!(from_fields_v1(&v1), f);
    }

    #[test]
    fn conflicts_and_force() {
        let mut cur = dep();
        record_update(None, &mut cur, "kubectl-create", "apps/v1", "", "t");
        let mut entries = read(&cur);
        let mut applied = dep();
        applied["spec"]["replicas"] = json!(3);
        let err =
            apply_check(&cur, &applied, "kubectl", false, &mut entries).expect_err("conflict");
        assert_eq!(err.code, 409);
        assert!(err.message.contains(".spec.replicas"), "{}", err.message);
        let (owned, dropped) =
            apply_check(&cur, &applied, "kubectl", true, &mut entries).expect("forced");
        assert!(owned.contains(&vec![
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
        assert!(dropped.is_empty());
        // same values: no conflict
        let mut entries = read(&cur);
        assert!(apply_check(&cur, &dep(), "kubectl", false, &mut entries).is_ok());
    }

    fn owners(entries: &[Entry], path: &str) -> Vec<String> {
        let mut v: Vec<String> = entries
            .iter()
            .filter(|e| e.fields.iter().any(|p| render(p) == path))
            .map(|e| e.manager.clone())
            .collect();
        v.sort();
        v
    }

    /// The shared-ownership cases of server-side apply, as upstream documents them: an applier
    /// that sets a field to its live value shares it; another value conflicts; `force` moves it.
    #[test]
    fn shared_ownership_conflict_and_force() {
        // Created by one manager (the Python client's default), with server defaults filled in.
        let mut live = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2",
                "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}});
        record_update(None, &mut live, "OpenAPI-Generator", "apps/v1", "", "t");
        let manifest = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2",
                "ports": [{"containerPort": 80}]}]}}}});
        // Same values: no conflict; both managers own them.
        let mut entries = read(&live);
        let (owned, dropped) = apply_check(&live, &manifest, "kubectl", false, &mut entries)
            .expect("applying the live values is no conflict");
        assert!(dropped.is_empty());
        entries.push(Entry {
            manager: "kubectl".into(),
            operation: "Apply".into(),
            api_version: "apps/v1".into(),
            subresource: String::new(),
            fields: owned,
        });
        let c = r#".spec.template.spec.containers[name="nginx"]"#;
        for path in [
            ".spec.replicas".to_string(),
            c.to_string(),
            format!("{c}.image"),
            format!("{c}.ports[containerPort=80]"),
        ] {
            assert_eq!(
                owners(&entries, &path),
                ["OpenAPI-Generator", "kubectl"],
                "{path}"
            );
        }
        // Fields only the creator set stay its own.
        assert_eq!(
            owners(&entries, &format!("{c}.imagePullPolicy")),
            ["OpenAPI-Generator"]
        );
        // Applying the same manifest again is idempotent.
        let again = apply_check(&live, &manifest, "kubectl", false, &mut entries.clone());
        assert!(again.is_ok());

        // A different value conflicts with the other owner, naming the field.
        let mut changed = manifest.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.16");
        let err = apply_check(&live, &changed, "kubectl", false, &mut entries.clone())
            .expect_err("another value is a conflict");
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            format!(
                "Apply failed with 1 conflict: conflict with \"OpenAPI-Generator\" using apps/v1: {c}.image"
            )
        );
        // Forced: the applier alone owns the changed field; the shared item stays shared.
        let (owned, _) =
            apply_check(&live, &changed, "kubectl", true, &mut entries).expect("forced apply");
        assert!(owned.iter().any(|p| render(p) == format!("{c}.image")));
        assert_eq!(owners(&entries, &format!("{c}.image")), ["kubectl"]);
        assert_eq!(owners(&entries, c), ["OpenAPI-Generator", "kubectl"]);
    }

    #[test]
    fn update_moves_ownership() {
        let mut a = dep();
        record_update(None, &mut a, "m1", "apps/v1", "", "t");
        let mut b = a.clone();
        b["spec"]["replicas"] = json!(5);
        record_update(Some(&a), &mut b, "m2", "apps/v1", "", "t");
        let e = read(&b);
        let rep = vec![
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into()),
        ];
        assert!(
            e.iter()
                .find(|x| x.manager == "m2")
                .expect("m2")
                .fields
                .contains(&rep)
        );
        assert!(
            !e.iter()
                .find(|x| x.manager == "m1")
                .expect("m1")
                .fields
                .contains(&rep)
        );
        let mut c = b.clone();
        remove_at(&mut c, &rep);
        assert!(c["spec"].get("replicas").is_none());
    }
}
