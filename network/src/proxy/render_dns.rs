//! Node-local DNS across agent restarts: while no DNS server listens on the cluster DNS
//! address (the agent restarting, upgrading or crashed), the kernel would answer a UDP query
//! with ICMP port unreachable and a TCP SYN with a RST, and resolvers give up at once. These
//! filter rules (first in `<prefix>-OUTPUT`, behind only the VXLAN underlay's return) drop those locally generated replies, so clients
//! see a lost packet and retry (glibc and musl resolvers retry after their timeout, TCP
//! retransmits the SYN) until the agent answers again. The rules stay in the kernel while the
//! agent is away, which is their point.
//!
//! - UDP: ICMP (ICMPv6) port unreachable from the DNS address. The kernel sends it with the
//!   probed address as source only for packets to that local address; nothing else is
//!   served there, so every such error is about a DNS query.
//! - TCP: RST+ACK from the DNS address's port 53, the reply to a SYN with no listener (also an
//!   abortive close; then the client retransmits and the next server answers with a plain RST
//!   to the stale connection, which passes). Plain RSTs are not dropped.
//!
//! Rendered only with a node-local DNS (`ProxyConfig::local_dns`, absent with
//! `--disable dns`). Nothing here touches the NOTRACK rules of the raw table.

use std::fmt::Write as _;

use super::render::{DNS_PORT, Host, Writer};

/// Comment on the rules.
const COMMENT: &str = "node-local dns: clients retry while no server listens";

impl Writer<'_> {
    /// Append the rules (filter table, `<prefix>-OUTPUT`) to `t`.
    pub(super) fn dns_restart_rules(&self, t: &mut String) {
        let Some(dns) = self.cfg.local_dns.filter(|d| d.is_ipv4() == self.v4) else {
            return;
        };
        let p = self.p;
        let d = Host(dns);
        let unreachable = if self.v4 {
            "-p icmp -m icmp --icmp-type port-unreachable"
        } else {
            "-p ipv6-icmp -m icmp6 --icmpv6-type port-unreachable"
        };
        w!(
            t,
            "-A {p}-OUTPUT -s {d} {unreachable} -m comment --comment \"{COMMENT}\" -j DROP\n"
        );
        w!(
            t,
            "-A {p}-OUTPUT -s {d} -p tcp -m tcp --sport {DNS_PORT} --tcp-flags RST,ACK RST,ACK -m comment --comment \"{COMMENT}\" -j DROP\n"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::{ProxyConfig, render};

    fn cfg(service_cidr: &str, dns: Option<&str>) -> ProxyConfig {
        let v4 = service_cidr.contains('.');
        let mut c = ProxyConfig::new(
            "node-a",
            vec![],
            if v4 { "10.42.0.0/16" } else { "fd00:42::/56" }
                .parse()
                .unwrap(),
            service_cidr.parse().unwrap(),
        );
        c.local_dns = dns.map(|d| d.parse().unwrap());
        c
    }

    fn filter_output(text: &str) -> Vec<&str> {
        let filter = text
            .split("*filter\n")
            .nth(1)
            .and_then(|t| t.split("COMMIT\n").next())
            .unwrap();
        filter
            .lines()
            .filter(|l| l.starts_with("-A K8SLITE-OUTPUT "))
            .collect()
    }

    #[test]
    fn replies_refusing_dns_clients_are_dropped_first_in_output() {
        let r = render(
            &cfg("10.43.0.0/16", Some("10.43.0.10")),
            &[],
            &[],
            &BTreeSet::new(),
        );
        let out = filter_output(&r.text);
        assert_eq!(
            &out[..2],
            &[
                "-A K8SLITE-OUTPUT -s 10.43.0.10/32 -p icmp -m icmp --icmp-type port-unreachable -m comment --comment \"node-local dns: clients retry while no server listens\" -j DROP",
                "-A K8SLITE-OUTPUT -s 10.43.0.10/32 -p tcp -m tcp --sport 53 --tcp-flags RST,ACK RST,ACK -m comment --comment \"node-local dns: clients retry while no server listens\" -j DROP",
            ],
            "{}",
            r.text
        );
        // Before the accept of the server's own replies.
        let accept = out
            .iter()
            .position(|l| l.contains("--sport 53") && l.ends_with("-j ACCEPT"))
            .unwrap();
        assert!(accept > 1, "{out:?}");
        // The NOTRACK rules are unchanged.
        assert_eq!(r.text.matches("-j NOTRACK").count(), 6);
    }

    #[test]
    fn ipv6_uses_icmpv6() {
        let r = render(
            &cfg("fd00:43::/112", Some("fd00:43::a")),
            &[],
            &[],
            &BTreeSet::new(),
        );
        let out = filter_output(&r.text);
        assert!(
            out[0].starts_with(
                "-A K8SLITE-OUTPUT -s fd00:43::a/128 -p ipv6-icmp -m icmp6 --icmpv6-type port-unreachable"
            ),
            "{out:?}"
        );
        assert!(out[1].contains("--tcp-flags RST,ACK RST,ACK"), "{out:?}");
    }

    #[test]
    fn nothing_without_the_node_local_dns() {
        let r = render(&cfg("10.43.0.0/16", None), &[], &[], &BTreeSet::new());
        assert!(
            !r.text.contains("port-unreachable -m comment"),
            "{}",
            r.text
        );
        assert!(!r.text.contains("--tcp-flags"), "{}", r.text);
        assert!(!r.text.contains("clients retry"), "{}", r.text);
    }
}
