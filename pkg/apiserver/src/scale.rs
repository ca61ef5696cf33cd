//! The scale subresource (`autoscaling/v1` Scale) of deployments, replicasets, statefulsets,
//! replicationcontrollers and custom resources.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use k8slite_api::{ApiError, meta, table::simple_json_path};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::body::Body;
use crate::codec::{MediaType, decode};
use crate::handler::ResourceRequest;
use crate::objects::{from_stored, store_err};

fn pointer(json_path: &str) -> String {
    json_path
        .trim_start_matches('.')
        .split('.')
        .fold(String::new(), |acc, s| format!("{acc}/{s}"))
}

/// The Scale view of an object.
fn scale_of(r: &ResourceRequest, obj: &Value) -> Value {
    let (spec_path, status_path, selector) = match &r.info.scale {
        Some(p) => {
            let sel = p
                .label_selector
                .as_deref()
                .map(|lp| simple_json_path(obj, lp))
                .and_then(|v| v.as_str().map(str::to_string));
            (p.spec_replicas.clone(), p.status_replicas.clone(), sel)
        }
        None => {
            let sel = obj.pointer("/spec/selector").map(|s| {
                if r.info.kind == "ReplicationController" {
                    k8slite_api::selector::LabelSelector::from_json(&json!({"matchLabels": s}))
                } else {
                    k8slite_api::selector::LabelSelector::from_json(s)
                }
            });
            let sel = sel.and_then(Result::ok).map(|s| selector_string(&s));
            (
                ".spec.replicas".to_string(),
                ".status.replicas".to_string(),
                sel,
            )
        }
    };
    let replicas = simple_json_path(obj, &spec_path)
        .as_i64()
        .unwrap_or(if r.info.custom { 0 } else { 1 });
    let status_replicas = simple_json_path(obj, &status_path).as_i64().unwrap_or(0);
    let md = meta::metadata(obj);
    let mut status = json!({"replicas": status_replicas});
    if let Some(s) = selector {
        status["selector"] = json!(s);
    }
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": md.get("name"), "namespace": md.get("namespace"), "uid": md.get("uid"),
                     "resourceVersion": md.get("resourceVersion"), "creationTimestamp": md.get("creationTimestamp")},
        "spec": {"replicas": replicas},
        "status": status,
    })
}

fn selector_string(s: &k8slite_api::selector::LabelSelector) -> String {
    use k8slite_api::selector::Requirement::*;
    s.0.iter()
        .map(|r| match r {
            In(k, v) if v.len() == 1 => format!("{k}={}", v[0]),
            In(k, v) => format!("{k} in ({})", v.join(",")),
            NotIn(k, v) if v.len() == 1 => format!("{k}!={}", v[0]),
            NotIn(k, v) => format!("{k} notin ({})", v.join(",")),
            Exists(k) => k.clone(),
            DoesNotExist(k) => format!("!{k}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl ApiServer {
    /// GET .../scale
    pub(crate) async fn get_scale(
        self: &Arc<Self>,
        r: &ResourceRequest,
    ) -> Result<Response<Body>, ApiError> {
        let (_, obj) = self.load(r).await?;
        Ok(crate::body::json_response(
            StatusCode::OK,
            &scale_of(r, &obj),
        ))
    }

    /// PUT .../scale
    pub(crate) async fn update_scale(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let scale = r.decode_body(&body)?;
        self.set_replicas(r, &scale).await
    }

    /// PATCH .../scale (merge, JSON or strategic patch of the Scale object).
    pub(crate) async fn patch_scale(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let (_, obj) = self.load(r).await?;
        let mut scale = scale_of(r, &obj);
        match MediaType::from_header(&r.content_type) {
            Some(MediaType::JsonPatch) => {
                let p: json_patch::Patch = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                json_patch::patch(&mut scale, &p)
                    .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
            }
            Some(
                MediaType::MergePatch | MediaType::StrategicMergePatch | MediaType::ApplyPatch,
            ) => {
                let p = decode(&body, MediaType::Yaml)?;
                json_patch::merge(&mut scale, &p);
            }
            _ => return Err(ApiError::unsupported_media_type(&r.content_type)),
        }
        self.set_replicas(r, &scale).await
    }

    async fn set_replicas(
        self: &Arc<Self>,
        r: &ResourceRequest,
        scale: &Value,
    ) -> Result<Response<Body>, ApiError> {
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    r.name(),
                    vec![k8slite_api::Cause::new(
                        "FieldValueRequired",
                        "spec.replicas",
                        "Required value",
                    )],
                )
            })?;
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                r.name(),
                vec![k8slite_api::Cause::new(
                    "FieldValueInvalid",
                    "spec.replicas",
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            ));
        }
        for _ in 0..8 {
            let (kv, mut obj) = self.load(r).await?;
            let want_rv = scale
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !want_rv.is_empty() && want_rv != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(
                    &r.info.group,
                    &r.info.plural,
                    r.name(),
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let spec_path = r
                .info
                .scale
                .as_ref()
                .map(|p| p.spec_replicas.clone())
                .unwrap_or_else(|| ".spec.replicas".into());
            let ptr = pointer(&spec_path);
            match obj.pointer_mut(&ptr) {
                Some(v) => *v = json!(replicas),
                None => {
                    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert(
                            ptr.rsplit('/').next().unwrap_or("replicas").to_string(),
                            json!(replicas),
                        );
                    }
                }
            }
            let old = from_stored(&kv)?;
            let mut new = obj;
            crate::strategy::prepare_update(&r.info, &old, &mut new, None)?;
            if r.query.dry_run()? {
                return Ok(crate::body::json_response(
                    StatusCode::OK,
                    &scale_of(r, &new),
                ));
            }
            match self
                .store
                .update(&kv.key, crate::objects::to_stored(&new)?, kv.mod_revision)
                .await
            {
                Ok(nkv) => {
                    meta::set_resource_version(&mut new, nkv.mod_revision);
                    return Ok(crate::body::json_response(
                        StatusCode::OK,
                        &scale_of(r, &new),
                    ));
                }
                Err(k8slite_datastore::StoreError::Conflict { .. }) if want_rv.is_empty() => {
                    continue;
                }
                Err(e) => return Err(store_err(r, r.name(), e)),
            }
        }
        Err(ApiError::conflict(
            &r.info.group,
            &r.info.plural,
            r.name(),
            "too many concurrent writers, try again",
        ))
    }
}
