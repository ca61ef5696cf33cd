//! ResourceQuota status: `status.hard` mirrors the spec and `status.used` follows the objects
//! of the namespace as they are created and deleted.

use std::time::Duration;

use k8slite_tests::{Server, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn used(s: &Server, key: &str) -> String {
    let out = s.kubectl(&[
        "get",
        "resourcequota",
        "q",
        "-n",
        "team",
        "-o",
        &format!("jsonpath={{.status.used.{}}}", key.replace('.', "\\.")),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn count(s: &Server, kind: &str) -> String {
    s.k(&["get", kind, "-n", "team", "-o", "name"])
        .lines()
        .count()
        .to_string()
}

#[test]
fn quota_usage_follows_objects() {
    let s = Server::start();
    s.k(&["create", "namespace", "team"]);
    s.k_stdin(
        &["create", "-f", "-"],
        Some(
            r#"{"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"q","namespace":"team"},
"spec":{"hard":{"pods":"5","requests.cpu":"2","limits.memory":"1Gi","configmaps":"10","services":"3","services.nodeports":"2","count/deployments.apps":"4"}}}"#,
        ),
    );
    eventually(WAIT, || {
        let hard = s.k(&[
            "get",
            "quota",
            "q",
            "-n",
            "team",
            "-o",
            "jsonpath={.status.hard.pods}",
        ]);
        (hard.trim() == "5" && used(&s, "pods") == "0").then_some(())
    })
    .expect("status.hard copied and used computed");
    for name in ["a", "b"] {
        s.k_stdin(
            &["create", "-f", "-"],
            Some(&format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"team"}},
"spec":{{"containers":[{{"name":"c","image":"nginx","resources":{{"requests":{{"cpu":"250m","memory":"64Mi"}},"limits":{{"cpu":"250m","memory":"64Mi"}}}}}}]}}}}"#
            )),
        );
    }
    s.k(&["create", "configmap", "cm1", "-n", "team"]);
    s.k(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:80",
        "-n",
        "team",
    ]);
    s.k(&["create", "deployment", "d", "--image=nginx", "-n", "team"]);
    eventually(WAIT, || {
        (used(&s, "pods") == count(&s, "pods")
            && used(&s, "pods") == "2"
            && used(&s, "requests.cpu") == "500m"
            && used(&s, "limits.memory") == "128Mi"
            && used(&s, "configmaps") == count(&s, "configmaps")
            && used(&s, "services") == "1"
            && used(&s, "services.nodeports") == "1"
            && used(&s, "count/deployments.apps") == "1")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "usage after creating objects: {}",
            s.k(&[
                "get",
                "quota",
                "q",
                "-n",
                "team",
                "-o",
                "jsonpath={.status.used}"
            ])
        )
    });
    s.k(&["delete", "pod", "a", "-n", "team", "--wait=false"]);
    s.k(&["delete", "configmap", "cm1", "-n", "team"]);
    eventually(WAIT, || {
        (used(&s, "requests.cpu") == "250m" && used(&s, "configmaps") == count(&s, "configmaps"))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "usage after deleting: {}",
            s.k(&[
                "get",
                "quota",
                "q",
                "-n",
                "team",
                "-o",
                "jsonpath={.status.used}"
            ])
        )
    });
}
