//! Scheduling scenarios through [`framework::schedule`]: each plugin's effect on placement and
//! the failure messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorTerm, Pod, PodAffinity,
    PodAffinityTerm, PodAntiAffinity, PreferredSchedulingTerm, Toleration,
    TopologySpreadConstraint, WeightedPodAffinityTerm,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::cache::{Cache, NodeInfo};
use crate::framework::{Cluster, schedule};
use crate::testutil::*;

fn cluster_of(infos: &[NodeInfo]) -> (Vec<&NodeInfo>, HashMap<String, BTreeMap<String, String>>) {
    (infos.iter().collect(), HashMap::new())
}

fn run(pod: &Pod, infos: &[NodeInfo]) -> Result<String, String> {
    let (nodes, ns) = cluster_of(infos);
    schedule(
        pod,
        &Cluster {
            nodes,
            namespaces: &ns,
        },
    )
    .map_err(|e| e.message())
}

fn empty(nodes: Vec<Node>) -> Vec<NodeInfo> {
    nodes
        .into_iter()
        .map(|n| NodeInfo::new(n, vec![]))
        .collect()
}

fn three() -> Vec<Node> {
    vec![
        node("n1", "2", "4Gi", "110"),
        node("n2", "2", "4Gi", "110"),
        node("n3", "2", "4Gi", "110"),
    ]
}

fn anti(term: PodAffinityTerm) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn term(l: &[(&str, &str)], key: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(sel(l)),
        topology_key: key.into(),
        ..Default::default()
    }
}

fn with_affinity(mut p: Pod, a: Affinity) -> Pod {
    p.spec.as_mut().expect("spec").affinity = Some(a);
    p
}

#[test]
fn insufficient_cpu_everywhere_gives_upstreams_message() {
    let pod = pod_with_requests("big", &[("cpu", "3")]);
    assert_eq!(
        run(&pod, &empty(three())),
        Err(
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: \
             3 No preemption victims found for incoming pod."
                .into()
        )
    );
}

#[test]
fn several_resources_and_reasons_are_counted_and_sorted() {
    let pod = pod_with_requests("big", &[("cpu", "3"), ("memory", "8Gi")]);
    let mut nodes = three();
    nodes[0].spec.as_mut().expect("spec").taints =
        Some(vec![taint("dedicated", "db", "NoSchedule")]);
    nodes[1].spec.as_mut().expect("spec").unschedulable = Some(true);
    assert_eq!(
        run(&pod, &empty(nodes)),
        Err(
            "0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, \
             1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were unschedulable. \
             preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
             2 Preemption is not helpful for scheduling."
                .into()
        )
    );
}

#[test]
fn preemption_policy_never_and_no_nodes() {
    let mut pod = pod_with_requests("big", &[("cpu", "3")]);
    pod.spec.as_mut().expect("spec").preemption_policy = Some("Never".into());
    assert_eq!(
        run(&pod, &empty(vec![node("n1", "1", "1Gi", "10")])),
        Err("0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.".into())
    );
    assert_eq!(
        run(&pod, &[]),
        Err("no nodes available to schedule pods".into())
    );
}

#[test]
fn requests_count_bound_and_assumed_pods() {
    let mut cache = Cache::new();
    for n in three() {
        cache.set_node(Arc::new(n));
    }
    let ns = HashMap::new();
    // Each node takes one 1500m pod; the fourth fits nowhere — including nodes only holding
    // assumed (not yet watched) pods.
    for i in 0..3 {
        let p = pod_with_requests(&format!("p{i}"), &[("cpu", "1500m")]);
        let node = schedule(
            &p,
            &Cluster {
                nodes: cache.nodes(),
                namespaces: &ns,
            },
        )
        .expect("fits");
        cache.assume(&p, &node);
    }
    let placed: Vec<i64> = cache
        .nodes()
        .iter()
        .map(|n| n.requested.milli_cpu)
        .collect();
    assert_eq!(placed, [1500, 1500, 1500], "spread one per node");
    let p = pod_with_requests("p3", &[("cpu", "1500m")]);
    let err = schedule(
        &p,
        &Cluster {
            nodes: cache.nodes(),
            namespaces: &ns,
        },
    )
    .expect_err("full");
    assert!(
        err.message()
            .starts_with("0/3 nodes are available: 3 Insufficient cpu.")
    );
}

#[test]
fn too_many_pods() {
    let n = node("n1", "2", "4Gi", "1");
    let info = NodeInfo::new(n, vec![bound_pod("x", "n1", &[])]);
    let pod = pod_with_requests("p", &[]);
    let msg = run(&pod, &[info]).expect_err("full");
    assert!(
        msg.starts_with("0/1 nodes are available: 1 Too many pods."),
        "{msg}"
    );
}

#[test]
fn node_selector_and_required_affinity() {
    let nodes = vec![
        with_labels(node("n1", "2", "4Gi", "110"), &[("disk", "hdd")]),
        with_labels(node("n2", "2", "4Gi", "110"), &[("disk", "ssd")]),
        node("n3", "2", "4Gi", "110"),
    ];
    let mut pod = pod_with_requests("p", &[]);
    pod.spec.as_mut().expect("spec").node_selector = Some(labels(&[("disk", "ssd")]));
    assert_eq!(run(&pod, &empty(nodes.clone())), Ok("n2".into()));

    let pod = with_affinity(
        pod_with_requests("p", &[]),
        Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![node_req("disk", "In", &["nvme"])]),
                        match_fields: None,
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    assert_eq!(
        run(&pod, &empty(nodes.clone())),
        Err(
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
                .into()
        )
    );
    // matchFields on metadata.name.
    let pod = with_affinity(
        pod_with_requests("p", &[]),
        Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: None,
                        match_fields: Some(vec![node_req("metadata.name", "In", &["n3"])]),
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    assert_eq!(run(&pod, &empty(nodes)), Ok("n3".into()));
}

#[test]
fn preferred_node_affinity_wins_the_score() {
    let nodes = vec![
        with_labels(node("n1", "2", "4Gi", "110"), &[("zone", "a")]),
        with_labels(node("n2", "2", "4Gi", "110"), &[("zone", "b")]),
    ];
    let pod = with_affinity(
        pod_with_requests("p", &[]),
        Affinity {
            node_affinity: Some(NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 10,
                        preference: NodeSelectorTerm {
                            match_expressions: Some(vec![node_req("zone", "In", &["b"])]),
                            match_fields: None,
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    assert_eq!(run(&pod, &empty(nodes)), Ok("n2".into()));
}

#[test]
fn taints_tolerations_and_prefer_no_schedule() {
    let mut nodes = three();
    for n in &mut nodes[..2] {
        n.spec.as_mut().expect("spec").taints = Some(vec![taint("gpu", "", "NoSchedule")]);
    }
    nodes[2].spec.as_mut().expect("spec").taints = Some(vec![taint("x", "y", "NoExecute")]);
    let pod = pod_with_requests("p", &[]);
    assert_eq!(
        run(&pod, &empty(nodes.clone())),
        Err(
            "0/3 nodes are available: 1 node(s) had untolerated taint {x: y}, \
             2 node(s) had untolerated taint {gpu: }. preemption: 0/3 nodes are available: \
             3 Preemption is not helpful for scheduling."
                .into()
        )
    );
    let mut tolerant = pod.clone();
    tolerant.spec.as_mut().expect("spec").tolerations = Some(vec![Toleration {
        key: Some("gpu".into()),
        operator: Some("Exists".into()),
        ..Default::default()
    }]);
    assert_eq!(run(&tolerant, &empty(nodes.clone())), Ok("n1".into()));

    // PreferNoSchedule only lowers the score.
    let mut soft = three();
    soft[0].spec.as_mut().expect("spec").taints = Some(vec![taint("slow", "", "PreferNoSchedule")]);
    soft[1].spec.as_mut().expect("spec").taints = Some(vec![taint("slow", "", "PreferNoSchedule")]);
    assert_eq!(run(&pod, &empty(soft)), Ok("n3".into()));
}

#[test]
fn cordoned_nodes_are_skipped_unless_tolerated() {
    let mut nodes = three();
    nodes[0].spec.as_mut().expect("spec").unschedulable = Some(true);
    nodes[1].spec.as_mut().expect("spec").unschedulable = Some(true);
    let pod = pod_with_requests("p", &[]);
    assert_eq!(run(&pod, &empty(nodes.clone())), Ok("n3".into()));
    nodes[2].spec.as_mut().expect("spec").unschedulable = Some(true);
    let msg = run(&pod, &empty(nodes.clone())).expect_err("all cordoned");
    assert!(
        msg.starts_with("0/3 nodes are available: 3 node(s) were unschedulable."),
        "{msg}"
    );
    let mut tolerant = pod.clone();
    tolerant.spec.as_mut().expect("spec").tolerations = Some(vec![Toleration {
        key: Some("node.kubernetes.io/unschedulable".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    assert!(run(&tolerant, &empty(nodes)).is_ok());
}

#[test]
fn host_ports_conflict() {
    let mut existing = bound_pod("x", "n1", &[]);
    existing.spec.as_mut().expect("spec").containers[0].ports =
        Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            container_port: 80,
            host_port: Some(8080),
            ..Default::default()
        }]);
    let info = NodeInfo::new(node("n1", "2", "4Gi", "110"), vec![existing.clone()]);
    let mut pod = existing.clone();
    pod.metadata.uid = Some("uid-new".into());
    pod.spec.as_mut().expect("spec").node_name = None;
    let msg = run(&pod, &[info]).expect_err("port taken");
    assert!(
        msg.contains("1 node(s) didn't have free ports for the requested pod ports"),
        "{msg}"
    );
}

#[test]
fn required_anti_affinity_spreads_by_hostname() {
    let nodes = three();
    let a = anti(term(&[("app", "web")], "kubernetes.io/hostname"));
    let mut infos = empty(nodes.clone());
    infos[0] = NodeInfo::new(
        nodes[0].clone(),
        vec![bound_pod("w0", "n1", &[("app", "web")])],
    );
    infos[1] = NodeInfo::new(
        nodes[1].clone(),
        vec![bound_pod("w1", "n2", &[("app", "web")])],
    );
    let mut pod = with_affinity(pod_with_requests("w2", &[]), a.clone());
    pod.metadata.labels = Some(labels(&[("app", "web")]));
    assert_eq!(run(&pod, &infos), Ok("n3".into()));
    infos[2] = NodeInfo::new(
        nodes[2].clone(),
        vec![bound_pod("w3", "n3", &[("app", "web")])],
    );
    assert_eq!(
        run(&pod, &infos),
        Err(
            "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
             preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
                .into()
        )
    );
}

#[test]
fn existing_pods_anti_affinity_is_symmetric() {
    let nodes = three();
    let guard = with_affinity(
        bound_pod("guard", "n1", &[("role", "guard")]),
        anti(term(&[("app", "web")], "kubernetes.io/hostname")),
    );
    let infos = vec![
        NodeInfo::new(nodes[0].clone(), vec![guard]),
        NodeInfo::new(nodes[1].clone(), vec![]),
    ];
    let mut pod = pod_with_requests("w", &[]);
    pod.metadata.labels = Some(labels(&[("app", "web")]));
    assert_eq!(run(&pod, &infos), Ok("n2".into()));
    let msg = run(&pod, &infos[..1]).expect_err("guarded");
    assert!(
        msg.contains("1 node(s) didn't satisfy existing pods anti-affinity rules"),
        "{msg}"
    );
}

#[test]
fn required_pod_affinity_follows_the_target_and_allows_the_first_of_a_group() {
    let nodes = vec![
        with_labels(node("n1", "2", "4Gi", "110"), &[("zone", "a")]),
        with_labels(node("n2", "2", "4Gi", "110"), &[("zone", "b")]),
        with_labels(node("n3", "2", "4Gi", "110"), &[("zone", "b")]),
    ];
    let aff = Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term(
                &[("app", "db")],
                "zone",
            )]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = with_affinity(pod_with_requests("cache", &[]), aff.clone());
    // No db pod anywhere and the pod is not a db itself: nowhere.
    let msg = run(&pod, &empty(nodes.clone())).expect_err("no target");
    assert!(
        msg.starts_with("0/3 nodes are available: 3 node(s) didn't match pod affinity rules."),
        "{msg}"
    );
    // A db pod on n3 (zone b): n2 or n3 qualify; n1 does not.
    let infos = vec![
        NodeInfo::new(nodes[0].clone(), vec![]),
        NodeInfo::new(nodes[1].clone(), vec![]),
        NodeInfo::new(
            nodes[2].clone(),
            vec![bound_pod("db", "n3", &[("app", "db")])],
        ),
    ];
    let placed = run(&pod, &infos).expect("fits");
    assert!(placed == "n2" || placed == "n3", "{placed}");
    // The first db pod with affinity to db pods may go anywhere.
    let mut first = with_affinity(pod_with_requests("db0", &[]), aff);
    first.metadata.labels = Some(labels(&[("app", "db")]));
    assert!(run(&first, &empty(nodes)).is_ok());
}

#[test]
fn preferred_pod_affinity_and_anti_affinity_score() {
    let nodes = three();
    let infos = vec![
        NodeInfo::new(nodes[0].clone(), vec![]),
        NodeInfo::new(
            nodes[1].clone(),
            vec![bound_pod("db", "n2", &[("app", "db")])],
        ),
        NodeInfo::new(nodes[2].clone(), vec![]),
    ];
    let near = with_affinity(
        pod_with_requests("near", &[]),
        Affinity {
            pod_affinity: Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: term(&[("app", "db")], "kubernetes.io/hostname"),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    assert_eq!(run(&near, &infos), Ok("n2".into()));
    let far = with_affinity(
        pod_with_requests("far", &[]),
        Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: term(&[("app", "db")], "kubernetes.io/hostname"),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    assert_ne!(run(&far, &infos), Ok("n2".into()));
}

#[test]
fn namespace_selector_widens_affinity_terms() {
    let nodes = three();
    let mut other_ns = bound_pod("db", "n2", &[("app", "db")]);
    other_ns.metadata.namespace = Some("data".into());
    let infos = [
        NodeInfo::new(nodes[0].clone(), vec![]),
        NodeInfo::new(nodes[1].clone(), vec![other_ns]),
    ];
    let mut t = term(&[("app", "db")], "kubernetes.io/hostname");
    let pod_same_ns = with_affinity(pod_with_requests("p", &[]), anti(t.clone()));
    t.namespace_selector = Some(sel(&[("tier", "data")]));
    let pod_sel = with_affinity(pod_with_requests("p", &[]), anti(t));
    let mut ns = HashMap::new();
    ns.insert("data".to_string(), labels(&[("tier", "data")]));
    let cl = || Cluster {
        nodes: infos.iter().collect(),
        namespaces: &ns,
    };
    // Own namespace only: the db pod in `data` does not count, so n1 and n2 are both fine.
    assert!(schedule(&pod_same_ns, &cl()).is_ok());
    let only_n2 = Cluster {
        nodes: vec![&infos[1]],
        namespaces: &ns,
    };
    assert!(schedule(&pod_same_ns, &only_n2).is_ok());
    assert!(
        schedule(&pod_sel, &only_n2).is_err(),
        "namespaceSelector reaches `data`"
    );
    assert_eq!(schedule(&pod_sel, &cl()).ok().as_deref(), Some("n1"));
}

fn spread(max_skew: i32, key: &str, when: &str, l: &[(&str, &str)]) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew,
        topology_key: key.into(),
        when_unsatisfiable: when.into(),
        label_selector: Some(sel(l)),
        ..Default::default()
    }
}

#[test]
fn topology_spread_do_not_schedule() {
    let nodes = [
        with_labels(node("n1", "2", "4Gi", "110"), &[("zone", "a")]),
        with_labels(node("n2", "2", "4Gi", "110"), &[("zone", "b")]),
        node("n3", "2", "4Gi", "110"), // no zone label
    ];
    let x = |name: &str, node: &str| bound_pod(name, node, &[("app", "x")]);
    let mut pod = pod_with_requests("p", &[]);
    pod.metadata.labels = Some(labels(&[("app", "x")]));
    pod.spec.as_mut().expect("spec").topology_spread_constraints =
        Some(vec![spread(1, "zone", "DoNotSchedule", &[("app", "x")])]);

    // a: 2, b: 1 → only b keeps the skew within 1; n3 lacks the key.
    let infos = [
        NodeInfo::new(nodes[0].clone(), vec![x("a1", "n1"), x("a2", "n1")]),
        NodeInfo::new(nodes[1].clone(), vec![x("b1", "n2")]),
        NodeInfo::new(nodes[2].clone(), vec![]),
    ];
    assert_eq!(run(&pod, &infos), Ok("n2".into()));
    assert_eq!(
        run(&pod, &infos[..1]),
        Ok("n1".into()),
        "a single domain can always take more"
    );

    // Zone b exists with 0 pods but its node is full: a third pod in zone a would make the
    // skew 3 - 0.
    let mut full_b = nodes[1].clone();
    full_b.status.as_mut().expect("status").allocatable =
        Some(list(&[("cpu", "2"), ("memory", "4Gi"), ("pods", "0")]));
    let err = run(
        &pod,
        &[
            infos[0].clone(),
            NodeInfo::new(full_b, vec![]),
            infos[2].clone(),
        ],
    )
    .expect_err("skew");
    assert!(
        err.starts_with(
            "0/3 nodes are available: 1 Too many pods, 1 node(s) didn't match pod topology \
             spread constraints, 1 node(s) didn't match pod topology spread constraints \
             (missing required label). preemption: 0/3 nodes are available: 1 Preemption is \
             not helpful for scheduling, 2 No preemption victims found for incoming pod."
        ),
        "{err}"
    );
}

#[test]
fn topology_spread_min_domains_counts_missing_domains_as_zero() {
    let nodes = [
        with_labels(node("n1", "2", "4Gi", "110"), &[("zone", "a")]),
        with_labels(node("n2", "2", "4Gi", "110"), &[("zone", "b")]),
    ];
    let x = |name: &str, node: &str| bound_pod(name, node, &[("app", "x")]);
    let infos = [
        NodeInfo::new(nodes[0].clone(), vec![x("a1", "n1")]),
        NodeInfo::new(nodes[1].clone(), vec![x("b1", "n2")]),
    ];
    let mut pod = pod_with_requests("p", &[]);
    pod.metadata.labels = Some(labels(&[("app", "x")]));
    let mut c = spread(1, "zone", "DoNotSchedule", &[("app", "x")]);
    pod.spec.as_mut().expect("spec").topology_spread_constraints = Some(vec![c.clone()]);
    assert!(run(&pod, &infos).is_ok(), "1/1: skew 1 after placing");
    c.min_domains = Some(3);
    pod.spec.as_mut().expect("spec").topology_spread_constraints = Some(vec![c]);
    let err = run(&pod, &infos).expect_err("only 2 of 3 domains: min counts as 0");
    assert!(
        err.starts_with(
            "0/2 nodes are available: 2 node(s) didn't match pod topology spread constraints."
        ),
        "{err}"
    );
}

#[test]
fn topology_spread_schedule_anyway_prefers_emptier_domains() {
    let nodes = three();
    let infos = vec![
        NodeInfo::new(
            nodes[0].clone(),
            vec![bound_pod("a", "n1", &[("app", "x")])],
        ),
        NodeInfo::new(
            nodes[1].clone(),
            vec![bound_pod("b", "n2", &[("app", "x")])],
        ),
        NodeInfo::new(nodes[2].clone(), vec![]),
    ];
    let mut pod = pod_with_requests("p", &[]);
    pod.metadata.labels = Some(labels(&[("app", "x")]));
    pod.spec.as_mut().expect("spec").topology_spread_constraints = Some(vec![spread(
        1,
        "kubernetes.io/hostname",
        "ScheduleAnyway",
        &[("app", "x")],
    )]);
    assert_eq!(run(&pod, &infos), Ok("n3".into()));
}

#[test]
fn replicas_of_one_controller_spread_over_nodes() {
    let mut cache = Cache::new();
    for n in three() {
        cache.set_node(Arc::new(n));
    }
    // Unrelated load on n3 so least-allocated alone would not spread.
    cache.update_pod(Arc::new({
        let mut p = bound_pod("other", "n3", &[]);
        p.spec.as_mut().expect("spec").containers[0] = container("c", &[("cpu", "100m")]);
        p
    }));
    let ns = HashMap::new();
    let owner = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "web-abc".into(),
        uid: "rs-uid".into(),
        controller: Some(true),
        ..Default::default()
    };
    let mut placed = Vec::new();
    for i in 0..3 {
        let mut p = pod_with_requests(&format!("web-{i}"), &[]);
        p.metadata.owner_references = Some(vec![owner.clone()]);
        let node = schedule(
            &p,
            &Cluster {
                nodes: cache.nodes(),
                namespaces: &ns,
            },
        )
        .expect("fits");
        cache.assume(&p, &node);
        placed.push(node);
    }
    placed.sort();
    assert_eq!(placed, ["n1", "n2", "n3"]);
}

#[test]
fn least_allocated_prefers_the_emptier_node() {
    let nodes = [node("n1", "4", "8Gi", "110"), node("n2", "4", "8Gi", "110")];
    let mut busy = bound_pod("x", "n1", &[]);
    busy.spec.as_mut().expect("spec").containers[0] =
        container("c", &[("cpu", "3"), ("memory", "6Gi")]);
    let infos = vec![
        NodeInfo::new(nodes[0].clone(), vec![busy]),
        NodeInfo::new(nodes[1].clone(), vec![]),
    ];
    assert_eq!(
        run(&pod_with_requests("p", &[("cpu", "500m")]), &infos),
        Ok("n2".into())
    );
}

#[test]
fn lower_priority_pods_on_a_full_node_are_reported_not_preempted() {
    let mut low = bound_pod("low", "n1", &[]);
    low.spec.as_mut().expect("spec").containers[0] = container("c", &[("cpu", "2")]);
    low.spec.as_mut().expect("spec").priority = Some(0);
    let info = NodeInfo::new(node("n1", "2", "4Gi", "110"), vec![low]);
    let mut high = pod_with_requests("high", &[("cpu", "1")]);
    high.spec.as_mut().expect("spec").priority = Some(1000);
    assert_eq!(
        run(&high, &[info]),
        Err(
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
             1 preemption of lower-priority pods is not implemented in k8slite."
                .into()
        )
    );
}

#[test]
fn many_replicas_of_many_controllers_stay_balanced() {
    let mut cache = Cache::new();
    for i in 0..50 {
        cache.set_node(Arc::new(node(&format!("n{i:02}"), "8", "32Gi", "110")));
    }
    let ns = HashMap::new();
    let mut per_owner_node: HashMap<(usize, String), usize> = HashMap::new();
    for o in 0..10 {
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{o}"),
            uid: format!("rs-uid-{o}"),
            controller: Some(true),
            ..Default::default()
        };
        for r in 0..50 {
            let mut p = pod_with_requests(&format!("rs-{o}-{r}"), &[("cpu", "10m")]);
            p.metadata.owner_references = Some(vec![owner.clone()]);
            let node = schedule(
                &p,
                &Cluster {
                    nodes: cache.nodes(),
                    namespaces: &ns,
                },
            )
            .expect("fits");
            cache.assume(&p, &node);
            *per_owner_node.entry((o, node)).or_default() += 1;
        }
    }
    let worst = per_owner_node.values().copied().max().unwrap_or(0);
    assert_eq!(
        worst, 1,
        "50 replicas of each controller over 50 nodes: one per node"
    );
    let pods: Vec<i64> = cache.nodes().iter().map(|n| n.requested.pods).collect();
    assert!(pods.iter().all(|p| *p == 10), "{pods:?}");
}
