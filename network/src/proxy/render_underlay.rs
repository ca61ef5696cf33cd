//! The overlay's own packets (vxlan backend): the encapsulated UDP between nodes skips
//! conntrack and our filter chains, so each outer packet costs one raw rule and one filter
//! rule instead of a conntrack lookup (its one-way 5-tuple stays `NEW` forever) and a walk
//! through the service, firewall and external chains.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::render::{Host, Writer};

/// Comment of the underlay rules.
const COMMENT: &str = "-m comment --comment \"k8slite vxlan underlay\"";

impl Writer<'_> {
    /// Node addresses of the programmed family (empty: any local address).
    fn own_ips(&self) -> Vec<IpAddr> {
        self.cfg
            .node_ips
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv4() == self.v4)
            .collect()
    }

    /// raw `P-PREROUTING`: NOTRACK for UDP to the VXLAN port on a node address (received
    /// outer packets).
    pub(super) fn underlay_prerouting(&self, t: &mut String) {
        let Some(port) = self.cfg.vxlan_port else {
            return;
        };
        let p = self.p;
        self.node_addresses(t, |buf, dst| {
            w!(
                buf,
                "-A {p}-PREROUTING {dst}-p udp -m udp --dport {port} {COMMENT} -j NOTRACK\n"
            );
        });
    }

    /// raw `P-OUTPUT`: NOTRACK for UDP from a node address to the VXLAN port (sent outer
    /// packets), never for the service CIDR (a UDP service on that port stays DNATed).
    pub(super) fn underlay_output(&self, t: &mut String) {
        let Some(port) = self.cfg.vxlan_port else {
            return;
        };
        let p = self.p;
        let svc = self.cfg.service_cidr.trunc();
        let ips = self.own_ips();
        if ips.is_empty() {
            w!(
                t,
                "-A {p}-OUTPUT -m addrtype --src-type LOCAL ! -d {svc} -p udp -m udp --dport {port} {COMMENT} -j NOTRACK\n"
            );
        }
        for ip in ips {
            w!(
                t,
                "-A {p}-OUTPUT -s {} ! -d {svc} -p udp -m udp --dport {port} {COMMENT} -j NOTRACK\n",
                Host(ip)
            );
        }
    }

    /// filter `P-INPUT`/`P-OUTPUT` (`chain`): the NOTRACKed outer packets return at once (no
    /// rule after this one could match them: the `NEW` jumps need tracked packets, the
    /// accepts are for other ports).
    pub(super) fn underlay_return(&self, t: &mut String, chain: &str) {
        let Some(port) = self.cfg.vxlan_port else {
            return;
        };
        let p = self.p;
        w!(
            t,
            "-A {p}-{chain} -p udp -m udp --dport {port} -m conntrack --ctstate UNTRACKED {COMMENT} -j RETURN\n"
        );
    }
}
