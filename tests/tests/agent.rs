//! Simulated nodes (`k8slite agent --runtime fake`) against the real server, driven by kubectl:
//! registration, Lease renewal, and pods bound with `spec.nodeName` through their lifecycle.

use std::time::{Duration, Instant};

use k8slite_tests::cluster::Cluster;
use k8slite_tests::{Server, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn jsonpath(s: &Server, args: &[&str], path: &str) -> String {
    let p = format!("jsonpath={path}");
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["-o", p.as_str()]);
    s.k(&a).trim().to_string()
}

fn pod_field(s: &Server, name: &str, path: &str) -> String {
    jsonpath(s, &["get", "pod", name], path)
}

fn wait_pod_field(s: &Server, name: &str, path: &str, want: &str) {
    let got = eventually(WAIT, || {
        let v = pod_field(s, name, path);
        (v == want).then_some(v)
    });
    assert!(
        got.is_some(),
        "pod {name}: {path} never became {want:?} (now {:?}); pod:\n{}",
        pod_field(s, name, path),
        s.k(&["get", "pod", name, "-o", "yaml"])
    );
}

fn create_pod(s: &Server, name: &str, node: &str, extra_spec: &str, container: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n{extra_spec}  containers:\n{container}"
    );
    s.k_stdin(&["create", "-f", "-"], Some(&yaml));
}

#[test]
fn three_nodes_register_ready_with_kubelet_columns() {
    let c = Cluster::start(3);
    let s = &c.server;
    let out = s.k(&["get", "nodes"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], format!("node-{}", i + 1));
        assert_eq!(r[1], "Ready", "{out}");
        assert_eq!(r[2], "<none>", "{out}");
        assert_eq!(r[4], "v1.33.0+k8slite", "{out}");
    }
    let wide = s.k(&["get", "node", "node-2", "-o", "wide"]);
    assert!(wide.contains("10.0.0.2"), "InternalIP in -o wide: {wide}");
    assert!(
        wide.contains("fake://"),
        "container runtime in -o wide: {wide}"
    );
    let n = &["get", "node", "node-1"];
    assert_eq!(jsonpath(s, n, "{.status.capacity.cpu}"), "4");
    assert_eq!(jsonpath(s, n, "{.status.allocatable.memory}"), "8Gi");
    assert_eq!(jsonpath(s, n, "{.status.capacity.pods}"), "110");
    assert_eq!(
        jsonpath(s, n, "{.metadata.labels.kubernetes\\.io/hostname}"),
        "node-1"
    );
    assert_eq!(
        jsonpath(s, n, "{.metadata.labels.kubernetes\\.io/os}"),
        "linux"
    );
    assert_eq!(
        jsonpath(s, n, "{.status.conditions[?(@.type==\"Ready\")].reason}"),
        "KubeletReady"
    );
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(
            jsonpath(
                s,
                n,
                &format!("{{.status.conditions[?(@.type==\"{t}\")].status}}")
            ),
            "False",
            "{t}"
        );
    }
    assert_eq!(
        jsonpath(s, n, "{.status.nodeInfo.kubeletVersion}"),
        "v1.33.0+k8slite"
    );
}

#[test]
fn node_lease_is_renewed() {
    let c = Cluster::start(1);
    let s = &c.server;
    let lease = &["get", "lease", "-n", "kube-node-lease", "node-1"];
    assert_eq!(jsonpath(s, lease, "{.spec.holderIdentity}"), "node-1");
    assert_eq!(jsonpath(s, lease, "{.spec.leaseDurationSeconds}"), "40");
    assert_eq!(
        jsonpath(s, lease, "{.metadata.ownerReferences[0].kind}"),
        "Node"
    );
    let first = jsonpath(s, lease, "{.spec.renewTime}");
    assert!(!first.is_empty(), "renewTime set");
    // The harness renews every 2 s.
    let later = eventually(Duration::from_secs(15), || {
        let t = jsonpath(s, lease, "{.spec.renewTime}");
        (t > first).then_some(t)
    });
    assert!(later.is_some(), "renewTime never advanced past {first}");
}

#[test]
fn bound_pod_runs_with_container_status_and_conditions() {
    let c = Cluster::start(2);
    let s = &c.server;
    create_pod(
        s,
        "web",
        "node-2",
        "",
        "  - name: web\n    image: nginx:1.27\n",
    );
    wait_pod_field(s, "web", "{.status.phase}", "Running");
    wait_pod_field(
        s,
        "web",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
    );
    for t in [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "PodReadyToStartContainers",
    ] {
        assert_eq!(
            pod_field(
                s,
                "web",
                &format!("{{.status.conditions[?(@.type==\"{t}\")].status}}")
            ),
            "True",
            "{t}"
        );
        assert!(
            !pod_field(
                s,
                "web",
                &format!("{{.status.conditions[?(@.type==\"{t}\")].lastTransitionTime}}")
            )
            .is_empty(),
            "{t} has a lastTransitionTime"
        );
    }
    let cs = "{.status.containerStatuses[0]";
    assert_eq!(pod_field(s, "web", &format!("{cs}.ready}}")), "true");
    assert_eq!(pod_field(s, "web", &format!("{cs}.started}}")), "true");
    assert_eq!(pod_field(s, "web", &format!("{cs}.restartCount}}")), "0");
    assert!(pod_field(s, "web", &format!("{cs}.containerID}}")).starts_with("fake://"));
    assert_eq!(
        pod_field(s, "web", &format!("{cs}.image}}")),
        "docker.io/library/nginx:1.27"
    );
    assert!(
        pod_field(s, "web", &format!("{cs}.imageID}}"))
            .starts_with("docker.io/library/nginx@sha256:")
    );
    assert!(!pod_field(s, "web", &format!("{cs}.state.running.startedAt}}")).is_empty());
    assert_eq!(pod_field(s, "web", "{.status.hostIP}"), "10.0.0.2");
    assert!(pod_field(s, "web", "{.status.podIP}").starts_with("10.42."));
    assert!(!pod_field(s, "web", "{.status.startTime}").is_empty());
    let row = s.k(&["get", "pod", "web", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..4], ["1/1", "Running", "0"], "{row}");
    // Events the kubelet records.
    let events = eventually(WAIT, || {
        let e = s.k(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ]);
        (e.contains("Started") && e.contains("Created") && e.contains("Pulled")).then_some(e)
    });
    assert!(events.is_some(), "Pulled/Created/Started events");
}

#[test]
fn exit_codes_decide_succeeded_and_failed() {
    let c = Cluster::start(1);
    let s = &c.server;
    let never = "  restartPolicy: Never\n";
    create_pod(
        s,
        "ok",
        "node-1",
        never,
        "  - name: c\n    image: busybox\n    command: [sh, -c, 'exit 0']\n",
    );
    create_pod(
        s,
        "bad",
        "node-1",
        never,
        "  - name: c\n    image: busybox\n    command: [sh, -c, 'exit 3']\n",
    );
    wait_pod_field(s, "ok", "{.status.phase}", "Succeeded");
    wait_pod_field(s, "bad", "{.status.phase}", "Failed");
    let t = "{.status.containerStatuses[0].state.terminated";
    assert_eq!(pod_field(s, "ok", &format!("{t}.exitCode}}")), "0");
    assert_eq!(pod_field(s, "ok", &format!("{t}.reason}}")), "Completed");
    assert_eq!(pod_field(s, "bad", &format!("{t}.exitCode}}")), "3");
    assert_eq!(pod_field(s, "bad", &format!("{t}.reason}}")), "Error");
    assert_eq!(
        pod_field(
            s,
            "bad",
            "{.status.conditions[?(@.type==\"Ready\")].reason}"
        ),
        "PodCompleted"
    );
    let out = s.k(&["get", "pods", "--no-headers"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok ") && l.contains("Completed")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("bad ") && l.contains("Error")),
        "{out}"
    );
}

#[test]
fn crashing_container_restarts_with_crash_loop_back_off() {
    let c = Cluster::start(1);
    let s = &c.server;
    create_pod(
        s,
        "crash",
        "node-1",
        "",
        "  - name: c\n    image: busybox\n    command: [sh, -c, 'sleep 0.2; exit 1']\n",
    );
    let restarts = eventually(WAIT, || {
        let n: u32 = pod_field(s, "crash", "{.status.containerStatuses[0].restartCount}")
            .parse()
            .unwrap_or(0);
        (n >= 2).then_some(n)
    });
    assert!(restarts.is_some(), "restartCount never reached 2");
    let seen = eventually(WAIT, || {
        let row = s.k(&["get", "pod", "crash", "--no-headers"]);
        row.contains("CrashLoopBackOff").then_some(row)
    });
    assert!(
        seen.is_some(),
        "CrashLoopBackOff never shown by kubectl get"
    );
    assert_eq!(pod_field(s, "crash", "{.status.phase}"), "Running");
    assert_eq!(
        pod_field(
            s,
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "1"
    );
    let events = eventually(WAIT, || {
        let e = s.k(&["describe", "pod", "crash"]);
        e.contains("Back-off restarting failed container c")
            .then_some(e)
    });
    assert!(events.is_some(), "BackOff event in describe");
}

#[test]
fn deletion_honours_the_grace_period_then_removes_the_pod() {
    let c = Cluster::start(1);
    let s = &c.server;
    // The container takes 3 s to exit after SIGTERM; the grace period (30 s) allows it.
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\n  annotations:\n    sim.k8slite.io/termination-seconds: \"3\"\nspec:\n  nodeName: node-1\n  containers:\n  - name: c\n    image: nginx\n";
    s.k_stdin(&["create", "-f", "-"], Some(yaml));
    wait_pod_field(s, "slow", "{.status.phase}", "Running");
    let t0 = Instant::now();
    s.k(&["delete", "pod", "slow", "--wait=false"]);
    // Still there (terminating) while the container shuts down.
    std::thread::sleep(Duration::from_millis(1500));
    let still = s.kubectl(&["get", "pod", "slow", "-o", "name"]);
    assert!(
        still.status.success(),
        "pod vanished before its container stopped"
    );
    let gone = eventually(WAIT, || {
        let out = s.kubectl(&["get", "pod", "slow", "-o", "name"]);
        (!out.status.success()).then(|| t0.elapsed())
    });
    let took = gone.expect("pod removed after its containers stopped");
    assert!(
        took >= Duration::from_millis(2500),
        "removed after {took:?}, before the container's 3 s shutdown"
    );

    // A container that ignores SIGTERM is killed when a 1 s grace period runs out.
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stubborn\n  annotations:\n    sim.k8slite.io/termination-seconds: \"600\"\nspec:\n  nodeName: node-1\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: nginx\n";
    s.k_stdin(&["create", "-f", "-"], Some(yaml));
    wait_pod_field(s, "stubborn", "{.status.phase}", "Running");
    let t1 = Instant::now();
    s.k(&["delete", "pod", "stubborn", "--wait=true", "--timeout=30s"]);
    assert!(
        t1.elapsed() < Duration::from_secs(20),
        "grace period of 1 s not honoured: {:?}",
        t1.elapsed()
    );
}

#[test]
fn annotations_make_containers_exit_and_probes_fail() {
    let c = Cluster::start(1);
    let s = &c.server;
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\n  annotations:\n    sim.k8slite.io/exit-code: \"5\"\n    sim.k8slite.io/run-seconds: \"1\"\nspec:\n  nodeName: node-1\n  restartPolicy: Never\n  containers:\n  - name: work\n    image: busybox\n";
    s.k_stdin(&["create", "-f", "-"], Some(yaml));
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unready\n  annotations:\n    sim.k8slite.io/ready: \"false\"\nspec:\n  nodeName: node-1\n  containers:\n  - name: web\n    image: nginx\n    readinessProbe:\n      httpGet: {path: /healthz, port: 80}\n      periodSeconds: 1\n      failureThreshold: 1\n";
    s.k_stdin(&["create", "-f", "-"], Some(yaml));
    wait_pod_field(s, "job", "{.status.phase}", "Failed");
    assert_eq!(
        pod_field(
            s,
            "job",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "5"
    );
    wait_pod_field(s, "unready", "{.status.phase}", "Running");
    let events = eventually(WAIT, || {
        let e = s.k(&["describe", "pod", "unready"]);
        e.contains("Readiness probe failed").then_some(e)
    });
    assert!(events.is_some(), "Unhealthy event in describe");
    assert_eq!(
        pod_field(
            s,
            "unready",
            "{.status.conditions[?(@.type==\"Ready\")].reason}"
        ),
        "ContainersNotReady"
    );
    let row = s.k(&["get", "pod", "unready", "--no-headers"]);
    assert!(row.contains("0/1") && row.contains("Running"), "{row}");
}

#[test]
fn init_containers_complete_before_the_app_starts() {
    let c = Cluster::start(1);
    let s = &c.server;
    create_pod(
        s,
        "init",
        "node-1",
        "  initContainers:\n  - name: setup\n    image: busybox\n    command: [sh, -c, 'sleep 1']\n",
        "  - name: app\n    image: nginx\n",
    );
    wait_pod_field(s, "init", "{.status.phase}", "Running");
    let t = "{.status.initContainerStatuses[0].state.terminated";
    assert_eq!(pod_field(s, "init", &format!("{t}.reason}}")), "Completed");
    let init_done = pod_field(s, "init", &format!("{t}.finishedAt}}"));
    let app_started = pod_field(
        s,
        "init",
        "{.status.containerStatuses[0].state.running.startedAt}",
    );
    assert!(
        !init_done.is_empty() && app_started >= init_done,
        "app started {app_started} before init finished {init_done}"
    );
    assert_eq!(
        pod_field(
            s,
            "init",
            "{.status.conditions[?(@.type==\"Initialized\")].status}"
        ),
        "True"
    );
}

#[test]
fn several_fake_nodes_run_in_one_process() {
    let mut c = Cluster::start(0);
    c.spawn_node("sim", &["--fake-nodes=3"]);
    for n in ["sim-1", "sim-2", "sim-3"] {
        c.wait_node_ready(n, WAIT);
    }
    let s = &c.server;
    // Each simulated node runs its own pods.
    create_pod(s, "on-2", "sim-2", "", "  - name: c\n    image: nginx\n");
    wait_pod_field(s, "on-2", "{.status.phase}", "Running");
    assert_eq!(pod_field(s, "on-2", "{.status.hostIP}"), "10.0.0.3");
}

#[test]
fn sigterm_stops_the_agent_cleanly() {
    let mut c = Cluster::start(1);
    create_pod(
        &c.server,
        "web",
        "node-1",
        "",
        "  - name: c\n    image: nginx\n",
    );
    wait_pod_field(&c.server, "web", "{.status.phase}", "Running");
    assert!(
        c.terminate_node("node-1", Duration::from_secs(10)),
        "agent did not exit cleanly on SIGTERM"
    );
}
