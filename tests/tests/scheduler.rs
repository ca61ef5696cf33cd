//! The scheduler inside `k8slite server`, driven with the real kubectl: Node objects are created
//! by hand (no agent) with allocatable resources and a Ready condition, and the tests read
//! where pods land (`spec.nodeName`), their events and their PodScheduled condition.

use std::time::Duration;

use k8slite_tests::{Server, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A server whose node-lifecycle controller leaves Lease-less test nodes alone.
fn start() -> Server {
    Server::start_with(&["--node-monitor-grace-period=3600"])
}

/// Create node `name` (hostname label plus `labels`) and give it allocatable resources and a
/// Ready condition through the status subresource.
fn add_node(s: &Server, name: &str, cpu: &str, labels: &[(&str, &str)]) {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/hostname".into(), json!(name));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": l},
    });
    s.k_stdin(&["create", "-f", "-"], Some(&node.to_string()));
    let res = json!({"cpu": cpu, "memory": "4Gi", "pods": "110", "ephemeral-storage": "10Gi"});
    let status = json!({"status": {
        "capacity": res,
        "allocatable": res,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "test node",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }],
    }});
    s.k(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

/// A pod `name` with `labels`, one container requesting `cpu` (if any), and `extra` merged
/// into its spec.
fn pod(name: &str, labels: Value, cpu: Option<&str>, extra: Value) -> Value {
    let mut container = json!({"name": "c", "image": "busybox"});
    if let Some(cpu) = cpu {
        container["resources"] = json!({"requests": {"cpu": cpu}});
    }
    let mut spec = json!({"containers": [container]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

fn create(s: &Server, obj: &Value) {
    s.k_stdin(&["create", "-f", "-"], Some(&obj.to_string()));
}

fn node_of(s: &Server, pod: &str) -> Option<String> {
    let out = s.k(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]);
    let out = out.trim();
    (!out.is_empty()).then(|| out.to_string())
}

fn wait_scheduled(s: &Server, pod: &str) -> String {
    eventually(WAIT, || node_of(s, pod))
        .unwrap_or_else(|| panic!("pod {pod} was not scheduled within {WAIT:?}"))
}

/// The messages of the pod's FailedScheduling events.
fn failed_scheduling(s: &Server, pod: &str) -> Vec<String> {
    let out = s.k(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason=FailedScheduling"),
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("events json");
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e["message"]
                .as_str()
                .or(e["note"].as_str())
                .map(str::to_string)
        })
        .collect()
}

/// Wait for a FailedScheduling event with exactly `message`.
fn wait_failed(s: &Server, pod: &str, message: &str) {
    let found = eventually(WAIT, || {
        failed_scheduling(s, pod)
            .iter()
            .any(|m| m == message)
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no FailedScheduling event {message:?} for {pod}; have {:?}",
        failed_scheduling(s, pod)
    );
    assert_eq!(node_of(s, pod), None, "{pod} must stay unscheduled");
}

#[test]
fn requests_that_fit_nowhere_stay_pending_until_a_node_fits() {
    let s = start();
    for n in ["n1", "n2", "n3"] {
        add_node(&s, n, "1", &[]);
    }
    create(&s, &pod("big", json!({}), Some("2"), json!({})));
    let msg = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are \
               available: 3 No preemption victims found for incoming pod.";
    wait_failed(&s, "big", msg);

    // The pod says so too: Pending, PodScheduled=False/Unschedulable with the message.
    let cond = eventually(WAIT, || {
        let out = s.k(&[
            "get",
            "pod",
            "big",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}|{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]);
        (!out.trim().is_empty()).then_some(out)
    })
    .expect("PodScheduled condition");
    assert_eq!(cond, format!("Unschedulable|{msg}"));
    let describe = s.k(&["describe", "pod", "big"]);
    assert!(
        describe.contains("FailedScheduling") && describe.contains("default-scheduler"),
        "kubectl describe:\n{describe}"
    );
    assert!(
        describe.contains("3 Insufficient cpu."),
        "kubectl describe:\n{describe}"
    );

    // A node that fits appears: the parked pod is retried and bound there.
    add_node(&s, "n4", "4", &[]);
    assert_eq!(wait_scheduled(&s, "big"), "n4");
    let describe = eventually(WAIT, || {
        let d = s.k(&["describe", "pod", "big"]);
        d.contains("Successfully assigned default/big to n4")
            .then_some(d)
    });
    assert!(
        describe.is_some(),
        "no Scheduled event: {}",
        s.k(&["describe", "pod", "big"])
    );
    let scheduled = s.k(&[
        "get",
        "pod",
        "big",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}",
    ]);
    // The binding sets PodScheduled=True (the API server does, as upstream's binding does).
    assert_eq!(scheduled.trim(), "True", "PodScheduled after binding");
}

#[test]
fn node_selector_and_node_affinity_decide_placement() {
    let s = start();
    add_node(&s, "n1", "2", &[("zone", "a"), ("gen", "3")]);
    add_node(
        &s,
        "n2",
        "2",
        &[("zone", "b"), ("disk", "ssd"), ("gen", "5")],
    );
    add_node(&s, "n3", "2", &[("zone", "c"), ("gen", "7")]);
    create(
        &s,
        &pod(
            "sel",
            json!({}),
            None,
            json!({"nodeSelector": {"disk": "ssd"}}),
        ),
    );
    assert_eq!(wait_scheduled(&s, "sel"), "n2");

    let required = |exprs: Value| {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": exprs}]}}}})
    };
    create(
        &s,
        &pod(
            "gt",
            json!({}),
            None,
            required(json!([{"key": "gen", "operator": "Gt", "values": ["6"]}])),
        ),
    );
    assert_eq!(wait_scheduled(&s, "gt"), "n3");
    create(
        &s,
        &pod(
            "notin",
            json!({}),
            None,
            required(json!([
                {"key": "zone", "operator": "NotIn", "values": ["b", "c"]},
                {"key": "disk", "operator": "DoesNotExist"}
            ])),
        ),
    );
    assert_eq!(wait_scheduled(&s, "notin"), "n1");

    // Preferred affinity tips the balance among fitting nodes.
    create(
        &s,
        &pod(
            "pref",
            json!({}),
            None,
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["c"]}]}}]}}}),
        ),
    );
    assert_eq!(wait_scheduled(&s, "pref"), "n3");

    create(
        &s,
        &pod(
            "nowhere",
            json!({}),
            None,
            required(json!([{"key": "zone", "operator": "In", "values": ["mars"]}])),
        ),
    );
    wait_failed(
        &s,
        "nowhere",
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
    );
}

#[test]
fn pod_anti_affinity_spreads_by_hostname_and_pod_affinity_follows() {
    let s = start();
    for n in ["n1", "n2", "n3"] {
        add_node(&s, n, "2", &[]);
    }
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    let mut nodes = Vec::new();
    for i in 0..3 {
        let name = format!("web-{i}");
        create(&s, &pod(&name, json!({"app": "web"}), None, anti.clone()));
        nodes.push(wait_scheduled(&s, &name));
    }
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"], "one web pod per node");
    create(&s, &pod("web-3", json!({"app": "web"}), None, anti));
    wait_failed(
        &s,
        "web-3",
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
    );

    // Pod affinity: a cache pod follows the db pod onto its node.
    create(
        &s,
        &pod(
            "db",
            json!({"app": "db"}),
            None,
            json!({"nodeSelector": {"kubernetes.io/hostname": "n2"}}),
        ),
    );
    assert_eq!(wait_scheduled(&s, "db"), "n2");
    create(
        &s,
        &pod(
            "cache",
            json!({"app": "cache"}),
            None,
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        ),
    );
    assert_eq!(wait_scheduled(&s, "cache"), "n2");

    // Deleting one web pod frees its node for the parked one (retry on pod deletion).
    let freed = node_of(&s, "web-0").expect("web-0 bound");
    // Forced deletion (no agent to confirm a graceful one); kubectl warns about it on stderr.
    let out = s.kubectl(&["delete", "pod", "web-0", "--grace-period=0", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wait_scheduled(&s, "web-3"), freed);
}

#[test]
fn taints_and_tolerations_decide_placement() {
    let s = start();
    for n in ["n1", "n2", "n3"] {
        add_node(&s, n, "2", &[]);
    }
    s.k(&["taint", "node", "n1", "dedicated=db:NoSchedule"]);
    s.k(&["taint", "node", "n2", "dedicated=db:NoExecute"]);
    create(&s, &pod("plain", json!({}), None, json!({})));
    assert_eq!(wait_scheduled(&s, "plain"), "n3");

    s.k(&["taint", "node", "n3", "gpu:NoSchedule"]);
    create(&s, &pod("blocked", json!({}), None, json!({})));
    wait_failed(
        &s,
        "blocked",
        "0/3 nodes are available: 1 node(s) had untolerated taint {gpu: }, \
         2 node(s) had untolerated taint {dedicated: db}. preemption: 0/3 nodes are available: \
         3 Preemption is not helpful for scheduling.",
    );

    create(
        &s,
        &pod(
            "tolerant",
            json!({}),
            None,
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
        ),
    );
    assert_eq!(
        wait_scheduled(&s, "tolerant"),
        "n1",
        "tolerates only the NoSchedule taint"
    );

    // Removing the taint lets the parked pod through (retry on node update).
    s.k(&["taint", "node", "n3", "gpu:NoSchedule-"]);
    assert_eq!(wait_scheduled(&s, "blocked"), "n3");

    // PreferNoSchedule only steers.
    s.k(&["taint", "node", "n1", "dedicated=db:NoSchedule-"]);
    s.k(&["taint", "node", "n1", "slow=yes:PreferNoSchedule"]);
    create(
        &s,
        &pod(
            "soft",
            json!({}),
            None,
            json!({"nodeSelector": {"kubernetes.io/hostname": "n1"}}),
        ),
    );
    assert_eq!(
        wait_scheduled(&s, "soft"),
        "n1",
        "PreferNoSchedule does not block"
    );
}

#[test]
fn topology_spread_constraints_balance_zones() {
    let s = start();
    add_node(&s, "a1", "4", &[("topology.kubernetes.io/zone", "a")]);
    add_node(&s, "a2", "4", &[("topology.kubernetes.io/zone", "a")]);
    add_node(&s, "b1", "4", &[("topology.kubernetes.io/zone", "b")]);
    let spread = json!({"topologySpreadConstraints": [{
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "spread"}},
    }]});
    let mut zones = Vec::new();
    for i in 0..4 {
        let name = format!("s-{i}");
        create(
            &s,
            &pod(&name, json!({"app": "spread"}), None, spread.clone()),
        );
        let node = wait_scheduled(&s, &name);
        zones.push(if node.starts_with('a') { "a" } else { "b" });
    }
    let a = zones.iter().filter(|z| **z == "a").count();
    assert_eq!(a, 2, "two pods per zone: {zones:?}");

    // Zone b full (cordoned): a fifth pod in zone a would make the skew 3 - 2 = 1 (fine), a
    // sixth 4 - 2 = 2 (not).
    s.k(&["cordon", "b1"]);
    create(
        &s,
        &pod("s-4", json!({"app": "spread"}), None, spread.clone()),
    );
    assert!(wait_scheduled(&s, "s-4").starts_with('a'));
    create(&s, &pod("s-5", json!({"app": "spread"}), None, spread));
    wait_failed(
        &s,
        "s-5",
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match pod \
         topology spread constraints. preemption: 0/3 nodes are available: 1 Preemption is not \
         helpful for scheduling, 2 No preemption victims found for incoming pod.",
    );
}

#[test]
fn cordoned_nodes_take_no_pods_until_uncordoned() {
    let s = start();
    add_node(&s, "n1", "2", &[]);
    add_node(&s, "n2", "2", &[]);
    s.k(&["cordon", "n1"]);
    for i in 0..2 {
        let name = format!("p-{i}");
        create(&s, &pod(&name, json!({}), None, json!({})));
        assert_eq!(wait_scheduled(&s, &name), "n2");
    }
    s.k(&["cordon", "n2"]);
    create(&s, &pod("parked", json!({}), None, json!({})));
    wait_failed(
        &s,
        "parked",
        "0/2 nodes are available: 2 node(s) were unschedulable. preemption: 0/2 nodes are \
         available: 2 Preemption is not helpful for scheduling.",
    );
    // A node change that does not help: retried (not busy-polled), fails the same way, and the
    // repeat joins the first event's series instead of making a new object.
    s.k(&["label", "node", "n2", "team=blue"]);
    let count = eventually(WAIT, || {
        let out = s.k(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=parked,reason=FailedScheduling",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).expect("events json");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let count = items.first().and_then(|e| {
            e["series"]["count"]
                .as_i64()
                .or_else(|| e["count"].as_i64())
        });
        (items.len() == 1 && count.is_some_and(|c| c >= 2)).then_some(items.len())
    });
    assert_eq!(
        count,
        Some(1),
        "one aggregated FailedScheduling event: {}",
        s.k(&["get", "events", "-o", "wide"])
    );
    s.k(&["uncordon", "n1"]);
    assert_eq!(wait_scheduled(&s, "parked"), "n1");
}

#[test]
fn replicas_spread_over_nodes_and_other_schedulers_pods_are_left_alone() {
    let s = start();
    for n in ["n1", "n2", "n3"] {
        add_node(&s, n, "2", &[]);
    }
    create(
        &s,
        &pod(
            "mine",
            json!({}),
            None,
            json!({"schedulerName": "my-scheduler"}),
        ),
    );
    // A ReplicaSet's three pods (no agent: they stay Pending, but bound) spread one per node.
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "rs"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": {
                "metadata": {"labels": {"app": "rs"}},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "100m"}}}]},
            },
        },
    });
    create(&s, &rs);
    let mut nodes = eventually(WAIT, || {
        let out = s.k(&["get", "pods", "-l", "app=rs", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).expect("pods json");
        let n: Vec<String> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .collect();
        (n.len() == 3).then_some(n)
    })
    .unwrap_or_else(|| panic!("3 bound rs pods: {}", s.k(&["get", "pods", "-o", "wide"])));
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"], "one replica per node");
    // `mine` was created first and is older than every rs pod: had the scheduler taken it,
    // it would have been bound before them.
    assert_eq!(
        node_of(&s, "mine"),
        None,
        "another scheduler's pod must be left alone"
    );
    assert!(failed_scheduling(&s, "mine").is_empty());
}

/// Names of the nodes of the Running pods of `selector`.
fn running_nodes(s: &Server, selector: &str) -> Vec<String> {
    let out = s.k(&["get", "pods", "-l", selector, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("pods json");
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn deployment_replicas_run_spread_over_simulated_nodes_and_a_lost_node_is_avoided() {
    let mut c = k8slite_tests::cluster::Cluster::start_with(
        3,
        &["--node-monitor-grace-period=4", "--node-monitor-period=1"],
        &[],
    );
    let s = &c.server;
    s.k(&[
        "create",
        "deployment",
        "web",
        "--image",
        "nginx",
        "--replicas",
        "3",
    ]);
    let nodes = eventually(Duration::from_secs(60), || {
        let mut n = running_nodes(s, "app=web");
        n.sort();
        (n.len() == 3).then_some(n)
    })
    .unwrap_or_else(|| {
        panic!(
            "3 Running web pods: {}",
            s.k(&["get", "pods", "-o", "wide"])
        )
    });
    assert_eq!(
        nodes,
        ["node-1", "node-2", "node-3"],
        "one replica per node"
    );

    // node-3 goes silent: the node-lifecycle controller taints it, and new pods keep away.
    c.stop_node("node-3");
    let s = &c.server;
    let tainted = eventually(Duration::from_secs(60), || {
        let t = s.k(&[
            "get",
            "node",
            "node-3",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ]);
        t.contains("node.kubernetes.io/unreachable").then_some(t)
    });
    assert!(tainted.is_some(), "node-3 never got the unreachable taint");
    for i in 0..4 {
        let name = format!("after-{i}");
        create(s, &pod(&name, json!({"app": "after"}), None, json!({})));
        let node = wait_scheduled(s, &name);
        assert_ne!(node, "node-3", "{name} placed on the unreachable node");
    }
}

#[test]
fn higher_priority_pods_are_scheduled_first() {
    let s = start();
    add_node(&s, "n1", "1", &[]);
    s.k(&["cordon", "n1"]);
    s.k(&["create", "priorityclass", "high", "--value=1000"]);
    create(&s, &pod("low", json!({}), Some("800m"), json!({})));
    create(
        &s,
        &pod(
            "high",
            json!({}),
            Some("800m"),
            json!({"priorityClassName": "high"}),
        ),
    );
    assert_eq!(
        s.k(&["get", "pod", "high", "-o", "jsonpath={.spec.priority}"])
            .trim(),
        "1000",
        "admission resolves the priority class"
    );
    let unschedulable = "0/1 nodes are available: 1 node(s) were unschedulable. preemption: \
                         0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
    wait_failed(&s, "low", unschedulable);
    wait_failed(&s, "high", unschedulable);
    // Let both pods' back-off (1 s after their failure) pass, so the change below makes both
    // active at once and the queue order decides.
    std::thread::sleep(Duration::from_secs(3));
    s.k(&["uncordon", "n1"]);
    assert_eq!(wait_scheduled(&s, "high"), "n1");
    wait_failed(
        &s,
        "low",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
         1 No preemption victims found for incoming pod.",
    );
}
