//! DaemonSet controller against the real binary and kubectl: one pod per node (placed through
//! the required node affinity `matchFields metadata.name In [node]`, as upstream does), a node
//! added later gets one, a tainted node without a toleration gets none, a node that loses its
//! label loses its pod, and a template change rolls the pods.
//!
//! The nodes are simulated (`Cluster`: fake-runtime agents); the scheduler binds the daemon pods
//! by their `matchFields` affinity.

use std::collections::BTreeMap;
use std::time::Duration;

use k8slite_tests::cluster::Cluster;
use k8slite_tests::objects::json;
use k8slite_tests::{Server, eventually};
use serde_json::Value;

/// Live daemon pods by the node their affinity (or nodeName) names.
fn pods_by_node(s: &Server) -> BTreeMap<String, Vec<Value>> {
    let v = json(s, &["get", "pods", "-l", "app=agent", "-o", "json"]);
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in v["items"].as_array().into_iter().flatten() {
        if !p["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().map(str::to_string).or_else(|| {
            p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
                .as_str()
                .map(str::to_string)
        });
        out.entry(node.unwrap_or_default())
            .or_default()
            .push(p.clone());
    }
    out
}

fn nodes_with_pods(s: &Server) -> Vec<String> {
    pods_by_node(s).into_keys().collect()
}

const DS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: agent
        image: busybox
        command: ["sleep", "infinity"]
"#;

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[test]
fn daemonset_one_pod_per_eligible_node() {
    let mut c = Cluster::start(3);
    c.add_node_with("tainted", &["--node-taint=dedicated=gpu:NoSchedule"]);
    let s = &c.server;
    s.k_stdin(&["apply", "-f", "-"], Some(DS));
    let want = ["node-1", "node-2", "node-3"];
    let got = eventually(Duration::from_secs(60), || {
        let m = pods_by_node(s);
        (m.keys().eq(want.iter())
            && m.values()
                .all(|ps| ps.len() == 1 && ps[0]["spec"]["nodeName"].is_string() && ready(&ps[0])))
        .then_some(m)
    });
    assert!(
        got.is_some(),
        "pods on {:?}; log:\n{}",
        nodes_with_pods(s),
        k8slite_tests::tail(&s.log(), 40)
    );
    // Pod shape: bound where its affinity says; node affinity by field, default tolerations.
    let by_node = pods_by_node(s);
    for (node, pods) in &by_node {
        assert_eq!(pods[0]["spec"]["nodeName"], node.as_str());
    }
    let p = &by_node["node-1"][0];
    let term = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0];
    assert_eq!(term["key"], "metadata.name");
    assert_eq!(term["operator"], "In");
    let tols: Vec<(String, String)> = p["spec"]["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["key"].as_str().unwrap_or_default().to_string(),
                t["effect"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for want in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ] {
        assert!(
            tols.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {tols:?}"
        );
    }
    assert!(p["metadata"]["labels"]["controller-revision-hash"].is_string());
    assert_eq!(p["metadata"]["generateName"], "agent-");

    // Status.
    let st = eventually(Duration::from_secs(30), || {
        let v = json(s, &["get", "daemonset", "agent", "-o", "json"]);
        (v["status"]["numberAvailable"] == 3).then_some(v)
    })
    .expect("numberAvailable 3");
    assert_eq!(
        st["status"]["desiredNumberScheduled"], 3,
        "{}",
        st["status"]
    );
    assert_eq!(st["status"]["currentNumberScheduled"], 3);
    assert_eq!(st["status"]["numberReady"], 3);
    assert_eq!(st["status"]["updatedNumberScheduled"], 3);
    assert_eq!(st["status"]["numberMisscheduled"], 0);
    assert_eq!(st["status"]["observedGeneration"], 1);

    // A node added later gets one.
    c.add_node("node-4");
    let s = &c.server;
    let got = eventually(Duration::from_secs(60), || {
        let m = pods_by_node(s);
        m.get("node-4")
            .is_some_and(|ps| ps.iter().any(ready))
            .then_some(())
    });
    assert!(got.is_some(), "pods on {:?}", nodes_with_pods(s));
    assert!(
        !pods_by_node(s).contains_key("tainted"),
        "no pod on the tainted node"
    );

    // A NoExecute taint without toleration evicts the daemon pod.
    s.k(&["taint", "node", "node-3", "evict=yes:NoExecute"]);
    let got = eventually(Duration::from_secs(60), || {
        let n = nodes_with_pods(s);
        (n == ["node-1", "node-2", "node-4"]).then_some(n)
    });
    assert!(got.is_some(), "pods on {:?}", nodes_with_pods(s));
    let events = json(s, &["get", "events.v1.events.k8s.io", "-o", "json"]);
    let notes: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == "agent")
        .filter_map(|e| e["note"].as_str())
        .collect();
    assert!(
        notes.iter().any(|n| n.starts_with("Created pod: agent-")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.starts_with("Deleted pod: agent-")),
        "{notes:?}"
    );
}

#[test]
fn daemonset_node_selector_and_rolling_update() {
    let mut c = Cluster::start_with(2, &[], &["--node-label=role=edge"]);
    c.add_node("node-3");
    let s = &c.server;
    s.k(&["label", "node", "node-3", "role-"]);
    let ds = DS.replace(
        "    spec:\n      containers:",
        "    spec:\n      nodeSelector:\n        role: edge\n      containers:",
    );
    s.k_stdin(&["apply", "-f", "-"], Some(&ds));
    let first = eventually(Duration::from_secs(60), || {
        let m = pods_by_node(s);
        (m.keys().eq(["node-1", "node-2"].iter()) && m.values().all(|ps| ps.iter().any(ready)))
            .then_some(m)
    })
    .unwrap_or_else(|| panic!("pods on {:?}", nodes_with_pods(s)));
    let old_hash = first["node-1"][0]["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .expect("hash")
        .to_string();
    // The label comes: a pod follows; it goes: the pod goes.
    s.k(&["label", "node", "node-3", "role=edge"]);
    eventually(Duration::from_secs(60), || {
        pods_by_node(s)
            .get("node-3")
            .is_some_and(|ps| ps.iter().any(ready))
            .then_some(())
    })
    .expect("pod on node-3 once labelled");
    s.k(&["label", "node", "node-3", "role-"]);
    eventually(Duration::from_secs(60), || {
        (!pods_by_node(s).contains_key("node-3")).then_some(())
    })
    .expect("pod off node-3 once unlabelled");

    s.k(&["set", "image", "daemonset/agent", "agent=busybox:2"]);
    // maxUnavailable 1: at every observed moment at most one node lacks a Ready pod.
    let done = eventually(Duration::from_secs(90), || {
        let m = pods_by_node(s);
        let mut unavailable = 0;
        let mut updated = 0;
        for n in ["node-1", "node-2"] {
            let pods = m.get(n).cloned().unwrap_or_default();
            if !pods.iter().any(ready) {
                unavailable += 1;
            }
            if pods.iter().any(|p| {
                ready(p) && p["metadata"]["labels"]["controller-revision-hash"] != old_hash.as_str()
            }) {
                updated += 1;
            }
        }
        assert!(unavailable <= 1, "{unavailable} nodes unavailable at once");
        (updated == 2).then_some(())
    });
    assert!(
        done.is_some(),
        "not all nodes updated: {:?}",
        pods_by_node(s).keys()
    );
    let rollout = s.k(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(rollout.contains("successfully rolled out"), "{rollout}");
    let revs = s.k(&["get", "controllerrevisions", "-o", "name"]);
    assert_eq!(revs.lines().count(), 2, "{revs}");
}
