//! StatefulSet controller against the real binary and kubectl: ordered creation (each pod only
//! after the previous one is Running and Ready), PVCs from volumeClaimTemplates, stable
//! names/labels/hostnames, ControllerRevisions, status, scale-down in reverse order.
//!
//! The pods run on simulated nodes (`Cluster`: fake-runtime agents); readiness comes from
//! them (`sim.k8slite.io/ready: "false"` keeps a pod from ever becoming Ready).

use std::time::Duration;

use k8slite_tests::cluster::Cluster;
use k8slite_tests::objects::json;
use k8slite_tests::{Server, eventually};
use serde_json::Value;

const STS: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: nginx
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - port: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: nginx
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx
        volumeMounts:
        - name: www
          mountPath: /usr/share/nginx/html
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
"#;

fn pod_names(s: &Server) -> Vec<String> {
    let v = json(s, &["get", "pods", "-l", "app=web", "-o", "json"]);
    let mut names: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn ready_since(pod: &Value) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")?["lastTransitionTime"]
        .as_str()
        .map(str::to_string)
}

fn is_ready(s: &Server, pod: &str) -> bool {
    let v = json(s, &["get", "pod", pod, "-o", "json", "--ignore-not-found"]);
    v.is_object() && ready_since(&v).is_some()
}

/// Events about `name`, oldest first: (reason, note).
fn events_for(s: &Server, name: &str) -> Vec<(String, String)> {
    let events = json(s, &["get", "events.v1.events.k8s.io", "-o", "json"]);
    let mut v: Vec<(String, String, String)> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["eventTime"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, r, n)| (r, n)).collect()
}

#[test]
fn statefulset_ordered_ready_pvcs_and_reverse_scale_down() {
    let c = Cluster::start(3);
    let s = &c.server;

    // A set whose pods never become Ready stops at its first pod.
    let blocked = STS
        .replace("name: web\nspec:\n  serviceName", "name: blocked\nspec:\n  serviceName")
        .replace("app: web", "app: blocked")
        .replace(
            "    metadata:\n      labels:\n        app: blocked\n    spec:\n      containers:",
            "    metadata:\n      labels:\n        app: blocked\n      annotations:\n        sim.k8slite.io/ready: \"false\"\n    spec:\n      containers:",
        );
    // (The annotation fails readiness probes, so the container gets one.)
    let blocked = blocked.replace(
        "        image: nginx\n",
        "        image: nginx\n        readinessProbe:\n          exec:\n            command: [\"true\"]\n          periodSeconds: 1\n",
    );
    let blocked = &blocked[blocked.find("---").map_or(0, |i| i + 4)..];
    s.k_stdin(&["apply", "-f", "-"], Some(blocked));
    let running = eventually(Duration::from_secs(60), || {
        let v = json(
            s,
            &[
                "get",
                "pod",
                "blocked-0",
                "-o",
                "json",
                "--ignore-not-found",
            ],
        );
        (v["status"]["phase"] == "Running").then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "blocked-0 not Running; log:\n{}",
            k8slite_tests::tail(&s.log(), 40)
        )
    });
    assert!(
        ready_since(&running).is_none(),
        "blocked-0 must not be Ready"
    );
    std::thread::sleep(Duration::from_secs(3));
    let blocked_pods = s.k(&["get", "pods", "-l", "app=blocked", "-o", "name"]);
    assert_eq!(
        blocked_pods.trim(),
        "pod/blocked-0",
        "no second pod before the first is Ready"
    );

    // web: each pod after the previous one is Ready.
    s.k_stdin(&["apply", "-f", "-"], Some(STS));
    let all_ready = eventually(Duration::from_secs(60), || {
        (0..3)
            .all(|o| is_ready(s, &format!("web-{o}")))
            .then_some(())
    });
    assert!(
        all_ready.is_some(),
        "web pods not all Ready: {:?}; log:\n{}",
        pod_names(s),
        k8slite_tests::tail(&s.log(), 40)
    );
    for ord in 1..3 {
        let prev = json(
            s,
            &["get", "pod", &format!("web-{}", ord - 1), "-o", "json"],
        );
        let this = json(s, &["get", "pod", &format!("web-{ord}"), "-o", "json"]);
        let prev_ready = ready_since(&prev).expect("previous Ready");
        let created = this["metadata"]["creationTimestamp"]
            .as_str()
            .expect("created");
        assert!(
            created >= prev_ready.as_str(),
            "web-{ord} created {created} before web-{} was Ready ({prev_ready})",
            ord - 1
        );
    }
    let creates: Vec<String> = events_for(s, "web")
        .into_iter()
        .filter(|(r, n)| r == "SuccessfulCreate" && n.starts_with("create Pod"))
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        creates,
        [
            "create Pod web-0 in StatefulSet web successful",
            "create Pod web-1 in StatefulSet web successful",
            "create Pod web-2 in StatefulSet web successful"
        ]
    );
    let evs = events_for(s, "web");
    assert!(
        evs.iter()
            .any(|(_, n)| n == "create Claim www-web-0 Pod web-0 in StatefulSet web success"),
        "{evs:?}"
    );

    // Pod shape, claims.
    for ord in 0..3 {
        let name = format!("web-{ord}");
        let claim = format!("www-web-{ord}");
        let pvc = json(s, &["get", "pvc", &claim, "-o", "json"]);
        assert_eq!(pvc["metadata"]["labels"]["app"], "web", "{pvc}");
        let pod = json(s, &["get", "pod", &name, "-o", "json"]);
        assert_eq!(pod["spec"]["hostname"], name.as_str());
        assert_eq!(pod["spec"]["subdomain"], "nginx");
        assert!(pod["spec"]["nodeName"].is_string(), "scheduled: {pod}");
        assert_eq!(
            pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            name.as_str()
        );
        assert_eq!(
            pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            ord.to_string().as_str()
        );
        let vol = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "www")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(vol["persistentVolumeClaim"]["claimName"], claim.as_str());
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    }

    // Status and history.
    let status = eventually(Duration::from_secs(30), || {
        let v = json(s, &["get", "statefulset", "web", "-o", "json"]);
        (v["status"]["readyReplicas"] == 3 && v["status"]["currentReplicas"] == 3).then_some(v)
    })
    .expect("status readyReplicas 3, currentReplicas 3");
    let rev = status["status"]["updateRevision"]
        .as_str()
        .expect("updateRevision")
        .to_string();
    assert_eq!(status["status"]["currentRevision"], rev.as_str());
    assert_eq!(status["status"]["replicas"], 3);
    assert_eq!(status["status"]["availableReplicas"], 3);
    assert_eq!(status["status"]["updatedReplicas"], 3);
    assert_eq!(status["status"]["observedGeneration"], 1);
    let cr = json(s, &["get", "controllerrevision", &rev, "-o", "json"]);
    assert_eq!(cr["revision"], 1);
    let pod0 = json(s, &["get", "pod", "web-0", "-o", "json"]);
    assert_eq!(
        pod0["metadata"]["labels"]["controller-revision-hash"],
        rev.as_str()
    );
    let rollout = s.k(&["rollout", "status", "statefulset/web", "--timeout=30s"]);
    assert!(rollout.contains("roll out complete"), "{rollout}");

    // Scale down to 1: web-2 goes, then web-1.
    s.k(&["scale", "statefulset", "web", "--replicas=1"]);
    let left = eventually(Duration::from_secs(60), || {
        let names = pod_names(s);
        (names == ["web-0"]).then_some(names)
    });
    assert!(left.is_some(), "pods after scale-down: {:?}", pod_names(s));
    let deletes: Vec<String> = events_for(s, "web")
        .into_iter()
        .filter(|(r, _)| r == "SuccessfulDelete")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        deletes,
        [
            "delete Pod web-2 in StatefulSet web successful",
            "delete Pod web-1 in StatefulSet web successful"
        ]
    );
    // Claims are retained by default.
    assert!(s.k(&["get", "pvc", "-o", "name"]).contains("www-web-2"));
}

#[test]
fn statefulset_rolling_update_with_partition() {
    let c = Cluster::start(2);
    let s = &c.server;
    let yaml = STS.replace(
        "  replicas: 3\n",
        "  replicas: 3\n  podManagementPolicy: Parallel\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      partition: 1\n",
    );
    s.k_stdin(&["apply", "-f", "-"], Some(&yaml));
    let rev1 = eventually(Duration::from_secs(60), || {
        let v = json(s, &["get", "statefulset", "web", "-o", "json"]);
        (v["status"]["readyReplicas"] == 3)
            .then(|| v["status"]["updateRevision"].as_str().map(str::to_string))
            .flatten()
    })
    .expect("three Ready pods");
    s.k(&["set", "image", "statefulset/web", "nginx=nginx:2"]);
    let rev_of = |p: &str| -> Option<String> {
        let v = json(s, &["get", "pod", p, "-o", "json", "--ignore-not-found"]);
        v["metadata"]["labels"]["controller-revision-hash"]
            .as_str()
            .map(str::to_string)
    };
    let rev2 = eventually(Duration::from_secs(60), || {
        let r1 = rev_of("web-1")?;
        let r2 = rev_of("web-2")?;
        (r1 != rev1 && r1 == r2 && is_ready(s, "web-1")).then_some(r1)
    })
    .expect("web-2 and web-1 at the update revision");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        rev_of("web-0").as_deref(),
        Some(rev1.as_str()),
        "partition keeps web-0"
    );
    // Highest ordinal first, the next only after it was Ready again.
    let deletes: Vec<String> = events_for(s, "web")
        .into_iter()
        .filter(|(r, _)| r == "SuccessfulDelete")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        deletes,
        [
            "delete Pod web-2 in StatefulSet web successful",
            "delete Pod web-1 in StatefulSet web successful"
        ]
    );
    let v = json(s, &["get", "statefulset", "web", "-o", "json"]);
    assert_eq!(v["status"]["updateRevision"], rev2.as_str());
    assert_eq!(v["status"]["currentRevision"], rev1.as_str());
    assert_eq!(v["status"]["updatedReplicas"], 2, "{}", v["status"]);
    let revs = s.k(&["get", "controllerrevisions", "-o", "name"]);
    assert_eq!(revs.lines().count(), 2, "{revs}");
    // Lowering the partition finishes the rollout; the current revision follows.
    s.k(&[
        "patch",
        "statefulset",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    let done = eventually(Duration::from_secs(60), || {
        let v = json(s, &["get", "statefulset", "web", "-o", "json"]);
        (v["status"]["currentRevision"] == rev2.as_str() && v["status"]["readyReplicas"] == 3)
            .then_some(())
    });
    assert!(
        done.is_some(),
        "rollout not completed: {}",
        json(s, &["get", "statefulset", "web", "-o", "json"])["status"]
    );
}

#[test]
fn statefulset_adopts_an_orphan_pod() {
    let c = Cluster::start(1);
    let s = &c.server;
    // A bare pod with the set's labels and name exists before the set.
    s.k_stdin(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-0\n  labels:\n    app: web\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n",
        ),
    );
    let uid = json(s, &["get", "pod", "web-0", "-o", "json"])["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    eventually(Duration::from_secs(60), || {
        is_ready(s, "web-0").then_some(())
    })
    .expect("bare web-0 Ready");
    s.k_stdin(
        &["apply", "-f", "-"],
        Some(&STS.replace("replicas: 3", "replicas: 2")),
    );
    let pod = eventually(Duration::from_secs(30), || {
        let p = json(s, &["get", "pod", "web-0", "-o", "json"]);
        (p["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet").then_some(p)
    })
    .expect("web-0 adopted");
    assert_eq!(
        pod["metadata"]["uid"],
        uid.as_str(),
        "the same pod, not a new one"
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    // Being Ready, it lets web-1 follow.
    let got = eventually(Duration::from_secs(30), || {
        (pod_names(s).contains(&"web-1".to_string())).then_some(())
    });
    assert!(got.is_some(), "pods: {:?}", pod_names(s));
}
