//! Deployment controller: one ReplicaSet per pod template (`<name>-<pod-template-hash>`),
//! RollingUpdate within maxSurge/maxUnavailable, Recreate, revisions and history cleanup,
//! rollback by re-using a ReplicaSet whose template matches, paused, progress deadline,
//! Available/Progressing conditions and ScalingReplicaSet events. The rollout math is in
//! [`logic`] and unit-tested there; this module is the I/O around it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::replicaset::core::{adopt_patch, owner_ref};
use crate::util::emit;
use crate::{Ctx, Error, util};

pub mod logic;

use logic::{Counts, RsView};

struct State {
    ctx: Ctx,
    recorder: Recorder,
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::all(ctx.client.clone());
    // ReplicaSet changes (their status follows their pods) trigger the owning deployment.
    // No pod cache here: availability comes from the ReplicaSets' status like upstream, and
    // Recreate lists the old pods only while it waits for them to go.
    let controller = Controller::new(deployments, watcher::Config::default()).owns(
        Api::<ReplicaSet>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    let state = Arc::new(State {
        recorder: ctx.recorder("deployment-controller"),
        ctx,
    });
    controller
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, state)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "deployment reconcile");
            }
            futures::future::ready(())
        })
        .await;
    Ok(())
}

fn error_policy(_d: Arc<Deployment>, err: &Error, _state: Arc<State>) -> Action {
    tracing::warn!(error = %err, "deployment sync failed");
    util::conflict_backoff(err)
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(logic::REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// One sync of a deployment: everything that follows reads the live objects.
struct Sync<'a> {
    state: &'a State,
    d: Deployment,
    ns: String,
    rs_api: Api<ReplicaSet>,
    d_api: Api<Deployment>,
    /// When this sync started.
    now: Timestamp,
}

impl Sync<'_> {
    fn view(&self, rs: &ReplicaSet) -> RsView {
        let available = rs
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        RsView {
            name: rs.name_any(),
            spec_replicas: spec_replicas(rs),
            // A scale-down already sent takes pods away: never count more than the spec.
            available: available.min(spec_replicas(rs)),
            revision: revision_of(rs),
        }
    }

    /// Set a ReplicaSet's replicas (and the desired/max annotations), with the
    /// ScalingReplicaSet event when the size changes.
    async fn scale(&self, rs: &mut ReplicaSet, to: i32) -> Result<bool, Error> {
        let from = spec_replicas(rs);
        let (surge, _) = logic::fenceposts(&self.d);
        let want = logic::replicas(&self.d);
        let desired = want.to_string();
        let max = (want + surge).to_string();
        let ann = rs.annotations();
        if from == to
            && ann.get(logic::DESIRED_REPLICAS) == Some(&desired)
            && ann.get(logic::MAX_REPLICAS) == Some(&max)
        {
            return Ok(false);
        }
        let patch = json!({
            "metadata": { "annotations": {
                logic::DESIRED_REPLICAS: desired, logic::MAX_REPLICAS: max } },
            "spec": { "replicas": to }
        });
        *rs = self
            .rs_api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        if from != to {
            let dir = if to > from { "up" } else { "down" };
            // A fresh recorder: each scaling message is distinct and must not be folded into
            // the series of an earlier one.
            emit(
                &self.state.ctx.recorder("deployment-controller"),
                &self.d.object_ref(&()),
                None,
                EventType::Normal,
                "ScalingReplicaSet",
                "Scale",
                format!(
                    "Scaled {dir} replica set {} to {to} from {from}",
                    rs.name_any()
                ),
            )
            .await;
        }
        Ok(from != to)
    }

    /// The new ReplicaSet with its revision synced, created when `create` and missing.
    async fn new_rs(
        &mut self,
        existing: Option<ReplicaSet>,
        olds: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, Error> {
        let revisions: Vec<i64> = olds.iter().map(revision_of).collect();
        let new_revision = logic::next_revision(&revisions);
        let rs = if let Some(mut rs) = existing {
            let current = revision_of(&rs);
            let annotations = logic::rs_annotations(
                &self.d,
                if current < new_revision {
                    new_revision
                } else {
                    current
                },
                &rs.annotations().clone(),
            );
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if &annotations != rs.annotations()
                || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0)
            {
                let patch = json!({
                    "metadata": { "annotations": annotations },
                    "spec": { "minReadySeconds": min_ready.unwrap_or(0) }
                });
                rs = self
                    .rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
            }
            let has_progressing = self
                .d
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Progressing"));
            if !has_progressing {
                self.set_condition(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{}\"", rs.name_any()),
                );
            }
            rs
        } else if create {
            match self.create_rs(olds, new_revision).await? {
                Some(rs) => rs,
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        // The deployment carries its new ReplicaSet's revision.
        let rev = revision_of(&rs).to_string();
        if self.d.annotations().get(logic::REVISION) != Some(&rev) {
            let patch = json!({ "metadata": { "annotations": { logic::REVISION: rev } } });
            self.d = self
                .d_api
                .patch(
                    &self.d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Ok(Some(rs))
    }

    async fn create_rs(
        &mut self,
        olds: &[ReplicaSet],
        revision: i64,
    ) -> Result<Option<ReplicaSet>, Error> {
        let dname = self.d.name_any();
        let spec = self.d.spec.clone().unwrap_or_default();
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = logic::pod_template_hash(&spec.template, collision);
        let mut template = logic::template_without_hash(&spec.template);
        let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(logic::HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(logic::HASH_LABEL.into(), hash.clone());
        let name = format!("{dname}-{hash}");
        let views: Vec<RsView> = olds.iter().map(|r| self.view(r)).collect();
        let zero = RsView {
            name: name.clone(),
            ..RsView::default()
        };
        let replicas = logic::new_rs_replicas(&self.d, &zero, &views);
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns.clone()),
                labels: meta.labels.clone(),
                annotations: Some(logic::rs_annotations(&self.d, revision, &BTreeMap::new())),
                owner_references: Some(vec![owner_ref(&self.d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    emit(
                        &self.state.ctx.recorder("deployment-controller"),
                        &self.d.object_ref(&()),
                        None,
                        EventType::Normal,
                        "ScalingReplicaSet",
                        "Scale",
                        format!("Scaled up replica set {name} to {replicas} from 0"),
                    )
                    .await;
                }
                self.set_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                );
                Ok(Some(created))
            }
            Err(e) if is_status(&e, 409) => {
                // Ours with the same template (a stale cache): use it. Otherwise a hash
                // collision: bump collisionCount and try again with a new name.
                let existing = self.rs_api.get(&name).await?;
                let uid = self.d.metadata.uid.clone().unwrap_or_default();
                if util::is_controlled_by(&existing.metadata, &uid)
                    && existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| logic::templates_equal(t, &spec.template))
                {
                    return Ok(Some(existing));
                }
                let count = collision.unwrap_or(0).saturating_add(1);
                let patch = json!({ "status": { "collisionCount": count } });
                self.d_api
                    .patch_status(&dname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok(None)
            }
            Err(e) => {
                let msg = match &e {
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                };
                emit(
                    &self.state.recorder,
                    &self.d.object_ref(&()),
                    None,
                    EventType::Warning,
                    "FailedCreate",
                    "Create",
                    format!("Failed to create new replica set \"{name}\": {msg}"),
                )
                .await;
                self.set_condition(
                    "Progressing",
                    "False",
                    "ReplicaSetCreateError",
                    format!("Failed to create new replica set \"{name}\": {msg}"),
                );
                Err(e.into())
            }
        }
    }

    fn set_condition(&mut self, t: &str, s: &str, reason: &str, msg: String) {
        let status = self.d.status.get_or_insert_with(DeploymentStatus::default);
        logic::set_condition(status, t, s, reason, msg, self.now);
    }

    /// Write status from the ReplicaSets' statuses; when to look again.
    async fn sync_status(
        &mut self,
        new_rs: Option<&ReplicaSet>,
        all: &[ReplicaSet],
    ) -> Result<Option<Duration>, Error> {
        let get =
            |rs: &ReplicaSet,
             f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>| {
                rs.status.as_ref().and_then(f).unwrap_or(0)
            };
        let mut c = Counts::default();
        for rs in all {
            c.replicas += get(rs, |s| Some(s.replicas));
            c.ready += get(rs, |s| s.ready_replicas);
            c.available += get(rs, |s| s.available_replicas);
        }
        if let Some(n) = new_rs {
            c.updated = get(n, |s| Some(s.replicas));
        }
        let (status, again) = logic::compute_status(
            &self.d,
            &c,
            new_rs.map(|r| r.name_any()).as_deref(),
            None,
            self.now,
        );
        let live = self.d_api.get_status(&self.d.name_any()).await?;
        if live.status.as_ref() != Some(&status) {
            let mut value = serde_json::to_value(&status).unwrap_or_default();
            if let Some(m) = value.as_object_mut() {
                for k in [
                    "replicas",
                    "updatedReplicas",
                    "readyReplicas",
                    "availableReplicas",
                    "unavailableReplicas",
                ] {
                    if m.get(k) == Some(&json!(0)) {
                        // Upstream omits zero counts.
                        m.insert(k.into(), serde_json::Value::Null);
                    }
                }
            }
            let patch = json!({ "status": value });
            self.d_api
                .patch_status(
                    &self.d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Ok(again)
    }

    async fn cleanup(&self, olds: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let rows: Vec<(String, i64, i32, i32)> = olds
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .map(|r| {
                (
                    r.name_any(),
                    revision_of(r),
                    spec_replicas(r),
                    r.status.as_ref().map(|s| s.replicas).unwrap_or(0),
                )
            })
            .collect();
        for name in logic::history_to_delete(&rows, limit) {
            match self.rs_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

async fn reconcile(obj: Arc<Deployment>, state: Arc<State>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let d_api: Api<Deployment> = Api::namespaced(state.ctx.client.clone(), &ns);
    let rs_api: Api<ReplicaSet> = Api::namespaced(state.ctx.client.clone(), &ns);
    let Some(d) = d_api.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let selector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    if crate::replicaset::logic::selector_is_empty(&selector) {
        // Upstream refuses to act on an empty selector (it would match every pod).
        return Ok(Action::await_change());
    }
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();
    // ReplicaSets: live list by selector (the rollout must not act on a stale view).
    let listed = rs_api
        .list(&ListParams::default().labels(&util::selector_string(&selector)))
        .await?;
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for rs in listed.items {
        if !util::selector_matches(&selector, &util::labels(&rs.metadata)) {
            continue;
        }
        match util::controller_of(&rs.metadata) {
            Some(r) if r.uid == uid => owned.push(rs),
            None if !deleting && rs.metadata.deletion_timestamp.is_none() => {
                match rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &adopt_patch(&rs.metadata, &owner_ref(&d)),
                    )
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => {
                        tracing::debug!(rs = %rs.name_any(), error = %e, "adopting replica set")
                    }
                }
            }
            _ => {}
        }
    }
    // Oldest first.
    owned.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let template = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let new_idx = owned.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| logic::templates_equal(t, &template))
    });
    let existing_new = new_idx.map(|i| owned[i].clone());
    let mut olds: Vec<ReplicaSet> = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, r)| r.clone())
        .collect();
    let mut s = Sync {
        state: &state,
        d,
        ns,
        rs_api,
        d_api,
        now: Timestamp::now(),
    };
    if deleting {
        let again = s.sync_status(existing_new.as_ref(), &owned).await?;
        return Ok(requeue(again));
    }

    let paused = s.d.spec.as_ref().and_then(|x| x.paused).unwrap_or(false);
    let progressing_reason =
        s.d.status
            .as_ref()
            .and_then(|x| x.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"))
            .and_then(|c| c.reason.clone());
    if paused && progressing_reason.as_deref() != Some("DeploymentPaused") {
        s.set_condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
        );
    } else if !paused && progressing_reason.as_deref() == Some("DeploymentPaused") {
        s.set_condition(
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed".into(),
        );
    }

    let want = logic::replicas(&s.d);
    let scaling_event = owned
        .iter()
        .filter(|r| spec_replicas(r) > 0)
        .any(|r| r.annotations().get(logic::DESIRED_REPLICAS) != Some(&want.to_string()));
    if paused || scaling_event {
        // Only resize (proportionally), no rollout step.
        let mut new_rs = s.new_rs(existing_new, &olds, false).await?;
        scale_proportionally(&s, new_rs.as_mut(), &mut olds).await?;
        if !paused && logic::is_complete(&s.d, &counts(new_rs.as_ref(), &olds)) {
            s.cleanup(&olds).await?;
        }
        let mut all = olds.clone();
        all.extend(new_rs.clone());
        let again = s.sync_status(new_rs.as_ref(), &all).await?;
        return Ok(requeue(again));
    }

    if logic::is_recreate(&s.d) {
        let mut new_rs = s.new_rs(existing_new, &olds, false).await?;
        let mut scaled = false;
        for rs in olds.iter_mut().filter(|r| spec_replicas(r) > 0) {
            scaled |= s.scale(rs, 0).await?;
        }
        let old_uids: Vec<String> = olds.iter().filter_map(|r| r.metadata.uid.clone()).collect();
        // Old pods still there (also terminating ones): wait for them to be gone.
        let old_running = !scaled && {
            let pods: Api<Pod> = Api::namespaced(s.state.ctx.client.clone(), &s.ns);
            pods.list(&ListParams::default().labels(&util::selector_string(&selector)))
                .await?
                .items
                .iter()
                .any(|p| {
                    old_uids
                        .iter()
                        .any(|u| util::is_controlled_by(&p.metadata, u))
                        && !util::is_pod_terminal(p)
                })
        };
        if scaled || old_running {
            let mut all = olds.clone();
            all.extend(new_rs.clone());
            s.sync_status(new_rs.as_ref(), &all).await?;
            // Pod deletions do not trigger this controller: look again soon.
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        if new_rs.is_none() {
            new_rs = s.new_rs(None, &olds, true).await?;
        }
        if let Some(rs) = new_rs.as_mut() {
            s.scale(rs, want).await?;
        }
        if logic::is_complete(&s.d, &counts(new_rs.as_ref(), &olds)) {
            s.cleanup(&olds).await?;
        }
        let mut all = olds.clone();
        all.extend(new_rs.clone());
        let again = s.sync_status(new_rs.as_ref(), &all).await?;
        return Ok(requeue(again));
    }

    // RollingUpdate.
    let Some(mut new_rs) = s.new_rs(existing_new, &olds, true).await? else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let old_views: Vec<RsView> = olds.iter().map(|r| s.view(r)).collect();
    let new_view = s.view(&new_rs);
    let mut all = olds.clone();
    let target = if new_view.spec_replicas > want {
        want
    } else {
        logic::new_rs_replicas(&s.d, &new_view, &old_views)
    };
    if target != new_view.spec_replicas {
        s.scale(&mut new_rs, target).await?;
        all.push(new_rs.clone());
        let again = s.sync_status(Some(&new_rs), &all).await?;
        return Ok(requeue_within(again, Duration::from_secs(30)));
    }
    let sizes = logic::scale_down_old(&s.d, &new_view, &old_views);
    let mut scaled = false;
    for (rs, size) in olds.iter_mut().zip(sizes) {
        if size != spec_replicas(rs) {
            scaled |= s.scale(rs, size).await?;
        }
    }
    let mut all = olds.clone();
    all.push(new_rs.clone());
    if !scaled && logic::is_complete(&s.d, &counts(Some(&new_rs), &olds)) {
        s.cleanup(&olds).await?;
    }
    let again = s.sync_status(Some(&new_rs), &all).await?;
    Ok(requeue_within(again, Duration::from_secs(30)))
}

/// Rollouts in flight are looked at again at least every `most` (pods becoming available
/// trigger a sync anyway through the ReplicaSets' status).
fn requeue_within(again: Option<Duration>, most: Duration) -> Action {
    Action::requeue(again.unwrap_or(most).min(most))
}

fn requeue(again: Option<Duration>) -> Action {
    Action::requeue(again.unwrap_or(Duration::from_secs(300)))
}

fn counts(new_rs: Option<&ReplicaSet>, olds: &[ReplicaSet]) -> Counts {
    let mut c = Counts::default();
    for rs in olds.iter().chain(new_rs) {
        let st = rs.status.clone().unwrap_or_default();
        c.replicas += st.replicas;
        c.ready += st.ready_replicas.unwrap_or(0);
        c.available += st.available_replicas.unwrap_or(0);
    }
    c.updated = new_rs
        .and_then(|r| r.status.as_ref())
        .map(|s| s.replicas)
        .unwrap_or(0);
    c
}

/// Resize the active ReplicaSets to the deployment's size: one active (or the newest) takes
/// it all; several share the change in proportion (upstream's `scale`).
async fn scale_proportionally(
    s: &Sync<'_>,
    new_rs: Option<&mut ReplicaSet>,
    olds: &mut [ReplicaSet],
) -> Result<(), Error> {
    let want = logic::replicas(&s.d);
    let mut all: Vec<&mut ReplicaSet> = Vec::new();
    if let Some(n) = new_rs {
        all.push(n);
    }
    let mut olds_sorted: Vec<&mut ReplicaSet> = olds.iter_mut().collect();
    // Newest first.
    olds_sorted.reverse();
    all.extend(olds_sorted);
    let active: Vec<usize> = (0..all.len())
        .filter(|i| spec_replicas(all[*i]) > 0)
        .collect();
    if active.len() <= 1 {
        let idx = active
            .first()
            .copied()
            .or(if all.is_empty() { None } else { Some(0) });
        if let Some(i) = idx {
            let rs = &mut *all[i];
            s.scale(rs, want).await?;
        }
        return Ok(());
    }
    let (surge, _) = logic::fenceposts(&s.d);
    let allowed = if logic::is_recreate(&s.d) {
        want
    } else {
        want + surge
    };
    let sizes: Vec<i32> = active.iter().map(|i| spec_replicas(all[*i])).collect();
    let new_sizes = logic::proportional(&sizes, allowed);
    for (k, i) in active.iter().enumerate() {
        let rs = &mut *all[*i];
        s.scale(rs, new_sizes[k]).await?;
    }
    Ok(())
}
