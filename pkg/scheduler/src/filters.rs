//! Per-node filters (upstream's filter plugins, in upstream's order): NodeUnschedulable,
//! TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit. The inter-pod and spread filters
//! live in their own modules because they need cluster-wide counts.

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use crate::cache::NodeInfo;
use crate::framework::Failure;
use crate::matching::{node_matches_pod_selectors, node_taints, pod_tolerations, tolerated};
use crate::resources::Resources;

/// Reason: the node is cordoned.
pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// Reason: nodeSelector / required node affinity does not match.
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// Reason: a requested host port is taken.
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
/// Reason: the node's pod count is exhausted.
pub const ERR_TOO_MANY_PODS: &str = "Too many pods";
/// The taint a cordoned node is treated as having.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// NodeUnschedulable: a cordoned node (`spec.unschedulable`) only takes pods tolerating the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint.
pub fn node_unschedulable(pod: &Pod, node: &Node) -> Result<(), Failure> {
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if !cordoned {
        return Ok(());
    }
    let taint = Taint {
        key: TAINT_UNSCHEDULABLE.into(),
        effect: "NoSchedule".into(),
        value: None,
        time_added: None,
    };
    if tolerated(pod_tolerations(pod), &taint) {
        Ok(())
    } else {
        Err(Failure::unresolvable(ERR_UNSCHEDULABLE))
    }
}

/// TaintToleration: every NoSchedule / NoExecute taint must be tolerated. The message names
/// the first untolerated taint as upstream does (`{key: value}`).
pub fn taint_toleration(pod: &Pod, node: &Node) -> Result<(), Failure> {
    let tolerations = pod_tolerations(pod);
    match node_taints(node).iter().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerated(tolerations, t)
    }) {
        None => Ok(()),
        Some(t) => Err(Failure::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or_default()
        ))),
    }
}

/// NodeAffinity: nodeSelector and required node affinity.
pub fn node_affinity(pod: &Pod, node: &Node) -> Result<(), Failure> {
    if node_matches_pod_selectors(pod, node) {
        Ok(())
    } else {
        Err(Failure::unresolvable(ERR_NODE_AFFINITY))
    }
}

/// Host ports a pod asks for: (protocol, hostIP, port).
fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                port,
            ))
        })
        .collect()
}

/// NodePorts: a requested host port must be free on the node (0.0.0.0 conflicts with any IP).
pub fn node_ports(pod: &Pod, info: &NodeInfo) -> Result<(), Failure> {
    let wanted = host_ports(pod);
    if wanted.is_empty() {
        return Ok(());
    }
    let conflict = info
        .pods
        .values()
        .flat_map(|p| host_ports(p))
        .any(|(proto, ip, port)| {
            wanted.iter().any(|(wp, wip, wport)| {
                *wport == port
                    && *wp == proto
                    && (ip == *wip || ip == "0.0.0.0" || wip == "0.0.0.0")
            })
        });
    if conflict {
        Err(Failure::unschedulable(ERR_NODE_PORTS))
    } else {
        Ok(())
    }
}

/// NodeResourcesFit: the pod's requests fit in allocatable minus what bound and assumed pods
/// request. Reports every insufficient resource (pods first, as upstream).
pub fn resources_fit(req: &Resources, info: &NodeInfo) -> Result<(), Failure> {
    let alloc = &info.allocatable;
    let used = &info.requested;
    let mut reasons = Vec::new();
    if used.pods + 1 > alloc.pods {
        reasons.push(ERR_TOO_MANY_PODS.to_string());
    }
    let zero = req.milli_cpu == 0
        && req.memory == 0
        && req.ephemeral_storage == 0
        && req.scalar.values().all(|v| *v == 0);
    if zero {
        return if reasons.is_empty() {
            Ok(())
        } else {
            Err(Failure::unschedulable_all(reasons))
        };
    }
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        reasons.push("Insufficient cpu".into());
    }
    if req.memory > 0 && req.memory > alloc.memory - used.memory {
        reasons.push("Insufficient memory".into());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
    {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (name, amount) in &req.scalar {
        if *amount == 0 {
            continue;
        }
        let have = alloc.scalar.get(name).copied().unwrap_or(0)
            - used.scalar.get(name).copied().unwrap_or(0);
        if *amount > have {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Failure::unschedulable_all(reasons))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::resources::pod_requests;
    use crate::testutil::*;

    #[test]
    fn resources_fit_lists_every_shortage_pods_first() {
        let mut n = node("n1", "1", "1Gi", "1");
        n.status.as_mut().expect("status").allocatable = Some(list(&[
            ("cpu", "1"),
            ("memory", "1Gi"),
            ("pods", "1"),
            ("ephemeral-storage", "1Gi"),
        ]));
        let info = NodeInfo::new(n, vec![bound_pod("x", "n1", &[])]);
        let pod = pod_with_requests(
            "p",
            &[
                ("cpu", "2"),
                ("memory", "2Gi"),
                ("ephemeral-storage", "2Gi"),
                ("example.com/gpu", "1"),
            ],
        );
        let f = resources_fit(&pod_requests(&pod), &info).expect_err("nothing fits");
        assert_eq!(f.code, Code::Unschedulable);
        assert_eq!(
            f.reasons,
            [
                "Too many pods",
                "Insufficient cpu",
                "Insufficient memory",
                "Insufficient ephemeral-storage",
                "Insufficient example.com/gpu"
            ]
        );
    }

    #[test]
    fn resources_fit_subtracts_what_is_bound() {
        let mut used = bound_pod("x", "n1", &[]);
        used.spec.as_mut().expect("spec").containers[0] = container("c", &[("cpu", "600m")]);
        let info = NodeInfo::new(node("n1", "1", "1Gi", "10"), vec![used]);
        let fits = pod_with_requests("a", &[("cpu", "400m")]);
        let too_big = pod_with_requests("b", &[("cpu", "401m")]);
        assert!(resources_fit(&pod_requests(&fits), &info).is_ok());
        assert!(resources_fit(&pod_requests(&too_big), &info).is_err());
    }

    #[test]
    fn taint_and_cordon_filters() {
        let mut n = node("n1", "1", "1Gi", "10");
        let pod = pod_with_requests("p", &[]);
        assert!(taint_toleration(&pod, &n).is_ok());
        n.spec.as_mut().expect("spec").taints = Some(vec![
            taint("soft", "", "PreferNoSchedule"),
            taint("k", "v", "NoExecute"),
        ]);
        let f = taint_toleration(&pod, &n).expect_err("NoExecute blocks");
        assert_eq!(f.reasons, ["node(s) had untolerated taint {k: v}"]);
        assert_eq!(f.code, Code::UnschedulableAndUnresolvable);
        n.spec.as_mut().expect("spec").unschedulable = Some(true);
        assert_eq!(
            node_unschedulable(&pod, &n).expect_err("cordoned").reasons,
            [ERR_UNSCHEDULABLE]
        );
    }

    #[test]
    fn node_affinity_filter_reason() {
        let n = node("n1", "1", "1Gi", "10");
        let mut pod = pod_with_requests("p", &[]);
        pod.spec.as_mut().expect("spec").node_selector = Some(labels(&[("disk", "ssd")]));
        assert_eq!(
            node_affinity(&pod, &n).expect_err("no label").reasons,
            [ERR_NODE_AFFINITY]
        );
    }
}
