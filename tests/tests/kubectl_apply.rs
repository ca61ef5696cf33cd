//! `kubectl apply` (client-side three-way strategic merge, server-side), `diff`, and the read
//! paths of `kubectl get`.

use k8slite_tests::Server;

const APP_V1: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
        - containerPort: 8080
        env:
        - name: MODE
          value: prod
        - name: DEBUG
          value: "0"
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
data:
  password: czNjcmV0
"#;

fn write(s: &Server, name: &str, text: &str) -> String {
    let p = s.dir.path().join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.display().to_string()
}

#[test]
fn apply_unchanged_configured_and_three_way_removal() {
    let s = Server::start();
    let f = write(&s, "app.yaml", APP_V1);
    let out = s.k(&["apply", "-f", &f]);
    for l in [
        "deployment.apps/web created",
        "service/web created",
        "configmap/web-config created",
        "secret/web-secret created",
    ] {
        assert!(out.contains(l), "{out}");
    }
    let out = s.k(&["apply", "-f", &f]);
    for l in [
        "deployment.apps/web unchanged",
        "service/web unchanged",
        "configmap/web-config unchanged",
        "secret/web-secret unchanged",
    ] {
        assert!(out.contains(l), "{out}");
    }
    // Remove port 8080 and env DEBUG, change the image and the config map.
    let v2 = APP_V1
        .replace("        - containerPort: 8080\n", "")
        .replace("        - name: DEBUG\n          value: \"0\"\n", "")
        .replace("nginx:1.25", "nginx:1.26")
        .replace("greeting: hello", "greeting: hi");
    let f2 = write(&s, "app2.yaml", &v2);
    let diff = s.kubectl(&["diff", "-f", &f2]);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "kubectl diff exits 1 when there are differences: {}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let diff_out = String::from_utf8_lossy(&diff.stdout);
    assert!(
        diff_out.contains("-        image: nginx:1.25")
            && diff_out.contains("+        image: nginx:1.26"),
        "{diff_out}"
    );
    let out = s.k(&["apply", "-f", &f2]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("configmap/web-config configured"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    let ports = s.k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].ports[*].containerPort}",
    ]);
    assert_eq!(ports.trim(), "80");
    let env = s.k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[*].name}",
    ]);
    assert_eq!(env.trim(), "MODE");
    let generation = s.k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(generation.trim(), "2");
    let diff = s.kubectl(&["diff", "-f", &f2]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "no differences after apply: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

#[test]
fn get_output_formats_selectors_and_sorting() {
    let s = Server::start();
    s.k(&["create", "namespace", "other"]);
    for (name, ns, tier) in [
        ("b", "default", "front"),
        ("a", "default", "back"),
        ("c", "other", "front"),
    ] {
        s.k(&["create", "configmap", name, "-n", ns, "--from-literal=k=v"]);
        s.k(&[
            "label",
            "configmap",
            name,
            "-n",
            ns,
            &format!("tier={tier}"),
        ]);
    }
    let table = s.k(&["get", "configmaps"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, vec!["NAME", "DATA", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a ") && l.split_whitespace().nth(1) == Some("1")),
        "{table}"
    );
    let wide = s.k(&["get", "svc", "-o", "wide"]);
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ],
        "{wide}"
    );
    assert!(
        wide.contains("kubernetes") && wide.contains("10.43.0.1") && wide.contains("443/TCP"),
        "{wide}"
    );
    let json = s.k(&["get", "cm", "a", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["data"]["k"], "v");
    let yaml = s.k(&["get", "cm", "a", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: ConfigMap") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let jp = s.k(&[
        "get",
        "cm",
        "-l",
        "tier=front",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(jp.trim(), "b");
    let all = s.k(&[
        "get",
        "cm",
        "-A",
        "-l",
        "tier=front",
        "--no-headers",
        "-o",
        "custom-columns=NS:.metadata.namespace,N:.metadata.name",
    ]);
    let rows: Vec<String> = all
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(rows, vec!["default b", "other c"]);
    let fs = s.k(&[
        "get",
        "cm",
        "--field-selector",
        "metadata.name=a",
        "-o",
        "name",
    ]);
    assert_eq!(fs.trim(), "configmap/a");
    let sorted = s.k(&[
        "get",
        "cm",
        "-l",
        "tier",
        "--sort-by",
        ".metadata.name",
        "-o",
        "name",
    ]);
    assert_eq!(
        sorted.lines().collect::<Vec<_>>(),
        vec!["configmap/a", "configmap/b"]
    );
    let all_ns = s.k(&["get", "cm", "-A"]);
    assert!(
        all_ns
            .lines()
            .next()
            .unwrap_or_default()
            .starts_with("NAMESPACE"),
        "{all_ns}"
    );
    s.k(&["run", "p1", "--image=busybox", "--restart=Never"]);
    let header = |args: &[&str]| -> Vec<String> {
        s.k(args)
            .lines()
            .next()
            .unwrap_or_default()
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        header(&["get", "pods"]),
        vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(
        header(&["get", "pods", "-o", "wide"]),
        vec![
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    let row = s.k(&["get", "pod", "p1", "--no-headers"]);
    assert!(
        row.split_whitespace()
            .take(4)
            .eq(["p1", "0/1", "Pending", "0"]),
        "{row}"
    );
    s.k(&["create", "deployment", "d1", "--image=nginx"]);
    assert_eq!(
        header(&["get", "deploy", "-o", "wide"]),
        vec![
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(header(&["get", "ns"]), vec!["NAME", "STATUS", "AGE"]);
    let bad = s.k_err(&["get", "pods", "--field-selector", "spec.bogus=x"], None);
    assert!(bad.contains("field label not supported"), "{bad}");
}

#[test]
fn server_side_apply_and_conflicts() {
    let s = Server::start();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n";
    let out = s.k_stdin(&["apply", "--server-side", "-f", "-"], Some(cm));
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    let out = s.k_stdin(&["apply", "--server-side", "-f", "-"], Some(cm));
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    // Another manager changes the field; a plain server-side apply must report the conflict.
    s.k(&[
        "patch",
        "cm",
        "ssa",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
        "--field-manager",
        "other",
    ]);
    let err = s.k_err(&["apply", "--server-side", "-f", "-"], Some(cm));
    assert!(err.contains("conflict"), "{err}");
    let out = s.k_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(cm),
    );
    assert!(out.contains("serverside-applied"), "{out}");
    assert_eq!(
        s.k(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"])
            .trim(),
        "1"
    );
}
