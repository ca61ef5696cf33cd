//! DaemonSet controller: one pod per eligible node (nodeSelector, required node affinity,
//! NoSchedule/NoExecute taints against the pod's tolerations plus the default tolerations
//! upstream gives daemon pods). Pods are placed through the scheduler: each carries the
//! required node affinity `matchFields metadata.name In [node]`, as upstream does. Nodes that
//! become ineligible lose their pod; RollingUpdate honours `maxUnavailable`/`maxSurge`, OnDelete
//! waits for the user; the templates live in ControllerRevisions.
//!
//! Orphan pods matching the selector are adopted.
//!
//! Not done: back-off between recreations of a failing daemon pod.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::{Ctx, history, util};

/// Label with the hash of the revision a daemon pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// Legacy label with the DaemonSet generation a pod was made from.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// Errors of the DaemonSet controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API failed.
    #[error("daemonset: {0}")]
    Kube(#[from] kube::Error),
    /// The revision history failed.
    #[error("daemonset: {0}")]
    History(#[from] history::Error),
    /// The set lacks something needed.
    #[error("daemonset {0}: {1}")]
    Invalid(String, &'static str),
}

struct State {
    ctx: Ctx,
    recorder: Recorder,
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), crate::Error> {
    let sets = Api::<DaemonSet>::all(ctx.client.clone());
    let pods = Api::<Pod>::all(ctx.client.clone());
    let nodes = Api::<Node>::all(ctx.client.clone());
    let state = Arc::new(State {
        recorder: ctx.recorder("daemonset-controller"),
        ctx,
    });
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(pods, watcher::Config::default())
        .watches(nodes, watcher::Config::default(), move |_node: Node| {
            store
                .state()
                .iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "daemonset reconcile");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_s: Arc<DaemonSet>, err: &Error, _st: Arc<State>) -> Action {
    tracing::debug!(error = %err, "daemonset reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    }
}

/// Add upstream's default daemon pod tolerations (not-ready/unreachable NoExecute without a
/// time limit; disk/memory/pid pressure and unschedulable NoSchedule; network-unavailable for
/// host-network pods) to `spec`, unless an equal one is there.
pub fn add_default_tolerations(spec: &mut PodSpec) {
    let mut add = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        add.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for t in add {
        // Replace a toleration of the same key and effect (upstream's AddOrUpdateToleration).
        tols.retain(|x| !(x.key == t.key && x.effect == t.effect));
        tols.push(t);
    }
}

/// Make the pod require `node` through `matchFields metadata.name In [node]`, replacing the
/// required node affinity terms (upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`).
pub fn set_node_affinity(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
    };
    let aff = spec.affinity.get_or_insert_with(Affinity::default);
    let na = aff.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

/// The node a daemon pod belongs to: `spec.nodeName`, else its `matchFields` affinity target.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Whether the daemon should run on `node` and, if it already does, keep running there (an
/// untolerated NoSchedule taint stops new pods but does not evict).
pub fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let Some(mut spec) = ds.spec.as_ref().and_then(|s| s.template.spec.clone()) else {
        return (false, false);
    };
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty())
        && Some(n) != node.metadata.name.as_deref()
    {
        return (false, false);
    }
    add_default_tolerations(&mut spec);
    if !util::node_matches_pod_placement(&spec, node) {
        return (false, false);
    }
    let tols = spec.tolerations.clone().unwrap_or_default();
    let mut run = true;
    let mut keep = true;
    for taint in node.spec.iter().flat_map(|s| s.taints.iter().flatten()) {
        if !(taint.effect == "NoSchedule" || taint.effect == "NoExecute") {
            continue;
        }
        if tols.iter().any(|t| util::tolerates(t, taint)) {
            continue;
        }
        run = false;
        if taint.effect == "NoExecute" {
            keep = false;
        }
    }
    (run, keep)
}

/// What one reconcile should do (pure).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a pod for.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    /// The status to record (without observedGeneration and collisionCount).
    pub status: DaemonSetStatus,
    /// Warnings: (reason, message).
    pub warnings: Vec<(&'static str, String)>,
}

fn scaled(v: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            i32::try_from((pct * i64::from(total) + 99) / 100).unwrap_or(default)
        }
    }
}

/// Decide pods per node given the nodes, the daemon's pods and the update revision's `hash`.
pub fn plan(ds: &DaemonSet, nodes: &[Node], pods: &[Pod], hash: &str, now: Timestamp) -> Plan {
    let spec = ds.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut p = Plan::default();
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        if let Some(n) = node_of(pod) {
            by_node.entry(n).or_default().push(pod);
        }
    }
    let is_new = |p: &Pod| p.labels().get(REVISION_LABEL).map(String::as_str) == Some(hash);
    let available =
        |p: &Pod| util::is_pod_available(p, min_ready, now) && !util::is_pod_terminal(p);

    let mut st = DaemonSetStatus::default();
    // Nodes that run the daemon, with their pods (for the rolling update).
    let mut running: Vec<(String, Vec<&Pod>)> = Vec::new();
    let node_names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    for node in nodes {
        let name = node.name_any();
        let (run, keep) = should_run(ds, node);
        let mut here: Vec<&Pod> = by_node.remove(&name).unwrap_or_default();
        if run {
            st.desired_number_scheduled += 1;
        }
        if !keep || (!run && here.is_empty()) {
            if !here.is_empty() {
                st.number_misscheduled += 1;
            }
            p.delete.extend(here.iter().map(|x| x.name_any()));
            continue;
        }
        if !run {
            // Tolerated as running (NoSchedule taint added later) but not wanted anew.
            st.number_misscheduled += 1;
            continue;
        }
        // Failed pods go (and are replaced).
        let (failed, alive): (Vec<&Pod>, Vec<&Pod>) =
            here.drain(..).partition(|x| util::is_pod_terminal(x));
        for f in &failed {
            p.warnings.push((
                "FailedDaemonPod",
                format!(
                    "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                    f.namespace().unwrap_or_default(),
                    f.name_any()
                ),
            ));
            p.delete.push(f.name_any());
        }
        let mut alive = alive;
        alive.sort_by_key(|x| x.metadata.creation_timestamp.as_ref().map(|t| t.0));
        // More than one pod: keep the oldest (and, while surging, one new pod beside an old one).
        if alive.len() > 1 {
            let keep_new = alive.iter().position(|x| is_new(x));
            let keep_old = alive.iter().position(|x| !is_new(x));
            let mut kept = Vec::new();
            for (i, x) in alive.iter().enumerate() {
                let keep_it = if kept.is_empty() {
                    true
                } else {
                    (Some(i) == keep_new || Some(i) == keep_old) && kept.len() < 2
                };
                if keep_it {
                    kept.push(*x);
                } else {
                    p.delete.push(x.name_any());
                }
            }
            alive = kept;
        }
        if alive.is_empty() {
            p.create.push(name.clone());
            continue;
        }
        st.current_number_scheduled += 1;
        if alive.iter().any(|x| util::is_pod_ready(x)) {
            st.number_ready += 1;
        }
        if alive.iter().any(|x| available(x)) {
            st.number_available = Some(st.number_available.unwrap_or(0) + 1);
        }
        if alive.iter().any(|x| is_new(x)) {
            st.updated_number_scheduled = Some(st.updated_number_scheduled.unwrap_or(0) + 1);
        }
        running.push((name, alive));
    }
    // Pods on nodes that no longer exist.
    for (n, left) in by_node {
        if !node_names.contains(&n) {
            p.delete.extend(left.iter().map(|x| x.name_any()));
        }
    }
    let unavailable = st.desired_number_scheduled - st.number_available.unwrap_or(0);
    st.number_unavailable = Some(unavailable.max(0));

    // Rolling update.
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("OnDelete") {
        let ru = strategy.rolling_update.clone().unwrap_or_default();
        let desired = st.desired_number_scheduled;
        let max_surge = scaled(ru.max_surge.as_ref(), desired, 0);
        let mut max_unavailable = scaled(ru.max_unavailable.as_ref(), desired, 1);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        // Nodes counted unavailable now (no available pod), plus those whose pods we delete.
        let mut num_unavailable = i32::try_from(p.create.len()).unwrap_or(0)
            + i32::try_from(
                running
                    .iter()
                    .filter(|(_, ps)| !ps.iter().any(|x| available(x)))
                    .count(),
            )
            .unwrap_or(0);
        let mut surging =
            i32::try_from(running.iter().filter(|(_, ps)| ps.len() > 1).count()).unwrap_or(0);
        for (node, ps) in &running {
            let old: Vec<&&Pod> = ps.iter().filter(|x| !is_new(x)).collect();
            if old.is_empty() {
                continue;
            }
            let new = ps.iter().find(|x| is_new(x));
            if max_surge == 0 {
                let old_available = old.iter().any(|x| available(x));
                if !old_available {
                    // Already unavailable: replacing it costs nothing.
                    p.delete.extend(old.iter().map(|x| x.name_any()));
                } else if num_unavailable < max_unavailable {
                    num_unavailable += 1;
                    p.delete.extend(old.iter().map(|x| x.name_any()));
                }
            } else {
                match new {
                    Some(n) if available(n) => {
                        p.delete.extend(old.iter().map(|x| x.name_any()));
                    }
                    Some(_) => {}
                    None => {
                        if !old.iter().any(|x| available(x)) {
                            p.delete.extend(old.iter().map(|x| x.name_any()));
                        } else if surging < max_surge {
                            surging += 1;
                            p.create.push(node.clone());
                        }
                    }
                }
            }
        }
    }
    p.status = st;
    p
}

/// The daemon pod for `node` from the set's template, labelled with the revision `hash`.
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Option<Pod> {
    let spec = ds.spec.as_ref()?;
    let mut pod = util::pod_from_template(
        &spec.template,
        ds.namespace().as_deref().unwrap_or("default"),
        None,
        Some(format!("{}-", ds.name_any())),
        ds.controller_owner_ref(&())?,
    );
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(REVISION_LABEL.into(), hash.to_string());
    if let Some(g) = ds.metadata.generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
    }
    let ps = pod.spec.get_or_insert_with(PodSpec::default);
    set_node_affinity(ps, node);
    add_default_tolerations(ps);
    Some(pod)
}

async fn reconcile(ds: Arc<DaemonSet>, st: Arc<State>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = st.ctx.client.clone();
    let ns = ds.namespace().unwrap_or_else(|| "default".into());
    let name = ds.name_any();
    let key = format!("{ns}/{name}");
    let uid = ds
        .metadata
        .uid
        .clone()
        .ok_or(Error::Invalid(key.clone(), "has no uid"))?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let rev_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    // Our last status write (collision count) may not be in the cache yet.
    let Some(ds) = sets
        .get_opt(&name)
        .await?
        .filter(|d| d.metadata.uid.as_deref() == Some(uid.as_str()))
        .map(Arc::new)
    else {
        return Ok(Action::await_change());
    };
    let spec = ds
        .spec
        .clone()
        .ok_or(Error::Invalid(key.clone(), "has no spec"))?;
    let nodes: Vec<Node> = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await?
        .items;
    let lp = ListParams::default().labels(&util::selector_string(&spec.selector));
    let owner = ds
        .controller_owner_ref(&())
        .ok_or(Error::Invalid(key.clone(), "has no owner reference"))?;
    let listed = pods_api.list(&lp).await?.items;
    let pods = util::claim_pods(&pods_api, listed, &owner, false).await?;

    let mut revs = history::list_owned(&rev_api, &uid).await?;
    let rev_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let collision = ds.status.as_ref().and_then(|s| s.collision_count);
    let (rev, collision) = history::ensure(
        &rev_api,
        &mut revs,
        &name,
        &ns,
        owner,
        rev_labels,
        &spec.template,
        collision,
    )
    .await?;
    let rev_name = rev.metadata.name.clone().unwrap_or_default();
    let hash = rev_name
        .strip_prefix(&format!("{name}-"))
        .unwrap_or(&rev_name)
        .to_string();

    let now = Timestamp::now();
    let plan = plan(&ds, &nodes, &pods, &hash, now);
    let mut status = plan.status.clone();
    status.observed_generation = ds.metadata.generation;
    status.collision_count = collision;
    if ds.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({ "status": status });
        sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for (reason, msg) in &plan.warnings {
        util::publish_event(
            &st.recorder,
            ds.as_ref(),
            true,
            reason,
            "Delete",
            msg.clone(),
            None,
        )
        .await;
    }
    for pod_name in &plan.delete {
        match pods_api.delete(pod_name, &DeleteParams::default()).await {
            Ok(_) => {
                util::publish_event(
                    &st.recorder,
                    ds.as_ref(),
                    false,
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted pod: {pod_name}"),
                    Some(util::named_ref("v1", "Pod", &ns, pod_name)),
                )
                .await;
            }
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for node in &plan.create {
        let pod = new_pod(&ds, node, &hash)
            .ok_or(Error::Invalid(key.clone(), "has no owner reference"))?;
        util::create_pod_recorded(&pods_api, &st.recorder, ds.as_ref(), &pod).await?;
    }
    let mut live: HashSet<String> = pods
        .iter()
        .filter_map(|p| {
            p.labels()
                .get(REVISION_LABEL)
                .map(|h| format!("{name}-{h}"))
        })
        .collect();
    live.insert(rev_name);
    history::truncate(
        &rev_api,
        &revs,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && status.number_available.unwrap_or(0) < status.number_ready {
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(min_ready).unwrap_or(1),
        )));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
    };
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodStatus, PodTemplateSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

    fn ds() -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                uid: Some("duid".into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(DaemonSetSpec {
                selector: LabelSelector::default(),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec::default()),
                },
                ..DaemonSetSpec::default()
            }),
            status: None,
        }
    }

    fn node(name: &str, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/hostname".into(),
                    name.into(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    fn pod_on(d: &DaemonSet, n: &str, hash: &str, ready: bool) -> Pod {
        let mut p = new_pod(d, n, hash).expect("pod");
        p.metadata.name = Some(format!("agent-{n}-{hash}"));
        p.metadata.creation_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        p.spec.as_mut().expect("spec").node_name = Some(n.into());
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        p
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds();
        let nodes = vec![
            node("a", vec![]),
            node("b", vec![taint("dedicated", "NoSchedule")]),
            node(
                "c",
                vec![taint("node.kubernetes.io/unschedulable", "NoSchedule")],
            ),
        ];
        let p = plan(&d, &nodes, &[], "h1", Timestamp::now());
        assert_eq!(p.create, vec!["a".to_string(), "c".to_string()]);
        assert_eq!(p.status.desired_number_scheduled, 2);
        let pod = new_pod(&d, "a", "h1").expect("pod");
        assert_eq!(node_of(&pod).as_deref(), Some("a"));
        let tols = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        assert!(
            tols.iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready")
                    && t.effect.as_deref() == Some("NoExecute")
                    && t.toleration_seconds.is_none())
        );
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(
            pod.labels().get(REVISION_LABEL).map(String::as_str),
            Some("h1")
        );
    }

    #[test]
    fn node_selector_and_ineligible_nodes() {
        let mut d = ds();
        if let Some(s) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            s.node_selector = Some(BTreeMap::from([(
                "kubernetes.io/hostname".into(),
                "a".into(),
            )]));
        }
        let nodes = vec![node("a", vec![]), node("b", vec![])];
        let existing = vec![pod_on(&d, "a", "h1", true), pod_on(&d, "b", "h1", true)];
        let p = plan(&d, &nodes, &existing, "h1", Timestamp::now());
        assert!(p.create.is_empty());
        assert_eq!(p.delete, vec!["agent-b-h1".to_string()]);
        assert_eq!(p.status.number_misscheduled, 1);
        assert_eq!(p.status.desired_number_scheduled, 1);
        assert_eq!(p.status.number_ready, 1);
    }

    #[test]
    fn no_execute_taint_evicts_no_schedule_does_not() {
        let d = ds();
        let pods = vec![pod_on(&d, "a", "h1", true), pod_on(&d, "b", "h1", true)];
        let nodes = vec![
            node("a", vec![taint("x", "NoSchedule")]),
            node("b", vec![taint("y", "NoExecute")]),
        ];
        let p = plan(&d, &nodes, &pods, "h1", Timestamp::now());
        assert_eq!(p.delete, vec!["agent-b-h1".to_string()]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn rolling_update_max_unavailable() {
        let d = ds();
        let nodes = vec![node("a", vec![]), node("b", vec![]), node("c", vec![])];
        let pods: Vec<Pod> = ["a", "b", "c"]
            .iter()
            .map(|n| pod_on(&d, n, "h1", true))
            .collect();
        let p = plan(&d, &nodes, &pods, "h2", Timestamp::now());
        assert_eq!(p.delete.len(), 1, "maxUnavailable 1: {:?}", p.delete);
        assert_eq!(p.status.updated_number_scheduled, None);
        // With one node already unavailable (recreating), nothing more is deleted.
        let pods2: Vec<Pod> = vec![pod_on(&d, "b", "h1", true), pod_on(&d, "c", "h1", true)];
        let p = plan(&d, &nodes, &pods2, "h2", Timestamp::now());
        assert_eq!(p.create, vec!["a".to_string()]);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn rolling_update_max_surge() {
        let mut d = ds();
        if let Some(s) = d.spec.as_mut() {
            s.update_strategy = Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            });
        }
        let nodes = vec![node("a", vec![]), node("b", vec![])];
        let pods: Vec<Pod> = ["a", "b"]
            .iter()
            .map(|n| pod_on(&d, n, "h1", true))
            .collect();
        let p = plan(&d, &nodes, &pods, "h2", Timestamp::now());
        assert_eq!(p.create, vec!["a".to_string()]);
        assert!(p.delete.is_empty());
        // New pod on a Ready: the old one goes.
        let mut pods = pods;
        let mut newp = pod_on(&d, "a", "h2", true);
        newp.metadata.creation_timestamp = Some(Time(Timestamp::now()));
        pods.push(newp);
        let p = plan(&d, &nodes, &pods, "h2", Timestamp::now());
        assert_eq!(p.delete, vec!["agent-a-h1".to_string()]);
        assert!(
            p.create.is_empty(),
            "the surge slot is taken: {:?}",
            p.create
        );
    }
}
