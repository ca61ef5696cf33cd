//! Deployments with the real binary and the real kubectl: create, scale, rolling update within
//! maxSurge/maxUnavailable at every observed moment, rollout status/history/undo/pause/resume/
//! restart, Recreate, progress deadline, revision history limit.
//!
//! Every test runs a server with three simulated nodes (`Cluster::start(3)`: fake-runtime
//! agents, the real scheduler); a kube-rs watcher records the pods at every event to check
//! the rollout bounds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8slite_tests::cluster::Cluster;
use k8slite_tests::objects::{WAIT, events_of, json_of, wait_pods_ready};
use k8slite_tests::{Server, eventually};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

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

    /// Watch pods with `selector` in `default`; after every event, record a snapshot of the
    /// live (not terminal, not being deleted) pods: (total, ready, images).
    fn observe(&self, s: &Server, selector: &str) -> Arc<Mutex<Vec<Snapshot>>> {
        let c = self.rt().block_on(client(s));
        let out: Arc<Mutex<Vec<Snapshot>>> = Arc::default();
        let o2 = out.clone();
        let cfg = watcher::Config::default().labels(selector);
        self.rt().spawn(async move {
            let pods: Api<Pod> = Api::namespaced(c, "default");
            let mut live: BTreeMap<String, Pod> = BTreeMap::new();
            let mut listed = false;
            let mut stream = watcher::watcher(pods, cfg).boxed();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => {
                        live.insert(p.metadata.name.clone().unwrap_or_default(), p);
                    }
                    Ok(Event::Delete(p)) => {
                        live.remove(p.metadata.name.as_deref().unwrap_or_default());
                    }
                    Ok(Event::Init) => {
                        live.clear();
                        listed = false;
                    }
                    Ok(Event::InitDone) => listed = true,
                    Err(_) => {}
                }
                if !listed {
                    // A (re-)list in progress is not a moment of the cluster.
                    continue;
                }
                let active: Vec<&Pod> = live
                    .values()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        !matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        )
                    })
                    .collect();
                let ready = active
                    .iter()
                    .filter(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                let images: BTreeMap<String, usize> =
                    active.iter().fold(BTreeMap::new(), |mut m, p| {
                        let img = p
                            .spec
                            .as_ref()
                            .and_then(|s| s.containers.first())
                            .and_then(|c| c.image.clone())
                            .unwrap_or_default();
                        *m.entry(img).or_default() += 1;
                        m
                    });
                o2.lock().expect("snapshots").push(Snapshot {
                    total: active.len(),
                    ready,
                    images,
                });
            }
        });
        out
    }
}

#[derive(Clone, Debug)]
struct Snapshot {
    total: usize,
    ready: usize,
    images: BTreeMap<String, usize>,
}

fn replicasets(s: &Server, selector: &str) -> Vec<Value> {
    json_of(s, &["get", "rs", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn create_scale_and_events() {
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
    let pods = wait_pods_ready(s, "app=web", 3);
    let nodes: std::collections::BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(nodes.len(), 3, "3 pods spread over the 3 nodes: {nodes:?}");
    let rss = replicasets(s, "app=web");
    assert_eq!(rss.len(), 1, "one ReplicaSet: {rss:?}");
    let rs = &rss[0];
    let rs_name = rs["metadata"]["name"]
        .as_str()
        .expect("rs name")
        .to_string();
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .expect("pod-template-hash label");
    assert_eq!(rs_name, format!("web-{hash}"));
    assert!(
        hash.chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "hash {hash} in the safe alphabet"
    );
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"],
        "3"
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"],
        "4"
    );
    let owner = &rs["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Deployment");
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    for p in &pods {
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash);
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["name"],
            rs_name.as_str()
        );
        assert!(
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{rs_name}-")))
        );
    }
    let out = s.k(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = json_of(s, &["get", "deployment", "web"]);
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let conds = d["status"]["conditions"].as_array().expect("conditions");
    assert!(conds.iter().any(|c| c["type"] == "Available"
        && c["status"] == "True"
        && c["reason"] == "MinimumReplicasAvailable"));
    assert!(conds.iter().any(|c| c["type"] == "Progressing"
        && c["reason"] == "NewReplicaSetAvailable"
        && c["message"] == format!("ReplicaSet \"{rs_name}\" has successfully progressed.")));

    s.k(&["scale", "deployment", "web", "--replicas", "5"]);
    wait_pods_ready(s, "app=web", 5);
    s.k(&["scale", "deployment", "web", "--replicas", "2"]);
    wait_pods_ready(s, "app=web", 2);
    let d = eventually(WAIT, || {
        let d = json_of(s, &["get", "deployment", "web"]);
        (d["status"]["replicas"] == 2 && d["status"]["availableReplicas"] == 2).then_some(d)
    })
    .expect("deployment status at 2 replicas");
    assert_eq!(d["status"]["readyReplicas"], 2);

    let dep_events = events_of(s, "Deployment", "web");
    for msg in [
        format!("Scaled up replica set {rs_name} to 3 from 0"),
        format!("Scaled up replica set {rs_name} to 5 from 3"),
        format!("Scaled down replica set {rs_name} to 2 from 5"),
    ] {
        assert!(
            dep_events
                .iter()
                .any(|(r, m)| r == "ScalingReplicaSet" && *m == msg),
            "event {msg:?} in {dep_events:?}"
        );
    }
    let rs_events = events_of(s, "ReplicaSet", &rs_name);
    let created = rs_events
        .iter()
        .filter(|(r, m)| {
            r == "SuccessfulCreate" && m.starts_with(&format!("Created pod: {rs_name}-"))
        })
        .count();
    assert_eq!(created, 5, "one SuccessfulCreate per pod: {rs_events:?}");
    let deleted = rs_events
        .iter()
        .filter(|(r, m)| {
            r == "SuccessfulDelete" && m.starts_with(&format!("Deleted pod: {rs_name}-"))
        })
        .count();
    assert_eq!(deleted, 3, "one SuccessfulDelete per pod: {rs_events:?}");
    let described = s.k(&["describe", "deployment", "web"]);
    assert!(described.contains("ScalingReplicaSet"), "{described}");
}

const ROLLING: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
spec:
  replicas: 4
  selector:
    matchLabels: {app: roll}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}
  template:
    metadata:
      labels: {app: roll}
    spec:
      containers:
      - name: web
        image: nginx:1.26
"#;

#[test]
fn rolling_update_history_and_undo() {
    let c = Cluster::start(3);
    let s = &c.server;
    let bg = background();
    s.k_stdin(&["apply", "-f", "-"], Some(ROLLING));
    wait_pods_ready(s, "app=roll", 4);
    s.k(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    let first_rs = replicasets(s, "app=roll")[0]["metadata"]["name"]
        .as_str()
        .expect("rs")
        .to_string();
    let snaps = bg.observe(s, "app=roll");
    eventually(WAIT, || {
        (!snaps.lock().expect("snaps").is_empty()).then_some(())
    })
    .expect("observer started");

    s.k(&["set", "image", "deployment/roll", "web=nginx:1.27"]);
    let out = s.k(&["rollout", "status", "deployment/roll", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = wait_pods_ready(s, "app=roll", 4);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.27")
    );

    // maxSurge 1 / maxUnavailable 1 with 4 replicas: never more than 5 pods, never fewer than
    // 3 ready, at any observed moment.
    let seen = snaps.lock().expect("snaps").clone();
    let mut mixed = false;
    for (i, snap) in seen.iter().enumerate() {
        assert!(
            snap.total <= 5,
            "snapshot {i}: {} pods > replicas+maxSurge: {seen:?}",
            snap.total
        );
        assert!(
            snap.ready >= 3,
            "snapshot {i}: {} ready < replicas-maxUnavailable: {seen:?}",
            snap.ready
        );
        mixed |= snap.images.len() == 2;
    }
    assert!(
        mixed,
        "the update was observed rolling (old and new pods together): {seen:?}"
    );

    let rss = replicasets(s, "app=roll");
    assert_eq!(rss.len(), 2);
    let hist = s.k(&["rollout", "history", "deployment/roll"]);
    assert!(hist.contains("1 ") && hist.contains("2 "), "{hist}");
    let rev1 = s.k(&["rollout", "history", "deployment/roll", "--revision=1"]);
    assert!(rev1.contains("nginx:1.26"), "{rev1}");

    // Undo: kubectl copies revision 1's template back; the old ReplicaSet is re-used and
    // becomes revision 3.
    s.k(&["rollout", "undo", "deployment/roll"]);
    s.k(&["rollout", "status", "deployment/roll", "--timeout=90s"]);
    let pods = wait_pods_ready(s, "app=roll", 4);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.26")
    );
    let d = json_of(s, &["get", "deployment", "roll"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let rss = replicasets(s, "app=roll");
    assert_eq!(rss.len(), 2, "undo re-uses the old ReplicaSet: {rss:?}");
    let old = rss
        .iter()
        .find(|r| r["metadata"]["name"] == first_rs.as_str())
        .expect("first ReplicaSet still there");
    assert_eq!(
        old["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        old["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(old["spec"]["replicas"], 4);
    let hist = s.k(&["rollout", "history", "deployment/roll"]);
    assert!(
        hist.contains("2 ") && hist.contains("3 ") && !hist.contains("\n1 "),
        "{hist}"
    );
}

const RECREATE: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: rec
spec:
  replicas: 3
  selector:
    matchLabels: {app: rec}
  strategy:
    type: Recreate
  template:
    metadata:
      labels: {app: rec}
    spec:
      containers:
      - name: web
        image: nginx:1.26
"#;

#[test]
fn recreate_kills_before_creating() {
    let c = Cluster::start(3);
    let s = &c.server;
    let bg = background();
    s.k_stdin(&["apply", "-f", "-"], Some(RECREATE));
    wait_pods_ready(s, "app=rec", 3);
    let snaps = bg.observe(s, "app=rec");
    eventually(WAIT, || {
        (!snaps.lock().expect("snaps").is_empty()).then_some(())
    })
    .expect("observer started");
    s.k(&["set", "image", "deployment/rec", "web=nginx:1.27"]);
    s.k(&["rollout", "status", "deployment/rec", "--timeout=90s"]);
    let pods = wait_pods_ready(s, "app=rec", 3);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.27")
    );
    let seen = snaps.lock().expect("snaps").clone();
    assert!(
        seen.iter().all(|s| s.images.len() <= 1),
        "old and new pods never live together: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.total == 0),
        "all old pods were gone before new ones came: {seen:?}"
    );
}

#[test]
fn pause_resume_restart_and_history_limit() {
    let c = Cluster::start(3);
    let s = &c.server;
    s.k(&[
        "create",
        "deployment",
        "p",
        "--image",
        "nginx:1.25",
        "--replicas",
        "2",
    ]);
    s.k(&[
        "patch",
        "deployment",
        "p",
        "--type=merge",
        "-p",
        r#"{"spec":{"revisionHistoryLimit":1}}"#,
    ]);
    wait_pods_ready(s, "app=p", 2);
    s.k(&["rollout", "pause", "deployment/p"]);
    s.k(&["set", "image", "deployment/p", "nginx=nginx:1.26"]);
    let d = eventually(WAIT, || {
        let d = json_of(s, &["get", "deployment", "p"]);
        (d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(d)
    })
    .expect("paused deployment observed");
    let progressing = d["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Progressing").cloned())
        .expect("Progressing condition");
    assert_eq!(progressing["reason"], "DeploymentPaused");
    assert_eq!(progressing["status"], "Unknown");
    assert_eq!(
        replicasets(s, "app=p").len(),
        1,
        "paused: no new ReplicaSet"
    );
    s.k(&["rollout", "resume", "deployment/p"]);
    s.k(&["rollout", "status", "deployment/p", "--timeout=60s"]);
    let pods = wait_pods_ready(s, "app=p", 2);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.26")
    );

    s.k(&["rollout", "restart", "deployment/p"]);
    s.k(&["rollout", "status", "deployment/p", "--timeout=60s"]);
    let pods = wait_pods_ready(s, "app=p", 2);
    assert!(
        pods.iter()
            .all(|p| !p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_null())
    );
    // Three revisions so far, history limit 1: the current one plus one old.
    let rss = eventually(WAIT, || {
        let r = replicasets(s, "app=p");
        (r.len() == 2).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "revisionHistoryLimit 1 keeps 2 ReplicaSets: {}",
            s.k(&["get", "rs"])
        )
    });
    let revs: Vec<&str> = rss
        .iter()
        .filter_map(|r| r["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str())
        .collect();
    assert!(revs.contains(&"2") && revs.contains(&"3"), "{revs:?}");
}

const STUCK: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: stuck
spec:
  replicas: 2
  progressDeadlineSeconds: 3
  selector:
    matchLabels: {app: stuck}
  template:
    metadata:
      labels: {app: stuck}
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
fn progress_deadline_exceeded() {
    let c = Cluster::start(3);
    let s = &c.server;
    s.k_stdin(&["apply", "-f", "-"], Some(STUCK));
    let cond = eventually(WAIT, || {
        let d = json_of(s, &["get", "deployment", "stuck"]);
        d["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Progressing").cloned())
            .filter(|c| c["reason"] == "ProgressDeadlineExceeded")
    })
    .unwrap_or_else(|| {
        panic!(
            "ProgressDeadlineExceeded: {}\n{}",
            s.k(&["get", "deployment", "stuck", "-o", "yaml"]),
            s.k(&["get", "pods", "-o", "wide"])
        )
    });
    assert_eq!(cond["status"], "False");
    assert!(
        cond["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("has timed out progressing."))
    );
    let err = s.k_err(
        &["rollout", "status", "deployment/stuck", "--timeout=20s"],
        None,
    );
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    let d = json_of(s, &["get", "deployment", "stuck"]);
    let available = d["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Available").cloned())
        .expect("Available");
    assert_eq!(available["status"], "False");
    assert_eq!(available["reason"], "MinimumReplicasUnavailable");
    assert_eq!(d["status"]["unavailableReplicas"], 2);
}
