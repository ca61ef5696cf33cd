//! ReplicaSets and ReplicationControllers with the real binary and kubectl: pods from the
//! template, adoption of matching orphans, release of pods that stop matching, deletion order
//! on scale-down, status, events. Until simulated nodes land on main, a stand-in "kubelet" in
//! this test marks pods Running/Ready through `pods/status` (pods labelled `stuck=true` stay
//! Pending).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8slite_tests::{Server, eventually};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn client(s: &Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Background tasks of a test (fake kubelet, observers), on their own runtime.
struct Background {
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn background() -> Background {
    Background {
        rt: Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
        ),
    }
}

impl Background {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime")
    }

    /// Mark every pod (but `stuck=true` ones) Running and Ready `delay` after it appears.
    fn fake_kubelet(&self, s: &Server, delay: Duration) {
        let kubeconfig_client = self.rt().block_on(client(s));
        self.rt().spawn(async move {
            let pods: Api<Pod> = Api::all(kubeconfig_client);
            let done: Arc<Mutex<HashSet<String>>> = Arc::default();
            let mut stream = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let pod = match ev {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => p,
                    _ => continue,
                };
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let stuck = pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("stuck"))
                    .is_some_and(|v| v == "true");
                if stuck
                    || pod.metadata.deletion_timestamp.is_some()
                    || !done.lock().expect("done").insert(uid)
                {
                    continue;
                }
                let api: Api<Pod> = Api::namespaced(
                    pods.clone().into_client(),
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                );
                let name = pod.metadata.name.clone().unwrap_or_default();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let now = k8s_openapi::jiff::Timestamp::now().to_string();
                    let patch = json!({"status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}
                    ]}});
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                });
            }
        });
    }
}

fn json_of(s: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.k(&a)).expect("kubectl json")
}

fn pods_of(s: &Server, selector: &str) -> Vec<Value> {
    json_of(s, &["get", "pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        && p["metadata"]["deletionTimestamp"].is_null()
}

/// Wait for exactly `n` live pods of `selector`, all Running and Ready.
fn wait_pods_ready(s: &Server, selector: &str, n: usize) -> Vec<Value> {
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

fn events_of(s: &Server, kind: &str, name: &str) -> Vec<(String, String)> {
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

const RS: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: front
spec:
  replicas: 3
  selector:
    matchLabels: {tier: front}
  template:
    metadata:
      labels: {tier: front, extra: "yes"}
    spec:
      containers:
      - name: web
        image: nginx
"#;

const ORPHAN: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: orphan
  labels: {tier: front}
spec:
  containers:
  - name: web
    image: nginx
"#;

#[test]
fn replicaset_adopts_releases_and_reports_status() {
    let s = Server::start();
    let bg = background();
    bg.fake_kubelet(&s, Duration::from_millis(100));
    // An orphan that matches the selector exists first: it is adopted, so only 2 are created.
    s.k_stdin(&["apply", "-f", "-"], Some(ORPHAN));
    wait_pods_ready(&s, "tier=front", 1);
    s.k_stdin(&["apply", "-f", "-"], Some(RS));
    let pods = wait_pods_ready(&s, "tier=front", 3);
    let orphan = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "orphan")
        .expect("orphan kept (adopted, not replaced)");
    let rs = json_of(&s, &["get", "rs", "front"]);
    let uid = rs["metadata"]["uid"].as_str().expect("uid");
    let owner = &orphan["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], uid);
    assert_eq!(owner["kind"], "ReplicaSet");
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    let status = eventually(WAIT, || {
        let st = json_of(&s, &["get", "rs", "front"])["status"].clone();
        (st["readyReplicas"] == 3 && st["availableReplicas"] == 3).then_some(st)
    })
    .expect("status ready 3");
    assert_eq!(status["replicas"], 3);
    // The adopted orphan lacks the template's extra label.
    assert_eq!(status["fullyLabeledReplicas"], 2);
    assert_eq!(status["observedGeneration"], rs["metadata"]["generation"]);

    // Relabelled out of the selector: released (no owner) and replaced.
    let victim = pods
        .iter()
        .find(|p| p["metadata"]["name"] != "orphan")
        .and_then(|p| p["metadata"]["name"].as_str())
        .expect("a created pod")
        .to_string();
    s.k(&["label", "pod", &victim, "tier=other", "--overwrite"]);
    wait_pods_ready(&s, "tier=front", 3);
    let released = eventually(WAIT, || {
        let p = json_of(&s, &["get", "pod", &victim]);
        p["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|o| o.is_empty())
            .then_some(p)
    })
    .expect("released pod has no owner");
    assert_eq!(released["metadata"]["labels"]["tier"], "other");

    let events = events_of(&s, "ReplicaSet", "front");
    let created: Vec<&String> = events
        .iter()
        .filter(|(r, _)| r == "SuccessfulCreate")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(created.len(), 3, "2 at first + 1 replacement: {events:?}");
    assert!(
        created.iter().all(|m| m.starts_with("Created pod: front-")),
        "{created:?}"
    );
}

#[test]
fn scale_down_deletes_not_ready_first() {
    let s = Server::start();
    let bg = background();
    bg.fake_kubelet(&s, Duration::from_millis(100));
    s.k_stdin(&["apply", "-f", "-"], Some(RS));
    let pods = wait_pods_ready(&s, "tier=front", 3);
    // Take one pod out of readiness (newest would otherwise not be the choice: pick the oldest).
    let mut names: Vec<(String, String)> = pods
        .iter()
        .map(|p| {
            (
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    let unready = names[0].1.clone();
    s.k(&[
        "patch",
        "pod",
        &unready,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    eventually(WAIT, || {
        (json_of(&s, &["get", "rs", "front"])["status"]["readyReplicas"] == 2).then_some(())
    })
    .expect("rs sees 2 ready");
    s.k(&["scale", "rs", "front", "--replicas", "2"]);
    let left = wait_pods_ready(&s, "tier=front", 2);
    assert!(
        left.iter()
            .all(|p| p["metadata"]["name"] != unready.as_str()),
        "the not-ready pod {unready} went first"
    );
    let events = events_of(&s, "ReplicaSet", "front");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "SuccessfulDelete" && *m == format!("Deleted pod: {unready}")),
        "{events:?}"
    );
}

const RC: &str = r#"
apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: legacy}
    spec:
      containers:
      - name: web
        image: nginx
"#;

#[test]
fn replication_controller_shares_the_core() {
    let s = Server::start();
    let bg = background();
    bg.fake_kubelet(&s, Duration::from_millis(100));
    s.k_stdin(&["apply", "-f", "-"], Some(RC));
    let pods = wait_pods_ready(&s, "app=legacy", 2);
    for p in &pods {
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["kind"],
            "ReplicationController"
        );
        assert!(
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("legacy-"))
        );
    }
    s.k(&["scale", "rc", "legacy", "--replicas", "4"]);
    wait_pods_ready(&s, "app=legacy", 4);
    let st = eventually(WAIT, || {
        let st = json_of(&s, &["get", "rc", "legacy"])["status"].clone();
        (st["availableReplicas"] == 4).then_some(st)
    })
    .expect("rc status");
    assert_eq!(st["replicas"], 4);
    assert_eq!(st["readyReplicas"], 4);
    assert_eq!(st["fullyLabeledReplicas"], 4);
    s.k(&["scale", "rc", "legacy", "--replicas", "1"]);
    wait_pods_ready(&s, "app=legacy", 1);
    let events = events_of(&s, "ReplicationController", "legacy");
    assert_eq!(
        events
            .iter()
            .filter(|(r, _)| r == "SuccessfulDelete")
            .count(),
        3,
        "{events:?}"
    );
}
