//! Inter-pod affinity and anti-affinity (upstream's InterPodAffinity plugin): the required
//! terms of the incoming pod, the required anti-affinity of pods already placed (symmetry),
//! and the preferred terms of both sides for scoring. Topology domains are `(key, value)` pairs
//! of node labels, so any topologyKey works.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{Cluster, Failure};
use crate::matching::{
    AffinityTerm, node_labels, pod_namespace, preferred_affinity_terms,
    preferred_anti_affinity_terms, required_affinity_terms, required_anti_affinity_terms,
};

/// Reason: an existing pod's required anti-affinity rejects the incoming pod here.
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Reason: the incoming pod's required affinity is not met here.
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Reason: the incoming pod's required anti-affinity is violated here.
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

type TopologyCounts = HashMap<(String, String), i64>;

/// What the filter needs, computed once per scheduling attempt.
pub struct State<'p> {
    affinity_terms: Vec<AffinityTerm<'p>>,
    anti_affinity_terms: Vec<AffinityTerm<'p>>,
    affinity_counts: TopologyCounts,
    anti_affinity_counts: TopologyCounts,
    existing_anti_affinity_counts: TopologyCounts,
    matches_own_affinity: bool,
}

fn add(counts: &mut TopologyCounts, key: &str, labels: &BTreeMap<String, String>, by: i64) {
    if let Some(v) = labels.get(key) {
        *counts.entry((key.to_string(), v.clone())).or_default() += by;
    }
}

/// Pre-compute topology counts for `pod` over the cluster.
pub fn prefilter<'p>(pod: &'p Pod, cluster: &Cluster<'_>) -> State<'p> {
    let affinity_terms = required_affinity_terms(pod);
    let anti_affinity_terms = required_anti_affinity_terms(pod);
    let own_ns_labels = cluster.namespace_labels(pod_namespace(pod));
    let mut st = State {
        matches_own_affinity: !affinity_terms.is_empty()
            && affinity_terms.iter().all(|t| t.matches(pod, own_ns_labels)),
        affinity_terms,
        anti_affinity_terms,
        affinity_counts: HashMap::new(),
        anti_affinity_counts: HashMap::new(),
        existing_anti_affinity_counts: HashMap::new(),
    };
    let own_terms = !st.affinity_terms.is_empty() || !st.anti_affinity_terms.is_empty();
    for info in &cluster.nodes {
        let Some(node) = info.node.as_deref() else {
            continue;
        };
        if !own_terms && info.pods_with_affinity == 0 {
            continue;
        }
        let labels = node_labels(node);
        for existing in info.pods.values() {
            if info.pods_with_affinity > 0 {
                for t in required_anti_affinity_terms(existing) {
                    if t.matches(pod, own_ns_labels) {
                        add(
                            &mut st.existing_anti_affinity_counts,
                            t.topology_key(),
                            labels,
                            1,
                        );
                    }
                }
            }
            if !own_terms {
                continue;
            }
            let ns_labels = cluster.namespace_labels(pod_namespace(existing));
            if !st.affinity_terms.is_empty()
                && st
                    .affinity_terms
                    .iter()
                    .all(|t| t.matches(existing, ns_labels))
            {
                for t in &st.affinity_terms {
                    add(&mut st.affinity_counts, t.topology_key(), labels, 1);
                }
            }
            for t in &st.anti_affinity_terms {
                if t.matches(existing, ns_labels) {
                    add(&mut st.anti_affinity_counts, t.topology_key(), labels, 1);
                }
            }
        }
    }
    st
}

fn count(counts: &TopologyCounts, key: &str, labels: &BTreeMap<String, String>) -> i64 {
    labels
        .get(key)
        .and_then(|v| counts.get(&(key.to_string(), v.clone())))
        .copied()
        .unwrap_or(0)
}

/// The filter for one node.
pub fn filter(st: &State<'_>, labels: &BTreeMap<String, String>) -> Result<(), Failure> {
    // Required affinity: every term's topology must exist on the node and hold a matching pod,
    // unless no pod matches anywhere and the pod matches its own terms (first of a group).
    let mut pods_exist = true;
    for t in &st.affinity_terms {
        if !labels.contains_key(t.topology_key()) {
            return Err(Failure::unresolvable(ERR_AFFINITY));
        }
        if count(&st.affinity_counts, t.topology_key(), labels) <= 0 {
            pods_exist = false;
        }
    }
    let first_of_group = st.affinity_counts.is_empty() && st.matches_own_affinity;
    if !pods_exist && !first_of_group {
        return Err(Failure::unresolvable(ERR_AFFINITY));
    }
    for t in &st.anti_affinity_terms {
        if count(&st.anti_affinity_counts, t.topology_key(), labels) > 0 {
            return Err(Failure::unschedulable(ERR_ANTI_AFFINITY));
        }
    }
    for (k, v) in labels {
        if st
            .existing_anti_affinity_counts
            .get(&(k.clone(), v.clone()))
            .is_some_and(|c| *c > 0)
        {
            return Err(Failure::unschedulable(ERR_EXISTING_ANTI_AFFINITY));
        }
    }
    Ok(())
}

/// Raw preferred-affinity scores of `candidates` (indexes into `cluster.nodes`), before
/// normalisation: weights of the incoming pod's preferred (anti-)affinity terms matched by
/// pods in the node's topology, plus existing pods' terms that match the incoming pod
/// (required affinity counts with weight 1, as upstream's hardPodAffinityWeight).
pub fn score(pod: &Pod, cluster: &Cluster<'_>, candidates: &[usize]) -> Vec<i64> {
    let pref = preferred_affinity_terms(pod);
    let pref_anti = preferred_anti_affinity_terms(pod);
    let own_ns_labels = cluster.namespace_labels(pod_namespace(pod));
    let mut topo: TopologyCounts = HashMap::new();
    let own_terms = !pref.is_empty() || !pref_anti.is_empty();
    for info in &cluster.nodes {
        let Some(node) = info.node.as_deref() else {
            continue;
        };
        if !own_terms && info.pods_with_affinity == 0 {
            continue;
        }
        let labels = node_labels(node);
        for existing in info.pods.values() {
            let ns_labels = cluster.namespace_labels(pod_namespace(existing));
            for t in &pref {
                if t.matches(existing, ns_labels) {
                    add(&mut topo, t.topology_key(), labels, t.weight);
                }
            }
            for t in &pref_anti {
                if t.matches(existing, ns_labels) {
                    add(&mut topo, t.topology_key(), labels, -t.weight);
                }
            }
            if info.pods_with_affinity == 0 {
                continue;
            }
            for t in required_affinity_terms(existing) {
                if t.matches(pod, own_ns_labels) {
                    add(&mut topo, t.topology_key(), labels, 1);
                }
            }
            for t in preferred_affinity_terms(existing) {
                if t.matches(pod, own_ns_labels) {
                    add(&mut topo, t.topology_key(), labels, t.weight);
                }
            }
            for t in preferred_anti_affinity_terms(existing) {
                if t.matches(pod, own_ns_labels) {
                    add(&mut topo, t.topology_key(), labels, -t.weight);
                }
            }
        }
    }
    candidates
        .iter()
        .map(|&i| {
            let Some(node) = cluster.nodes[i].node.as_deref() else {
                return 0;
            };
            let labels = node_labels(node);
            topo.iter()
                .filter(|((k, v), _)| labels.get(k) == Some(v))
                .map(|(_, s)| *s)
                .sum()
        })
        .collect()
}

/// Normalise raw scores to 0..=100 (min → 0, max → 100; all equal → 0).
pub fn normalize(raw: &[i64]) -> Vec<i64> {
    let (Some(min), Some(max)) = (raw.iter().min(), raw.iter().max()) else {
        return Vec::new();
    };
    let diff = max - min;
    raw.iter()
        .map(|s| if diff > 0 { 100 * (s - min) / diff } else { 0 })
        .collect()
}
