//! Writes through kubectl: patch types, label/annotate, scale, edit, dry-run, validation,
//! conflicts, finalizers, namespace deletion, watch and wait.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8slite_tests::{Server, eventually, kubectl_bin};

const DEPLOY: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
"spec":{"replicas":1,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},
"spec":{"containers":[{"name":"web","image":"nginx","ports":[{"containerPort":80}]},{"name":"side","image":"busybox"}]}}}}"#;

#[test]
fn patch_label_annotate_scale_and_edit() {
    let s = Server::start();
    s.k_stdin(&["create", "-f", "-"], Some(DEPLOY));
    // strategic: containers merge by name, so the sidecar stays
    s.k(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}}}"#,
    ]);
    let images = s.k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].image}",
    ]);
    assert_eq!(images.trim(), "nginx:2 busybox");
    // merge: lists are replaced
    s.k(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"annotations":{"m":"1"}}}"#,
    ]);
    // json patch
    s.k(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/1/image","value":"busybox:2"}]"#,
    ]);
    let images = s.k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].image}",
    ]);
    assert_eq!(images.trim(), "nginx:2 busybox:2");
    let bad = s.k_err(
        &[
            "patch",
            "deploy",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/spec/nope"}]"#,
        ],
        None,
    );
    assert!(bad.contains("Invalid") || bad.contains("invalid"), "{bad}");
    s.k(&["label", "deploy", "web", "team=a", "tier=b"]);
    s.k(&["annotate", "deploy", "web", "note=x"]);
    assert_eq!(
        s.k(&["get", "deploy", "-l", "team=a", "-o", "name"]).trim(),
        "deployment.apps/web"
    );
    s.k(&["label", "deploy", "web", "team-"]);
    s.k(&["annotate", "deploy", "web", "note-"]);
    let labels = s.k(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"]);
    assert!(
        !labels.contains("team") && labels.contains("tier"),
        "{labels}"
    );
    let ann = s.k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(!ann.contains("note"), "{ann}");
    let out = s.k(&["scale", "deploy", "web", "--replicas=4"]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    assert_eq!(
        s.k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .trim(),
        "4"
    );
    let scale = s.k(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]);
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("scale json");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=web");
    // kubectl edit with a scripted editor
    let editor = s.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/replicas: 4/replicas: 6/' \"$1\"\n",
    )
    .expect("editor");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .expect("chmod");
    let out = Command::new(kubectl_bin(None))
        .args(["edit", "deploy", "web"])
        .env("KUBECONFIG", s.kubeconfig())
        .env("EDITOR", &editor)
        .env("KUBE_EDITOR", &editor)
        .output()
        .expect("kubectl edit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web edited"));
    assert_eq!(
        s.k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .trim(),
        "6"
    );
}

#[test]
fn dry_run_validation_and_conflicts() {
    let s = Server::start();
    let out = s.k(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=b",
        "--dry-run=server",
    ]);
    assert!(
        out.contains("configmap/dry created (server dry run)"),
        "{out}"
    );
    let err = s.k_err(&["get", "cm", "dry"], None);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    // unknown field, strict (kubectl's default)
    let bad = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":"b"},"bogus":1}"#;
    let err = s.k_err(&["create", "-f", "-"], Some(bad));
    assert!(err.contains("unknown field \"bogus\""), "{err}");
    // invalid name → 422 naming the field
    let err = s.k_err(&["create", "configmap", "Bad_Name"], None);
    assert!(
        err.contains("metadata.name") && err.contains("Invalid value"),
        "{err}"
    );
    let raw = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/configmaps",
            "-f",
            "-",
        ],
        Some(r#"{"metadata":{"name":"Bad_Name"}}"#),
    );
    let raw_err = String::from_utf8_lossy(&raw.stderr);
    assert!(
        raw_err.contains("422") || raw_err.contains("is invalid"),
        "{raw_err}"
    );
    // A Service the node proxies could not program is refused with upstream's causes.
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  externalIPs: [foo]\n  ports:\n  - {port: 80}\n  - {port: 81, protocol: ICMP}\n";
    let err = s.k_err(&["create", "-f", "-"], Some(svc));
    for want in [
        "The Service \"bad\" is invalid",
        "spec.ports[0].name: Required value",
        "spec.ports[1].protocol: Unsupported value: \"ICMP\"",
        "spec.externalIPs[0]: Invalid value: \"foo\": must be a valid IP address",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    assert!(
        s.k_err(&["get", "svc", "bad"], None).contains("NotFound"),
        "the invalid Service was stored"
    );
    // stale resourceVersion → 409
    s.k(&["create", "configmap", "c", "--from-literal=a=1"]);
    let rv = s.k(&[
        "get",
        "cm",
        "c",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    s.k(&[
        "patch",
        "cm",
        "c",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    let stale = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c","resourceVersion":"{}"}},"data":{{"a":"3"}}}}"#,
        rv.trim()
    );
    let err = s.k_err(&["replace", "-f", "-"], Some(&stale));
    assert!(
        err.contains("Conflict") || err.contains("the object has been modified"),
        "{err}"
    );
}

#[test]
fn finalizers_namespace_deletion_and_wait() {
    let s = Server::start();
    s.k(&["create", "configmap", "held", "--from-literal=a=b"]);
    s.k(&[
        "patch",
        "cm",
        "held",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    s.k(&["delete", "cm", "held", "--wait=false"]);
    let ts = s.k(&[
        "get",
        "cm",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!ts.trim().is_empty(), "deletionTimestamp set");
    s.k(&[
        "patch",
        "cm",
        "held",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    assert!(s.kubectl(&["get", "cm", "held"]).status.code() != Some(0));
    // namespace deletion removes what is inside
    s.k(&["create", "ns", "doomed"]);
    s.k(&["create", "configmap", "x", "-n", "doomed"]);
    s.k(&["create", "deployment", "d", "-n", "doomed", "--image=nginx"]);
    let out = s.k(&["delete", "ns", "doomed", "--timeout=30s"]);
    assert!(out.contains("namespace \"doomed\" deleted"), "{out}");
    let gone = eventually(Duration::from_secs(20), || {
        (!s.kubectl(&["get", "ns", "doomed"]).status.success()).then_some(())
    });
    assert!(gone.is_some(), "namespace still there");
    assert!(
        s.k(&["get", "cm", "-n", "doomed", "-o", "name"])
            .trim()
            .is_empty()
    );
    let err = s.k_err(&["delete", "ns", "kube-system"], None);
    assert!(err.contains("may not be deleted"), "{err}");
    // creating in a terminating or missing namespace is refused
    let err = s.k_err(&["create", "configmap", "y", "-n", "doomed"], None);
    assert!(err.contains("not found"), "{err}");
    // wait --for=delete
    s.k(&["create", "configmap", "w"]);
    let waiter = Command::new(kubectl_bin(None))
        .args(["wait", "--for=delete", "configmap/w", "--timeout=30s"])
        .env("KUBECONFIG", s.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl wait");
    std::thread::sleep(Duration::from_millis(500));
    s.k(&["delete", "configmap", "w"]);
    let out = waiter.wait_with_output().expect("wait output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configmap/w condition met"));
}

#[test]
fn get_watch_shows_changes_as_they_happen() {
    let s = Server::start();
    s.k(&["create", "configmap", "watched", "--from-literal=a=1"]);
    let mut child = Command::new(kubectl_bin(None))
        .args(["get", "configmaps", "-w", "--output-watch-events"])
        .env("KUBECONFIG", s.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let expect = |want: &str, seen: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push(l.clone());
                if l.contains(want) {
                    return;
                }
            }
        }
        panic!("kubectl get -w never showed {want:?}; saw {seen:?}");
    };
    expect("watched", &mut seen);
    s.k(&["create", "configmap", "later"]);
    expect("ADDED", &mut seen);
    s.k(&[
        "patch",
        "cm",
        "later",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"x":"y"}}"#,
    ]);
    expect("MODIFIED", &mut seen);
    s.k(&["delete", "cm", "later"]);
    expect("DELETED", &mut seen);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen[0]
            .split_whitespace()
            .collect::<Vec<_>>()
            .starts_with(&["EVENT", "NAME", "DATA", "AGE"]),
        "{seen:?}"
    );
}

#[test]
fn metrics_deletecollection_and_eviction() {
    let s = Server::start();
    for n in ["a", "b", "c"] {
        s.k(&["create", "configmap", n, "--from-literal=k=v"]);
        s.k(&["label", "cm", n, "batch=x"]);
    }
    s.k(&["create", "configmap", "keep"]);
    let out = s.k(&["delete", "cm", "-l", "batch=x"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let left = s.k(&["get", "cm", "-o", "name"]);
    assert!(
        left.contains("configmap/keep") && !left.contains("configmap/a"),
        "{left}"
    );
    // deletecollection through the API itself
    s.k(&["create", "configmap", "d1"]);
    s.k(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dd1",
    ]);
    assert!(
        !s.kubectl(&["get", "cm", "d1"]).status.success(),
        "deletecollection left d1"
    );
    // an eviction deletes an unbound pod
    s.k(&["run", "ev", "--image=busybox", "--restart=Never"]);
    let eviction = r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"ev","namespace":"default"}}"#;
    s.k_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/ev/eviction",
            "-f",
            "-",
        ],
        Some(eviction),
    );
    assert!(
        !s.kubectl(&["get", "pod", "ev"]).status.success(),
        "evicted pod still there"
    );
    let metrics = s.k(&["get", "--raw", "/metrics"]);
    for m in [
        "apiserver_request_total{",
        "apiserver_request_duration_seconds_bucket{",
        "k8slite_store_revision ",
        "k8slite_store_size_bytes ",
        "apiserver_registered_watchers ",
    ] {
        assert!(metrics.contains(m), "metrics lack {m}");
    }
    assert!(
        metrics.contains(r#"verb="create",resource="configmaps",code="201""#),
        "per verb/resource/code counts"
    );
    for ep in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(s.k(&["get", "--raw", ep]).trim(), "ok", "{ep}");
    }
}

#[test]
fn versions_sharing_storage_convert() {
    let s = Server::start();
    let hpa = r#"{"apiVersion":"autoscaling/v1","kind":"HorizontalPodAutoscaler","metadata":{"name":"h"},
        "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"web"},"minReplicas":1,"maxReplicas":4,"targetCPUUtilizationPercentage":60}}"#;
    s.k_stdin(&["create", "-f", "-"], Some(hpa));
    let v2: serde_json::Value = serde_json::from_str(&s.k(&[
        "get",
        "--raw",
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/h",
    ]))
    .expect("v2 json");
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    let v1: serde_json::Value = serde_json::from_str(&s.k(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
    ]))
    .expect("v1 list");
    assert_eq!(v1["items"][0]["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["items"][0]["spec"]["targetCPUUtilizationPercentage"], 60);
    assert!(s.k(&["get", "hpa"]).contains("Deployment/web"));
    let ev = r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"e1"},"involvedObject":{"kind":"Pod","name":"p","namespace":"default"},
        "reason":"Tested","message":"converted","type":"Normal","count":1,"source":{"component":"test"}}"#;
    s.k_stdin(&["create", "-f", "-"], Some(ev));
    let e: serde_json::Value = serde_json::from_str(&s.k(&[
        "get",
        "--raw",
        "/apis/events.k8s.io/v1/namespaces/default/events/e1",
    ]))
    .expect("events.k8s.io json");
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["regarding"]["name"], "p");
    assert_eq!(e["note"], "converted");
    let core = s.k(&["get", "events", "--no-headers"]);
    assert!(
        core.contains("Tested") && core.contains("pod/p") && core.contains("converted"),
        "{core}"
    );
}

/// `kubectl certificate approve|deny` (issue 11): PUT on `certificatesigningrequests/approval`
/// changes only the approval conditions; the spec stays as created.
#[test]
fn certificate_approve_and_deny() {
    use base64::Engine as _;
    let s = Server::start();
    let (req, _keys) = k8slite_pki::node_cert_request("csr-node", &[]).expect("a CSR");
    let b64 = base64::engine::general_purpose::STANDARD.encode(req.client_csr.as_bytes());
    for name in ["to-approve", "to-deny"] {
        let manifest = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {b64}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n"
        );
        s.k_stdin(&["apply", "-f", "-"], Some(&manifest));
    }
    let out = s.k(&["certificate", "approve", "to-approve"]);
    assert_eq!(
        out.trim(),
        "certificatesigningrequest.certificates.k8s.io/to-approve approved"
    );
    let out = s.k(&["certificate", "deny", "to-deny"]);
    assert_eq!(
        out.trim(),
        "certificatesigningrequest.certificates.k8s.io/to-deny denied"
    );
    let approved: serde_json::Value =
        serde_json::from_str(&s.k(&["get", "csr", "to-approve", "-o", "json"])).expect("json");
    let c = &approved["status"]["conditions"][0];
    assert_eq!(
        (c["type"].as_str(), c["status"].as_str()),
        (Some("Approved"), Some("True"))
    );
    assert_eq!(approved["spec"]["request"], b64.as_str());
    let denied = s.k(&[
        "get",
        "csr",
        "to-deny",
        "-o",
        "jsonpath={.status.conditions[0].type}",
    ]);
    assert_eq!(denied, "Denied");
    let list = s.k(&["get", "csr"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("to-approve") && l.contains("Approved")),
        "{list}"
    );
}
