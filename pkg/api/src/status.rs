//! Kubernetes `Status` errors: every failure the API answers is one of these, with upstream's
//! `reason`, `code` and `details`.

use serde_json::{Map, Value, json};

/// One cause of an invalid or rejected request (`details.causes[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// The field path, e.g. `metadata.name`.
    pub field: String,
}

impl Cause {
    /// A cause for `field` with `reason` and `message`.
    pub fn new(reason: &str, field: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// An error answered as a Kubernetes `Status`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, …).
    pub reason: String,
    /// Message shown by kubectl.
    pub message: String,
    /// `details.group`.
    pub group: Option<String>,
    /// `details.kind` (the resource plural, as upstream puts it).
    pub kind: Option<String>,
    /// `details.name`.
    pub name: Option<String>,
    /// `details.causes`.
    pub causes: Vec<Cause>,
    /// `details.retryAfterSeconds`.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A bare error with code, reason and message.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            group: None,
            kind: None,
            name: None,
            causes: Vec::new(),
            retry_after: None,
        }
    }

    /// Details naming the target (present even when every field is empty, as upstream's
    /// constructors that take one; empty fields are left out of the JSON).
    fn with_target(mut self, group: &str, resource: &str, name: &str) -> Self {
        self.group = Some(group.to_string());
        self.kind = Some(resource.to_string());
        if !name.is_empty() {
            self.name = Some(name.to_string());
        }
        self
    }

    /// `resource.group "name" not found` (404).
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", gr(group, resource)),
        )
        .with_target(group, resource, name)
    }

    /// `resource.group "name" already exists` (409).
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", gr(group, resource)),
        )
        .with_target(group, resource, name)
    }

    /// Optimistic-concurrency conflict (409).
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                gr(group, resource)
            ),
        )
        .with_target(group, resource, name)
    }

    /// Validation failure (422) with field causes; the message lists them like upstream.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {summary}", gk(group, kind)),
        )
        .with_target(group, kind, name);
        e.causes = causes;
        e
    }

    /// Malformed request (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// Missing or invalid credentials (401).
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// Authenticated but not allowed (403), as upstream's authorizer answers: `resource`
    /// may carry a subresource (`pods/exec`), named in the message; the prefix and the details
    /// name the resource alone.
    pub fn forbidden(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        name: Option<&str>,
        ns: Option<&str>,
    ) -> Self {
        let scope = match ns {
            Some(ns) if !ns.is_empty() => format!("in the namespace \"{ns}\""),
            _ => "at the cluster scope".to_string(),
        };
        let plural = resource.split('/').next().unwrap_or(resource);
        let name = name.unwrap_or_default();
        let target = if name.is_empty() {
            gr(group, plural)
        } else {
            format!("{} \"{name}\"", gr(group, plural))
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{target} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
            ),
        )
        .with_target(group, plural, name)
    }

    /// A non-resource path not allowed (403): `verb` is the request's lowercase method.
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""),
        )
        .with_target("", "", "")
    }

    /// Request refused with a custom Forbidden message (namespace terminating, …).
    pub fn forbidden_msg(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// Unknown path or resource (404 with an empty-ish message like upstream).
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_target("", "", "")
    }

    /// Verb not supported on the resource (405).
    pub fn method_not_allowed(verb: &str, resource: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{resource}\""),
        )
    }

    /// Unsupported content type (415).
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {ct}"
            ),
        )
    }

    /// Unacceptable `Accept` header (406).
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, application/yaml; requested {accept}"
            ),
        )
    }

    /// Body over the limit (413).
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// `resourceVersion` compacted (410).
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// Too many requests (429).
    pub fn too_many_requests(message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.retry_after = Some(retry_after);
        e
    }

    /// Server-side failure (500); the cause's message repeats it, as upstream's.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        );
        e.causes = vec![Cause::new("", "", message)];
        e
    }

    /// Server timeout (504).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The Status object as JSON, fields in the order and with the omissions of upstream's Go
    /// struct (`metav1.Status`: kind, apiVersion, metadata, status, message, reason, details,
    /// code; empty strings and zero numbers left out).
    pub fn to_status(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        status.insert("metadata".into(), json!({}));
        status.insert("status".into(), json!("Failure"));
        put_str(&mut status, "message", &self.message);
        put_str(&mut status, "reason", &self.reason);
        let causes: Vec<Value> = self
            .causes
            .iter()
            .map(|c| {
                let mut m = Map::new();
                put_str(&mut m, "reason", &c.reason);
                put_str(&mut m, "message", &c.message);
                put_str(&mut m, "field", &c.field);
                Value::Object(m)
            })
            .collect();
        let details = details(
            self.name.as_deref().unwrap_or_default(),
            self.group.as_deref().unwrap_or_default(),
            self.kind.as_deref().unwrap_or_default(),
            "",
            causes,
            self.retry_after.unwrap_or(0),
        );
        let targeted = self.name.is_some() || self.group.is_some() || self.kind.is_some();
        if targeted || !details.is_empty() {
            status.insert("details".into(), Value::Object(details));
        }
        if self.code != 0 {
            status.insert("code".into(), json!(self.code));
        }
        Value::Object(status)
    }
}

/// `metav1.StatusDetails` in Go field order, empty fields left out.
fn details(
    name: &str,
    group: &str,
    kind: &str,
    uid: &str,
    causes: Vec<Value>,
    retry_after: u32,
) -> Map<String, Value> {
    let mut d = Map::new();
    put_str(&mut d, "name", name);
    put_str(&mut d, "group", group);
    put_str(&mut d, "kind", kind);
    put_str(&mut d, "uid", uid);
    if !causes.is_empty() {
        d.insert("causes".into(), Value::Array(causes));
    }
    if retry_after != 0 {
        d.insert("retryAfterSeconds".into(), json!(retry_after));
    }
    d
}

/// Go's `omitempty` for a string field.
fn put_str(m: &mut Map<String, Value>, key: &str, v: &str) {
    if !v.is_empty() {
        m.insert(key.into(), json!(v));
    }
}

/// A success `Status` (for deletes that complete immediately on some resources).
pub fn success_status(group: &str, resource: &str, name: &str, uid: &str) -> Value {
    let mut s = Map::new();
    s.insert("kind".into(), json!("Status"));
    s.insert("apiVersion".into(), json!("v1"));
    s.insert("metadata".into(), json!({}));
    s.insert("status".into(), json!("Success"));
    s.insert(
        "details".into(),
        Value::Object(details(name, group, resource, uid, Vec::new(), 0)),
    );
    Value::Object(s)
}

fn gr(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn gk(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_shape() {
        let e = ApiError::not_found("apps", "deployments", "web");
        let s = e.to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["name"], "web");
    }

    #[test]
    fn invalid_lists_causes() {
        let e = ApiError::invalid(
            "",
            "ConfigMap",
            "Bad_Name",
            vec![Cause::new(
                "FieldValueInvalid",
                "metadata.name",
                "Invalid value: \"Bad_Name\": bad",
            )],
        );
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
        assert!(
            s["message"]
                .as_str()
                .unwrap_or_default()
                .contains("metadata.name")
        );
    }
}
