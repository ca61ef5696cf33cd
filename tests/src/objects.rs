//! Reading objects back through kubectl in tests: JSON output, pods of a selector, readiness,
//! events about an object.

use std::time::Duration;

use serde_json::Value;

use crate::{Server, eventually};

/// How long tests wait for pods to settle.
pub const WAIT: Duration = Duration::from_secs(60);

/// `kubectl <args>` parsed as JSON (`Null` for empty output). Callers pass `-o json` when the
/// command needs it; [`json_of`] adds it.
pub fn json(s: &Server, args: &[&str]) -> Value {
    let out = s.k(args);
    if out.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON ({e}): {out}"))
}

/// `kubectl <args> -o json`, parsed.
pub fn json_of(s: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    json(s, &a)
}

/// Pods (in the kubeconfig's namespace) matching a label selector.
pub fn pods_of(s: &Server, selector: &str) -> Vec<Value> {
    json_of(s, &["get", "pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether a pod is Running, Ready and not being deleted.
pub fn running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        && p["metadata"]["deletionTimestamp"].is_null()
}

/// Wait for exactly `n` live pods of `selector`, all Running and Ready.
pub fn wait_pods_ready(s: &Server, selector: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, || {
        let pods: Vec<Value> = pods_of(s, selector)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (pods.len() == n && pods.iter().all(running_ready)).then_some(pods)
    })
    .unwrap_or_else(|| {
        panic!(
            "{n} Running+Ready pods of {selector}; have:\n{}",
            s.k(&["get", "pods", "-l", selector, "-o", "wide"])
        )
    })
}

/// (reason, note) of the events.k8s.io events regarding `kind`/`name`.
pub fn events_of(s: &Server, kind: &str, name: &str) -> Vec<(String, String)> {
    let ev = json_of(s, &["get", "events.events.k8s.io"]);
    ev["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
