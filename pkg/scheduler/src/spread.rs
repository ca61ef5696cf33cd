//! Pod topology spread (upstream's PodTopologySpread plugin): `DoNotSchedule` constraints
//! filter, `ScheduleAnyway` constraints score. A pod without constraints that has a controller
//! (Deployment's ReplicaSet, StatefulSet, …) gets upstream's system defaults (hostname maxSkew 3,
//! zone maxSkew 5, both ScheduleAnyway), counting the pods of the same controller — so the
//! replicas of a workload spread over the nodes.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::cache::NodeInfo;
use crate::framework::{Cluster, Failure};
use crate::matching::{
    node_labels, node_matches_pod_selectors, node_taints, pod_labels, pod_namespace,
    pod_tolerations, selector_matches, tolerated,
};

/// Reason: placing the pod here would exceed a constraint's maxSkew.
pub const ERR_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
/// Reason: the node lacks a constraint's topology key.
pub const ERR_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// Which pods a constraint counts.
#[derive(Clone, Debug)]
enum Selects {
    Labels(Option<LabelSelector>),
    /// Pods controlled by the same owner (system default constraints).
    Owner(String),
}

/// One constraint, resolved for the incoming pod.
#[derive(Clone, Debug)]
struct Constraint {
    key: String,
    max_skew: i64,
    min_domains: Option<i64>,
    selects: Selects,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn from_spec(c: &TopologySpreadConstraint, pod: &Pod) -> Self {
        let mut sel = c.label_selector.clone();
        if let Some(s) = sel.as_mut() {
            let labels = pod_labels(pod);
            let mut exprs = s.match_expressions.take().unwrap_or_default();
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    exprs.push(LabelSelectorRequirement {
                        key: key.clone(),
                        operator: "In".into(),
                        values: Some(vec![v.clone()]),
                    });
                }
            }
            if !exprs.is_empty() {
                s.match_expressions = Some(exprs);
            }
        }
        Self {
            key: c.topology_key.clone(),
            max_skew: i64::from(c.max_skew.max(1)),
            min_domains: c.min_domains.map(i64::from),
            selects: Selects::Labels(sel),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn counts_pod(&self, incoming: &Pod, other: &Pod) -> bool {
        if other.metadata.deletion_timestamp.is_some()
            || pod_namespace(other) != pod_namespace(incoming)
        {
            return false;
        }
        match &self.selects {
            Selects::Labels(sel) => selector_matches(sel.as_ref(), pod_labels(other)),
            Selects::Owner(uid) => controller_uid(other) == Some(uid.as_str()),
        }
    }

    fn node_eligible(&self, pod: &Pod, node: &Node) -> bool {
        if self.honor_affinity && !node_matches_pod_selectors(pod, node) {
            return false;
        }
        if self.honor_taints {
            let tolerations = pod_tolerations(pod);
            if node_taints(node).iter().any(|t| {
                matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                    && !tolerated(tolerations, t)
            }) {
                return false;
            }
        }
        true
    }
}

fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

fn constraints(pod: &Pod, when: &str) -> Vec<Constraint> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::from_spec(c, pod))
        .collect()
}

fn has_constraints(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty())
}

/// Pods matched per domain value, over the nodes `eligible` for the constraint.
fn domain_counts<'a>(
    c: &Constraint,
    pod: &Pod,
    nodes: impl Iterator<Item = &'a NodeInfo>,
) -> HashMap<String, i64> {
    let mut counts = HashMap::new();
    for info in nodes {
        let Some(node) = info.node.as_deref() else {
            continue;
        };
        let Some(v) = node_labels(node).get(&c.key) else {
            continue;
        };
        if !c.node_eligible(pod, node) {
            continue;
        }
        let n = info.pods.values().filter(|p| c.counts_pod(pod, p)).count() as i64;
        *counts.entry(v.clone()).or_default() += n;
    }
    counts
}

/// Filter state: the `DoNotSchedule` constraints with their counts and minimum.
pub struct State {
    hard: Vec<(Constraint, HashMap<String, i64>, i64)>,
    self_match: Vec<bool>,
}

/// Pre-compute the counts for the pod's `DoNotSchedule` constraints.
pub fn prefilter(pod: &Pod, cluster: &Cluster<'_>) -> State {
    let hard = constraints(pod, "DoNotSchedule");
    // Upstream counts only nodes carrying every hard constraint's key.
    let with_all_keys: Vec<&NodeInfo> = cluster
        .nodes
        .iter()
        .copied()
        .filter(|i| {
            i.node.as_deref().is_some_and(|n| {
                let l = node_labels(n);
                hard.iter().all(|c| l.contains_key(&c.key))
            })
        })
        .collect();
    let self_match = hard.iter().map(|c| c.counts_pod(pod, pod)).collect();
    let hard = hard
        .into_iter()
        .map(|c| {
            let counts = domain_counts(&c, pod, with_all_keys.iter().copied());
            let mut min = counts.values().copied().min().unwrap_or(0);
            if let Some(md) = c.min_domains
                && (counts.len() as i64) < md
            {
                min = 0;
            }
            (c, counts, min)
        })
        .collect();
    State { hard, self_match }
}

/// The filter for one node.
pub fn filter(st: &State, labels: &BTreeMap<String, String>) -> Result<(), Failure> {
    for (i, (c, counts, min)) in st.hard.iter().enumerate() {
        let Some(v) = labels.get(&c.key) else {
            return Err(Failure::unresolvable(ERR_NODE_LABEL_NOT_MATCH));
        };
        let own = i64::from(st.self_match.get(i).copied().unwrap_or(false));
        let skew = counts.get(v).copied().unwrap_or(0) + own - min;
        if skew > c.max_skew {
            return Err(Failure::unschedulable(ERR_CONSTRAINTS_NOT_MATCH));
        }
    }
    Ok(())
}

/// Scores (0..=100, higher is better) of `candidates` for the soft constraints: fewer matching
/// pods in the node's domain is better.
pub fn score(pod: &Pod, cluster: &Cluster<'_>, candidates: &[usize]) -> Vec<i64> {
    let mut soft = constraints(pod, "ScheduleAnyway");
    let system_default = !has_constraints(pod);
    if system_default && let Some(uid) = controller_uid(pod) {
        for (key, skew) in [(HOSTNAME, 3), (ZONE, 5)] {
            soft.push(Constraint {
                key: key.into(),
                max_skew: skew,
                min_domains: None,
                selects: Selects::Owner(uid.to_string()),
                honor_affinity: true,
                honor_taints: false,
            });
        }
    }
    if soft.is_empty() {
        return vec![0; candidates.len()];
    }
    // Nodes lacking a key are ignored for that constraint (system defaults) or scored 0 (a
    // user constraint requires all keys, as upstream).
    let mut raw: Vec<Option<f64>> = vec![Some(0.0); candidates.len()];
    for c in &soft {
        let counts = domain_counts(c, pod, cluster.nodes.iter().copied());
        let weight = ((counts.len() + 2) as f64).ln();
        for (slot, &i) in raw.iter_mut().zip(candidates) {
            let Some(node) = cluster.nodes[i].node.as_deref() else {
                *slot = None;
                continue;
            };
            match node_labels(node).get(&c.key) {
                Some(v) => {
                    if let Some(s) = slot.as_mut() {
                        let n = counts.get(v).copied().unwrap_or(0) as f64;
                        *s += n * weight + (c.max_skew - 1) as f64;
                    }
                }
                None if system_default => {}
                None => *slot = None,
            }
        }
    }
    let scored: Vec<f64> = raw.iter().flatten().copied().collect();
    let max = scored.iter().copied().fold(f64::MIN, f64::max);
    let min = scored.iter().copied().fold(f64::MAX, f64::min);
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max <= 0.0 => 100,
            Some(s) => (100.0 * (max + min - s) / max).round() as i64,
        })
        .collect()
}
