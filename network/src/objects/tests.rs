use super::*;

#[test]
fn slices_keep_what_the_proxy_and_dns_read() {
    let s: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-abc", "namespace": "ns", "uid": "u", "resourceVersion": "7",
            "generateName": "web-", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"kubernetes.io/service-name": "web", "app": "web",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "annotations": {"a": "b"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "s"}]},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": true},
            "hostname": "web-0", "nodeName": "n1", "zone": "z",
            "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "ns"}},
            {"addresses": ["fd00:0::1", "bad"]}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("test value");
    let i = SliceInfo::from(&s);
    assert_eq!(i.namespace(), Some("ns"));
    assert_eq!(i.service(), Some("web"));
    assert_eq!(&*i.address_type, "IPv4");
    let e = &i.endpoints[0];
    assert_eq!(e.addresses.len(), 1);
    assert_eq!(e.addresses[0], Addr::Ip("10.42.0.5".parse().expect("ip")));
    assert_eq!(e.ready, Some(true));
    assert_eq!((e.serving, e.terminating), (None, None));
    assert_eq!(e.hostname.as_deref(), Some("web-0"));
    assert_eq!(e.node_name.as_deref(), Some("n1"));
    // Addresses keep their text when it is not the canonical form (DNS names use it).
    let e = &i.endpoints[1];
    assert_eq!(e.ready, None);
    assert_eq!(e.addresses[0].text(), "fd00:0::1");
    assert_eq!(e.addresses[0].ip(), "fd00::1".parse().ok());
    assert_eq!(e.addresses[1].text(), "bad");
    assert_eq!(e.addresses[1].ip(), None);
    let ports = i.ports.as_deref().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert!(matches!(ports[0].protocol, Some(Text::Static(_))));
    assert_eq!(ports[0].port, Some(8080));
}

#[test]
fn services_keep_uid_spec_and_load_balancer() {
    let s: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "u", "resourceVersion": "7",
            "labels": {"app": "web"}, "annotations": {"x": "y"},
            "managedFields": [{"manager": "kubectl"}]},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"],
            "externalIPs": ["192.0.2.9"], "loadBalancerSourceRanges": ["198.51.100.0/24"],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
            "healthCheckNodePort": 32000, "publishNotReadyAddresses": true,
            "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "VIP"}]},
            "conditions": [{"type": "x", "status": "True", "reason": "r", "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .expect("test value");
    let i = ServiceInfo::from(&s);
    assert_eq!(i.namespace(), Some("ns"));
    assert_eq!(i.name(), Some("web"));
    assert_eq!(i.uid(), Some("u"));
    let spec = i.spec.as_ref().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.9"));
    assert_eq!(spec.cluster_ips.as_deref().map(<[_]>::len), Some(1));
    assert_eq!(spec.external_ips.as_deref().map(<[_]>::len), Some(1));
    assert_eq!(spec.source_ranges.as_deref().map(<[_]>::len), Some(1));
    assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
    assert_eq!(spec.affinity_timeout, Some(60));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(spec.health_check_node_port, Some(32000));
    assert_eq!(spec.publish_not_ready, Some(true));
    let p = &spec.ports.as_deref().expect("ports")[0];
    assert_eq!(
        (
            p.name.as_deref(),
            p.protocol.as_deref(),
            p.port,
            p.node_port
        ),
        (Some("http"), Some("TCP"), 80, Some(30080))
    );
    assert_eq!(i.ingress.len(), 1);
    assert_eq!(i.ingress[0].ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(i.ingress[0].ip_mode.as_deref(), Some("VIP"));
}

#[test]
fn absent_stays_absent() {
    let s: Service = serde_json::from_value(serde_json::json!({"metadata": {}})).expect("svc");
    let i = ServiceInfo::from(&s);
    assert_eq!(i, ServiceInfo::default());
    let s: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "a"}, "spec": {"type": "Odd"}
    }))
    .expect("svc");
    let i = ServiceInfo::from(&s);
    let spec = i.spec.as_ref().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("Odd"));
    assert!(spec.ports.is_none() && spec.cluster_ips.is_none() && spec.cluster_ip.is_none());
}
