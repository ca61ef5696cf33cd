//! Node scores (upstream's default score plugins): NodeResourcesFit (LeastAllocated),
//! NodeResourcesBalancedAllocation, NodeAffinity (preferred terms), TaintToleration
//! (PreferNoSchedule). Each returns 0..=100 per candidate; the framework weighs them.

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::cache::NodeInfo;
use crate::matching::{node_selector_term_matches, node_taints, pod_tolerations, tolerated};

/// LeastAllocated: the share of cpu and memory left free after placing the pod (averaged),
/// counting pods without requests with upstream's defaults (100m, 200Mi).
pub fn least_allocated(pod_non_zero: (i64, i64), info: &NodeInfo) -> i64 {
    let one = |req: i64, alloc: i64| -> i64 {
        if alloc <= 0 || req > alloc {
            0
        } else {
            (alloc - req) * 100 / alloc
        }
    };
    let cpu = one(
        info.non_zero_requested.0 + pod_non_zero.0,
        info.allocatable.milli_cpu,
    );
    let mem = one(
        info.non_zero_requested.1 + pod_non_zero.1,
        info.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// BalancedAllocation: nodes whose cpu and memory use would be similar fractions score higher
/// (100 × (1 − standard deviation of the fractions)).
pub fn balanced_allocation(pod_non_zero: (i64, i64), info: &NodeInfo) -> i64 {
    let frac = |req: i64, alloc: i64| -> f64 {
        if alloc <= 0 {
            1.0
        } else {
            (req as f64 / alloc as f64).min(1.0)
        }
    };
    let c = frac(
        info.non_zero_requested.0 + pod_non_zero.0,
        info.allocatable.milli_cpu,
    );
    let m = frac(
        info.non_zero_requested.1 + pod_non_zero.1,
        info.allocatable.memory,
    );
    let std = (c - m).abs() / 2.0;
    ((1.0 - std) * 100.0).round() as i64
}

/// NodeAffinity: the sum of weights of the pod's preferred node-affinity terms the node
/// matches (normalised later against the best node).
pub fn node_affinity_raw(pod: &Pod, node: &Node) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|p| node_selector_term_matches(&p.preference, node))
        .map(|p| i64::from(p.weight))
        .sum()
}

/// TaintToleration: how many PreferNoSchedule taints the pod does not tolerate (fewer is
/// better; normalised in reverse later). Only tolerations whose effect is empty or
/// PreferNoSchedule count, as upstream.
pub fn intolerable_prefer_no_schedule(pod: &Pod, node: &Node) -> i64 {
    let tolerations: Vec<_> = pod_tolerations(pod)
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .cloned()
        .collect();
    node_taints(node)
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&tolerations, t))
        .count() as i64
}

/// Upstream's DefaultNormalizeScore: scale so the maximum is 100 (`reverse`: 100 − that).
pub fn default_normalize(raw: &[i64], reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| {
            let v = if max == 0 { 0 } else { 100 * s / max };
            if reverse { 100 - v } else { v }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn info_with(cpu_used: &str, mem_used: &str) -> NodeInfo {
        let mut p = bound_pod("x", "n1", &[]);
        p.spec.as_mut().expect("spec").containers[0] =
            container("c", &[("cpu", cpu_used), ("memory", mem_used)]);
        NodeInfo::new(node("n1", "4", "4Gi", "110"), vec![p])
    }

    #[test]
    fn least_allocated_is_the_free_share_after_placing() {
        let info = info_with("1", "1Gi");
        // cpu: (4000 - 1000 - 1000) / 4000 = 50; memory: (4Gi - 1Gi - 1Gi) / 4Gi = 50.
        assert_eq!(least_allocated((1000, 1 << 30), &info), 50);
        // Over-committed resources score 0.
        assert_eq!(least_allocated((4000, 0), &info), 37, "cpu 0, memory 75");
    }

    #[test]
    fn balanced_allocation_prefers_equal_fractions() {
        let info = info_with("1", "1Gi");
        assert_eq!(balanced_allocation((1000, 1 << 30), &info), 100);
        // cpu 100%, memory 25% → std 0.375 → 62.5 → 63.
        assert_eq!(balanced_allocation((3000, 0), &info), 63);
    }

    #[test]
    fn node_affinity_and_taint_raw_scores() {
        use k8s_openapi::api::core::v1::{
            Affinity, NodeAffinity, NodeSelectorTerm, PreferredSchedulingTerm, Toleration,
        };
        let n = with_labels(node("n1", "1", "1Gi", "10"), &[("zone", "a"), ("ssd", "1")]);
        let mut pod = pod_with_requests("p", &[]);
        let pref = |w: i32, key: &str| PreferredSchedulingTerm {
            weight: w,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![node_req(key, "Exists", &[])]),
                match_fields: None,
            },
        };
        pod.spec.as_mut().expect("spec").affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    pref(5, "zone"),
                    pref(7, "ssd"),
                    pref(11, "gpu"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(node_affinity_raw(&pod, &n), 12);

        let mut tainted = n.clone();
        tainted.spec.as_mut().expect("spec").taints = Some(vec![
            taint("a", "", "PreferNoSchedule"),
            taint("b", "", "PreferNoSchedule"),
            taint("c", "", "NoSchedule"),
        ]);
        assert_eq!(intolerable_prefer_no_schedule(&pod, &tainted), 2);
        pod.spec.as_mut().expect("spec").tolerations = Some(vec![
            Toleration {
                key: Some("a".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            },
            Toleration {
                key: Some("b".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(
            intolerable_prefer_no_schedule(&pod, &tainted),
            1,
            "a NoSchedule toleration does not count for PreferNoSchedule"
        );
    }

    #[test]
    fn normalisation() {
        assert_eq!(default_normalize(&[0, 5, 10], false), [0, 50, 100]);
        assert_eq!(default_normalize(&[0, 1, 2], true), [100, 50, 0]);
        assert_eq!(default_normalize(&[0, 0], true), [100, 100]);
        assert_eq!(crate::interpod::normalize(&[-10, 0, 10]), [0, 50, 100]);
        assert_eq!(crate::interpod::normalize(&[3, 3]), [0, 0]);
    }
}
