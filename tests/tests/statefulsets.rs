//! StatefulSet controller against the real binary and kubectl: ordered creation (each pod only
//! after the previous one is Running and Ready), PVCs from volumeClaimTemplates, stable
//! names/labels/hostnames, ControllerRevisions, status, scale-down in reverse order.
//!
//! No node agent runs here: the test plays the kubelet and sets pod status with
//! `kubectl patch --subresource=status`.

use std::time::Duration;

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

fn json(s: &Server, args: &[&str]) -> Value {
    serde_json::from_str(&s.k(args)).expect("kubectl json")
}

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

/// Play the kubelet: the pod is Running and Ready.
fn make_ready(s: &Server, pod: &str) {
    let patch = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"},{"type":"ContainersReady","status":"True"}]}}"#;
    s.k(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    ]);
}

#[test]
fn statefulset_ordered_ready_pvcs_and_reverse_scale_down() {
    let s = Server::start();
    s.k_stdin(&["apply", "-f", "-"], Some(STS));

    for ord in 0..3 {
        let name = format!("web-{ord}");
        let want: Vec<String> = (0..=ord).map(|o| format!("web-{o}")).collect();
        let got = eventually(Duration::from_secs(20), || {
            let names = pod_names(&s);
            (names == want).then_some(names)
        });
        assert_eq!(
            got.as_ref(),
            Some(&want),
            "pods after web-{} became Ready; now {:?}; log:\n{}",
            ord.max(1) - 1,
            pod_names(&s),
            k8slite_tests::tail(&s.log(), 40)
        );
        // The claim exists for the pod, and nothing further is created while it is not Ready.
        let claim = format!("www-web-{ord}");
        let pvc = json(&s, &["get", "pvc", &claim, "-o", "json"]);
        assert_eq!(pvc["metadata"]["labels"]["app"], "web", "{pvc}");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(pod_names(&s), want, "no next pod before {name} is Ready");
        let pod = json(&s, &["get", "pod", &name, "-o", "json"]);
        assert_eq!(pod["spec"]["hostname"], name.as_str());
        assert_eq!(pod["spec"]["subdomain"], "nginx");
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
        make_ready(&s, &name);
    }

    // Status and history.
    let status = eventually(Duration::from_secs(20), || {
        let v = json(&s, &["get", "statefulset", "web", "-o", "json"]);
        (v["status"]["readyReplicas"] == 3 && v["status"]["currentReplicas"] == 3).then_some(v)
    })
    .expect("status readyReplicas 3, currentReplicas 3");
    let rev = status["status"]["updateRevision"]
        .as_str()
        .expect("updateRevision")
        .to_string();
    assert_eq!(status["status"]["currentRevision"], rev.as_str());
    assert_eq!(status["status"]["replicas"], 3);
    assert_eq!(status["status"]["updatedReplicas"], 3);
    assert_eq!(status["status"]["observedGeneration"], 1);
    let cr = json(&s, &["get", "controllerrevision", &rev, "-o", "json"]);
    assert_eq!(cr["revision"], 1);
    let pod0 = json(&s, &["get", "pod", "web-0", "-o", "json"]);
    assert_eq!(
        pod0["metadata"]["labels"]["controller-revision-hash"],
        rev.as_str()
    );
    let pvcs = s.k(&["get", "pvc", "-o", "name"]);
    for o in 0..3 {
        assert!(
            pvcs.contains(&format!("persistentvolumeclaim/www-web-{o}")),
            "{pvcs}"
        );
    }

    // Scale down to 1: web-2 goes, then web-1.
    s.k(&["scale", "statefulset", "web", "--replicas=1"]);
    let left = eventually(Duration::from_secs(20), || {
        let names = pod_names(&s);
        (names == ["web-0"]).then_some(names)
    });
    assert!(left.is_some(), "pods after scale-down: {:?}", pod_names(&s));
    // The delete events say in which order they went.
    let events = json(&s, &["get", "events.v1.events.k8s.io", "-o", "json"]);
    let items: Vec<&Value> = events["items"].as_array().into_iter().flatten().collect();
    let mut deletes: Vec<(String, String)> = items
        .iter()
        .filter(|e| e["reason"] == "SuccessfulDelete" && e["regarding"]["name"] == "web")
        .map(|e| {
            (
                e["eventTime"].as_str().unwrap_or_default().to_string(),
                e["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    deletes.sort();
    let notes: Vec<&str> = deletes.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        notes,
        [
            "delete Pod web-2 in StatefulSet web successful",
            "delete Pod web-1 in StatefulSet web successful"
        ],
        "{events}"
    );
    let creates: Vec<&str> = items
        .iter()
        .filter(|e| e["reason"] == "SuccessfulCreate")
        .filter_map(|e| e["note"].as_str())
        .collect();
    for want in [
        "create Pod web-0 in StatefulSet web successful",
        "create Pod web-2 in StatefulSet web successful",
        "create Claim www-web-0 Pod web-0 in StatefulSet web success",
    ] {
        assert!(creates.contains(&want), "{want} in {creates:?}");
    }
    // Claims are retained by default.
    assert!(s.k(&["get", "pvc", "-o", "name"]).contains("www-web-2"));
}

#[test]
fn statefulset_rolling_update_with_partition() {
    let s = Server::start();
    let yaml = STS.replace(
        "  replicas: 3\n",
        "  replicas: 3\n  podManagementPolicy: Parallel\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      partition: 1\n",
    );
    s.k_stdin(&["apply", "-f", "-"], Some(&yaml));
    let all = eventually(Duration::from_secs(20), || {
        let n = pod_names(&s);
        (n.len() == 3).then_some(n)
    });
    assert_eq!(
        all,
        Some(vec!["web-0".into(), "web-1".into(), "web-2".into()]),
        "Parallel creates all pods at once"
    );
    for o in 0..3 {
        make_ready(&s, &format!("web-{o}"));
    }
    let rev1 = eventually(Duration::from_secs(20), || {
        let v = json(&s, &["get", "statefulset", "web", "-o", "json"]);
        (v["status"]["readyReplicas"] == 3)
            .then(|| v["status"]["updateRevision"].as_str().map(str::to_string))
            .flatten()
    })
    .expect("ready");
    s.k(&["set", "image", "statefulset/web", "nginx=nginx:2"]);
    // web-2 is replaced at the new revision; once Ready, web-1; web-0 stays below the partition.
    let rev_of = |s: &Server, p: &str| -> Option<String> {
        let v = json(s, &["get", "pod", p, "-o", "json", "--ignore-not-found"]);
        v["metadata"]["labels"]["controller-revision-hash"]
            .as_str()
            .map(str::to_string)
    };
    let rev2 = eventually(Duration::from_secs(20), || {
        let out = s.k(&["get", "pod", "web-2", "-o", "json", "--ignore-not-found"]);
        if out.trim().is_empty() {
            return None;
        }
        let r = rev_of(&s, "web-2")?;
        (r != rev1).then_some(r)
    })
    .expect("web-2 recreated at the update revision");
    assert_eq!(
        rev_of(&s, "web-1").as_deref(),
        Some(rev1.as_str()),
        "web-1 waits for web-2"
    );
    make_ready(&s, "web-2");
    eventually(Duration::from_secs(20), || {
        let out = s.k(&["get", "pod", "web-1", "-o", "json", "--ignore-not-found"]);
        (!out.trim().is_empty() && rev_of(&s, "web-1").as_deref() == Some(rev2.as_str()))
            .then_some(())
    })
    .expect("web-1 updated after web-2 was Ready");
    make_ready(&s, "web-1");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        rev_of(&s, "web-0").as_deref(),
        Some(rev1.as_str()),
        "partition keeps web-0"
    );
    let v = json(&s, &["get", "statefulset", "web", "-o", "json"]);
    assert_eq!(v["status"]["updateRevision"], rev2.as_str());
    assert_eq!(v["status"]["currentRevision"], rev1.as_str());
    assert_eq!(v["status"]["updatedReplicas"], 2, "{}", v["status"]);
    let revs = s.k(&["get", "controllerrevisions", "-o", "name"]);
    assert_eq!(revs.lines().count(), 2, "{revs}");
}
