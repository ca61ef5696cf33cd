//! DaemonSet controller against the real binary and kubectl: one pod per node (placed through
//! the required node affinity `matchFields metadata.name In [node]`, as upstream does), a node
//! added later gets one, a tainted node without a toleration gets none, a node that loses its
//! label loses its pod, and a template change rolls the pods.
//!
//! No node agent runs here: Node objects are created with kubectl and the test plays the
//! kubelet (pod status via `kubectl patch --subresource=status`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8slite_tests::{Server, eventually};
use serde_json::Value;

fn json(s: &Server, args: &[&str]) -> Value {
    serde_json::from_str(&s.k(args)).expect("kubectl json")
}

fn add_node(s: &Server, name: &str, extra_spec: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n    role: edge\nspec:\n{extra_spec}\n"
    );
    s.k_stdin(&["create", "-f", "-"], Some(&yaml));
}

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
      nodeSelector:
        role: edge
      containers:
      - name: agent
        image: busybox
        command: ["sleep", "infinity"]
"#;

fn make_ready(s: &Server, pod: &str) {
    let patch = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#;
    s.k(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    ]);
}

#[test]
fn daemonset_one_pod_per_eligible_node() {
    let s = Server::start();
    add_node(&s, "n1", "  {}");
    add_node(&s, "n2", "  {}");
    add_node(
        &s,
        "tainted",
        "  taints:\n  - key: dedicated\n    value: gpu\n    effect: NoSchedule",
    );
    s.k_stdin(&["apply", "-f", "-"], Some(DS));
    let got = eventually(Duration::from_secs(20), || {
        let n = nodes_with_pods(&s);
        (n == ["n1", "n2"]).then_some(n)
    });
    assert!(
        got.is_some(),
        "pods on {:?}; log:\n{}",
        nodes_with_pods(&s),
        k8slite_tests::tail(&s.log(), 40)
    );
    // Pod shape: node affinity by field, default tolerations, revision label.
    let by_node = pods_by_node(&s);
    let p = &by_node["n1"][0];
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
    ] {
        assert!(
            tols.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {tols:?}"
        );
    }
    assert!(p["metadata"]["labels"]["controller-revision-hash"].is_string());
    assert!(
        p["metadata"]["generateName"]
            .as_str()
            .is_some_and(|g| g == "agent-")
    );

    // A node added later gets one; a cordoned node still does (daemons tolerate it).
    add_node(
        &s,
        "n3",
        "  unschedulable: true\n  taints:\n  - key: node.kubernetes.io/unschedulable\n    effect: NoSchedule",
    );
    let got = eventually(Duration::from_secs(20), || {
        let n = nodes_with_pods(&s);
        (n == ["n1", "n2", "n3"]).then_some(n)
    });
    assert!(got.is_some(), "pods on {:?}", nodes_with_pods(&s));

    // Status.
    for pods in pods_by_node(&s).values() {
        make_ready(&s, pods[0]["metadata"]["name"].as_str().expect("name"));
    }
    let st = eventually(Duration::from_secs(20), || {
        let v = json(&s, &["get", "daemonset", "agent", "-o", "json"]);
        (v["status"]["numberReady"] == 3).then_some(v)
    })
    .expect("numberReady 3");
    assert_eq!(
        st["status"]["desiredNumberScheduled"], 3,
        "{}",
        st["status"]
    );
    assert_eq!(st["status"]["currentNumberScheduled"], 3);
    assert_eq!(st["status"]["numberAvailable"], 3);
    assert_eq!(st["status"]["updatedNumberScheduled"], 3);
    assert_eq!(st["status"]["numberMisscheduled"], 0);
    assert_eq!(st["status"]["observedGeneration"], 1);

    // A node that no longer matches the nodeSelector loses its pod.
    s.k(&["label", "node", "n2", "role-"]);
    let got = eventually(Duration::from_secs(20), || {
        let n = nodes_with_pods(&s);
        (n == ["n1", "n3"]).then_some(n)
    });
    assert!(got.is_some(), "pods on {:?}", nodes_with_pods(&s));
    // A NoExecute taint without toleration evicts the daemon pod too.
    s.k(&["taint", "node", "n3", "evict=yes:NoExecute"]);
    let got = eventually(Duration::from_secs(20), || {
        let n = nodes_with_pods(&s);
        (n == ["n1"]).then_some(n)
    });
    assert!(got.is_some(), "pods on {:?}", nodes_with_pods(&s));
    let events = json(&s, &["get", "events.v1.events.k8s.io", "-o", "json"]);
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
fn daemonset_rolling_update_replaces_pods_one_at_a_time() {
    let s = Server::start();
    for n in ["n1", "n2", "n3"] {
        add_node(&s, n, "  {}");
    }
    s.k_stdin(&["apply", "-f", "-"], Some(DS));
    let first = eventually(Duration::from_secs(20), || {
        let m = pods_by_node(&s);
        (m.len() == 3).then_some(m)
    })
    .expect("three pods");
    let old_hash = first["n1"][0]["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .expect("hash")
        .to_string();
    for pods in first.values() {
        make_ready(&s, pods[0]["metadata"]["name"].as_str().expect("name"));
    }
    eventually(Duration::from_secs(20), || {
        let v = json(&s, &["get", "daemonset", "agent", "-o", "json"]);
        (v["status"]["numberAvailable"] == 3).then_some(())
    })
    .expect("available");
    s.k(&["set", "image", "daemonset/agent", "agent=busybox:2"]);
    // maxUnavailable 1: at every observed moment at most one node lacks an available pod.
    let mut updated_nodes = 0;
    for _ in 0..200 {
        let m = pods_by_node(&s);
        let mut unavailable = 0;
        updated_nodes = 0;
        for n in ["n1", "n2", "n3"] {
            let pods = m.get(n).cloned().unwrap_or_default();
            let ready = pods.iter().any(|p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            });
            if !ready {
                unavailable += 1;
            }
            for p in &pods {
                let h = p["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap_or_default();
                if h != old_hash {
                    updated_nodes += 1;
                    if !ready {
                        make_ready(&s, p["metadata"]["name"].as_str().expect("name"));
                    }
                }
            }
        }
        assert!(unavailable <= 1, "{unavailable} nodes unavailable at once");
        if updated_nodes == 3
            && json(&s, &["get", "daemonset", "agent", "-o", "json"])["status"]["updatedNumberScheduled"]
                == 3
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(updated_nodes, 3, "all nodes run the new template");
    let revs = s.k(&["get", "controllerrevisions", "-o", "name"]);
    assert_eq!(revs.lines().count(), 2, "{revs}");
}
