//! E2E (issue 4): kubectl's streaming commands against pods on containerd: exec (plain and
//! `-i`), attach, port-forward, cp both ways, `logs -f`, `logs --previous`. They go kubectl →
//! API server (pods/exec, …) → the agent's kubelet API on :10250 → containerd's stream server.

use std::time::Duration;

use k8slite_tests::e2e::{E2eCluster, WAIT};

const LONG: Duration = Duration::from_secs(30);

fn nginx_pod(c: &E2eCluster, name: &str) {
    c.k(&["run", name, "--image", "nginx", "--port", "80"]);
    c.wait_pod_ready(name);
}

#[test]
fn exec_plain_and_with_stdin() {
    let c = E2eCluster::start(0);
    nginx_pod(&c, "web");
    let page = c.k(&[
        "exec",
        "web",
        "--",
        "cat",
        "/usr/share/nginx/html/index.html",
    ]);
    assert!(page.contains("<h1>Welcome to nginx!</h1>"), "{page}");
    // exit codes come back
    let out = c.kubectl(&["exec", "web", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    // -i: stdin reaches the process, and EOF ends it
    let got = c.k_stdin(
        &[
            "exec",
            "-i",
            "web",
            "--",
            "sh",
            "-c",
            "cat > /tmp/in; wc -c < /tmp/in; cat /tmp/in",
        ],
        Some("hello from stdin\n"),
    );
    assert_eq!(got, "17\nhello from stdin\n");
    // kubectl before 1.30 speaks SPDY to the API server: the same, including stdin's end.
    for v in ["1.27", "1.29"] {
        let out = c.kubectl_version_stdin(
            Some(v),
            &["exec", "-i", "web", "--", "sh", "-c", "wc -c; exit 3"],
            Some("hello from stdin\n"),
        );
        assert_eq!(out.status.code(), Some(3), "kubectl {v}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "17\n", "kubectl {v}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.trim() == "command terminated with exit code 3",
            "kubectl {v}: {err}"
        );
    }
}

#[test]
fn attach_reads_output_and_writes_stdin() {
    let c = E2eCluster::start(0);
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: echo}
spec:
  containers:
  - name: c
    image: busybox
    stdin: true
    command: ["sh", "-c", "echo started; while read l; do echo got-$l; done"]
"#,
    );
    c.wait_pod_phase("echo", "Running");
    let mut s = c.stream(&["attach", "-i", "echo"], true);
    std::thread::sleep(Duration::from_secs(1));
    s.send("ping\n");
    s.wait_line(LONG, |l| l == "got-ping");
    s.send("pong\n");
    s.wait_line(LONG, |l| l == "got-pong");
}

#[test]
fn port_forward_then_fetch_locally() {
    let c = E2eCluster::start(0);
    nginx_pod(&c, "web");
    let port = k8slite_tests::free_port();
    let mut s = c.stream(&["port-forward", "pod/web", &format!("{port}:80")], false);
    s.wait_line(LONG, |l| l.contains("Forwarding from 127.0.0.1"));
    for _ in 0..3 {
        let out = std::process::Command::new("busybox")
            .args(["wget", "-qO-", &format!("http://127.0.0.1:{port}/")])
            .output()
            .expect("busybox wget");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.contains("<h1>Welcome to nginx!</h1>"), "{out:?}");
    }
}

#[test]
fn cp_both_ways() {
    let c = E2eCluster::start(0);
    c.k(&["run", "box", "--image", "busybox", "--", "sleep", "600"]);
    c.wait_pod_phase("box", "Running");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("up.txt");
    let content: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&src, &content).expect("write");
    c.k(&["cp", &src.to_string_lossy(), "box:/tmp/up.txt"]);
    assert_eq!(c.k(&["exec", "box", "--", "cat", "/tmp/up.txt"]), content);
    c.k(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo from-pod > /tmp/down.txt",
    ]);
    let dst = dir.path().join("down.txt");
    c.k(&["cp", "box:/tmp/down.txt", &dst.to_string_lossy()]);
    assert_eq!(std::fs::read_to_string(&dst).expect("read"), "from-pod\n");
}

#[test]
fn logs_follow_streams_new_lines() {
    let c = E2eCluster::start(0);
    c.k(&[
        "run",
        "ticker",
        "--image",
        "busybox",
        "--",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
    ]);
    c.wait_pod_phase("ticker", "Running");
    let mut s = c.stream(&["logs", "-f", "ticker"], false);
    s.wait_line(LONG, |l| l == "tick-1");
    // lines written after kubectl attached arrive too
    let later = s.wait_line(LONG, |l| l.starts_with("tick-") && l != "tick-1");
    let n: u32 = later
        .trim_start_matches("tick-")
        .parse()
        .expect("tick number");
    s.wait_line(LONG, |l| l == format!("tick-{}", n + 2));
}

#[test]
fn logs_previous_after_a_restart() {
    let c = E2eCluster::start(0);
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: again}
spec:
  volumes: [{name: d, emptyDir: {}}]
  containers:
  - name: c
    image: busybox
    volumeMounts: [{name: d, mountPath: /d}]
    command: ["sh", "-c", "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo attempt-$n; sleep 3; exit 1"]
"#,
    );
    c.wait_for("a restart", WAIT, || {
        (c.restart_count("again", "c") >= 1).then_some(())
    });
    let prev = c.wait_for("logs --previous", WAIT, || {
        let out = c.kubectl(&["logs", "again", "--previous"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let n = c.restart_count("again", "c");
    assert!(prev.starts_with("attempt-"), "{prev}");
    let cur = c.wait_for("current attempt's log", WAIT, || {
        let out = c.kubectl(&["logs", "again"]);
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.starts_with("attempt-").then_some(s)
    });
    assert_ne!(prev, cur, "previous and current logs are the same");
    assert!(n >= 1);
}
