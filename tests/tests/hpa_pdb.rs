//! HorizontalPodAutoscaler and PodDisruptionBudget status with the real binary and kubectl.
//! No metrics API is served yet: the HPA says so like upstream (FailedGetResourceMetric) and
//! still enforces minReplicas. Until simulated nodes land on main, a stand-in "kubelet" in this
//! test marks pods Running/Ready through `pods/status`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8slite_tests::{Server, eventually};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn client(s: &Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Background tasks of a test (fake kubelet, observers), on their own runtime.
struct Background {
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn background() -> Background {
    Background {
        rt: Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
        ),
    }
}

impl Background {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime")
    }

    /// Mark every pod (but `stuck=true` ones) Running and Ready `delay` after it appears.
    fn fake_kubelet(&self, s: &Server, delay: Duration) {
        let kubeconfig_client = self.rt().block_on(client(s));
        self.rt().spawn(async move {
            let pods: Api<Pod> = Api::all(kubeconfig_client);
            let done: Arc<Mutex<HashSet<String>>> = Arc::default();
            let mut stream = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let pod = match ev {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => p,
                    _ => continue,
                };
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let stuck = pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("stuck"))
                    .is_some_and(|v| v == "true");
                if stuck
                    || pod.metadata.deletion_timestamp.is_some()
                    || !done.lock().expect("done").insert(uid)
                {
                    continue;
                }
                let api: Api<Pod> = Api::namespaced(
                    pods.clone().into_client(),
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                );
                let name = pod.metadata.name.clone().unwrap_or_default();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let now = k8s_openapi::jiff::Timestamp::now().to_string();
                    let patch = json!({"status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}
                    ]}});
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                });
            }
        });
    }
}

fn json_of(s: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.k(&a)).expect("kubectl json")
}

fn pods_of(s: &Server, selector: &str) -> Vec<Value> {
    json_of(s, &["get", "pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        && p["metadata"]["deletionTimestamp"].is_null()
}

/// Wait for exactly `n` live pods of `selector`, all Running and Ready.
fn wait_pods_ready(s: &Server, selector: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, || {
        let pods: Vec<Value> = pods_of(s, selector)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (pods.len() == n && pods.iter().all(running_ready)).then_some(pods)
    })
    .unwrap_or_else(|| {
        panic!(
            "{n} Running+Ready pods of {selector}; have:\n{}",
            s.k(&["get", "pods", "-l", selector, "-o", "wide"])
        )
    })
}

fn events_of(s: &Server, kind: &str, name: &str) -> Vec<(String, String)> {
    let ev = json_of(s, &["get", "events.events.k8s.io"]);
    ev["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn condition(obj: &Value, t: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
}

#[test]
fn hpa_without_metrics_api_says_so_and_enforces_min() {
    let s = Server::start_with(&[]);
    let bg = background();
    bg.fake_kubelet(&s, Duration::from_millis(100));
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
    wait_pods_ready(&s, "app=web", 1);
    s.k(&[
        "autoscale",
        "deployment",
        "web",
        "--cpu-percent=50",
        "--min=2",
        "--max=5",
    ]);
    // Below minReplicas: scaled to 2 without metrics.
    wait_pods_ready(&s, "app=web", 2);
    let hpa = eventually(WAIT, || {
        let h = json_of(&s, &["get", "hpa.v2.autoscaling", "web"]);
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
    let events = events_of(&s, "HorizontalPodAutoscaler", "web");
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

#[test]
fn pdb_status_follows_pods_and_controller_scale() {
    let s = Server::start();
    let bg = background();
    bg.fake_kubelet(&s, Duration::from_millis(100));
    s.k(&[
        "create",
        "deployment",
        "web",
        "--image",
        "nginx",
        "--replicas",
        "3",
    ]);
    wait_pods_ready(&s, "app=web", 3);
    s.k(&[
        "create",
        "pdb",
        "web-min",
        "--selector=app=web",
        "--min-available=2",
    ]);
    let pdb = eventually(WAIT, || {
        let p = json_of(&s, &["get", "pdb", "web-min"]);
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
        let p = json_of(&s, &["get", "pdb", "web-pct"]);
        (p["status"]["expectedPods"] == 3).then_some(p)
    })
    .expect("pdb percent status");
    assert_eq!(pdb["status"]["desiredHealthy"], 1);
    assert_eq!(pdb["status"]["disruptionsAllowed"], 2);

    // One pod not ready: web-min allows no disruption any more.
    let pods = pods_of(&s, "app=web");
    let name = pods[0]["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_string();
    s.k(&[
        "patch",
        "pod",
        &name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    let pdb = eventually(WAIT, || {
        let p = json_of(&s, &["get", "pdb", "web-min"]);
        (p["status"]["currentHealthy"] == 2).then_some(p)
    })
    .expect("pdb sees the unready pod");
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
        let p = json_of(&s, &["get", "pdb", "solo"]);
        condition(&p, "DisruptionAllowed")
            .filter(|c| c["reason"] == "SyncFailed")
            .map(|_| p)
    })
    .expect("SyncFailed");
    let c = condition(&pdb, "DisruptionAllowed").expect("DisruptionAllowed");
    assert_eq!(c["message"], "found no controllers for pod \"lonely\"");
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
}
