//! Tearing a run down completely, and checking that nothing is left. Order matters:
//! k8slite processes → each node's containerd (PID file) → anything still naming the run's
//! directory (shims: their `-address` is the node's socket) → every process in the nodes'
//! cgroups, then the cgroups → mounts under the run directory → libcni's result cache →
//! veths, netns, bridge → the directory.
//!
//! iptables rules the CNI plugins (bridge ipMasq, portmap) write while running inside a node's
//! netns live in that netns's own netfilter tables (nf_tables and legacy alike are per netns),
//! so deleting the netns removes them; `tests/tests/e2e_harness.rs` checks this.

use std::path::Path;
use std::time::Duration;

use base64::Engine;

use super::Node;
use super::net::{Slot, links_with_prefix, netns_with_prefix};
use super::sys::{
    cgroup_dirs, cmdline, mounts_under, pids_mentioning, remove_cgroup_tree, stop_pid,
    unmount_all_under,
};

/// libcni's hard-coded result cache.
pub const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";

/// Stop node `node`'s containerd by the PID file the agent (or the standalone starter) wrote,
/// after checking the PID is a containerd whose command line names the node's directory.
pub fn stop_containerd(node: &Node) {
    let Ok(s) = std::fs::read_to_string(node.containerd_pid_file()) else {
        return;
    };
    let Ok(pid) = s.trim().parse::<u32>() else {
        return;
    };
    let cl = cmdline(pid).join(" ");
    if cl.contains("containerd") && cl.contains(&*node.dir.to_string_lossy()) {
        stop_pid(pid, Duration::from_secs(5));
    }
}

/// SIGKILL every process whose command line names `base` (containerd shims carry
/// `-address <base>/…/containerd.sock`; a containerd whose PID file was lost too).
pub fn kill_processes_naming(base: &Path) {
    for _ in 0..3 {
        let pids = pids_mentioning(&base.to_string_lossy());
        if pids.is_empty() {
            return;
        }
        for (p, _) in pids {
            stop_pid(p, Duration::from_millis(200));
        }
    }
}

/// Delete libcni cache files of this run: the pod netns path lies under `base` (the agent sets
/// `netns_mounts_under_state_dir`) or the cached network config names the run's cluster CIDR.
pub fn remove_cni_results(base: &Path, slot: &Slot) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(CNI_RESULTS_DIR) else {
        return removed;
    };
    let cidr_prefix = format!("\"10.{}.", 200 + u16::from(slot.n));
    for e in rd.flatten() {
        let p = e.path();
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        if cni_result_is_ours(&text, base, &cidr_prefix) {
            let _ = std::fs::remove_file(&p);
            removed.push(p.to_string_lossy().into_owned());
        }
    }
    removed
}

fn cni_result_is_ours(text: &str, base: &Path, cidr_prefix: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return false;
    };
    let under_base = |ns: &serde_json::Value| {
        ns.as_str()
            .is_some_and(|ns| Path::new(ns).starts_with(base))
    };
    // The netns path: top-level in some plugins' cache entries, only in the result's
    // interfaces (`sandbox`) in others (the loopback plugin's).
    if under_base(&v["netns"])
        || v["result"]["interfaces"]
            .as_array()
            .is_some_and(|ifs| ifs.iter().any(|i| under_base(&i["sandbox"])))
    {
        return true;
    }
    let cfg = v["config"]
        .as_str()
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    cfg.contains(cidr_prefix) || text.contains(cidr_prefix)
}

/// Everything of a run still present: netns and links with the prefix, mounts under `base`,
/// cgroups of the nodes, processes naming `base`, CNI cache files, `base` itself. Empty after
/// a complete teardown.
pub fn leftovers(slot: &Slot, base: &Path, node_names: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    for ns in netns_with_prefix(&slot.prefix) {
        v.push(format!("netns {ns}"));
    }
    for l in links_with_prefix(&slot.prefix) {
        v.push(format!("link {l}"));
    }
    for m in mounts_under(base) {
        v.push(format!("mount {}", m.display()));
    }
    for n in node_names {
        for d in cgroup_dirs(&cgroup_name(n)) {
            v.push(format!("cgroup {}", d.display()));
        }
    }
    for (p, c) in pids_mentioning(&base.to_string_lossy()) {
        v.push(format!("process {p}: {c}"));
    }
    if let Ok(rd) = std::fs::read_dir(CNI_RESULTS_DIR) {
        let cidr_prefix = format!("\"10.{}.", 200 + u16::from(slot.n));
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if cni_result_is_ours(&text, base, &cidr_prefix) {
                v.push(format!("cni result {}", e.path().display()));
            }
        }
    }
    if base.exists() {
        v.push(format!("directory {}", base.display()));
    }
    v
}

/// The cgroup (in every hierarchy) of node `node_name`: `k8slite-<node>`.
pub fn cgroup_name(node_name: &str) -> String {
    format!("{}{node_name}", super::CGROUP_ROOT_PREFIX)
}

/// Node-level cleanup after its processes are stopped: cgroups (killing what is inside).
pub fn remove_node_cgroups(node: &Node) -> Vec<String> {
    remove_cgroup_tree(&cgroup_name(&node.node_name))
        .into_iter()
        .map(|d| format!("cgroup {} could not be removed", d.display()))
        .collect()
}

/// Unmount everything under `base`; returns what stayed mounted.
pub fn unmount_run(base: &Path) -> Vec<String> {
    unmount_all_under(base)
        .into_iter()
        .map(|m| format!("mount {} could not be unmounted", m.display()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_cache_matching() {
        let base = Path::new("/tmp/k8e03-1");
        let ours = r#"{"kind":"cniCacheV1","netns":"/tmp/k8e03-1/server/run/containerd/state/io.containerd.grpc.v1.cri/netns/cni-1"}"#;
        assert!(cni_result_is_ours(ours, base, "\"10.203."));
        let cfg = base64::engine::general_purpose::STANDARD
            .encode(r#"{"ipam":{"ranges":[[{"subnet":"10.203.1.0/24"}]]}}"#);
        let by_cfg = format!(r#"{{"netns":"/var/run/netns/cni-x","config":"{cfg}"}}"#);
        assert!(cni_result_is_ours(&by_cfg, base, "\"10.203."));
        assert!(!cni_result_is_ours(&by_cfg, base, "\"10.204."));
        assert!(!cni_result_is_ours("not json", base, "\"10.203."));
        // The loopback plugin's entry names the netns only in its result.
        let lo = r#"{"kind":"cniCacheV1","networkName":"cni-loopback","result":{"interfaces":[{"name":"lo","sandbox":"/tmp/k8e03-1/server/run/containerd/state/io.containerd.grpc.v1.cri/netns/cni-2"}]}}"#;
        assert!(cni_result_is_ours(lo, base, "\"10.203."));
        assert!(!cni_result_is_ours(
            lo,
            Path::new("/tmp/k8e04-1"),
            "\"10.204."
        ));
    }
}
