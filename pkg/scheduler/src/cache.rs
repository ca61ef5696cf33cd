//! The scheduler's view of the cluster: per node, the pods bound to it (from the watch plus
//! the pods this scheduler has bound whose watch event has not arrived yet — "assumed" pods)
//! and the sum of their requests. Updated incrementally from watch events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::resources::{Resources, node_allocatable, pod_non_zero_requests, pod_requests};

/// A node with the pods bound to it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// The node object (absent while only pods naming it are known).
    pub node: Option<Arc<Node>>,
    /// Pods bound to the node, by uid.
    pub pods: BTreeMap<String, Arc<Pod>>,
    /// Sum of the pods' requests (`pods` counts them).
    pub requested: Resources,
    /// Sum of the pods' cpu/memory requests with defaults for missing ones (for scoring).
    pub non_zero_requested: (i64, i64),
    /// The node's allocatable resources.
    pub allocatable: Resources,
    /// How many of the pods declare pod affinity or anti-affinity (lets the inter-pod plugin
    /// skip nodes without any).
    pub pods_with_affinity: usize,
}

fn has_pod_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

impl NodeInfo {
    fn add_pod(&mut self, pod: Arc<Pod>, uid: String) {
        self.requested.add(&pod_requests(&pod));
        let (c, m) = pod_non_zero_requests(&pod);
        self.non_zero_requested.0 += c;
        self.non_zero_requested.1 += m;
        if has_pod_affinity(&pod) {
            self.pods_with_affinity += 1;
        }
        self.pods.insert(uid, pod);
    }

    fn remove_pod(&mut self, uid: &str) {
        if let Some(pod) = self.pods.remove(uid) {
            self.requested.sub(&pod_requests(&pod));
            let (c, m) = pod_non_zero_requests(&pod);
            self.non_zero_requested.0 -= c;
            self.non_zero_requested.1 -= m;
            if has_pod_affinity(&pod) {
                self.pods_with_affinity -= 1;
            }
        }
    }

    /// A node info for `node` with `pods` (for tests and callers building views by hand).
    pub fn new(node: Node, pods: Vec<Pod>) -> Self {
        let mut info = NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            allocatable: node_allocatable(&node),
            node: Some(Arc::new(node)),
            ..Default::default()
        };
        for (i, p) in pods.into_iter().enumerate() {
            let uid = p.metadata.uid.clone().unwrap_or_else(|| format!("pod-{i}"));
            info.add_pod(Arc::new(p), uid);
        }
        info
    }
}

/// Whether a pod is bound and counts against its node (bound and not Succeeded/Failed).
pub fn occupies_node(pod: &Pod) -> Option<&str> {
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    Some(node)
}

/// The cache of nodes and bound pods.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    pod_node: HashMap<String, String>,
    assumed: HashMap<String, Instant>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a node.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.nodes.entry(name.clone()).or_default();
        info.name = name;
        info.allocatable = node_allocatable(&node);
        info.node = Some(node);
    }

    /// Remove a node (its pods stay accounted until they go).
    pub fn remove_node(&mut self, name: &str) {
        let empty = match self.nodes.get_mut(name) {
            Some(info) => {
                info.node = None;
                info.allocatable = Resources::default();
                info.pods.is_empty()
            }
            None => false,
        };
        if empty {
            self.nodes.remove(name);
        }
    }

    /// Forget every node not in `names` (after a re-list).
    pub fn retain_nodes(&mut self, names: &std::collections::HashSet<String>) {
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(n, i)| i.node.is_some() && !names.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.remove_node(&n);
        }
    }

    fn place(&mut self, uid: String, node: &str, pod: Arc<Pod>) {
        self.unplace(&uid);
        let info = self.nodes.entry(node.to_string()).or_default();
        info.name = node.to_string();
        info.add_pod(pod, uid.clone());
        self.pod_node.insert(uid, node.to_string());
    }

    fn unplace(&mut self, uid: &str) {
        if let Some(node) = self.pod_node.remove(uid) {
            let empty = match self.nodes.get_mut(&node) {
                Some(info) => {
                    info.remove_pod(uid);
                    info.node.is_none() && info.pods.is_empty()
                }
                None => false,
            };
            if empty {
                self.nodes.remove(&node);
            }
        }
    }

    /// Take a watched pod into account: a bound, non-terminal pod occupies its node; anything
    /// else occupies nothing. An unbound copy of a pod this scheduler has assumed (an event
    /// older than the binding) does not undo the assumption. Returns whether the pod had been
    /// assumed and is now confirmed by the watch.
    pub fn update_pod(&mut self, pod: Arc<Pod>) -> bool {
        let Some(uid) = pod.metadata.uid.clone() else {
            return false;
        };
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if !bound && self.assumed.contains_key(&uid) {
            return false;
        }
        let confirmed = bound && self.assumed.remove(&uid).is_some();
        match occupies_node(&pod).map(str::to_string) {
            Some(node) => self.place(uid, &node, pod),
            None => self.unplace(&uid),
        }
        confirmed
    }

    /// A pod was deleted.
    pub fn remove_pod(&mut self, uid: &str) {
        self.assumed.remove(uid);
        self.unplace(uid);
    }

    /// Account `pod` on `node` before the binding is visible in the watch.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let mut bound = pod.clone();
        if let Some(spec) = bound.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        self.place(uid.clone(), node, Arc::new(bound));
        self.assumed.insert(uid, Instant::now());
    }

    /// Undo an assumption (the binding failed).
    pub fn forget(&mut self, uid: &str) {
        if self.assumed.remove(uid).is_some() {
            self.unplace(uid);
        }
    }

    /// Whether the pod is assumed (bound by us, not yet confirmed by the watch).
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.assumed.contains_key(uid)
    }

    /// Drop assumptions older than `ttl` that the watch never confirmed.
    pub fn expire_assumed(&mut self, ttl: Duration) {
        let now = Instant::now();
        let old: Vec<String> = self
            .assumed
            .iter()
            .filter(|(_, t)| now.duration_since(**t) > ttl)
            .map(|(u, _)| u.clone())
            .collect();
        for uid in old {
            self.forget(&uid);
        }
    }

    /// Nodes that exist (have a Node object), by name.
    pub fn nodes(&self) -> Vec<&NodeInfo> {
        self.nodes.values().filter(|i| i.node.is_some()).collect()
    }

    /// One node's info.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn bound(name: &str, node: &str, cpu: &str) -> Pod {
        let mut p = pod_with_requests(name, &[("cpu", cpu)]);
        p.spec.as_mut().expect("spec").node_name = Some(node.into());
        p
    }

    #[test]
    fn bound_pods_are_summed_per_node_and_terminal_ones_released() {
        let mut c = Cache::new();
        c.set_node(Arc::new(node("n1", "2", "1Gi", "10")));
        c.update_pod(Arc::new(bound("a", "n1", "500m")));
        c.update_pod(Arc::new(bound("b", "n1", "250m")));
        assert_eq!(c.node("n1").expect("n1").requested.milli_cpu, 750);
        assert_eq!(c.node("n1").expect("n1").requested.pods, 2);
        let mut done = bound("a", "n1", "500m");
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        c.update_pod(Arc::new(done));
        assert_eq!(c.node("n1").expect("n1").requested.milli_cpu, 250);
        c.remove_pod("uid-b");
        assert_eq!(c.node("n1").expect("n1").requested.pods, 0);
    }

    #[test]
    fn assumed_pods_count_until_confirmed_and_stale_unbound_events_do_not_undo_them() {
        let mut c = Cache::new();
        c.set_node(Arc::new(node("n1", "2", "1Gi", "10")));
        let pending = pod_with_requests("a", &[("cpu", "1")]);
        c.assume(&pending, "n1");
        assert!(c.is_assumed("uid-a"));
        assert_eq!(c.node("n1").expect("n1").requested.milli_cpu, 1000);
        // A late event of the still-unbound pod keeps the assumption.
        assert!(!c.update_pod(Arc::new(pending.clone())));
        assert_eq!(c.node("n1").expect("n1").requested.milli_cpu, 1000);
        // The bound pod arrives: confirmed, counted once.
        assert!(c.update_pod(Arc::new(bound("a", "n1", "1"))));
        assert!(!c.is_assumed("uid-a"));
        assert_eq!(c.node("n1").expect("n1").requested.milli_cpu, 1000);
    }

    #[test]
    fn forgetting_an_assumed_pod_releases_it() {
        let mut c = Cache::new();
        c.set_node(Arc::new(node("n1", "2", "1Gi", "10")));
        c.assume(&pod_with_requests("a", &[("cpu", "1")]), "n1");
        c.forget("uid-a");
        assert_eq!(c.node("n1").expect("n1").requested.milli_cpu, 0);
        c.assume(&pod_with_requests("b", &[("cpu", "1")]), "n1");
        c.expire_assumed(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        c.expire_assumed(Duration::ZERO);
        assert_eq!(c.node("n1").expect("n1").requested.milli_cpu, 0);
    }

    #[test]
    fn pods_on_unknown_nodes_are_kept_but_not_listed() {
        let mut c = Cache::new();
        c.update_pod(Arc::new(bound("a", "ghost", "1")));
        assert!(c.nodes().is_empty());
        c.set_node(Arc::new(node("ghost", "2", "1Gi", "10")));
        assert_eq!(c.nodes()[0].requested.milli_cpu, 1000);
        c.remove_node("ghost");
        assert!(c.nodes().is_empty());
    }
}
