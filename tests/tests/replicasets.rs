//! ReplicaSets and ReplicationControllers with the real binary and kubectl: pods from the
//! template, adoption of matching orphans, release of pods that stop matching, deletion order
//! on scale-down, status, events. Each test runs a server with three simulated nodes
//! (`Cluster::start(3)`).

use k8slite_tests::cluster::Cluster;
use k8slite_tests::eventually;
use k8slite_tests::objects::{WAIT, events_of, json_of, wait_pods_ready};

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
    let c = Cluster::start(3);
    let s = &c.server;
    // An orphan that matches the selector exists first: it is adopted, so only 2 are created.
    s.k_stdin(&["apply", "-f", "-"], Some(ORPHAN));
    wait_pods_ready(s, "tier=front", 1);
    s.k_stdin(&["apply", "-f", "-"], Some(RS));
    let pods = wait_pods_ready(s, "tier=front", 3);
    let orphan = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "orphan")
        .expect("orphan kept (adopted, not replaced)");
    let rs = json_of(s, &["get", "rs", "front"]);
    let uid = rs["metadata"]["uid"].as_str().expect("uid");
    let owner = &orphan["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], uid);
    assert_eq!(owner["kind"], "ReplicaSet");
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    let status = eventually(WAIT, || {
        let st = json_of(s, &["get", "rs", "front"])["status"].clone();
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
    wait_pods_ready(s, "tier=front", 3);
    let released = eventually(WAIT, || {
        let p = json_of(s, &["get", "pod", &victim]);
        p["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|o| o.is_empty())
            .then_some(p)
    })
    .expect("released pod has no owner");
    assert_eq!(released["metadata"]["labels"]["tier"], "other");

    let events = events_of(s, "ReplicaSet", "front");
    let created: Vec<&String> = events
        .iter()
        .filter(|(r, _)| r == "SuccessfulCreate")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        created.len(),
        3,
        "2 at first + 1 replacement: {events:?}\nserver log:\n{}",
        s.log()
    );
    assert!(
        created.iter().all(|m| m.starts_with("Created pod: front-")),
        "{created:?}"
    );
}

const BROKEN_ORPHAN: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: broken
  labels: {tier: front}
  annotations: {sim.k8slite.io/ready: "false"}
spec:
  containers:
  - name: web
    image: nginx
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
"#;

#[test]
fn scale_down_deletes_not_ready_first() {
    let c = Cluster::start(3);
    let s = &c.server;
    // The oldest pod never becomes ready (its simulated readiness probe fails); the RS adopts it and
    // adds two working ones.
    s.k_stdin(&["apply", "-f", "-"], Some(BROKEN_ORPHAN));
    s.k_stdin(&["apply", "-f", "-"], Some(RS));
    let st = eventually(WAIT, || {
        let st = json_of(s, &["get", "rs", "front"])["status"].clone();
        (st["replicas"] == 3 && st["readyReplicas"] == 2).then_some(st)
    })
    .unwrap_or_else(|| panic!("3 pods, 2 ready: {}", s.k(&["get", "pods", "-o", "wide"])));
    assert_eq!(st["availableReplicas"], 2);
    let broken = json_of(s, &["get", "pod", "broken"]);
    assert_eq!(broken["metadata"]["ownerReferences"][0]["name"], "front");
    // Scale down by one: the not-ready pod goes, although it is the oldest.
    s.k(&["scale", "rs", "front", "--replicas", "2"]);
    let left = wait_pods_ready(s, "tier=front", 2);
    assert!(
        left.iter().all(|p| p["metadata"]["name"] != "broken"),
        "the not-ready pod went first"
    );
    let events = events_of(s, "ReplicaSet", "front");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "SuccessfulDelete" && m == "Deleted pod: broken"),
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
    let c = Cluster::start(3);
    let s = &c.server;
    s.k_stdin(&["apply", "-f", "-"], Some(RC));
    let pods = wait_pods_ready(s, "app=legacy", 2);
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
    wait_pods_ready(s, "app=legacy", 4);
    let st = eventually(WAIT, || {
        let st = json_of(s, &["get", "rc", "legacy"])["status"].clone();
        (st["availableReplicas"] == 4).then_some(st)
    })
    .expect("rc status");
    assert_eq!(st["replicas"], 4);
    assert_eq!(st["readyReplicas"], 4);
    assert_eq!(st["fullyLabeledReplicas"], 4);
    s.k(&["scale", "rc", "legacy", "--replicas", "1"]);
    wait_pods_ready(s, "app=legacy", 1);
    let events = events_of(s, "ReplicationController", "legacy");
    assert_eq!(
        events
            .iter()
            .filter(|(r, _)| r == "SuccessfulDelete")
            .count(),
        3,
        "{events:?}"
    );
}
