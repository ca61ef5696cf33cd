//! Custom resources against their CRD's structural schema (`openAPIV3Schema`): unknown fields
//! are pruned (or reported, for `fieldValidation`), values of the wrong type, missing required
//! fields and values outside an `enum` are invalid.

use serde_json::Value;

use crate::status::Cause;

/// What checking an object found.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Paths of fields the schema does not declare (removed from the object when pruning).
    pub unknown: Vec<String>,
    /// Invalid values.
    pub causes: Vec<Cause>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match (want, v) {
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        ("number", Value::Number(_)) => true,
        (w, v) => w == type_name(v),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, prune: bool, r: &mut Report) {
    if v.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        if !matches!(v, Value::Number(_) | Value::String(_)) {
            r.causes.push(Cause::new("FieldValueTypeInvalid", path, format!("Invalid value: \"{}\": {path} in body must be of type integer-or-string: \"{}\"", type_name(v), type_name(v))));
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str)
        && !type_ok(want, v)
    {
        let shown = match &*v {
            Value::String(_) | Value::Object(_) | Value::Array(_) => type_name(v).to_string(),
            other => other.to_string(),
        };
        r.causes.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: \"{shown}\": {path} in body must be of type {want}: \"{}\"",
                type_name(v)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        r.causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(m) => walk_object(schema, m, path, prune, r, false),
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    walk(s, it, &format!("{path}[{i}]"), prune, r);
                }
            }
        }
        _ => {}
    }
}

/// The fields of an object under an object schema. At the top level (`root`), `apiVersion`,
/// `kind` and `metadata` are the server's business and skipped.
fn walk_object(
    schema: &Value,
    m: &mut serde_json::Map<String, Value>,
    path: &str,
    prune: bool,
    r: &mut Report,
    root: bool,
) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let embedded = root
        || schema
            .get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            == Some(true);
    let server_owned = |k: &str| embedded && matches!(k, "apiVersion" | "kind" | "metadata");
    let mut drop = Vec::new();
    for (k, child) in m.iter_mut() {
        let p = join(path, k);
        match (props.and_then(|ps| ps.get(k)), additional) {
            _ if root && server_owned(k) => {}
            (Some(s), _) | (None, Some(s)) => walk(s, child, &p, prune, r),
            (None, None) if preserve || server_owned(k) => {}
            (None, None) => {
                r.unknown.push(p);
                drop.push(k.clone());
            }
        }
    }
    if prune {
        for k in drop {
            m.remove(&k);
        }
    }
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = req.as_str()
            && !(root && server_owned(name))
            && !m.contains_key(name)
        {
            r.causes.push(Cause::new(
                "FieldValueRequired",
                &join(path, name),
                "Required value",
            ));
        }
    }
}

/// Check a custom object against `schema` (the version's `openAPIV3Schema`). With `prune`,
/// unknown fields are removed from `obj`.
pub fn check(schema: &Value, obj: &mut Value, prune: bool) -> Report {
    let mut r = Report::default();
    if let Some(m) = obj.as_object_mut() {
        walk_object(schema, m, "", prune, &mut r, true);
    }
    r
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "required": ["spec"], "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "string", "enum": ["small", "large"]},
                "replicas": {"type": "integer"},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}})
    }

    #[test]
    fn prunes_unknown_and_reports_invalid() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"size": "small", "replicas": 2, "port": "http", "tags": ["a"], "labels": {"k": "v"}, "free": {"any": {"thing": 1}}, "bogus": 1},
            "extra": true});
        let r = check(&schema(), &mut o, true);
        assert_eq!(
            r.unknown,
            vec!["spec.bogus".to_string(), "extra".to_string()]
        );
        assert!(r.causes.is_empty(), "{:?}", r.causes);
        assert!(o["spec"].get("bogus").is_none() && o.get("extra").is_none());
        assert_eq!(o["spec"]["free"]["any"]["thing"], 1);

        let mut bad = json!({"spec": {"size": "huge", "replicas": "two", "tags": [1]}});
        let r = check(&schema(), &mut bad, false);
        let fields: Vec<&str> = r.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.size", "spec.replicas", "spec.tags[0]"]);
        let mut missing = json!({"spec": {}});
        assert_eq!(
            check(&schema(), &mut missing, false).causes[0].field,
            "spec.size"
        );
    }
}
