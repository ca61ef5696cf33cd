//! `fieldValidation`: unknown fields of built-in kinds are found by decoding through the typed
//! structs; values of the wrong type are rejected whatever the validation mode.

use k8slite_api::ApiError;
use serde_json::Value;

use crate::handler::ResourceRequest;
use crate::query::FieldValidation;

/// Check `obj` against its type. Returns warnings (Warn mode) or fails (Strict, type errors).
pub(crate) fn check_fields(r: &ResourceRequest, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    let mode = r.query.field_validation()?;
    if let Some(schema) = &r.info.schema {
        return check_custom(r, schema, obj, mode);
    }
    let Some(res) =
        k8slite_api::typed::roundtrip(&r.info.group, &r.info.version, &r.info.kind, obj)
    else {
        return Ok(Vec::new());
    };
    let kind = &r.info.kind;
    let typed = res.map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {e}",
            r.info.version
        ))
    })?;
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let unknown = k8slite_api::typed::unknown_fields(obj, &typed);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let msgs: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    match mode {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
            r.info.version,
            msgs.join(", ")
        ))),
        _ => Ok(msgs),
    }
}

/// Custom resources: prune what the schema does not declare (rejecting it under Strict) and
/// refuse values the schema does not allow.
fn check_custom(
    r: &ResourceRequest,
    schema: &Value,
    obj: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let report = k8slite_api::schema::check(schema, obj, true);
    if !report.causes.is_empty() {
        return Err(ApiError::invalid(
            &r.info.group,
            &r.info.kind,
            k8slite_api::meta::name(obj),
            report.causes,
        ));
    }
    let msgs: Vec<String> = report
        .unknown
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    match mode {
        _ if msgs.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            r.info.kind,
            r.info.version,
            r.info.kind,
            msgs.join(", ")
        ))),
        FieldValidation::Warn => Ok(msgs),
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}
