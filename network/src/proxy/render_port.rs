//! The rules of one service port: entry points in the top chains, the cluster/local/external/
//! firewall chains, endpoint chains, and the filter rules for ports without (local) endpoints.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::chains;
use super::model::{Ep, PortModel, Proto, SvcModel};
use super::render::{Comment, Host, SockAddr, UdpKey, UdpState, Writer};

impl Writer<'_> {
    /// The rules of one service port.
    pub(super) fn port(&mut self, s: &SvcModel<'_>, pt: &PortModel<'_>, udp: &mut UdpState) {
        let p = self.p;
        let proto = pt.proto.as_str();
        // Identity of the service port (no allocation: hashed part by part).
        let id: [&[u8]; 4] = [
            s.ns.as_bytes(),
            s.name.as_bytes(),
            pt.name.as_bytes(),
            proto.as_bytes(),
        ];
        let external = s.external(pt);
        let uses_cluster = !pt.cluster.is_empty() && (!s.itp_local || external);
        let uses_local = !pt.local.is_empty() && (s.itp_local || s.etp_local);
        let has_internal = if s.itp_local {
            !pt.local.is_empty()
        } else {
            !pt.cluster.is_empty()
        };
        let has_external = if s.etp_local {
            !pt.local.is_empty()
        } else {
            !pt.cluster.is_empty()
        };
        let uses_ext_chain = external && (uses_cluster || uses_local);
        let d = chains::digest(&id);
        let named = |used: bool, kind: &str| {
            if used {
                chains::name(p, kind, &d)
            } else {
                String::new()
            }
        };
        let use_fw = !s.source_ranges.is_empty() && !s.lb_ips.is_empty();
        let svc = named(uses_cluster, "SVC");
        let svl = named(uses_local, "SVL");
        let ext = named(uses_ext_chain, "EXT");
        let fw = named(use_fw && uses_ext_chain, "FW");
        let vip = Host(s.cluster_ip);
        let port = pt.port;

        // Entry points in P-SERVICES / P-NODEPORTS.
        let internal = if s.itp_local { &svl } else { &svc };
        if has_internal {
            w!(
                self.nat_svc,
                "-A {p}-SERVICES -d {vip} -p {proto} -m {proto} --dport {port} {} -j {internal}\n",
                Comment(s.ns, s.name, pt.name, "cluster IP")
            );
        } else {
            let target = if pt.cluster.is_empty() {
                self.reject()
            } else {
                "DROP"
            };
            let why = if pt.cluster.is_empty() {
                "has no endpoints"
            } else {
                "has no local endpoints"
            };
            w!(
                self.f_svc,
                "-A {p}-SERVICES -d {vip} -p {proto} -m {proto} --dport {port} {} -j {target}\n",
                Comment(s.ns, s.name, pt.name, why)
            );
        }
        if uses_ext_chain {
            for ip in &s.external_ips {
                w!(
                    self.nat_svc,
                    "-A {p}-SERVICES -d {} -p {proto} -m {proto} --dport {port} {} -j {ext}\n",
                    Host(*ip),
                    Comment(s.ns, s.name, pt.name, "external IP")
                );
            }
            for ip in &s.lb_ips {
                w!(
                    self.nat_svc,
                    "-A {p}-SERVICES -d {} -p {proto} -m {proto} --dport {port} {} -j {}\n",
                    Host(*ip),
                    Comment(s.ns, s.name, pt.name, "loadbalancer IP"),
                    if use_fw { &fw } else { &ext }
                );
            }
            if let Some(np) = pt.node_port {
                w!(
                    self.nat_np,
                    "-A {p}-NODEPORTS -p {proto} -m {proto} --dport {np} {} -j {ext}\n",
                    Comment(s.ns, s.name, pt.name, "node port")
                );
            }
        }
        if external && !has_external {
            let (target, why) = if pt.cluster.is_empty() {
                (self.reject(), "has no endpoints")
            } else {
                ("DROP", "has no local endpoints")
            };
            for ip in s.external_ips.iter().chain(&s.lb_ips) {
                w!(
                    self.f_ext,
                    "-A {p}-EXTERNAL -d {} -p {proto} -m {proto} --dport {port} {} -j {target}\n",
                    Host(*ip),
                    Comment(s.ns, s.name, pt.name, why)
                );
            }
            if let Some(np) = pt.node_port {
                let mut f_ext = std::mem::take(&mut self.f_ext);
                self.node_addresses(&mut f_ext, |buf, dst| {
                    w!(
                        buf,
                        "-A {p}-EXTERNAL {dst}-p {proto} -m {proto} --dport {np} {} -j {target}\n",
                        Comment(s.ns, s.name, pt.name, why)
                    );
                });
                self.f_ext = f_ext;
            }
        }
        if use_fw && uses_ext_chain {
            for ip in &s.lb_ips {
                w!(
                    self.f_fw,
                    "-A {p}-FIREWALL -d {} -p {proto} -m {proto} --dport {port} {} -j DROP\n",
                    Host(*ip),
                    Comment(
                        s.ns,
                        s.name,
                        pt.name,
                        "traffic not accepted by its source ranges"
                    )
                );
            }
        }

        // Endpoint chains, shared by the cluster and local chains.
        let mut seps: Vec<(Ep, String)> = Vec::new();
        let eps = pt
            .cluster
            .iter()
            .filter(|_| uses_cluster)
            .chain(pt.local.iter().filter(|_| uses_local));
        for e in eps {
            if seps.iter().any(|(o, _)| o.ip == e.ip && o.port == e.port) {
                continue;
            }
            let ep = SockAddr(e.ip, e.port);
            let mut key = [0u8; 18];
            key[..16].copy_from_slice(&match e.ip {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            });
            key[16..].copy_from_slice(&e.port.to_be_bytes());
            let name = chains::hashed(p, "SEP", &[id[0], id[1], id[2], id[3], &key]);
            self.declare(&name);
            w!(
                self.nat_rules,
                "-A {name} -s {} -j {p}-MARK-MASQ\n",
                Host(e.ip)
            );
            match s.affinity {
                Some(_) => w!(
                    self.nat_rules,
                    "-A {name} -p {proto} -m {proto} -m recent --name {name} --set -j DNAT --to-destination {ep}\n"
                ),
                None => w!(
                    self.nat_rules,
                    "-A {name} -p {proto} -m {proto} -j DNAT --to-destination {ep}\n"
                ),
            }
            seps.push((*e, name));
        }
        let sep_of = |e: &Ep| -> &str {
            seps.iter()
                .find(|(o, _)| o.ip == e.ip && o.port == e.port)
                .map(|(_, n)| n.as_str())
                .unwrap_or_default()
        };
        if uses_cluster {
            self.declare(&svc);
            if !s.itp_local {
                self.masq_outside(&svc, vip.0, proto, port);
            }
            let list: Vec<&str> = pt.cluster.iter().map(sep_of).collect();
            self.spread(&svc, &list, s.affinity);
        }
        if uses_local {
            self.declare(&svl);
            if s.itp_local {
                self.masq_outside(&svl, vip.0, proto, port);
            }
            let list: Vec<&str> = pt.local.iter().map(sep_of).collect();
            self.spread(&svl, &list, s.affinity);
        }
        if uses_ext_chain {
            self.declare(&ext);
            if s.etp_local {
                let cidr = self.cfg.cluster_cidr.trunc();
                if uses_cluster {
                    w!(
                        self.nat_rules,
                        "-A {ext} -s {cidr} {} -j {svc}\n",
                        Comment(
                            s.ns,
                            s.name,
                            pt.name,
                            "pod traffic to external destinations"
                        )
                    );
                    w!(
                        self.nat_rules,
                        "-A {ext} -m addrtype --src-type LOCAL -j {p}-MARK-MASQ\n-A {ext} -m addrtype --src-type LOCAL -j {svc}\n"
                    );
                }
                if uses_local {
                    w!(self.nat_rules, "-A {ext} -j {svl}\n");
                }
            } else {
                w!(
                    self.nat_rules,
                    "-A {ext} -j {p}-MARK-MASQ\n-A {ext} -j {svc}\n"
                );
            }
            if use_fw {
                self.declare(&fw);
                for r in &s.source_ranges {
                    w!(self.nat_rules, "-A {fw} -s {r} -j {ext}\n");
                }
                for ip in &s.lb_ips {
                    if s.source_ranges.iter().any(|r| r.contains(ip)) {
                        w!(self.nat_rules, "-A {fw} -s {} -j {ext}\n", Host(*ip));
                    }
                }
            }
        }

        if pt.proto == Proto::Udp {
            let used: BTreeSet<IpAddr> = seps.iter().map(|(e, _)| e.ip).collect();
            udp.insert(UdpKey::Ip(s.cluster_ip, port), used.clone());
            for ip in s.external_ips.iter().chain(&s.lb_ips) {
                udp.insert(UdpKey::Ip(*ip, port), used.clone());
            }
            if let Some(np) = pt.node_port {
                udp.insert(UdpKey::NodePort(np), used);
            }
        }
    }

    /// `! -s <cluster CIDR> -d <vip> … -j MARK-MASQ` in `chain`.
    fn masq_outside(&mut self, chain: &str, vip: IpAddr, proto: &str, port: u16) {
        w!(
            self.nat_rules,
            "-A {chain} ! -s {} -d {} -p {proto} -m {proto} --dport {port} -j {}-MARK-MASQ\n",
            self.cfg.cluster_cidr.trunc(),
            Host(vip),
            self.p
        );
    }

    /// Affinity checks, then random spreading over `seps`.
    fn spread(&mut self, chain: &str, seps: &[&str], affinity: Option<u32>) {
        if let Some(secs) = affinity {
            for sep in seps {
                w!(
                    self.nat_rules,
                    "-A {chain} -m recent --name {sep} --rcheck --seconds {secs} --reap -j {sep}\n"
                );
            }
        }
        let n = seps.len();
        for (i, sep) in seps.iter().enumerate() {
            if i + 1 < n {
                let prob = 1.0 / (n - i) as f64;
                w!(
                    self.nat_rules,
                    "-A {chain} -m statistic --mode random --probability {prob:.10} -j {sep}\n"
                );
            } else {
                w!(self.nat_rules, "-A {chain} -j {sep}\n");
            }
        }
    }

    /// The filter accept for a health-check node port.
    pub(super) fn health_check(&mut self, s: &SvcModel<'_>, port: u16) {
        w!(
            self.f_hc,
            "-A {}-INPUT -p tcp -m tcp --dport {port} {} -j ACCEPT\n",
            self.p,
            Comment(s.ns, s.name, "", "health check node port")
        );
    }
}
