//! ServiceLB without helper pods, on simulated nodes (InternalIPs 10.0.0.1..3), driven by
//! kubectl: a LoadBalancer Service's `status.loadBalancer.ingress` lists the eligible nodes'
//! addresses, the `svccontroller.k8slite.io/enablelb` label restricts them, a cordoned or lost
//! node drops out, a port held by an older LoadBalancer Service is a `PortInUse` Warning on the
//! newer one (which stays pending until the port is free), and other classes are left alone.

use std::time::Duration;

use k8slite_tests::cluster::Cluster;
use k8slite_tests::{Server, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn lb(name: &str, ports: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: LoadBalancer\n  selector: {{app: {name}}}\n{extra}  ports:\n{ports}"
    )
}

fn ingress(s: &Server, svc: &str) -> String {
    s.k(&[
        "get",
        "svc",
        svc,
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].ip}",
    ])
    .trim()
    .to_string()
}

fn wait_ingress(s: &Server, svc: &str, want: &str) {
    let got = eventually(WAIT, || (ingress(s, svc) == want).then_some(()));
    assert!(
        got.is_some(),
        "service {svc}: ingress never became {want:?} (now {:?}); nodes:\n{}\nservice:\n{}",
        ingress(s, svc),
        s.k(&["get", "nodes", "--show-labels"]),
        s.k(&["get", "svc", svc, "-o", "yaml"])
    );
}

#[test]
fn load_balancer_ingress_follows_the_eligible_nodes_and_reports_port_clashes() {
    let mut c = Cluster::start_with(
        3,
        &["--node-monitor-grace-period=4", "--node-monitor-period=1"],
        &[],
    );
    let s = &c.server;
    let web_ports = "  - {name: http, port: 80, targetPort: 8080}\n  - {name: https, port: 443}\n";
    s.k_stdin(&["apply", "-f", "-"], Some(&lb("web", web_ports, "")));
    wait_ingress(s, "web", "10.0.0.1 10.0.0.2 10.0.0.3");
    assert_eq!(
        s.k(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ipMode}"
        ]),
        "VIP VIP VIP"
    );
    let row = s.k(&["get", "svc", "web", "--no-headers"]);
    assert!(
        row.contains("10.0.0.1,10.0.0.2,10.0.0.3"),
        "EXTERNAL-IP column: {row}"
    );

    // The label restricts the nodes; `=false` excludes one; cordoning drops one.
    let label = "svccontroller.k8slite.io/enablelb";
    s.k(&["label", "node", "node-2", &format!("{label}=true")]);
    wait_ingress(s, "web", "10.0.0.2");
    s.k(&["label", "node", "node-2", &format!("{label}-")]);
    s.k(&["label", "node", "node-1", &format!("{label}=false")]);
    wait_ingress(s, "web", "10.0.0.2 10.0.0.3");
    s.k(&["label", "node", "node-1", &format!("{label}-")]);
    s.k(&["cordon", "node-2"]);
    wait_ingress(s, "web", "10.0.0.1 10.0.0.3");
    s.k(&["uncordon", "node-2"]);
    wait_ingress(s, "web", "10.0.0.1 10.0.0.2 10.0.0.3");

    // A node going away (its agent stops, the node turns NotReady): no longer listed.
    c.stop_node("node-3");
    let s = &c.server;
    wait_ingress(s, "web", "10.0.0.1 10.0.0.2");

    // 443/TCP is web's: a newer Service asking for it gets no ingress and a Warning.
    let clash = "  - {name: tls, port: 443}\n  - {name: other, port: 8443}\n";
    s.k_stdin(&["apply", "-f", "-"], Some(&lb("second", clash, "")));
    let described = eventually(WAIT, || {
        let d = s.k(&["describe", "svc", "second"]);
        d.contains("PortInUse").then_some(d)
    });
    let described = described.unwrap_or_else(|| {
        panic!(
            "no PortInUse event on second:\n{}",
            s.k(&["describe", "svc", "second"])
        )
    });
    assert!(
        described.contains("Warning") && described.contains("default/web"),
        "{described}"
    );
    assert!(described.contains("443/TCP"), "{described}");
    // Same port, other protocol: no clash. A Service of another class is not ours.
    s.k_stdin(
        &["apply", "-f", "-"],
        Some(&lb(
            "dns",
            "  - {name: dns, port: 443, protocol: UDP}\n",
            "",
        )),
    );
    s.k_stdin(
        &["apply", "-f", "-"],
        Some(&lb(
            "metal",
            "  - {name: http, port: 81}\n",
            "  loadBalancerClass: metallb.io/metallb\n",
        )),
    );
    wait_ingress(s, "dns", "10.0.0.1 10.0.0.2");
    assert_eq!(
        ingress(s, "second"),
        "",
        "the clashing Service stays pending"
    );
    let row = s.k(&["get", "svc", "second", "--no-headers"]);
    assert!(row.contains("<pending>"), "{row}");

    // The holder gone, the port is free.
    s.k(&["delete", "svc", "web"]);
    wait_ingress(s, "second", "10.0.0.1 10.0.0.2");
    assert_eq!(
        ingress(s, "metal"),
        "",
        "another class's Service is left alone"
    );

    // No longer a LoadBalancer: the ingress goes.
    s.k(&[
        "patch",
        "svc",
        "dns",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    wait_ingress(s, "dns", "");
}
