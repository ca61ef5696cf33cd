//! E2E (issue 4): pods really run on containerd. `k8slite server` with its embedded agent in its
//! own network namespace, the real kubectl, the busybox/nginx test images from the images dir.
//! Each test runs its own cluster (a few seconds to start) so a failure stays local.

use std::time::Duration;

use k8slite_tests::e2e::{E2eCluster, WAIT};

fn one_node() -> E2eCluster {
    E2eCluster::start(0)
}

#[test]
fn busybox_run_succeeds_and_logs_hi() {
    let c = one_node();
    c.k(&[
        "run",
        "t",
        "--image",
        "busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo hi",
    ]);
    c.wait_pod_phase("t", "Succeeded");
    assert_eq!(c.k(&["logs", "t"]), "hi\n");
    let st = c.container_status("t", "t");
    assert_eq!(st["state"]["terminated"]["exitCode"], 0, "{st}");
    assert_eq!(st["state"]["terminated"]["reason"], "Completed", "{st}");
}

#[test]
fn nginx_deployment_gets_a_pod_ip_the_node_can_fetch() {
    let c = one_node();
    c.k(&["create", "deployment", "nginx", "--image", "nginx"]);
    let pod = c.wait_for("an nginx pod", WAIT, || {
        c.pods("app=nginx")
            .first()
            .and_then(|p| p["metadata"]["name"].as_str().map(str::to_string))
    });
    let ip = c.wait_pod_ready(&pod);
    let cidr = c.slot().cluster_cidr();
    let net = cidr.trim_end_matches("0.0/16");
    assert!(ip.starts_with(net), "pod IP {ip} outside {cidr}");
    let page = c.wait_for("the page from the pod IP", WAIT, || {
        c.fetch_in("server", &format!("http://{ip}/"))
    });
    assert!(page.contains("<h1>Welcome to nginx!</h1>"), "{page}");
}

#[test]
fn liveness_failure_restarts_the_container_with_events() {
    let c = one_node();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 600"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/healthy"]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    c.wait_for("restartCount >= 1", WAIT, || {
        (c.restart_count("live", "c") >= 1).then_some(())
    });
    let reasons = c.wait_for("Unhealthy and Killing events", WAIT, || {
        let r = c.pod_event_reasons("live");
        (r.iter().any(|x| x == "Unhealthy") && r.iter().any(|x| x == "Killing")).then_some(r)
    });
    assert!(reasons.iter().any(|r| r == "Started"), "{reasons:?}");
}

#[test]
fn readiness_flips_ready() {
    let c = one_node();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ready}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "600"]
    readinessProbe:
      exec: {command: ["test", "-f", "/tmp/ready"]}
      periodSeconds: 1
"#,
    );
    c.wait_pod_phase("ready", "Running");
    let ready = || {
        c.field(
            &["get", "pod", "ready"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )
    };
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ready(), "False");
    c.k(&["exec", "ready", "--", "touch", "/tmp/ready"]);
    c.wait_for("Ready=True", WAIT, || (ready() == "True").then_some(()));
    c.k(&["exec", "ready", "--", "rm", "/tmp/ready"]);
    c.wait_for("Ready=False again", WAIT, || {
        (ready() == "False").then_some(())
    });
    assert_eq!(c.restart_count("ready", "c"), 0);
}

#[test]
fn crashing_container_shows_crashloopbackoff_with_growing_backoff() {
    let c = one_node();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "exit 3"]
"#,
    );
    // The harness runs agents with --restart-backoff-initial=1 --restart-backoff-max=8:
    // restarts come after about 1, 2, 4, 8 s.
    let mut seen: Vec<(i64, std::time::Instant)> = Vec::new();
    c.wait_for("four restarts", Duration::from_secs(120), || {
        let n = c.restart_count("crash", "c");
        if seen.last().is_none_or(|(last, _)| *last != n) {
            seen.push((n, std::time::Instant::now()));
        }
        (n >= 4).then_some(())
    });
    let waiting = c.wait_for("CrashLoopBackOff", WAIT, || {
        let st = c.container_status("crash", "c");
        let r = st["state"]["waiting"]["reason"].as_str()?.to_string();
        (r == "CrashLoopBackOff").then_some(st)
    });
    assert_eq!(
        waiting["lastState"]["terminated"]["exitCode"], 3,
        "{waiting}"
    );
    let gaps: Vec<Duration> = seen
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1))
        .collect();
    assert!(
        // The first gap includes the pod's start (and an image pull); compare restarts only.
        gaps.len() >= 3 && gaps[gaps.len() - 1] > gaps[1],
        "back-off does not grow: {gaps:?}"
    );
    assert!(c.pod_event_reasons("crash").iter().any(|r| r == "BackOff"));
}

#[test]
fn container_over_its_memory_limit_ends_oomkilled() {
    let c = one_node();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"]
    resources: {limits: {memory: 32Mi}}
"#,
    );
    c.wait_pod_phase("oom", "Failed");
    let st = c.container_status("oom", "c");
    assert_eq!(st["state"]["terminated"]["reason"], "OOMKilled", "{st}");
    assert_eq!(st["state"]["terminated"]["exitCode"], 137, "{st}");
}

#[test]
fn init_containers_run_in_order_before_the_main_one() {
    let c = one_node();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  restartPolicy: Never
  volumes: [{name: w, emptyDir: {}}]
  initContainers:
  - {name: one, image: busybox, command: ["sh", "-c", "sleep 1; echo one >> /w/order"], volumeMounts: [{name: w, mountPath: /w}]}
  - {name: two, image: busybox, command: ["sh", "-c", "echo two >> /w/order"], volumeMounts: [{name: w, mountPath: /w}]}
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "echo main >> /w/order; cat /w/order"], volumeMounts: [{name: w, mountPath: /w}]}
"#,
    );
    c.wait_pod_phase("init", "Succeeded");
    assert_eq!(c.k(&["logs", "init", "-c", "main"]), "one\ntwo\nmain\n");
    for n in ["one", "two"] {
        let st = c.container_status("init", n);
        assert_eq!(st["state"]["terminated"]["exitCode"], 0, "{n}: {st}");
    }
}

#[test]
fn configmap_and_secret_volumes_appear_and_updates_propagate() {
    let c = one_node();
    c.k(&["create", "configmap", "cfg", "--from-literal=color=blue"]);
    c.k(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=pass=s3cret",
    ]);
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: vols}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "600"]
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
  volumes:
  - {name: cfg, configMap: {name: cfg}}
  - {name: sec, secret: {secretName: sec, defaultMode: 0400}}
"#,
    );
    c.wait_pod_phase("vols", "Running");
    assert_eq!(
        c.k(&["exec", "vols", "--", "cat", "/etc/cfg/color"]),
        "blue"
    );
    assert_eq!(
        c.k(&["exec", "vols", "--", "cat", "/etc/sec/pass"]),
        "s3cret"
    );
    let mode = c.k(&[
        "exec",
        "vols",
        "--",
        "stat",
        "-L",
        "-c",
        "%a",
        "/etc/sec/pass",
    ]);
    assert_eq!(mode.trim(), "400");
    c.k(&[
        "patch",
        "configmap",
        "cfg",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ]);
    c.k(&[
        "patch",
        "secret",
        "sec",
        "-p",
        r#"{"stringData":{"pass":"n3w"}}"#,
    ]);
    c.wait_for(
        "configMap update in the volume",
        Duration::from_secs(120),
        || {
            (c.kubectl(&["exec", "vols", "--", "cat", "/etc/cfg/color"])
                .stdout
                == b"green")
                .then_some(())
        },
    );
    c.wait_for(
        "secret update in the volume",
        Duration::from_secs(120),
        || {
            (c.kubectl(&["exec", "vols", "--", "cat", "/etc/sec/pass"])
                .stdout
                == b"n3w")
                .then_some(())
        },
    );
}

#[test]
fn env_from_configmap_secret_and_downward_api() {
    let c = one_node();
    c.k(&[
        "create",
        "configmap",
        "envcm",
        "--from-literal=A=from-cm",
        "--from-literal=B=bee",
    ]);
    c.k(&[
        "create",
        "secret",
        "generic",
        "envsec",
        "--from-literal=S=from-secret",
    ]);
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: envs, labels: {tier: web}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "env | sort; echo expanded=$(MSG)"]
    resources: {limits: {memory: 64Mi}}
    envFrom: [{configMapRef: {name: envcm}, prefix: CM_}]
    env:
    - {name: A, valueFrom: {configMapKeyRef: {name: envcm, key: A}}}
    - {name: S, valueFrom: {secretKeyRef: {name: envsec, key: S}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
    - {name: MSG, value: "pod $(POD_NAME)"}
"#,
    );
    c.wait_pod_phase("envs", "Succeeded");
    let logs = c.k(&["logs", "envs"]);
    let node = c.node_name("server");
    for want in [
        "A=from-cm".to_string(),
        "CM_A=from-cm".into(),
        "CM_B=bee".into(),
        "S=from-secret".into(),
        "POD_NAME=envs".into(),
        "POD_NS=default".into(),
        format!("NODE={node}"),
        "TIER=web".into(),
        "MEM=67108864".into(),
        "expanded=pod envs".into(),
    ] {
        assert!(
            logs.lines().any(|l| l == want),
            "missing {want} in:\n{logs}"
        );
    }
    let ip = c.field(&["get", "pod", "envs"], "{.status.podIP}");
    assert!(logs.contains(&format!("POD_IP={ip}")), "{logs}");
}

#[test]
fn sidecar_shares_an_emptydir_and_localhost() {
    let c = one_node();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: sidecar}
spec:
  volumes: [{name: share, emptyDir: {}}]
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /share & wait"]
    volumeMounts: [{name: share, mountPath: /share}]
  - name: writer
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; echo from-writer > /data/index.html; while true; do sleep 1; done"]
    volumeMounts: [{name: share, mountPath: /data}]
"#,
    );
    c.wait_pod_ready("sidecar");
    assert_eq!(
        c.k(&[
            "exec",
            "sidecar",
            "-c",
            "web",
            "--",
            "cat",
            "/share/index.html"
        ]),
        "from-writer\n"
    );
    let got = c.wait_for("writer fetching web over localhost", WAIT, || {
        let out = c.kubectl(&[
            "exec",
            "sidecar",
            "-c",
            "writer",
            "--",
            "wget",
            "-qO-",
            "http://127.0.0.1:8080/",
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(got, "from-writer\n");
}

#[test]
fn security_context_run_as_user_and_read_only_root() {
    let c = one_node();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: sec}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "id -u; id -g; touch /rootfs-write 2>/dev/null && echo wrote || echo refused; touch /tmp/x && echo tmp-ok"]
    securityContext: {readOnlyRootFilesystem: true}
    volumeMounts: [{name: tmp, mountPath: /tmp}]
  volumes: [{name: tmp, emptyDir: {}}]
"#,
    );
    c.wait_pod_phase("sec", "Succeeded");
    let logs = c.k(&["logs", "sec"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines, ["1000", "1000", "refused", "tmp-ok"], "{logs}");
}

#[test]
fn container_cgroup_carries_the_memory_limit() {
    let c = one_node();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: cg}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "600"]
    resources: {requests: {memory: 32Mi, cpu: 100m}, limits: {memory: 64Mi, cpu: 500m}}
"#,
    );
    c.wait_pod_phase("cg", "Running");
    // Inside: runc mounts the container's own v1 memory cgroup.
    let inside = c.k(&[
        "exec",
        "cg",
        "--",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(inside.trim(), "67108864");
    // On the host: <node cgroup root>/pod<uid>/<container id> in the memory and cpu hierarchies.
    let uid = c.field(&["get", "pod", "cg"], "{.metadata.uid}");
    let cid = c.field(
        &["get", "pod", "cg"],
        "{.status.containerStatuses[0].containerID}",
    );
    let cid = cid.rsplit("://").next().unwrap_or_default().to_string();
    let rel = format!("{}/pod{uid}/{cid}", c.node("server").cgroup_root());
    let read = |f: &str| {
        let p = format!("/sys/fs/cgroup/{f}");
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    assert_eq!(
        read(&format!("memory{rel}/memory.limit_in_bytes")).trim(),
        "67108864"
    );
    // 500m at the default 100 ms period
    assert_eq!(read(&format!("cpu{rel}/cpu.cfs_quota_us")).trim(), "50000");
}
