//! OpenAPI documents (`/openapi/v2`, `/openapi/v3`), generated on request from the registry
//! and not cached (they are large and rarely fetched; kubectl caches them by hash).

use http::{Response, StatusCode};
use k8slite_api::{ApiError, meta};
use k8slite_datastore::ListOptions;
use serde_json::{Map, Value};

use crate::ApiServer;
use crate::body::{Body, error_response, json_bytes};

/// `/openapi/v2`: an empty OpenAPI v2 document in protobuf (zero bytes decode as an empty
/// `openapi_v2.Document`). kubectl 1.27/1.28 fetch it before `apply`, `create` and `explain` and
/// fail on any error; with no models in it they skip client-side validation (the server
/// validates: `fieldValidation` is announced in OpenAPI v3) and use their compiled-in types for
/// strategic merge patches. Everything else reads `/openapi/v3`.
pub fn v2(_accept: &str) -> Response<Body> {
    json_bytes(
        StatusCode::OK,
        Vec::new(),
        // Upstream answers with the dotted form: `@` is not valid in a media type.
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
    )
}

impl ApiServer {
    /// The stored CRDs (for their schemas and to hash the custom groups' documents).
    async fn crds(&self) -> Vec<Value> {
        match self
            .store
            .list(
                "/registry/apiextensions.k8s.io/customresourcedefinitions/",
                ListOptions::default(),
            )
            .await
        {
            Ok(res) => res
                .items
                .iter()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing CRDs for OpenAPI");
                Vec::new()
            }
        }
    }

    /// `/openapi/v3` index and per group-version documents.
    pub(crate) async fn openapi_v3(&self, path: Option<&str>) -> Response<Body> {
        let reg = self.registry();
        let crds = self.crds().await;
        let Some(path) = path else {
            let hash: String = crds
                .iter()
                .map(|c| format!("{}:{};", meta::name(c), meta::uid(c)))
                .collect();
            let doc = k8slite_api::openapi::index(&reg, &hash);
            return json_bytes(
                StatusCode::OK,
                serde_json::to_vec(&doc).unwrap_or_default(),
                "application/json",
            );
        };
        let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
            ["api", v] => (String::new(), (*v).to_string()),
            ["apis", g, v] => ((*g).to_string(), (*v).to_string()),
            _ => return error_response(&ApiError::path_not_found()),
        };
        let mut custom = Map::new();
        for c in &crds {
            if c.pointer("/spec/group").and_then(Value::as_str) != Some(group.as_str()) {
                continue;
            }
            let kind = c
                .pointer("/spec/names/kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for v in c
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if v.get("name").and_then(Value::as_str) == Some(version.as_str())
                    && let Some(s) = v.pointer("/schema/openAPIV3Schema")
                {
                    custom.insert(kind.clone(), s.clone());
                }
            }
        }
        match k8slite_api::openapi::group_version_doc(&reg, &group, &version, &custom) {
            Some(doc) => json_bytes(
                StatusCode::OK,
                serde_json::to_vec(&doc).unwrap_or_default(),
                "application/json",
            ),
            None => error_response(&ApiError::path_not_found()),
        }
    }
}
