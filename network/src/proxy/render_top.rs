//! The fixed part of the text: the top chains of raw, filter and nat, the node-local DNS rules,
//! masquerading, and the stale chains' deletion.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::chains::{self, FILTER_TOP, NAT_TOP, RAW_TOP};
use super::render::{DNS_PORT, Host, MASQ_BIT, MASQ_MARK, Writer};

impl Writer<'_> {
    /// Assemble the text.
    pub(super) fn finish(
        mut self,
        previous: &BTreeSet<String>,
        chains_out: &mut BTreeSet<String>,
    ) -> String {
        let p = self.p;
        let cfg = self.cfg;
        let reject = self.reject();
        let mut t = String::with_capacity(
            self.nat_decl.len() + self.nat_svc.len() + self.nat_rules.len() + 4096,
        );
        // raw: node-local DNS without conntrack.
        t.push_str("*raw\n");
        for c in RAW_TOP {
            w!(t, ":{p}-{c} - [0:0]\n");
        }
        self.underlay_prerouting(&mut t);
        self.underlay_output(&mut t);
        if let Some(dns) = cfg.local_dns.filter(|d| d.is_ipv4() == self.v4) {
            let d = Host(dns);
            for proto in ["udp", "tcp"] {
                w!(
                    t,
                    "-A {p}-PREROUTING -d {d} -p {proto} -m {proto} --dport {DNS_PORT} -m comment --comment \"node-local dns\" -j NOTRACK\n"
                );
                w!(
                    t,
                    "-A {p}-OUTPUT -d {d} -p {proto} -m {proto} --dport {DNS_PORT} -m comment --comment \"node-local dns\" -j NOTRACK\n"
                );
                w!(
                    t,
                    "-A {p}-OUTPUT -s {d} -p {proto} -m {proto} --sport {DNS_PORT} -m comment --comment \"node-local dns\" -j NOTRACK\n"
                );
            }
        }
        t.push_str("COMMIT\n*filter\n");
        for c in FILTER_TOP {
            w!(t, ":{p}-{c} - [0:0]\n");
        }
        let new = "-m conntrack --ctstate NEW";
        self.underlay_return(&mut t, "INPUT");
        w!(
            t,
            "-A {p}-INPUT {new} -j {p}-FIREWALL\n-A {p}-INPUT {new} -j {p}-EXTERNAL\n"
        );
        t.push_str(&self.f_hc);
        let dns = cfg.local_dns.filter(|d| d.is_ipv4() == self.v4).map(Host);
        if let Some(d) = &dns {
            for proto in ["udp", "tcp"] {
                w!(
                    t,
                    "-A {p}-INPUT -d {d} -p {proto} -m {proto} --dport {DNS_PORT} -m comment --comment \"node-local dns\" -j ACCEPT\n"
                );
            }
        }
        // Established and related packets first: every packet of a forwarded flow but its
        // first matches this one rule (the rules below only match NEW, INVALID or marked
        // packets, so the order does not change what is accepted).
        w!(
            t,
            "-A {p}-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"k8slite forwarding conntrack rule\" -j ACCEPT\n"
        );
        w!(t, "-A {p}-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
        for c in ["FIREWALL", "SERVICES", "EXTERNAL"] {
            w!(t, "-A {p}-FORWARD {new} -j {p}-{c}\n");
        }
        let cidr = cfg.cluster_cidr.trunc();
        w!(
            t,
            "-A {p}-FORWARD -m mark --mark {MASQ_MARK} -m comment --comment \"k8slite forwarding rules\" -j ACCEPT\n"
        );
        w!(
            t,
            "-A {p}-FORWARD -s {cidr} -m comment --comment \"k8slite pod traffic\" -j ACCEPT\n"
        );
        w!(
            t,
            "-A {p}-FORWARD -d {cidr} -m comment --comment \"k8slite pod traffic\" -j ACCEPT\n"
        );
        self.underlay_return(&mut t, "OUTPUT");
        // Behind the underlay return (the hot rule), before everything else.
        self.dns_restart_rules(&mut t);
        for c in ["FIREWALL", "SERVICES", "EXTERNAL"] {
            w!(t, "-A {p}-OUTPUT {new} -j {p}-{c}\n");
        }
        if let Some(d) = &dns {
            for proto in ["udp", "tcp"] {
                w!(
                    t,
                    "-A {p}-OUTPUT -s {d} -p {proto} -m {proto} --sport {DNS_PORT} -m comment --comment \"node-local dns\" -j ACCEPT\n"
                );
            }
        }
        t.push_str(&self.f_fw);
        t.push_str(&self.f_ext);
        t.push_str(&self.f_svc);
        if let Some(d) = &dns {
            w!(
                t,
                "-A {p}-SERVICES -d {d} -m comment --comment \"node-local dns\" -j RETURN\n"
            );
        }
        w!(
            t,
            "-A {p}-SERVICES -d {} -m comment --comment \"service CIDR address no service owns\" -j {reject}\n",
            cfg.service_cidr.trunc()
        );
        t.push_str("COMMIT\n*nat\n");
        for c in NAT_TOP {
            w!(t, ":{p}-{c} - [0:0]\n");
        }
        t.push_str(&self.nat_decl);
        // One bulk build of the set (cheaper than 3 inserts per service port).
        let current: BTreeSet<String> = std::mem::take(&mut self.nat_chains).into_iter().collect();
        let stale: Vec<&String> = previous
            .iter()
            .filter(|c| !current.contains(*c))
            .filter(|c| {
                c.strip_prefix(p)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(chains::is_kind)
            })
            .collect();
        for c in &stale {
            w!(t, ":{c} - [0:0]\n");
        }
        w!(t, "-A {p}-MARK-MASQ -j MARK --or-mark {MASQ_BIT}\n");
        if cfg.masquerade_egress
            && let Some(pod) = cfg.pod_cidr.filter(|c| c.addr().is_ipv4() == self.v4)
        {
            w!(
                t,
                "-A {p}-POSTROUTING -s {} ! -d {cidr} -m comment --comment \"k8slite pod egress\" -j MASQUERADE --random-fully\n",
                pod.trunc()
            );
        }
        w!(
            t,
            "-A {p}-POSTROUTING -m mark ! --mark {MASQ_MARK} -j RETURN\n"
        );
        w!(t, "-A {p}-POSTROUTING -j MARK --xor-mark {MASQ_BIT}\n");
        w!(
            t,
            "-A {p}-POSTROUTING -m comment --comment \"k8slite service traffic requiring SNAT\" -j MASQUERADE --random-fully\n"
        );
        t.push_str(&self.nat_svc);
        let mut np = String::new();
        self.node_addresses(&mut np, |buf, dst| {
            w!(buf, "-A {p}-SERVICES {dst}-m comment --comment \"k8slite node ports\" -j {p}-NODEPORTS\n");
        });
        t.push_str(&np);
        t.push_str(&self.nat_np);
        t.push_str(&self.nat_rules);
        for c in &stale {
            w!(t, "-X {c}\n");
        }
        t.push_str("COMMIT\n");
        *chains_out = current;
        t
    }
}
