//! The API side of service-account tokens: the bearer authenticator, TokenRequest
//! (`serviceaccounts/token`) and TokenReview.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{Response, StatusCode};
use k8slite_api::{ApiError, Cause, meta};
use serde_json::{Value, json};

use super::{
    Claims, KubernetesClaims, ObjectRef, ServiceAccountUser, TokenError, TokenSigner, user_of,
};
use crate::ApiServer;
use crate::authn::{AuthFuture, TokenAuthenticator};
use crate::authz::Identity;
use crate::body::Body;
use crate::handler::ResourceRequest;

/// Bearer-token authenticator of service-account JWTs.
struct ServiceAccountAuthenticator(Weak<ApiServer>);

impl TokenAuthenticator for ServiceAccountAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let server = self.0.upgrade()?;
            let signer = server.sa_signer.get()?.clone();
            match server
                .validate_sa_token(&signer, token, signer.audiences())
                .await
            {
                Ok(u) => Some(Identity {
                    user: u.username,
                    groups: u.groups,
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "service-account token rejected");
                    None
                }
            }
        })
    }
}

fn invalid(name: &str, field: &str, msg: String) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        vec![Cause::new("FieldValueInvalid", field, msg)],
    )
}

impl ApiServer {
    /// Sign service-account tokens with `signer`, serve TokenRequest/TokenReview with it, and
    /// accept its tokens as bearer tokens.
    pub fn enable_service_account_tokens(self: &Arc<Self>, signer: Arc<TokenSigner>) {
        if self.sa_signer.set(signer).is_ok() {
            self.add_token_authenticator(Arc::new(ServiceAccountAuthenticator(Arc::downgrade(
                self,
            ))));
        }
    }

    /// Verify a token and that the service account (and bound pod or secret) still exist with
    /// the UIDs it names.
    pub(crate) async fn validate_sa_token(
        &self,
        signer: &TokenSigner,
        token: &str,
        audiences: &[String],
    ) -> Result<ServiceAccountUser, TokenError> {
        let claims = signer.verify(token, audiences)?;
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        let check = |plural: &'static str, r: &ObjectRef| {
            let r = r.clone();
            async move {
                let found = self
                    .get_object("", "v1", plural, Some(ns), &r.name)
                    .await
                    .map_err(|e| TokenError::Store(e.message))?;
                match found {
                    Some((o, _))
                        if meta::uid(&o) == r.uid
                            && !(plural == "pods" && meta::is_deleting(&o)) =>
                    {
                        Ok(())
                    }
                    Some((o, _)) if meta::uid(&o) != r.uid => {
                        Err(TokenError::Invalidated(format!(
                            "{plural} UID ({}) does not match claim ({})",
                            meta::uid(&o),
                            r.uid
                        )))
                    }
                    Some(_) => Err(TokenError::Invalidated(format!(
                        "pod {} is being deleted",
                        r.name
                    ))),
                    None => Err(TokenError::Invalidated(format!(
                        "{plural} \"{}\" not found: token has been invalidated",
                        r.name
                    ))),
                }
            }
        };
        check("serviceaccounts", &k.serviceaccount).await?;
        if let Some(p) = &k.pod {
            check("pods", p).await?;
        }
        if let Some(s) = &k.secret {
            check("secrets", s).await?;
        }
        Ok(user_of(&claims, audiences))
    }

    /// POST serviceaccounts/token: issue a TokenRequest's token.
    pub(crate) async fn create_token(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let signer =
            self.sa_signer.get().cloned().ok_or_else(|| {
                ApiError::internal("service-account token signing is not configured")
            })?;
        let tr = r.decode_body(&body)?;
        let (api_version, kind) = meta::type_meta(&tr);
        if !kind.is_empty() && (kind != "TokenRequest" || api_version != "authentication.k8s.io/v1")
        {
            return Err(ApiError::bad_request(format!(
                "the body must be an authentication.k8s.io/v1 TokenRequest, not {api_version} {kind}"
            )));
        }
        let ns = r.ns().unwrap_or_default().to_string();
        let name = r.name().to_string();
        let (sa, _) = self
            .get_object("", "v1", "serviceaccounts", Some(&ns), &name)
            .await?
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", &name))?;
        let spec = tr.get("spec").cloned().unwrap_or_else(|| json!({}));
        let exp_secs = spec
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        if exp_secs < 600 {
            return Err(invalid(
                &name,
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {exp_secs}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        if exp_secs > 1 << 32 {
            return Err(invalid(
                &name,
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {exp_secs}: may not specify a duration larger than 2^32 seconds"
                ),
            ));
        }
        let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => signer.audiences().to_vec(),
        };
        let mut kclaims = KubernetesClaims {
            namespace: ns.clone(),
            serviceaccount: ObjectRef {
                name: name.clone(),
                uid: meta::uid(&sa).to_string(),
            },
            ..Default::default()
        };
        let bound = spec.get("boundObjectRef").filter(|b| !b.is_null()).cloned();
        if let Some(b) = &bound {
            let bkind = b.get("kind").and_then(Value::as_str).unwrap_or_default();
            let bname = b.get("name").and_then(Value::as_str).unwrap_or_default();
            let buid = b.get("uid").and_then(Value::as_str).unwrap_or_default();
            let plural = match bkind {
                "Pod" => "pods",
                "Secret" => "secrets",
                "Node" => "nodes",
                other => {
                    return Err(invalid(
                        &name,
                        "spec.boundObjectRef.kind",
                        format!(
                            "Unsupported value: \"{other}\": supported values: \"Pod\", \"Secret\", \"Node\""
                        ),
                    ));
                }
            };
            if bname.is_empty() {
                return Err(ApiError::invalid(
                    "authentication.k8s.io",
                    "TokenRequest",
                    &name,
                    vec![Cause::new(
                        "FieldValueRequired",
                        "spec.boundObjectRef.name",
                        "Required value",
                    )],
                ));
            }
            let obj_ns = (plural != "nodes").then_some(ns.as_str());
            let (obj, _) = self
                .get_object("", "v1", plural, obj_ns, bname)
                .await?
                .ok_or_else(|| ApiError::not_found("", plural, bname))?;
            if !buid.is_empty() && buid != meta::uid(&obj) {
                return Err(ApiError::conflict(
                    "",
                    bkind,
                    bname,
                    &format!(
                        "the UID in the bound object reference ({buid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            let oref = ObjectRef {
                name: bname.to_string(),
                uid: meta::uid(&obj).to_string(),
            };
            match plural {
                "pods" => {
                    if crate::admission::serviceaccount::service_account_name(&obj) != name {
                        return Err(ApiError::bad_request(format!(
                            "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                        )));
                    }
                    if let Some(node) = obj
                        .pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        && let Some((n, _)) = self.get_object("", "v1", "nodes", None, node).await?
                    {
                        kclaims.node = Some(ObjectRef {
                            name: node.to_string(),
                            uid: meta::uid(&n).to_string(),
                        });
                    }
                    kclaims.pod = Some(oref);
                }
                "secrets" => kclaims.secret = Some(oref),
                _ => kclaims.node = Some(oref),
            }
        }
        let now = jiff::Timestamp::now().as_second();
        if exp_secs == crate::admission::serviceaccount::PROJECTED_EXPIRATION {
            kclaims.warnafter = Some(now + exp_secs);
        }
        let claims = Claims {
            aud: audiences.clone(),
            exp: now + exp_secs,
            iat: now,
            iss: signer.issuer().to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            sub: format!("system:serviceaccount:{ns}:{name}"),
            kubernetes: kclaims,
        };
        let token = if r.query.dry_run()? {
            String::new()
        } else {
            signer
                .issue(&claims)
                .map_err(|e| ApiError::internal(format!("signing token: {e}")))?
        };
        let expires = jiff::Timestamp::from_second(claims.exp)
            .map(meta::format_time)
            .unwrap_or_default();
        let out = json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": exp_secs, "boundObjectRef": bound},
            "status": {"token": token, "expirationTimestamp": expires},
        });
        Ok(crate::body::json_response(StatusCode::CREATED, &out))
    }

    /// The status of a TokenReview of `spec`.
    pub(crate) async fn token_review_status(&self, spec: &Value) -> Value {
        let token = spec
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let requested: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut errors = Vec::new();
        if let Some(signer) = self.sa_signer.get() {
            let audiences = if requested.is_empty() {
                signer.audiences().to_vec()
            } else {
                requested.clone()
            };
            match self.validate_sa_token(signer, token, &audiences).await {
                Ok(u) => {
                    let mut user =
                        json!({"username": u.username, "uid": u.uid, "groups": u.groups});
                    if !u.extra.is_empty() {
                        user["extra"] = Value::Object(u.extra);
                    }
                    return json!({"authenticated": true, "user": user, "audiences": u.audiences});
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        // Other bearer tokens (the join token) are reviewed by their authenticators.
        let others = match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for a in &others {
            if let Some(id) = a.authenticate(token).await {
                // Service-account tokens were judged above, against the requested audiences.
                if id.user.starts_with("system:serviceaccount:") {
                    continue;
                }
                return json!({"authenticated": true, "user": {"username": id.user, "groups": id.groups}});
            }
        }
        errors.insert(0, "invalid bearer token".to_string());
        json!({"user": {}, "error": format!("[{}]", errors.join(", "))})
    }
}
