//! Priority admission: a pod's `priorityClassName` resolves to `spec.priority` and
//! `spec.preemptionPolicy` from the PriorityClass; without a name the globalDefault class
//! applies (priority 0 when there is none). The built-in `system-cluster-critical` and
//! `system-node-critical` classes are created at bootstrap.

use k8slite_api::{ApiError, ResourceInfo, meta};
use serde_json::{Value, json};

use super::forbidden;

/// The built-in classes: (name, value, description).
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The PriorityClass objects of the built-in classes.
pub fn system_classes() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(name, value, desc)| {
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                   "metadata": {"name": name}, "value": value, "globalDefault": false,
                   "description": desc, "preemptionPolicy": "PreemptLowerPriority"})
        })
        .collect()
}

fn is_global_default(pc: &Value) -> bool {
    pc.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

/// The globalDefault class (the lowest value when several claim it, like upstream).
fn global_default(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| is_global_default(c))
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
}

/// Resolve the pod's priority; 403 for an unknown class or a conflicting explicit value.
pub fn admit(info: &ResourceInfo, pod: &mut Value, classes: &[Value]) -> Result<(), ApiError> {
    let name = meta::name(pod).to_string();
    let class_name = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let class = if class_name.is_empty() {
        global_default(classes)
    } else {
        Some(
            classes
                .iter()
                .find(|c| meta::name(c) == class_name)
                .ok_or_else(|| {
                    forbidden(
                        info,
                        &name,
                        format!("no PriorityClass with name {class_name} was found"),
                    )
                })?,
        )
    };
    let (value, policy, resolved_name) = match class {
        Some(c) => (
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
                .to_string(),
            meta::name(c).to_string(),
        ),
        None => (0, "PreemptLowerPriority".to_string(), String::new()),
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if let Some(p) = spec.get("priority").and_then(Value::as_i64)
        && p != value
    {
        return Err(forbidden(
            info,
            &name,
            format!(
                "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            ),
        ));
    }
    if let Some(p) = spec.get("preemptionPolicy").and_then(Value::as_str)
        && p != policy
    {
        return Err(forbidden(
            info,
            &name,
            format!(
                "the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            ),
        ));
    }
    spec.insert("priority".into(), json!(value));
    spec.insert("preemptionPolicy".into(), json!(policy));
    if !resolved_name.is_empty() {
        spec.insert("priorityClassName".into(), json!(resolved_name));
    }
    Ok(())
}

/// A new PriorityClass may not be a second globalDefault.
pub fn validate_class(info: &ResourceInfo, pc: &Value, existing: &[Value]) -> Result<(), ApiError> {
    if !is_global_default(pc) {
        return Ok(());
    }
    match existing
        .iter()
        .find(|c| is_global_default(c) && meta::name(c) != meta::name(pc))
    {
        Some(other) => Err(forbidden(
            info,
            meta::name(pc),
            format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                meta::name(other)
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> std::sync::Arc<ResourceInfo> {
        k8slite_api::Registry::builtin()
            .get("", "v1", "pods")
            .expect("pods")
    }

    #[test]
    fn resolves_named_default_and_unknown() {
        let mut classes = system_classes();
        classes
            .push(json!({"metadata": {"name": "low"}, "value": 10, "preemptionPolicy": "Never"}));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "system-node-critical"}});
        admit(&pods(), &mut pod, &classes).expect("admitted");
        assert_eq!(pod["spec"]["priority"], 2_000_001_000);
        assert_eq!(pod["spec"]["preemptionPolicy"], "PreemptLowerPriority");

        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}});
        admit(&pods(), &mut pod, &classes).expect("admitted");
        assert_eq!(pod["spec"]["priority"], 0);
        assert!(pod["spec"].get("priorityClassName").is_none());

        classes.push(json!({"metadata": {"name": "dflt"}, "value": 5, "globalDefault": true}));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}});
        admit(&pods(), &mut pod, &classes).expect("admitted");
        assert_eq!(pod["spec"]["priority"], 5);
        assert_eq!(pod["spec"]["priorityClassName"], "dflt");

        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "nope"}});
        let e = admit(&pods(), &mut pod, &classes).expect_err("unknown class");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: no PriorityClass with name nope was found"
        );

        let mut pod =
            json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "low", "priority": 3}});
        assert_eq!(
            admit(&pods(), &mut pod, &classes)
                .expect_err("mismatch")
                .code,
            403
        );
    }

    #[test]
    fn one_global_default() {
        let reg = k8slite_api::Registry::builtin();
        let info = reg
            .get("scheduling.k8s.io", "v1", "priorityclasses")
            .expect("pc");
        let existing = vec![json!({"metadata": {"name": "a"}, "value": 1, "globalDefault": true})];
        let pc = json!({"metadata": {"name": "b"}, "value": 2, "globalDefault": true});
        let e = validate_class(&info, &pc, &existing).expect_err("second default");
        assert!(
            e.message
                .contains("PriorityClass a is already marked as default"),
            "{}",
            e.message
        );
        let pc = json!({"metadata": {"name": "b"}, "value": 2});
        validate_class(&info, &pc, &existing).expect("not a default");
    }
}
