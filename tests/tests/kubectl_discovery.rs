//! Discovery and metadata through the real kubectl (1.32 default, plus 1.33 and 1.27).

use k8slite_tests::Server;

/// (name, shortnames, apiversion, namespaced, kind) as upstream's `kubectl api-resources` shows.
const EXPECTED: &[(&str, &str, &str, bool, &str)] = &[
    ("bindings", "", "v1", true, "Binding"),
    ("componentstatuses", "cs", "v1", false, "ComponentStatus"),
    ("configmaps", "cm", "v1", true, "ConfigMap"),
    ("endpoints", "ep", "v1", true, "Endpoints"),
    ("events", "ev", "v1", true, "Event"),
    ("limitranges", "limits", "v1", true, "LimitRange"),
    ("namespaces", "ns", "v1", false, "Namespace"),
    ("nodes", "no", "v1", false, "Node"),
    (
        "persistentvolumeclaims",
        "pvc",
        "v1",
        true,
        "PersistentVolumeClaim",
    ),
    ("persistentvolumes", "pv", "v1", false, "PersistentVolume"),
    ("pods", "po", "v1", true, "Pod"),
    ("podtemplates", "", "v1", true, "PodTemplate"),
    (
        "replicationcontrollers",
        "rc",
        "v1",
        true,
        "ReplicationController",
    ),
    ("resourcequotas", "quota", "v1", true, "ResourceQuota"),
    ("secrets", "", "v1", true, "Secret"),
    ("serviceaccounts", "sa", "v1", true, "ServiceAccount"),
    ("services", "svc", "v1", true, "Service"),
    (
        "customresourcedefinitions",
        "crd,crds",
        "apiextensions.k8s.io/v1",
        false,
        "CustomResourceDefinition",
    ),
    (
        "controllerrevisions",
        "",
        "apps/v1",
        true,
        "ControllerRevision",
    ),
    ("daemonsets", "ds", "apps/v1", true, "DaemonSet"),
    ("deployments", "deploy", "apps/v1", true, "Deployment"),
    ("replicasets", "rs", "apps/v1", true, "ReplicaSet"),
    ("statefulsets", "sts", "apps/v1", true, "StatefulSet"),
    (
        "selfsubjectreviews",
        "",
        "authentication.k8s.io/v1",
        false,
        "SelfSubjectReview",
    ),
    (
        "tokenreviews",
        "",
        "authentication.k8s.io/v1",
        false,
        "TokenReview",
    ),
    (
        "localsubjectaccessreviews",
        "",
        "authorization.k8s.io/v1",
        true,
        "LocalSubjectAccessReview",
    ),
    (
        "selfsubjectaccessreviews",
        "",
        "authorization.k8s.io/v1",
        false,
        "SelfSubjectAccessReview",
    ),
    (
        "selfsubjectrulesreviews",
        "",
        "authorization.k8s.io/v1",
        false,
        "SelfSubjectRulesReview",
    ),
    (
        "subjectaccessreviews",
        "",
        "authorization.k8s.io/v1",
        false,
        "SubjectAccessReview",
    ),
    (
        "horizontalpodautoscalers",
        "hpa",
        "autoscaling/v2",
        true,
        "HorizontalPodAutoscaler",
    ),
    ("cronjobs", "cj", "batch/v1", true, "CronJob"),
    ("jobs", "", "batch/v1", true, "Job"),
    (
        "certificatesigningrequests",
        "csr",
        "certificates.k8s.io/v1",
        false,
        "CertificateSigningRequest",
    ),
    ("leases", "", "coordination.k8s.io/v1", true, "Lease"),
    (
        "endpointslices",
        "",
        "discovery.k8s.io/v1",
        true,
        "EndpointSlice",
    ),
    ("events", "ev", "events.k8s.io/v1", true, "Event"),
    (
        "ingressclasses",
        "",
        "networking.k8s.io/v1",
        false,
        "IngressClass",
    ),
    ("ingresses", "ing", "networking.k8s.io/v1", true, "Ingress"),
    (
        "networkpolicies",
        "netpol",
        "networking.k8s.io/v1",
        true,
        "NetworkPolicy",
    ),
    (
        "runtimeclasses",
        "",
        "node.k8s.io/v1",
        false,
        "RuntimeClass",
    ),
    (
        "poddisruptionbudgets",
        "pdb",
        "policy/v1",
        true,
        "PodDisruptionBudget",
    ),
    (
        "clusterrolebindings",
        "",
        "rbac.authorization.k8s.io/v1",
        false,
        "ClusterRoleBinding",
    ),
    (
        "clusterroles",
        "",
        "rbac.authorization.k8s.io/v1",
        false,
        "ClusterRole",
    ),
    (
        "rolebindings",
        "",
        "rbac.authorization.k8s.io/v1",
        true,
        "RoleBinding",
    ),
    ("roles", "", "rbac.authorization.k8s.io/v1", true, "Role"),
    (
        "priorityclasses",
        "pc",
        "scheduling.k8s.io/v1",
        false,
        "PriorityClass",
    ),
    ("csidrivers", "", "storage.k8s.io/v1", false, "CSIDriver"),
    ("csinodes", "", "storage.k8s.io/v1", false, "CSINode"),
    (
        "storageclasses",
        "sc",
        "storage.k8s.io/v1",
        false,
        "StorageClass",
    ),
    (
        "volumeattachments",
        "",
        "storage.k8s.io/v1",
        false,
        "VolumeAttachment",
    ),
];

fn check_api_resources(s: &Server) {
    let out = s.k(&["api-resources", "-o", "wide", "--no-headers"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for (name, short, gv, namespaced, kind) in EXPECTED {
        let row = rows
            .iter()
            .find(|r| r.first() == Some(name) && r.contains(gv) && r.contains(kind))
            .unwrap_or_else(|| panic!("api-resources lacks {name} {gv}:\n{out}"));
        if !short.is_empty() {
            assert_eq!(row[1], *short, "short names of {name}: {row:?}");
        }
        let ns = if *namespaced { "true" } else { "false" };
        assert!(row.contains(&ns), "namespaced flag of {name}: {row:?}");
        // kubectl prints verbs as "[a b c]" (older) or "a,b,c" (newer).
        let verbs = row.join(" ").replace(['[', ']'], "").replace(',', " ");
        if *kind == "TokenReview" {
            assert!(verbs.contains(" create"), "verbs of {name}: {verbs}");
        } else if *name == "componentstatuses" {
            assert!(verbs.contains("get list"), "verbs of {name}: {verbs}");
        } else if *name == "namespaces" {
            assert!(
                verbs.contains("create delete get list patch update watch"),
                "verbs of {name}: {verbs}"
            );
        } else if *name != "bindings"
            && !gv.starts_with("authorization")
            && !gv.starts_with("authentication")
        {
            assert!(
                verbs.contains("create delete deletecollection get list patch update watch"),
                "verbs of {name}: {verbs}"
            );
        }
    }
    let short = s.k(&["api-resources", "--api-group=apps", "-o", "name"]);
    assert!(short.lines().any(|l| l == "deployments.apps"), "{short}");
}

/// `kubectl get componentstatuses` (issue 11): deprecated upstream, still served by 1.33 and
/// k3s, with upstream's columns and deprecation warning.
#[test]
fn component_statuses() {
    let s = Server::start();
    // The controllers and the scheduler start once this server holds the leader Lease.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let out = loop {
        let out = s.kubectl(&["get", "componentstatuses"]);
        let healthy = String::from_utf8_lossy(&out.stdout)
            .matches(" Healthy ")
            .count();
        if healthy == 3 || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "Warning: v1 ComponentStatus is deprecated in v1.19+"
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "STATUS", "MESSAGE", "ERROR"], "{stdout}");
    for name in ["controller-manager", "etcd-0", "scheduler"] {
        assert!(
            rows.iter().any(|r| r[..] == [name, "Healthy", "ok"]),
            "{name} healthy:\n{stdout}"
        );
    }
    let one = s.kubectl(&["get", "cs", "etcd-0", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&one.stdout).expect("json");
    assert_eq!(v["kind"], "ComponentStatus");
    assert_eq!(v["conditions"][0]["type"], "Healthy");
    assert_eq!(v["conditions"][0]["status"], "True");
    let missing = s.kubectl(&["get", "cs", "nothing"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("componentstatuses \"nothing\" not found"),
        "{missing:?}"
    );
}

#[test]
fn version_cluster_info_api_resources_and_versions() {
    let s = Server::start();
    let v = s.k(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&v).expect("version json");
    assert_eq!(v["serverVersion"]["major"], "1");
    assert!(
        v["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap_or_default()
            .contains("k8slite")
    );
    let info = s.k(&["cluster-info"]);
    assert!(
        info.contains(&format!("https://127.0.0.1:{}", s.port)),
        "{info}"
    );
    check_api_resources(&s);
    let versions = s.k(&["api-versions"]);
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "autoscaling/v1",
        "autoscaling/v2",
        "rbac.authorization.k8s.io/v1",
        "apiextensions.k8s.io/v1",
        "events.k8s.io/v1",
        "policy/v1",
        "storage.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "api-versions lacks {gv}:\n{versions}"
        );
    }
}

#[test]
fn older_and_newer_kubectl_discover_the_same() {
    let mut s = Server::start();
    for v in ["1.27", "1.33"] {
        s.kubectl_version = Some(v.to_string());
        check_api_resources(&s);
        let out = s.k(&["get", "ns"]);
        assert!(out.contains("kube-system"), "kubectl {v}: {out}");
    }
}

#[test]
fn unauthenticated_requests_get_401() {
    let s = Server::start();
    // A kubeconfig without the client certificate, and a token the server does not know
    // (without any credentials kubectl would prompt for a user name).
    let kc: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(s.kubeconfig()).expect("kubeconfig"))
            .expect("kubeconfig yaml");
    let mut anon = kc.clone();
    anon["users"][0]["user"] = serde_json::json!({"token": "not-a-valid-token"});
    let path = s.dir.path().join("anon.yaml");
    std::fs::write(&path, serde_json::to_string(&anon).expect("json"))
        .expect("write anon kubeconfig");
    let out = std::process::Command::new(k8slite_tests::kubectl_bin(None))
        .args(["get", "--raw", "/api/v1/namespaces", "--kubeconfig"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kubectl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthorized"), "{err}");
    // health endpoints stay open for probes
    let ok = std::process::Command::new(k8slite_tests::kubectl_bin(None))
        .args(["get", "--raw", "/livez", "--kubeconfig"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kubectl");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}
