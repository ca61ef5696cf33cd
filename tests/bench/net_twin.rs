//! The hand-built twins of k8slite's pod network, configured with plain `ip` (the kernel's own
//! path, no k8slite, no iptables rules, no conntrack): two node namespaces on a bridge in the
//! root namespace (as the e2e harness's LAN), each with a pod namespace behind a veth on a
//! bridge `k8slite0` in the node (as the CNI bridge plugin builds it, with the pod MTU k8slite
//! configures), joined by a VXLAN device (route + neighbour + FDB per remote node, as
//! `shared/reference/cri-lab/vxlan-lab.sh`) or by host-gw routes. And a bare veth pair between
//! two namespaces. Every name carries the run's prefix; [`Drop`] removes everything.
//!
//! With `conntrack`, a twin also gets the two rules any Kubernetes node has (in each node:
//! pod egress `MASQUERADE` in nat POSTROUTING and `FORWARD … --ctstate RELATED,ESTABLISHED
//! -j ACCEPT`), so the kernel tracks the pod-to-pod flow as it does on k8slite's nodes: the
//! reference for what an iptables data path cannot avoid.

use std::path::PathBuf;

use anyhow::Context;

use crate::iperf::{ip, netns, ns_run};

/// How the twin's nodes reach each other's pod CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// VXLAN device `k8slite.1` (VNI 1, port 8472, learning off).
    Vxlan,
    /// A route to the other node's pod CIDR via its node address.
    HostGw,
}

/// Names of one twin; what exists is removed on drop.
pub struct Twin {
    netns: Vec<String>,
    links: Vec<String>,
    /// Pod namespace of node a (the client).
    pub pod_a: PathBuf,
    /// Pod namespace of node b (the server).
    pub pod_b: PathBuf,
    /// Pod address on node b.
    pub pod_b_ip: String,
}

impl Drop for Twin {
    fn drop(&mut self) {
        for l in &self.links {
            k8slite_tests::e2e::sys::run_quiet("ip", &["link", "del", l]);
        }
        for n in &self.netns {
            k8slite_tests::e2e::sys::run_quiet("ip", &["netns", "del", n]);
        }
    }
}

impl Twin {
    fn empty() -> Self {
        Self {
            netns: Vec::new(),
            links: Vec::new(),
            pod_a: PathBuf::new(),
            pod_b: PathBuf::new(),
            pod_b_ip: String::new(),
        }
    }

    fn add_netns(&mut self, name: String) -> anyhow::Result<PathBuf> {
        ip(&["netns", "add", &name])?;
        self.netns.push(name.clone());
        let p = netns(&name);
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(p)
    }

    /// Two nodes and two pods with `backend`; pod veths and node bridges at `pod_mtu`, the
    /// VXLAN device at `vxlan_mtu`; with `conntrack` the two rules every node has (see the
    /// module documentation). `prefix` is at most 6 characters (link names ≤ 15).
    pub fn nodes(
        prefix: &str,
        backend: Backend,
        pod_mtu: u32,
        vxlan_mtu: u32,
        conntrack: bool,
    ) -> anyhow::Result<Self> {
        let tag = match (backend, conntrack) {
            (Backend::Vxlan, false) => "x",
            (Backend::HostGw, false) => "g",
            (Backend::Vxlan, true) => "xc",
            (Backend::HostGw, true) => "gc",
        };
        let mut t = Self::empty();
        let lan = format!("{prefix}{tag}-lan");
        ip(&["link", "add", &lan, "type", "bridge"])?;
        t.links.push(lan.clone());
        ip(&["link", "set", &lan, "up"])?;
        let pod_mtu_s = pod_mtu.to_string();
        let mut macs = Vec::new();
        for (i, n) in ["a", "b"].into_iter().enumerate() {
            let node = format!("{prefix}-{tag}-node{n}");
            let pod = format!("{prefix}-{tag}-pod{n}");
            let node_ns = t.add_netns(node.clone())?;
            let pod_ns = t.add_netns(pod.clone())?;
            let host = format!("{prefix}{tag}-h{n}");
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &node,
            ])?;
            t.links.push(host.clone());
            ip(&["link", "set", &host, "master", &lan, "up"])?;
            let node_ip = format!("192.168.251.{}", 11 + i);
            ip(&[
                "-n",
                &node,
                "addr",
                "add",
                &format!("{node_ip}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &node, "link", "set", "eth0", "up"])?;
            ns_run(&node_ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            if conntrack {
                let pod_cidr = format!("10.42.{i}.0/24");
                ns_run(
                    &node_ns,
                    &[
                        "iptables",
                        "-w",
                        "-t",
                        "nat",
                        "-A",
                        "POSTROUTING",
                        "-s",
                        &pod_cidr,
                        "!",
                        "-d",
                        "10.42.0.0/16",
                        "-j",
                        "MASQUERADE",
                    ],
                )?;
                ns_run(
                    &node_ns,
                    &[
                        "iptables",
                        "-w",
                        "-A",
                        "FORWARD",
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "RELATED,ESTABLISHED",
                        "-j",
                        "ACCEPT",
                    ],
                )?;
            }
            // The CNI bridge plugin's shape: bridge with the gateway address, pod veth on it.
            ip(&[
                "-n", &node, "link", "add", "k8slite0", "mtu", &pod_mtu_s, "type", "bridge",
            ])?;
            ip(&[
                "-n",
                &node,
                "addr",
                "add",
                &format!("10.42.{i}.1/24"),
                "dev",
                "k8slite0",
            ])?;
            ip(&["-n", &node, "link", "set", "k8slite0", "up"])?;
            ip(&[
                "-n", &node, "link", "add", "vp", "mtu", &pod_mtu_s, "type", "veth", "peer",
                "name", "eth0", "mtu", &pod_mtu_s, "netns", &pod,
            ])?;
            ip(&["-n", &node, "link", "set", "vp", "master", "k8slite0", "up"])?;
            ip(&[
                "-n",
                &pod,
                "addr",
                "add",
                &format!("10.42.{i}.2/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &pod, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &pod,
                "route",
                "add",
                "default",
                "via",
                &format!("10.42.{i}.1"),
            ])?;
            if backend == Backend::Vxlan {
                ip(&[
                    "-n",
                    &node,
                    "link",
                    "add",
                    "k8slite.1",
                    "type",
                    "vxlan",
                    "id",
                    "1",
                    "local",
                    &node_ip,
                    "dev",
                    "eth0",
                    "dstport",
                    "8472",
                    "nolearning",
                ])?;
                ip(&[
                    "-n",
                    &node,
                    "link",
                    "set",
                    "k8slite.1",
                    "mtu",
                    &vxlan_mtu.to_string(),
                    "up",
                ])?;
                ip(&[
                    "-n",
                    &node,
                    "addr",
                    "add",
                    &format!("10.42.{i}.0/32"),
                    "dev",
                    "k8slite.1",
                ])?;
                let out = ns_run(&node_ns, &["ip", "-o", "link", "show", "k8slite.1"])?;
                let mac = out
                    .split_whitespace()
                    .skip_while(|w| *w != "link/ether")
                    .nth(1)
                    .context("VTEP MAC of k8slite.1")?
                    .to_string();
                macs.push(mac);
            }
            if i == 0 {
                t.pod_a = pod_ns;
            } else {
                t.pod_b = pod_ns;
            }
        }
        for (i, n) in ["a", "b"].into_iter().enumerate() {
            let node = format!("{prefix}-{tag}-node{n}");
            let other = 1 - i;
            let cidr = format!("10.42.{other}.0/24");
            let other_ip = format!("192.168.251.{}", 11 + other);
            match backend {
                Backend::HostGw => ip(&["-n", &node, "route", "add", &cidr, "via", &other_ip])?,
                Backend::Vxlan => {
                    let vtep = format!("10.42.{other}.0");
                    ip(&[
                        "-n",
                        &node,
                        "route",
                        "add",
                        &cidr,
                        "via",
                        &vtep,
                        "dev",
                        "k8slite.1",
                        "onlink",
                    ])?;
                    ip(&[
                        "-n",
                        &node,
                        "neigh",
                        "add",
                        &vtep,
                        "lladdr",
                        &macs[other],
                        "dev",
                        "k8slite.1",
                        "nud",
                        "permanent",
                    ])?;
                    ns_run(
                        &netns(&node),
                        &[
                            "bridge",
                            "fdb",
                            "append",
                            &macs[other],
                            "dev",
                            "k8slite.1",
                            "dst",
                            &other_ip,
                        ],
                    )?;
                }
            }
        }
        t.pod_b_ip = "10.42.1.2".into();
        Ok(t)
    }

    /// A bare veth pair between two namespaces (default MTU 1500), nothing else.
    pub fn veth(prefix: &str) -> anyhow::Result<Self> {
        let mut t = Self::empty();
        let a = format!("{prefix}-v1");
        let b = format!("{prefix}-v2");
        t.pod_a = t.add_netns(a.clone())?;
        t.pod_b = t.add_netns(b.clone())?;
        ip(&[
            "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b,
        ])?;
        ip(&["-n", &a, "addr", "add", "10.99.0.1/24", "dev", "eth0"])?;
        ip(&["-n", &b, "addr", "add", "10.99.0.2/24", "dev", "eth0"])?;
        ip(&["-n", &a, "link", "set", "eth0", "up"])?;
        ip(&["-n", &b, "link", "set", "eth0", "up"])?;
        t.pod_b_ip = "10.99.0.2".into();
        Ok(t)
    }
}
