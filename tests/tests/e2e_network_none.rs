//! E2E (issue 10): `--network-backend none` leaves pod networking to another CNI, as k3s's
//! `--flannel-backend=none` does. A server (with its embedded agent) and one agent start with
//! `none`:
//!
//! - k8slite creates no pod network: no `k8slite.1` device, no `k8slite0` bridge, no routes
//!   of protocol 117, no CNI conflist, no VTEP annotation;
//! - until a CNI is installed, the nodes stay `NotReady` with the kubelet's reason
//!   ("container runtime network not ready") and a pod bound to a node waits without an
//!   address (event `NetworkNotReady`), as pods stay `ContainerCreating` on k3s;
//! - once the user's CNI is there (here: a bridge conflist of our own per node, with routes
//!   between the nodes' pod CIDRs, written into the CNI config dir containerd watches), the
//!   nodes turn Ready without a restart, the waiting pods get addresses from their node's pod
//!   CIDR, and the service proxy and cluster DNS, which k8slite still runs, work over that
//!   network: a ClusterIP reaches a pod on the other node by its DNS name.
//!
//! busybox's `wget -T` segfaults on Debian 12's busybox 1.35: fetches use `timeout` instead.

use k8slite_tests::e2e::{E2eCluster, E2eOptions, WAIT};

const NODES: [&str; 2] = ["server", "agent1"];

fn pods(server: &str, agent: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: {server}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: busybox, command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  nodeName: {agent}
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
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"#
    )
}

/// The user's CNI on one node: a bridge of its own name over the node's pod CIDR.
fn user_conflist(pod_cidr: &str, ipam_dir: &std::path::Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "usercni",
        "plugins": [{
            "type": "bridge",
            "bridge": "usercni0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "dataDir": ipam_dir.display().to_string(),
                "ranges": [[{"subnet": pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    })
    .to_string()
}

fn conf_dir(c: &E2eCluster, node: &str) -> std::path::PathBuf {
    c.node(node).data_dir().join("agent/cni/net.d")
}

fn conf_files(c: &E2eCluster, node: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(conf_dir(c, node))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Nothing of k8slite's own pod network exists on `node`.
fn assert_no_k8slite_pod_network(c: &E2eCluster, node: &str, user_conf: &[&str]) {
    for dev in ["k8slite.1", "k8slite0"] {
        let out = c.exec_in(node, &["ip", "link", "show", dev]);
        assert!(
            !out.status.success(),
            "{node}: backend none created {dev}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = c.exec_in(node, &["ip", "route", "show", "proto", "117"]);
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && routes.trim().is_empty(),
        "{node}: backend none programmed routes: {routes}"
    );
    assert_eq!(
        conf_files(c, node),
        user_conf.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "{node}: CNI config dir {} (k8slite must not write its conflist with backend none)",
        conf_dir(c, node).display()
    );
}

fn ready(c: &E2eCluster, node: &str) -> (String, String) {
    let n = c.node_name(node);
    let st = c.field(
        &["get", "node", &n],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    );
    let msg = c.field(
        &["get", "node", &n],
        "{.status.conditions[?(@.type==\"Ready\")].message}",
    );
    (st, msg)
}

#[test]
fn none_backend_leaves_pod_networking_to_another_cni() {
    let mut c = E2eCluster::start_with(E2eOptions {
        agents: vec!["agent1".into()],
        server_flags: vec!["--network-backend=none".into()],
        wait_ready: false,
        ..E2eOptions::default()
    });
    // Both nodes register and stay NotReady for the network; no overlay publishes a VTEP
    // (as k3s with flannel off publishes no flannel annotations).
    for node in NODES {
        let name = c.node_name(node);
        let (st, msg) = c.wait_for(&format!("{name}'s Ready condition"), WAIT, || {
            let r = ready(&c, node);
            (!r.0.is_empty()).then_some(r)
        });
        assert_eq!(st, "False", "{name} Ready without a CNI: {msg}");
        let vtep = c.field(
            &["get", "node", &name],
            "{.metadata.annotations.network\\.k8slite\\.io/vtep-mac}",
        );
        assert_eq!(vtep, "", "{name}: backend none published a VTEP");
        assert!(
            msg.contains("container runtime network not ready"),
            "{name}: NotReady for another reason: {msg}"
        );
    }
    let server = c.node_name("server");
    let agent = c.node_name("agent1");
    c.apply(&pods(&server, &agent));
    c.wait_for("a NetworkNotReady event of pod web", WAIT, || {
        c.pod_event_reasons("web")
            .iter()
            .any(|r| r == "NetworkNotReady")
            .then_some(())
    });
    for p in ["client", "web"] {
        assert_eq!(
            c.field(&["get", "pod", p], "{.status.podIP}"),
            "",
            "pod {p} got an address before any CNI was installed"
        );
    }
    for node in NODES {
        let (st, _) = ready(&c, node);
        assert_eq!(st, "False", "{node} turned Ready without a CNI");
        assert_no_k8slite_pod_network(&c, node, &[]);
    }

    // The user installs a CNI: a conflist per node and routes between the pod CIDRs.
    let cidr = |node: &str| {
        let name = c.node_name(node);
        c.wait_for(&format!("{name}'s pod CIDR"), WAIT, || {
            let p = c.field(&["get", "node", &name], "{.spec.podCIDR}");
            (!p.is_empty()).then_some(p)
        })
    };
    let cidrs: Vec<String> = NODES.iter().map(|n| cidr(n)).collect();
    for (i, node) in NODES.iter().enumerate() {
        let other = 1 - i;
        let via = c.node(NODES[other]).ip.to_string();
        let out = c.exec_in(node, &["ip", "route", "add", &cidrs[other], "via", &via]);
        assert!(
            out.status.success(),
            "{node}: route to {}: {out:?}",
            cidrs[other]
        );
        let dir = conf_dir(&c, node);
        std::fs::create_dir_all(&dir).expect("CNI config dir");
        let ipam = c.node(node).dir.join("usercni-ipam");
        let tmp = dir.join(".05-usercni.conflist.tmp");
        std::fs::write(&tmp, user_conflist(&cidrs[i], &ipam)).expect("writing the conflist");
        std::fs::rename(&tmp, dir.join("05-usercni.conflist")).expect("renaming the conflist");
    }
    for node in NODES {
        c.wait_node_ready(node, WAIT);
    }
    let web_ip = c.wait_pod_ready("web");
    let client_ip = c.wait_pod_ready("client");
    for (ip, cidr) in [(&client_ip, &cidrs[0]), (&web_ip, &cidrs[1])] {
        let net = cidr.rsplit_once('.').map(|(n, _)| n).unwrap_or(cidr);
        assert!(
            ip.starts_with(&format!("{net}.")),
            "pod IP {ip} is not from its node's pod CIDR {cidr}"
        );
    }

    // Services and DNS still come from k8slite: the ClusterIP by name, across nodes.
    let vip = c.field(&["get", "svc", "web"], "{.spec.clusterIP}");
    let out = c.wait_for("nslookup web from the client pod", WAIT, || {
        let o = c.kubectl(&[
            "exec",
            "client",
            "--",
            "nslookup",
            "web.default.svc.cluster.local",
        ]);
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        t.contains(&vip).then_some(t)
    });
    assert!(out.contains(&vip), "{out}");
    let body = c.wait_for("web through its ClusterIP by name", WAIT, || {
        let o = c.kubectl(&[
            "exec",
            "client",
            "--",
            "timeout",
            "5",
            "wget",
            "-qO-",
            "http://web/",
        ]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    assert_eq!(body.trim(), "web", "web's ClusterIP answered {body:?}");
    for node in NODES {
        assert_no_k8slite_pod_network(&c, node, &["05-usercni.conflist"]);
    }
}
