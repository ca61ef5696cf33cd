//! Decoding request bodies: size limit, JSON or YAML, object checks.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as HttpBody;
use k8slite_api::ApiError;
use serde_json::Value;

/// Media types of request bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json`
    Json,
    /// `application/yaml`
    Yaml,
    /// `application/json-patch+json`
    JsonPatch,
    /// `application/merge-patch+json`
    MergePatch,
    /// `application/strategic-merge-patch+json`
    StrategicMergePatch,
    /// `application/apply-patch+yaml`
    ApplyPatch,
    /// `application/vnd.kubernetes.protobuf` (built-in kinds)
    Protobuf,
}

impl MediaType {
    /// From a `Content-Type` header value (parameters ignored); `None` for unsupported types.
    pub fn from_header(ct: &str) -> Option<Self> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        Some(match base.as_str() {
            "" | "application/json" | "*/*" => Self::Json,
            "application/yaml" | "application/x-yaml" | "text/yaml" => Self::Yaml,
            "application/json-patch+json" => Self::JsonPatch,
            "application/merge-patch+json" => Self::MergePatch,
            "application/strategic-merge-patch+json" => Self::StrategicMergePatch,
            "application/apply-patch+yaml" => Self::ApplyPatch,
            "application/vnd.kubernetes.protobuf" => Self::Protobuf,
            _ => return None,
        })
    }
}

/// Read a body up to `limit` bytes; larger bodies answer 413.
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: HttpBody,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::too_large(limit))
            } else {
                Err(ApiError::bad_request(format!("reading request body: {e}")))
            }
        }
    }
}

/// Parse bytes as JSON or YAML into a JSON value.
pub fn decode(bytes: &[u8], media: MediaType) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match media {
        MediaType::Yaml | MediaType::ApplyPatch => decode_yaml(bytes),
        MediaType::Protobuf => k8slite_api::proto::decode(bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized or malformed: {e}"
            ))
        }),
        _ => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized or malformed: {e}"
            ))
        }),
    }
}

/// YAML is a superset of JSON; JSON input is parsed as JSON (faster, exact numbers).
fn decode_yaml(bytes: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return Ok(v);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("the YAML body is not valid UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Require a JSON object with matching `apiVersion`/`kind` (filled in when absent).
pub fn check_object(mut v: Value, api_version: &str, kind: &str) -> Result<Value, ApiError> {
    let Some(obj) = v.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    };
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), Value::String(api_version.to_string()));
        }
        Some(av) if av == api_version => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), Value::String(kind.to_string()));
        }
        Some(k) if k == kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({kind})"
            )));
        }
    }
    if let Some(m) = obj.get("metadata")
        && !m.is_object()
        && !m.is_null()
    {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json() {
        let v = decode(
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
            MediaType::Yaml,
        )
        .expect("yaml");
        assert_eq!(v["metadata"]["name"], "a");
        assert!(decode(b"{not json", MediaType::Json).is_err());
        assert!(decode(b"", MediaType::Json).is_err());
        assert_eq!(
            decode(b"k8s\0\x0a\x02", MediaType::Protobuf)
                .expect_err("truncated")
                .code,
            400
        );
        let deep = "[".repeat(100_000);
        assert_eq!(
            decode(deep.as_bytes(), MediaType::Json)
                .expect_err("deep")
                .code,
            400
        );
    }

    #[test]
    fn kind_must_match() {
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Secret"});
        assert_eq!(
            check_object(v, "v1", "ConfigMap")
                .expect_err("mismatch")
                .code,
            400
        );
        let v = serde_json::json!({"metadata": {"name": "x"}});
        let v = check_object(v, "apps/v1", "Deployment").expect("filled");
        assert_eq!(v["kind"], "Deployment");
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&bytes, MediaType::Json);
            let _ = decode(&bytes, MediaType::Yaml);
        }

        #[test]
        fn decoder_never_panics_on_yamlish(s in "[a-z:{}\\[\\]\\-, \n\"'&*!|>#0-9]{0,300}") {
            let _ = decode(s.as_bytes(), MediaType::Yaml);
        }
    }
}
