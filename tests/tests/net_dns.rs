//! The cluster DNS server on port 53 of the cluster DNS address (held by a dummy device, as
//! NodeLocal DNSCache does) inside a private network namespace, queried by Debian's
//! busybox-static `nslookup` run in that namespace with `nsenter --net`: Service, headless and
//! StatefulSet-style names, SRV, PTR and ExternalName, asserted on busybox's printed output
//! (the e2e tests rely on that format). Root only; the namespace is deleted afterwards.

// The transcripts are printed so a failure shows what busybox said.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8slite_network::dns::{DnsConfig, DnsServer, Records};
use tokio_util::sync::CancellationToken;

const DNS_IP: &str = "10.43.0.10";

fn require_root_and_tools() {
    k8slite_tests::require_root("this test creates a network namespace");
    assert!(
        Path::new("/usr/bin/busybox").exists() || Path::new("/bin/busybox").exists(),
        "prerequisite missing: busybox (Debian busybox-static), used for nslookup"
    );
    assert!(
        Command::new("nsenter").arg("--version").output().is_ok(),
        "prerequisite missing: nsenter (util-linux)"
    );
    assert!(
        Command::new("ip").arg("-V").output().is_ok(),
        "prerequisite missing: ip (iproute2)"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace and the server thread in it, both gone on drop.
struct Node {
    netns: String,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

fn records() -> Records {
    let web = Service {
        metadata: meta("default", "web"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.43.0.20".into()),
            cluster_ips: Some(vec!["10.43.0.20".into()]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pg = Service {
        metadata: meta("db", "pg"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ports: Some(vec![ServicePort {
                name: Some("sql".into()),
                protocol: Some("TCP".into()),
                port: 5432,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ext = Service {
        metadata: meta("default", "ext"),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some("example.com".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut m = meta("db", "pg-abc");
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        "pg".to_string(),
    )]));
    let endpoint = |addr: &str, host: &str| Endpoint {
        addresses: vec![addr.into()],
        hostname: Some(host.into()),
        conditions: Some(EndpointConditions {
            ready: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let slice = EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: vec![
            endpoint("10.42.1.10", "pg-0"),
            endpoint("10.42.1.11", "pg-1"),
        ],
        ports: Some(vec![EndpointPort {
            name: Some("sql".into()),
            protocol: Some("TCP".into()),
            port: Some(5432),
            ..Default::default()
        }]),
    };
    Records::build(
        "cluster.local",
        &[Arc::new(web), Arc::new(pg), Arc::new(ext)],
        &[Arc::new(slice)],
    )
}

fn start_node() -> Node {
    let netns = format!("k8sl-dns-{}", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &netns]).output();
    ip(&["netns", "add", &netns]);
    let mut node = Node {
        netns: netns.clone(),
        stop: CancellationToken::new(),
        thread: None,
    };
    ip(&["-n", &netns, "link", "set", "lo", "up"]);
    // The address on a dummy device (NodeLocal DNSCache's way); kernels built without
    // CONFIG_DUMMY (as on these CI machines) get it on `lo` instead, which serves the same.
    let dummy = Command::new("ip")
        .args(["-n", &netns, "link", "add", "kdns0", "type", "dummy"])
        .output()
        .is_ok_and(|o| o.status.success());
    let dev = if dummy { "kdns0" } else { "lo" };
    ip(&[
        "-n",
        &netns,
        "addr",
        "add",
        &format!("{DNS_IP}/32"),
        "dev",
        dev,
    ]);
    ip(&["-n", &netns, "link", "set", dev, "up"]);

    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let stop = node.stop.clone();
    let path = format!("/run/netns/{netns}");
    node.thread = Some(std::thread::spawn(move || {
        let ns = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Err(format!("open {path}: {e}")));
                return;
            }
        };
        if let Err(e) = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET) {
            let _ = tx.send(Err(format!("setns {path}: {e}")));
            return;
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(format!("runtime: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            let cfg = DnsConfig::new(
                vec![format!("{DNS_IP}:53").parse().expect("addr")],
                "cluster.local",
                vec![],
            );
            let server = match DnsServer::bind(cfg).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(format!("bind: {e}")));
                    return;
                }
            };
            server.records().replace(records());
            let _ = tx.send(Ok(()));
            let _ = server.run(stop).await;
        });
    }));
    rx.recv_timeout(Duration::from_secs(10))
        .expect("dns server thread did not start")
        .expect("dns server in the namespace");
    node
}

fn nslookup(node: &Node, args: &[&str]) -> String {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", node.netns))
        .args(["--", "timeout", "10", "busybox", "nslookup"])
        .args(args)
        .arg(DNS_IP);
    let out = cmd.output().expect("run busybox nslookup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ busybox nslookup {} {DNS_IP}\n{text}", args.join(" "));
    text
}

#[test]
fn busybox_nslookup_against_the_node_local_dns() {
    require_root_and_tools();
    let node = start_node();

    let out = nslookup(&node, &["web.default.svc.cluster.local"]);
    assert!(
        out.contains("Name:\tweb.default.svc.cluster.local"),
        "{out}"
    );
    assert!(out.contains("Address: 10.43.0.20"), "{out}");

    let out = nslookup(&node, &["pg.db.svc.cluster.local"]);
    assert!(out.contains("Address: 10.42.1.10"), "{out}");
    assert!(out.contains("Address: 10.42.1.11"), "{out}");

    let out = nslookup(&node, &["pg-1.pg.db.svc.cluster.local"]);
    assert!(out.contains("Address: 10.42.1.11"), "{out}");
    assert!(!out.contains("10.42.1.10"), "{out}");

    let out = nslookup(
        &node,
        &["-type=SRV", "_http._tcp.web.default.svc.cluster.local"],
    );
    assert!(
        out.contains("service = 0 100 80 web.default.svc.cluster.local"),
        "{out}"
    );
    let out = nslookup(&node, &["-type=SRV", "_sql._tcp.pg.db.svc.cluster.local"]);
    assert!(
        out.contains("service = 0 50 5432 pg-0.pg.db.svc.cluster.local"),
        "{out}"
    );
    assert!(
        out.contains("service = 0 50 5432 pg-1.pg.db.svc.cluster.local"),
        "{out}"
    );

    let out = nslookup(&node, &["10.43.0.20"]);
    assert!(
        out.contains("20.0.43.10.in-addr.arpa\tname = web.default.svc.cluster.local"),
        "{out}"
    );
    let out = nslookup(&node, &["-type=PTR", "10.1.42.10.in-addr.arpa"]);
    assert!(out.contains("name = pg-0.pg.db.svc.cluster.local"), "{out}");

    let out = nslookup(&node, &["ext.default.svc.cluster.local"]);
    assert!(
        out.contains("ext.default.svc.cluster.local\tcanonical name = example.com"),
        "{out}"
    );

    let out = nslookup(&node, &["nope.default.svc.cluster.local"]);
    assert!(out.contains("NXDOMAIN"), "{out}");
}
