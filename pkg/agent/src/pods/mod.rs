//! Pods bound to this node: a watch on `spec.nodeName=<node>` feeds one worker task per pod
//! (keyed by UID). Workers report through [`PodApi`] (status, final delete, events), which the
//! agent implements over `kube::Client` and unit tests implement by recording.

mod cgroups;
pub mod env;
pub mod service_env;
pub mod spec;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodStatus};
use k8slite_runtime::ContainerRuntime;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{AgentConfig, Error, Result};
pub use worker::{Next, Worker};

/// Pod worker settings.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// How often a worker looks at its containers (the kubelet's PLEG relists every 1 s).
    pub sync_period: Duration,
    /// How often it looks when the runtime reports container events (evented PLEG): a safety
    /// net only, changes arrive as events.
    pub evented_relist_period: Duration,
    /// First CrashLoopBackOff delay (upstream: 10 s).
    pub backoff_initial: Duration,
    /// Maximum CrashLoopBackOff delay (upstream: 5 min).
    pub backoff_max: Duration,
    /// Scheme of container IDs in pod status (`fake`, `containerd`).
    pub runtime_scheme: String,
    /// What the node contributes to pod configurations (DNS, log and state dirs, cgroups).
    pub node: spec::NodeContext,
    /// How often mounted configMaps, secrets and tokens are refreshed (upstream: about 1 min).
    pub volume_refresh_period: Duration,
}

impl Default for PodConfig {
    fn default() -> Self {
        Self {
            sync_period: Duration::from_secs(1),
            evented_relist_period: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            runtime_scheme: "fake".into(),
            node: spec::NodeContext::default(),
            volume_refresh_period: Duration::from_secs(10),
        }
    }
}

/// An event about a pod, as the kubelet records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// Reason (`Pulled`, `Created`, `Started`, `Killing`, `BackOff`, `Unhealthy`, …).
    pub reason: String,
    /// Message.
    pub message: String,
    /// `spec.containers{name}` for container events.
    pub field_path: Option<String>,
}

/// What pod workers do to the API.
#[async_trait::async_trait]
pub trait PodApi: Send + Sync + 'static {
    /// Write `status` to the pod's status subresource; returns the new resourceVersion.
    async fn patch_status(&self, pod: &Pod, status: &PodStatus) -> Result<Option<u64>>;
    /// Delete the pod for good (grace period 0, precondition on its UID) once its containers
    /// are stopped.
    async fn delete_terminated(&self, pod: &Pod) -> Result<()>;
    /// Record an event about the pod (failures are logged, not returned).
    async fn event(&self, pod: &Pod, event: PodEvent);
}

/// Volumes of pods: set up before the sandbox, mounted into containers, refreshed while the
/// pod runs, torn down after the sandbox is removed. Errors are the `FailedMount` messages.
#[async_trait::async_trait]
pub trait VolumeHooks: Send + Sync + 'static {
    /// Set up every volume of `pod`.
    async fn setup(&self, pod: &Pod) -> std::result::Result<(), String>;
    /// The mounts of container `c` (after [`VolumeHooks::setup`]).
    fn mounts_for(
        &self,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
        env: &std::collections::BTreeMap<String, String>,
    ) -> std::result::Result<Vec<k8slite_runtime::Mount>, String>;
    /// Rewrite changed configMap/secret/projected contents, renew tokens.
    async fn refresh(&self, pod: &Pod);
    /// Remove the pod's volumes.
    async fn teardown(&self, pod: &Pod);
}

/// [`PodApi`] over a `kube::Client`, events through `kube::runtime::events::Recorder`.
pub struct KubePodApi {
    client: kube::Client,
    recorder: Recorder,
}

impl KubePodApi {
    /// For the agent of `node_name`.
    pub fn new(client: kube::Client, node_name: &str) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "kubelet".into(),
                instance: Some(node_name.to_string()),
            },
        );
        Self { client, recorder }
    }

    fn api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

#[async_trait::async_trait]
impl PodApi for KubePodApi {
    async fn patch_status(&self, pod: &Pod, status: &PodStatus) -> Result<Option<u64>> {
        let body = serde_json::json!({ "status": status });
        let api = self.api(pod);
        let n = name(pod);
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&body));
        let p = crate::retry_conflict(|| api.patch_status(&n, &pp, &patch))
            .await
            .map_err(Error::kube(format!(
                "updating the status of pod {}",
                name(pod)
            )))?;
        Ok(p.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok()))
    }

    async fn delete_terminated(&self, pod: &Pod) -> Result<()> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api(pod).delete(&name(pod), &dp).await {
            Ok(_) => Ok(()),
            // Already gone, or a new pod of the same name: nothing of ours to delete.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(Error::kube(format!("deleting pod {}", name(pod)))(e)),
        }
    }

    async fn event(&self, pod: &Pod, event: PodEvent) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            field_path: event.field_path.clone(),
            ..ObjectReference::default()
        };
        let ev = KubeEvent {
            type_: if event.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event.reason.clone(),
            note: Some(event.message.clone()),
            action: event.reason.clone(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::debug!(reason = %event.reason, "recording event: {e}");
        }
    }
}

/// ConfigMaps, secrets and Services read with the agent's client.
pub struct KubeObjects {
    client: kube::Client,
}

impl KubeObjects {
    /// Over `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl env::Objects for KubeObjects {
    async fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> std::result::Result<Option<k8s_openapi::api::core::v1::ConfigMap>, String> {
        Api::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| format!("getting configmap {ns}/{name}: {e}"))
    }

    async fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> std::result::Result<Option<k8s_openapi::api::core::v1::Secret>, String> {
        Api::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| format!("getting secret {ns}/{name}: {e}"))
    }

    async fn services(
        &self,
        ns: &str,
    ) -> std::result::Result<Vec<k8s_openapi::api::core::v1::Service>, String> {
        Api::namespaced(self.client.clone(), ns)
            .list(&kube::api::ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| format!("listing services in {ns}: {e}"))
    }
}

/// A [`PodApi`] that records what workers do (for tests).
#[derive(Debug, Default)]
pub struct RecordingPodApi {
    /// Statuses written, in order.
    pub statuses: Mutex<Vec<PodStatus>>,
    /// UIDs of pods deleted for good.
    pub deleted: Mutex<Vec<String>>,
    /// Events recorded.
    pub events: Mutex<Vec<PodEvent>>,
    rv: std::sync::atomic::AtomicU64,
}

impl RecordingPodApi {
    /// The last status written.
    pub fn last_status(&self) -> Option<PodStatus> {
        self.statuses.lock().ok().and_then(|s| s.last().cloned())
    }

    /// Reasons of the events recorded, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.events
            .lock()
            .map(|e| e.iter().map(|e| e.reason.clone()).collect())
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl PodApi for RecordingPodApi {
    async fn patch_status(&self, _pod: &Pod, status: &PodStatus) -> Result<Option<u64>> {
        if let Ok(mut s) = self.statuses.lock() {
            s.push(status.clone());
        }
        Ok(Some(
            self.rv.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1,
        ))
    }

    async fn delete_terminated(&self, pod: &Pod) -> Result<()> {
        if let Ok(mut d) = self.deleted.lock() {
            d.push(pod.metadata.uid.clone().unwrap_or_default());
        }
        Ok(())
    }

    async fn event(&self, _pod: &Pod, event: PodEvent) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event);
        }
    }
}

/// Image → when its last pull failed (the registry unreachable); shared by a node's workers.
pub type PullFailures = Arc<Mutex<HashMap<String, std::time::Instant>>>;

/// Sandbox id → the waker of the worker that owns it (container events wake it).
pub type Wakers = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// Drive one worker: sync on every pod change, on container events of its sandbox, and when
/// the worker asks to look again.
pub async fn run_worker(
    mut w: Worker,
    mut rx: watch::Receiver<Option<Pod>>,
    wakers: Wakers,
    shutdown: CancellationToken,
) {
    let wake = Arc::new(Notify::new());
    w.set_waker(wakers, wake.clone());
    let mut last: Option<Pod> = None;
    loop {
        let pod = rx.borrow_and_update().clone();
        let next = match &pod {
            Some(p) => {
                last = Some(p.clone());
                w.sync(p).await
            }
            None => {
                w.kill(last.as_ref()).await;
                Next::Done
            }
        };
        let wait = match next {
            Next::Done => return,
            Next::After(d) => d,
            Next::Idle => Duration::from_secs(3600),
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = rx.changed() => {
                if r.is_err() {
                    w.kill(last.as_ref()).await;
                    return;
                }
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// Remove sandboxes of pods that no longer exist here (deleted while the agent was down).
async fn remove_orphans(
    runtime: &dyn ContainerRuntime,
    seen: &HashSet<String>,
    node: &spec::NodeContext,
) {
    let Ok(sandboxes) = runtime.list_pod_sandboxes().await else {
        return;
    };
    for s in sandboxes {
        if seen.contains(&s.metadata.uid) {
            continue;
        }
        tracing::info!(sandbox = %s.id, pod = %format!("{}/{}", s.metadata.namespace, s.metadata.name), "removing the sandbox of a pod that is gone");
        if let Err(e) = runtime.stop_pod_sandbox(&s.id).await {
            tracing::warn!("stopping an orphaned sandbox: {e}");
        }
        if let Err(e) = runtime.remove_pod_sandbox(&s.id).await {
            tracing::warn!("removing an orphaned sandbox: {e}");
        }
        if !node.cgroup_root.is_empty() {
            cgroups::remove(&format!("{}/pod{}", node.cgroup_root, s.metadata.uid));
        }
    }
}

/// Watch the pods bound to this node and run a worker for each until `shutdown`.
pub async fn run(
    client: kube::Client,
    cfg: Arc<AgentConfig>,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<()> {
    let api: Arc<dyn PodApi> = Arc::new(KubePodApi::new(client.clone(), &cfg.node_name));
    let objects: Arc<dyn env::Objects> = Arc::new(KubeObjects::new(client.clone()));
    let volumes = cfg.volumes.clone();
    let pull_failures = PullFailures::default();
    let pods: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let mut stream = watcher::watcher(pods, wc).default_backoff().boxed();
    let wakers: Wakers = Arc::default();
    let mut pod_cfg = cfg.pods.clone();
    if let Some(mut events) = runtime.container_events() {
        // Evented PLEG: container changes wake their pod's worker.
        pod_cfg.sync_period = pod_cfg.evented_relist_period;
        let wakers = wakers.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = token.cancelled() => return,
                    ev = events.recv() => ev,
                };
                let Ok(map) = wakers.lock() else { return };
                match ev {
                    Ok(ev) => {
                        if let Some(n) = map.get(&ev.pod_sandbox_id) {
                            n.notify_one();
                        }
                    }
                    // Missed some: wake everyone to look.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        map.values().for_each(|n| n.notify_one());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    let pod_cfg = Arc::new(pod_cfg);
    let host_ip = cfg.node_ip.to_string();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut relisted: Option<HashSet<String>> = None;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let dispatch = |pod: Pod,
                    workers: &mut HashMap<String, watch::Sender<Option<Pod>>>,
                    finished: &HashSet<String>| {
        let id = uid(&pod);
        if finished.contains(&id) {
            return;
        }
        if let Some(tx) = workers.get(&id) {
            let _ = tx.send(Some(pod));
            return;
        }
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        let span = tracing::info_span!("pod", pod = %key, node = %cfg.node_name);
        let (tx, rx) = watch::channel(Some(pod));
        let w = Worker::new(
            runtime.clone(),
            api.clone(),
            pod_cfg.clone(),
            host_ip.clone(),
        )
        .with_objects(objects.clone())
        .with_volumes(volumes.clone())
        .with_pull_failures(pull_failures.clone());
        let token = shutdown.clone();
        let done = done_tx.clone();
        let id2 = id.clone();
        let wk = wakers.clone();
        tokio::spawn(
            async move {
                run_worker(w, rx, wk, token).await;
                let _ = done.send(id2);
            }
            .instrument(span),
        );
        workers.insert(id, tx);
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(id) = done_rx.recv() => {
                if workers.remove(&id).is_some() {
                    finished.insert(id);
                }
            }
            ev = stream.next() => match ev {
                None => break,
                Some(Err(e)) => tracing::warn!(node = %cfg.node_name, "watching pods: {e}"),
                Some(Ok(Event::Init)) => relisted = Some(HashSet::new()),
                Some(Ok(Event::InitApply(p))) => {
                    if let Some(r) = relisted.as_mut() {
                        r.insert(uid(&p));
                    }
                    dispatch(p, &mut workers, &finished);
                }
                Some(Ok(Event::InitDone)) => {
                    if let Some(seen) = relisted.as_ref() {
                        remove_orphans(runtime.as_ref(), seen, &pod_cfg.node).await;
                    }
                    if let Some(seen) = relisted.take() {
                        workers.retain(|id, tx| {
                            let keep = seen.contains(id);
                            if !keep {
                                let _ = tx.send(None);
                            }
                            keep
                        });
                        finished.retain(|id| seen.contains(id));
                    }
                }
                Some(Ok(Event::Apply(p))) => dispatch(p, &mut workers, &finished),
                Some(Ok(Event::Delete(p))) => {
                    let id = uid(&p);
                    if let Some(tx) = workers.remove(&id) {
                        let _ = tx.send(None);
                    }
                    finished.remove(&id);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
