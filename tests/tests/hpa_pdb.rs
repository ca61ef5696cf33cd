//! HorizontalPodAutoscaler and PodDisruptionBudget status with the real binary and kubectl.
//! No metrics API is served yet: the HPA says so like upstream (FailedGetResourceMetric) and
//! still enforces minReplicas. Each test runs a server with three simulated
//! nodes (`Cluster::start(3)`).

use k8slite_tests::cluster::Cluster;
use k8slite_tests::eventually;
use k8slite_tests::objects::{WAIT, events_of, json_of, wait_pods_ready};
use serde_json::Value;

fn condition(obj: &Value, t: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
}

#[test]
fn hpa_without_metrics_api_says_so_and_enforces_min() {
    let c = Cluster::start(3);
    let s = &c.server;
    s.k(&[
        "create",
        "deployment",
        "web",
        "--image",
        "nginx",
        "--replicas",
        "1",
    ]);
    s.k(&[
        "set",
        "resources",
        "deployment",
        "web",
        "--requests=cpu=100m",
    ]);
    wait_pods_ready(s, "app=web", 1);
    s.k(&[
        "autoscale",
        "deployment",
        "web",
        "--cpu-percent=50",
        "--min=2",
        "--max=5",
    ]);
    // Below minReplicas: scaled to 2 without metrics.
    wait_pods_ready(s, "app=web", 2);
    let hpa = eventually(WAIT, || {
        let h = json_of(s, &["get", "hpa.v2.autoscaling", "web"]);
        condition(&h, "ScalingActive")
            .filter(|c| c["reason"] == "FailedGetResourceMetric")
            .map(|_| h)
    })
    .unwrap_or_else(|| {
        panic!(
            "ScalingActive FailedGetResourceMetric: {}",
            s.k(&["get", "hpa", "web", "-o", "yaml"])
        )
    });
    let active = condition(&hpa, "ScalingActive").expect("ScalingActive");
    assert_eq!(active["status"], "False");
    assert_eq!(
        active["message"],
        "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)"
    );
    let able = condition(&hpa, "AbleToScale").expect("AbleToScale");
    assert_eq!(able["status"], "True");
    assert_eq!(able["reason"], "SucceededGetScale");
    assert_eq!(hpa["status"]["currentReplicas"], 2);
    assert_eq!(hpa["status"]["desiredReplicas"], 2);
    let events = events_of(s, "HorizontalPodAutoscaler", "web");
    assert!(
        events.iter().any(|(r, m)| r == "SuccessfulRescale"
            && m == "New size: 2; reason: Current number of replicas below Spec.MinReplicas"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(r, m)| r == "FailedGetResourceMetric"
            && m.starts_with(
                "failed to get cpu utilization: unable to get metrics for resource cpu"
            )),
        "{events:?}"
    );
}

const NEVER_READY: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: bad
  labels: {tier: mixed}
  annotations: {sim.k8slite.io/ready: "false"}
spec:
  containers:
  - name: web
    image: nginx
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
"#;

#[test]
fn pdb_status_follows_pods_and_controller_scale() {
    let c = Cluster::start(3);
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
    wait_pods_ready(s, "app=web", 3);
    s.k(&[
        "create",
        "pdb",
        "web-min",
        "--selector=app=web",
        "--min-available=2",
    ]);
    let pdb = eventually(WAIT, || {
        let p = json_of(s, &["get", "pdb", "web-min"]);
        (p["status"]["currentHealthy"] == 3).then_some(p)
    })
    .expect("pdb status");
    assert_eq!(pdb["status"]["desiredHealthy"], 2);
    assert_eq!(pdb["status"]["expectedPods"], 3);
    assert_eq!(pdb["status"]["disruptionsAllowed"], 1);
    assert_eq!(
        pdb["status"]["observedGeneration"],
        pdb["metadata"]["generation"]
    );
    let c = condition(&pdb, "DisruptionAllowed").expect("DisruptionAllowed");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("SufficientPods"))
    );

    // maxUnavailable as a percentage resolves against the Deployment's scale: 34% of 3 → 2
    // (rounded up), so 1 must stay healthy.
    s.k(&[
        "create",
        "pdb",
        "web-pct",
        "--selector=app=web",
        "--max-unavailable=34%",
    ]);
    let pdb = eventually(WAIT, || {
        let p = json_of(s, &["get", "pdb", "web-pct"]);
        (p["status"]["expectedPods"] == 3).then_some(p)
    })
    .expect("pdb percent status");
    assert_eq!(pdb["status"]["desiredHealthy"], 1);
    assert_eq!(pdb["status"]["disruptionsAllowed"], 2);

    // Readiness is followed: of two bare pods one never gets ready (its simulated
    // readiness probe fails), so a budget wanting one healthy allows no disruption.
    s.k(&["run", "ok", "--image", "nginx", "--labels", "tier=mixed"]);
    s.k_stdin(&["apply", "-f", "-"], Some(NEVER_READY));
    s.k(&[
        "create",
        "pdb",
        "mixed",
        "--selector=tier=mixed",
        "--min-available=1",
    ]);
    let pdb = eventually(WAIT, || {
        let p = json_of(s, &["get", "pdb", "mixed"]);
        (p["status"]["expectedPods"] == 2 && p["status"]["currentHealthy"] == 1).then_some(p)
    })
    .unwrap_or_else(|| panic!("mixed pdb: {}", s.k(&["get", "pdb", "mixed", "-o", "yaml"])));
    assert_eq!(pdb["status"]["desiredHealthy"], 1);
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
    let c = condition(&pdb, "DisruptionAllowed").expect("DisruptionAllowed");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("InsufficientPods"))
    );

    // A percentage over a pod without a controller cannot be resolved: SyncFailed.
    s.k(&["run", "lonely", "--image", "nginx", "--labels", "solo=yes"]);
    s.k(&[
        "create",
        "pdb",
        "solo",
        "--selector=solo=yes",
        "--min-available=50%",
    ]);
    let pdb = eventually(WAIT, || {
        let p = json_of(s, &["get", "pdb", "solo"]);
        condition(&p, "DisruptionAllowed")
            .filter(|c| c["reason"] == "SyncFailed")
            .map(|_| p)
    })
    .expect("SyncFailed");
    let c = condition(&pdb, "DisruptionAllowed").expect("DisruptionAllowed");
    assert_eq!(c["message"], "found no controllers for pod \"lonely\"");
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
}
