//! The eviction API against PodDisruptionBudgets, through the real binary and kubectl. The
//! budget's status is set by hand (the disruption controller keeps it in a running cluster).

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

fn set_budget(s: &Server, allowed: i64, observed_generation: i64) {
    s.k(&[
        "patch", "pdb", "web", "--subresource=status", "--type=merge", "-p",
        &format!(r#"{{"status":{{"disruptionsAllowed":{allowed},"currentHealthy":2,"desiredHealthy":2,"expectedPods":2,"observedGeneration":{observed_generation}}}}}"#),
    ]);
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
        "--min-available=1",
    ]);

    // no disruptions allowed → 429
    set_budget(&s, 0, 1);
    let out = evict(&s, "a");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    assert!(
        err.contains("TooManyRequests") || err.contains("429"),
        "{err}"
    );
    s.k(&["get", "pod", "a"]);

    // a status not yet observed for the current generation → 429 too
    set_budget(&s, 1, 0);
    let out = evict(&s, "a");
    assert!(!out.status.success(), "stale budget status must refuse");

    // one disruption allowed → 201, the pod goes, the budget is spent
    set_budget(&s, 1, 1);
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
    assert_eq!(
        s.k(&[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.disruptionsAllowed}"
        ]),
        "0"
    );
    assert!(
        s.k(&[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.disruptedPods}"
        ])
        .contains("\"a\"")
    );
    let out = evict(&s, "b");
    assert!(
        !out.status.success(),
        "the budget was spent by the first eviction"
    );

    // pods that are not running are evicted regardless
    s.k(&["run", "pending", "--image=nginx", "--labels=app=web"]);
    let out = evict(&s, "pending");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
