//! OpenAPI v3 documents built from the registry and the `k8s-openapi` schemas: one document per
//! group/version with operations (so kubectl sees `fieldValidation` support) and
//! `components.schemas` carrying `x-kubernetes-group-version-kind` (for `kubectl explain`) and
//! patch merge keys (for client-side strategic merge).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceInfo};
use crate::smp::{ListStrategy, list_strategy};

/// `api/v1` or `apis/<group>/<version>`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A content hash for one group/version (changes when its resources change).
fn gv_hash(reg: &Registry, group: &str, version: &str, extra: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in reg.in_group_version(group, version) {
        format!("{r:?}").hash(&mut h);
    }
    extra.hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `/openapi/v3`: the index of group/version documents. `crd_hash` distinguishes custom
/// groups' documents by the CRDs' state.
pub fn index(reg: &Registry, crd_hash: &str) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(String, String)> = Vec::new();
    for r in reg.all() {
        if !gvs.iter().any(|(g, v)| *g == r.group && *v == r.version) {
            gvs.push((r.group.clone(), r.version.clone()));
        }
    }
    for (g, v) in gvs {
        let p = gv_path(&g, &v);
        let hash = gv_hash(reg, &g, &v, crd_hash);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
        ),
        param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
        ),
    ];
    if patch {
        p.push(json!({"name": "force", "in": "query", "description": "Force is going to \"force\" Apply requests.", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    p
}

fn op_id(verb: &str, r: &ResourceInfo, namespaced: bool, sub: &str) -> String {
    let mut g = String::new();
    for part in r
        .group
        .split('.')
        .take(if r.group.ends_with(".k8s.io") { 1 } else { 3 })
    {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            g.push(f.to_ascii_uppercase());
            g.push_str(c.as_str());
        }
    }
    let gv = if r.group.is_empty() {
        "CoreV1".to_string()
    } else {
        format!("{g}{}", capitalise(&r.version))
    };
    let ns = if namespaced { "Namespaced" } else { "" };
    format!("{verb}{gv}{ns}{}{}", r.kind, capitalise(sub))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => format!("{}{}", f.to_ascii_uppercase(), c.as_str()),
        None => String::new(),
    }
}

fn body_ref(schema: &str) -> Value {
    json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn op(
    verb: &str,
    action: &str,
    r: &ResourceInfo,
    gvk: (&str, &str, &str),
    schema: &str,
    namespaced: bool,
    sub: &str,
) -> Value {
    let mut o = json!({
        "operationId": op_id(verb, r, namespaced, sub),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": gvk.0, "version": gvk.1, "kind": gvk.2},
    });
    match action {
        "post" | "put" => {
            o["parameters"] = Value::Array(write_params(false));
            o["requestBody"] = body_ref(schema);
        }
        "patch" => {
            o["parameters"] = Value::Array(write_params(true));
            o["requestBody"] = json!({"content": {
                "application/json-patch+json": {"schema": {"type": "object"}},
                "application/merge-patch+json": {"schema": {"type": "object"}},
                "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
                "application/apply-patch+yaml": {"schema": {"type": "object"}},
            }});
        }
        "delete" | "deletecollection" => {
            o["parameters"] = json!([param("dryRun", "When present, indicates that modifications should not be persisted."), {"name": "propagationPolicy", "in": "query", "schema": {"type": "string"}}, {"name": "gracePeriodSeconds", "in": "query", "schema": {"type": "integer"}}]);
        }
        "list" | "watchlist" => {
            o["parameters"] = json!([param("labelSelector", "A selector to restrict the list of returned objects by their labels."), param("fieldSelector", "A selector to restrict the list of returned objects by their fields."), {"name": "limit", "in": "query", "schema": {"type": "integer"}}, param("continue", "continue token"), param("resourceVersion", "resourceVersion"), {"name": "watch", "in": "query", "schema": {"type": "boolean"}}]);
        }
        _ => {}
    }
    o
}

/// The paths of one resource.
fn resource_paths(
    r: &ResourceInfo,
    schema: &str,
    list_schema: &str,
    paths: &mut Map<String, Value>,
) {
    let gv = gv_path(&r.group, &r.version);
    let gvk = (r.group.as_str(), r.version.as_str(), r.kind.as_str());
    let base = if r.namespaced {
        format!("/{gv}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("/{gv}/{}", r.plural)
    };
    let ns_param = json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}});
    let name_param = json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}});
    let scope_params = |with_name: bool| -> Value {
        let mut p = Vec::new();
        if with_name {
            p.push(name_param.clone());
        }
        if r.namespaced {
            p.push(ns_param.clone());
        }
        Value::Array(p)
    };
    let mut coll = Map::new();
    if r.has_verb("list") {
        coll.insert(
            "get".into(),
            op("list", "list", r, gvk, list_schema, r.namespaced, ""),
        );
    }
    if r.has_verb("create") {
        coll.insert(
            "post".into(),
            op("create", "post", r, gvk, schema, r.namespaced, ""),
        );
    }
    if r.has_verb("deletecollection") {
        coll.insert(
            "delete".into(),
            op(
                "deletecollection",
                "deletecollection",
                r,
                gvk,
                "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
                r.namespaced,
                "",
            ),
        );
    }
    if !coll.is_empty() {
        coll.insert("parameters".into(), scope_params(false));
        paths.insert(base.clone(), Value::Object(coll));
    }
    if r.namespaced && r.has_verb("list") {
        let mut all = Map::new();
        all.insert(
            "get".into(),
            op(
                "list",
                "list",
                r,
                gvk,
                list_schema,
                false,
                "ForAllNamespaces",
            ),
        );
        paths.insert(format!("/{gv}/{}", r.plural), Value::Object(all));
    }
    let mut item = Map::new();
    if r.has_verb("get") {
        item.insert(
            "get".into(),
            op("read", "get", r, gvk, schema, r.namespaced, ""),
        );
    }
    if r.has_verb("update") {
        item.insert(
            "put".into(),
            op("replace", "put", r, gvk, schema, r.namespaced, ""),
        );
    }
    if r.has_verb("patch") {
        item.insert(
            "patch".into(),
            op("patch", "patch", r, gvk, schema, r.namespaced, ""),
        );
    }
    if r.has_verb("delete") {
        item.insert(
            "delete".into(),
            op(
                "delete",
                "delete",
                r,
                gvk,
                "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
                r.namespaced,
                "",
            ),
        );
    }
    if !item.is_empty() {
        item.insert("parameters".into(), scope_params(true));
        paths.insert(format!("{base}/{{name}}"), Value::Object(item));
    }
    for s in &r.subresources {
        if !matches!(s.name.as_str(), "status" | "scale") {
            continue;
        }
        let (sschema, sgvk) = if s.name == "scale" {
            (
                "io.k8s.api.autoscaling.v1.Scale",
                ("autoscaling", "v1", "Scale"),
            )
        } else {
            (schema, gvk)
        };
        let mut sub = Map::new();
        sub.insert(
            "get".into(),
            op("read", "get", r, sgvk, sschema, r.namespaced, &s.name),
        );
        sub.insert(
            "put".into(),
            op("replace", "put", r, sgvk, sschema, r.namespaced, &s.name),
        );
        sub.insert(
            "patch".into(),
            op("patch", "patch", r, sgvk, sschema, r.namespaced, &s.name),
        );
        sub.insert("parameters".into(), scope_params(true));
        paths.insert(format!("{base}/{{name}}/{}", s.name), Value::Object(sub));
    }
}

/// Schema name of a custom resource (`com.example.v1.Widget`).
pub fn custom_schema_name(group: &str, version: &str, kind: &str) -> String {
    let rev: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", rev.join("."))
}

/// The document of one group/version. `custom_schemas` gives the `openAPIV3Schema` of custom
/// kinds (by kind); built-in kinds take their schemas from `k8s-openapi`.
pub fn group_version_doc(
    reg: &Registry,
    group: &str,
    version: &str,
    custom_schemas: &Map<String, Value>,
) -> Option<Value> {
    let resources = reg.in_group_version(group, version);
    if resources.is_empty() {
        return None;
    }
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    let mut roots: Vec<(String, String, String, String)> = Vec::new();
    crate::typed::add_schema(&mut generator, "autoscaling", "v1", "Scale");
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    let mut custom_defs = Map::new();
    for r in &resources {
        let schema = if r.custom {
            let name = custom_schema_name(&r.group, &r.version, &r.kind);
            let mut s = custom_schemas.get(&r.kind).cloned().unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
            if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
                props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            }
            generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
            custom_defs.insert(name.clone(), s);
            name
        } else {
            match crate::typed::add_schema(&mut generator, &r.group, &r.version, &r.kind) {
                Some(n) => n,
                None => continue,
            }
        };
        let list_schema = format!("{schema}List");
        resource_paths(r, &schema, &list_schema, &mut paths);
        roots.push((schema, r.group.clone(), r.version.clone(), r.kind.clone()));
    }
    let mut defs = generator.take_definitions(true);
    defs.extend(custom_defs);
    // Lists: a generic shape referencing the item schema.
    for (schema, g, v, k) in &roots {
        defs.entry(format!("{schema}List")).or_insert_with(|| json!({
            "type": "object", "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "items": {"type": "array", "items": {"allOf": [{"$ref": format!("#/components/schemas/{schema}")}]}},
                "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}]},
            },
            "x-kubernetes-group-version-kind": [{"group": g, "version": v, "kind": format!("{k}List")}],
        }));
        if let Some(d) = defs.get_mut(schema).and_then(Value::as_object_mut) {
            d.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": g, "version": v, "kind": k}]),
            );
        }
    }
    generator_meta_schemas(&mut defs);
    for (name, d) in defs.iter_mut() {
        strip_bool_additional_properties(d);
        // k8s-openapi marks metadata required on top-level kinds; upstream does not.
        if roots.iter().any(|(s, ..)| s == name)
            && let Some(req) = d.get_mut("required").and_then(Value::as_array_mut)
        {
            req.retain(|f| f != "metadata");
            if req.is_empty() {
                d.as_object_mut().map(|m| m.remove("required"));
            }
        }
    }
    for (schema, ..) in &roots {
        annotate_lists(&mut defs, schema, &mut Vec::new(), &mut HashSet::new());
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::KUBE_VERSION},
        "paths": paths,
        "components": {"schemas": defs},
    }))
}

/// kubectl 1.27–1.30 crash on boolean `additionalProperties`: drop them (absent means "any").
fn strip_bool_additional_properties(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("additionalProperties").is_some_and(Value::is_boolean) {
                m.remove("additionalProperties");
            }
            for child in m.values_mut() {
                strip_bool_additional_properties(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_bool_additional_properties),
        _ => {}
    }
}

/// ListMeta is referenced by the list shapes; make sure it is there.
fn generator_meta_schemas(defs: &mut Map<String, Value>) {
    if !defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta") {
        let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
        g.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
        for (k, v) in g.take_definitions(true) {
            defs.entry(k).or_insert(v);
        }
    }
}

fn ref_name(v: &Value) -> Option<String> {
    let r = v.get("$ref").or_else(|| {
        v.get("allOf")
            .and_then(|a| a.get(0))
            .and_then(|x| x.get("$ref"))
    })?;
    r.as_str()?
        .strip_prefix("#/components/schemas/")
        .map(str::to_string)
}

/// Mark list fields with their patch merge keys (the same table strategic merge uses).
fn annotate_lists(
    defs: &mut Map<String, Value>,
    name: &str,
    parents: &mut Vec<String>,
    seen: &mut HashSet<(String, String)>,
) {
    let parent = parents.last().cloned().unwrap_or_default();
    if parents.len() > 12 || !seen.insert((name.to_string(), parent)) {
        return;
    }
    let Some(props) = defs
        .get(name)
        .and_then(|d| d.get("properties"))
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let mut children: Vec<(String, String)> = Vec::new();
    for (field, schema) in &props {
        if schema.get("type").and_then(Value::as_str) == Some("array") {
            let ext = match list_strategy(parents, field) {
                ListStrategy::MergeBy(key) => Some(
                    json!({"x-kubernetes-patch-merge-key": key, "x-kubernetes-patch-strategy": "merge"}),
                ),
                ListStrategy::MergeScalars => Some(json!({"x-kubernetes-patch-strategy": "merge"})),
                ListStrategy::Replace => None,
            };
            if let (Some(ext), Some(p)) = (
                ext,
                defs.get_mut(name)
                    .and_then(|d| d.get_mut("properties"))
                    .and_then(|p| p.get_mut(field))
                    .and_then(Value::as_object_mut),
            ) {
                for (k, v) in ext.as_object().into_iter().flatten() {
                    p.insert(k.clone(), v.clone());
                }
            }
            if let Some(item) = schema.get("items").and_then(ref_name) {
                children.push((field.clone(), item));
            }
        } else if let Some(child) = ref_name(schema) {
            children.push((field.clone(), child));
        }
    }
    for (field, child) in children {
        parents.push(field);
        annotate_lists(defs, &child, parents, seen);
        parents.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_v1_document() {
        let reg = Registry::builtin();
        let doc = group_version_doc(&reg, "apps", "v1", &Map::new()).expect("apps/v1 served");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .expect("params")
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let dep = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(dep["x-kubernetes-group-version-kind"][0]["group"], "apps");
        let ctr = &doc["components"]["schemas"]["io.k8s.api.core.v1.Container"]["properties"];
        assert_eq!(
            ctr["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        assert_eq!(ctr["env"]["x-kubernetes-patch-merge-key"], "name");
        let spec = &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"];
        assert_eq!(spec["containers"]["x-kubernetes-patch-merge-key"], "name");
        let idx = index(&reg, "");
        assert!(
            idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .expect("url")
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
    }
}
