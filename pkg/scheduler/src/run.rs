//! The I/O layer: watches on pods, nodes and namespaces feed the cache and the queue; the loop
//! takes the next pod, runs [`framework::schedule`], binds through `pods/binding` (in a task,
//! with the pod assumed on its node meanwhile) or reports why it fits nowhere.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::Recorder;
use kube::runtime::watcher::{self, Event as WatchEvent};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, occupies_node};
use crate::framework::{self, Cluster};
use crate::queue::{QueuedPod, SchedulingQueue};
use crate::{Error, events};

/// The scheduler name pods must carry to be scheduled here.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Parked pods are retried after this long even without a cluster change (upstream: 5 min).
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(300);
/// Assumed pods whose binding never shows in the watch are dropped after this long.
const ASSUME_TTL: Duration = Duration::from_secs(120);

/// Whether this scheduler should place `pod`: no node yet, our scheduler name, not being
/// deleted, not finished, no scheduling gates.
pub fn needs_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec.scheduler_name.as_deref().unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
}

/// Whether a pending pod's update may change where it fits (anything but status and
/// bookkeeping metadata).
fn scheduling_relevant_change(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

/// What of a node matters for placement.
#[derive(PartialEq)]
struct NodeFingerprint {
    labels: Option<BTreeMap<String, String>>,
    spec: Option<k8s_openapi::api::core::v1::NodeSpec>,
    allocatable: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    conditions: Vec<(String, String)>,
}

impl NodeFingerprint {
    fn of(n: &Node) -> Self {
        let mut spec = n.spec.clone();
        if let Some(s) = spec.as_mut() {
            for t in s.taints.iter_mut().flatten() {
                t.time_added = None;
            }
        }
        Self {
            labels: n.metadata.labels.clone(),
            spec,
            allocatable: n.status.as_ref().and_then(|s| s.allocatable.clone()),
            conditions: n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
        }
    }
}

/// What of a bound pod matters to other pods' placement.
#[derive(PartialEq)]
struct AssignedFingerprint {
    node: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

/// A failed binding is retried after this pause (not at once: a persistent failure must not
/// turn into a busy loop).
const BIND_RETRY: Duration = Duration::from_secs(1);

enum Outcome {
    Bound { uid: String },
    BindFailed { uid: String, entry: QueuedPod },
    Retry { entry: QueuedPod },
}

struct Scheduler {
    client: kube::Client,
    cache: Cache,
    queue: SchedulingQueue,
    /// Latest version of each pod waiting for a node.
    pending: HashMap<String, Arc<Pod>>,
    /// Bound, non-terminal pods' relevant fields.
    assigned: HashMap<String, AssignedFingerprint>,
    nodes: HashMap<String, NodeFingerprint>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    /// One recorder per pod with a FailedScheduling event, with the message it reported: a
    /// repeat of the same message joins the series, a new message starts a new event.
    recorders: HashMap<String, (String, Recorder)>,
    relist_pods: Option<HashSet<String>>,
    relist_nodes: Option<HashSet<String>>,
    relist_namespaces: Option<HashMap<String, BTreeMap<String, String>>>,
    synced: [bool; 3],
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl Scheduler {
    fn parked_pods_need(&mut self, pred: impl Fn(&Pod) -> bool) {
        if self.pending.values().any(|p| pred(p)) {
            self.queue.move_all_to_active();
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(seen) = self.relist_pods.as_mut() {
            seen.insert(uid.clone());
        }
        let pod = Arc::new(pod);
        if needs_scheduling(&pod) {
            if self.cache.is_assumed(&uid) {
                return; // an event older than our binding
            }
            let activate = self
                .pending
                .get(&uid)
                .is_none_or(|old| scheduling_relevant_change(old, &pod));
            self.pending.insert(uid.clone(), pod.clone());
            self.queue.add_or_update(QueuedPod::of(&pod), activate);
            return;
        }
        self.pending.remove(&uid);
        self.queue.remove(&uid);
        self.recorders.remove(&uid);
        self.cache.update_pod(pod.clone());
        let now = occupies_node(&pod).map(|node| AssignedFingerprint {
            node: Some(node.to_string()),
            labels: pod.metadata.labels.clone(),
        });
        let before = match &now {
            Some(fp) => self.assigned.insert(
                uid.clone(),
                AssignedFingerprint {
                    node: fp.node.clone(),
                    labels: fp.labels.clone(),
                },
            ),
            None => self.assigned.remove(&uid),
        };
        match (before, now) {
            // A pod left its node (finished): resources, ports, anti-affinity free up.
            (Some(_), None) => self.queue.move_all_to_active(),
            // A new pod on a node: parked pods with pod affinity or spread constraints may fit.
            (None, Some(_)) => self.parked_pods_need(|p| {
                let spec = p.spec.as_ref();
                spec.and_then(|s| s.affinity.as_ref())
                    .is_some_and(|a| a.pod_affinity.is_some())
                    || spec
                        .and_then(|s| s.topology_spread_constraints.as_ref())
                        .is_some_and(|c| !c.is_empty())
            }),
            (Some(b), Some(n)) if b != n => self.queue.move_all_to_active(),
            _ => {}
        }
    }

    fn on_pod_deleted(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        self.forget_pod(uid);
    }

    fn forget_pod(&mut self, uid: &str) {
        self.pending.remove(uid);
        self.queue.remove(uid);
        self.recorders.remove(uid);
        self.cache.remove_pod(uid);
        if self.assigned.remove(uid).is_some() {
            self.queue.move_all_to_active();
        }
    }

    fn on_pod_event(&mut self, ev: WatchEvent<Pod>) {
        match ev {
            WatchEvent::Apply(p) | WatchEvent::InitApply(p) => self.on_pod(p),
            WatchEvent::Delete(p) => self.on_pod_deleted(&p),
            WatchEvent::Init => self.relist_pods = Some(HashSet::new()),
            WatchEvent::InitDone => {
                if let Some(seen) = self.relist_pods.take() {
                    let gone: Vec<String> = self
                        .pending
                        .keys()
                        .chain(self.assigned.keys())
                        .filter(|u| !seen.contains(*u))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.forget_pod(&uid);
                    }
                }
                self.synced[0] = true;
            }
        }
    }

    fn on_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(seen) = self.relist_nodes.as_mut() {
            seen.insert(name.clone());
        }
        let fp = NodeFingerprint::of(&node);
        let changed = self.nodes.get(&name) != Some(&fp);
        self.cache.set_node(Arc::new(node));
        if changed {
            self.nodes.insert(name, fp);
            self.queue.move_all_to_active();
        }
    }

    fn on_node_event(&mut self, ev: WatchEvent<Node>) {
        match ev {
            WatchEvent::Apply(n) | WatchEvent::InitApply(n) => self.on_node(n),
            WatchEvent::Delete(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                self.nodes.remove(&name);
                self.cache.remove_node(&name);
            }
            WatchEvent::Init => self.relist_nodes = Some(HashSet::new()),
            WatchEvent::InitDone => {
                if let Some(seen) = self.relist_nodes.take() {
                    self.nodes.retain(|n, _| seen.contains(n));
                    self.cache.retain_nodes(&seen);
                }
                self.synced[1] = true;
            }
        }
    }

    fn on_namespace_event(&mut self, ev: WatchEvent<Namespace>) {
        let affinity = |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
        };
        match ev {
            WatchEvent::Apply(ns) | WatchEvent::InitApply(ns) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                let labels = ns.metadata.labels.clone().unwrap_or_default();
                if let Some(seen) = self.relist_namespaces.as_mut() {
                    seen.insert(name.clone(), labels.clone());
                }
                if self.namespaces.get(&name) != Some(&labels) {
                    self.namespaces.insert(name, labels);
                    self.parked_pods_need(affinity);
                }
            }
            WatchEvent::Delete(ns) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                self.namespaces.remove(&name);
            }
            WatchEvent::Init => self.relist_namespaces = Some(HashMap::new()),
            WatchEvent::InitDone => {
                if let Some(seen) = self.relist_namespaces.take() {
                    self.namespaces = seen;
                }
                self.synced[2] = true;
            }
        }
    }

    fn on_outcome(&mut self, out: Outcome) {
        match out {
            Outcome::Bound { uid } => {
                self.recorders.remove(&uid);
            }
            Outcome::BindFailed { uid, entry } => {
                self.cache.forget(&uid);
                let tx = self.outcomes.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(BIND_RETRY).await;
                    let _ = tx.send(Outcome::Retry { entry });
                });
            }
            Outcome::Retry { entry } => {
                if self.pending.contains_key(&entry.uid) && !self.cache.is_assumed(&entry.uid) {
                    self.queue.add_or_update(entry, true);
                }
            }
        }
    }

    /// Take the next pod and either start its binding or report that it fits nowhere.
    fn schedule_one(&mut self) {
        let Some(entry) = self.queue.pop() else {
            return;
        };
        let uid = entry.uid.clone();
        let Some(pod) = self.pending.get(&uid).cloned() else {
            self.queue.done(&uid);
            return;
        };
        let cluster = Cluster {
            nodes: self.cache.nodes(),
            namespaces: &self.namespaces,
        };
        match framework::schedule(&pod, &cluster) {
            Ok(node) => {
                self.cache.assume(&pod, &node);
                self.queue.done(&uid);
                tracing::debug!(pod = %format!("{}/{}", entry.namespace, entry.name), %node, "binding");
                let client = self.client.clone();
                let tx = self.outcomes.clone();
                tokio::spawn(async move {
                    let out = match bind(client, &pod, &node).await {
                        Ok(()) => Outcome::Bound { uid },
                        Err(e) => {
                            tracing::warn!(pod = %format!("{}/{}", entry.namespace, entry.name), %node, error = %e, "binding failed");
                            Outcome::BindFailed { uid, entry }
                        }
                    };
                    let _ = tx.send(out);
                });
            }
            Err(fit) => {
                let message = fit.message();
                tracing::debug!(pod = %format!("{}/{}", entry.namespace, entry.name), %message, "unschedulable");
                self.queue.unschedulable(entry);
                let recorder = match self.recorders.get(&uid) {
                    Some((m, r)) if *m == message => r.clone(),
                    _ => {
                        let r = events::recorder(self.client.clone());
                        self.recorders.insert(uid, (message.clone(), r.clone()));
                        r
                    }
                };
                let client = self.client.clone();
                tokio::spawn(async move {
                    if let Err(e) = report_unschedulable(client, recorder, &pod, &message).await {
                        tracing::warn!(error = %e, "reporting an unschedulable pod");
                    }
                });
            }
        }
    }
}

async fn bind(client: kube::Client, pod: &Pod, node: &str) -> Result<(), Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let _: Value = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await?;
    let ev = events::scheduled(&ns, &name, node);
    if let Err(e) = events::recorder(client)
        .publish(&ev, &pod.object_ref(&()))
        .await
    {
        tracing::warn!(error = %e, "recording the Scheduled event");
    }
    Ok(())
}

async fn report_unschedulable(
    client: kube::Client,
    recorder: Recorder,
    pod: &Pod,
    message: &str,
) -> Result<(), Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    if let Some(patch) = events::unschedulable_condition_patch(pod, message, Timestamp::now()) {
        let api: Api<Pod> = Api::namespaced(client, &ns);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {}
            // Gone or bound meanwhile: nothing to report.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    recorder
        .publish(&events::failed_scheduling(message), &pod.object_ref(&()))
        .await?;
    Ok(())
}

/// Run the scheduler until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) -> Result<(), Error> {
    let cfg = watcher::Config::default();
    let mut pods = watcher::watcher(Api::<Pod>::all(client.clone()), cfg.clone())
        .default_backoff()
        .boxed();
    let mut nodes = watcher::watcher(Api::<Node>::all(client.clone()), cfg.clone())
        .default_backoff()
        .boxed();
    let mut namespaces = watcher::watcher(Api::<Namespace>::all(client.clone()), cfg)
        .default_backoff()
        .boxed();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        client,
        cache: Cache::new(),
        queue: SchedulingQueue::new(),
        pending: HashMap::new(),
        assigned: HashMap::new(),
        nodes: HashMap::new(),
        namespaces: HashMap::new(),
        recorders: HashMap::new(),
        relist_pods: None,
        relist_nodes: None,
        relist_namespaces: None,
        synced: [false; 3],
        outcomes: tx,
    };
    let mut housekeeping = tokio::time::interval(Duration::from_secs(30));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!("scheduler started");
    loop {
        let ready = s.synced.iter().all(|b| *b) && s.queue.has_active();
        let backoff_ends = s.queue.next_backoff();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            Some(ev) = nodes.next() => match ev {
                Ok(ev) => s.on_node_event(ev),
                Err(e) => tracing::warn!(error = %e, "watching nodes"),
            },
            Some(ev) = namespaces.next() => match ev {
                Ok(ev) => s.on_namespace_event(ev),
                Err(e) => tracing::warn!(error = %e, "watching namespaces"),
            },
            Some(ev) = pods.next() => match ev {
                Ok(ev) => s.on_pod_event(ev),
                Err(e) => tracing::warn!(error = %e, "watching pods"),
            },
            Some(out) = rx.recv() => s.on_outcome(out),
            _ = tokio::time::sleep_until(backoff_ends.map_or_else(tokio::time::Instant::now, Into::into)), if backoff_ends.is_some() => {
                s.queue.flush_backoff(std::time::Instant::now());
            }
            _ = housekeeping.tick() => {
                s.queue.flush_older_than(UNSCHEDULABLE_FLUSH);
                s.cache.expire_assumed(ASSUME_TTL);
            }
            _ = std::future::ready(()), if ready => s.schedule_one(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn which_pods_are_ours() {
        let p = pod_with_requests("p", &[]);
        assert!(needs_scheduling(&p));
        let mut other = p.clone();
        other.spec.as_mut().expect("spec").scheduler_name = Some("my-scheduler".into());
        assert!(
            !needs_scheduling(&other),
            "another scheduler's pod is left alone"
        );
        let mut bound = p.clone();
        bound.spec.as_mut().expect("spec").node_name = Some("n1".into());
        assert!(!needs_scheduling(&bound));
        let mut deleting = p.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        assert!(!needs_scheduling(&deleting));
        let mut gated = p.clone();
        gated.spec.as_mut().expect("spec").scheduling_gates =
            Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: "g".into(),
            }]);
        assert!(!needs_scheduling(&gated));
    }

    #[test]
    fn status_only_updates_are_not_relevant() {
        let a = pod_with_requests("p", &[]);
        let mut b = a.clone();
        b.status = Some(Default::default());
        b.metadata.resource_version = Some("9".into());
        assert!(!scheduling_relevant_change(&a, &b));
        b.metadata.labels = Some(labels(&[("x", "y")]));
        assert!(scheduling_relevant_change(&a, &b));
    }
}
