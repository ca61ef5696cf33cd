//! DefaultTolerationSeconds: pods that do not tolerate the `not-ready` / `unreachable`
//! NoExecute taints get tolerations for them with the configured `tolerationSeconds`, so their
//! node's failure evicts them after that long.

use serde_json::{Value, json};

/// Taint of nodes whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of nodes whose Ready condition is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn tolerates(tols: &[Value], key: &str) -> bool {
    tols.iter().any(|t| {
        let k = t.get("key").and_then(Value::as_str).unwrap_or_default();
        let e = t.get("effect").and_then(Value::as_str).unwrap_or_default();
        (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
    })
}

/// Add the two default tolerations where the pod has none for those taints.
pub fn admit(pod: &mut Value, not_ready_seconds: i64, unreachable_seconds: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tols.as_array_mut() else {
        return;
    };
    for (key, secs) in [
        (NOT_READY, not_ready_seconds),
        (UNREACHABLE, unreachable_seconds),
    ] {
        if !tolerates(list, key) {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}));
        }
    }
    if list.is_empty() {
        spec.remove("tolerations");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_both_or_keeps_existing() {
        let mut pod = json!({"spec": {"containers": []}});
        admit(&mut pod, 300, 200);
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 200},
            ])
        );
        let own = json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
        let mut pod = json!({"spec": {"tolerations": [own.clone()]}});
        admit(&mut pod, 300, 300);
        let t = pod["spec"]["tolerations"].as_array().expect("tolerations");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], own);
        assert_eq!(t[1]["key"], NOT_READY);
        // a toleration of everything covers both
        let mut pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        admit(&mut pod, 300, 300);
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(1));
    }
}
