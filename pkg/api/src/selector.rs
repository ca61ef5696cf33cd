//! Label selectors (`-l`) and field selectors (`--field-selector`) as upstream parses them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::status::ApiError;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`, or `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, or `key notin (a,b)` (also matches objects without the key).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

fn is_label_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || !key.chars().all(is_label_key_char) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key \"{key}\""
        )));
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<(), ApiError> {
    if v.len() > 63
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label value: \"{v}\""
        )));
    }
    Ok(())
}

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(rest: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: expected '(' … ')', found {rest:?}"
            ))
        })?;
    let mut vals = Vec::new();
    for v in inner.split(',') {
        let v = v.trim();
        validate_value(v)?;
        vals.push(v.to_string());
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parse the string form (`a=b,c!=d,e in (x,y),!f`).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: empty requirement in {s:?}"
                )));
            }
            if let Some(key) = part.strip_prefix('!') {
                let key = key.trim();
                validate_key(key)?;
                reqs.push(Requirement::DoesNotExist(key.to_string()));
            } else if let Some((k, v)) = part.split_once("!=") {
                let (k, v) = (k.trim(), v.trim());
                validate_key(k)?;
                validate_value(v)?;
                reqs.push(Requirement::NotIn(k.to_string(), vec![v.to_string()]));
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                let (k, v) = (k.trim(), v.trim());
                validate_key(k)?;
                validate_value(v)?;
                reqs.push(Requirement::In(k.to_string(), vec![v.to_string()]));
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                let k = k.trim();
                validate_key(k)?;
                reqs.push(Requirement::NotIn(k.to_string(), parse_set(rest)?));
            } else if let Some((k, rest)) = part.split_once(" in ") {
                let k = k.trim();
                validate_key(k)?;
                reqs.push(Requirement::In(k.to_string(), parse_set(rest)?));
            } else {
                validate_key(part)?;
                reqs.push(Requirement::Exists(part.to_string()));
            }
        }
        Ok(Self(reqs))
    }

    /// Build from `matchLabels` / `matchExpressions` of a `metav1.LabelSelector` JSON value.
    pub fn from_json(sel: &Value) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Requirement::In(
                    k.clone(),
                    vec![v.as_str().unwrap_or_default().to_string()],
                ));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                reqs.push(match op {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                });
            }
        }
        Ok(Self(reqs))
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether the labels of a JSON object satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        self.matches(&crate::meta::labels(obj))
    }
}

/// One field requirement (`path=value` or `path!=value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted path, e.g. `status.phase`.
    pub path: String,
    /// Value compared against.
    pub value: String,
    /// `!=` instead of `=`.
    pub negated: bool,
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parse `a=b,c!=d`, accepting only the fields in `supported` plus `metadata.name` and
    /// `metadata.namespace` (upstream answers 400 for others).
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in s.split(',') {
            let (path, value, negated) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let path = path.trim();
            if path != "metadata.name" && path != "metadata.namespace" && !supported.contains(&path)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {path}"
                )));
            }
            reqs.push(FieldRequirement {
                path: path.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(Self(reqs))
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a JSON object satisfies every requirement. Missing fields compare as `""`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let actual = selectable_value(obj, &r.path);
            (actual == r.value) != r.negated
        })
    }

    /// The value required for `path` with `=`, if any (used to narrow list scans).
    pub fn required(&self, path: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.path == path && !r.negated)
            .map(|r| r.value.as_str())
    }
}

/// The value a field selector compares for `name`, as upstream's `*ToSelectableFields` write
/// it: a few names read another path (`source` is the event's `source.component`, a Job's
/// `status.successful` its `status.succeeded`), and booleans and counts that Go holds as plain
/// values read `false` / `0` when the object leaves them out (a node that was never cordoned
/// matches `spec.unschedulable==false`).
fn selectable_value(obj: &Value, name: &str) -> String {
    let (path, missing) = match name {
        "spec.unschedulable" | "spec.hostNetwork" => (name, "false"),
        "status.replicas" => (name, "0"),
        "status.successful" => ("status.succeeded", "0"),
        "source" => ("source.component", ""),
        _ => (name, ""),
    };
    let v = field_value(obj, path);
    if v.is_empty() { missing.to_string() } else { v }
}

/// The string form of a field of `obj` at a dotted path (`""` when missing).
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Fields upstream supports in field selectors, per kind (beyond metadata.name/namespace).
pub fn supported_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") | ("events.k8s.io", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Namespace") => &["status.phase"],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        ("certificates.k8s.io", "CertificateSigningRequest") => &["spec.signerName"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_forms() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (prod, staging),!legacy,team")
            .expect("parses");
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("team", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("legacy", "1")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(LabelSelector::parse("a b=c").is_err());
        assert!(LabelSelector::parse("a=(").is_err());
    }

    #[test]
    fn field_selector() {
        let pod = json!({"metadata": {"name": "p"}, "status": {"phase": "Running"}, "spec": {}});
        let f = FieldSelector::parse(
            "status.phase!=Pending,metadata.name=p",
            supported_fields("", "Pod"),
        )
        .expect("parses");
        assert!(f.matches_object(&pod));
        let err = FieldSelector::parse("spec.foo=bar", supported_fields("", "Pod"))
            .expect_err("unsupported");
        assert_eq!(err.code, 400);
        let f =
            FieldSelector::parse("spec.nodeName=", supported_fields("", "Pod")).expect("parses");
        assert!(f.matches_object(&pod));
        let f = FieldSelector::parse("spec.hostNetwork=false", supported_fields("", "Pod"))
            .expect("parses");
        assert!(f.matches_object(&pod));
    }

    /// Values Go holds as plain booleans and counts select as `false` / `0` when left out.
    #[test]
    fn defaulted_and_renamed_fields() {
        let nodes = supported_fields("", "Node");
        let plain = json!({"metadata": {"name": "n1"}, "spec": {}});
        let cordoned = json!({"metadata": {"name": "n2"}, "spec": {"unschedulable": true}});
        let sel = |s: &str| FieldSelector::parse(s, nodes).expect("parses");
        assert!(sel("spec.unschedulable==false").matches_object(&plain));
        assert!(!sel("spec.unschedulable==false").matches_object(&cordoned));
        assert!(sel("spec.unschedulable=true").matches_object(&cordoned));
        assert!(sel("spec.unschedulable!=true").matches_object(&plain));
        let job = json!({"status": {"succeeded": 2}});
        let f = FieldSelector::parse("status.successful=2", supported_fields("batch", "Job"))
            .expect("parses");
        assert!(f.matches_object(&job));
        let f = FieldSelector::parse("status.successful=0", supported_fields("batch", "Job"))
            .expect("parses");
        assert!(f.matches_object(&json!({"status": {}})));
        let rs = FieldSelector::parse("status.replicas=0", supported_fields("apps", "ReplicaSet"))
            .expect("parses");
        assert!(rs.matches_object(&json!({"status": {}})));
        let ev = json!({"source": {"component": "kubelet"}, "type": "Normal", "reason": "Pulled"});
        let f = FieldSelector::parse(
            "source=kubelet,type=Normal,reason=Pulled",
            supported_fields("", "Event"),
        )
        .expect("parses");
        assert!(f.matches_object(&ev));
        let err = FieldSelector::parse("spec.providerID=x", nodes).expect_err("unsupported");
        assert_eq!(err.message, "field label not supported: spec.providerID");
    }
}
