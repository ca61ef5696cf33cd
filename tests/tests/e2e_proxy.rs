//! E2E (issue 10): the API server's `pods/proxy`, `services/proxy` and `nodes/proxy` on real
//! containerd, through `kubectl get --raw` and `kubectl proxy`. Pods are reached through the
//! kubelet API's tunnel of their node, so the second test runs the server without an agent
//! (its netns has no route to the pod network) and the nginx pod on a joined agent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use k8slite_tests::e2e::{E2eCluster, E2eOptions, WAIT};

const WELCOME: &str = "<h1>Welcome to nginx!</h1>";

/// An nginx pod `web` (label app=web, port 80) and a ClusterIP service `web` (80→80) with a
/// ready endpoint; returns the pod's node.
fn nginx_and_service(c: &E2eCluster) -> String {
    c.k(&[
        "run", "web", "--image", "nginx", "--port", "80", "--labels", "app=web",
    ]);
    c.wait_pod_ready("web");
    c.k(&["create", "service", "clusterip", "web", "--tcp=80:80"]);
    c.wait_for("a ready endpoint of service web", WAIT, || {
        let ip = c.field(
            &["get", "endpoints", "web"],
            "{.subsets[0].addresses[0].ip}",
        );
        (!ip.is_empty()).then_some(())
    });
    c.field(&["get", "pod", "web"], "{.spec.nodeName}")
}

/// `kubectl get --raw path`, retried until it succeeds (the endpoint or the pod's server may
/// need a moment).
fn raw(c: &E2eCluster, path: &str) -> String {
    c.wait_for(&format!("GET {path}"), WAIT, || {
        let out = c.kubectl(&["get", "--raw", path]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

/// `kubectl get --raw path` that fails; returns stderr.
fn raw_err(c: &E2eCluster, path: &str) -> String {
    let out = c.kubectl(&["get", "--raw", path]);
    assert!(
        !out.status.success(),
        "GET {path} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A service `idle` whose selector matches nothing, its Endpoints object present.
fn idle_service(c: &E2eCluster) {
    c.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: idle}
spec:
  selector: {app: nothing-matches}
  ports: [{port: 80, targetPort: 80}]
"#,
    );
    c.wait_for("the Endpoints object of service idle", WAIT, || {
        c.kubectl(&["get", "endpoints", "idle"])
            .status
            .success()
            .then_some(())
    });
}

/// The pod, both service forms and the node's kubelet answer through the API server.
fn check_proxies(c: &E2eCluster, node: &str) {
    for path in [
        "/api/v1/namespaces/default/pods/web:80/proxy/",
        "/api/v1/namespaces/default/pods/web/proxy/",
        "/api/v1/namespaces/default/services/web:80/proxy/",
        "/api/v1/namespaces/default/services/http:web:80/proxy/",
        "/api/v1/namespaces/default/services/web:80-80/proxy/",
    ] {
        let page = raw(c, path);
        assert!(page.contains(WELCOME), "{path}: {page}");
    }
    let health = raw(c, &format!("/api/v1/nodes/{node}/proxy/healthz"));
    assert_eq!(health, "ok");
    // nginx's own 404 comes back (kubectl words a non-Status 404 as NotFound).
    let err = raw_err(
        c,
        "/api/v1/namespaces/default/pods/web:80/proxy/no-such-page",
    );
    assert!(err.contains("NotFound"), "{err}");
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; returns the status code and the whole response.
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to kubectl proxy");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (code, text)
}

#[test]
fn pods_services_and_nodes_through_the_api_server_and_kubectl_proxy() {
    let c = E2eCluster::start(0);
    let node = nginx_and_service(&c);
    assert_eq!(node, c.node_name("server"));
    check_proxies(&c, &node);

    // Upstream's errors.
    idle_service(&c);
    let err = raw_err(&c, "/api/v1/namespaces/default/services/idle:80/proxy/");
    assert!(
        err.contains("ServiceUnavailable")
            && err.contains(r#"no endpoints available for service "idle""#),
        "{err}"
    );
    let err = raw_err(&c, "/api/v1/namespaces/default/services/web:81/proxy/");
    assert!(
        err.contains(r#"no service port 81 found for service "web""#),
        "{err}"
    );
    let err = raw_err(&c, "/api/v1/namespaces/default/pods/nothere:80/proxy/");
    assert!(err.contains("NotFound"), "{err}");
    let err = raw_err(&c, "/api/v1/namespaces/default/services/nothere/proxy/");
    assert!(err.contains("NotFound"), "{err}");
    let err = raw_err(&c, "/api/v1/nodes/nothere/proxy/healthz");
    assert!(err.contains("NotFound"), "{err}");
    // Nothing listens on 81 in the pod: the node's dial error, as upstream words it.
    let err = raw_err(&c, "/api/v1/namespaces/default/pods/web:81/proxy/");
    assert!(
        err.contains("error trying to reach service: dial tcp") && err.contains(":81"),
        "{err}"
    );

    // Discovery lists the subresources.
    let v1: serde_json::Value =
        serde_json::from_str(&c.k(&["get", "--raw", "/api/v1"])).expect("/api/v1 JSON");
    let names: Vec<&str> = v1["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for sub in ["pods/proxy", "services/proxy", "nodes/proxy"] {
        assert!(
            names.contains(&sub),
            "{sub} missing from /api/v1: {names:?}"
        );
    }

    // kubectl proxy on a free port; plain HTTP from here.
    let mut proxy = c.stream(&["proxy", "--port=0"], false);
    let line = proxy.wait_line(Duration::from_secs(30), |l| {
        l.starts_with("Starting to serve on")
    });
    let port: u16 = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let (code, resp) = http(
        port,
        "GET",
        "/api/v1/namespaces/default/services/web:80/proxy/",
        "",
    );
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains(WELCOME), "{resp}");
    // Query strings pass; other methods reach the pod's server, which refuses POST to a static
    // file with its own page (the test image's httpd: 501; nginx: 405), not an API Status.
    let (code, resp) = http(
        port,
        "GET",
        "/api/v1/namespaces/default/pods/web/proxy/index.html?x=1",
        "",
    );
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains(WELCOME), "{resp}");
    let (code, resp) = http(
        port,
        "POST",
        "/api/v1/namespaces/default/services/web:80/proxy/index.html",
        "a=b",
    );
    assert!(code == 501 || code == 405, "{resp}");
    assert!(
        resp.contains("text/html") && !resp.contains(r#""kind":"Status""#),
        "{resp}"
    );
    // `…/proxy` without a slash redirects to `…/proxy/`.
    let (code, resp) = http(port, "GET", "/api/v1/namespaces/default/pods/web/proxy", "");
    assert_eq!(code, 301, "{resp}");
    assert!(
        resp.contains("/api/v1/namespaces/default/pods/web/proxy/"),
        "{resp}"
    );
    let (code, resp) = http(
        port,
        "GET",
        "/api/v1/namespaces/default/services/idle:80/proxy/",
        "",
    );
    assert_eq!(code, 503, "{resp}");
    assert!(resp.contains(r#""reason":"ServiceUnavailable""#), "{resp}");
}

#[test]
fn pods_on_an_agent_are_reached_through_its_kubelet_tunnel() {
    let c = E2eCluster::start_with(E2eOptions {
        embedded_agent: false,
        agents: vec!["agent1".into()],
        ..E2eOptions::default()
    });
    let node = nginx_and_service(&c);
    assert_eq!(node, c.node_name("agent1"));
    check_proxies(&c, &node);
}
