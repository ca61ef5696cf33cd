//! One scheduling attempt as a pure function: filter every node, score the feasible ones,
//! pick the best — or explain, in upstream's words, why no node fits.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;

use crate::cache::NodeInfo;
use crate::matching::node_labels;
use crate::resources::{pod_non_zero_requests, pod_requests};
use crate::{filters, interpod, scores, spread};

/// How a filter failed, as upstream's status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Could fit if other pods went away (preemption might help).
    Unschedulable,
    /// Nothing about other pods would make it fit here.
    UnschedulableAndUnresolvable,
}

/// A filter's verdict against one node: a code and the reasons shown to users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The code.
    pub code: Code,
    /// The reasons (e.g. `Insufficient cpu`).
    pub reasons: Vec<String>,
}

impl Failure {
    /// An [`Code::Unschedulable`] failure with one reason.
    pub fn unschedulable(reason: impl Into<String>) -> Self {
        Self {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
        }
    }

    /// An [`Code::Unschedulable`] failure with several reasons.
    pub fn unschedulable_all(reasons: Vec<String>) -> Self {
        Self {
            code: Code::Unschedulable,
            reasons,
        }
    }

    /// An [`Code::UnschedulableAndUnresolvable`] failure.
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Self {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
        }
    }
}

/// What one attempt sees: the nodes (with their pods) and the labels of namespaces.
pub struct Cluster<'a> {
    /// Nodes, sorted by name.
    pub nodes: Vec<&'a NodeInfo>,
    /// Labels of each namespace (for namespaceSelector).
    pub namespaces: &'a HashMap<String, BTreeMap<String, String>>,
}

impl Cluster<'_> {
    /// Labels of a namespace (empty when unknown).
    pub fn namespace_labels(&self, ns: &str) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.namespaces.get(ns).unwrap_or(&EMPTY)
    }
}

/// Why a pod fits nowhere: the per-node failures, rendered like upstream's `FitError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    /// Number of nodes considered.
    pub num_nodes: usize,
    /// Failure of each node, by node name.
    pub failures: BTreeMap<String, Failure>,
    /// The preemption part of the message (`preemption: …`), empty when there are no nodes.
    pub preemption: String,
}

fn histogram(num_nodes: usize, reasons: impl Iterator<Item = String>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{num_nodes} nodes are available: {}.", parts.join(", "))
}

impl FitError {
    /// Upstream's message: `0/3 nodes are available: 3 Insufficient cpu. preemption: …`.
    pub fn message(&self) -> String {
        if self.num_nodes == 0 {
            return "no nodes available to schedule pods".to_string();
        }
        let main = histogram(
            self.num_nodes,
            self.failures
                .values()
                .flat_map(|f| f.reasons.iter().cloned()),
        );
        if self.preemption.is_empty() {
            main
        } else {
            format!("{main} {}", self.preemption)
        }
    }
}

/// The preemption verdict, as upstream's default preemption would word it when it finds no
/// victims. k8slite does not preempt: on nodes where upstream would look for lower-priority
/// victims and some exist, it says so instead of pretending.
fn preemption_message(
    pod: &Pod,
    cluster: &Cluster<'_>,
    failures: &BTreeMap<String, Failure>,
) -> String {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return "preemption: not eligible due to preemptionPolicy=Never.".to_string();
    }
    let prio = spec.and_then(|s| s.priority).unwrap_or(0);
    let reasons = cluster.nodes.iter().filter_map(|info| {
        let f = failures.get(&info.name)?;
        Some(
            match f.code {
                Code::UnschedulableAndUnresolvable => "Preemption is not helpful for scheduling",
                Code::Unschedulable => {
                    let lower = info
                        .pods
                        .values()
                        .any(|p| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0) < prio);
                    if lower {
                        "preemption of lower-priority pods is not implemented in k8slite"
                    } else {
                        "No preemption victims found for incoming pod"
                    }
                }
            }
            .to_string(),
        )
    });
    format!("preemption: {}", histogram(cluster.nodes.len(), reasons))
}

/// Weights of the score plugins (upstream's default profile).
const W_FIT: i64 = 1;
const W_BALANCED: i64 = 1;
const W_INTERPOD: i64 = 2;
const W_NODE_AFFINITY: i64 = 2;
const W_SPREAD: i64 = 2;
const W_TAINT: i64 = 3;

/// Filter one node with every plugin, in upstream's order; the first failing plugin decides.
fn filter_node(
    pod: &Pod,
    info: &NodeInfo,
    req: &crate::resources::Resources,
    ip: &interpod::State<'_>,
    sp: &spread::State,
) -> Result<(), Failure> {
    let Some(node) = info.node.as_deref() else {
        return Err(Failure::unresolvable("node(s) not found"));
    };
    filters::node_unschedulable(pod, node)?;
    filters::taint_toleration(pod, node)?;
    filters::node_affinity(pod, node)?;
    filters::node_ports(pod, info)?;
    filters::resources_fit(req, info)?;
    let labels = node_labels(node);
    spread::filter(sp, labels)?;
    interpod::filter(ip, labels)?;
    Ok(())
}

/// Schedule `pod` onto one of `cluster.nodes`: the feasible node with the highest weighted
/// score (ties: the first by name), or a [`FitError`].
pub fn schedule(pod: &Pod, cluster: &Cluster<'_>) -> Result<String, FitError> {
    let req = pod_requests(pod);
    let ip = interpod::prefilter(pod, cluster);
    let sp = spread::prefilter(pod, cluster);
    let mut feasible = Vec::new();
    let mut failures = BTreeMap::new();
    for (i, info) in cluster.nodes.iter().enumerate() {
        match filter_node(pod, info, &req, &ip, &sp) {
            Ok(()) => feasible.push(i),
            Err(f) => {
                failures.insert(info.name.clone(), f);
            }
        }
    }
    if feasible.is_empty() {
        let preemption = if cluster.nodes.is_empty() {
            String::new()
        } else {
            preemption_message(pod, cluster, &failures)
        };
        return Err(FitError {
            num_nodes: cluster.nodes.len(),
            failures,
            preemption,
        });
    }
    if feasible.len() == 1 {
        return Ok(cluster.nodes[feasible[0]].name.clone());
    }
    let totals = score_nodes(pod, cluster, &feasible);
    let mut best = 0;
    for (k, t) in totals.iter().enumerate() {
        if *t > totals[best] {
            best = k;
        }
    }
    Ok(cluster.nodes[feasible[best]].name.clone())
}

/// Weighted total score of each candidate (indexes into `cluster.nodes`).
pub fn score_nodes(pod: &Pod, cluster: &Cluster<'_>, candidates: &[usize]) -> Vec<i64> {
    let nz = pod_non_zero_requests(pod);
    let nodes: Vec<_> = candidates
        .iter()
        .map(|&i| {
            (
                cluster.nodes[i],
                cluster.nodes[i].node.as_deref().map(|n| n as &_),
            )
        })
        .collect();
    let node_aff: Vec<i64> = nodes
        .iter()
        .map(|(_, n)| n.map_or(0, |n| scores::node_affinity_raw(pod, n)))
        .collect();
    let node_aff = scores::default_normalize(&node_aff, false);
    let taint: Vec<i64> = nodes
        .iter()
        .map(|(_, n)| n.map_or(0, |n| scores::intolerable_prefer_no_schedule(pod, n)))
        .collect();
    let taint = scores::default_normalize(&taint, true);
    let interpod = interpod::normalize(&interpod::score(pod, cluster, candidates));
    let spread = spread::score(pod, cluster, candidates);
    nodes
        .iter()
        .enumerate()
        .map(|(k, (info, _))| {
            W_FIT * scores::least_allocated(nz, info)
                + W_BALANCED * scores::balanced_allocation(nz, info)
                + W_NODE_AFFINITY * node_aff[k]
                + W_TAINT * taint[k]
                + W_INTERPOD * interpod[k]
                + W_SPREAD * spread[k]
        })
        .collect()
}
