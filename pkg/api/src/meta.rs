//! Helpers over object metadata of JSON objects (stored objects stay JSON so unknown fields of
//! custom resources survive).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// `metadata` of an object (or `Null`).
pub fn metadata(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

/// Mutable `metadata`, created as an empty object when missing or not an object.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(map) = obj else {
        unreachable!("just set to an object")
    };
    let entry = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let Value::Object(m) = entry else {
        unreachable!("just set to an object")
    };
    m
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    metadata(obj).get(field).and_then(Value::as_str)
}

/// `metadata.name` (empty when missing).
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or_default()
}

/// `metadata.namespace`, if set and non-empty.
pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace").filter(|s| !s.is_empty())
}

/// `metadata.uid` (empty when missing).
pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid").unwrap_or_default()
}

/// `metadata.resourceVersion` (empty when missing).
pub fn resource_version(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion").unwrap_or_default()
}

/// Set `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rv: i64) {
    metadata_mut(obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

/// `metadata.labels` as a map (non-string values are skipped).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(metadata(obj).get("labels"))
}

/// `metadata.annotations` as a map.
pub fn annotations(obj: &Value) -> BTreeMap<String, String> {
    string_map(metadata(obj).get("annotations"))
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    metadata(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    metadata(obj)
        .get("deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// `apiVersion` and `kind` of an object.
pub fn type_meta(obj: &Value) -> (&str, &str) {
    (
        obj.get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        obj.get("kind").and_then(Value::as_str).unwrap_or_default(),
    )
}

/// Split an `apiVersion` into group and version (`apps/v1` → (`apps`, `v1`), `v1` → (``, `v1`)).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Now, as an RFC 3339 timestamp with second precision, like `metav1.Time`.
pub fn now_rfc3339() -> String {
    format_time(jiff::Timestamp::now())
}

/// Format a timestamp like `metav1.Time` (`2006-01-02T15:04:05Z`).
pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parse a `metav1.Time`/`MicroTime` string.
pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// Upstream's human duration for AGE columns (`5s`, `3m2s`, `4h`, `2d3h`, `5y`).
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 192 {
        let h = hours % 24;
        let days = hours / 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    let days = hours / 24;
    if days < 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if years < 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

/// Age of an object from its `creationTimestamp`, formatted for tables (`<unknown>` if unset).
pub fn age(obj: &Value, now: jiff::Timestamp) -> String {
    match meta_str(obj, "creationTimestamp").and_then(parse_time) {
        Some(t) => {
            let d = now.duration_since(t);
            human_duration(std::time::Duration::from_secs(d.as_secs().max(0) as u64))
        }
        None => "<unknown>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn durations_like_upstream() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(150)), "2m30s");
        assert_eq!(human_duration(Duration::from_secs(30 * 60)), "30m");
        assert_eq!(human_duration(Duration::from_secs(4 * 3600 + 120)), "4h2m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86400 + 3600)),
            "3d1h"
        );
    }

    #[test]
    fn metadata_helpers() {
        let mut o = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "labels": {"x": "y"}}});
        assert_eq!(name(&o), "a");
        assert_eq!(namespace(&o), None);
        set_resource_version(&mut o, 7);
        assert_eq!(resource_version(&o), "7");
        assert_eq!(labels(&o).get("x").map(String::as_str), Some("y"));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        let mut s = json!("scalar");
        metadata_mut(&mut s).insert("name".into(), json!("b"));
        assert_eq!(name(&s), "b");
    }
}
