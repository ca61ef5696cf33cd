use super::*;
use serde_json::{Value, json};

fn node(name: &str, internal: &str, external: Option<&str>, ready: bool, labels: Value) -> Node {
    let mut addrs = vec![json!({"type": "InternalIP", "address": internal})];
    if let Some(e) = external {
        addrs.push(json!({"type": "ExternalIP", "address": e}));
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {
            "addresses": addrs,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    }))
    .expect("node")
}

fn svc(ns: &str, name: &str, created: &str, ports: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "creationTimestamp": created},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.43.1.1", "ports": ports}
    }))
    .expect("service")
}

fn ingress_ips(d: &Decision) -> Vec<String> {
    assert!(
        d.ingress
            .iter()
            .all(|i| i.ip_mode.as_deref() == Some("VIP")),
        "{d:?}"
    );
    d.ingress.iter().filter_map(|i| i.ip.clone()).collect()
}

fn three_nodes() -> Vec<Node> {
    vec![
        node("c", "10.0.0.3", None, true, json!({})),
        node("a", "10.0.0.1", Some("203.0.113.1"), true, json!({})),
        node("b", "10.0.0.2", None, true, json!({})),
    ]
}

#[test]
fn ingress_lists_external_else_internal_ips_of_ready_schedulable_nodes_sorted() {
    let mut nodes = three_nodes();
    nodes.push(node("d", "10.0.0.4", None, false, json!({})));
    let mut cordoned = node("e", "10.0.0.5", None, true, json!({}));
    cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        unschedulable: Some(true),
        ..Default::default()
    });
    nodes.push(cordoned);
    nodes.push(node(
        "f",
        "10.0.0.6",
        None,
        true,
        json!({EXCLUDE_LB_LABEL: ""}),
    ));
    let web = svc(
        "default",
        "web",
        "2026-01-01T00:00:00Z",
        json!([{"port": 80}]),
    );
    let d = decide(&web, &[&web], &nodes).expect("managed");
    assert_eq!(ingress_ips(&d), ["10.0.0.2", "10.0.0.3", "203.0.113.1"]);
    assert!(d.clashes.is_empty());
}

#[test]
fn enablelb_label_restricts_and_false_excludes() {
    let web = svc(
        "default",
        "web",
        "2026-01-01T00:00:00Z",
        json!([{"port": 80}]),
    );
    let mut nodes = three_nodes();
    nodes[2] = node(
        "b",
        "10.0.0.2",
        None,
        true,
        json!({ENABLE_LB_LABEL: "false"}),
    );
    let d = decide(&web, &[&web], &nodes).expect("managed");
    assert_eq!(ingress_ips(&d), ["10.0.0.3", "203.0.113.1"]);
    nodes[0] = node(
        "c",
        "10.0.0.3",
        None,
        true,
        json!({ENABLE_LB_LABEL: "true"}),
    );
    let d = decide(&web, &[&web], &nodes).expect("managed");
    assert_eq!(ingress_ips(&d), ["10.0.0.3"]);
    // the only labelled node NotReady: no ingress at all (not the unlabelled ones)
    nodes[0] = node(
        "c",
        "10.0.0.3",
        None,
        false,
        json!({ENABLE_LB_LABEL: "true"}),
    );
    let d = decide(&web, &[&web], &nodes).expect("managed");
    assert!(d.ingress.is_empty(), "{d:?}");
}

#[test]
fn other_classes_are_left_alone_and_other_types_lose_their_ingress() {
    let nodes = three_nodes();
    let mut metallb = svc(
        "default",
        "m",
        "2026-01-01T00:00:00Z",
        json!([{"port": 80}]),
    );
    if let Some(s) = metallb.spec.as_mut() {
        s.load_balancer_class = Some("metallb.io/metallb".into());
    }
    assert_eq!(decide(&metallb, &[&metallb], &nodes), None);
    let mut plain = svc(
        "default",
        "p",
        "2026-01-01T00:00:00Z",
        json!([{"port": 80}]),
    );
    if let Some(s) = plain.spec.as_mut() {
        s.type_ = Some("ClusterIP".into());
    }
    assert_eq!(decide(&plain, &[&plain], &nodes), Some(Decision::default()));
    // a Service of another class does not hold ports for ours
    let web = svc(
        "default",
        "web",
        "2026-02-01T00:00:00Z",
        json!([{"port": 80}]),
    );
    let d = decide(&web, &[&metallb, &web], &nodes).expect("managed");
    assert_eq!(d.ingress.len(), 3);
    assert!(d.clashes.is_empty());
}

#[test]
fn older_service_keeps_a_port_the_newer_one_reports_the_clash() {
    let nodes = three_nodes();
    let old = svc(
        "default",
        "old",
        "2026-01-01T00:00:00Z",
        json!([{"port": 80}, {"port": 443}]),
    );
    let new = svc(
        "apps",
        "new",
        "2026-02-01T00:00:00Z",
        json!([{"port": 443}, {"port": 53, "protocol": "UDP"}]),
    );
    let udp = svc(
        "apps",
        "dns",
        "2026-03-01T00:00:00Z",
        json!([{"port": 80, "protocol": "UDP"}]),
    );
    let all = [&new, &old, &udp];
    let d_old = decide(&old, &all, &nodes).expect("managed");
    assert_eq!(d_old.ingress.len(), 3);
    assert!(d_old.clashes.is_empty());
    let d_new = decide(&new, &all, &nodes).expect("managed");
    assert!(d_new.ingress.is_empty(), "{d_new:?}");
    assert_eq!(
        d_new.clashes,
        [Clash {
            port: 443,
            protocol: "TCP".into(),
            holder: "default/old".into(),
            nodes: vec!["a".into(), "b".into(), "c".into()],
        }]
    );
    assert!(d_new.clashes[0].message().contains("default/old"));
    assert!(d_new.clashes[0].message().contains("443/TCP"));
    // same port number, other protocol: no clash
    let d_udp = decide(&udp, &all, &nodes).expect("managed");
    assert_eq!(d_udp.ingress.len(), 3);
    assert!(d_udp.clashes.is_empty());
    // a Service that lost a clash holds none of its other ports (53/UDP is free for others)
    let third = svc(
        "apps",
        "third",
        "2026-04-01T00:00:00Z",
        json!([{"port": 53, "protocol": "UDP"}]),
    );
    let d3 = decide(&third, &[&old, &new, &third], &nodes).expect("managed");
    assert_eq!(d3.ingress.len(), 3, "{d3:?}");
    // the holder gone: the newer one gets the nodes
    let d_new = decide(&new, &[&new, &udp], &nodes).expect("managed");
    assert_eq!(d_new.ingress.len(), 3);
}

#[test]
fn a_clash_names_every_holder() {
    let nodes = three_nodes();
    let first = svc(
        "default",
        "first",
        "2026-01-01T00:00:00Z",
        json!([{"port": 8080}]),
    );
    let old = svc(
        "default",
        "old",
        "2026-01-02T00:00:00Z",
        json!([{"port": 80}]),
    );
    let new = svc(
        "default",
        "new",
        "2026-01-03T00:00:00Z",
        json!([{"port": 80}, {"port": 8080}]),
    );
    let d = decide(&new, &[&first, &old, &new], &nodes).expect("managed");
    assert!(d.ingress.is_empty());
    let holders: Vec<&str> = d.clashes.iter().map(|c| c.holder.as_str()).collect();
    assert_eq!(holders, ["default/old", "default/first"]);
}

#[test]
fn ties_in_age_are_broken_by_namespace_and_name_and_ipv6_families_are_honoured() {
    let nodes = vec![
        serde_json::from_value::<Node>(json!({
            "metadata": {"name": "a"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                              {"type": "InternalIP", "address": "fd00::1"}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .expect("node"),
    ];
    let a = svc(
        "default",
        "a",
        "2026-01-01T00:00:00Z",
        json!([{"port": 80}]),
    );
    let b = svc(
        "default",
        "b",
        "2026-01-01T00:00:00Z",
        json!([{"port": 80}]),
    );
    assert_eq!(decide(&a, &[&b, &a], &nodes).expect("a").ingress.len(), 1);
    assert_eq!(decide(&b, &[&b, &a], &nodes).expect("b").clashes.len(), 1);
    let mut dual = svc(
        "default",
        "dual",
        "2026-01-01T00:00:00Z",
        json!([{"port": 81}]),
    );
    if let Some(s) = dual.spec.as_mut() {
        s.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    }
    let d = decide(&dual, &[&dual], &nodes).expect("dual");
    assert_eq!(ingress_ips(&d), ["10.0.0.1", "fd00::1"]);
}
