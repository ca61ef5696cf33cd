//! The cross-node pod network on the real kernel: two "node" network namespaces on a bridge
//! (which sits in a namespace of its own, so nothing is added to the root namespace), each with
//! a "pod" namespace behind a veth holding an address of its node's pod CIDR — the topology of
//! the cri-lab's `vxlan-lab.sh`. k8slite's overlay ([`RtNetlink`], run in a thread that entered
//! the node namespace) programs vxlan and then host-gw; pods ping each other across the nodes;
//! a removed peer leaves no route, neighbour or FDB entry; setup and sync run twice (and from a
//! fresh overlay, as after an agent restart) change nothing. Root only; every namespace carries
//! the prefix `k8r<pid>` and is deleted on drop, even when an assertion fails.

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};

use ipnet::IpNet;
use k8slite_network::routes::{
    Backend, LocalOverlay, Overlay, OverlayConfig, Peer, RTPROT_K8SLITE, RoutesError, RtNetlink,
    SyncReport, VXLAN_DEVICE, ensure_dummy_address, remove_dummy,
};

const NODE_A_IP: &str = "192.168.251.11";
const NODE_B_IP: &str = "192.168.251.12";
const CIDR_A: &str = "10.42.0.0/24";
const CIDR_B: &str = "10.42.1.0/24";
const POD_A: &str = "10.42.0.2";
const POD_B: &str = "10.42.1.2";
const CLUSTER_CIDR: &str = "10.42.0.0/16";

fn require_root_and_tools() {
    k8slite_tests::require_root("this test creates network namespaces");
    assert!(
        Path::new("/usr/sbin/ip").exists() || Path::new("/sbin/ip").exists(),
        "prerequisite missing: ip (iproute2)"
    );
    assert!(
        Path::new("/usr/sbin/bridge").exists() || Path::new("/sbin/bridge").exists(),
        "prerequisite missing: bridge (iproute2)"
    );
    assert!(
        Path::new("/usr/bin/busybox").exists() || Path::new("/bin/busybox").exists(),
        "prerequisite missing: busybox (busybox-static), used for ping"
    );
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"))
}

/// Run and require success; stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces of one run, deleted on drop (which takes every link inside with them).
struct Topology {
    lan: String,
    node_a: String,
    node_b: String,
    pod_a: String,
    pod_b: String,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in [
            &self.pod_a,
            &self.pod_b,
            &self.node_a,
            &self.node_b,
            &self.lan,
        ] {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

impl Topology {
    fn new() -> Self {
        let p = format!("k8r{}", std::process::id());
        let t = Topology {
            lan: format!("{p}-lan"),
            node_a: format!("{p}-na"),
            node_b: format!("{p}-nb"),
            pod_a: format!("{p}-pa"),
            pod_b: format!("{p}-pb"),
        };
        for n in [&t.lan, &t.node_a, &t.node_b, &t.pod_a, &t.pod_b] {
            ok(&["ip", "netns", "add", n]);
        }
        let lan = t.lan.as_str();
        ok(&["ip", "-n", lan, "link", "add", "br0", "type", "bridge"]);
        ok(&["ip", "-n", lan, "link", "set", "br0", "up"]);
        for (node, pod, node_ip, gw, pod_ip, port) in [
            (&t.node_a, &t.pod_a, NODE_A_IP, "10.42.0.1", POD_A, "ha"),
            (&t.node_b, &t.pod_b, NODE_B_IP, "10.42.1.1", POD_B, "hb"),
        ] {
            ok(&[
                "ip", "-n", lan, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", node,
            ]);
            ok(&["ip", "-n", lan, "link", "set", port, "master", "br0", "up"]);
            ok(&[
                "ip",
                "-n",
                node,
                "addr",
                "add",
                &format!("{node_ip}/24"),
                "dev",
                "eth0",
            ]);
            ok(&["ip", "-n", node, "link", "set", "eth0", "up"]);
            ok(&["ip", "-n", node, "link", "set", "lo", "up"]);
            ok(&[
                "ip",
                "netns",
                "exec",
                node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ]);
            ok(&[
                "ip", "-n", node, "link", "add", "vp", "type", "veth", "peer", "name", "eth0",
                "netns", pod,
            ]);
            ok(&[
                "ip",
                "-n",
                node,
                "addr",
                "add",
                &format!("{gw}/24"),
                "dev",
                "vp",
            ]);
            ok(&["ip", "-n", node, "link", "set", "vp", "up"]);
            ok(&[
                "ip",
                "-n",
                pod,
                "addr",
                "add",
                &format!("{pod_ip}/24"),
                "dev",
                "eth0",
            ]);
            ok(&["ip", "-n", pod, "link", "set", "eth0", "up"]);
            ok(&["ip", "-n", pod, "link", "set", "lo", "up"]);
            ok(&["ip", "-n", pod, "route", "add", "default", "via", gw]);
        }
        t
    }

    fn ping(&self, from_pod: &str, to: &str) -> bool {
        run(&[
            "ip", "netns", "exec", from_pod, "busybox", "ping", "-c", "2", "-W", "3", to,
        ])
        .status
        .success()
    }
}

/// Run `f` on a current-thread runtime in a thread that entered network namespace `ns`.
fn in_netns<T, F, Fut>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn config(backend: Backend, node_ip: &str, cidr: &str) -> OverlayConfig {
    OverlayConfig::new(backend, ip(node_ip), net(cidr), net(CLUSTER_CIDR))
}

fn peer(name: &str, node_ip: &str, cidr: &str, mac: Option<&str>) -> Peer {
    Peer {
        name: name.into(),
        node_ip: ip(node_ip),
        pod_cidr: net(cidr),
        vtep_mac: mac.map(str::to_string),
    }
}

/// setup then sync, in `ns`, with a fresh overlay (as an agent start).
fn setup_and_sync(ns: &str, cfg: OverlayConfig, peers: Vec<Peer>) -> (LocalOverlay, SyncReport) {
    in_netns(ns, move || async move {
        let mut o = Overlay::new(cfg, RtNetlink);
        let local = o.setup().await.expect("setup");
        let report = o.sync(&peers).await.expect("sync");
        (local, report)
    })
}

fn teardown(ns: &str, cfg: OverlayConfig) {
    in_netns(ns, move || async move {
        Overlay::new(cfg, RtNetlink)
            .teardown()
            .await
            .expect("teardown")
    })
}

/// What the overlay's netlink reads in `ns` (for failure messages).
fn kernel_view(ns: &str) -> String {
    use k8slite_network::routes::Netlink;
    in_netns(ns, || async {
        let nl = RtNetlink;
        let links = nl.links().await.expect("links");
        let mut out = format!("routes: {:?}\n", nl.routes().await.expect("routes"));
        if let Some(l) = links.iter().find(|l| l.name == VXLAN_DEVICE) {
            out += &format!("device: {l:?}\n");
            out += &format!(
                "neighbours: {:?}\n",
                nl.neighbours(l.index).await.expect("neigh")
            );
            out += &format!("fdb: {:?}\n", nl.fdb(l.index).await.expect("fdb"));
        }
        out
    })
}

fn our_routes(ns: &str) -> String {
    ok(&[
        "ip",
        "-n",
        ns,
        "route",
        "show",
        "proto",
        &RTPROT_K8SLITE.to_string(),
    ])
}

#[test]
fn vxlan_and_host_gw_connect_pods_across_nodes() {
    require_root_and_tools();
    let t = Topology::new();
    let (na, nb) = (t.node_a.clone(), t.node_b.clone());
    assert!(
        !t.ping(&t.pod_a, POD_B),
        "pods reach each other before any route exists"
    );

    // ---- vxlan ----
    let cfg_a = config(Backend::Vxlan, NODE_A_IP, CIDR_A);
    let cfg_b = config(Backend::Vxlan, NODE_B_IP, CIDR_B);
    let (local_a, _) = setup_and_sync(&na, cfg_a.clone(), vec![]);
    let (local_b, _) = setup_and_sync(&nb, cfg_b.clone(), vec![]);
    assert_eq!(local_a.mtu, 1450, "parent MTU 1500 − 50");
    assert_eq!(local_a.vtep_ip, Some(ip(NODE_A_IP)));
    let mac_a = local_a.vtep_mac.clone().expect("VTEP MAC of a");
    let mac_b = local_b.vtep_mac.clone().expect("VTEP MAC of b");
    let link = ok(&["ip", "-d", "-n", &na, "link", "show", VXLAN_DEVICE]);
    for want in [
        "mtu 1450",
        "vxlan id 1",
        &format!("local {NODE_A_IP}"),
        "dev eth0",
        "dstport 8472",
        "nolearning",
        &mac_a,
    ] {
        assert!(link.contains(want), "{want:?} missing from: {link}");
    }
    assert!(
        link.contains("state UNKNOWN") || link.contains(",UP"),
        "{link}"
    );
    let addr = ok(&["ip", "-n", &na, "addr", "show", "dev", VXLAN_DEVICE]);
    assert!(addr.contains("inet 10.42.0.0/32"), "{addr}");

    let peer_b = peer("b", NODE_B_IP, CIDR_B, Some(&mac_b));
    let peer_a = peer("a", NODE_A_IP, CIDR_A, Some(&mac_a));
    let (_, ra) = setup_and_sync(&na, cfg_a.clone(), vec![peer_b.clone()]);
    let (_, rb) = setup_and_sync(&nb, cfg_b.clone(), vec![peer_a.clone()]);
    assert_eq!((ra.added, ra.removed), (3, 0), "{ra:?}");
    assert_eq!((rb.added, rb.removed), (3, 0), "{rb:?}");
    let routes = our_routes(&na);
    assert!(
        routes.contains("10.42.1.0/24 via 10.42.1.0 dev k8slite.1") && routes.contains("onlink"),
        "{routes}"
    );
    let neigh = ok(&["ip", "-n", &na, "neigh", "show", "dev", VXLAN_DEVICE]);
    assert!(
        neigh.contains(&format!("10.42.1.0 lladdr {mac_b} PERMANENT")),
        "{neigh}"
    );
    let fdb = ok(&[
        "ip",
        "netns",
        "exec",
        &na,
        "bridge",
        "fdb",
        "show",
        "dev",
        VXLAN_DEVICE,
    ]);
    assert!(fdb.contains(&format!("{mac_b} dst {NODE_B_IP}")), "{fdb}");
    assert!(t.ping(&t.pod_a, POD_B), "pod a → pod b over vxlan");
    assert!(t.ping(&t.pod_b, POD_A), "pod b → pod a over vxlan");

    // Setup + sync again from a fresh overlay (an agent restart): nothing changes, not even
    // the VTEP MAC.
    for _ in 0..2 {
        let (again, r) = setup_and_sync(&na, cfg_a.clone(), vec![peer_b.clone()]);
        assert_eq!(again, local_a);
        assert!(
            r.is_noop(),
            "second sync changed something: {r:?}\n{}",
            kernel_view(&na)
        );
    }

    // b goes away: route, neighbour and FDB entry gone.
    let (_, r) = setup_and_sync(&na, cfg_a.clone(), vec![]);
    assert_eq!((r.added, r.removed), (0, 3), "{r:?}");
    assert_eq!(our_routes(&na).trim(), "");
    let neigh = ok(&["ip", "-n", &na, "neigh", "show", "dev", VXLAN_DEVICE]);
    assert!(!neigh.contains("10.42.1.0"), "{neigh}");
    let fdb = ok(&[
        "ip",
        "netns",
        "exec",
        &na,
        "bridge",
        "fdb",
        "show",
        "dev",
        VXLAN_DEVICE,
    ]);
    assert!(!fdb.contains(&mac_b), "{fdb}");
    assert!(
        !t.ping(&t.pod_a, POD_B),
        "pod b still reachable without its peer"
    );

    // Back, with b's entries as a changed node would leave them: a wrong FDB destination is
    // replaced in place.
    let moved = peer("b", "192.168.251.99", CIDR_B, Some(&mac_b));
    setup_and_sync(&na, cfg_a.clone(), vec![moved]);
    let (_, r) = setup_and_sync(&na, cfg_a.clone(), vec![peer_b.clone()]);
    assert_eq!((r.added, r.removed), (1, 0), "{r:?}");
    assert!(t.ping(&t.pod_a, POD_B), "pod a → pod b after the change");

    // Checksum offload off needs ethtool: done, or a clear error naming it.
    let mut csum = cfg_a.clone();
    csum.tx_checksum_offload = false;
    let res = in_netns(&na, move || async move {
        Overlay::new(csum, RtNetlink).setup().await.map(|_| ())
    });
    let has_ethtool = ["/usr/sbin/ethtool", "/sbin/ethtool"]
        .iter()
        .any(|p| Path::new(p).exists());
    if has_ethtool {
        res.expect("checksum offload off");
        let k = ok(&["ip", "netns", "exec", &na, "ethtool", "-k", VXLAN_DEVICE]);
        assert!(k.contains("tx-checksum-ip-generic: off"), "{k}");
    } else {
        let err = res.expect_err("no ethtool, yet no error");
        assert!(
            matches!(&err, RoutesError::Prerequisite(m) if m.contains("ethtool")),
            "{err}"
        );
    }

    // Dummy device with the cluster DNS address, idempotent, and its removal.
    in_netns(&na, || async {
        for _ in 0..2 {
            ensure_dummy_address(&RtNetlink, "k8slite-dns", ip("10.43.0.10"))
                .await
                .expect("dummy");
        }
    });
    let dns = ok(&["ip", "-n", &na, "-d", "addr", "show", "dev", "k8slite-dns"]);
    assert!(
        // A dummy, or a bridge without ports where the kernel has no dummy driver (these VMs).
        (dns.contains("dummy") || dns.contains("bridge")) && dns.contains("inet 10.43.0.10/32"),
        "{dns}"
    );
    assert_eq!(dns.matches("inet ").count(), 1, "{dns}");
    in_netns(&na, || async {
        remove_dummy(&RtNetlink, "k8slite-dns")
            .await
            .expect("remove dummy")
    });
    assert!(
        !run(&["ip", "-n", &na, "link", "show", "k8slite-dns"])
            .status
            .success()
    );

    // ---- host-gw (its setup removes the VXLAN device) ----
    let hg_a = config(Backend::HostGw, NODE_A_IP, CIDR_A);
    let hg_b = config(Backend::HostGw, NODE_B_IP, CIDR_B);
    let pb = peer("b", NODE_B_IP, CIDR_B, None);
    let pa = peer("a", NODE_A_IP, CIDR_A, None);
    let (la, ra) = setup_and_sync(&na, hg_a.clone(), vec![pb.clone()]);
    let (_, rb) = setup_and_sync(&nb, hg_b.clone(), vec![pa.clone()]);
    assert_eq!(la.mtu, 1500);
    assert!(
        !run(&["ip", "-n", &na, "link", "show", VXLAN_DEVICE])
            .status
            .success()
    );
    assert_eq!((ra.added, ra.removed), (1, 0), "{ra:?}");
    assert_eq!((rb.added, rb.removed), (1, 0), "{rb:?}");
    let routes = our_routes(&na);
    assert!(
        routes.contains(&format!("10.42.1.0/24 via {NODE_B_IP} dev eth0")),
        "{routes}"
    );
    assert!(t.ping(&t.pod_a, POD_B), "pod a → pod b over host-gw");
    assert!(t.ping(&t.pod_b, POD_A), "pod b → pod a over host-gw");
    for _ in 0..2 {
        let (_, r) = setup_and_sync(&na, hg_a.clone(), vec![pb.clone()]);
        assert!(r.is_noop(), "second host-gw sync changed something: {r:?}");
    }
    // A peer the kernel cannot route to (host-gw across subnets) is reported, the others are
    // still programmed.
    let far = peer("far", "192.168.7.13", "10.42.2.0/24", None);
    let (_, r) = setup_and_sync(&na, hg_a.clone(), vec![far, pb.clone()]);
    assert_eq!((r.added, r.removed, r.failed.len()), (0, 0, 1), "{r:?}");
    assert!(r.failed[0].contains("10.42.2.0/24"), "{r:?}");
    // b changes its IP: the route follows; b removed: the route goes, others stay.
    ok(&[
        "ip",
        "-n",
        &na,
        "route",
        "add",
        "10.99.0.0/16",
        "via",
        NODE_B_IP,
    ]);
    let (_, r) = setup_and_sync(
        &na,
        hg_a.clone(),
        vec![peer("b", "192.168.251.42", CIDR_B, None)],
    );
    assert_eq!((r.added, r.removed), (1, 0), "{r:?}");
    assert!(
        our_routes(&na).contains("via 192.168.251.42"),
        "{}",
        our_routes(&na)
    );
    let (_, r) = setup_and_sync(&na, hg_a.clone(), vec![]);
    assert_eq!((r.added, r.removed), (0, 1), "{r:?}");
    assert_eq!(our_routes(&na).trim(), "");
    let all = ok(&["ip", "-n", &na, "route", "show"]);
    assert!(
        all.contains("10.99.0.0/16"),
        "a foreign route was removed: {all}"
    );

    // Teardown leaves nothing of ours.
    setup_and_sync(&na, cfg_a.clone(), vec![peer_b]);
    teardown(&na, cfg_a);
    teardown(&nb, hg_b);
    for ns in [&na, &nb] {
        assert_eq!(our_routes(ns).trim(), "");
        assert!(
            !run(&["ip", "-n", ns, "link", "show", VXLAN_DEVICE])
                .status
                .success()
        );
    }
    assert!(ok(&["ip", "-n", &na, "route", "show"]).contains("10.99.0.0/16"));
}
