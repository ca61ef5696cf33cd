//! Garbage collector: keeps a graph of `ownerReferences` over every resource the API serves
//! (found through discovery, custom resources included, watched as metadata only) and
//! - deletes dependents whose owners are all gone (Background propagation; a reference to a
//!   uid never seen is verified with a GET first),
//! - for an owner deleted with `propagationPolicy=Foreground` (the API server set the
//!   `foregroundDeletion` finalizer), deletes its dependents and removes the finalizer once no
//!   dependent with `blockOwnerDeletion` is left,
//! - for an owner deleted with `propagationPolicy=Orphan` (`orphan` finalizer), removes the
//!   references to it from its dependents, then the finalizer.

pub mod graph;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error};
use graph::{DependentAction, Graph, Node, OwnerAction, OwnerState};

/// How often discovery is re-read (new CRDs get watchers).
const REDISCOVER: Duration = Duration::from_secs(30);
/// How long a failed item waits before it is retried.
const RETRY: Duration = Duration::from_secs(1);
/// Items handled between two looks at incoming events.
const BATCH: usize = 64;

enum Msg {
    Event(usize, Box<watcher::Event<PartialObjectMeta<DynamicObject>>>),
    Requeue(String),
}

struct Resource {
    ar: ApiResource,
    namespaced: bool,
}

struct Gc {
    client: kube::Client,
    resources: Vec<Resource>,
    by_key: HashMap<String, usize>,
    by_kind: HashMap<(String, String), usize>,
    watchers: HashMap<usize, JoinHandle<()>>,
    graph: Graph,
    absent: HashSet<String>,
    init_seen: HashMap<usize, HashSet<String>>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    tx: mpsc::Sender<Msg>,
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let (tx, mut rx) = mpsc::channel(4096);
    let mut gc = Gc {
        client: ctx.client.clone(),
        resources: Vec::new(),
        by_key: HashMap::new(),
        by_kind: HashMap::new(),
        watchers: HashMap::new(),
        graph: Graph::default(),
        absent: HashSet::new(),
        init_seen: HashMap::new(),
        queue: VecDeque::new(),
        queued: HashSet::new(),
        tx,
    };
    let mut rediscover = tokio::time::interval(REDISCOVER);
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = rediscover.tick() => {
                if let Err(e) = gc.discover().await {
                    tracing::warn!(error = %e, "garbage collector: discovery failed");
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break Ok(()) };
                gc.handle(msg);
                while let Ok(m) = rx.try_recv() {
                    gc.handle(m);
                }
            }
            _ = std::future::ready(()), if !gc.queue.is_empty() => {
                for _ in 0..BATCH {
                    let Some(uid) = gc.queue.pop_front() else { break };
                    gc.queued.remove(&uid);
                    if let Err(e) = gc.process(&uid).await {
                        tracing::debug!(uid, error = %e, "garbage collector: retrying");
                        gc.retry(uid);
                    }
                }
            }
        }
    };
    for (_, w) in gc.watchers.drain() {
        w.abort();
    }
    result
}

fn group_of(api_version: &str) -> &str {
    match api_version.split_once('/') {
        Some((g, _)) => g,
        None => "",
    }
}

impl Gc {
    /// Read discovery and start a metadata watcher for every new resource that can be listed,
    /// watched and deleted (events excepted, as upstream).
    async fn discover(&mut self) -> Result<(), Error> {
        let discovery = Discovery::new(self.client.clone()).run().await?;
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if ar.plural == "events" {
                    continue;
                }
                if !(caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::WATCH)
                    && caps.supports_operation(verbs::DELETE))
                {
                    continue;
                }
                let key = format!("{}/{}/{}", ar.group, ar.version, ar.plural);
                if self.by_key.contains_key(&key) {
                    continue;
                }
                let idx = self.resources.len();
                self.by_key.insert(key, idx);
                self.by_kind
                    .insert((ar.group.clone(), ar.kind.clone()), idx);
                self.resources.push(Resource {
                    ar: ar.clone(),
                    namespaced: caps.scope == Scope::Namespaced,
                });
                let api: Api<PartialObjectMeta<DynamicObject>> =
                    Api::all_with(self.client.clone(), &ar);
                let tx = self.tx.clone();
                let handle = tokio::spawn(async move {
                    let stream =
                        watcher::watcher(api, watcher::Config::default()).default_backoff();
                    futures::pin_mut!(stream);
                    while let Some(ev) = stream.next().await {
                        match ev {
                            Ok(ev) => {
                                if tx.send(Msg::Event(idx, Box::new(ev))).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => tracing::debug!(error = %e, "garbage collector: watch"),
                        }
                    }
                });
                self.watchers.insert(idx, handle);
            }
        }
        Ok(())
    }

    fn enqueue(&mut self, uids: BTreeSet<String>) {
        for uid in uids {
            if self.queued.insert(uid.clone()) {
                self.queue.push_back(uid);
            }
        }
    }

    fn retry(&self, uid: String) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETRY).await;
            let _ = tx.send(Msg::Requeue(uid)).await;
        });
    }

    fn handle(&mut self, msg: Msg) {
        let dirty = match msg {
            Msg::Requeue(uid) => BTreeSet::from([uid]),
            Msg::Event(idx, ev) => match *ev {
                watcher::Event::Init => {
                    self.init_seen.insert(idx, HashSet::new());
                    BTreeSet::new()
                }
                watcher::Event::InitApply(o) => {
                    if let Some(uid) = &o.metadata.uid {
                        self.init_seen.entry(idx).or_default().insert(uid.clone());
                    }
                    self.apply(idx, &o)
                }
                watcher::Event::InitDone => {
                    let seen = self.init_seen.remove(&idx).unwrap_or_default();
                    let mut dirty = BTreeSet::new();
                    for uid in self.graph.uids_of(idx) {
                        if !seen.contains(&uid) {
                            dirty.extend(self.graph.remove(&uid));
                        }
                    }
                    dirty
                }
                watcher::Event::Apply(o) => self.apply(idx, &o),
                watcher::Event::Delete(o) => match &o.metadata.uid {
                    Some(uid) => self.graph.remove(uid),
                    None => BTreeSet::new(),
                },
            },
        };
        self.enqueue(dirty);
    }

    fn apply(&mut self, idx: usize, o: &PartialObjectMeta<DynamicObject>) -> BTreeSet<String> {
        match Node::from_meta(idx, &o.metadata) {
            Some(n) => {
                self.absent.remove(&n.uid);
                self.graph.upsert(n)
            }
            None => BTreeSet::new(),
        }
    }

    fn api(&self, resource: usize, namespace: Option<&str>) -> Option<Api<DynamicObject>> {
        let r = self.resources.get(resource)?;
        Some(match namespace {
            Some(ns) if r.namespaced => Api::namespaced_with(self.client.clone(), ns, &r.ar),
            _ => Api::all_with(self.client.clone(), &r.ar),
        })
    }

    /// Check one object: as an owner being deleted with a GC finalizer, and as a dependent.
    async fn process(&mut self, uid: &str) -> Result<(), Error> {
        let Some(node) = self.graph.get(uid).cloned() else {
            return Ok(());
        };
        if node.orphaning() || node.waiting_for_dependents() {
            let deps: Vec<Node> = self.graph.dependents_of(uid).into_iter().cloned().collect();
            let refs: Vec<&Node> = deps.iter().collect();
            match graph::decide_owner(&node, &refs) {
                OwnerAction::Wait => {}
                OwnerAction::Orphan(_) => {
                    for d in &deps {
                        self.patch_refs(d, std::slice::from_ref(&node.uid), &[])
                            .await?;
                    }
                    self.remove_finalizer(&node, graph::ORPHAN).await?;
                }
                OwnerAction::RemoveFinalizer(f) => self.remove_finalizer(&node, f).await?,
            }
        }
        if node.deleting || node.owners.is_empty() {
            return Ok(());
        }
        let mut states = Vec::with_capacity(node.owners.len());
        for r in &node.owners {
            match self.owner_state(&node, r).await? {
                Some(s) => states.push(s),
                // An owner of a kind the API does not know: leave the dependent alone.
                None => return Ok(()),
            }
        }
        match graph::decide_dependent(&node, &states) {
            DependentAction::Keep => Ok(()),
            DependentAction::Patch { remove, unblock } => {
                self.patch_refs(&node, &remove, &unblock).await
            }
            DependentAction::Delete { foreground } => {
                let Some(api) = self.api(node.resource, node.namespace.as_deref()) else {
                    return Ok(());
                };
                tracing::info!(
                    namespace = node.namespace.as_deref().unwrap_or(""),
                    name = node.name,
                    foreground,
                    "garbage collector: deleting dependent whose owners are gone"
                );
                let dp = DeleteParams {
                    propagation_policy: Some(if foreground {
                        PropagationPolicy::Foreground
                    } else {
                        PropagationPolicy::Background
                    }),
                    preconditions: Some(Preconditions {
                        uid: Some(node.uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&node.name, &dp).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// The state of the owner `r` of `dep`; None when its kind is unknown.
    async fn owner_state(
        &mut self,
        dep: &Node,
        r: &OwnerReference,
    ) -> Result<Option<OwnerState>, Error> {
        if let Some(o) = self.graph.get(&r.uid) {
            return Ok(Some(if o.waiting_for_dependents() {
                OwnerState::Waiting
            } else {
                OwnerState::Present
            }));
        }
        if self.absent.contains(&r.uid) {
            return Ok(Some(OwnerState::Absent));
        }
        let key = (group_of(&r.api_version).to_string(), r.kind.clone());
        let Some(&idx) = self.by_kind.get(&key) else {
            return Ok(None);
        };
        let namespaced = self.resources.get(idx).is_some_and(|x| x.namespaced);
        if namespaced && dep.namespace.is_none() {
            // A cluster-scoped dependent cannot have a namespaced owner.
            return Ok(Some(OwnerState::Absent));
        }
        let Some(api) = self.api(idx, dep.namespace.as_deref()) else {
            return Ok(None);
        };
        match api.get_metadata_opt(&r.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                let waiting = o.metadata.deletion_timestamp.is_some()
                    && o.metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == graph::FOREGROUND);
                Ok(Some(if waiting {
                    OwnerState::Waiting
                } else {
                    OwnerState::Present
                }))
            }
            _ => {
                self.absent.insert(r.uid.clone());
                Ok(Some(OwnerState::Absent))
            }
        }
    }

    async fn patch_refs(
        &self,
        node: &Node,
        remove: &[String],
        unblock: &[String],
    ) -> Result<(), Error> {
        let Some(api) = self.api(node.resource, node.namespace.as_deref()) else {
            return Ok(());
        };
        let Some(fresh) = api.get_metadata_opt(&node.name).await? else {
            return Ok(());
        };
        if fresh.metadata.uid.as_deref() != Some(node.uid.as_str()) {
            return Ok(());
        }
        let refs = fresh.metadata.owner_references.unwrap_or_default();
        let new = graph::patched_owner_refs(&refs, remove, unblock);
        if new == refs {
            return Ok(());
        }
        let value = if new.is_empty() {
            serde_json::Value::Null
        } else {
            json!(new)
        };
        let patch = json!({"metadata": {"ownerReferences": value, "resourceVersion": fresh.metadata.resource_version}});
        api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), Error> {
        let Some(api) = self.api(node.resource, node.namespace.as_deref()) else {
            return Ok(());
        };
        let Some(fresh) = api.get_metadata_opt(&node.name).await? else {
            return Ok(());
        };
        if fresh.metadata.uid.as_deref() != Some(node.uid.as_str()) {
            return Ok(());
        }
        let fins = fresh.metadata.finalizers.unwrap_or_default();
        if !fins.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let rest: Vec<&String> = fins.iter().filter(|f| *f != finalizer).collect();
        let value = if rest.is_empty() {
            serde_json::Value::Null
        } else {
            json!(rest)
        };
        let patch = json!({"metadata": {"finalizers": value, "resourceVersion": fresh.metadata.resource_version}});
        match api
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
