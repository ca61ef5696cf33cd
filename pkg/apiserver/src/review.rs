//! Create-only review resources: SelfSubjectReview, (Self|Local)SubjectAccessReview,
//! SelfSubjectRulesReview, TokenReview.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use k8slite_api::ApiError;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::authz::{Attributes, Decision, Identity};
use crate::body::Body;
use crate::codec::check_object;
use crate::handler::ResourceRequest;

fn attrs_from(spec: &Value) -> Attributes {
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if spec.get("nonResourceAttributes").is_some() {
        return Attributes {
            verb: s("/nonResourceAttributes/verb"),
            path: s("/nonResourceAttributes/path"),
            ..Default::default()
        };
    }
    let ns = s("/resourceAttributes/namespace");
    let name = s("/resourceAttributes/name");
    Attributes {
        verb: s("/resourceAttributes/verb"),
        group: s("/resourceAttributes/group"),
        resource: s("/resourceAttributes/resource"),
        subresource: s("/resourceAttributes/subresource"),
        namespace: (!ns.is_empty()).then_some(ns),
        name: (!name.is_empty()).then_some(name),
        path: String::new(),
    }
}

impl ApiServer {
    /// POST of a review resource: computed, never stored.
    pub(crate) async fn review(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let obj = r.decode_body(&body)?;
        let mut obj = check_object(obj, &r.info.api_version(), &r.info.kind)?;
        let status = match r.info.kind.as_str() {
            "SelfSubjectReview" => {
                json!({"userInfo": {"username": r.identity.user, "groups": r.identity.groups}})
            }
            "SelfSubjectAccessReview" => {
                let spec = obj.get("spec").cloned().unwrap_or(json!({}));
                self.access_status(&r.identity, &attrs_from(&spec))
            }
            "SubjectAccessReview" | "LocalSubjectAccessReview" => {
                let spec = obj.get("spec").cloned().unwrap_or(json!({}));
                let user = spec.get("user").and_then(Value::as_str).unwrap_or_default();
                let groups: Vec<String> = spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|g| g.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if user.is_empty() && groups.is_empty() {
                    return Err(ApiError::invalid(
                        &r.info.group,
                        &r.info.kind,
                        "",
                        vec![k8slite_api::Cause::new(
                            "FieldValueRequired",
                            "spec.user",
                            "Required value: at least one of user or group must be specified",
                        )],
                    ));
                }
                let mut attrs = attrs_from(&spec);
                if r.info.kind == "LocalSubjectAccessReview" {
                    attrs.namespace = r.ns().map(str::to_string);
                }
                self.access_status(
                    &Identity {
                        user: user.to_string(),
                        groups,
                    },
                    &attrs,
                )
            }
            "SelfSubjectRulesReview" => {
                if r.identity.in_group("system:masters") {
                    json!({"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                           "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": false})
                } else {
                    json!({"resourceRules": [], "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/version", "/openapi", "/openapi/*"]}], "incomplete": false})
                }
            }
            "TokenReview" => {
                let spec = obj.get("spec").cloned().unwrap_or(json!({}));
                self.token_review_status(&spec).await
            }
            other => return Err(ApiError::method_not_allowed("create", other)),
        };
        obj["status"] = status;
        Ok(self.respond(r, StatusCode::CREATED, &obj))
    }

    fn access_status(&self, id: &Identity, attrs: &Attributes) -> Value {
        match self.authorizer.authorize(id, attrs) {
            Decision::Allow => {
                json!({"allowed": true, "reason": "allowed for group system:masters"})
            }
            Decision::Deny => json!({"allowed": false}),
        }
    }
}
