//! Unit tests of the overlay over [`RecordingNetlink`].

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid literal")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("valid literal")
}

/// Node a: 192.168.251.11 on eth0 (MTU 1500), pods 10.42.0.0/24.
fn kernel() -> RecordingNetlink {
    RecordingNetlink::new().with_uplink("eth0", 1500, net("192.168.251.11/24"))
}

fn cfg(backend: Backend) -> OverlayConfig {
    OverlayConfig::new(
        backend,
        ip("192.168.251.11"),
        net("10.42.0.0/24"),
        net("10.42.0.0/16"),
    )
}

fn peer(name: &str, node_ip: &str, cidr: &str, mac: Option<&str>) -> Peer {
    Peer {
        name: name.into(),
        node_ip: ip(node_ip),
        pod_cidr: net(cidr),
        vtep_mac: mac.map(str::to_string),
    }
}

const MAC_B: &str = "0a:00:00:00:00:0b";
const MAC_C: &str = "0a:00:00:00:00:0c";

fn mac(s: &str) -> MacAddr {
    s.parse().expect("valid literal")
}

fn eth0() -> u32 {
    2
}

#[test]
fn backend_parses_and_prints_the_flag_values() {
    assert_eq!(Backend::default(), Backend::Vxlan);
    for b in [Backend::Vxlan, Backend::HostGw, Backend::None] {
        assert_eq!(b.to_string().parse::<Backend>().expect("present"), b);
    }
    assert_eq!(
        "host-gw".parse::<Backend>().expect("present"),
        Backend::HostGw
    );
    let err = "flannel".parse::<Backend>().expect_err("must fail");
    assert!(err.to_string().contains("flannel"), "{err}");
}

#[test]
fn mac_addresses_parse_and_print() {
    let m: MacAddr = "0A:1b:2c:3d:4e:5f".parse().expect("present");
    assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
    assert!("0a:1b:2c".parse::<MacAddr>().is_err());
    assert!("zz:1b:2c:3d:4e:5f".parse::<MacAddr>().is_err());
}

#[tokio::test]
async fn vxlan_setup_creates_the_device_as_the_lab_did_and_is_idempotent() {
    let mut o = Overlay::new(cfg(Backend::Vxlan), kernel());
    let local = o.setup().await.expect("netlink");
    assert_eq!(local.mtu, 1450);
    assert_eq!(local.vtep_ip, Some(ip("192.168.251.11")));
    let dev = o.netlink().link(VXLAN_DEVICE).expect("device");
    assert_eq!(local.vtep_mac, dev.mac.map(|m| m.to_string()));
    assert!(dev.up);
    assert_eq!(dev.mtu, 1450);
    let effects = o.netlink().take_effects();
    assert_eq!(
        effects[0],
        NlEffect::AddVxlan(VxlanSpec {
            name: "k8slite.1".into(),
            vni: 1,
            port: 8472,
            local: ip("192.168.251.11"),
            parent: eth0(),
            mtu: 1450,
        })
    );
    assert!(effects.contains(&NlEffect::AddAddress(Address {
        index: dev.index,
        addr: net("10.42.0.0/32"),
    })));
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, NlEffect::TxChecksum { .. }))
    );

    // Again: nothing to do, same answer.
    let again = o.setup().await.expect("netlink");
    assert_eq!(again, local);
    assert_eq!(o.netlink().effects(), vec![]);
}

#[tokio::test]
async fn vxlan_setup_recreates_a_device_with_wrong_settings_and_fixes_mtu_in_place() {
    let nl = kernel();
    let mut o = Overlay::new(cfg(Backend::Vxlan), nl);
    o.setup().await.expect("netlink");
    let first = o.netlink().link(VXLAN_DEVICE).expect("present");

    // Wrong MTU and down: fixed in place, the device (and its MAC) kept.
    o.netlink().edit_link(VXLAN_DEVICE, |l| {
        l.mtu = 1300;
        l.up = false;
    });
    o.netlink().take_effects();
    o.setup().await.expect("netlink");
    assert_eq!(
        o.netlink().take_effects(),
        vec![NlEffect::SetLinkUp {
            name: VXLAN_DEVICE.into(),
            mtu: Some(1450)
        }]
    );
    assert_eq!(
        o.netlink().link(VXLAN_DEVICE).expect("present").mac,
        first.mac
    );

    // Wrong VNI: recreated.
    o.netlink().edit_link(VXLAN_DEVICE, |l| {
        if let LinkKind::Vxlan(v) = &mut l.kind {
            v.vni = 42;
        }
    });
    let local = o.setup().await.expect("netlink");
    let effects = o.netlink().take_effects();
    assert_eq!(effects[0], NlEffect::DelLink(VXLAN_DEVICE.into()));
    assert!(matches!(&effects[1], NlEffect::AddVxlan(s) if s.vni == 1));
    let second = o.netlink().link(VXLAN_DEVICE).expect("present");
    assert_ne!(second.mac, first.mac);
    assert_eq!(local.vtep_mac, second.mac.map(|m| m.to_string()));

    // Wrong local address: recreated too.
    o.netlink().edit_link(VXLAN_DEVICE, |l| {
        if let LinkKind::Vxlan(v) = &mut l.kind {
            v.local = Some(ip("192.168.251.99"));
        }
    });
    o.setup().await.expect("netlink");
    assert_eq!(
        o.netlink().take_effects()[0],
        NlEffect::DelLink(VXLAN_DEVICE.into())
    );
}

#[tokio::test]
async fn a_stale_address_on_the_device_is_replaced() {
    let mut o = Overlay::new(cfg(Backend::Vxlan), kernel());
    o.setup().await.expect("netlink");
    let idx = o.netlink().link(VXLAN_DEVICE).expect("present").index;
    o.netlink()
        .add_address(&Address {
            index: idx,
            addr: net("10.42.9.0/32"),
        })
        .await
        .expect("present");
    o.netlink().take_effects();
    o.setup().await.expect("netlink");
    assert_eq!(
        o.netlink().take_effects(),
        vec![NlEffect::DelAddress(Address {
            index: idx,
            addr: net("10.42.9.0/32")
        })]
    );
}

#[tokio::test]
async fn mtu_is_detected_from_the_node_ip_link_or_overridden() {
    let big = RecordingNetlink::new().with_uplink("eth0", 9000, net("192.168.251.11/24"));
    let mut o = Overlay::new(cfg(Backend::Vxlan), big);
    assert_eq!(o.setup().await.expect("netlink").mtu, 8950);

    let mut c = cfg(Backend::Vxlan);
    c.mtu = Some(1400);
    let mut o = Overlay::new(c, kernel());
    assert_eq!(o.setup().await.expect("netlink").mtu, 1400);
    assert_eq!(o.netlink().link(VXLAN_DEVICE).expect("present").mtu, 1400);

    let mut o = Overlay::new(cfg(Backend::HostGw), kernel());
    assert_eq!(o.setup().await.expect("netlink").mtu, 1500);

    let mut c = cfg(Backend::HostGw);
    c.mtu = Some(1280);
    let mut o = Overlay::new(c, kernel());
    assert_eq!(o.setup().await.expect("netlink").mtu, 1280);

    // The node IP is on no link: vxlan cannot work, none falls back.
    let mut c = cfg(Backend::Vxlan);
    c.node_ip = ip("192.168.251.77");
    let mut o = Overlay::new(c.clone(), kernel());
    let err = o.setup().await.expect_err("must fail");
    assert!(matches!(err, RoutesError::NodeIpNotFound(_)), "{err}");
    c.backend = Backend::None;
    let mut o = Overlay::new(c, kernel());
    assert_eq!(o.setup().await.expect("netlink").mtu, 1500);
    assert_eq!(o.netlink().effects(), vec![]);
}

#[tokio::test]
async fn checksum_offload_off_only_when_asked() {
    let mut c = cfg(Backend::Vxlan);
    c.tx_checksum_offload = false;
    let mut o = Overlay::new(c, kernel());
    o.setup().await.expect("netlink");
    assert!(o.netlink().effects().contains(&NlEffect::TxChecksum {
        device: VXLAN_DEVICE.into(),
        on: false
    }));
}

fn routes_of(nl: &RecordingNetlink) -> Vec<Route> {
    let mut r: Vec<Route> = nl
        .state()
        .routes
        .into_iter()
        .filter(|r| r.protocol == RTPROT_K8SLITE)
        .collect();
    r.sort_by_key(|r| r.dst);
    r
}

#[tokio::test]
async fn vxlan_sync_adds_route_neighbour_and_fdb_per_peer_then_nothing() {
    let mut o = Overlay::new(cfg(Backend::Vxlan), kernel());
    o.setup().await.expect("netlink");
    let vx = o.netlink().link(VXLAN_DEVICE).expect("present").index;
    o.netlink().take_effects();
    let peers = vec![
        peer("b", "192.168.251.12", "10.42.1.0/24", Some(MAC_B)),
        peer("c", "192.168.251.13", "10.42.2.0/24", Some(MAC_C)),
        peer("d", "192.168.251.14", "10.42.3.0/24", None),
        peer(
            "a",
            "192.168.251.11",
            "10.42.0.0/24",
            Some("0a:00:00:00:00:0a"),
        ),
    ];
    let r = o.sync(&peers).await.expect("netlink");
    assert_eq!(r.added, 6, "{r:?}");
    assert_eq!(r.removed, 0);
    assert_eq!(r.skipped, vec!["d".to_string(), "a".to_string()]);
    assert_eq!(
        routes_of(o.netlink()),
        vec![
            Route {
                dst: net("10.42.1.0/24"),
                gateway: Some(ip("10.42.1.0")),
                oif: Some(vx),
                onlink: true,
                protocol: RTPROT_K8SLITE,
            },
            Route {
                dst: net("10.42.2.0/24"),
                gateway: Some(ip("10.42.2.0")),
                oif: Some(vx),
                onlink: true,
                protocol: RTPROT_K8SLITE,
            },
        ]
    );
    let s = o.netlink().state();
    assert!(s.neighbours.contains(&Neighbour {
        index: vx,
        ip: ip("10.42.1.0"),
        mac: mac(MAC_B),
        permanent: true
    }));
    assert!(s.fdb.contains(&FdbEntry {
        index: vx,
        mac: mac(MAC_C),
        dst: ip("192.168.251.13")
    }));
    assert_eq!(s.neighbours.len(), 2);
    assert_eq!(s.fdb.len(), 2);

    o.netlink().take_effects();
    let r = o.sync(&peers).await.expect("netlink");
    assert!(r.is_noop(), "{r:?}");
    assert_eq!(o.netlink().effects(), vec![]);
}

#[tokio::test]
async fn kernel_neighbours_of_the_device_are_left_alone() {
    let mut o = Overlay::new(cfg(Backend::Vxlan), kernel());
    o.setup().await.expect("netlink");
    let vx = o.netlink().link(VXLAN_DEVICE).expect("present").index;
    // What the kernel keeps on a VXLAN device once it is up (IPv6 multicast, NOARP).
    let mld = Neighbour {
        index: vx,
        ip: ip("ff02::16"),
        mac: mac("33:33:00:00:00:16"),
        permanent: false,
    };
    o.netlink().replace_neighbour(&mld).await.expect("netlink");
    o.netlink().take_effects();
    let r = o.sync(&[]).await.expect("netlink");
    assert!(r.is_noop(), "{r:?}");
    assert_eq!(o.netlink().effects(), vec![]);
    assert!(o.netlink().state().neighbours.contains(&mld));
}

#[tokio::test]
async fn vxlan_sync_follows_changed_and_removed_peers() {
    let mut o = Overlay::new(cfg(Backend::Vxlan), kernel());
    o.setup().await.expect("netlink");
    let vx = o.netlink().link(VXLAN_DEVICE).expect("present").index;
    let b = peer("b", "192.168.251.12", "10.42.1.0/24", Some(MAC_B));
    let c = peer("c", "192.168.251.13", "10.42.2.0/24", Some(MAC_C));
    o.sync(&[b.clone(), c.clone()]).await.expect("netlink");
    o.netlink().take_effects();

    // b's node IP changed: only its FDB entry, replaced in place.
    let mut b2 = b.clone();
    b2.node_ip = ip("192.168.251.22");
    let r = o.sync(&[b2.clone(), c.clone()]).await.expect("netlink");
    assert_eq!((r.added, r.removed), (1, 0));
    assert_eq!(
        o.netlink().take_effects(),
        vec![NlEffect::ReplaceFdb(FdbEntry {
            index: vx,
            mac: mac(MAC_B),
            dst: ip("192.168.251.22")
        })]
    );

    // b's VTEP MAC changed (device recreated there): new FDB entry, old one gone, neighbour
    // replaced; the route stays.
    let mut b3 = b2.clone();
    b3.vtep_mac = Some("0a:00:00:00:00:bb".into());
    let r = o.sync(&[b3.clone(), c.clone()]).await.expect("netlink");
    assert_eq!((r.added, r.removed), (2, 1), "{r:?}");
    let s = o.netlink().state();
    assert!(!s.fdb.iter().any(|f| f.mac == mac(MAC_B)));
    assert!(s.neighbours.contains(&Neighbour {
        index: vx,
        ip: ip("10.42.1.0"),
        mac: mac("0a:00:00:00:00:bb"),
        permanent: true
    }));
    o.netlink().take_effects();

    // c's pod CIDR changed: new route and neighbour, old ones deleted.
    let mut c2 = c.clone();
    c2.pod_cidr = net("10.42.7.0/24");
    let r = o.sync(&[b3.clone(), c2.clone()]).await.expect("netlink");
    assert_eq!((r.added, r.removed), (2, 2), "{r:?}");
    let dsts: Vec<IpNet> = routes_of(o.netlink()).iter().map(|r| r.dst).collect();
    assert_eq!(dsts, vec![net("10.42.1.0/24"), net("10.42.7.0/24")]);
    assert!(
        !o.netlink()
            .state()
            .neighbours
            .iter()
            .any(|n| n.ip == ip("10.42.2.0"))
    );

    // c removed: its route, neighbour and FDB entry go.
    let r = o.sync(std::slice::from_ref(&b3)).await.expect("netlink");
    assert_eq!((r.added, r.removed), (0, 3), "{r:?}");
    let s = o.netlink().state();
    assert_eq!(routes_of(o.netlink()).len(), 1);
    assert_eq!(s.neighbours.len(), 1);
    assert_eq!(s.fdb.len(), 1);
}

#[tokio::test]
async fn a_restarted_agent_only_fixes_differences() {
    let nl = std::sync::Arc::new(kernel());
    let b = peer("b", "192.168.251.12", "10.42.1.0/24", Some(MAC_B));
    let c = peer("c", "192.168.251.13", "10.42.2.0/24", Some(MAC_C));
    let mut first = Overlay::new(cfg(Backend::Vxlan), ArcNl(nl.clone()));
    let local = first.setup().await.expect("netlink");
    first.sync(&[b.clone(), c.clone()]).await.expect("netlink");
    drop(first);
    nl.take_effects();

    // Same peers: nothing at all.
    let mut second = Overlay::new(cfg(Backend::Vxlan), ArcNl(nl.clone()));
    assert_eq!(second.setup().await.expect("netlink"), local);
    let r = second.sync(&[b.clone(), c.clone()]).await.expect("netlink");
    assert!(r.is_noop(), "{r:?}");
    assert_eq!(nl.take_effects(), vec![]);

    // c went away while the agent was down: only c's entries are removed.
    let mut third = Overlay::new(cfg(Backend::Vxlan), ArcNl(nl.clone()));
    third.setup().await.expect("netlink");
    let r = third.sync(std::slice::from_ref(&b)).await.expect("netlink");
    assert_eq!((r.added, r.removed), (0, 3));
    assert!(nl.take_effects().iter().all(|e| matches!(
        e,
        NlEffect::DelRoute(_) | NlEffect::DelNeighbour(_) | NlEffect::DelFdb(_)
    )));
}

/// A shared fake, as two agent lifetimes over one kernel.
struct ArcNl(std::sync::Arc<RecordingNetlink>);

#[async_trait::async_trait]
impl Netlink for ArcNl {
    async fn links(&self) -> Result<Vec<Link>> {
        self.0.links().await
    }
    async fn add_vxlan(&self, spec: &VxlanSpec) -> Result<()> {
        self.0.add_vxlan(spec).await
    }
    async fn add_dummy(&self, name: &str) -> Result<()> {
        self.0.add_dummy(name).await
    }
    async fn set_link_up(&self, index: u32, mtu: Option<u32>) -> Result<()> {
        self.0.set_link_up(index, mtu).await
    }
    async fn del_link(&self, index: u32) -> Result<()> {
        self.0.del_link(index).await
    }
    async fn addresses(&self) -> Result<Vec<Address>> {
        self.0.addresses().await
    }
    async fn add_address(&self, a: &Address) -> Result<()> {
        self.0.add_address(a).await
    }
    async fn del_address(&self, a: &Address) -> Result<()> {
        self.0.del_address(a).await
    }
    async fn routes(&self) -> Result<Vec<Route>> {
        self.0.routes().await
    }
    async fn replace_route(&self, r: &Route) -> Result<()> {
        self.0.replace_route(r).await
    }
    async fn del_route(&self, r: &Route) -> Result<()> {
        self.0.del_route(r).await
    }
    async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        self.0.neighbours(index).await
    }
    async fn replace_neighbour(&self, n: &Neighbour) -> Result<()> {
        self.0.replace_neighbour(n).await
    }
    async fn del_neighbour(&self, n: &Neighbour) -> Result<()> {
        self.0.del_neighbour(n).await
    }
    async fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        self.0.fdb(index).await
    }
    async fn replace_fdb(&self, f: &FdbEntry) -> Result<()> {
        self.0.replace_fdb(f).await
    }
    async fn del_fdb(&self, f: &FdbEntry) -> Result<()> {
        self.0.del_fdb(f).await
    }
    async fn set_tx_checksum_offload(&self, device: &str, on: bool) -> Result<()> {
        self.0.set_tx_checksum_offload(device, on).await
    }
}

#[tokio::test]
async fn sync_recreates_a_vanished_device_and_reports_the_new_mac() {
    let mut o = Overlay::new(cfg(Backend::Vxlan), kernel());
    let local = o.setup().await.expect("netlink");
    let b = peer("b", "192.168.251.12", "10.42.1.0/24", Some(MAC_B));
    o.sync(std::slice::from_ref(&b)).await.expect("netlink");
    let idx = o.netlink().link(VXLAN_DEVICE).expect("present").index;
    o.netlink().del_link(idx).await.expect("netlink");
    let r = o.sync(std::slice::from_ref(&b)).await.expect("netlink");
    let again = r.recreated.clone().expect("recreated");
    assert_ne!(again.vtep_mac, local.vtep_mac);
    assert_eq!(r.added, 3, "{r:?}");
}

#[tokio::test]
async fn host_gw_routes_follow_the_nodes_and_leave_other_routes_alone() {
    let foreign = Route {
        dst: net("10.99.0.0/16"),
        gateway: Some(ip("192.168.251.1")),
        oif: Some(eth0()),
        onlink: false,
        protocol: 4,
    };
    let stale = Route {
        dst: net("10.42.9.0/24"),
        gateway: Some(ip("192.168.251.19")),
        oif: Some(eth0()),
        onlink: false,
        protocol: RTPROT_K8SLITE,
    };
    let nl = kernel().with_route(foreign).with_route(stale);
    let mut o = Overlay::new(cfg(Backend::HostGw), nl);
    assert_eq!(
        o.setup().await.expect("netlink"),
        LocalOverlay {
            mtu: 1500,
            vtep_mac: None,
            vtep_ip: None
        }
    );
    let b = peer("b", "192.168.251.12", "10.42.1.0/24", None);
    let c = peer("c", "192.168.251.13", "10.42.2.0/24", None);
    let r = o.sync(&[b.clone(), c.clone()]).await.expect("netlink");
    assert_eq!((r.added, r.removed), (2, 1), "{r:?}");
    assert!(r.skipped.is_empty());
    let want_b = Route {
        dst: net("10.42.1.0/24"),
        gateway: Some(ip("192.168.251.12")),
        oif: Some(eth0()),
        onlink: false,
        protocol: RTPROT_K8SLITE,
    };
    assert!(routes_of(o.netlink()).contains(&want_b));
    assert!(o.netlink().state().routes.contains(&foreign));
    assert!(!o.netlink().state().routes.contains(&stale));

    // The kernel reports the output link it resolved (the fake too): still the same route.
    o.netlink().take_effects();
    assert!(
        o.sync(&[b.clone(), c.clone()])
            .await
            .expect("netlink")
            .is_noop()
    );
    assert_eq!(o.netlink().effects(), vec![]);

    // b moved to another IP: replaced. c removed: deleted.
    let mut b2 = b.clone();
    b2.node_ip = ip("192.168.251.32");
    let r = o.sync(std::slice::from_ref(&b2)).await.expect("netlink");
    assert_eq!((r.added, r.removed), (1, 1));
    assert_eq!(
        routes_of(o.netlink()),
        vec![Route {
            gateway: Some(ip("192.168.251.32")),
            ..want_b
        }]
    );
    assert!(o.netlink().state().routes.contains(&foreign));

    // Teardown: our routes go, the foreign one stays.
    o.teardown().await.expect("netlink");
    assert_eq!(routes_of(o.netlink()), vec![]);
    assert!(o.netlink().state().routes.contains(&foreign));
}

#[tokio::test]
async fn a_refused_route_does_not_stop_the_others() {
    let mut o = Overlay::new(cfg(Backend::HostGw), kernel());
    o.setup().await.expect("setup");
    // c's node is on another subnet: host-gw cannot reach it (the kernel says unreachable).
    let b = peer("b", "192.168.251.12", "10.42.1.0/24", None);
    let c = peer("c", "192.168.7.13", "10.42.2.0/24", None);
    let r = o.sync(&[c.clone(), b.clone()]).await.expect("sync");
    assert_eq!(r.added, 1, "{r:?}");
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(r.failed[0].contains("10.42.2.0/24"), "{r:?}");
    assert_eq!(routes_of(o.netlink()).len(), 1);
    // Tried again next time, the rest untouched.
    o.netlink().take_effects();
    let r = o.sync(&[c, b]).await.expect("sync");
    assert_eq!((r.added, r.removed, r.failed.len()), (0, 0, 1), "{r:?}");
}

#[tokio::test]
async fn host_gw_setup_removes_a_leftover_vxlan_device_and_replaces_vxlan_routes() {
    let nl = std::sync::Arc::new(kernel());
    let b = peer("b", "192.168.251.12", "10.42.1.0/24", Some(MAC_B));
    let mut vx = Overlay::new(cfg(Backend::Vxlan), ArcNl(nl.clone()));
    vx.setup().await.expect("netlink");
    vx.sync(std::slice::from_ref(&b)).await.expect("netlink");
    let mut hg = Overlay::new(cfg(Backend::HostGw), ArcNl(nl.clone()));
    hg.setup().await.expect("netlink");
    assert!(nl.link(VXLAN_DEVICE).is_none());
    hg.sync(std::slice::from_ref(&b)).await.expect("netlink");
    assert_eq!(routes_of(&nl).len(), 1);
    assert_eq!(routes_of(&nl)[0].gateway, Some(ip("192.168.251.12")));
    assert!(nl.state().fdb.is_empty());
}

#[tokio::test]
async fn vxlan_teardown_removes_the_device_and_its_entries() {
    let mut o = Overlay::new(cfg(Backend::Vxlan), kernel());
    o.setup().await.expect("netlink");
    o.sync(&[peer("b", "192.168.251.12", "10.42.1.0/24", Some(MAC_B))])
        .await
        .expect("present");
    o.teardown().await.expect("netlink");
    let s = o.netlink().state();
    assert!(o.netlink().link(VXLAN_DEVICE).is_none());
    assert!(routes_of(o.netlink()).is_empty());
    assert!(s.neighbours.is_empty() && s.fdb.is_empty());
    // Twice is fine.
    o.teardown().await.expect("netlink");
}

#[tokio::test]
async fn none_does_nothing() {
    let mut o = Overlay::new(cfg(Backend::None), kernel());
    o.setup().await.expect("netlink");
    let r = o
        .sync(&[peer("b", "192.168.251.12", "10.42.1.0/24", Some(MAC_B))])
        .await
        .expect("present");
    assert!(r.is_noop());
    assert_eq!(o.netlink().effects(), vec![]);
}

#[tokio::test]
async fn dummy_device_holds_exactly_the_dns_address() {
    let nl = kernel();
    ensure_dummy_address(&nl, "k8slite-dns", ip("10.43.0.10"))
        .await
        .expect("present");
    let l = nl.link("k8slite-dns").expect("dummy");
    assert_eq!(l.kind, LinkKind::Dummy);
    assert!(l.up);
    let addrs = |nl: &RecordingNetlink| -> Vec<IpNet> {
        nl.state()
            .addresses
            .iter()
            .filter(|a| a.index == l.index)
            .map(|a| a.addr)
            .collect()
    };
    assert_eq!(addrs(&nl), vec![net("10.43.0.10/32")]);
    nl.take_effects();
    ensure_dummy_address(&nl, "k8slite-dns", ip("10.43.0.10"))
        .await
        .expect("present");
    assert_eq!(nl.effects(), vec![]);
    ensure_dummy_address(&nl, "k8slite-dns", ip("10.43.0.53"))
        .await
        .expect("present");
    assert_eq!(addrs(&nl), vec![net("10.43.0.53/32")]);
    remove_dummy(&nl, "k8slite-dns").await.expect("netlink");
    assert!(nl.link("k8slite-dns").is_none());
    remove_dummy(&nl, "k8slite-dns").await.expect("netlink");
}

fn node(name: &str, cidr: Option<&str>, ips: &[&str], mac: Option<&str>) -> Node {
    let mut annotations = serde_json::Map::new();
    if let Some(m) = mac {
        annotations.insert(VTEP_MAC_ANNOTATION.into(), m.into());
    }
    let addresses: Vec<serde_json::Value> = ips
        .iter()
        .map(|i| serde_json::json!({"type": "InternalIP", "address": i}))
        .chain([serde_json::json!({"type": "Hostname", "address": name})])
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"podCIDR": cidr},
        "status": {"addresses": addresses},
    }))
    .expect("present")
}

#[test]
fn peers_from_nodes_skips_self_and_incomplete_nodes() {
    let nodes = vec![
        node("a", Some("10.42.0.0/24"), &["192.168.251.11"], Some(MAC_B)),
        node(
            "b",
            Some("10.42.1.0/24"),
            &["fd00::12", "192.168.251.12"],
            Some("0A:00:00:00:00:0B"),
        ),
        node("c", None, &["192.168.251.13"], None),
        node("d", Some("10.42.3.0/24"), &[], None),
        node("e", Some("10.42.4.0/24"), &["192.168.251.15"], None),
    ];
    let peers = peers_from_nodes("a", &nodes);
    assert_eq!(
        peers,
        vec![
            peer("b", "192.168.251.12", "10.42.1.0/24", Some(MAC_B)),
            peer("e", "192.168.251.15", "10.42.4.0/24", None),
        ]
    );
}

#[test]
fn local_annotations_publish_the_vtep_for_vxlan_only() {
    let local = LocalOverlay {
        mtu: 1450,
        vtep_mac: Some(MAC_B.into()),
        vtep_ip: Some(ip("192.168.251.12")),
    };
    let a = local_annotations(Backend::Vxlan, &local);
    assert_eq!(a[VTEP_MAC_ANNOTATION], MAC_B);
    assert_eq!(a[VTEP_IP_ANNOTATION], "192.168.251.12");
    assert_eq!(a[BACKEND_ANNOTATION], "vxlan");
    let a = local_annotations(Backend::HostGw, &local);
    assert_eq!(a.len(), 1);
    assert_eq!(a[BACKEND_ANNOTATION], "host-gw");
}

#[test]
fn overlay_futures_can_be_spawned() {
    fn is_send<T: Send>(_: &T) {}
    let mut o = Overlay::new(cfg(Backend::Vxlan), RtNetlink);
    is_send(&o.setup());
    is_send(&o.sync(&[]));
    is_send(&o.teardown());
    is_send(&ensure_dummy_address(
        &RtNetlink,
        "k8slite-dns",
        ip("10.43.0.10"),
    ));
    is_send(&remove_dummy(&RtNetlink, "k8slite-dns"));
}
