//! Unit tests of the renderer and the proxier (recording backend and conntrack).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;

mod datapath;
mod incremental;

fn cfg() -> ProxyConfig {
    let mut c = ProxyConfig::new(
        "node-a",
        vec!["192.168.1.10".parse().expect("ip")],
        "10.42.0.0/16".parse().expect("cidr"),
        "10.43.0.0/16".parse().expect("cidr"),
    );
    c.pod_cidr = Some("10.42.0.0/24".parse().expect("cidr"));
    c
}

fn svc(ns: &str, name: &str, spec: Value) -> Arc<Service> {
    svc_status(ns, name, spec, json!({}))
}

fn svc_status(ns: &str, name: &str, spec: Value, status: Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": spec,
            "status": status,
        }))
        .expect("service"),
    )
}

fn web(ip: &str, extra: Value) -> Arc<Service> {
    let mut spec = json!({"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    svc("default", "web", spec)
}

/// An endpoint: (ip, node, ready, serving, terminating).
fn ep(ip: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({"addresses": [ip], "nodeName": node,
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
}

fn ready(ip: &str, node: &str) -> Value {
    ep(ip, node, true, true, false)
}

fn slice(ns: &str, svc: &str, id: &str, ports: Value, endpoints: Vec<Value>) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("{svc}-{id}"),
                "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .expect("slice"),
    )
}

fn http_slice(svc: &str, eps: Vec<Value>) -> Arc<EndpointSlice> {
    slice(
        "default",
        svc,
        "a",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        eps,
    )
}

fn rend(c: &ProxyConfig, s: &[Arc<Service>], e: &[Arc<EndpointSlice>]) -> Rendered {
    render(c, s, e, &BTreeSet::new())
}

/// Lines of the text containing every needle.
fn lines<'a>(text: &'a str, needles: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

fn one<'a>(text: &'a str, needles: &[&str]) -> &'a str {
    let l = lines(text, needles);
    assert_eq!(
        l.len(),
        1,
        "want one line with {needles:?}, got {l:?}\n{text}"
    );
    l[0]
}

/// The `-j` target of a line.
fn target(line: &str) -> &str {
    line.split(" -j ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or("")
}

/// The rules of chain `c`.
fn chain<'a>(text: &'a str, c: &str) -> Vec<&'a str> {
    let head = format!("-A {c} ");
    text.lines().filter(|l| l.starts_with(&head)).collect()
}

/// The table section of the text.
fn table<'a>(text: &'a str, t: &str) -> &'a str {
    let start = text.find(&format!("*{t}\n")).expect("table");
    let rest = &text[start..];
    &rest[..rest.find("COMMIT").expect("commit")]
}

#[test]
fn cluster_ip_spreads_over_two_endpoints_with_masquerade_and_hairpin() {
    let s = [web("10.43.0.100", json!({}))];
    let e = [http_slice(
        "web",
        vec![ready("10.42.0.2", "node-a"), ready("10.42.1.3", "node-b")],
    )];
    let r = rend(&cfg(), &s, &e);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.services, 1);
    let nat = table(&r.text, "nat");
    let entry = one(
        nat,
        &[
            "-A K8SLITE-SERVICES -d 10.43.0.100/32 -p tcp -m tcp --dport 80",
            "default/web:http cluster IP",
        ],
    );
    let svc_chain = target(entry);
    assert!(
        svc_chain.starts_with("K8SLITE-SVC-") && svc_chain.len() <= 28,
        "{svc_chain}"
    );
    let rules = chain(nat, svc_chain);
    assert_eq!(rules.len(), 3, "{rules:?}");
    assert!(
        rules[0].contains(
            "! -s 10.42.0.0/16 -d 10.43.0.100/32 -p tcp -m tcp --dport 80 -j K8SLITE-MARK-MASQ"
        ),
        "{rules:?}"
    );
    assert!(
        rules[1].contains("-m statistic --mode random --probability 0.5000000000 -j K8SLITE-SEP-"),
        "{rules:?}"
    );
    assert!(
        !rules[2].contains("statistic"),
        "last endpoint unconditional: {rules:?}"
    );
    for (rule, ip) in [(rules[1], "10.42.0.2"), (rules[2], "10.42.1.3")] {
        let sep = chain(nat, target(rule));
        assert_eq!(sep.len(), 2, "{sep:?}");
        assert!(
            sep[0].ends_with(&format!("-s {ip}/32 -j K8SLITE-MARK-MASQ")),
            "hairpin: {sep:?}"
        );
        assert!(
            sep[1].ends_with(&format!("-p tcp -m tcp -j DNAT --to-destination {ip}:8080")),
            "{sep:?}"
        );
    }
    // Marked packets are masqueraded in our POSTROUTING chain.
    one(nat, &["-A K8SLITE-MARK-MASQ -j MARK --or-mark 0x4000"]);
    one(
        nat,
        &[
            "-A K8SLITE-POSTROUTING",
            "SNAT",
            "-j MASQUERADE --random-fully",
        ],
    );
    // Declared chains, no appends to built-in chains in the restore text.
    for l in r.text.lines().filter(|l| l.starts_with(':')) {
        let name = l[1..].split(' ').next().unwrap_or("");
        assert!(name.len() <= 28, "{name}");
    }
    for b in ["PREROUTING", "OUTPUT", "POSTROUTING", "INPUT", "FORWARD"] {
        assert!(
            !r.text.contains(&format!("-A {b} ")),
            "built-in chain touched: {b}"
        );
    }
    assert_eq!(r.rules, r.text.lines().count());
}

#[test]
fn three_endpoints_get_kube_proxy_probabilities() {
    let s = [web("10.43.0.100", json!({}))];
    let e = [http_slice(
        "web",
        vec![
            ready("10.42.0.2", "a"),
            ready("10.42.0.3", "a"),
            ready("10.42.0.4", "a"),
        ],
    )];
    let r = rend(&cfg(), &s, &e);
    assert!(r.text.contains("--probability 0.3333333333 "));
    assert!(r.text.contains("--probability 0.5000000000 "));
}

#[test]
fn no_endpoints_is_rejected_in_filter() {
    let s = [web("10.43.0.100", json!({}))];
    let r = rend(&cfg(), &s, &[]);
    let filter = table(&r.text, "filter");
    let l = one(
        filter,
        &["-A K8SLITE-SERVICES -d 10.43.0.100/32 -p tcp -m tcp --dport 80"],
    );
    assert!(
        l.contains("has no endpoints")
            && l.ends_with("-j REJECT --reject-with icmp-port-unreachable"),
        "{l}"
    );
    assert!(lines(table(&r.text, "nat"), &["10.43.0.100"]).is_empty());
    // Not-ready endpoints are no endpoints.
    let e = [http_slice(
        "web",
        vec![ep("10.42.0.2", "a", false, false, false)],
    )];
    let r = rend(&cfg(), &s, &e);
    one(table(&r.text, "filter"), &["10.43.0.100/32", "REJECT"]);
}

#[test]
fn named_target_ports_resolve_per_slice() {
    let s = [svc(
        "default",
        "app",
        json!({"clusterIP": "10.43.0.7", "ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "metrics", "port": 9090, "targetPort": "metrics"}]}),
    )];
    let e = [
        slice(
            "default",
            "app",
            "a",
            json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}]),
            vec![ready("10.42.0.2", "a")],
        ),
        slice(
            "default",
            "app",
            "b",
            json!([{"name": "http", "port": 8081}]),
            vec![ready("10.42.0.3", "a")],
        ),
    ];
    let r = rend(&cfg(), &s, &e);
    let nat = table(&r.text, "nat");
    one(nat, &["DNAT --to-destination 10.42.0.2:8080"]);
    one(nat, &["DNAT --to-destination 10.42.0.3:8081"]);
    one(nat, &["DNAT --to-destination 10.42.0.2:9100"]);
    assert!(lines(nat, &["10.42.0.3:9100"]).is_empty());
    one(
        nat,
        &[
            "-d 10.43.0.7/32 -p tcp -m tcp --dport 9090",
            "default/app:metrics",
        ],
    );
}

#[test]
fn terminating_endpoints_are_used_only_when_none_is_ready() {
    let s = [web("10.43.0.100", json!({}))];
    let term = ep("10.42.0.9", "a", false, true, true);
    let r = rend(&cfg(), &s, &[http_slice("web", vec![term.clone()])]);
    one(&r.text, &["DNAT --to-destination 10.42.0.9:8080"]);
    let r = rend(
        &cfg(),
        &s,
        &[http_slice("web", vec![term, ready("10.42.0.2", "a")])],
    );
    assert!(lines(&r.text, &["10.42.0.9:8080"]).is_empty());
    one(&r.text, &["DNAT --to-destination 10.42.0.2:8080"]);
    // Terminating but not serving: unusable.
    let r = rend(
        &cfg(),
        &s,
        &[http_slice(
            "web",
            vec![ep("10.42.0.9", "a", false, false, true)],
        )],
    );
    one(&r.text, &["10.43.0.100/32", "REJECT"]);
}

fn nodeport(etp: &str) -> Arc<Service> {
    web(
        "10.43.0.100",
        json!({"type": "NodePort", "externalTrafficPolicy": etp,
            "healthCheckNodePort": 32000,
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
    )
}

#[test]
fn node_port_on_node_addresses_masqueraded() {
    let e = [http_slice("web", vec![ready("10.42.1.3", "node-b")])];
    let r = rend(&cfg(), &[nodeport("Cluster")], &e);
    let nat = table(&r.text, "nat");
    one(
        nat,
        &[
            "-A K8SLITE-SERVICES -d 192.168.1.10/32",
            "-j K8SLITE-NODEPORTS",
        ],
    );
    let np = one(nat, &["-A K8SLITE-NODEPORTS -p tcp -m tcp --dport 30080"]);
    let ext = target(np);
    assert!(ext.starts_with("K8SLITE-EXT-"), "{np}");
    let rules = chain(nat, ext);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules[0].ends_with("-j K8SLITE-MARK-MASQ"));
    assert!(target(rules[1]).starts_with("K8SLITE-SVC-"));
    // The node-port jump is the last rule of P-SERVICES.
    let services = chain(nat, "K8SLITE-SERVICES");
    assert!(
        services
            .last()
            .is_some_and(|l| l.contains("K8SLITE-NODEPORTS")),
        "{services:?}"
    );
    // No health check for Cluster policy.
    assert!(r.health_checks.is_empty());
    // Unknown node addresses: every local address.
    let mut c = cfg();
    c.node_ips.clear();
    let r = rend(&c, &[nodeport("Cluster")], &e);
    one(
        &r.text,
        &[
            "-A K8SLITE-SERVICES -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8",
            "-j K8SLITE-NODEPORTS",
        ],
    );
}

#[test]
fn external_traffic_policy_local_keeps_client_ip_and_uses_local_endpoints() {
    let e = [http_slice(
        "web",
        vec![ready("10.42.0.2", "node-a"), ready("10.42.1.3", "node-b")],
    )];
    let r = rend(&cfg(), &[nodeport("Local")], &e);
    let nat = table(&r.text, "nat");
    let ext = target(one(nat, &["-A K8SLITE-NODEPORTS", "--dport 30080"])).to_string();
    let rules = chain(nat, &ext);
    assert!(
        rules[0].contains("-s 10.42.0.0/16") && target(rules[0]).starts_with("K8SLITE-SVC-"),
        "pods go cluster-wide: {rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|l| l.contains("--src-type LOCAL -j K8SLITE-MARK-MASQ")),
        "{rules:?}"
    );
    assert!(
        !rules
            .iter()
            .any(|l| l.ends_with(&format!("-A {ext} -j K8SLITE-MARK-MASQ"))),
        "no SNAT for external clients: {rules:?}"
    );
    let svl = target(rules.last().copied().unwrap_or_default());
    assert!(svl.starts_with("K8SLITE-SVL-"), "{rules:?}");
    let local = chain(nat, svl);
    assert_eq!(local.len(), 1, "only the local endpoint: {local:?}");
    let sep = chain(nat, target(local[0]));
    assert!(sep[1].ends_with("10.42.0.2:8080"), "{sep:?}");
    assert_eq!(
        r.health_checks,
        vec![HealthCheck {
            port: 32000,
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: 1
        }]
    );
    one(
        table(&r.text, "filter"),
        &["-A K8SLITE-INPUT -p tcp -m tcp --dport 32000", "-j ACCEPT"],
    );

    // No local endpoint: external traffic dropped, pod traffic still DNATed cluster-wide.
    let e = [http_slice("web", vec![ready("10.42.1.3", "node-b")])];
    let r = rend(&cfg(), &[nodeport("Local")], &e);
    let l = one(
        table(&r.text, "filter"),
        &["-A K8SLITE-EXTERNAL -d 192.168.1.10/32 -p tcp -m tcp --dport 30080"],
    );
    assert!(
        l.ends_with("-j DROP") && l.contains("has no local endpoints"),
        "{l}"
    );
    let ext = target(one(&r.text, &["-A K8SLITE-NODEPORTS", "--dport 30080"])).to_string();
    assert!(
        chain(&r.text, &ext)
            .iter()
            .any(|l| l.contains("-s 10.42.0.0/16"))
    );
    assert_eq!(r.health_checks[0].local_endpoints, 0);
}

#[test]
fn internal_traffic_policy_local() {
    let s = [web(
        "10.43.0.100",
        json!({"internalTrafficPolicy": "Local"}),
    )];
    let e = [http_slice(
        "web",
        vec![ready("10.42.0.2", "node-a"), ready("10.42.1.3", "node-b")],
    )];
    let r = rend(&cfg(), &s, &e);
    let l = one(&r.text, &["-A K8SLITE-SERVICES -d 10.43.0.100/32"]);
    let svl = target(l);
    assert!(svl.starts_with("K8SLITE-SVL-"), "{l}");
    let rules = chain(&r.text, svl);
    assert_eq!(rules.len(), 2, "masquerade + the local endpoint: {rules:?}");
    assert!(
        lines(&r.text, &["10.42.1.3:8080"]).is_empty(),
        "remote endpoint unused"
    );
    let e = [http_slice("web", vec![ready("10.42.1.3", "node-b")])];
    let r = rend(&cfg(), &s, &e);
    let l = one(
        table(&r.text, "filter"),
        &["-A K8SLITE-SERVICES -d 10.43.0.100/32"],
    );
    assert!(l.ends_with("-j DROP"), "{l}");
}

#[test]
fn load_balancer_ingress_with_source_ranges() {
    let s = [svc_status(
        "default",
        "lb",
        json!({"type": "LoadBalancer", "clusterIP": "10.43.0.50",
            "loadBalancerSourceRanges": ["203.0.113.0/24", " 198.51.100.9/32 "],
            "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
        json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}, {"hostname": "x.example"}]}}),
    )];
    let e = [http_slice("lb", vec![ready("10.42.0.2", "node-a")])];
    let r = rend(&cfg(), &s, &e);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let nat = table(&r.text, "nat");
    let l = one(
        nat,
        &[
            "-A K8SLITE-SERVICES -d 192.168.1.10/32 -p tcp -m tcp --dport 80",
            "loadbalancer IP",
        ],
    );
    let fw = target(l);
    assert!(fw.starts_with("K8SLITE-FW-"), "{l}");
    let rules = chain(nat, fw);
    assert!(
        rules[0].contains("-s 203.0.113.0/24 -j K8SLITE-EXT-"),
        "{rules:?}"
    );
    assert!(
        rules[1].contains("-s 198.51.100.9/32 -j K8SLITE-EXT-"),
        "{rules:?}"
    );
    let drop = one(
        table(&r.text, "filter"),
        &["-A K8SLITE-FIREWALL -d 192.168.1.10/32 -p tcp -m tcp --dport 80"],
    );
    assert!(drop.ends_with("-j DROP"), "{drop}");
    // Without ranges: straight to the external chain.
    let s = [svc_status(
        "default",
        "lb",
        json!({"type": "LoadBalancer", "clusterIP": "10.43.0.50",
            "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
        json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}),
    )];
    let r = rend(&cfg(), &s, &e);
    let l = one(
        &r.text,
        &["-A K8SLITE-SERVICES -d 192.168.1.10/32 -p tcp -m tcp --dport 80"],
    );
    assert!(target(l).starts_with("K8SLITE-EXT-"), "{l}");
    assert!(chain(&r.text, "K8SLITE-FIREWALL").is_empty());
}

#[test]
fn foreign_family_external_ips_are_reported_and_the_rest_programmed() {
    let s = [web(
        "10.43.0.100",
        json!({"externalIPs": ["fd00::5", "198.51.100.7"]}),
    )];
    let e = [http_slice("web", vec![ready("10.42.0.2", "node-a")])];
    let r = rend(&cfg(), &s, &e);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].reason, "ExternalIPFamily");
    assert!(
        r.problems[0].message.contains("fd00::5"),
        "{:?}",
        r.problems
    );
    one(&r.text, &["-A K8SLITE-SERVICES -d 198.51.100.7/32"]);
    one(&r.text, &["-A K8SLITE-SERVICES -d 10.43.0.100/32"]);
    assert!(!r.text.contains("fd00::5"));
}

#[test]
fn external_ips_are_dnated() {
    let s = [web("10.43.0.100", json!({"externalIPs": ["198.51.100.7"]}))];
    let e = [http_slice("web", vec![ready("10.42.0.2", "node-a")])];
    let r = rend(&cfg(), &s, &e);
    let l = one(
        &r.text,
        &[
            "-A K8SLITE-SERVICES -d 198.51.100.7/32 -p tcp -m tcp --dport 80",
            "external IP",
        ],
    );
    let ext = chain(&r.text, target(l));
    assert!(ext[0].ends_with("-j K8SLITE-MARK-MASQ"), "{ext:?}");
    // Without endpoints the external IP is rejected too.
    let r = rend(&cfg(), &s, &[]);
    one(
        table(&r.text, "filter"),
        &["-A K8SLITE-EXTERNAL -d 198.51.100.7/32", "REJECT"],
    );
}

#[test]
fn client_ip_affinity_uses_recent() {
    let s = [web(
        "10.43.0.100",
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
    )];
    let e = [http_slice(
        "web",
        vec![ready("10.42.0.2", "a"), ready("10.42.0.3", "a")],
    )];
    let r = rend(&cfg(), &s, &e);
    let svc_chain = target(one(&r.text, &["-A K8SLITE-SERVICES -d 10.43.0.100/32"])).to_string();
    let rules = chain(&r.text, &svc_chain);
    let checks: Vec<&&str> = rules.iter().filter(|l| l.contains("--rcheck")).collect();
    assert_eq!(checks.len(), 2, "{rules:?}");
    for c in checks {
        let sep = target(c);
        assert!(
            c.contains(&format!(
                "-m recent --name {sep} --rcheck --seconds 600 --reap -j {sep}"
            )),
            "{c}"
        );
        let dnat = chain(&r.text, sep);
        assert!(
            dnat[1].contains(&format!("-m recent --name {sep} --set -j DNAT")),
            "{dnat:?}"
        );
    }
    // Affinity checks come before the random spreading.
    let first_stat = rules
        .iter()
        .position(|l| l.contains("statistic"))
        .unwrap_or(0);
    assert!(
        rules[..first_stat]
            .iter()
            .filter(|l| l.contains("--rcheck"))
            .count()
            == 2
    );
}

#[test]
fn local_dns_is_notracked_not_dnated() {
    let mut c = cfg();
    c.local_dns = Some("10.43.0.10".parse().expect("ip"));
    let dns = svc(
        "kube-system",
        "kube-dns",
        json!({"clusterIP": "10.43.0.10", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
    );
    let r = rend(&c, std::slice::from_ref(&dns), &[]);
    assert_eq!(r.services, 1);
    assert!(
        lines(table(&r.text, "nat"), &["10.43.0.10"]).is_empty(),
        "not DNATed"
    );
    let raw = table(&r.text, "raw");
    for proto in ["udp", "tcp"] {
        one(
            raw,
            &[
                &format!("-A K8SLITE-PREROUTING -d 10.43.0.10/32 -p {proto} -m {proto} --dport 53"),
                "-j NOTRACK",
            ],
        );
        one(
            raw,
            &[
                &format!("-A K8SLITE-OUTPUT -d 10.43.0.10/32 -p {proto} -m {proto} --dport 53"),
                "-j NOTRACK",
            ],
        );
        one(
            raw,
            &[
                &format!("-A K8SLITE-OUTPUT -s 10.43.0.10/32 -p {proto} -m {proto} --sport 53"),
                "-j NOTRACK",
            ],
        );
    }
    let filter = table(&r.text, "filter");
    assert!(
        lines(filter, &["10.43.0.10", "REJECT"]).is_empty(),
        "not rejected"
    );
    let svc_rules = chain(filter, "K8SLITE-SERVICES");
    let ret = svc_rules
        .iter()
        .position(|l| l.contains("-d 10.43.0.10/32") && l.ends_with("-j RETURN"));
    let cidr = svc_rules.iter().position(|l| l.contains("-d 10.43.0.0/16"));
    assert!(ret.is_some() && ret < cidr, "{svc_rules:?}");
    // Without local DNS: no NOTRACK, and the service is programmed normally.
    let r = rend(&cfg(), &[dns], &[]);
    assert!(!r.text.contains("NOTRACK"));
    one(
        &r.text,
        &["-d 10.43.0.10/32 -p udp -m udp --dport 53", "REJECT"],
    );
}

#[test]
fn unowned_service_cidr_is_rejected_last() {
    let r = rend(&cfg(), &[web("10.43.0.100", json!({}))], &[]);
    let filter = table(&r.text, "filter");
    let rules = chain(filter, "K8SLITE-SERVICES");
    let last = rules.last().copied().unwrap_or_default();
    assert!(
        last.contains("-d 10.43.0.0/16")
            && last.ends_with("-j REJECT --reject-with icmp-port-unreachable"),
        "{rules:?}"
    );
    // Reached from FORWARD and OUTPUT for new connections.
    one(
        filter,
        &["-A K8SLITE-FORWARD -m conntrack --ctstate NEW -j K8SLITE-SERVICES"],
    );
    one(
        filter,
        &["-A K8SLITE-OUTPUT -m conntrack --ctstate NEW -j K8SLITE-SERVICES"],
    );
    // Forward accepts for marked and established traffic.
    one(
        filter,
        &[
            "-A K8SLITE-FORWARD -m mark --mark 0x4000/0x4000",
            "-j ACCEPT",
        ],
    );
    one(
        filter,
        &[
            "-A K8SLITE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED",
            "-j ACCEPT",
        ],
    );
}

#[test]
fn pod_egress_is_masqueraded_not_pod_to_pod() {
    let r = rend(&cfg(), &[], &[]);
    let nat = table(&r.text, "nat");
    let post = chain(nat, "K8SLITE-POSTROUTING");
    assert!(
        post[0].contains("-s 10.42.0.0/24 ! -d 10.42.0.0/16")
            && post[0].ends_with("-j MASQUERADE --random-fully"),
        "{post:?}"
    );
    assert!(
        post[1].contains("! --mark 0x4000/0x4000 -j RETURN"),
        "{post:?}"
    );
    let mut c = cfg();
    c.masquerade_egress = false;
    assert!(lines(&rend(&c, &[], &[]).text, &["-s 10.42.0.0/24"]).is_empty());
    c.masquerade_egress = true;
    c.pod_cidr = None;
    assert!(lines(&rend(&c, &[], &[]).text, &["pod egress"]).is_empty());
}

fn proxier() -> (
    Proxier<RecordingBackend, RecordingConntrack>,
    RecordingBackend,
    RecordingConntrack,
) {
    let b = RecordingBackend::new();
    let c = RecordingConntrack::new();
    (Proxier::new(cfg(), b.clone(), c.clone()), b, c)
}

#[test]
fn stale_chains_are_deleted_in_the_same_restore_and_unchanged_syncs_skip() {
    let (mut p, b, _) = proxier();
    let s = [web("10.43.0.100", json!({}))];
    let two = [http_slice(
        "web",
        vec![ready("10.42.0.2", "a"), ready("10.42.0.3", "a")],
    )];
    let rep = p.sync(&s, &two).expect("sync");
    assert!(rep.applied && rep.services == 1 && rep.rules > 10);
    assert_eq!(b.restores().len(), 1);
    assert_eq!(
        b.jumps(),
        vec!["K8SLITE".to_string()],
        "jumps ensured after the restore"
    );
    let first = b.restores()[0].clone();
    let gone = one(&first, &["-s 10.42.0.3/32 -j K8SLITE-MARK-MASQ"])
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string();
    assert!(gone.starts_with("K8SLITE-SEP-"));

    // Same input: no restore.
    let rep = p.sync(&s, &two).expect("sync");
    assert!(!rep.applied);
    assert_eq!(b.restores().len(), 1);

    // One endpoint gone: its chain is declared and deleted in the one restore.
    let one_ep = [http_slice("web", vec![ready("10.42.0.2", "a")])];
    p.sync(&s, &one_ep).expect("sync");
    let restores = b.restores();
    assert_eq!(restores.len(), 2);
    let t = &restores[1];
    let decl = t.find(&format!(":{gone} - [0:0]")).expect("declared");
    let del = t.find(&format!("-X {gone}\n")).expect("deleted");
    assert!(decl < del);
    assert!(lines(t, &[&format!("-A {gone} ")]).is_empty());
    assert!(lines(t, &[&format!("-j {gone}")]).is_empty());
    // The next change does not delete it again.
    p.sync(&s, &[]).expect("sync");
    assert!(!b.restores()[2].contains(&gone));
}

#[test]
fn leftover_chains_of_a_previous_run_are_deleted() {
    let (mut p, b, _) = proxier();
    b.set_host_chains(BTreeSet::from(["K8SLITE-SVC-OLDOLDOLDOLDOLD".to_string()]));
    p.sync(&[], &[]).expect("sync");
    let t = &b.restores()[0];
    assert!(
        t.contains(":K8SLITE-SVC-OLDOLDOLDOLDOLD - [0:0]\n")
            && t.contains("-X K8SLITE-SVC-OLDOLDOLDOLDOLD\n")
    );
}

#[test]
fn bad_services_are_problems_and_others_still_programmed() {
    let port = |p: Value| json!({"clusterIP": "10.43.0.9", "ports": [p]});
    let bad = vec![
        svc(
            "default",
            "icmp",
            port(json!({"port": 80, "protocol": "ICMP"})),
        ),
        svc("default", "zero", port(json!({"port": 0}))),
        svc("default", "big", port(json!({"port": 70000}))),
        svc(
            "default",
            "np",
            json!({"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": -1}]}),
        ),
        svc(
            "default",
            "banana",
            json!({"clusterIP": "banana", "ports": [{"port": 80}]}),
        ),
        svc(
            "default",
            "v6",
            json!({"clusterIP": "fd00::1", "ports": [{"port": 80}]}),
        ),
        svc(
            "default",
            "dup",
            json!({"clusterIP": "10.43.0.9", "ports": [{"port": 80}, {"name": "b", "port": 80}]}),
        ),
        svc(
            "default",
            "range",
            json!({"type": "LoadBalancer", "clusterIP": "10.43.0.9", "loadBalancerSourceRanges": ["nope"], "ports": [{"port": 80}]}),
        ),
        svc(
            "default",
            "aff",
            json!({"clusterIP": "10.43.0.9", "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}, "ports": [{"port": 80}]}),
        ),
        svc(
            "default",
            "extip",
            json!({"clusterIP": "10.43.0.9", "externalIPs": ["1.2.3"], "ports": [{"port": 80}]}),
        ),
    ];
    let mut all = bad.clone();
    all.push(web("10.43.0.100", json!({})));
    // Odd but harmless values: headless, ExternalName, no spec, quotes in names.
    all.push(svc(
        "default",
        "headless",
        json!({"clusterIP": "None", "ports": [{"port": 80}]}),
    ));
    all.push(svc(
        "default",
        "ext",
        json!({"type": "ExternalName", "externalName": "x.example"}),
    ));
    all.push(Arc::new(Service::default()));
    all.push(svc(
        "d\"q",
        "n\ne w",
        json!({"clusterIP": "10.43.0.8", "ports": [{"name": "a\"b", "port": 81}]}),
    ));
    let e = [http_slice(
        "web",
        vec![
            ready("10.42.0.2", "a"),
            json!({"addresses": ["not-an-ip"]}),
            json!({"addresses": []}),
        ],
    )];
    let (mut p, b, _) = proxier();
    let rep = p.sync(&all, &e).expect("sync");
    let names: Vec<&str> = rep.problems.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "icmp", "zero", "big", "np", "banana", "v6", "dup", "range", "aff", "extip"
        ],
        "{:?}",
        rep.problems
    );
    for pr in &rep.problems {
        assert!(
            !pr.reason.is_empty() && !pr.message.is_empty() && pr.namespace == "default",
            "{pr:?}"
        );
    }
    assert_eq!(rep.problems[0].reason, "UnsupportedProtocol");
    let t = &b.restores()[0];
    one(t, &["DNAT --to-destination 10.42.0.2:8080"]);
    // The quoted names were sanitised: every comment is one quoted token.
    for l in t.lines().filter(|l| l.contains("--comment")) {
        assert_eq!(l.matches('"').count(), 2, "{l}");
    }
    assert!(t.lines().all(|l| !l.is_empty()));
}

#[test]
fn sctp_refused_by_iptables_becomes_a_problem() {
    let (mut p, b, _) = proxier();
    b.fail_restores_containing(Some("-p sctp"));
    let s = [
        svc(
            "default",
            "sctp",
            json!({"clusterIP": "10.43.0.20", "ports": [{"port": 9, "protocol": "SCTP"}]}),
        ),
        web("10.43.0.100", json!({})),
    ];
    let rep = p.sync(&s, &[]).expect("sync without sctp");
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    assert_eq!(rep.problems[0].name, "sctp");
    assert!(b.restores()[0].contains("10.43.0.100"));
    // Accepted SCTP is rendered like TCP.
    let r = rend(&cfg(), &s, &[]);
    one(
        &r.text,
        &["-d 10.43.0.20/32 -p sctp -m sctp --dport 9", "REJECT"],
    );
}

fn udp_dns(eps: Vec<Value>) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    let s = svc(
        "default",
        "dns",
        json!({"type": "NodePort", "clusterIP": "10.43.0.53", "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}),
    );
    let e = slice(
        "default",
        "dns",
        "a",
        json!([{"name": "dns", "port": 5353, "protocol": "UDP"}]),
        eps,
    );
    (vec![s], vec![e])
}

#[test]
fn udp_endpoint_removal_deletes_conntrack_entries() {
    let (mut p, _, ct) = proxier();
    let vip = "10.43.0.53".parse().ok();
    let (s, e) = udp_dns(vec![]);
    p.sync(&s, &e).expect("sync");
    assert!(ct.deleted().is_empty());
    // First endpoint after none: entries to the service address (created while rejected).
    let (s, e) = udp_dns(vec![
        ready("10.42.0.2", "node-a"),
        ready("10.42.0.3", "node-b"),
    ]);
    p.sync(&s, &e).expect("sync");
    let d = ct.deleted();
    assert!(
        d.contains(&ConntrackFilter {
            orig_dst: vip,
            orig_dport: Some(53),
            dst_nat: None
        }),
        "{d:?}"
    );
    assert!(
        d.contains(&ConntrackFilter {
            orig_dst: None,
            orig_dport: Some(30053),
            dst_nat: None
        }),
        "{d:?}"
    );
    ct.clear();
    // One endpoint gone.
    let (s, e) = udp_dns(vec![ready("10.42.0.2", "node-a")]);
    p.sync(&s, &e).expect("sync");
    let gone = "10.42.0.3".parse().ok();
    let d = ct.deleted();
    assert_eq!(
        d,
        vec![
            ConntrackFilter {
                orig_dst: None,
                orig_dport: Some(30053),
                dst_nat: gone
            },
            ConntrackFilter {
                orig_dst: vip,
                orig_dport: Some(53),
                dst_nat: gone
            },
        ]
    );
    assert_eq!(
        d[1].args(),
        [
            "-D",
            "-p",
            "udp",
            "--orig-dst",
            "10.43.0.53",
            "--dport",
            "53",
            "--dst-nat",
            "10.42.0.3"
        ]
    );
    ct.clear();
    // TCP endpoints going away: nothing.
    let s = [web("10.43.0.100", json!({}))];
    p.sync(&s, &[http_slice("web", vec![ready("10.42.0.2", "a")])])
        .expect("sync");
    ct.clear();
    p.sync(&s, &[]).expect("sync");
    assert!(ct.deleted().is_empty(), "{:?}", ct.deleted());
}

#[test]
fn endpoints_in_two_slices_are_counted_once() {
    let s = [web("10.43.0.100", json!({}))];
    let e = [
        http_slice("web", vec![ep("10.42.0.2", "a", false, false, false)]),
        slice(
            "default",
            "web",
            "b",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
            vec![ready("10.42.0.2", "a")],
        ),
    ];
    let r = rend(&cfg(), &s, &e);
    one(&r.text, &["DNAT --to-destination 10.42.0.2:8080"]);
    assert!(!r.text.contains("statistic"));
}

#[test]
fn invalid_prefix_is_an_error() {
    let mut c = cfg();
    c.chain_prefix = "far-too-long-prefix".into();
    let mut p = Proxier::new(c, RecordingBackend::new(), RecordingConntrack::new());
    assert!(p.sync(&[], &[]).is_err());
    let mut c = cfg();
    c.cluster_cidr = "fd00::/48".parse().expect("cidr");
    assert!(c.validate().is_err());
}

#[test]
fn cleanup_goes_to_the_backend() {
    let (mut p, b, _) = proxier();
    p.sync(&[], &[]).expect("sync");
    p.cleanup().expect("cleanup");
    assert_eq!(b.cleanups(), ["K8SLITE"]);
    // After a cleanup the next sync restores again.
    p.sync(&[], &[]).expect("sync");
    assert_eq!(b.restores().len(), 2);
}

#[test]
fn ipv6_renders_v6_syntax() {
    let c = ProxyConfig::new(
        "node-a",
        vec!["fd00:1::10".parse().expect("ip")],
        "fd42::/48".parse().expect("cidr"),
        "fd43::/112".parse().expect("cidr"),
    );
    let s = [svc(
        "default",
        "web",
        json!({"clusterIP": "fd43::100", "ports": [{"name": "http", "port": 80}]}),
    )];
    let mut e = (*http_slice("web", vec![ready("fd42::2", "a")])).clone();
    e.address_type = "IPv6".into();
    let r = rend(&c, &s, &[Arc::new(e)]);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    one(
        &r.text,
        &["-A K8SLITE-SERVICES -d fd43::100/128 -p tcp -m tcp --dport 80"],
    );
    one(&r.text, &["DNAT --to-destination [fd42::2]:8080"]);
    one(&r.text, &["-d fd43::/112", "icmp6-port-unreachable"]);
}

#[test]
#[allow(clippy::print_stderr)] // the figure is the point of this test
fn render_5000_services_is_fast() {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..5000u32 {
        let name = format!("s{i}");
        let ip = format!("10.43.{}.{}", i / 250, i % 250 + 1);
        services.push(svc(
            "bench",
            &name,
            json!({"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}),
        ));
        slices.push(slice(
            "bench",
            &name,
            "a",
            json!([{"name": "http", "port": 8080}]),
            vec![
                ready(&format!("10.42.{}.{}", i / 250, i % 250 + 1), "node-a"),
                ready(
                    &format!("10.42.{}.{}", 100 + i / 250, i % 250 + 1),
                    "node-b",
                ),
            ],
        ));
    }
    let c = cfg();
    let _warm = rend(&c, &services[..10], &slices[..10]);
    // CPU time of this thread (utime + stime, clock ticks) besides wall time: the build
    // machines are shared, so wall time alone says little.
    let cpu_ticks = || -> u64 {
        std::fs::read_to_string("/proc/thread-self/stat")
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
                Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    };
    let runs = 10u32;
    let (t, cpu0) = (std::time::Instant::now(), cpu_ticks());
    let mut r = Rendered::default();
    for _ in 0..runs {
        r = rend(&c, &services, &slices);
    }
    let (took, cpu) = (
        t.elapsed() / runs,
        (cpu_ticks() - cpu0) * 10 / u64::from(runs),
    );
    eprintln!(
        "render 5000 services x 2 endpoints: {took:?} wall, ~{cpu} ms CPU per render, {} lines, {} bytes",
        r.rules,
        r.text.len()
    );
    assert_eq!(r.services, 5000);
    assert_eq!(r.chains.len(), 5000 * 3);
}

#[tokio::test]
async fn health_check_ports_answer_200_or_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn get(port: u16) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }
    let free = |_: ()| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let port = free(());
    let hc = HealthChecks::new();
    let check = |n: usize| HealthCheck {
        port,
        namespace: "default".into(),
        name: "web".into(),
        local_endpoints: n,
    };
    assert!(hc.update(&[check(2)]).await.is_empty());
    let r = get(port).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let body: Value = serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap_or("")).expect("json");
    assert_eq!(
        body["service"],
        json!({"namespace": "default", "name": "web"})
    );
    assert_eq!(body["localEndpoints"], 2);
    assert!(hc.update(&[check(0)]).await.is_empty());
    let r = get(port).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    // A port already taken: a problem, not a panic; the duplicate port too.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let tport = taken.local_addr().expect("addr").port();
    let problems = hc
        .update(&[
            check(1),
            HealthCheck {
                port: tport,
                namespace: "default".into(),
                name: "other".into(),
                local_endpoints: 1,
            },
            HealthCheck {
                port,
                namespace: "x".into(),
                name: "dup".into(),
                local_endpoints: 1,
            },
        ])
        .await;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.name == "other" && p.reason == "HealthCheckNodePortUnavailable")
    );
    assert!(problems.iter().any(|p| p.name == "dup"));
    assert_eq!(hc.ports().await, vec![port]);
    // Removed from the set: closed.
    assert!(hc.update(&[]).await.is_empty());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    hc.update(&[check(1)]).await;
    hc.shutdown().await;
    assert!(hc.ports().await.is_empty());
}
