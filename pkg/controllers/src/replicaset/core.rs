//! The replica controller both ReplicaSet and ReplicationController use: one reconcile, generic
//! over [`ReplicaOwner`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::logic::{self, ReplicaStatus};
use crate::{Ctx, Error, util};

/// How long an expected creation/deletion may stay unobserved before it is forgotten
/// (upstream's ExpectationsTimeout).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What the replica controller needs of the object it runs: ReplicaSet or
/// ReplicationController.
pub trait ReplicaOwner:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The component reporting events (`replicaset-controller`).
    const COMPONENT: &'static str;
    /// Desired replicas (`spec.replicas`, default 1).
    fn desired_replicas(&self) -> i32;
    /// The selector (a ReplicationController's map becomes `matchLabels`; an empty one defaults
    /// to the template's labels).
    fn label_selector(&self) -> Option<LabelSelector>;
    /// The pod template.
    fn pod_template(&self) -> Option<&PodTemplateSpec>;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
}

/// Creations and deletions sent but not yet seen in the pod store, per controller (by
/// namespace/name): the controller does not act again until they show up, so it never
/// double-creates while watch events lag.
#[derive(Default)]
struct Expectations {
    adds: HashMap<String, (HashSet<String>, Instant)>,
    dels: HashMap<String, (HashSet<String>, Instant)>,
}

impl Expectations {
    /// Drop what the store already shows; whether nothing is pending any more.
    fn satisfied(&mut self, key: &str, store: &Store<Pod>, ns: &str) -> bool {
        let now = Instant::now();
        if let Some((names, since)) = self.adds.get_mut(key) {
            names.retain(|n| store.get(&ObjectRef::new(n).within(ns)).is_none());
            if names.is_empty() || now.duration_since(*since) > EXPECTATIONS_TIMEOUT {
                self.adds.remove(key);
            }
        }
        if let Some((uids, since)) = self.dels.get_mut(key) {
            uids.retain(|entry| {
                // entry is "name/uid": still expected while that pod exists undeleted.
                let (name, uid) = entry.split_once('/').unwrap_or((entry, ""));
                store
                    .get(&ObjectRef::new(name).within(ns))
                    .is_some_and(|p| {
                        p.metadata.uid.as_deref() == Some(uid)
                            && p.metadata.deletion_timestamp.is_none()
                    })
            });
            if uids.is_empty() || now.duration_since(*since) > EXPECTATIONS_TIMEOUT {
                self.dels.remove(key);
            }
        }
        !self.adds.contains_key(key) && !self.dels.contains_key(key)
    }

    fn expect_add(&mut self, key: &str, name: String) {
        let e = self
            .adds
            .entry(key.to_string())
            .or_insert_with(|| (HashSet::new(), Instant::now()));
        e.0.insert(name);
        e.1 = Instant::now();
    }

    fn expect_del(&mut self, key: &str, name: &str, uid: &str) {
        let e = self
            .dels
            .entry(key.to_string())
            .or_insert_with(|| (HashSet::new(), Instant::now()));
        e.0.insert(format!("{name}/{uid}"));
        e.1 = Instant::now();
    }

    fn forget(&mut self, key: &str) {
        self.adds.remove(key);
        self.dels.remove(key);
    }
}

struct State {
    ctx: Ctx,
    pods: Store<Pod>,
    recorder: Recorder,
    expectations: Mutex<Expectations>,
}

/// Run the replica controller for `K` until `shutdown`.
pub async fn run<K: ReplicaOwner>(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let owners: Api<K> = Api::all(ctx.client.clone());
    let pods_api: Api<Pod> = Api::all(ctx.client.clone());
    let (pod_store, writer) = reflector::store::<Pod>();
    // The reflector updates the store before the controller sees the event, so a reconcile
    // triggered by a pod always sees that pod.
    let pod_events = watcher(pods_api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(owners, watcher::Config::default());
    let owner_store = controller.store();
    let kind = K::kind(&()).to_string();
    let api_version = K::api_version(&()).to_string();
    let controller = controller.watches_stream(pod_events, move |pod: Pod| {
        map_pod::<K>(&pod, &owner_store, &kind, &api_version)
    });
    let state = Arc::new(State {
        recorder: ctx.recorder(K::COMPONENT),
        ctx,
        pods: pod_store,
        expectations: Mutex::new(Expectations::default()),
    });
    controller
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile::<K>, error_policy::<K>, state)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "replica reconcile");
            }
            futures::future::ready(())
        })
        .await;
    Ok(())
}

/// Which controllers a pod change concerns: its controller if it is one of ours, else (an
/// orphan) every controller in its namespace whose selector matches it.
fn map_pod<K: ReplicaOwner>(
    pod: &Pod,
    owners: &Store<K>,
    kind: &str,
    api_version: &str,
) -> Vec<ObjectRef<K>> {
    let ns = pod.namespace().unwrap_or_default();
    match util::controller_of(&pod.metadata) {
        Some(r) => {
            if r.kind == kind && r.api_version == api_version {
                vec![ObjectRef::new(&r.name).within(&ns)]
            } else {
                Vec::new()
            }
        }
        None => {
            let labels = util::labels(&pod.metadata);
            owners
                .state()
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
                .filter(|o| {
                    o.label_selector().is_some_and(|s| {
                        !logic::selector_is_empty(&s) && util::selector_matches(&s, &labels)
                    })
                })
                .map(|o| ObjectRef::from_obj(o.as_ref()))
                .collect()
        }
    }
}

fn error_policy<K: ReplicaOwner>(_obj: Arc<K>, err: &Error, _state: Arc<State>) -> Action {
    tracing::warn!(kind = %K::kind(&()), error = %err, "replica sync failed");
    util::conflict_backoff(err)
}

/// The controller owner reference an object of kind `K` puts on what it creates.
pub fn owner_ref<K: Resource<DynamicType = ()>>(obj: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: obj.meta().name.clone().unwrap_or_default(),
        uid: obj.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Adopt `meta` (a pod or ReplicaSet) by `owner` with a strategic merge patch carrying a uid
/// precondition, like upstream.
pub fn adopt_patch(meta: &ObjectMeta, owner: &OwnerReference) -> Patch<serde_json::Value> {
    Patch::Strategic(json!({
        "metadata": { "ownerReferences": [owner], "uid": meta.uid }
    }))
}

/// Release `meta` from the owner with `owner_uid`.
pub fn release_patch(meta: &ObjectMeta, owner_uid: &str) -> Patch<serde_json::Value> {
    Patch::Strategic(json!({
        "metadata": { "ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": meta.uid }
    }))
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

async fn reconcile<K: ReplicaOwner>(obj: Arc<K>, state: Arc<State>) -> Result<Action, Error> {
    if tokio::time::timeout(Duration::from_secs(10), state.pods.wait_until_ready())
        .await
        .is_err()
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = format!("{ns}/{name}");
    let client = state.ctx.client.clone();
    let owners: Api<K> = Api::namespaced(client.clone(), &ns);
    // The controller's store may be older than the API: act on the live object.
    let obj = match owners.get_opt(&name).await? {
        Some(o) => o,
        None => {
            state.expectations.lock().map(|mut e| e.forget(&key)).ok();
            return Ok(Action::await_change());
        }
    };
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let reference = obj.object_ref(&());
    let deleting = obj.meta().deletion_timestamp.is_some();
    let selector = obj.label_selector();
    let all_pods = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .collect::<Vec<_>>();
    let claim = logic::claim_pods(
        &uid,
        selector.as_ref(),
        deleting,
        all_pods.iter().map(|p| p.as_ref()),
    );
    let oref = owner_ref(&obj);
    let mut owned: Vec<Pod> = claim.owned.iter().map(|p| (*p).clone()).collect();
    // Like upstream's ClaimPods: a failed adoption or release (other than the pod being gone)
    // fails the whole sync. Going on would count an orphan that is still there as missing and
    // create a pod too many.
    let mut claim_error = None;
    for p in &claim.adopt {
        match pods_api
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &adopt_patch(&p.metadata, &oref),
            )
            .await
        {
            Ok(adopted) => owned.push(adopted),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::info!(pod = %p.name_any(), error = %e, "adopting pod");
                claim_error = Some(e);
            }
        }
    }
    for p in &claim.release {
        if let Err(e) = pods_api
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &release_patch(&p.metadata, &uid),
            )
            .await
            && !is_not_found(&e)
        {
            tracing::info!(pod = %p.name_any(), error = %e, "releasing pod");
            claim_error = Some(e);
        }
    }
    if let Some(e) = claim_error {
        return Err(e.into());
    }

    let satisfied = state
        .expectations
        .lock()
        .map(|mut e| e.satisfied(&key, &state.pods, &ns))
        .unwrap_or(true);
    let mut failure: Option<(&str, String)> = None;
    let now = Timestamp::now();
    if satisfied && !deleting {
        let desired = usize::try_from(obj.desired_replicas().max(0)).unwrap_or(0);
        let have = owned.len();
        if have < desired {
            let want = (desired - have).min(logic::BURST_REPLICAS);
            let template = obj.pod_template().cloned().unwrap_or_default();
            let mut created = 0usize;
            'batches: for batch in logic::slow_start_batches(want) {
                let mut futs = Vec::new();
                for _ in 0..batch {
                    let pod = util::pod_from_template(
                        &template,
                        &ns,
                        None,
                        Some(format!("{name}-")),
                        oref.clone(),
                    );
                    let api = pods_api.clone();
                    futs.push(async move { api.create(&PostParams::default(), &pod).await });
                }
                let results = futures::future::join_all(futs).await;
                let mut failed = false;
                for r in results {
                    match r {
                        Ok(pod) => {
                            created += 1;
                            let pname = pod.name_any();
                            if let Ok(mut e) = state.expectations.lock() {
                                e.expect_add(&key, pname.clone());
                            }
                            util::emit(
                                &state.recorder,
                                &reference,
                                Some(pod.object_ref(&())),
                                EventType::Normal,
                                "SuccessfulCreate",
                                "Create",
                                format!("Created pod: {pname}"),
                            )
                            .await;
                        }
                        Err(e) => {
                            failed = true;
                            let msg = match &e {
                                kube::Error::Api(s) => s.message.clone(),
                                other => other.to_string(),
                            };
                            util::emit(
                                &state.recorder,
                                &reference,
                                None,
                                EventType::Warning,
                                "FailedCreate",
                                "Create",
                                format!("Error creating: {msg}"),
                            )
                            .await;
                            failure = Some(("FailedCreate", msg));
                        }
                    }
                }
                if failed {
                    // Like upstream: stop, the remaining batches are skipped this round.
                    break 'batches;
                }
            }
            tracing::debug!(%key, created, want, "created pods");
        } else if have > desired {
            let count = (have - desired).min(logic::BURST_REPLICAS);
            let refs: Vec<&Pod> = owned.iter().collect();
            let victims: Vec<Pod> = logic::pods_to_delete(&refs, count, now)
                .into_iter()
                .cloned()
                .collect();
            if let Ok(mut e) = state.expectations.lock() {
                for v in &victims {
                    e.expect_del(&key, &v.name_any(), v.metadata.uid.as_deref().unwrap_or(""));
                }
            }
            let futs = victims.iter().map(|v| {
                let api = pods_api.clone();
                let pname = v.name_any();
                let pref = v.object_ref(&());
                async move {
                    (
                        pname.clone(),
                        pref,
                        api.delete(&pname, &DeleteParams::default()).await,
                    )
                }
            });
            for (pname, pref, r) in futures::future::join_all(futs).await {
                match r {
                    Ok(_) => {
                        util::emit(
                            &state.recorder,
                            &reference,
                            Some(pref),
                            EventType::Normal,
                            "SuccessfulDelete",
                            "Delete",
                            format!("Deleted pod: {pname}"),
                        )
                        .await
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        let msg = match &e {
                            kube::Error::Api(s) => s.message.clone(),
                            other => other.to_string(),
                        };
                        util::emit(
                            &state.recorder,
                            &reference,
                            Some(pref),
                            EventType::Warning,
                            "FailedDelete",
                            "Delete",
                            format!("Error deleting: {msg}"),
                        )
                        .await;
                        failure = Some(("FailedDelete", msg));
                    }
                }
            }
        }
    }

    // Status from what the store shows now (creations/deletions just sent count when seen).
    let refs: Vec<&Pod> = owned.iter().collect();
    let template_labels: BTreeMap<String, String> = obj
        .pod_template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let previous: ReplicaStatus = serde_json::to_value(&obj)
        .ok()
        .and_then(|v| v.get("status").cloned())
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    // Keep the failure condition while expectations are pending and nothing was tried.
    let failure = failure.or_else(|| {
        if satisfied {
            None
        } else {
            previous
                .conditions
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                .map(|c| ("FailedCreate", c.message.clone().unwrap_or_default()))
        }
    });
    let status = logic::compute_status(
        &refs,
        &template_labels,
        obj.min_ready_seconds(),
        obj.meta().generation,
        &previous,
        failure,
        now,
    );
    if status != previous {
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        if status.conditions.is_empty()
            && let Some(m) = value.as_object_mut()
        {
            // A merge patch removes the list with null.
            m.insert("conditions".into(), serde_json::Value::Null);
        }
        let patch = json!({ "status": value });
        match owners
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    let next = logic::next_available_in(&refs, obj.min_ready_seconds(), now)
        .unwrap_or(Duration::from_secs(300))
        .min(if satisfied {
            Duration::from_secs(300)
        } else {
            Duration::from_secs(2)
        });
    Ok(Action::requeue(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event as WEvent;

    fn pod(name: &str, uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some(uid.into());
        p
    }

    /// Creations and deletions sent but not yet in the store hold the controller back until
    /// the store shows them: a lagging watch never causes a double create.
    #[test]
    fn expectations_wait_for_the_store() {
        let (store, mut writer) = reflector::store::<Pod>();
        writer.apply_watcher_event(&WEvent::Init);
        writer.apply_watcher_event(&WEvent::InitApply(pod("old", "u-old")));
        writer.apply_watcher_event(&WEvent::InitDone);
        let mut e = Expectations::default();
        assert!(e.satisfied("ns/rs", &store, "ns"));

        e.expect_add("ns/rs", "new-1".into());
        e.expect_del("ns/rs", "old", "u-old");
        assert!(!e.satisfied("ns/rs", &store, "ns"), "nothing observed yet");
        // The creation shows up; the deletion not yet.
        writer.apply_watcher_event(&WEvent::Apply(pod("new-1", "u-new")));
        assert!(
            !e.satisfied("ns/rs", &store, "ns"),
            "deletion still pending"
        );
        // The pod being deleted (deletionTimestamp set) counts as observed.
        let mut deleting = pod("old", "u-old");
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        writer.apply_watcher_event(&WEvent::Apply(deleting));
        assert!(e.satisfied("ns/rs", &store, "ns"));
        // Other controllers are independent; forgetting clears.
        e.expect_add("ns/other", "x".into());
        assert!(e.satisfied("ns/rs", &store, "ns"));
        assert!(!e.satisfied("ns/other", &store, "ns"));
        e.forget("ns/other");
        assert!(e.satisfied("ns/other", &store, "ns"));
    }
}
