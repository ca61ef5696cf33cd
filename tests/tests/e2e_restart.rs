//! E2E (issue 4): restarting the agent, or the containerd under it, leaves running containers
//! untouched: same container IDs, same restartCount, same start time, still serving.

use std::collections::BTreeMap;
use std::time::Duration;

use k8slite_tests::e2e::{E2eCluster, WAIT};

/// Container ID, restartCount and startedAt of every container of pods `app=keep`.
fn snapshot(c: &E2eCluster) -> BTreeMap<String, (String, i64, String)> {
    let mut m = BTreeMap::new();
    for p in c.pods("app=keep") {
        let pod = p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for s in p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            m.insert(
                format!("{pod}/{}", s["name"].as_str().unwrap_or_default()),
                (
                    s["containerID"].as_str().unwrap_or_default().to_string(),
                    s["restartCount"].as_i64().unwrap_or(-1),
                    s["state"]["running"]["startedAt"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            );
        }
    }
    m
}

/// Two nginx pods pinned to the agent node, Ready; returns their IPs.
fn workload(c: &E2eCluster) -> Vec<String> {
    let agent = c.node_name("agent1");
    c.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: keep}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: keep}}}}
  template:
    metadata: {{labels: {{app: keep}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {agent}}}
      containers:
      - {{name: web, image: nginx}}
      - {{name: side, image: busybox, command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}}
"#
    ));
    c.wait_for("two ready keep pods", WAIT, || {
        let pods = c.pods("app=keep");
        let ips: Vec<String> = pods
            .iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect();
        (ips.len() == 2).then_some(ips)
    })
}

fn assert_serving(c: &E2eCluster, ips: &[String]) {
    for ip in ips {
        let page = c.wait_for(&format!("page from {ip}"), WAIT, || {
            c.fetch_in("agent1", &format!("http://{ip}/"))
        });
        assert!(page.contains("Welcome to nginx!"));
    }
}

#[test]
fn restarting_the_agent_leaves_containers_running() {
    let mut c = E2eCluster::start(1);
    let ips = workload(&c);
    let before = snapshot(&c);
    assert_eq!(before.len(), 4, "{before:?}");
    let containerd_before = c.node("agent1").containerd_pid();
    assert!(
        c.terminate_node_process("agent1", Duration::from_secs(30)),
        "agent did not exit cleanly on SIGTERM"
    );
    assert_serving(&c, &ips);
    c.spawn_agent("agent1");
    c.wait_node_ready("agent1", WAIT);
    // Give the restarted agent several status cycles to (wrongly) touch something.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(snapshot(&c), before);
    assert_serving(&c, &ips);
    assert_eq!(
        c.node("agent1").containerd_pid(),
        containerd_before,
        "the agent restarted containerd although it was healthy"
    );
}

#[test]
fn restarting_containerd_leaves_containers_running() {
    let c = E2eCluster::start(1);
    let ips = workload(&c);
    let before = snapshot(&c);
    let old = c.kill_containerd("agent1");
    let new = c.wait_for("the agent to restart containerd", WAIT, || {
        c.node("agent1").containerd_pid().filter(|p| *p != old)
    });
    assert_ne!(old, new);
    assert_serving(&c, &ips);
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(snapshot(&c), before);
    let ready = c.field(
        &["get", "node", &c.node_name("agent1")],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    );
    assert_eq!(ready, "True");
}
