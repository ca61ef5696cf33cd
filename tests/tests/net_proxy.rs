//! The service proxy on the real kernel with the real `iptables-restore`, as root, inside
//! private network namespaces: a "node" namespace with a bridge and two "pod" namespaces
//! behind veths, busybox httpd serving in the pods. Checks a ClusterIP from the node and from
//! a pod (spread over both endpoints), a NodePort, a service without endpoints and an unowned
//! service-CIDR address refused at once, hairpin, every other rule kind accepted by
//! iptables-restore, atomic endpoint swaps under load (zero failed connections), and that
//! cleanup leaves no chain with the test's prefix. Everything is removed on drop, failure
//! included; processes are killed by PID.

#![allow(clippy::print_stderr)] // the counts are part of the report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8slite_network::host::{PrepOptions, RealHost, ensure_iptables};
use k8slite_network::proxy::{IptablesBackend, Proxier, ProxyConfig, RecordingConntrack};
use serde_json::json;

const CLUSTER_CIDR: &str = "10.199.0.0/16";
const POD_CIDR: &str = "10.199.5.0/24";
const SERVICE_CIDR: &str = "10.198.0.0/16";
const NODE_IP: &str = "192.0.2.10";
const POD_A: &str = "10.199.5.2";
const POD_B: &str = "10.199.5.3";

fn busybox() -> &'static str {
    ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("busybox")
}

fn require_root_and_tools() {
    k8slite_tests::require_root("this test creates network namespaces");
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("timeout", "coreutils"),
    ] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        assert!(found, "prerequisite missing: {tool} ({pkg})");
    }
    assert!(
        Path::new(busybox()).exists(),
        "prerequisite missing: busybox (busybox-static), used for httpd and wget"
    );
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ns_path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

/// Run `args` in the network namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Output {
    let net = format!("--net={}", ns_path(ns));
    let mut a = vec![net.as_str(), "--"];
    a.extend_from_slice(args);
    run("nsenter", &a)
}

/// `wget` from `ns` (wrapped in `timeout`: busybox 1.35's `wget -T` segfaults).
fn wget(ns: &str, url: &str) -> Output {
    in_ns(ns, &["timeout", "5", busybox(), "wget", "-qO-", url])
}

/// Namespaces and processes removed on drop (processes first, by PID).
struct Guard {
    netns: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.netns.iter().rev() {
            let _ = run("ip", &["netns", "del", n]);
        }
    }
}

fn service(name: &str, spec: serde_json::Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(
            json!({"metadata": {"namespace": "default", "name": name}, "spec": spec}),
        )
        .expect("service"),
    )
}

fn service_with_status(
    name: &str,
    spec: serde_json::Value,
    status: serde_json::Value,
) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"namespace": "default", "name": name}, "spec": spec, "status": status}))
            .expect("service"),
    )
}

fn endpoints(svc: &str, port: i32, proto: &str, ips: &[&str]) -> Arc<EndpointSlice> {
    let eps: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "node", "conditions": {"ready": true}}))
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": format!("{svc}-x"),
                "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": proto}],
            "endpoints": eps,
        }))
        .expect("slice"),
    )
}

fn text(o: &Output) -> String {
    format!(
        "status {:?} stdout {:?} stderr {:?}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The node's rules with counters (for failure messages).
fn dump(node: &str) -> String {
    let o = in_ns(node, &["iptables-save", "-c"]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A connection from `from` that was refused (not timed out, not answered).
fn assert_refused(node: &str, from: &str, url: &str, what: &str) {
    let o = wget(from, url);
    assert!(!o.status.success(), "{what} answered: {}", text(&o));
    assert_ne!(
        o.status.code(),
        Some(124),
        "{what} ({url} from {from}) timed out instead of being refused; rules:\n{}",
        dump(node)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused") || err.contains("unreachable"),
        "{what}: {}",
        text(&o)
    );
}

#[test]
fn service_proxy_in_network_namespaces() {
    require_root_and_tools();
    let id = std::process::id();
    let prefix = format!("KT{}", id % 100_000);
    let (node, pa, pb) = (
        format!("kpx{id}n"),
        format!("kpx{id}a"),
        format!("kpx{id}b"),
    );
    let mut guard = Guard {
        netns: Vec::new(),
        children: Vec::new(),
    };
    for n in [&node, &pa, &pb] {
        must("ip", &["netns", "add", n]);
        guard.netns.push(n.clone());
        must("ip", &["-n", n, "link", "set", "lo", "up"]);
    }
    // Node: bridge = pods' gateway, also holding the node IP with the route to the
    // service CIDR (the node itself needs a route to connect to a VIP), forwarding and
    // br_netfilter on.
    let ipn = |args: &[&str]| {
        let mut a = vec!["-n", node.as_str()];
        a.extend_from_slice(args);
        must("ip", &a);
    };
    ipn(&["link", "add", "kpxbr", "type", "bridge"]);
    ipn(&["addr", "add", "10.199.5.1/24", "dev", "kpxbr"]);
    ipn(&["link", "set", "kpxbr", "up"]);
    // (No dummy driver on every kernel: the node address sits on the bridge too.)
    ipn(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "kpxbr"]);
    ipn(&["route", "add", SERVICE_CIDR, "dev", "kpxbr", "src", NODE_IP]);
    // No ICMP redirects from the node: pod → VIP → pod on the same bridge makes the kernel
    // send them, and they use up the per-peer ICMP tokens, so the REJECT's port-unreachable
    // for that pod would be rate-limited away (the client then times out instead of failing
    // at once).
    for (k, v) in [
        ("net/ipv4/ip_forward", "1"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
        ("net/ipv4/conf/all/send_redirects", "0"),
        ("net/ipv4/conf/kpxbr/send_redirects", "0"),
    ] {
        let out = in_ns(&node, &["sh", "-c", &format!("echo {v} > /proc/sys/{k}")]);
        assert!(
            out.status.success(),
            "prerequisite missing: sysctl {k} in a network namespace (br_netfilter): {}",
            text(&out)
        );
    }
    let web_root = tempfile::tempdir().expect("tmp");
    for (pod, ip, veth) in [(&pa, POD_A, "vpa"), (&pb, POD_B, "vpb")] {
        ipn(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod,
        ]);
        ipn(&["link", "set", veth, "master", "kpxbr", "up"]);
        ipn(&["link", "set", veth, "type", "bridge_slave", "hairpin", "on"]);
        must(
            "ip",
            &["-n", pod, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        must("ip", &["-n", pod, "link", "set", "eth0", "up"]);
        must(
            "ip",
            &["-n", pod, "route", "add", "default", "via", "10.199.5.1"],
        );
        let dir = web_root.path().join(pod.as_str());
        std::fs::create_dir_all(&dir).expect("web dir");
        std::fs::write(dir.join("index.html"), format!("hello from {ip}\n")).expect("index");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns_path(pod)))
            .arg("--")
            .args([busybox(), "httpd", "-f", "-p", "8080", "-h"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start busybox httpd");
        guard.children.push(child);
    }
    // The pods serve (direct, no service yet).
    for ip in [POD_A, POD_B] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = wget(&node, &format!("http://{ip}:8080/"));
            if o.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "httpd in the pod at {ip}: {}",
                text(&o)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The proxy, with the real iptables-restore inside the node namespace.
    let run_dir = tempfile::tempdir().expect("tmp");
    let (iptables, backend_kind, _) =
        ensure_iptables(&RealHost, &PrepOptions::new(run_dir.path().join("run")))
            .expect("prerequisite missing: iptables");
    eprintln!(
        "iptables: {} ({backend_kind:?}); prefix {prefix}",
        iptables.display()
    );
    let mut cfg = ProxyConfig::new(
        "node",
        vec![NODE_IP.parse().expect("ip")],
        CLUSTER_CIDR.parse().expect("cidr"),
        SERVICE_CIDR.parse().expect("cidr"),
    );
    cfg.chain_prefix = prefix.clone();
    cfg.pod_cidr = Some(POD_CIDR.parse().expect("cidr"));
    cfg.local_dns = Some("10.198.0.10".parse().expect("ip"));
    // The vxlan backend's underlay rules (NOTRACK, UNTRACKED return) must be accepted too.
    cfg.vxlan_port = Some(8472);
    let backend = IptablesBackend::new(iptables.clone()).in_netns(PathBuf::from(ns_path(&node)));
    let mut proxier = Proxier::new(cfg, backend, RecordingConntrack::new());

    let tcp80 = |ip: &str| json!({"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]});
    let mut services = vec![
        service("web", tcp80("10.198.0.100")),
        service("empty", tcp80("10.198.0.101")),
        service("self", tcp80("10.198.0.102")),
        service(
            "np",
            json!({"type": "NodePort", "clusterIP": "10.198.0.103",
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        ),
        // Rule kinds the checks below do not exercise, so iptables-restore validates them.
        service(
            "local",
            json!({"type": "NodePort", "clusterIP": "10.198.0.104", "externalTrafficPolicy": "Local",
                "internalTrafficPolicy": "Local", "healthCheckNodePort": 32100,
                "sessionAffinity": "ClientIP", "externalIPs": ["198.51.100.7"],
                "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
        ),
        service_with_status(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "10.198.0.105",
                "loadBalancerSourceRanges": ["203.0.113.0/24"],
                "ports": [{"name": "http", "port": 80, "nodePort": 30082}]}),
            json!({"loadBalancer": {"ingress": [{"ip": NODE_IP}]}}),
        ),
        service(
            "udp",
            json!({"clusterIP": "10.198.0.106", "ports": [{"name": "http", "port": 53, "protocol": "UDP"}]}),
        ),
        service(
            "sctp",
            json!({"clusterIP": "10.198.0.107", "ports": [{"name": "http", "port": 9, "protocol": "SCTP"}]}),
        ),
        service(
            "sticky",
            json!({"clusterIP": "10.198.0.108", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "kube-dns",
            json!({"clusterIP": "10.198.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
    ];
    let base_slices = vec![
        endpoints("self", 8080, "TCP", &[POD_A]),
        endpoints("np", 8080, "TCP", &[POD_B]),
        endpoints("local", 8080, "TCP", &[POD_A]),
        endpoints("lb", 8080, "TCP", &[POD_A]),
        endpoints("udp", 5353, "UDP", &[POD_A]),
        endpoints("sctp", 9999, "SCTP", &[POD_B]),
        endpoints("sticky", 8080, "TCP", &[POD_A, POD_B]),
    ];
    let with_web = |web: &[&str]| {
        let mut s = base_slices.clone();
        s.push(endpoints("web", 8080, "TCP", web));
        s
    };
    let report = proxier
        .sync(&services, &with_web(&[POD_A, POD_B]))
        .expect("first sync (iptables-restore)");
    eprintln!(
        "first sync: {} services, {} lines, problems {:?}",
        report.services, report.rules, report.problems
    );
    assert!(report.applied);
    assert!(
        report.problems.iter().all(|p| p.name == "sctp"),
        "{:?}",
        report.problems
    );
    assert_eq!(report.health_checks.len(), 1, "{:?}", report.health_checks);

    // ClusterIP from the node and from a pod, spread over both endpoints.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..24 {
        let from = if i % 2 == 0 { &node } else { &pb };
        let o = wget(from, "http://10.198.0.100/");
        assert!(o.status.success(), "VIP from {from}: {}", text(&o));
        *seen
            .entry(String::from_utf8_lossy(&o.stdout).trim().to_string())
            .or_default() += 1;
    }
    eprintln!("ClusterIP answers: {seen:?}");
    assert_eq!(seen.len(), 2, "both endpoints answer: {seen:?}");
    // NodePort on the node address, from the node itself and from a pod.
    for from in [&node, &pa] {
        let o = wget(from, &format!("http://{NODE_IP}:30080/"));
        assert!(o.status.success(), "NodePort from {from}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("hello from {POD_B}")
        );
    }
    // externalTrafficPolicy: Local node port from the node, its external IP from a pod.
    for (from, url) in [
        (&node, format!("http://{NODE_IP}:30081/")),
        (&pb, "http://198.51.100.7/".to_string()),
    ] {
        let o = wget(from, &url);
        assert!(o.status.success(), "{url} from {from}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("hello from {POD_A}")
        );
    }
    // Session affinity: one client keeps its endpoint.
    let mut sticky: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..12 {
        let o = wget(&pb, "http://10.198.0.108/");
        assert!(o.status.success(), "sticky service: {}", text(&o));
        *sticky
            .entry(String::from_utf8_lossy(&o.stdout).trim().to_string())
            .or_default() += 1;
    }
    assert_eq!(sticky.len(), 1, "ClientIP affinity: {sticky:?}");
    // No endpoints, and an address no service owns: refused at once.
    for from in [&node, &pb] {
        assert_refused(
            &node,
            from,
            "http://10.198.0.101/",
            "service without endpoints",
        );
        assert_refused(
            &node,
            from,
            "http://10.198.0.250/",
            "unowned service address",
        );
    }
    // Hairpin: pod A reaches itself through its service.
    let o = wget(&pa, "http://10.198.0.102/");
    assert!(o.status.success(), "hairpin: {}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("hello from {POD_A}")
    );

    // Unchanged input: no restore.
    assert!(
        !proxier
            .sync(&services, &with_web(&[POD_A, POD_B]))
            .expect("sync")
            .applied
    );

    // Atomicity: swap the web endpoints while a client opens fresh connections.
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let first_failure = std::sync::Mutex::new(None::<String>);
    let sets: [&[&str]; 3] = [&[POD_A], &[POD_B], &[POD_A, POD_B]];
    let mut swaps = 0usize;
    let mut swap_error = None;
    std::thread::scope(|s| {
        for from in [&node, &pb] {
            let (stop, ok, failed, first_failure) = (&stop, &ok, &failed, &first_failure);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let o = wget(from, "http://10.198.0.100/");
                    if o.status.success() && !o.stdout.is_empty() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut f = first_failure.lock().unwrap_or_else(|p| p.into_inner());
                        if f.is_none() {
                            *f = Some(format!("from {from}: {}", text(&o)));
                        }
                    }
                }
            });
        }
        for i in 0..120 {
            match proxier.sync(&services, &with_web(sets[i % 3])) {
                Ok(r) => {
                    assert!(r.applied);
                    swaps += 1;
                }
                Err(e) => {
                    swap_error = Some(e.to_string());
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    eprintln!("atomicity: {swaps} endpoint swaps, {ok} requests served, {failed} failed");
    assert_eq!(swap_error, None);
    assert!(swaps >= 100 && ok > 0, "{swaps} swaps, {ok} requests");
    assert_eq!(
        failed,
        0,
        "failed connections during swaps; first: {:?}",
        first_failure
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
    );

    // A service removed: its chains go in the same restore, the VIP is refused again.
    services.retain(|s| s.metadata.name.as_deref() != Some("self"));
    proxier.sync(&services, &with_web(&[POD_A])).expect("sync");
    assert_refused(&node, &pb, "http://10.198.0.102/", "removed service");

    // Cleanup: no chain or jump with our prefix remains.
    proxier.cleanup().expect("cleanup");
    for table in ["nat", "filter", "raw"] {
        let net = format!("--net={}", ns_path(&node));
        let save = iptables.with_file_name(format!(
            "{}-save",
            iptables
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let save = save.to_string_lossy().into_owned();
        let out = run("nsenter", &[&net, "--", &save, "-t", table]);
        assert!(out.status.success(), "iptables-save: {}", text(&out));
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(
            !dump.contains(&prefix),
            "{table} still has {prefix} after cleanup:\n{dump}"
        );
    }
}
