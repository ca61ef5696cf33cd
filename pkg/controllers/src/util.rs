//! Small helpers the controllers share: owner references, pod states, selectors, templates.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

/// The controller owner reference of an object, if it has one.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// Whether a `metav1.LabelSelector` matches `labels`. An empty selector matches everything; a
/// malformed one (unknown operator) matches nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let value = match serde_json::to_value(sel) {
        Ok(v) => v,
        Err(_) => return false,
    };
    match k8slite_api::selector::LabelSelector::from_json(&value) {
        Ok(s) => s.matches(labels),
        Err(_) => false,
    }
}

/// A selector in its query-string form (`a=b,c in (d)`), for list calls.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{}={other}", e.key),
        });
    }
    parts.join(",")
}

/// The labels of an object (empty when it has none).
pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Whether the pod has reached a terminal phase.
pub fn is_pod_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the pod counts towards a controller's replicas: not terminal, not being deleted.
pub fn is_pod_active(pod: &Pod) -> bool {
    !is_pod_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Whether the pod's `Ready` condition is `True`.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// When the pod's `Ready` condition last became `True`, if it is `True`.
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        cond.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Whether the pod has been Ready for at least `min_ready_seconds` at `now`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => {
            let secs = now.as_second() - since.as_second();
            secs >= i64::from(min_ready_seconds)
        }
    }
}

/// A pod built from `template`, named by `generate_name` (or `name` when given), owned by
/// `owner` as its controller, in `namespace`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name: Option<String>,
    generate_name: Option<String>,
    owner: OwnerReference,
) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name: if generate_name.is_some() {
                generate_name
            } else {
                None
            },
            namespace: Some(namespace.to_string()),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

// ---- appended for the StatefulSet/DaemonSet/Job/CronJob controllers (h-wlb) ----

/// Whether one `NodeSelectorRequirement` holds for `value` (the label or field value, if any).
pub fn node_requirement_matches(
    req: &k8s_openapi::api::core::v1::NodeSelectorRequirement,
    value: Option<&str>,
) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node matches a pod's `nodeSelector` and required node affinity (any term whose
/// expressions and fields all match; `matchFields` knows `metadata.name`).
pub fn node_matches_pod_placement(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    node: &k8s_openapi::api::core::v1::Node,
) -> bool {
    let node_labels = labels(&node.metadata);
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| node_labels.get(k) != Some(v))
    {
        return false;
    }
    let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    let name = node.metadata.name.as_deref();
    required.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| node_requirement_matches(r, node_labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                let v = if r.key == "metadata.name" { name } else { None };
                node_requirement_matches(r, v)
            })
    })
}

/// Whether `toleration` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn tolerates(
    toleration: &k8s_openapi::api::core::v1::Toleration,
    taint: &k8s_openapi::api::core::v1::Taint,
) -> bool {
    if let Some(e) = toleration.effect.as_deref()
        && !e.is_empty()
        && e != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    let op = toleration.operator.as_deref().unwrap_or("Equal");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The first NoSchedule/NoExecute taint of `node` that no toleration tolerates.
pub fn untolerated_taint<'a>(
    tolerations: &[k8s_openapi::api::core::v1::Toleration],
    node: &'a k8s_openapi::api::core::v1::Node,
) -> Option<&'a k8s_openapi::api::core::v1::Taint> {
    node.spec
        .as_ref()?
        .taints
        .as_deref()?
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// Whether an API error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API error is a 409 (already exists / conflict).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Publish an event about `obj` (with `related`, e.g. the pod it created, which also keeps
/// events about different pods from merging into one series); failures are logged, never fatal.
pub async fn publish_event<K: kube::Resource<DynamicType = ()>>(
    recorder: &kube::runtime::events::Recorder,
    obj: &K,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
    related: Option<k8s_openapi::api::core::v1::ObjectReference>,
) {
    // Without the resourceVersion, repeats about one object aggregate into one series.
    let mut regarding = obj.object_ref(&());
    regarding.resource_version = None;
    let type_ = if warning {
        kube::runtime::events::EventType::Warning
    } else {
        kube::runtime::events::EventType::Normal
    };
    emit(recorder, &regarding, related, type_, reason, action, note).await;
}

/// Publish an event about `reference`, logging (not failing) when that does not work.
///
/// kube-runtime's recorder folds events with the same reason and object into one series
/// whatever their message, so events that name another object (a pod created or deleted)
/// carry it as `related` to stay distinct.
pub async fn emit(
    recorder: &kube::runtime::events::Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    type_: kube::runtime::events::EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = kube::runtime::events::Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: related,
    };
    if let Err(e) = recorder.publish(&ev, reference).await {
        tracing::debug!(error = %e, reason, "publishing an event failed");
    }
}

/// Create `pod` for `owner` and record upstream's `SuccessfulCreate` ("Created pod: NAME") or
/// `FailedCreate` ("Error creating: …") event about the owner.
pub async fn create_pod_recorded<K: kube::Resource<DynamicType = ()>>(
    api: &kube::Api<Pod>,
    recorder: &kube::runtime::events::Recorder,
    owner: &K,
    pod: &Pod,
) -> Result<Pod, kube::Error> {
    use kube::ResourceExt;
    match api.create(&kube::api::PostParams::default(), pod).await {
        Ok(p) => {
            let note = format!("Created pod: {}", p.name_any());
            let related = Some(obj_ref("v1", "Pod", &p));
            publish_event(
                recorder,
                owner,
                false,
                "SuccessfulCreate",
                "Create",
                note,
                related,
            )
            .await;
            Ok(p)
        }
        Err(e) => {
            let note = format!("Error creating: {e}");
            publish_event(recorder, owner, true, "FailedCreate", "Create", note, None).await;
            Err(e)
        }
    }
}

/// A reference to `obj` (for an event's `related` object).
pub fn obj_ref<K: kube::Resource>(
    api_version: &str,
    kind: &str,
    obj: &K,
) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        ..Default::default()
    }
}

/// A reference to the object `kind` named `name` in `namespace`.
pub fn named_ref(
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    }
}

/// Upstream's ControllerRef manager for pods, over pods listed by the owner's selector:
/// returns the pods `owner` controls, after adopting matching orphans (no controller
/// reference, not being deleted) by adding `owner` as their controller. An orphan that changed
/// meanwhile is skipped (the next reconcile sees it again).
pub async fn claim_pods(
    api: &kube::Api<Pod>,
    listed: Vec<Pod>,
    owner: &OwnerReference,
    owner_deleting: bool,
) -> Result<Vec<Pod>, kube::Error> {
    let mut out = Vec::with_capacity(listed.len());
    for pod in listed {
        if is_controlled_by(&pod.metadata, &owner.uid) {
            out.push(pod);
            continue;
        }
        if controller_of(&pod.metadata).is_some()
            || pod.metadata.deletion_timestamp.is_some()
            || owner_deleting
        {
            continue;
        }
        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
        refs.push(owner.clone());
        let patch = serde_json::json!({
            "metadata": {
                "ownerReferences": refs,
                "resourceVersion": pod.metadata.resource_version,
            }
        });
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            Ok(p) => out.push(p),
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    #[test]
    fn selectors() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        let mut l = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert!(!selector_matches(&sel, &l));
        l.insert("tier".into(), "b".into());
        assert!(selector_matches(&sel, &l));
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b)");
        assert!(selector_matches(
            &LabelSelector::default(),
            &BTreeMap::new()
        ));
    }

    #[test]
    fn pod_states() {
        let now = Timestamp::now();
        let mut pod = Pod::default();
        assert!(is_pod_active(&pod) && !is_pod_ready(&pod));
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(now)),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        assert!(is_pod_ready(&pod));
        assert!(is_pod_available(&pod, 0, now));
        assert!(!is_pod_available(&pod, 10, now));
        if let Some(s) = pod.status.as_mut() {
            s.phase = Some("Failed".into());
        }
        assert!(!is_pod_active(&pod));
    }
}

/// Resolve an int-or-percent value (`3` or `"25%"`) against `total`, rounding a percentage up
/// or down like upstream's `GetScaledValueFromIntOrPercent`. `None` for a malformed string.
pub fn scaled_int_or_percent(
    v: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    total: i32,
    round_up: bool,
) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
            let scaled = pct * i64::from(total);
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).ok()
        }
    }
}

#[cfg(test)]
mod int_or_percent_tests {
    use super::scaled_int_or_percent;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn percent_rounding() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_int_or_percent(&p("25%"), 10, true), Some(3));
        assert_eq!(scaled_int_or_percent(&p("25%"), 10, false), Some(2));
        assert_eq!(scaled_int_or_percent(&p("50%"), 3, true), Some(2));
        assert_eq!(
            scaled_int_or_percent(&IntOrString::Int(4), 10, true),
            Some(4)
        );
        assert_eq!(scaled_int_or_percent(&p("abc"), 10, true), None);
    }
}

/// How soon a controller retries after a failed sync: quickly after a write conflict (another
/// writer got there first; the next sync reads the new version), else after 5 seconds.
pub fn conflict_backoff(err: &crate::Error) -> kube::runtime::controller::Action {
    let conflict = matches!(err, crate::Error::Kube(kube::Error::Api(s)) if s.code == 409);
    kube::runtime::controller::Action::requeue(if conflict {
        std::time::Duration::from_millis(200)
    } else {
        std::time::Duration::from_secs(5)
    })
}
