//! CustomResourceDefinitions: served once Established, with status subresource and printer
//! columns; custom objects created, listed, watched, patched, explained.

use std::time::Duration;

use k8slite_tests::{Server, eventually};

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Size, type: string, jsonPath: .spec.size}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    schema:
      openAPIV3Schema:
        type: object
        description: A widget.
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              size: {type: string, description: How big.}
              replicas: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
              phase: {type: string}
"#;

#[test]
fn custom_resources_end_to_end() {
    let s = Server::start();
    s.k_stdin(&["apply", "-f", "-"], Some(CRD));
    s.k(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=20s",
    ]);
    let res = eventually(Duration::from_secs(10), || {
        let out = s.kubectl(&["api-resources", "--api-group=example.com", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("widgets").then_some(text)
    })
    .expect("widgets discovered");
    assert!(res.contains("wd") && res.contains("Widget"), "{res}");
    let w = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: large\n  replicas: 1\n";
    let out = s.k_stdin(&["apply", "-f", "-"], Some(w));
    assert!(out.contains("widget.example.com/w1 created"), "{out}");
    let table = s.k(&["get", "widgets"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, vec!["NAME", "SIZE", "REPLICAS", "AGE"], "{table}");
    assert!(table.contains("w1") && table.contains("large"), "{table}");
    // watched: a kubectl watch sees the patch below as MODIFIED
    let watch =
        std::process::Command::new(k8slite_tests::kubectl_bin(s.kubectl_version.as_deref()))
            .args([
                "get",
                "widgets",
                "-w",
                "--output-watch-events",
                "--request-timeout=20s",
            ])
            .env("KUBECONFIG", s.kubeconfig())
            .env("HOME", s.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl get -w");
    std::thread::sleep(Duration::from_millis(700));
    s.k(&[
        "patch",
        "wd",
        "w1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"size":"small"}}"#,
    ]);
    std::thread::sleep(Duration::from_millis(700));
    // SIGTERM via kill(1) so kubectl flushes; then read what it printed
    let _ = std::process::Command::new("kill")
        .arg(watch.id().to_string())
        .status();
    let seen = String::from_utf8_lossy(&watch.wait_with_output().expect("watch output").stdout)
        .into_owned();
    assert!(
        seen.lines()
            .any(|l| l.starts_with("MODIFIED") && l.contains("w1") && l.contains("small")),
        "{seen}"
    );
    assert_eq!(
        s.k(&["get", "wd", "w1", "-o", "jsonpath={.spec.size}"])
            .trim(),
        "small"
    );
    // status subresource: the main resource ignores status, /status ignores spec
    s.k(&[
        "patch",
        "wd",
        "w1",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Ready"}}"#,
    ]);
    assert_eq!(
        s.k(&["get", "wd", "w1", "-o", "jsonpath={.status.phase}"])
            .trim(),
        ""
    );
    s.k(&[
        "patch",
        "wd",
        "w1",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Ready"},"spec":{"size":"huge"}}"#,
    ]);
    assert_eq!(
        s.k(&[
            "get",
            "wd",
            "w1",
            "-o",
            "jsonpath={.status.phase}/{.spec.size}"
        ])
        .trim(),
        "Ready/small"
    );
    s.k(&["scale", "widget", "w1", "--replicas=3"]);
    assert_eq!(
        s.k(&["get", "wd", "w1", "-o", "jsonpath={.spec.replicas}"])
            .trim(),
        "3"
    );
    let explain = s.k(&["explain", "widget.spec"]);
    assert!(
        explain.contains("What the widget should be") && explain.contains("size"),
        "{explain}"
    );
    // the structural schema decides: unknown fields rejected under kubectl's strict
    // validation, pruned when validation is off, wrong types refused with 422
    let unknown = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  size: big\n  colour: red\n";
    let err = s.k_err(&["apply", "-f", "-"], Some(unknown));
    assert!(err.contains("unknown field \"spec.colour\""), "{err}");
    s.k_stdin(&["apply", "--validate=false", "-f", "-"], Some(unknown));
    assert_eq!(
        s.k(&["get", "wd", "w2", "-o", "jsonpath={.spec}"]).trim(),
        r#"{"size":"big"}"#
    );
    let wrong = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w3\nspec:\n  replicas: many\n";
    let err = s.k_err(&["apply", "-f", "-"], Some(wrong));
    assert!(
        err.contains("spec.replicas") && err.contains("must be of type integer"),
        "{err}"
    );
    let strat = s.k_err(
        &[
            "patch",
            "wd",
            "w1",
            "--type",
            "strategic",
            "-p",
            r#"{"spec":{"size":"x"}}"#,
        ],
        None,
    );
    assert!(
        strat.contains("UnsupportedMediaType")
            || strat.contains("415")
            || strat.contains("not supported"),
        "{strat}"
    );
    s.k(&["delete", "crd", "widgets.example.com"]);
    let gone = eventually(Duration::from_secs(10), || {
        (!s.kubectl(&["get", "widgets"]).status.success()).then_some(())
    });
    assert!(
        gone.is_some(),
        "widgets still served after the CRD was deleted"
    );
}

#[test]
fn explain_built_in_types() {
    let s = Server::start();
    let out = s.k(&["explain", "deployment.spec.strategy"]);
    assert!(out.contains("KIND:") && out.contains("Deployment"), "{out}");
    assert!(
        out.contains("rollingUpdate") && out.contains("type"),
        "{out}"
    );
    let mut s2 = s;
    s2.kubectl_version = Some("1.27".into());
    let out = s2.k(&["explain", "pods.spec.containers.ports"]);
    assert!(out.contains("containerPort"), "{out}");
}
