//! What the server does to an object on create and update, for every resource: system fields,
//! status/spec separation, generation, defaulting and validation.

use k8slite_api::validation::{NameRule, validate_metadata};
use k8slite_api::{ApiError, Cause, ResourceInfo, meta};
use serde_json::{Map, Value, json};

/// Characters upstream uses for `generateName` suffixes.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A `generateName` suffix of 5 characters.
pub fn random_suffix() -> String {
    let u = uuid::Uuid::new_v4();
    u.as_bytes()[..5]
        .iter()
        .map(|b| NAME_ALPHABET[*b as usize % NAME_ALPHABET.len()] as char)
        .collect()
}

/// Whether objects of this resource carry `metadata.generation` (those with a spec, and CRs).
/// Pods are the exception: upstream sets their generation only from 1.34 (PodGeneration).
fn has_generation(info: &ResourceInfo, obj: &Value) -> bool {
    if info.group.is_empty() && info.kind == "Pod" {
        return false;
    }
    info.custom || obj.get("spec").is_some() || info.subresource("status").is_some()
}

/// Fields the server owns on create.
pub fn prepare_create(
    info: &ResourceInfo,
    obj: &mut Value,
    url_ns: Option<&str>,
) -> Result<(), ApiError> {
    let ns_in_body = meta::namespace(obj).map(str::to_string);
    let md = meta::metadata_mut(obj);
    if info.namespaced {
        match (url_ns, ns_in_body.as_deref()) {
            (Some(u), Some(b)) if u != b => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(u), _) => {
                md.insert("namespace".into(), json!(u));
            }
            (None, _) => {
                return Err(ApiError::bad_request(
                    "the namespace is required for a namespaced resource",
                ));
            }
        }
    } else {
        md.remove("namespace");
    }
    let name = md
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty()
        && let Some(prefix) = md
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
    {
        let generated = format!("{prefix}{}", random_suffix());
        md.insert("name".into(), json!(generated));
    }
    md.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    md.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
    md.remove("resourceVersion");
    md.remove("deletionTimestamp");
    md.remove("deletionGracePeriodSeconds");
    md.remove("selfLink");
    if has_generation(info, obj) {
        meta::metadata_mut(obj).insert("generation".into(), json!(1));
    } else {
        meta::metadata_mut(obj).remove("generation");
    }
    // With a status subresource, status is not set on create (pods get their initial status).
    if info.subresource("status").is_some()
        && info.kind != "Pod"
        && info.kind != "Namespace"
        && info.kind != "Node"
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    k8slite_api::defaults::apply(&info.group, &info.kind, obj);
    if info.group == "batch" && info.kind == "Job" {
        generate_job_selector(obj);
    }
    Ok(())
}

/// Upstream's Job strategy: unless `spec.manualSelector` is true, the Job's pods are labelled
/// with its uid and name, and its selector is the uid label.
fn generate_job_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = meta::uid(obj).to_string();
    let name = meta::name(obj).to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if !spec.get("selector").is_some_and(Value::is_object) {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
    }
    let template = spec
        .entry("template")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(template) = template else { return };
    let tmeta = template
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(tmeta) = tmeta else { return };
    let labels = tmeta.entry("labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.entry(k).or_insert_with(|| json!(v));
        }
    }
}

/// Carry over what an update may not change and split spec/status by subresource.
pub fn prepare_update(
    info: &ResourceInfo,
    old: &Value,
    new: &mut Value,
    subresource: Option<&str>,
) -> Result<(), ApiError> {
    let has_status_sub = info.subresource("status").is_some();
    match subresource {
        Some("approval") => {
            // certificatesigningrequests/approval: only the approval conditions change.
            let conditions = new.pointer("/status/conditions").cloned();
            let mut merged = old.clone();
            if let Some(m) = merged.as_object_mut() {
                let status = m.entry("status").or_insert_with(|| json!({}));
                if let Some(st) = status.as_object_mut() {
                    match conditions {
                        Some(c) => st.insert("conditions".into(), c),
                        None => st.remove("conditions"),
                    };
                }
            }
            *new = merged;
        }
        Some("status") => {
            // Only status (and metadata labels/annotations… upstream resets everything else).
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            if let Some(m) = merged.as_object_mut() {
                match status {
                    Some(s) => m.insert("status".into(), s),
                    None => m.remove("status"),
                };
            }
            let new_md = meta::metadata(new).clone();
            let md = meta::metadata_mut(&mut merged);
            for f in ["labels", "annotations", "ownerReferences", "finalizers"] {
                match new_md.get(f) {
                    Some(v) => md.insert(f.into(), v.clone()),
                    None => md.remove(f),
                };
            }
            *new = merged;
        }
        _ => {
            if has_status_sub && let Some(m) = new.as_object_mut() {
                match old.get("status") {
                    Some(s) => m.insert("status".into(), s.clone()),
                    None => m.remove("status"),
                };
            }
            // Defaulting runs on every write, as upstream's decoding does (a secret's
            // write-only stringData becomes data on update too).
            k8slite_api::defaults::apply(&info.group, &info.kind, new);
        }
    }
    let old_md = meta::metadata(old);
    let keep = |f: &str| old_md.get(f).cloned();
    let generation = old_md.get("generation").and_then(Value::as_i64);
    let md = meta::metadata_mut(new);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match keep(f) {
            Some(v) => md.insert(f.into(), v),
            None => md.remove(f),
        };
    }
    md.remove("resourceVersion");
    md.remove("selfLink");
    if md.get("generateName").is_none()
        && let Some(g) = keep("generateName")
    {
        md.insert("generateName".into(), g);
    }
    if let Some(g) = generation {
        md.insert("generation".into(), json!(g));
        if spec_changed(info, old, new) {
            meta::metadata_mut(new).insert("generation".into(), json!(g + 1));
        }
    }
    Ok(())
}

/// Whether anything but metadata and status differs.
fn spec_changed(info: &ResourceInfo, old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        if info.subresource("status").is_some() {
            m.remove("status");
        }
        m
    };
    strip(old) != strip(new)
}

/// Validation of an object about to be stored.
pub fn validate(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes: Vec<Cause> = validate_metadata(
        obj,
        NameRule::for_kind(&info.group, &info.kind),
        info.namespaced,
    );
    causes.extend(k8slite_api::defaults::validate(
        &info.group,
        &info.kind,
        obj,
        old,
    ));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &info.group,
            &info.kind,
            meta::name(obj),
            causes,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sets_system_fields() {
        let reg = k8slite_api::Registry::builtin();
        let info = reg.get("apps", "v1", "deployments").expect("deployments");
        let mut o = json!({"metadata": {"generateName": "web-", "resourceVersion": "5"}, "spec": {}, "status": {"replicas": 3}});
        prepare_create(&info, &mut o, Some("default")).expect("prepared");
        assert!(meta::name(&o).starts_with("web-") && meta::name(&o).len() == 9);
        assert_eq!(o["metadata"]["generation"], 1);
        assert_eq!(o["metadata"]["namespace"], "default");
        // The client's status is dropped; Go writes the empty status struct as `{}`.
        assert_eq!(o["status"], json!({}));
        assert!(o["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn jobs_get_a_generated_selector_unless_manual() {
        let reg = k8slite_api::Registry::builtin();
        let info = reg.get("batch", "v1", "jobs").expect("jobs");
        let mut o = json!({"metadata": {"name": "pi"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        prepare_create(&info, &mut o, Some("default")).expect("prepared");
        let uid = meta::uid(&o).to_string();
        assert_eq!(
            o["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            json!(uid)
        );
        let labels = &o["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["a"], "b");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["controller-uid"], json!(uid));
        let mut manual = json!({"metadata": {"name": "m"}, "spec": {"manualSelector": true, "selector": {"matchLabels": {"x": "y"}}, "template": {"metadata": {"labels": {"x": "y"}}}}});
        prepare_create(&info, &mut manual, Some("default")).expect("prepared");
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"x": "y"}})
        );
        assert_eq!(
            manual["spec"]["template"]["metadata"]["labels"],
            json!({"x": "y"})
        );
    }

    #[test]
    fn update_bumps_generation_on_spec_change_only() {
        let reg = k8slite_api::Registry::builtin();
        let info = reg.get("apps", "v1", "deployments").expect("deployments");
        // Stored objects are defaulted.
        let mut old = json!({"metadata": {"name": "a", "uid": "u", "generation": 1}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        k8slite_api::defaults::apply("apps", "Deployment", &mut old);
        let mut new = json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"replicas": 1}, "status": {}});
        prepare_update(&info, &old, &mut new, None).expect("ok");
        assert_eq!(new["metadata"]["generation"], 1);
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(
            new["status"]["replicas"], 1,
            "status kept from old on main resource"
        );
        let mut new = json!({"metadata": {"name": "a"}, "spec": {"replicas": 2}});
        prepare_update(&info, &old, &mut new, None).expect("ok");
        assert_eq!(new["metadata"]["generation"], 2);
        let mut st =
            json!({"metadata": {"name": "a"}, "spec": {"replicas": 9}, "status": {"replicas": 5}});
        prepare_update(&info, &old, &mut st, Some("status")).expect("ok");
        assert_eq!(st["spec"]["replicas"], 1, "status update ignores spec");
        assert_eq!(st["status"]["replicas"], 5);
    }

    #[test]
    fn updates_are_defaulted_secret_string_data_becomes_data() {
        let reg = k8slite_api::Registry::builtin();
        let info = reg.get("", "v1", "secrets").expect("secrets");
        let old = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "d", "uid": "u"},
            "type": "Opaque", "data": {"pass": "b2xk"}});
        let mut new = old.clone();
        new["stringData"] = json!({"pass": "n3w"});
        prepare_update(&info, &old, &mut new, None).expect("ok");
        assert_eq!(new["data"]["pass"], "bjN3");
        assert!(new.get("stringData").is_none(), "{new}");
    }
}
