//! Validation of names, labels and required fields, with upstream's messages.

use serde_json::Value;

use crate::status::Cause;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// How a resource's object names are validated (upstream differs per resource).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most resources), at most 253 characters.
    Subdomain,
    /// RFC 1123 label (namespaces), at most 63 characters.
    Label,
    /// RFC 1035 label (services), at most 63 characters.
    Dns1035,
    /// Path segment (RBAC objects): not `.`/`..`, no `/` or `%`.
    PathSegment,
}

impl NameRule {
    /// The rule upstream applies to objects of `group`/`kind`.
    pub fn for_kind(group: &str, kind: &str) -> Self {
        match (group, kind) {
            ("", "Namespace") => Self::Label,
            ("", "Service") => Self::Dns1035,
            ("rbac.authorization.k8s.io", _) => Self::PathSegment,
            // Custom resources, nodes and most others: subdomain.
            _ => Self::Subdomain,
        }
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// RFC 1123 subdomain check.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

/// Causes for an invalid object name under `rule` (empty when valid). `field` is the path
/// reported (`metadata.name`).
pub fn validate_name(name: &str, rule: NameRule, field: &str) -> Vec<Cause> {
    let invalid = |msg: &str| {
        vec![Cause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: \"{name}\": {msg}"),
        )]
    };
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                return invalid("must be no more than 253 characters");
            }
            if !is_dns1123_subdomain(name) {
                return invalid(DNS1123_SUBDOMAIN_MSG);
            }
        }
        NameRule::Label => {
            if name.len() > 63 {
                return invalid("must be no more than 63 characters");
            }
            if !is_label(name) {
                return invalid(DNS1123_LABEL_MSG);
            }
        }
        NameRule::Dns1035 => {
            if name.len() > 63 {
                return invalid("must be no more than 63 characters");
            }
            if !is_label(name) || !name.as_bytes()[0].is_ascii_lowercase() {
                return invalid(DNS1035_LABEL_MSG);
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                return invalid(&format!("may not be '{name}'"));
            }
            if name.contains('/') || name.contains('%') {
                return invalid("may not contain '/' or '%'");
            }
        }
    }
    Vec::new()
}

fn qualified_name_ok(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return false;
    }
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_alphanumeric)
}

fn label_value_ok(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
            && v.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric))
}

/// Validate `metadata`: name (unless `generateName` will supply it), labels, annotations.
pub fn validate_metadata(obj: &Value, rule: NameRule, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = crate::meta::metadata(obj);
    if !meta.is_object() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "metadata",
            "Required value",
        ));
        return causes;
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() && generate.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    } else if !name.is_empty() {
        causes.extend(validate_name(name, rule, "metadata.name"));
    }
    if namespaced
        && let Some(ns) = meta.get("namespace").and_then(Value::as_str)
        && !ns.is_empty()
        && !is_label(ns)
    {
        causes.extend(validate_name(ns, NameRule::Label, "metadata.namespace"));
    }
    if let Some(labels) = meta.get("labels") {
        match labels.as_object() {
            Some(m) => {
                for (k, v) in m {
                    if !qualified_name_ok(k) {
                        causes.push(Cause::new("FieldValueInvalid", "metadata.labels", format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
                    }
                    match v.as_str() {
                        Some(s) if label_value_ok(s) => {}
                        _ => causes.push(Cause::new("FieldValueInvalid", "metadata.labels", format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"))),
                    }
                }
            }
            None if labels.is_null() => {}
            None => causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.labels",
                "Invalid value: must be a map of strings",
            )),
        }
    }
    if let Some(ann) = meta.get("annotations") {
        match ann.as_object() {
            Some(m) => {
                let total: usize = m
                    .iter()
                    .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                    .sum();
                if total > 256 * 1024 {
                    causes.push(Cause::new(
                        "FieldValueTooLong",
                        "metadata.annotations",
                        "Too long: must have at most 262144 bytes",
                    ));
                }
                for (k, v) in m {
                    if !qualified_name_ok(k) {
                        causes.push(Cause::new("FieldValueInvalid", "metadata.annotations", format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
                    }
                    if !v.is_string() {
                        causes.push(Cause::new(
                            "FieldValueInvalid",
                            "metadata.annotations",
                            format!("Invalid value: {v}: must be a string"),
                        ));
                    }
                }
            }
            None if ann.is_null() => {}
            None => causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.annotations",
                "Invalid value: must be a map of strings",
            )),
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(validate_name("web-1.example", NameRule::Subdomain, "metadata.name").is_empty());
        let c = validate_name("Bad_Name", NameRule::Subdomain, "metadata.name");
        assert_eq!(c.len(), 1);
        assert!(c[0].message.contains("RFC 1123 subdomain"));
        assert!(!validate_name("1svc", NameRule::Dns1035, "metadata.name").is_empty());
        assert!(!validate_name("a.b", NameRule::Label, "metadata.name").is_empty());
        assert!(validate_name("system:admin", NameRule::PathSegment, "metadata.name").is_empty());
    }

    #[test]
    fn metadata_rules() {
        let ok = json!({"metadata": {"generateName": "web-", "labels": {"app.kubernetes.io/name": "x", "e": ""}}});
        assert!(validate_metadata(&ok, NameRule::Subdomain, true).is_empty());
        let bad = json!({"metadata": {"name": "x", "labels": {"a": "has space"}}});
        assert_eq!(validate_metadata(&bad, NameRule::Subdomain, true).len(), 1);
        let none = json!({"metadata": {}});
        assert_eq!(
            validate_metadata(&none, NameRule::Subdomain, true)[0].reason,
            "FieldValueRequired"
        );
    }
}
