//! StatefulSet controller: pods with stable names `<set>-<ordinal>` (hostname, and subdomain
//! from `serviceName`), PVCs `<claim>-<set>-<ordinal>` from `volumeClaimTemplates` created
//! before their pod, OrderedReady (one pod at a time, each after the previous is Running and
//! Ready; scale-down in reverse) or Parallel management, RollingUpdate (highest ordinal first,
//! down to `partition`, one at a time waiting for Ready) or OnDelete, ControllerRevisions and
//! `persistentVolumeClaimRetentionPolicy`.
//!
//! Not done: `maxUnavailable` in rolling updates (alpha upstream), adoption of orphan pods.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::{Ctx, history, util};

/// Label with the pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Label with the name of the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Errors of the StatefulSet controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API failed.
    #[error("statefulset: {0}")]
    Kube(#[from] kube::Error),
    /// The revision history failed.
    #[error("statefulset: {0}")]
    History(#[from] history::Error),
    /// The set lacks something needed.
    #[error("statefulset {0}: {1}")]
    Invalid(String, &'static str),
}

struct State {
    ctx: Ctx,
    recorder: Recorder,
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), crate::Error> {
    let sets = Api::<StatefulSet>::all(ctx.client.clone());
    let pods = Api::<Pod>::all(ctx.client.clone());
    let state = Arc::new(State {
        recorder: ctx.recorder("statefulset-controller"),
        ctx,
    });
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "statefulset reconcile");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_s: Arc<StatefulSet>, err: &Error, _st: Arc<State>) -> Action {
    tracing::debug!(error = %err, "statefulset reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The ordinal in a pod name `<set>-<ordinal>`.
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if rest.starts_with('+') || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok().filter(|o| *o >= 0)
}

/// What the planner needs to know about one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    /// Name.
    pub name: String,
    /// Revision it was made from (its `controller-revision-hash` label).
    pub revision: String,
    /// Phase Running and Ready.
    pub running_ready: bool,
    /// Has a deletion timestamp.
    pub terminating: bool,
    /// Phase Succeeded or Failed.
    pub terminal: bool,
}

impl PodView {
    fn of(p: &Pod) -> Self {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        Self {
            name: p.name_any(),
            revision: p.labels().get(REVISION_LABEL).cloned().unwrap_or_default(),
            running_ready: phase == Some("Running") && util::is_pod_ready(p),
            terminating: p.metadata.deletion_timestamp.is_some(),
            terminal: util::is_pod_terminal(p),
        }
    }
}

/// One step of the plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Create the pod with this ordinal from the update revision (`true`) or the current one.
    Create {
        /// Ordinal.
        ordinal: i32,
        /// From the update revision.
        update: bool,
    },
    /// Delete this pod.
    Delete {
        /// Ordinal.
        ordinal: i32,
        /// Beyond the replicas (scale-down), not a replacement.
        condemned: bool,
        /// Failed or succeeded pod being recreated.
        failed: bool,
    },
}

/// Decide the next steps for a set given its pods by ordinal (pure). In OrderedReady mode at
/// most one step is returned, and none while a pod is not yet Running and Ready.
pub fn plan(set: &StatefulSet, pods: &BTreeMap<i32, PodView>, update_revision: &str) -> Vec<Step> {
    let spec = set.spec.clone().unwrap_or_default();
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let range = start..start + replicas;
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0);
    let mut steps = Vec::new();

    // Failed or succeeded pods are deleted, to be recreated.
    for o in range.clone() {
        if let Some(p) = pods.get(&o)
            && p.terminal
            && !p.terminating
        {
            steps.push(Step::Delete {
                ordinal: o,
                condemned: false,
                failed: true,
            });
            if monotonic {
                return steps;
            }
        }
    }
    // Create what is missing, in order; in OrderedReady wait for each to be Running and Ready.
    let mut all_ready = true;
    for o in range.clone() {
        match pods.get(&o) {
            None => {
                let update = !rolling || o - start >= partition;
                steps.push(Step::Create { ordinal: o, update });
                all_ready = false;
                if monotonic {
                    return steps;
                }
            }
            Some(p) if p.terminating || p.terminal || !p.running_ready => {
                all_ready = false;
                if monotonic {
                    return steps;
                }
            }
            Some(_) => {}
        }
    }
    // Scale down: the highest ordinal first.
    let condemned: Vec<(i32, &PodView)> = pods
        .iter()
        .rev()
        .filter(|(o, _)| !range.contains(o))
        .map(|(o, p)| (*o, p))
        .collect();
    for (o, p) in condemned {
        if p.terminating {
            if monotonic {
                return steps;
            }
            continue;
        }
        if monotonic && !all_ready {
            return steps;
        }
        steps.push(Step::Delete {
            ordinal: o,
            condemned: true,
            failed: false,
        });
        if monotonic {
            return steps;
        }
    }
    if !steps.is_empty() && monotonic {
        return steps;
    }
    // Rolling update: from the highest ordinal down to the partition, one at a time.
    if rolling {
        for o in range.rev() {
            if o - start < partition {
                break;
            }
            let Some(p) = pods.get(&o) else {
                return steps;
            };
            if p.revision != update_revision && !p.terminating {
                steps.push(Step::Delete {
                    ordinal: o,
                    condemned: false,
                    failed: false,
                });
                return steps;
            }
            if !p.running_ready {
                return steps;
            }
        }
    }
    steps
}

/// The set's status from its pods (pure).
pub fn compute_status(
    set: &StatefulSet,
    pods: &[Pod],
    current_revision: &str,
    update_revision: &str,
    collision_count: Option<i32>,
    now: Timestamp,
) -> StatefulSetStatus {
    let spec = set.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count,
        update_revision: Some(update_revision.to_string()),
        current_revision: Some(current_revision.to_string()),
        ..StatefulSetStatus::default()
    };
    let (mut replicas, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
    for p in pods {
        replicas += 1;
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if running && util::is_pod_ready(p) {
            ready += 1;
            if util::is_pod_available(p, min_ready, now) {
                available += 1;
            }
        }
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let rev = p.labels().get(REVISION_LABEL).cloned().unwrap_or_default();
        if rev == current_revision {
            current += 1;
        }
        if rev == update_revision {
            updated += 1;
        }
    }
    st.replicas = replicas;
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(available);
    st.current_replicas = Some(current);
    st.updated_replicas = Some(updated);
    let want = spec.replicas.unwrap_or(1);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        != Some("OnDelete");
    if rolling && updated == want && ready == want && replicas == want {
        st.current_revision = Some(update_revision.to_string());
        st.current_replicas = Some(updated);
    }
    st
}

/// Name of the claim for `template` of the pod with `ordinal`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The pod with `ordinal` from `template` (made from revision `revision`).
pub fn new_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    ordinal: i32,
    revision: &str,
) -> Option<Pod> {
    let name = set.name_any();
    let spec = set.spec.as_ref()?;
    let pod_name = format!("{name}-{ordinal}");
    let mut pod = util::pod_from_template(
        template,
        set.namespace().as_deref().unwrap_or("default"),
        Some(pod_name.clone()),
        None,
        set.controller_owner_ref(&())?,
    );
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_string());
    let ps = pod.spec.get_or_insert_with(Default::default);
    ps.hostname = Some(pod_name);
    if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
        ps.subdomain = spec.service_name.clone();
    }
    for t in spec.volume_claim_templates.iter().flatten() {
        let tname = t.metadata.name.clone().unwrap_or_default();
        let vols = ps.volumes.get_or_insert_with(Vec::new);
        vols.retain(|v| v.name != tname);
        vols.push(Volume {
            name: tname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&tname, &name, ordinal),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    Some(pod)
}

/// The claims of the pod with `ordinal` (from `volumeClaimTemplates`).
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    let name = set.name_any();
    let delete_with_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let mut c = t.clone();
            let tname = t.metadata.name.clone().unwrap_or_default();
            c.metadata.name = Some(claim_name(&tname, &name, ordinal));
            c.metadata.namespace = set.namespace();
            c.metadata.resource_version = None;
            c.metadata.uid = None;
            let labels = c.metadata.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in spec.selector.match_labels.iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            if delete_with_set && let Some(o) = set.controller_owner_ref(&()) {
                c.metadata.owner_references = Some(vec![o]);
            }
            c.status = None;
            c
        })
        .collect()
}

async fn reconcile(set: Arc<StatefulSet>, st: Arc<State>) -> Result<Action, Error> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = st.ctx.client.clone();
    let ns = set.namespace().unwrap_or_else(|| "default".into());
    let name = set.name_any();
    let key = format!("{ns}/{name}");
    let uid = set
        .metadata
        .uid
        .clone()
        .ok_or(Error::Invalid(key.clone(), "has no uid"))?;
    let spec = set
        .spec
        .clone()
        .ok_or(Error::Invalid(key.clone(), "has no spec"))?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let rev_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let sets: Api<StatefulSet> = Api::namespaced(client, &ns);

    let lp = ListParams::default().labels(&util::selector_string(&spec.selector));
    let pods: Vec<Pod> = pods_api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| util::is_controlled_by(&p.metadata, &uid))
        .collect();
    let by_ord: BTreeMap<i32, &Pod> = pods
        .iter()
        .filter_map(|p| Some((ordinal_of(&name, &p.name_any())?, p)))
        .collect();
    let views: BTreeMap<i32, PodView> = by_ord.iter().map(|(o, p)| (*o, PodView::of(p))).collect();

    // Revisions.
    let mut revs = history::list_owned(&rev_api, &uid).await?;
    let owner = set
        .controller_owner_ref(&())
        .ok_or(Error::Invalid(key.clone(), "has no owner reference"))?;
    let rev_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let collision = set.status.as_ref().and_then(|s| s.collision_count);
    let (update_rev, collision) = history::ensure(
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
    let update_name = update_rev.metadata.name.clone().unwrap_or_default();
    let current_rev = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref())
        .and_then(|c| revs.iter().find(|r| r.metadata.name.as_deref() == Some(c)))
        .cloned()
        .unwrap_or_else(|| update_rev.clone());
    let current_name = current_rev.metadata.name.clone().unwrap_or_default();
    let current_template = history::template_of(&current_rev).unwrap_or(spec.template.clone());

    // Status from what is observed now.
    let now = Timestamp::now();
    let status = compute_status(&set, &pods, &current_name, &update_name, collision, now);
    if set.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({ "status": status });
        sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    // Steps.
    for step in plan(&set, &views, &update_name) {
        match step {
            Step::Create { ordinal, update } => {
                let (template, rev) = if update {
                    (&spec.template, &update_name)
                } else {
                    (&current_template, &current_name)
                };
                let pod_name = format!("{name}-{ordinal}");
                for claim in new_claims(&set, ordinal) {
                    let cname = claim.name_any();
                    match pvc_api.get_opt(&cname).await? {
                        Some(_) => {}
                        None => match pvc_api.create(&PostParams::default(), &claim).await {
                            Ok(_) => {
                                util::publish_event(&st.recorder, set.as_ref(), false, "SuccessfulCreate", "Create", format!("create Claim {cname} Pod {pod_name} in StatefulSet {name} success"), Some(util::named_ref("v1", "PersistentVolumeClaim", &ns, &cname))).await;
                            }
                            Err(e) if util::is_conflict(&e) => {}
                            Err(e) => {
                                util::publish_event(&st.recorder, set.as_ref(), true, "FailedCreate", "Create", format!("create Claim {cname} for Pod {pod_name} in StatefulSet {name} failed error: {e}"), None).await;
                                return Err(e.into());
                            }
                        },
                    }
                }
                let pod = new_pod(&set, template, ordinal, rev)
                    .ok_or(Error::Invalid(key.clone(), "has no owner reference"))?;
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(_) => {
                        util::publish_event(
                            &st.recorder,
                            set.as_ref(),
                            false,
                            "SuccessfulCreate",
                            "Create",
                            format!("create Pod {pod_name} in StatefulSet {name} successful"),
                            Some(util::named_ref("v1", "Pod", &ns, &pod_name)),
                        )
                        .await;
                    }
                    Err(e) if util::is_conflict(&e) => {}
                    Err(e) => {
                        util::publish_event(
                            &st.recorder,
                            set.as_ref(),
                            true,
                            "FailedCreate",
                            "Create",
                            format!(
                                "create Pod {pod_name} in StatefulSet {name} failed error: {e}"
                            ),
                            Some(util::named_ref("v1", "Pod", &ns, &pod_name)),
                        )
                        .await;
                        return Err(e.into());
                    }
                }
            }
            Step::Delete {
                ordinal,
                condemned,
                failed,
            } => {
                let Some(pod) = by_ord.get(&ordinal) else {
                    continue;
                };
                let pod_name = pod.name_any();
                if failed {
                    util::publish_event(
                        &st.recorder,
                        set.as_ref(),
                        true,
                        "RecreatingFailedPod",
                        "Recreate",
                        format!("StatefulSet {ns}/{name} is recreating failed Pod {pod_name}"),
                        Some(util::named_ref("v1", "Pod", &ns, &pod_name)),
                    )
                    .await;
                }
                if condemned {
                    release_claims(&pvc_api, &set, ordinal, pod).await?;
                }
                match pods_api.delete(&pod_name, &DeleteParams::default()).await {
                    Ok(_) => {
                        util::publish_event(
                            &st.recorder,
                            set.as_ref(),
                            false,
                            "SuccessfulDelete",
                            "Delete",
                            format!("delete Pod {pod_name} in StatefulSet {name} successful"),
                            Some(util::named_ref("v1", "Pod", &ns, &pod_name)),
                        )
                        .await;
                    }
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    // History: keep the revisions pods use plus `revisionHistoryLimit` others.
    let mut live: HashSet<String> = pods
        .iter()
        .filter_map(|p| p.labels().get(REVISION_LABEL).cloned())
        .collect();
    live.insert(update_name);
    live.insert(current_name);
    history::truncate(
        &rev_api,
        &revs,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    // Pods Ready but not yet available need a look once minReadySeconds pass.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && status.available_replicas < status.ready_replicas {
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(min_ready).unwrap_or(1),
        )));
    }
    Ok(Action::await_change())
}

/// Before a condemned pod goes: claims with `whenScaled: Delete` get the pod as owner, so the
/// garbage collector removes them with it.
async fn release_claims(
    pvc_api: &Api<PersistentVolumeClaim>,
    set: &StatefulSet,
    ordinal: i32,
    pod: &Pod,
) -> Result<(), Error> {
    let scaled_delete = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_scaled.as_deref())
        == Some("Delete");
    let Some(uid) = pod.metadata.uid.clone() else {
        return Ok(());
    };
    if !scaled_delete {
        return Ok(());
    }
    for claim in new_claims(set, ordinal) {
        let Some(existing) = pvc_api.get_opt(&claim.name_any()).await? else {
            continue;
        };
        let mut refs = existing
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        if refs.iter().any(|r| r.uid == uid) {
            continue;
        }
        refs.push(OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.name_any(),
            uid: uid.clone(),
            controller: None,
            block_owner_deletion: None,
        });
        let patch = serde_json::json!({ "metadata": { "ownerReferences": refs } });
        pvc_api
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        RollingUpdateStatefulSetStrategy, StatefulSetSpec, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn set(replicas: i32, parallel: bool) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("suid".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                service_name: Some("nginx".into()),
                pod_management_policy: parallel.then(|| "Parallel".into()),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                    match_expressions: None,
                },
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("www".into()),
                        ..ObjectMeta::default()
                    },
                    ..PersistentVolumeClaim::default()
                }]),
                ..StatefulSetSpec::default()
            }),
            status: None,
        }
    }

    fn ready(name: &str, rev: &str) -> PodView {
        PodView {
            name: name.into(),
            revision: rev.into(),
            running_ready: true,
            ..PodView::default()
        }
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        let s = set(3, false);
        let mut pods = BTreeMap::new();
        assert_eq!(
            plan(&s, &pods, "r1"),
            vec![Step::Create {
                ordinal: 0,
                update: true
            }]
        );
        pods.insert(
            0,
            PodView {
                running_ready: false,
                ..ready("web-0", "r1")
            },
        );
        assert!(
            plan(&s, &pods, "r1").is_empty(),
            "waits for web-0 to be Ready"
        );
        pods.insert(0, ready("web-0", "r1"));
        assert_eq!(
            plan(&s, &pods, "r1"),
            vec![Step::Create {
                ordinal: 1,
                update: true
            }]
        );
        pods.insert(1, ready("web-1", "r1"));
        pods.insert(2, ready("web-2", "r1"));
        assert!(plan(&s, &pods, "r1").is_empty());
    }

    #[test]
    fn parallel_creates_all() {
        let s = set(3, true);
        assert_eq!(plan(&s, &BTreeMap::new(), "r1").len(), 3);
    }

    #[test]
    fn scale_down_in_reverse() {
        let s = set(1, false);
        let pods: BTreeMap<i32, PodView> = (0..3)
            .map(|o| (o, ready(&format!("web-{o}"), "r1")))
            .collect();
        assert_eq!(
            plan(&s, &pods, "r1"),
            vec![Step::Delete {
                ordinal: 2,
                condemned: true,
                failed: false
            }]
        );
        let mut pods = pods;
        if let Some(p) = pods.get_mut(&2) {
            p.terminating = true;
        }
        assert!(plan(&s, &pods, "r1").is_empty(), "waits for web-2 to go");
        pods.remove(&2);
        assert_eq!(
            plan(&s, &pods, "r1"),
            vec![Step::Delete {
                ordinal: 1,
                condemned: true,
                failed: false
            }]
        );
    }

    #[test]
    fn rolling_update_highest_first_respecting_partition() {
        let mut s = set(3, false);
        if let Some(sp) = s.spec.as_mut() {
            sp.update_strategy = Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(1),
                    max_unavailable: None,
                }),
            });
        }
        let mut pods: BTreeMap<i32, PodView> = (0..3)
            .map(|o| (o, ready(&format!("web-{o}"), "r1")))
            .collect();
        assert_eq!(
            plan(&s, &pods, "r2"),
            vec![Step::Delete {
                ordinal: 2,
                condemned: false,
                failed: false
            }]
        );
        pods.insert(2, ready("web-2", "r2"));
        assert_eq!(
            plan(&s, &pods, "r2"),
            vec![Step::Delete {
                ordinal: 1,
                condemned: false,
                failed: false
            }]
        );
        pods.insert(1, ready("web-1", "r2"));
        assert!(
            plan(&s, &pods, "r2").is_empty(),
            "web-0 is below the partition"
        );
        // A missing pod below the partition comes back at the current revision.
        pods.remove(&0);
        assert_eq!(
            plan(&s, &pods, "r2"),
            vec![Step::Create {
                ordinal: 0,
                update: false
            }]
        );
    }

    #[test]
    fn on_delete_never_deletes_for_updates() {
        let mut s = set(2, false);
        if let Some(sp) = s.spec.as_mut() {
            sp.update_strategy = Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            });
        }
        let pods: BTreeMap<i32, PodView> = (0..2)
            .map(|o| (o, ready(&format!("web-{o}"), "r1")))
            .collect();
        assert!(plan(&s, &pods, "r2").is_empty());
    }

    #[test]
    fn failed_pod_is_recreated() {
        let s = set(1, false);
        let pods = BTreeMap::from([(
            0,
            PodView {
                terminal: true,
                ..ready("web-0", "r1")
            },
        )]);
        assert_eq!(
            plan(&s, &pods, "r1"),
            vec![Step::Delete {
                ordinal: 0,
                condemned: false,
                failed: true
            }]
        );
    }

    #[test]
    fn pods_and_claims() {
        let s = set(3, false);
        let tmpl = PodTemplateSpec::default();
        let p = new_pod(&s, &tmpl, 1, "web-abc").expect("pod");
        assert_eq!(p.name_any(), "web-1");
        assert_eq!(
            p.labels().get(POD_NAME_LABEL).map(String::as_str),
            Some("web-1")
        );
        assert_eq!(
            p.labels().get(POD_INDEX_LABEL).map(String::as_str),
            Some("1")
        );
        assert_eq!(
            p.labels().get(REVISION_LABEL).map(String::as_str),
            Some("web-abc")
        );
        let ps = p.spec.as_ref().expect("spec");
        assert_eq!(ps.hostname.as_deref(), Some("web-1"));
        assert_eq!(ps.subdomain.as_deref(), Some("nginx"));
        let vol = ps
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "www")
            .expect("volume");
        assert_eq!(
            vol.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("www-web-1")
        );
        let claims = new_claims(&s, 1);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].name_any(), "www-web-1");
        assert_eq!(
            claims[0].labels().get("app").map(String::as_str),
            Some("web")
        );
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "webx-1"), None);
    }

    #[test]
    fn status_rolls_current_revision_forward() {
        let s = set(1, false);
        let tmpl = PodTemplateSpec::default();
        let mut p = new_pod(&s, &tmpl, 0, "web-r2").expect("pod");
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let st = compute_status(&s, &[p], "web-r1", "web-r2", None, Timestamp::now());
        assert_eq!(st.replicas, 1);
        assert_eq!(st.ready_replicas, Some(1));
        assert_eq!(st.updated_replicas, Some(1));
        assert_eq!(st.current_revision.as_deref(), Some("web-r2"));
        assert_eq!(st.observed_generation, Some(2));
    }
}
