//! Traffic policies and source ranges: the `healthCheckNodePort` of an
//! `externalTrafficPolicy: Local` LoadBalancer (200 with the local endpoint count where the
//! Service has a local endpoint, 503 elsewhere, as kube-proxy serves it),
//! `internalTrafficPolicy: Local` (only the client node's own endpoint answers; no local
//! endpoint: the connection fails), and `loadBalancerSourceRanges` (the ingress answers a
//! source inside the range, not one outside).

use std::process::{Command, Stdio};

use k8slite_tests::e2e::WAIT;

use super::{Net, fetch_root, s};

/// One endpoint, pinned to node `server`, and the Services over it; plus a LoadBalancer over
/// the echo pods that admits only the test LAN's gateway (the root netns).
fn manifest(server: &str, gateway: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hc-ep, labels: {{app: hc}}}}
spec:
  nodeName: {server}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    ports: [{{containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
    command: ["sh", "-c", "hostname > /tmp/index.html; httpd -f -p 8080 -h /tmp & trap 'exit 0' TERM; wait"]
---
apiVersion: v1
kind: Service
metadata: {{name: hc-lb}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {{app: hc}}
  ports: [{{name: http, port: 8082, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: hc-itp}}
spec:
  internalTrafficPolicy: Local
  selector: {{app: hc}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo-itp}}
spec:
  internalTrafficPolicy: Local
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: src-lb}}
spec:
  type: LoadBalancer
  loadBalancerSourceRanges: ["{gateway}/32"]
  selector: {{app: echo}}
  ports: [{{name: http, port: 8083, targetPort: 8080}}]
"#
    )
}

/// Create the pods and Services of this module and wait for the endpoint.
pub(super) fn setup(net: &Net) {
    let gw = net.c.slot().gateway().to_string();
    net.c.apply(&manifest(&net.c.node_name("server"), &gw));
    net.c.wait_pod_ready("hc-ep");
}

/// HTTP status and body of `url` fetched from the root netns with busybox wget (which exits
/// non-zero on an error status and names it on stderr); `None` when nothing answered.
fn status_root(url: &str) -> Option<(u16, String)> {
    let out = Command::new("timeout")
        .args(["5", "busybox", "wget", "-qO-", url])
        .stdin(Stdio::null())
        .output()
        .expect("running busybox wget (package busybox-static)");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Some((200, body));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let code = err
        .split("HTTP/1.")
        .nth(1)
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())?;
    Some((code, body))
}

/// `healthCheckNodePort`: allocated by the API server, served on every node address: 200 with
/// `localEndpoints: 1` on the endpoint's node, 503 with `localEndpoints: 0` on the others; the
/// LoadBalancer ingress itself answers only on the endpoint's node.
pub(super) fn health_check_node_port(net: &Net) {
    let hc = net
        .c
        .field(&["get", "svc", "hc-lb"], "{.spec.healthCheckNodePort}");
    assert!(
        hc.parse::<u16>().is_ok_and(|p| p > 0),
        "hc-lb (LoadBalancer, externalTrafficPolicy Local) has no healthCheckNodePort: {hc:?}"
    );
    let server = net.c.node_name("server");
    for n in net.c.nodes() {
        let url = format!("http://{}:{hc}/", n.ip);
        let local = n.node_name == server;
        let (want, count) = if local { (200, 1) } else { (503, 0) };
        let (code, body) = net.c.wait_for(
            &format!("{url} answering {want} (node {})", n.node_name),
            WAIT,
            || status_root(&url).filter(|(c, _)| *c == want),
        );
        assert_eq!(code, want);
        if local {
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{url}: body is not JSON ({e}): {body:?}"));
            assert_eq!(v["localEndpoints"], count, "{url}: {body}");
            assert_eq!(v["service"]["name"], "hc-lb", "{url}: {body}");
        }
        // The LoadBalancer port: only the node with the endpoint answers (the others drop it,
        // so a load balancer following the health check never sends traffic there).
        let lb = format!("http://{}:8082/", n.ip);
        let got = fetch_root(&lb);
        if local {
            assert!(
                got.as_deref().is_some_and(|b| b.contains("hc-ep")),
                "{lb}: {got:?}"
            );
        } else {
            assert!(
                got.is_none(),
                "{lb} answered without a local endpoint: {got:?}"
            );
        }
    }
}

/// `internalTrafficPolicy: Local`: from every node only that node's own echo pod answers;
/// from a node without an endpoint of `hc-itp` the connection fails.
pub(super) fn internal_traffic_local(net: &Net) {
    let server = net.c.node_name("server");
    for (node, client) in &net.clients {
        let node_name = net.c.node_name(node);
        let local: Vec<String> = net
            .echo_pods()
            .iter()
            .filter(|p| s(&p["spec"]["nodeName"]) == node_name)
            .map(|p| s(&p["metadata"]["name"]))
            .collect();
        assert!(!local.is_empty(), "no echo pod on {node_name}");
        for _ in 0..8 {
            let b = net.fetch(client, "http://echo-itp/").unwrap_or_else(|| {
                panic!(
                    "{client}: echo-itp (iTP Local)\n{}",
                    net.diagnose(client, "echo-itp")
                )
            });
            assert!(
                local.iter().any(|p| b.trim() == p),
                "{client} on {node_name}: echo-itp answered from {b:?}, not its node's pod {local:?}"
            );
        }
        let got = net.fetch(client, "http://hc-itp/");
        if node_name == server {
            assert!(
                got.as_deref().is_some_and(|b| b.contains("hc-ep")),
                "{client}: hc-itp from the endpoint's node: {got:?}"
            );
        } else {
            assert!(
                got.is_none(),
                "{client} on {node_name}: hc-itp has no endpoint on this node but answered {got:?}"
            );
        }
    }
}

/// `loadBalancerSourceRanges`: src-lb admits only the root netns (the LAN gateway); a pod and
/// another node reach the same ingress addresses of echo-lb (no ranges) but not of src-lb.
pub(super) fn source_ranges(net: &Net) {
    let ips = net.c.wait_for("src-lb ingress addresses", WAIT, || {
        let ips = net.c.field(
            &["get", "svc", "src-lb"],
            "{.status.loadBalancer.ingress[*].ip}",
        );
        (ips.split_whitespace().count() == 3).then_some(ips)
    });
    let (_, pod) = &net.clients[1];
    for ip in ips.split_whitespace() {
        let url = format!("http://{ip}:8083/");
        net.c
            .wait_for(&format!("{url} answering the root netns"), WAIT, || {
                fetch_root(&url).filter(|b| b.contains("echo-"))
            });
        // The same client and address without source ranges answer: the ranges refused.
        assert!(
            net.fetch(pod, &format!("http://{ip}:8081/")).is_some(),
            "{pod}: echo-lb at {ip}:8081"
        );
        let got = net.fetch(pod, &url);
        assert!(
            got.is_none(),
            "{pod} (outside the source ranges) reached {url}: {got:?}"
        );
        let from_node = net.c.fetch_in("agent2", &url);
        assert!(
            from_node.is_none(),
            "node agent2 (outside the source ranges) reached {url}: {from_node:?}"
        );
        assert!(
            net.c
                .fetch_in("agent2", &format!("http://{ip}:8081/"))
                .is_some(),
            "node agent2: echo-lb at {ip}:8081"
        );
    }
}
