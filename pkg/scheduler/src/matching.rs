//! Matching helpers over k8s-openapi types: label selectors, node selector terms, tolerations,
//! pod affinity terms.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of a pod (empty when none).
pub fn pod_labels(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// Labels of a node (empty when none).
pub fn node_labels(node: &Node) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// Namespace of a pod (`default` when unset).
pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// Whether a `metav1.LabelSelector` matches `labels`. `None` matches nothing and `{}` matches
/// everything (upstream's `LabelSelectorAsSelector`); an unknown operator matches nothing.
pub fn selector_matches(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else { return false };
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let got = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => got.is_some_and(|v| values.contains(v)),
            "NotIn" => got.is_none_or(|v| !values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) => {
                    if op == "Gt" {
                        v > b
                    } else {
                        v < b
                    }
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether one node selector term matches `node`: all its expressions on labels and all its
/// fields (only `metadata.name` exists) hold. A term with neither matches nothing.
pub fn node_selector_term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node_labels(node);
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, node.metadata.name.as_deref())
        })
}

/// Whether `node` satisfies the pod's `nodeSelector` and required node affinity (terms ORed).
pub fn node_matches_pod_selectors(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node_labels(node);
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| node_selector_term_matches(t, node)),
    }
}

/// Whether `toleration` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn toleration_tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| toleration_tolerates(t, taint))
}

/// Tolerations of a pod.
pub fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Taints of a node.
pub fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// A pod affinity term resolved against the pod that declares it: which namespaces it covers
/// and which labels it selects.
#[derive(Clone, Debug)]
pub struct AffinityTerm<'a> {
    /// The term.
    pub term: &'a PodAffinityTerm,
    /// Namespaces named by the term (the declaring pod's own when neither `namespaces` nor
    /// `namespaceSelector` is given).
    pub namespaces: BTreeSet<String>,
    /// Weight (preferred terms) or 1.
    pub weight: i64,
    /// Selector with `matchLabelKeys` / `mismatchLabelKeys` folded in.
    pub selector: Option<LabelSelector>,
}

impl<'a> AffinityTerm<'a> {
    /// Resolve `term` declared by `owner`.
    pub fn new(term: &'a PodAffinityTerm, owner: &Pod, weight: i64) -> Self {
        let mut namespaces: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(pod_namespace(owner).to_string());
        }
        let mut selector = term.label_selector.clone();
        if let Some(sel) = selector.as_mut() {
            let labels = pod_labels(owner);
            let mut exprs = sel.match_expressions.take().unwrap_or_default();
            for key in term.match_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    exprs.push(req(key, "In", v));
                }
            }
            for key in term.mismatch_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    exprs.push(req(key, "NotIn", v));
                }
            }
            if !exprs.is_empty() {
                sel.match_expressions = Some(exprs);
            }
        }
        Self {
            term,
            namespaces,
            weight,
            selector,
        }
    }

    /// The term's topology key.
    pub fn topology_key(&self) -> &str {
        &self.term.topology_key
    }

    /// Whether `pod` (in a namespace with `ns_labels`) is selected by this term.
    pub fn matches(&self, pod: &Pod, ns_labels: &BTreeMap<String, String>) -> bool {
        let ns = pod_namespace(pod);
        let ns_ok = self.namespaces.contains(ns)
            || self
                .term
                .namespace_selector
                .as_ref()
                .is_some_and(|s| selector_matches(Some(s), ns_labels));
        ns_ok && selector_matches(self.selector.as_ref(), pod_labels(pod))
    }
}

fn req(
    key: &str,
    op: &str,
    v: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
        key: key.to_string(),
        operator: op.to_string(),
        values: Some(vec![v.to_string()]),
    }
}

/// Required pod-affinity terms of a pod.
pub fn required_affinity_terms(pod: &Pod) -> Vec<AffinityTerm<'_>> {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|t| AffinityTerm::new(t, pod, 1))
        .collect()
}

/// Required pod-anti-affinity terms of a pod.
pub fn required_anti_affinity_terms(pod: &Pod) -> Vec<AffinityTerm<'_>> {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|t| AffinityTerm::new(t, pod, 1))
        .collect()
}

/// Preferred pod-affinity terms of a pod, with their weights.
pub fn preferred_affinity_terms(pod: &Pod) -> Vec<AffinityTerm<'_>> {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|w| AffinityTerm::new(&w.pod_affinity_term, pod, i64::from(w.weight)))
        .collect()
}

/// Preferred pod-anti-affinity terms of a pod, with their weights.
pub fn preferred_anti_affinity_terms(pod: &Pod) -> Vec<AffinityTerm<'_>> {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|w| AffinityTerm::new(&w.pod_affinity_term, pod, i64::from(w.weight)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn label_selector_forms() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        assert!(!selector_matches(None, &l), "nil selects nothing");
        assert!(selector_matches(Some(&LabelSelector::default()), &l));
        assert!(selector_matches(Some(&sel(&[("app", "web")])), &l));
        assert!(!selector_matches(Some(&sel(&[("app", "db")])), &l));
        let mut s = sel(&[]);
        s.match_expressions = Some(vec![req("tier", "NotIn", "be"), req("x", "NotIn", "y")]);
        assert!(selector_matches(Some(&s), &l));
        s.match_expressions = Some(vec![req("app", "Bogus", "web")]);
        assert!(!selector_matches(Some(&s), &l));
    }

    #[test]
    fn node_selector_term_operators() {
        let mut n = node("n1", "1", "1Gi", "10");
        n.metadata.labels = Some(labels(&[("zone", "a"), ("gen", "5")]));
        let t = |key: &str, op: &str, vals: &[&str]| NodeSelectorTerm {
            match_expressions: Some(vec![node_req(key, op, vals)]),
            match_fields: None,
        };
        assert!(node_selector_term_matches(
            &t("zone", "In", &["a", "b"]),
            &n
        ));
        assert!(!node_selector_term_matches(&t("zone", "NotIn", &["a"]), &n));
        assert!(node_selector_term_matches(&t("ssd", "NotIn", &["x"]), &n));
        assert!(node_selector_term_matches(&t("zone", "Exists", &[]), &n));
        assert!(node_selector_term_matches(
            &t("ssd", "DoesNotExist", &[]),
            &n
        ));
        assert!(node_selector_term_matches(&t("gen", "Gt", &["4"]), &n));
        assert!(!node_selector_term_matches(&t("gen", "Gt", &["5"]), &n));
        assert!(node_selector_term_matches(&t("gen", "Lt", &["6"]), &n));
        assert!(
            !node_selector_term_matches(&t("zone", "Lt", &["6"]), &n),
            "not a number"
        );
        let fields = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![node_req("metadata.name", "In", &["n1"])]),
        };
        assert!(node_selector_term_matches(&fields, &n));
        let fields = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![node_req("metadata.name", "NotIn", &["n1"])]),
        };
        assert!(!node_selector_term_matches(&fields, &n));
        assert!(!node_selector_term_matches(
            &NodeSelectorTerm::default(),
            &n
        ));
    }

    #[test]
    fn toleration_rules() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let tol =
            |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
                Toleration {
                    key: key.map(Into::into),
                    operator: op.map(Into::into),
                    value: value.map(Into::into),
                    effect: effect.map(Into::into),
                    toleration_seconds: None,
                }
            };
        assert!(toleration_tolerates(
            &tol(Some("k"), None, Some("v"), None),
            &taint
        ));
        assert!(!toleration_tolerates(
            &tol(Some("k"), None, Some("w"), None),
            &taint
        ));
        assert!(toleration_tolerates(
            &tol(Some("k"), Some("Exists"), None, None),
            &taint
        ));
        assert!(
            toleration_tolerates(&tol(None, Some("Exists"), None, None), &taint),
            "wildcard"
        );
        assert!(!toleration_tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoExecute")),
            &taint
        ));
        assert!(toleration_tolerates(
            &tol(Some("k"), Some("Equal"), Some("v"), Some("NoSchedule")),
            &taint
        ));
    }

    #[test]
    fn affinity_term_namespaces() {
        let mut owner = pod_with_requests("o", &[]);
        owner.metadata.namespace = Some("ns1".into());
        owner.metadata.labels = Some(labels(&[("ver", "2")]));
        let term = PodAffinityTerm {
            label_selector: Some(sel(&[("app", "web")])),
            topology_key: "kubernetes.io/hostname".into(),
            match_label_keys: Some(vec!["ver".into()]),
            ..Default::default()
        };
        let t = AffinityTerm::new(&term, &owner, 1);
        let mut other = pod_with_requests("x", &[]);
        other.metadata.namespace = Some("ns1".into());
        other.metadata.labels = Some(labels(&[("app", "web"), ("ver", "2")]));
        assert!(t.matches(&other, &BTreeMap::new()));
        other.metadata.labels = Some(labels(&[("app", "web"), ("ver", "1")]));
        assert!(
            !t.matches(&other, &BTreeMap::new()),
            "matchLabelKeys folds ver=2 in"
        );
        other.metadata.labels = Some(labels(&[("app", "web"), ("ver", "2")]));
        other.metadata.namespace = Some("ns2".into());
        assert!(!t.matches(&other, &BTreeMap::new()), "own namespace only");
        let term2 = PodAffinityTerm {
            namespace_selector: Some(sel(&[("team", "a")])),
            ..term.clone()
        };
        let t2 = AffinityTerm::new(&term2, &owner, 1);
        assert!(t2.matches(&other, &labels(&[("team", "a")])));
        assert!(!t2.matches(&other, &labels(&[("team", "b")])));
    }
}
