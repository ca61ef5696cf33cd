//! E2E (issue 10): the cluster network on three nodes (a server with its embedded agent and two
//! agents, each in its own network namespace), once per backend (`vxlan`, `host-gw`): pod ↔ pod
//! across nodes with the client's IP preserved, ClusterIP from pods on every node, NodePort from
//! the root namespace on each node address, LoadBalancer through its ingress addresses,
//! `externalTrafficPolicy: Local` keeping the client's IP, session affinity, `kubectl expose`,
//! headless/StatefulSet names, SRV, PTR and ExternalName with busybox `nslookup`, zero failed
//! connections while endpoints churn and while an agent restarts, DNS answering while the
//! server is stopped, and a Service the proxy cannot program getting an Event. In submodules:
//! `healthCheckNodePort`, `internalTrafficPolicy: Local` and `loadBalancerSourceRanges`
//! ([`policy`]), stale UDP conntrack entries deleted when an endpoint goes away ([`udp`]),
//! routes restored after an agent restart ([`restore`]).
//!
//! busybox's `wget -T` segfaults on Debian 12's busybox 1.35: every fetch is wrapped in
//! `timeout` instead.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8slite_tests::e2e::{E2eCluster, E2eOptions, WAIT};
use serde_json::Value;

#[path = "e2e_network/policy.rs"]
mod policy;
#[path = "e2e_network/restore.rs"]
mod restore;
#[path = "e2e_network/udp.rs"]
mod udp;

const ECHO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  strategy: {rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 10
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      containers:
      - name: echo
        image: busybox
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
        command:
        - sh
        - -c
        - |
          mkdir -p /www/cgi-bin
          echo '#!/bin/sh' > /www/cgi-bin/ip
          echo 'echo "Content-Type: text/plain"; echo; echo "$REMOTE_ADDR $(hostname)"' >> /www/cgi-bin/ip
          chmod +x /www/cgi-bin/ip
          hostname > /www/index.html
          httpd -f -p 8080 -h /www &
          trap 'sleep 6; exit 0' TERM
          wait
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-np}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-lb}
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports: [{name: http, port: 8081, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-sticky}
spec:
  selector: {app: echo}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: echo.default.svc.cluster.local
---
apiVersion: v1
kind: Service
metadata: {name: web-h}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web-h
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: busybox
        ports: [{name: http, containerPort: 8080}]
        command: ["sh", "-c", "hostname > /tmp/index.html; httpd -f -p 8080 -h /tmp & trap 'exit 0' TERM; wait"]
"#;

fn client_pod(name: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: client}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: busybox, command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}}
"#
    )
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

struct Net {
    c: E2eCluster,
    /// Client pod name per logical node.
    clients: Vec<(String, String)>,
}

impl Net {
    fn exec(&self, pod: &str, script: &str) -> Option<String> {
        let out = self.c.kubectl(&["exec", pod, "--", "sh", "-c", script]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `wget` from inside `pod` (5 s limit).
    fn fetch(&self, pod: &str, url: &str) -> Option<String> {
        self.exec(pod, &format!("timeout 5 wget -qO- {url}"))
    }

    /// What a failed service fetch from `pod` looked like: the name lookup and a fetch by IP.
    fn diagnose(&self, pod: &str, svc: &str) -> String {
        let ip = self.c.field(&["get", "svc", svc], "{.spec.clusterIP}");
        let out = self
            .c
            .kubectl(&["exec", pod, "--", "sh", "-c", &format!(
                "cat /etc/resolv.conf; nslookup {svc}.default.svc.cluster.local 2>&1; timeout 5 wget -qO- http://{ip}/ 2>&1; echo rc=$?"
            )]);
        format!(
            "--- from {pod}: ---\n{}{}\n--- endpoints ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(
                &self
                    .c
                    .kubectl(&["get", "endpointslices", "-o", "wide"])
                    .stdout
            ),
        )
    }

    fn pod_ip(&self, pod: &str) -> String {
        self.c.field(&["get", "pod", pod], "{.status.podIP}")
    }

    fn echo_pods(&self) -> Vec<Value> {
        self.c
            .pods("app=echo")
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    }
}

/// From the root network namespace (the test LAN's gateway).
fn fetch_root(url: &str) -> Option<String> {
    let out = Command::new("timeout")
        .args(["5", "busybox", "wget", "-qO-", url])
        .stdin(Stdio::null())
        .output()
        .expect("running busybox wget (package busybox-static)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn start(backend: &str) -> Net {
    let c = E2eCluster::start_with(E2eOptions {
        agents: vec!["agent1".into(), "agent2".into()],
        server_flags: vec![format!("--network-backend={backend}")],
        ..E2eOptions::default()
    });
    // The backend in force is published on every node.
    for n in ["server", "agent1", "agent2"] {
        let name = c.node_name(n);
        let b = c.wait_for(&format!("backend annotation on {name}"), WAIT, || {
            let b = c.field(
                &["get", "node", &name],
                "{.metadata.annotations.network\\.k8slite\\.io/backend}",
            );
            (!b.is_empty()).then_some(b)
        });
        assert_eq!(b, backend, "node {name}");
    }
    let mut clients = Vec::new();
    for n in ["server", "agent1", "agent2"] {
        let pod = format!("client-{n}");
        c.apply(&client_pod(&pod, &c.node_name(n)));
        clients.push((n.to_string(), pod));
    }
    c.apply(ECHO);
    c.apply(SERVICES);
    for (_, p) in &clients {
        c.wait_pod_ready(p);
    }
    let net = Net { c, clients };
    policy::setup(&net);
    net.c.wait_for("3 ready echo pods, one per node", WAIT, || {
        let pods = net.echo_pods();
        let nodes: BTreeSet<String> = pods
            .iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .map(|p| s(&p["spec"]["nodeName"]))
            .collect();
        (nodes.len() == 3).then_some(())
    });
    net
}

/// Pod → pod across nodes, both ways, the receiver seeing the client pod's own IP.
fn pod_to_pod(net: &Net) {
    let echo = net.echo_pods();
    for (node, client) in &net.clients {
        let my_ip = net.pod_ip(client);
        let my_node = net.c.node_name(node);
        for p in echo.iter().filter(|p| s(&p["spec"]["nodeName"]) != my_node) {
            let ip = s(&p["status"]["podIP"]);
            let body = net
                .fetch(client, &format!("http://{ip}:8080/cgi-bin/ip"))
                .unwrap_or_else(|| {
                    panic!(
                        "{client} on {my_node} cannot reach pod {ip} on {}\n{}",
                        s(&p["spec"]["nodeName"]),
                        net.c.log_tails(30)
                    )
                });
            assert!(
                body.contains(&my_ip),
                "pod-to-pod traffic from {my_ip} was masqueraded: the server saw {body:?}"
            );
        }
    }
}

/// The ClusterIP (by DNS short name and FQDN) from every node, spread over all endpoints.
fn cluster_ip(net: &Net) {
    let want: BTreeSet<String> = net
        .echo_pods()
        .iter()
        .map(|p| s(&p["metadata"]["name"]))
        .collect();
    for (_, client) in &net.clients {
        let fqdn = net
            .fetch(client, "http://echo.default.svc.cluster.local/cgi-bin/ip")
            .unwrap_or_else(|| {
                panic!(
                    "{client}: echo's ClusterIP by FQDN\n{}\n{}",
                    net.diagnose(client, "echo"),
                    net.c.log_tails(30)
                )
            });
        assert!(
            want.iter().any(|w| fqdn.contains(w.as_str())),
            "{fqdn:?} names no echo pod"
        );
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            if let Some(b) = net.fetch(client, "http://echo/") {
                seen.insert(b.trim().to_string());
            }
            if seen == want {
                break;
            }
        }
        assert_eq!(
            seen, want,
            "{client}: not every endpoint answered through echo"
        );
    }
    // `kubernetes` reaches the API server.
    let (_, client) = &net.clients[1];
    let out = net
        .exec(
            client,
            "timeout 5 wget -qO- --no-check-certificate https://kubernetes.default.svc/livez 2>&1; echo \"rc=$?\"",
        )
        .unwrap_or_default();
    // busybox's TLS client and the API server share no cipher suite (the server's key is
    // ECDSA), so a TLS alert from the peer shows the API server answered; an anonymous request
    // that gets through is refused with 401/403.
    assert!(
        out.contains("rc=0")
            || out.contains("401")
            || out.contains("403")
            || out.contains("TLS error from peer"),
        "the kubernetes Service did not reach the API server: {out}"
    );
}

fn node_port(net: &Net, svc: &str) -> String {
    net.c
        .field(&["get", "svc", svc], "{.spec.ports[0].nodePort}")
}

fn node_ports(net: &Net) {
    let np = node_port(net, "echo-np");
    assert!(!np.is_empty(), "echo-np has no nodePort");
    for n in net.c.nodes() {
        let url = format!("http://{}:{np}/cgi-bin/ip", n.ip);
        let body = fetch_root(&url).unwrap_or_else(|| {
            panic!(
                "NodePort {url} from the root netns\n{}",
                net.c.log_tails(30)
            )
        });
        assert!(body.contains("echo-"), "{url}: {body:?}");
    }
    // externalTrafficPolicy: Local keeps the client's address and answers from the node's own
    // endpoint.
    let local = node_port(net, "echo-local");
    let gw = net.c.slot().gateway().to_string();
    for n in net.c.nodes() {
        let url = format!("http://{}:{local}/cgi-bin/ip", n.ip);
        let body = fetch_root(&url)
            .unwrap_or_else(|| panic!("eTP=Local NodePort {url}\n{}", net.c.log_tails(30)));
        assert!(
            body.contains(&gw),
            "{url}: the client address {gw} was not preserved: {body:?}"
        );
        let on_node: Vec<String> = net
            .echo_pods()
            .iter()
            .filter(|p| s(&p["spec"]["nodeName"]) == n.node_name)
            .map(|p| s(&p["metadata"]["name"]))
            .collect();
        assert!(
            on_node.iter().any(|p| body.contains(p.as_str())),
            "{url}: answered by a pod of another node: {body:?} (local: {on_node:?})"
        );
    }
}

fn load_balancer(net: &Net) {
    let ips = net.c.wait_for("echo-lb ingress addresses", WAIT, || {
        let ips = net.c.field(
            &["get", "svc", "echo-lb"],
            "{.status.loadBalancer.ingress[*].ip}",
        );
        (ips.split_whitespace().count() == 3).then_some(ips)
    });
    let node_ips: BTreeSet<String> = net.c.nodes().iter().map(|n| n.ip.to_string()).collect();
    for ip in ips.split_whitespace() {
        assert!(node_ips.contains(ip), "ingress {ip} is no node address");
        let url = format!("http://{ip}:8081/");
        let body = fetch_root(&url)
            .unwrap_or_else(|| panic!("LoadBalancer {url}\n{}", net.c.log_tails(30)));
        assert!(body.contains("echo-"), "{url}: {body:?}");
    }
}

fn affinity_and_expose(net: &Net) {
    let (_, client) = &net.clients[0];
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let b = net
            .fetch(client, "http://echo-sticky/")
            .unwrap_or_else(|| panic!("echo-sticky\n{}", net.c.log_tails(30)));
        seen.insert(b.trim().to_string());
    }
    assert_eq!(seen.len(), 1, "ClientIP affinity spread over {seen:?}");
    net.c.k(&[
        "expose",
        "deployment",
        "echo",
        "--name=echo-exposed",
        "--port=80",
        "--target-port=8080",
    ]);
    let want: BTreeSet<String> = net
        .echo_pods()
        .iter()
        .map(|p| s(&p["metadata"]["name"]))
        .collect();
    let mut seen = BTreeSet::new();
    net.c.wait_for(
        "every echo pod answering through echo-exposed",
        WAIT,
        || {
            if let Some(b) = net.fetch(client, "http://echo-exposed/") {
                seen.insert(b.trim().to_string());
            }
            (seen == want).then_some(())
        },
    );
}

fn lookup(net: &Net, client: &str, args: &str) -> String {
    net.exec(client, &format!("nslookup {args} 2>&1"))
        .unwrap_or_else(|| panic!("{client}: nslookup {args} failed\n{}", net.c.log_tails(30)))
}

fn dns(net: &Net) {
    let (_, client) = &net.clients[2];
    let cluster_ip = net.c.field(&["get", "svc", "echo"], "{.spec.clusterIP}");
    let out = lookup(net, client, "echo.default.svc.cluster.local");
    assert!(out.contains(&cluster_ip), "A echo: {out}");
    net.c.wait_for("web-0 and web-1 running", WAIT, || {
        let ips: Vec<String> = ["web-0", "web-1"].iter().map(|p| net.pod_ip(p)).collect();
        ips.iter().all(|i| !i.is_empty()).then_some(())
    });
    net.c.wait_pod_ready("web-0");
    net.c.wait_pod_ready("web-1");
    let web0 = net.pod_ip("web-0");
    let web1 = net.pod_ip("web-1");
    let out = net.c.wait_for("headless web-h lists both pods", WAIT, || {
        let out = lookup(net, client, "web-h.default.svc.cluster.local");
        (out.contains(&web0) && out.contains(&web1)).then_some(out)
    });
    assert!(!out.contains(&cluster_ip), "{out}");
    let out = lookup(net, client, "web-0.web-h.default.svc.cluster.local");
    assert!(out.contains(&web0) && !out.contains(&web1), "web-0: {out}");
    let out = lookup(
        net,
        client,
        "-type=SRV _http._tcp.web-h.default.svc.cluster.local",
    );
    assert!(
        out.contains("web-0.web-h.default.svc.cluster.local")
            && out.contains("web-1.web-h.default.svc.cluster.local")
            && out.contains("8080"),
        "SRV: {out}"
    );
    let out = lookup(net, client, &cluster_ip);
    assert!(out.contains("echo.default.svc.cluster.local"), "PTR: {out}");
    let out = lookup(net, client, "ext.default.svc.cluster.local");
    assert!(
        out.contains("canonical name = echo.default.svc.cluster.local"),
        "ExternalName: {out}"
    );
    let dashed = web0.replace('.', "-");
    let out = lookup(net, client, &format!("{dashed}.default.pod.cluster.local"));
    assert!(out.contains(&web0), "pod A record: {out}");
    let out = net
        .exec(
            client,
            "nslookup nosuch.default.svc.cluster.local 2>&1; true",
        )
        .unwrap_or_default();
    assert!(out.contains("NXDOMAIN"), "unknown service: {out}");
}

/// Start a loop of fresh connections to `url` inside `pod` for `secs` seconds, in the
/// background of the pod (it outlives the `kubectl exec` that starts it, so the client's own
/// node agent may restart meanwhile); its counts land in `/tmp/<tag>.out`, the first failures'
/// messages in `/tmp/<tag>.err`.
fn start_client_loop(net: &Net, pod: &str, tag: &str, url: &str, secs: u32) {
    let script = format!(
        "rm -f /tmp/{tag}.out /tmp/{tag}.err; ( ok=0; fail=0; end=$(( $(date +%s) + {secs} )); \
         while [ $(date +%s) -lt $end ]; do \
           if out=$(timeout 10 wget -qO- {url} 2>&1); then ok=$((ok+1)); \
           else fail=$((fail+1)); [ $fail -le 5 ] && echo \"$(date +%T) $out\" >> /tmp/{tag}.err; fi; \
         done; echo \"ok=$ok fail=$fail\" > /tmp/{tag}.out ) </dev/null >/dev/null 2>&1 &"
    );
    let out = net.c.kubectl(&["exec", pod, "--", "sh", "-c", &script]);
    assert!(
        out.status.success(),
        "starting the client loop in {pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wait for the loop started by [`start_client_loop`]; returns (ok, failed, failure messages).
fn client_loop_result(net: &Net, pod: &str, tag: &str) -> (u64, u64, String) {
    let text = net
        .c
        .wait_for(&format!("client loop {tag} in {pod}"), WAIT, || {
            net.exec(pod, &format!("cat /tmp/{tag}.out 2>/dev/null"))
                .filter(|t| t.contains("ok="))
        });
    let num = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("client loop printed {text:?}"))
    };
    let errors = net
        .exec(pod, &format!("cat /tmp/{tag}.err 2>/dev/null; true"))
        .unwrap_or_default();
    (num("ok="), num("fail="), errors)
}

fn churn(net: &mut Net) {
    let (_, client) = net.clients[0].clone();
    start_client_loop(net, &client, "churn", "http://echo/", 45);
    for replicas in ["5", "2", "4"] {
        net.c.k(&[
            "scale",
            "deployment",
            "echo",
            &format!("--replicas={replicas}"),
        ]);
        std::thread::sleep(Duration::from_secs(6));
    }
    net.c.k(&["rollout", "restart", "deployment", "echo"]);
    let out = net
        .c
        .kubectl(&["rollout", "status", "deployment", "echo", "--timeout=120s"]);
    assert!(
        out.status.success(),
        "rollout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, fail, errors) = client_loop_result(net, &client, "churn");
    assert!(
        ok > 20,
        "too few requests during churn: ok={ok} fail={fail}"
    );
    assert_eq!(
        fail, 0,
        "connections failed while endpoints churned: ok={ok} fail={fail}: {errors}"
    );

    // An agent restart: a pod on that node keeps resolving the Service's name (the cluster
    // DNS is served by that agent: while it is away the node's rules make queries wait
    // instead of being refused, and the new agent answers from its saved records before it
    // joins) and its connections keep flowing through the rules left in place.
    let (_, client1) = net.clients[1].clone();
    start_client_loop(net, &client1, "restart", "http://echo/", 20);
    std::thread::sleep(Duration::from_secs(3));
    net.c.restart_node_process("agent1");
    let (ok, fail, errors) = client_loop_result(net, &client1, "restart");
    assert!(
        ok > 10,
        "too few requests across the agent restart: ok={ok}"
    );
    assert_eq!(
        fail, 0,
        "lookups or connections failed across an agent restart: ok={ok} fail={fail}: {errors}"
    );
    net.c.wait_node_ready("agent1", WAIT);
}

fn bad_service(net: &Net) {
    net.c.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: bad-v6}
spec:
  selector: {app: echo}
  externalIPs: ["fd00::5"]
  ports: [{name: http, port: 80, targetPort: 8080}]
"#,
    );
    net.c.wait_for("a Warning event on bad-v6", WAIT, || {
        let ev = net.c.json(&[
            "get",
            "events",
            "--field-selector=involvedObject.name=bad-v6",
        ]);
        ev["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["type"] == "Warning")
            .then_some(())
    });
    // The other services are still programmed.
    let (_, client) = &net.clients[0];
    assert!(
        net.fetch(client, "http://echo/").is_some(),
        "echo after bad-v6"
    );
}

fn dns_without_server(net: &mut Net) {
    let (_, client) = net.clients[1].clone();
    let cluster_ip = net.c.field(&["get", "svc", "echo"], "{.spec.clusterIP}");
    net.c
        .terminate_node_process("server", Duration::from_secs(30));
    // kubectl cannot reach the API now: look up from inside the client pod's netns through
    // the node instead (nsenter into the agent's netns, busybox nslookup against the cluster
    // DNS address there).
    let dns = net.c.slot().cluster_dns();
    let out = net.c.exec_in(
        "agent1",
        &[
            "busybox",
            "nslookup",
            "echo.default.svc.cluster.local",
            &dns,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&cluster_ip),
        "DNS while the server is stopped: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // agent1 restarts while the server is still stopped: it cannot join or read the cluster
    // settings, and answers from the settings and records it saved.
    net.c.restart_node_process("agent1");
    net.c.wait_for(
        "agent1's DNS answering after a restart without the server",
        Duration::from_secs(60),
        || {
            let out = net.c.exec_in(
                "agent1",
                &[
                    "timeout",
                    "10",
                    "busybox",
                    "nslookup",
                    "echo.default.svc.cluster.local",
                    &dns,
                ],
            );
            String::from_utf8_lossy(&out.stdout)
                .contains(&cluster_ip)
                .then_some(())
        },
    );
    let _ = client;
}

fn suite(backend: &str) {
    let mut net = start(backend);
    pod_to_pod(&net);
    cluster_ip(&net);
    node_ports(&net);
    load_balancer(&net);
    affinity_and_expose(&net);
    dns(&net);
    policy::health_check_node_port(&net);
    policy::internal_traffic_local(&net);
    policy::source_ranges(&net);
    udp::stale_udp_conntrack(&net);
    bad_service(&net);
    churn(&mut net);
    restore::routes_after_agent_restart(&mut net, backend);
    dns_without_server(&mut net);
}

#[test]
fn vxlan_three_nodes_services_and_dns() {
    suite("vxlan");
}

#[test]
fn host_gw_three_nodes_services_and_dns() {
    suite("host-gw");
}
