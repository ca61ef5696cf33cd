//! E2E (issue 4): a server (with its embedded agent) plus one agent joined with the token, each
//! in its own network namespace: DaemonSet on both, a deleted pod comes back on its node, a
//! stopped agent's node goes NotReady and its Deployment pods move to the server's node.

use std::time::Duration;

use k8slite_tests::e2e::{E2eCluster, E2eOptions, WAIT};
use serde_json::Value;

fn node_of(p: &Value) -> String {
    p["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
}

#[test]
fn daemonset_runs_everywhere_and_deleted_pod_is_recreated_on_its_node() {
    let c = E2eCluster::start(1);
    let server = c.node_name("server");
    let agent = c.node_name("agent1");
    // The server's node has k3s's role labels (set by the server, not its kubelet); an agent's
    // has none.
    let roles = c.wait_for(
        "the server node labelled control-plane,master",
        WAIT,
        || {
            let out = c.k(&["get", "nodes", "--no-headers"]);
            let roles: Vec<(String, String)> = out
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    Some((f.first()?.to_string(), f.get(2)?.to_string()))
                })
                .collect();
            roles
                .iter()
                .any(|(n, r)| *n == server && r == "control-plane,master")
                .then_some(roles)
        },
    );
    assert!(
        roles.iter().any(|(n, r)| *n == agent && r == "<none>"),
        "{roles:?}"
    );
    c.apply(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ds}
spec:
  selector: {matchLabels: {app: ds}}
  template:
    metadata: {labels: {app: ds}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - {name: c, image: busybox, command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}
"#,
    );
    let pods = c.wait_for("a running ds pod on each node", WAIT, || {
        let pods = c.pods("app=ds");
        let mut nodes: Vec<String> = pods.iter().filter(|p| running(p)).map(node_of).collect();
        nodes.sort();
        let mut want = vec![server.clone(), agent.clone()];
        want.sort();
        (nodes == want).then_some(pods)
    });
    let on_agent = pods
        .iter()
        .find(|p| node_of(p) == agent)
        .and_then(|p| p["metadata"]["name"].as_str())
        .expect("pod on the agent")
        .to_string();
    c.k(&["delete", "pod", &on_agent, "--wait=false"]);
    c.wait_for("a new ds pod on the agent", WAIT, || {
        c.pods("app=ds")
            .iter()
            .find(|p| {
                running(p) && node_of(p) == agent && p["metadata"]["name"] != on_agent.as_str()
            })
            .map(|_| ())
    });
}

#[test]
fn stopped_agent_goes_notready_and_its_pods_move() {
    let c = E2eCluster::start_with(E2eOptions {
        agents: vec!["agent1".into()],
        server_flags: [
            "--node-monitor-grace-period=8",
            "--node-monitor-period=1",
            "--default-not-ready-toleration-seconds=3",
            "--default-unreachable-toleration-seconds=3",
        ]
        .map(String::from)
        .to_vec(),
        ..E2eOptions::default()
    });
    let mut c = c;
    let server = c.node_name("server");
    let agent = c.node_name("agent1");
    c.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 2
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: spread}}}
      containers:
      - {name: c, image: nginx}
"#,
    );
    c.wait_for("one running pod per node", WAIT, || {
        let pods = c.pods("app=spread");
        let nodes: Vec<String> = pods.iter().filter(|p| running(p)).map(node_of).collect();
        (nodes.contains(&server) && nodes.contains(&agent)).then_some(())
    });
    c.kill_node_process("agent1");
    c.wait_for("agent node NotReady", Duration::from_secs(60), || {
        let st = c.field(
            &["get", "node", &agent],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        );
        (st == "Unknown" || st == "False").then_some(())
    });
    c.wait_for(
        "both replicas running on the server's node",
        Duration::from_secs(120),
        || {
            let pods = c.pods("app=spread");
            let on_server = pods
                .iter()
                .filter(|p| running(p) && node_of(p) == server)
                .count();
            (on_server >= 2).then_some(())
        },
    );
}
