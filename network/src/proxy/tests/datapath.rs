//! The per-packet shape of the rules: what an established forwarded packet and an
//! encapsulated VXLAN packet visit.

use super::*;

fn vxlan_cfg() -> ProxyConfig {
    let mut c = cfg();
    c.vxlan_port = Some(8472);
    c.local_dns = Some("10.43.0.10".parse().expect("ip"));
    c
}

#[test]
fn established_forwarded_packets_match_the_first_forward_rule() {
    let r = rend(&cfg(), &[web("10.43.0.100", json!({}))], &[]);
    let fwd = chain(table(&r.text, "filter"), "K8SLITE-FORWARD");
    assert_eq!(
        fwd[0],
        "-A K8SLITE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"k8slite forwarding conntrack rule\" -j ACCEPT",
        "{fwd:?}"
    );
    // The rest only matches INVALID, NEW or marked packets, or is the pod accept at the end.
    assert!(fwd[1].contains("--ctstate INVALID -j DROP"), "{fwd:?}");
    for (i, c) in ["FIREWALL", "SERVICES", "EXTERNAL"].iter().enumerate() {
        assert_eq!(
            fwd[2 + i],
            format!("-A K8SLITE-FORWARD -m conntrack --ctstate NEW -j K8SLITE-{c}")
        );
    }
    assert!(fwd[5].contains("--mark 0x4000/0x4000"), "{fwd:?}");
    assert!(fwd[6].contains("-s 10.42.0.0/16") && fwd[7].contains("-d 10.42.0.0/16"));
    assert_eq!(fwd.len(), 8, "{fwd:?}");
}

#[test]
fn vxlan_underlay_is_notracked_and_returns_first() {
    let r = rend(&vxlan_cfg(), &[web("10.43.0.100", json!({}))], &[]);
    let raw = table(&r.text, "raw");
    let pre = chain(raw, "K8SLITE-PREROUTING");
    assert_eq!(
        pre[0],
        "-A K8SLITE-PREROUTING -d 192.168.1.10/32 -p udp -m udp --dport 8472 -m comment --comment \"k8slite vxlan underlay\" -j NOTRACK",
        "{pre:?}"
    );
    let out = chain(raw, "K8SLITE-OUTPUT");
    assert_eq!(
        out[0],
        "-A K8SLITE-OUTPUT -s 192.168.1.10/32 ! -d 10.43.0.0/16 -p udp -m udp --dport 8472 -m comment --comment \"k8slite vxlan underlay\" -j NOTRACK",
        "{out:?}"
    );
    // The node-local DNS NOTRACK rules are unchanged beside them.
    assert_eq!(lines(raw, &["node-local dns", "-j NOTRACK"]).len(), 6);
    assert_eq!(pre.len(), 1 + 2);
    assert_eq!(out.len(), 1 + 4);
    // filter: the untracked outer packets return at the first rule of INPUT and OUTPUT.
    let filter = table(&r.text, "filter");
    for c in ["INPUT", "OUTPUT"] {
        let rules = chain(filter, &format!("K8SLITE-{c}"));
        assert_eq!(
            rules[0],
            format!(
                "-A K8SLITE-{c} -p udp -m udp --dport 8472 -m conntrack --ctstate UNTRACKED -m comment --comment \"k8slite vxlan underlay\" -j RETURN"
            ),
            "{rules:?}"
        );
        assert_eq!(
            lines(filter, &[&format!("-A K8SLITE-{c} "), "8472"]).len(),
            1
        );
    }
    // The node-local DNS's restart drops come right behind the return in OUTPUT.
    let out = chain(filter, "K8SLITE-OUTPUT");
    assert!(
        out[1].contains("clients retry") && out[2].contains("clients retry"),
        "{out:?}"
    );
    // Never in FORWARD (the outer packets are local) nor in nat.
    assert!(lines(filter, &["-A K8SLITE-FORWARD", "8472"]).is_empty());
    assert!(lines(table(&r.text, "nat"), &["8472"]).is_empty());
}

#[test]
fn underlay_rules_only_with_the_vxlan_backend() {
    let r = rend(&cfg(), &[web("10.43.0.100", json!({}))], &[]);
    assert!(!r.text.contains("8472") && !r.text.contains("underlay"));
    assert!(chain(table(&r.text, "raw"), "K8SLITE-PREROUTING").is_empty());
}

#[test]
fn underlay_without_node_addresses_matches_local_addresses() {
    let mut c = vxlan_cfg();
    c.node_ips.clear();
    let r = rend(&c, &[], &[]);
    let raw = table(&r.text, "raw");
    one(
        raw,
        &[
            "-A K8SLITE-PREROUTING -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -p udp -m udp --dport 8472",
            "-j NOTRACK",
        ],
    );
    one(
        raw,
        &[
            "-A K8SLITE-OUTPUT -m addrtype --src-type LOCAL ! -d 10.43.0.0/16 -p udp -m udp --dport 8472",
            "-j NOTRACK",
        ],
    );
}

#[test]
fn turning_the_vxlan_port_on_rewrites_the_raw_and_filter_chains() {
    let (mut p, b, _) = proxier();
    p.sync(&[], &[]).expect("sync");
    assert!(!b.restores()[0].contains("8472"));
    let mut c = p.config().clone();
    c.vxlan_port = Some(8472);
    p.set_config(c);
    let rep = p.sync(&[], &[]).expect("sync");
    assert!(rep.applied && rep.full);
    let t = &b.restores()[1];
    assert_eq!(lines(t, &["8472", "-j NOTRACK"]).len(), 2, "{t}");
    assert_eq!(lines(t, &["8472", "-j RETURN"]).len(), 2, "{t}");
}
