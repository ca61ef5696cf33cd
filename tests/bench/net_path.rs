//! `k8slite-bench-net`: pod-to-pod TCP throughput across nodes (iperf3 in the pods' network
//! namespaces) for the `vxlan` and `host-gw` backends of a real two-node e2e cluster, beside
//! hand-built twins of the same topology (plain `ip`, no k8slite), the same twins plus the
//! conntrack every Kubernetes node needs (pod egress MASQUERADE, FORWARD accept of
//! established flows), and a bare veth pair, all in the same run, interleaved round by round. Writes (or replaces) the
//! `## Pod-to-pod throughput across nodes` section of `tests/bench/RESULTS.md`. No timing is
//! asserted.
//!
//! Usage (root, like the e2e tests): `cargo build --release -p k8slite -p k8slite-tests &&
//! K8SLITE_BIN=$CARGO_TARGET_DIR/release/k8slite $CARGO_TARGET_DIR/release/k8slite-bench-net
//! [--runs N] [--secs S] [--out FILE]`.

#![allow(clippy::print_stdout)] // a command-line tool reporting figures

#[path = "net_iperf.rs"]
mod iperf;
#[path = "net_twin.rs"]
mod twin;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8slite_tests::bench::{replace_section, utc_now};
use k8slite_tests::e2e::{E2eCluster, E2eOptions, WAIT, cleanup, sys};

use iperf::{Sample, iperf, link_mtu, ns_run, stats, tx_csum};
use twin::{Backend, Twin};

const PORT: u16 = 5201;

/// What was measured for one backend.
struct Phase {
    backend: &'static str,
    k8slite: Vec<Sample>,
    twin: Vec<Sample>,
    /// The twin with the two conntrack rules of any node.
    twin_ct: Vec<Sample>,
    /// Pod eth0, node bridge, VXLAN device MTUs and tx checksum offload on k8slite's path.
    path: String,
    /// Same for the twin.
    twin_path: String,
    /// iptables rules of the client node whose packet counters grew by ≥ 1000 during one
    /// k8slite run (the pod-to-pod flow's rules).
    hot_rules: Vec<String>,
    /// conntrack entries of the flow in the client node after a run.
    conntrack: String,
    /// iptables rules (`-A` lines) in the client node during the first run.
    rules: usize,
}

fn busybox_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, \"3600\"]\n"
    )
}

/// `/proc/<pid>/ns/net` of a process of pod `pod` on logical node `node` (found through the
/// pod's cgroup `k8slite-<node>/pod<uid>`).
fn pod_netns(c: &E2eCluster, node: &str, pod: &str) -> PathBuf {
    let uid = c.field(&["get", "pod", pod], "{.metadata.uid}");
    let cg = format!("{}/pod{uid}", cleanup::cgroup_name(&c.node_name(node)));
    let pid = c.wait_for(&format!("a process in cgroup {cg}"), WAIT, || {
        sys::cgroup_pids(&cg).into_iter().find(|p| sys::alive(*p))
    });
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// `iptables-save -c` (filter, nat, mangle, raw) in `ns`: rule text → packet counter.
fn counters(ns: &Path) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let Ok(out) = ns_run(ns, &["iptables-save", "-c"]) else {
        return m;
    };
    let mut table = String::new();
    for l in out.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(rest) = l.strip_prefix('[')
            && let Some((cnt, rule)) = rest.split_once("] ")
            && let Some((pk, _)) = cnt.split_once(':')
        {
            *m.entry(format!("{table}: {rule}")).or_default() += pk.parse::<u64>().unwrap_or(0);
        } else if l.starts_with(':') {
            // chain policy counters: ":FORWARD ACCEPT [p:b]"
            let mut w = l.split_whitespace();
            if let (Some(chain), Some(_), Some(cnt)) = (w.next(), w.next(), w.next())
                && let Some((pk, _)) = cnt.trim_matches(['[', ']']).split_once(':')
            {
                *m.entry(format!("{table}: {chain} policy")).or_default() +=
                    pk.parse::<u64>().unwrap_or(0);
            }
        }
    }
    m
}

fn fmt_samples(v: &[Sample]) -> String {
    let g: Vec<f64> = v.iter().map(|s| s.gbit).collect();
    let (med, min, max) = stats(&g);
    format!("{med:.2} | {min:.2} | {max:.2}")
}

fn median(v: &[Sample]) -> f64 {
    stats(&v.iter().map(|s| s.gbit).collect::<Vec<_>>()).0
}

fn retrans(v: &[Sample]) -> String {
    v.iter()
        .map(|s| s.retransmits.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_backend(
    backend: &'static str,
    prefix: &str,
    runs: usize,
    secs: u32,
    veth: &Twin,
    veth_samples: &mut Vec<Sample>,
) -> anyhow::Result<Phase> {
    let c = E2eCluster::start_with(E2eOptions {
        agents: vec!["agent1".into()],
        server_flags: vec![format!("--network-backend={backend}")],
        ..E2eOptions::default()
    });
    // Client pod on the server's node, iperf3 server pod on agent1.
    c.apply(&busybox_pod("perf-a", &c.node_name("server")));
    c.apply(&busybox_pod("perf-b", &c.node_name("agent1")));
    c.wait_pod_ready("perf-a");
    let ip_b = c.wait_pod_ready("perf-b");
    let ns_a = pod_netns(&c, "server", "perf-a");
    let ns_b = pod_netns(&c, "agent1", "perf-b");
    let node_a = c.node("server").netns_path.clone();
    // Measure what a user gets once the agents are settled: both nodes' service proxy and
    // forwarding rules in place (the proxy syncs on its own schedule after the node is Ready).
    // Not fatal: a node without them is measured anyway and reported with its rule count.
    for n in ["server", "agent1"] {
        let ns = c.node(n).netns_path.clone();
        let hooked = k8slite_tests::eventually(WAIT, || {
            ns_run(&ns, &["iptables-save"])
                .ok()
                .filter(|o| o.contains("-A FORWARD") && o.contains("K8SLITE-FORWARD"))
                .map(|_| ())
        });
        if hooked.is_none() {
            println!("WARNING: no K8SLITE-FORWARD rules on {n} after {WAIT:?}; measuring anyway");
        }
    }

    // The MTUs k8slite configured: the conflist's, the pod's eth0, the bridge, the VXLAN device.
    let conflist = c
        .node("server")
        .data_dir()
        .join("agent/cni/net.d/10-k8slite.conflist");
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&conflist)
            .with_context(|| format!("reading {}", conflist.display()))?,
    )
    .context("conflist JSON")?;
    let conf_mtu = doc["plugins"][0]["mtu"].as_u64();
    let ip_masq = doc["plugins"][0]["ipMasq"].clone();
    let pod_mtu = link_mtu(&ns_a, "eth0")?;
    let br_mtu = link_mtu(&node_a, "k8slite0")?;
    let (vx_mtu, vx_csum) = if backend == "vxlan" {
        (
            link_mtu(&node_a, "k8slite.1")?,
            tx_csum(&node_a, "k8slite.1"),
        )
    } else {
        (0, String::new())
    };
    if let Some(m) = conf_mtu
        && m != u64::from(pod_mtu)
    {
        println!("WARNING: conflist MTU {m} but pod eth0 MTU {pod_mtu}");
    }
    let mut path = format!(
        "conflist mtu {}, ipMasq {ip_masq}; pod eth0 {pod_mtu}, bridge k8slite0 {br_mtu}",
        conf_mtu.map_or("absent (1500)".into(), |m| m.to_string())
    );
    // Whether the agent's rules are in place (the proxy syncs on its own schedule).
    let rule_count = |ns: &Path| {
        ns_run(ns, &["iptables-save"])
            .map_or(0, |o| o.lines().filter(|l| l.starts_with("-A")).count())
    };
    if backend == "vxlan" {
        write!(
            path,
            ", k8slite.1 {vx_mtu} (tx-checksum-ip-generic {vx_csum})"
        )?;
    }
    println!("{backend} k8slite path: {path}");

    let tb = if backend == "vxlan" {
        Backend::Vxlan
    } else {
        Backend::HostGw
    };
    let twin = Twin::nodes(prefix, tb, pod_mtu, vx_mtu.max(1), false)?;
    let twin_ct = Twin::nodes(prefix, tb, pod_mtu, vx_mtu.max(1), true)?;
    let twin_node_a = iperf::netns(&format!(
        "{prefix}-{}-nodea",
        if tb == Backend::Vxlan { "x" } else { "g" }
    ));
    let mut twin_path = format!("pod eth0 {}", link_mtu(&twin.pod_a, "eth0")?);
    write!(
        twin_path,
        ", bridge k8slite0 {}",
        link_mtu(&twin_node_a, "k8slite0")?
    )?;
    if tb == Backend::Vxlan {
        write!(
            twin_path,
            ", k8slite.1 {} (tx-checksum-ip-generic {})",
            link_mtu(&twin_node_a, "k8slite.1")?,
            tx_csum(&twin_node_a, "k8slite.1")
        )?;
    }
    println!("{backend} twin path: {twin_path}");

    let mut phase = Phase {
        backend,
        k8slite: Vec::new(),
        twin: Vec::new(),
        twin_ct: Vec::new(),
        path,
        twin_path,
        hot_rules: Vec::new(),
        conntrack: String::new(),
        rules: 0,
    };
    for round in 0..runs {
        let before = counters(&node_a);
        let s = iperf(&ns_b, &ns_a, &ip_b, PORT, secs).context("k8slite pod → pod")?;
        println!(
            "{backend} round {round}: k8slite {:.2} Gbit/s ({} retr)",
            s.gbit, s.retransmits
        );
        phase.k8slite.push(s);
        if round == 0 {
            phase.rules = rule_count(&node_a);
            let after = counters(&node_a);
            for (rule, n) in &after {
                let d = n.saturating_sub(before.get(rule).copied().unwrap_or(0));
                if d >= 1000 {
                    phase.hot_rules.push(format!("{d} packets: {rule}"));
                }
            }
            phase.conntrack = ns_run(
                &node_a,
                &["conntrack", "-L", "-p", "tcp", "--dport", "5201"],
            )
            .unwrap_or_else(|e| format!("conntrack -L failed: {e}"))
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
            println!(
                "hot rules: {:#?}\nconntrack: {}",
                phase.hot_rules, phase.conntrack
            );
        }
        let s = iperf(&twin.pod_b, &twin.pod_a, &twin.pod_b_ip, PORT, secs)
            .context("hand-built twin")?;
        println!(
            "{backend} round {round}: twin {:.2} Gbit/s ({} retr)",
            s.gbit, s.retransmits
        );
        phase.twin.push(s);
        let s = iperf(
            &twin_ct.pod_b,
            &twin_ct.pod_a,
            &twin_ct.pod_b_ip,
            PORT,
            secs,
        )
        .context("hand-built twin with conntrack")?;
        println!(
            "{backend} round {round}: twin + conntrack {:.2} Gbit/s ({} retr)",
            s.gbit, s.retransmits
        );
        phase.twin_ct.push(s);
        let s = iperf(&veth.pod_b, &veth.pod_a, &veth.pod_b_ip, PORT, secs).context("bare veth")?;
        println!("round {round}: veth {:.2} Gbit/s", s.gbit);
        veth_samples.push(s);
    }
    drop(twin);
    drop(twin_ct);
    let left = c.teardown();
    if !left.is_empty() {
        bail!("cleanup left: {left:?}");
    }
    Ok(phase)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn report(phases: &[Phase], veth: &[Sample], runs: usize, secs: u32, load: &str) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "## Pod-to-pod throughput across nodes\n\nRun {} UTC, `k8slite-bench-net`, binary `{}`; load average {load} at the start (2 shared cores: other builds were running, so absolute figures are below the lab's; the ratios compare paths measured round by round under the same load).\n",
        utc_now(),
        std::env::var("K8SLITE_BIN").unwrap_or_default()
    );
    let _ = writeln!(
        b,
        "Method: per backend an e2e cluster (server with embedded agent + one agent, each node in its own network namespace on a bridge in the root namespace, `--network-backend=<backend>` on the server), one busybox pod pinned to each node (`spec.nodeName`); host `iperf3` entered into each pod's network namespace (`nsenter --net=/proc/<pid>/ns/net`, PID from the pod's cgroup): `iperf3 -s -1` in the pod on the agent node, `iperf3 -c <pod-ip> -t {secs} -J` in the pod on the server node, figure = `end.sum_received.bits_per_second`. Its twin is the same topology built by hand with `ip` (two node namespaces on a root-namespace bridge; in each node a bridge `k8slite0` holding the gateway address with the pod veth on it, as the CNI bridge plugin builds it; the pod MTU k8slite configured; VXLAN device `k8slite.1` VNI 1 port 8472 nolearning with route + permanent neighbour + FDB per remote node, or a host-gw route via the other node), no iptables rules and hence no conntrack. Twin + conntrack: a second twin of the same shape with, in each node namespace, only the conntrack any Kubernetes node needs (`iptables -t nat -A POSTROUTING -s <pod cidr> ! -d <cluster cidr> -j MASQUERADE` and `iptables -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`), so the pod flow is tracked on both nodes as on k8slite's. The plain twin is the target's baseline; the conntrack twin shows what an iptables data path cannot avoid. Bare veth: two namespaces joined by one veth pair, MTU 1500. {runs} rounds per backend; each round runs k8slite, then its twin, then the twin with conntrack, then the bare veth, one after another.\n"
    );
    let _ = writeln!(
        b,
        "| path | median Gbit/s | min | max | retransmits per run |\n|---|---|---|---|---|"
    );
    for p in phases {
        let _ = writeln!(
            b,
            "| k8slite {} | {} | {} |",
            p.backend,
            fmt_samples(&p.k8slite),
            retrans(&p.k8slite)
        );
        let _ = writeln!(
            b,
            "| hand-built {} twin | {} | {} |",
            p.backend,
            fmt_samples(&p.twin),
            retrans(&p.twin)
        );
        let _ = writeln!(
            b,
            "| hand-built {} twin + conntrack | {} | {} |",
            p.backend,
            fmt_samples(&p.twin_ct),
            retrans(&p.twin_ct)
        );
    }
    let _ = writeln!(
        b,
        "| bare veth pair | {} | {} |\n",
        fmt_samples(veth),
        retrans(veth)
    );
    let _ = writeln!(
        b,
        "| backend | k8slite / twin (medians) | target | k8slite / twin + conntrack | twin + conntrack / twin |\n|---|---|---|---|---|"
    );
    for p in phases {
        let _ = writeln!(
            b,
            "| {} | **{:.0} %** | ≥ 95 % | {:.0} % | {:.0} % |",
            p.backend,
            100.0 * median(&p.k8slite) / median(&p.twin),
            100.0 * median(&p.k8slite) / median(&p.twin_ct),
            100.0 * median(&p.twin_ct) / median(&p.twin)
        );
    }
    let _ = writeln!(b, "\nMTUs on each path:\n");
    for p in phases {
        let _ = writeln!(
            b,
            "- {}: k8slite {}; twin {}.",
            p.backend, p.path, p.twin_path
        );
    }
    let _ = writeln!(b, "- bare veth: 1500 (both ends).\n");
    let _ = writeln!(
        b,
        "On k8slite's path, the client node's iptables rules (`iptables-save -c`) whose packet counters grew by ≥ 1000 during the first run, and the flow's conntrack entry there:\n"
    );
    for p in phases {
        let _ = writeln!(
            b,
            "- {} ({} iptables rules in the node):",
            p.backend, p.rules
        );
        if p.hot_rules.is_empty() {
            let _ = writeln!(b, "  - no rule");
        }
        for r in &p.hot_rules {
            let _ = writeln!(b, "  - `{r}`");
        }
        let _ = writeln!(
            b,
            "  - conntrack: `{}`",
            if p.conntrack.trim().is_empty() {
                "none"
            } else {
                p.conntrack.trim()
            }
        );
    }
    b.push('\n');
    b
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = arg("--runs")
        .map(|s| s.parse())
        .transpose()
        .context("--runs N")?
        .unwrap_or(3);
    let secs: u32 = arg("--secs")
        .map(|s| s.parse())
        .transpose()
        .context("--secs S")?
        .unwrap_or(5);
    let out =
        arg("--out").unwrap_or_else(|| format!("{}/bench/RESULTS.md", env!("CARGO_MANIFEST_DIR")));
    std::env::var("K8SLITE_BIN").context("set K8SLITE_BIN to a release build of k8slite")?;
    for tool in [
        "iperf3",
        "ip",
        "bridge",
        "nsenter",
        "ss",
        "conntrack",
        "iptables-save",
    ] {
        if sys::run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            bail!("prerequisite missing: {tool}");
        }
    }
    // Unique per run: "bn" + 4 hex digits of the PID (link names stay ≤ 15 bytes).
    let prefix = format!("bn{:04x}", std::process::id() & 0xffff);
    let load = loadavg();
    let veth = Twin::veth(&prefix)?;
    let mut veth_samples = Vec::new();
    let mut phases = Vec::new();
    for backend in ["vxlan", "host-gw"] {
        phases.push(run_backend(
            backend,
            &prefix,
            runs,
            secs,
            &veth,
            &mut veth_samples,
        )?);
    }
    drop(veth);
    let body = report(&phases, &veth_samples, runs, secs, &load);
    println!("{body}");
    let doc = std::fs::read_to_string(&out).unwrap_or_default();
    let doc = replace_section(&doc, "Pod-to-pod throughput across nodes", &body);
    std::fs::write(&out, doc).with_context(|| format!("writing {out}"))?;
    println!("wrote {out}");
    Ok(())
}
