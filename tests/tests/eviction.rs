//! The eviction API against PodDisruptionBudgets, through the real binary and kubectl, with the
//! disruption controller keeping the budgets' status (pods' status is set by hand: no nodes).

use std::time::Duration;

use k8slite_tests::{Server, eventually};

fn make_running_pod(s: &Server, name: &str) {
    s.k(&["run", name, "--image=nginx", "--labels=app=web"]);
    s.k(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
}

fn evict(s: &Server, name: &str) -> std::process::Output {
    let body = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{name}","namespace":"default"}}}}"#
    );
    let path = s.dir.path().join(format!("evict-{name}.json"));
    std::fs::write(&path, body).expect("write eviction body");
    s.kubectl(&[
        "create",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{name}/eviction"),
        "-f",
        &path.display().to_string(),
    ])
}

/// Wait until the disruption controller has observed generation `generation` of the budget
/// and allows `allowed` disruptions.
fn wait_budget(s: &Server, generation: i64, allowed: i64) {
    let want = format!("{generation} {allowed}");
    let got = eventually(Duration::from_secs(30), || {
        let out = s.k(&[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.observedGeneration} {.status.disruptionsAllowed}",
        ]);
        (out.trim() == want).then_some(())
    });
    assert!(
        got.is_some(),
        "disruption controller never reported {want}: {}",
        s.k(&["get", "pdb", "web", "-o", "yaml"])
    );
}

#[test]
fn eviction_honours_the_disruption_budget() {
    let s = Server::start();
    make_running_pod(&s, "a");
    make_running_pod(&s, "b");
    s.k(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=2",
    ]);

    // both pods needed → no disruption allowed → 429
    wait_budget(&s, 1, 0);
    let out = evict(&s, "a");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "eviction against a spent budget succeeded"
    );
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    assert!(
        err.contains("TooManyRequests") || err.contains("429"),
        "{err}"
    );
    s.k(&["get", "pod", "a"]);

    // one disruption allowed → 201, the pod goes, the budget is spent
    s.k(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":1}}"#,
    ]);
    wait_budget(&s, 2, 1);
    let out = evict(&s, "a");
    assert!(
        out.status.success(),
        "eviction refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("\"code\":201") || status.contains("Success"),
        "{status}"
    );
    eventually(Duration::from_secs(10), || {
        (!s.kubectl(&["get", "pod", "a"]).status.success()).then_some(())
    })
    .expect("evicted pod a is gone (it has no node, so it is deleted at once)");
    let out = evict(&s, "b");
    assert!(
        !out.status.success(),
        "the budget was spent by the first eviction"
    );
    s.k(&["get", "pod", "b"]);

    // pods that are not running are evicted regardless
    s.k(&["run", "pending", "--image=nginx", "--labels=app=web"]);
    let out = evict(&s, "pending");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
