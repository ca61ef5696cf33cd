//! One pod's worker: drives sandbox → init containers (in order) → containers through the
//! runtime, applies the restart policy with CrashLoopBackOff back-off, runs probes, tears the
//! pod down on deletion honouring its grace period, and reports status only when it changed.
//! Each call of [`Worker::sync`] is one level-based pass; the loop around it lives in
//! [`super::run_worker`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use k8slite_runtime::{
    ContainerRuntime, Mount, PodSandboxConfig, ProbeAction, ProbeKind, ProbeResult, RuntimeError,
};

use super::env::{self, NoObjects, Objects};
use super::spec;
use super::status::{self, PodFacts};
use super::{PodApi, PodConfig, PodEvent, VolumeHooks};

/// What the worker loop does after a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Sync again after this long (or earlier when the pod changes).
    After(Duration),
    /// Nothing to do until the pod changes.
    Idle,
    /// The pod is gone; the worker ends.
    Done,
}

#[derive(Debug, Clone)]
struct Record {
    id: String,
    attempt: u32,
    /// The previous attempt's container, kept (exited) for `kubectl logs --previous`.
    previous: Option<String>,
    /// Terminated state of the previous attempt (the status's `lastState`).
    last_terminated: Option<ContainerStateTerminated>,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay: Duration,
    /// Exit time the current delay counts from.
    since: Instant,
}

#[derive(Debug, Default, Clone)]
struct Probes {
    /// Container id these results belong to.
    container: String,
    ready: bool,
    started: bool,
    ready_successes: i32,
    ready_failures: i32,
    live_failures: i32,
    startup_failures: i32,
    next: HashMap<ProbeKind, Instant>,
}

/// Why a container waits (image pull failure, create failure, back-off).
#[derive(Debug, Clone)]
struct Waiting {
    reason: String,
    message: String,
}

/// State of one pod's worker.
pub struct Worker {
    rt: Arc<dyn ContainerRuntime>,
    api: Arc<dyn PodApi>,
    cfg: Arc<PodConfig>,
    host_ip: String,
    sandbox: Option<(String, String, PodSandboxConfig)>,
    records: HashMap<String, Record>,
    backoff: HashMap<String, Backoff>,
    probes: HashMap<String, Probes>,
    waiting: HashMap<String, Waiting>,
    start_time: Option<Time>,
    /// Containers stopped for good (terminal phase reached): the sandbox is stopped.
    finished: bool,
    /// Last status written (to avoid rewriting it).
    written: Option<k8s_openapi::api::core::v1::PodStatus>,
    /// resourceVersion the last write produced.
    written_rv: Option<u64>,
    /// Where container events of this pod's sandbox are routed to wake the worker.
    waker: Option<(super::Wakers, Arc<tokio::sync::Notify>)>,
    /// ConfigMaps and secrets for the environment.
    objects: Arc<dyn Objects>,
    /// Pod volumes (none on simulated nodes).
    volumes: Option<Arc<dyn VolumeHooks>>,
    /// Whether volumes are set up.
    volumes_ready: bool,
    /// Last `FailedMount` message (recorded once per change).
    mount_error: Option<String>,
    /// When volume contents were last refreshed.
    refreshed: Option<Instant>,
    /// Whether a sandbox left by an earlier agent run was looked for.
    adoption_checked: bool,
    /// The pod as last seen (for teardown after it is gone).
    last_pod: Option<Pod>,
    /// Images whose pull failed recently on this node (shared by the node's workers).
    pull_failures: super::PullFailures,
}

/// How long a failed pull lets `imagePullPolicy: Always` use the local image without asking
/// the registry again.
const PULL_FAILURE_MEMORY: Duration = Duration::from_secs(300);

fn ns_time(ns: i64) -> Option<Time> {
    (ns > 0)
        .then(|| Timestamp::from_second(ns / 1_000_000_000).ok())
        .flatten()
        .map(Time)
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

fn fmt_duration(d: Duration) -> String {
    // Go's time.Duration format for whole seconds: 10s, 1m20s, 5m0s.
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

fn probe_action(probe: &Probe, container: &Container, pod_ip: &str) -> Option<ProbeAction> {
    let port_of = |p: &IntOrString| -> u16 {
        match p {
            IntOrString::Int(n) => u16::try_from(*n).unwrap_or(0),
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .unwrap_or(0),
        }
    };
    if let Some(e) = &probe.exec {
        return Some(ProbeAction::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &probe.http_get {
        return Some(ProbeAction::HttpGet {
            host: h.host.clone().unwrap_or_else(|| pod_ip.to_string()),
            port: port_of(&h.port),
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            scheme: h.scheme.clone().unwrap_or_else(|| "HTTP".into()),
        });
    }
    if let Some(t) = &probe.tcp_socket {
        return Some(ProbeAction::TcpSocket {
            host: t.host.clone().unwrap_or_else(|| pod_ip.to_string()),
            port: port_of(&t.port),
        });
    }
    probe.grpc.as_ref().map(|g| ProbeAction::Grpc {
        port: u16::try_from(g.port).unwrap_or(0),
        service: g.service.clone().unwrap_or_default(),
    })
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
}

impl Worker {
    /// A worker for one pod.
    pub fn new(
        rt: Arc<dyn ContainerRuntime>,
        api: Arc<dyn PodApi>,
        cfg: Arc<PodConfig>,
        host_ip: String,
    ) -> Self {
        Self {
            rt,
            api,
            cfg,
            host_ip,
            sandbox: None,
            records: HashMap::new(),
            backoff: HashMap::new(),
            probes: HashMap::new(),
            waiting: HashMap::new(),
            start_time: None,
            finished: false,
            written: None,
            written_rv: None,
            waker: None,
            objects: Arc::new(NoObjects),
            volumes: None,
            volumes_ready: false,
            mount_error: None,
            refreshed: None,
            adoption_checked: false,
            last_pod: None,
            pull_failures: super::PullFailures::default(),
        }
    }

    /// Share the node's record of failed pulls.
    pub fn with_pull_failures(mut self, failures: super::PullFailures) -> Self {
        self.pull_failures = failures;
        self
    }

    /// Resolve configMap/secret environment references through `objects`.
    pub fn with_objects(mut self, objects: Arc<dyn Objects>) -> Self {
        self.objects = objects;
        self
    }

    /// Set up and mount pod volumes through `volumes`.
    pub fn with_volumes(mut self, volumes: Option<Arc<dyn VolumeHooks>>) -> Self {
        self.volumes = volumes;
        self
    }

    async fn event(
        &self,
        pod: &Pod,
        type_warning: bool,
        reason: &str,
        message: String,
        field: Option<String>,
    ) {
        self.api
            .event(
                pod,
                PodEvent {
                    warning: type_warning,
                    reason: reason.into(),
                    message,
                    field_path: field,
                },
            )
            .await;
    }

    fn sandbox_config(&self, pod: &Pod) -> PodSandboxConfig {
        spec::sandbox_config(pod, &self.cfg.node)
    }

    /// Take over the sandbox and containers an earlier run of the agent left for this pod
    /// (agent restart): running containers keep running, restart counts continue.
    async fn adopt(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let Ok(sandboxes) = self.rt.list_pod_sandboxes().await else {
            return;
        };
        let mut mine: Vec<_> = sandboxes
            .into_iter()
            .filter(|s| s.metadata.uid == uid)
            .collect();
        mine.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let Some(found) = mine.first().cloned() else {
            return;
        };
        let terminal = status::is_terminal(pod.status.as_ref().and_then(|s| s.phase.as_deref()));
        if terminal {
            // Finished pods keep their stopped sandbox and containers (for logs).
            self.finished = true;
        } else if found.state != k8slite_runtime::SandboxState::Ready {
            // Its network is gone (node reboot, stopped sandbox): start afresh.
            for s in &mine {
                let _ = self.rt.stop_pod_sandbox(&s.id).await;
                let _ = self.rt.remove_pod_sandbox(&s.id).await;
            }
            return;
        }
        let filter = k8slite_runtime::ContainerFilter {
            pod_sandbox_id: Some(found.id.clone()),
            ..Default::default()
        };
        let containers = self.rt.list_containers(&filter).await.unwrap_or_default();
        for c in containers {
            let newer = self
                .records
                .get(&c.metadata.name)
                .is_none_or(|r| r.attempt < c.metadata.attempt);
            if newer {
                let previous = self.records.get(&c.metadata.name).map(|r| r.id.clone());
                self.records.insert(
                    c.metadata.name.clone(),
                    Record {
                        id: c.id.clone(),
                        attempt: c.metadata.attempt,
                        previous,
                        last_terminated: None,
                    },
                );
            }
        }
        let ip = if found.ip.is_empty() {
            self.host_ip.clone()
        } else {
            found.ip.clone()
        };
        tracing::info!(sandbox = %found.id, containers = self.records.len(), "adopted a running sandbox");
        self.register_sandbox(&found.id, true);
        self.start_time = pod.status.as_ref().and_then(|s| s.start_time.clone());
        self.sandbox = Some((found.id, ip, self.sandbox_config(pod)));
        // Keep the restart counts the API already shows.
        for cs in pod.status.iter().flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        }) {
            if let Some(r) = self.records.get_mut(&cs.name) {
                r.attempt = r.attempt.max(u32::try_from(cs.restart_count).unwrap_or(0));
                r.last_terminated = cs.last_state.as_ref().and_then(|l| l.terminated.clone());
            }
        }
    }

    /// Set up volumes (once; `FailedMount` events on errors). Returns whether they are ready.
    async fn setup_volumes(&mut self, pod: &Pod) -> bool {
        if self.volumes_ready {
            return true;
        }
        let Some(v) = self.volumes.clone() else {
            self.volumes_ready = true;
            return true;
        };
        match v.setup(pod).await {
            Ok(()) => {
                self.volumes_ready = true;
                self.mount_error = None;
                self.refreshed = Some(Instant::now());
                true
            }
            Err(msg) => {
                if self.mount_error.as_deref() != Some(msg.as_str()) {
                    self.event(pod, true, "FailedMount", msg.clone(), None)
                        .await;
                    self.mount_error = Some(msg);
                }
                false
            }
        }
    }

    /// Refresh volume contents now and then while the pod runs.
    async fn refresh_volumes(&mut self, pod: &Pod) {
        let Some(v) = self.volumes.clone() else {
            return;
        };
        if self
            .refreshed
            .is_some_and(|t| t.elapsed() < self.cfg.volume_refresh_period)
        {
            return;
        }
        v.refresh(pod).await;
        self.refreshed = Some(Instant::now());
    }

    /// The pod's own state directory (`<pods_dir>/<uid>`), if the node keeps one.
    fn pod_dir(&self, pod: &Pod) -> Option<std::path::PathBuf> {
        let root = &self.cfg.node.pods_dir;
        (!root.as_os_str().is_empty())
            .then(|| root.join(pod.metadata.uid.as_deref().unwrap_or("unknown")))
    }

    /// Write the pod's /etc/hosts once its IP is known; returns the mount for it.
    fn hosts_mount(&self, pod: &Pod) -> Option<Mount> {
        if host_network(pod) {
            return None;
        }
        let dir = self.pod_dir(pod)?;
        let ip = self
            .sandbox
            .as_ref()
            .map(|s| s.1.clone())
            .unwrap_or_default();
        let path = dir.join("etc-hosts");
        let body = spec::etc_hosts(pod, &ip, &self.cfg.node.cluster_domain);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(body.as_str()) {
            let tmp = dir.join(".etc-hosts.tmp");
            let written = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&tmp, body))
                .and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), "writing /etc/hosts: {e}");
                return None;
            }
        }
        Some(Mount {
            container_path: "/etc/hosts".into(),
            host_path: path.to_string_lossy().into_owned(),
            readonly: false,
            propagation: k8slite_runtime::MountPropagation::Private,
        })
    }

    /// Route container events of this pod's sandbox to `notify`.
    pub fn set_waker(&mut self, wakers: super::Wakers, notify: Arc<tokio::sync::Notify>) {
        self.waker = Some((wakers, notify));
    }

    fn register_sandbox(&self, id: &str, add: bool) {
        if let Some((wakers, notify)) = &self.waker
            && let Ok(mut m) = wakers.lock()
        {
            if add {
                m.insert(id.to_string(), notify.clone());
            } else {
                m.remove(id);
            }
        }
    }

    /// Id of the pod's sandbox, once created.
    pub fn sandbox_id(&self) -> Option<&str> {
        self.sandbox.as_ref().map(|s| s.0.as_str())
    }

    /// One pass over `pod`.
    pub async fn sync(&mut self, pod: &Pod) -> Next {
        self.last_pod = Some(pod.clone());
        if !self.adoption_checked {
            self.adoption_checked = true;
            self.adopt(pod).await;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            self.terminate(pod).await;
            return Next::Done;
        }
        let api_phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if self.sandbox.is_none() && status::is_terminal(api_phase) {
            // Finished before this worker started (e.g. an agent restart): leave it be.
            return Next::Idle;
        }
        let mut wake = self.cfg.sync_period;
        if !self.finished {
            if self.start_time.is_none() {
                self.start_time = Some(Time(crate::node::now_secs()));
            }
            if self.sandbox.is_some() {
                if self.volumes_ready {
                    self.refresh_volumes(pod).await;
                } else {
                    // Adopted after an agent restart: the volume state is rebuilt.
                    self.setup_volumes(pod).await;
                }
            }
            if self.sandbox.is_none() {
                if !self.setup_volumes(pod).await {
                    return Next::After(wake.max(Duration::from_secs(2)));
                }
                // Like the kubelet: no sandbox on the pod network before the runtime has
                // loaded it. containerd answers such a RunPodSandbox only after a long
                // cleanup (about 90 s here), holding the sandbox name all that time.
                if !host_network(pod)
                    && let Ok(Some(why)) = self.rt.network_not_ready().await
                {
                    self.event(
                        pod,
                        true,
                        "NetworkNotReady",
                        format!("network is not ready: container runtime network not ready: {why}"),
                        None,
                    )
                    .await;
                    return Next::After(Duration::from_secs(1));
                }
                let sc = self.sandbox_config(pod);
                if !sc.log_directory.is_empty()
                    && let Err(e) = std::fs::create_dir_all(&sc.log_directory)
                {
                    tracing::warn!(dir = %sc.log_directory, "creating the pod log directory: {e}");
                }
                match self.rt.run_pod_sandbox(&sc).await {
                    Ok(id) => {
                        self.register_sandbox(&id, true);
                        let ip = match self.rt.pod_sandbox_status(&id).await {
                            Ok(s) if !s.ip.is_empty() => s.ip,
                            _ => self.host_ip.clone(),
                        };
                        self.sandbox = Some((id, ip, sc));
                    }
                    Err(e) => {
                        self.event(
                            pod,
                            true,
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: {e}"),
                            None,
                        )
                        .await;
                        return Next::After(wake);
                    }
                }
            }
            if let Some(d) = self.drive(pod).await {
                wake = wake.min(d);
            }
        }
        let (init, containers) = self.container_statuses(pod).await;
        let facts = PodFacts {
            sandbox_ready: self.sandbox.is_some() && !self.finished,
            pod_ip: self.sandbox.as_ref().map(|s| s.1.clone()),
            host_ip: self.host_ip.clone(),
            start_time: self.start_time.clone(),
            all_stopped: false,
        };
        let desired = status::pod_status(pod, init, containers, &facts, crate::node::now_secs());
        let terminal = status::is_terminal(desired.phase.as_deref());
        if terminal && !self.finished {
            // The pod is done: its containers stay (for logs), the sandbox is stopped.
            if let Some((id, _, _)) = &self.sandbox
                && let Err(e) = self.rt.stop_pod_sandbox(id).await
            {
                tracing::warn!("stopping the sandbox: {e}");
            }
            self.finished = true;
        }
        let desired = if terminal {
            let facts = PodFacts {
                sandbox_ready: false,
                ..facts
            };
            let (init, containers) = self.container_statuses(pod).await;
            status::pod_status(pod, init, containers, &facts, crate::node::now_secs())
        } else {
            desired
        };
        self.write_status(pod, &desired).await;
        if terminal {
            Next::Idle
        } else {
            Next::After(wake)
        }
    }

    async fn write_status(&mut self, pod: &Pod, desired: &k8s_openapi::api::core::v1::PodStatus) {
        let stored = pod.status.as_ref();
        let changed_vs_stored = status::differs(stored, desired);
        let changed_vs_written = self
            .written
            .as_ref()
            .is_none_or(|w| status::differs(Some(w), desired));
        // Write when it differs from what is stored, unless it equals what was just written
        // and the stored copy is merely older than the write (the watch lags behind).
        let stored_rv = pod
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok());
        let stale = matches!((stored_rv, self.written_rv), (Some(s), Some(w)) if s < w);
        if !changed_vs_stored || (!changed_vs_written && stale) {
            return;
        }
        match self.api.patch_status(pod, desired).await {
            Ok(rv) => {
                self.written = Some(desired.clone());
                self.written_rv = rv;
            }
            Err(e) => tracing::warn!("writing pod status: {e}"),
        }
    }

    /// Start, restart and probe containers. Returns how soon to look again.
    async fn drive(&mut self, pod: &Pod) -> Option<Duration> {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut wake: Option<Duration> = None;
        let soon = |d: Duration, w: &mut Option<Duration>| {
            *w = Some(w.map_or(d, |x| x.min(d)));
        };
        // Init containers, in order: each must succeed before the next starts.
        let mut init_ok = true;
        for c in spec.init_containers.iter().flatten() {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let field = format!("spec.initContainers{{{}}}", c.name);
            let st = self.runtime_state(&c.name).await;
            match st {
                None => {
                    self.start(pod, c, &field, 0, None).await;
                    init_ok = false;
                    if !sidecar {
                        break;
                    }
                }
                Some(s) if s.state == k8slite_runtime::ContainerState::Exited => {
                    if s.exit_code == 0 && !sidecar {
                        continue;
                    }
                    init_ok = false;
                    let restart = sidecar || policy != "Never";
                    if restart && let Some(d) = self.restart(pod, c, &field, &s).await {
                        soon(d, &mut wake);
                    }
                    break;
                }
                Some(s) if sidecar => {
                    if let Some(d) = self.run_probes(pod, c, &field, &s).await {
                        soon(d, &mut wake);
                    }
                    continue;
                }
                Some(_) => {
                    init_ok = false;
                    break;
                }
            }
        }
        if !init_ok {
            return wake;
        }
        for c in &spec.containers {
            let field = format!("spec.containers{{{}}}", c.name);
            match self.runtime_state(&c.name).await {
                None => self.start(pod, c, &field, 0, None).await,
                Some(s) if s.state == k8slite_runtime::ContainerState::Exited => {
                    if should_restart(&policy, s.exit_code)
                        && let Some(d) = self.restart(pod, c, &field, &s).await
                    {
                        soon(d, &mut wake);
                    }
                }
                Some(s) if s.state == k8slite_runtime::ContainerState::Created => {
                    if let Err(e) = self.rt.start_container(&s.id).await {
                        tracing::warn!(container = %c.name, "starting: {e}");
                    }
                }
                Some(s) => {
                    if let Some(d) = self.run_probes(pod, c, &field, &s).await {
                        soon(d, &mut wake);
                    }
                }
            }
        }
        wake
    }

    async fn runtime_state(&mut self, name: &str) -> Option<k8slite_runtime::ContainerStatus> {
        let rec = self.records.get(name)?;
        match self.rt.container_status(&rec.id).await {
            Ok(s) => Some(s),
            Err(RuntimeError::ContainerNotFound(_)) => {
                // The runtime lost it (removed behind our back): start over.
                self.records.remove(name);
                None
            }
            Err(e) => {
                tracing::warn!(container = name, "container status: {e}");
                None
            }
        }
    }

    /// Restart an exited container unless it is backing off; returns when to look again.
    async fn restart(
        &mut self,
        pod: &Pod,
        c: &Container,
        field: &str,
        exited: &k8slite_runtime::ContainerStatus,
    ) -> Option<Duration> {
        let now = Instant::now();
        let finished_ago = Duration::from_nanos(
            u64::try_from((k8slite_runtime::now_nanos() - exited.finished_at).max(0)).unwrap_or(0),
        );
        let finished_at = now.checked_sub(finished_ago).unwrap_or(now);
        if let Some(b) = self.backoff.get(&c.name).copied() {
            let elapsed = now.saturating_duration_since(finished_at);
            if elapsed < b.delay {
                let first_time = self
                    .waiting
                    .get(&c.name)
                    .is_none_or(|w| w.reason != "CrashLoopBackOff");
                let msg = format!(
                    "back-off {} restarting failed container={} pod={}",
                    fmt_duration(b.delay),
                    c.name,
                    pod_key(pod)
                );
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: msg,
                    },
                );
                if first_time {
                    self.event(
                        pod,
                        true,
                        "BackOff",
                        format!(
                            "Back-off restarting failed container {} in pod {}",
                            c.name,
                            pod_key(pod)
                        ),
                        Some(field.to_string()),
                    )
                    .await;
                }
                return Some(b.delay - elapsed);
            }
        }
        // Next back-off: the initial one, or double the last (capped); reset after a long
        // quiet spell (twice the maximum).
        let delay = match self.backoff.get(&c.name) {
            Some(b)
                if finished_at.saturating_duration_since(b.since) <= self.cfg.backoff_max * 2 =>
            {
                (b.delay * 2).min(self.cfg.backoff_max)
            }
            _ => self.cfg.backoff_initial,
        };
        self.backoff.insert(
            c.name.clone(),
            Backoff {
                delay,
                since: finished_at,
            },
        );
        let attempt = self.records.get(&c.name).map_or(0, |r| r.attempt + 1);
        let last = Some(self.terminated_state(exited));
        self.start(pod, c, field, attempt, last).await;
        None
    }

    fn terminated_state(&self, s: &k8slite_runtime::ContainerStatus) -> ContainerStateTerminated {
        ContainerStateTerminated {
            exit_code: s.exit_code,
            reason: Some(if s.reason.is_empty() {
                if s.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string()
            } else {
                s.reason.clone()
            }),
            message: (!s.message.is_empty()).then(|| s.message.clone()),
            started_at: ns_time(s.started_at),
            finished_at: ns_time(s.finished_at),
            container_id: Some(format!("{}://{}", self.cfg.runtime_scheme, s.id)),
            signal: None,
        }
    }

    /// Pull (per policy), create and start attempt `attempt` of container `c`.
    async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        field: &str,
        attempt: u32,
        last_terminated: Option<ContainerStateTerminated>,
    ) {
        let Some((sandbox_id, _, sandbox_config)) = self.sandbox.clone() else {
            return;
        };
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains(':') {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = matches!(self.rt.image_status(&image).await, Ok(Some(_)));
        let field_s = Some(field.to_string());
        if policy == "Never" && !present {
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message: format!(
                        "Container image \"{image}\" is not present with pull policy of Never"
                    ),
                },
            );
            return;
        }
        // An offline node: a pull of this image failed a moment ago and the image is here, so
        // do not wait for the registry again on every restart.
        let failed_recently = self.pull_failures.lock().ok().is_some_and(|m| {
            m.get(&image)
                .is_some_and(|t| t.elapsed() < PULL_FAILURE_MEMORY)
        });
        if present && (policy != "Always" || failed_recently) {
            let note = if policy == "Always" {
                " (the registry was unreachable moments ago)"
            } else {
                ""
            };
            self.event(
                pod,
                false,
                "Pulled",
                format!("Container image \"{image}\" already present on machine{note}"),
                field_s.clone(),
            )
            .await;
        } else {
            self.event(
                pod,
                false,
                "Pulling",
                format!("Pulling image \"{image}\""),
                field_s.clone(),
            )
            .await;
            let t = Instant::now();
            match self.rt.pull_image(&image).await {
                Ok(_) => {
                    let took = t.elapsed();
                    let size = match self.rt.image_status(&image).await {
                        Ok(Some(i)) => i.size,
                        _ => 0,
                    };
                    self.event(
                        pod,
                        false,
                        "Pulled",
                        format!(
                            "Successfully pulled image \"{image}\" in {took:?} ({took:?} including waiting). Image size: {size} bytes."
                        ),
                        field_s.clone(),
                    )
                    .await;
                }
                Err(e) if present => {
                    if let Ok(mut m) = self.pull_failures.lock() {
                        m.insert(image.clone(), Instant::now());
                    }
                    // Offline edge node: the registry is unreachable, the image is here.
                    self.event(
                        pod,
                        true,
                        "PullFailedUsingLocal",
                        format!(
                            "Failed to pull image \"{image}\", using the local image present on the node instead: {e}"
                        ),
                        field_s.clone(),
                    )
                    .await;
                }
                Err(e) => {
                    self.event(
                        pod,
                        true,
                        "Failed",
                        format!("Failed to pull image \"{image}\": {e}"),
                        field_s.clone(),
                    )
                    .await;
                    self.waiting.insert(
                        c.name.clone(),
                        Waiting {
                            reason: "ErrImagePull".into(),
                            message: e.to_string(),
                        },
                    );
                    return;
                }
            }
        }
        let Some(config) = self.container_config(pod, c, attempt, field).await else {
            return;
        };
        if !sandbox_config.log_directory.is_empty() {
            let dir = std::path::Path::new(&sandbox_config.log_directory).join(&c.name);
            if let Err(e) = std::fs::create_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), "creating the container log directory: {e}");
            }
        }
        let id = match self
            .rt
            .create_container(&sandbox_id, &config, &sandbox_config)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                self.event(pod, true, "Failed", format!("Error: {e}"), field_s)
                    .await;
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerError".into(),
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        // The kubelet keeps the last dead container (logs --previous); older ones go.
        let previous = self
            .records
            .get(&c.name)
            .map(|r| (r.id.clone(), r.previous.clone()));
        if let Some((_, Some(older))) = &previous
            && let Err(e) = self.rt.remove_container(older).await
        {
            tracing::debug!("removing an old container: {e}");
        }
        self.records.insert(
            c.name.clone(),
            Record {
                previous: previous.map(|p| p.0),
                id: id.clone(),
                attempt,
                last_terminated,
            },
        );
        self.probes.remove(&c.name);
        self.event(
            pod,
            false,
            "Created",
            format!("Created container: {}", c.name),
            field_s.clone(),
        )
        .await;
        if let Err(e) = self.rt.start_container(&id).await {
            self.event(pod, true, "Failed", format!("Error: {e}"), field_s)
                .await;
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "RunContainerError".into(),
                    message: e.to_string(),
                },
            );
            return;
        }
        self.waiting.remove(&c.name);
        self.event(
            pod,
            false,
            "Started",
            format!("Started container {}", c.name),
            field_s,
        )
        .await;
    }

    /// The CRI configuration of attempt `attempt` of `c`: environment, security context,
    /// mounts. On a configuration error records it (`CreateContainerConfigError`) and returns
    /// `None`.
    async fn container_config(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        field: &str,
    ) -> Option<k8slite_runtime::ContainerConfig> {
        let pod_ip = self
            .sandbox
            .as_ref()
            .map(|s| s.1.clone())
            .unwrap_or_default();
        let node = self.cfg.node.clone();
        let image = c.image.clone().unwrap_or_default();
        let image_user = match self.rt.image_status(&image).await {
            Ok(Some(i)) => i.uid.map(|u| u.to_string()).unwrap_or(i.username),
            _ => String::new(),
        };
        let built = async {
            let envs =
                env::resolve(pod, c, self.objects.as_ref(), &pod_ip, &self.host_ip, &node).await?;
            let security = spec::security_context(pod, c, &image_user)?;
            let env_map: std::collections::BTreeMap<String, String> =
                envs.iter().cloned().collect();
            let mut mounts = match &self.volumes {
                Some(v) => v
                    .mounts_for(pod, c, &env_map)
                    .map_err(spec::ConfigError::Missing)?,
                None => Vec::new(),
            };
            if !mounts.iter().any(|m| m.container_path == "/etc/hosts")
                && let Some(m) = self.hosts_mount(pod)
            {
                mounts.push(m);
            }
            Ok::<_, spec::ConfigError>(spec::container_config(
                pod, c, attempt, envs, mounts, security, &node,
            ))
        }
        .await;
        match built {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                self.event(
                    pod,
                    true,
                    "Failed",
                    format!("Error: {e}"),
                    Some(field.to_string()),
                )
                .await;
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: e.to_string(),
                    },
                );
                None
            }
        }
    }

    /// Run due probes of a running container; kill it when liveness or startup fails.
    async fn run_probes(
        &mut self,
        pod: &Pod,
        c: &Container,
        field: &str,
        st: &k8slite_runtime::ContainerStatus,
    ) -> Option<Duration> {
        let rec = self.records.get(&c.name)?.clone();
        if st.id != rec.id {
            return None;
        }
        let running_for = Duration::from_nanos(
            u64::try_from((k8slite_runtime::now_nanos() - st.started_at).max(0)).unwrap_or(0),
        );
        let pod_ip = self
            .sandbox
            .as_ref()
            .map(|s| s.1.clone())
            .unwrap_or_default();
        let now = Instant::now();
        let mut p = self.probes.remove(&c.name).unwrap_or_default();
        if p.container != rec.id {
            p = Probes {
                container: rec.id.clone(),
                ..Probes::default()
            };
            // Probes start initialDelaySeconds after the container started.
            let started = now.checked_sub(running_for).unwrap_or(now);
            for (kind, probe) in [
                (ProbeKind::Startup, &c.startup_probe),
                (ProbeKind::Liveness, &c.liveness_probe),
                (ProbeKind::Readiness, &c.readiness_probe),
            ] {
                if let Some(pr) = probe {
                    p.next
                        .insert(kind, started + secs(pr.initial_delay_seconds, 0));
                }
            }
        }
        p.started = p.started || c.startup_probe.is_none();
        let mut wake: Option<Duration> = None;
        let mut kill: Option<String> = None;
        for (kind, probe) in [
            (ProbeKind::Startup, &c.startup_probe),
            (ProbeKind::Liveness, &c.liveness_probe),
            (ProbeKind::Readiness, &c.readiness_probe),
        ] {
            let Some(pr) = probe else { continue };
            if kind == ProbeKind::Startup && p.started {
                continue;
            }
            if kind != ProbeKind::Startup && !p.started {
                continue;
            }
            let due = p.next.get(&kind).copied().unwrap_or(now);
            let period = secs(pr.period_seconds, 10);
            if due > now {
                let d = due - now;
                wake = Some(wake.map_or(d, |w| w.min(d)));
                continue;
            }
            p.next.insert(kind, now + period);
            wake = Some(wake.map_or(period, |w| w.min(period)));
            let Some(action) = probe_action(pr, c, &pod_ip) else {
                continue;
            };
            let timeout = secs(pr.timeout_seconds, 1).max(Duration::from_secs(1));
            let result = match self
                .rt
                .probe_with_timeout(&rec.id, kind, &action, timeout)
                .await
            {
                Ok(r) => r,
                Err(e) => ProbeResult::Failure(e.to_string()),
            };
            let failure_threshold = pr.failure_threshold.unwrap_or(3).max(1);
            let success_threshold = pr.success_threshold.unwrap_or(1).max(1);
            let kind_name = match kind {
                ProbeKind::Readiness => "Readiness",
                ProbeKind::Liveness => "Liveness",
                ProbeKind::Startup => "Startup",
            };
            match result {
                ProbeResult::Success => match kind {
                    ProbeKind::Startup => p.started = true,
                    ProbeKind::Liveness => p.live_failures = 0,
                    ProbeKind::Readiness => {
                        p.ready_failures = 0;
                        p.ready_successes += 1;
                        if p.ready_successes >= success_threshold {
                            p.ready = true;
                        }
                    }
                },
                ProbeResult::Failure(msg) => {
                    self.event(
                        pod,
                        true,
                        "Unhealthy",
                        format!("{kind_name} probe failed: {msg}"),
                        Some(field.to_string()),
                    )
                    .await;
                    match kind {
                        ProbeKind::Readiness => {
                            p.ready_successes = 0;
                            p.ready_failures += 1;
                            if p.ready_failures >= failure_threshold {
                                p.ready = false;
                            }
                        }
                        ProbeKind::Liveness => {
                            p.live_failures += 1;
                            if p.live_failures >= failure_threshold {
                                kill = Some("liveness".into());
                            }
                        }
                        ProbeKind::Startup => {
                            p.startup_failures += 1;
                            if p.startup_failures >= failure_threshold {
                                kill = Some("startup".into());
                            }
                        }
                    }
                }
            }
        }
        if c.readiness_probe.is_none() {
            p.ready = p.started;
        }
        self.probes.insert(c.name.clone(), p);
        if let Some(which) = kill {
            self.event(
                pod,
                false,
                "Killing",
                format!(
                    "Container {} failed {which} probe, will be restarted",
                    c.name
                ),
                Some(field.to_string()),
            )
            .await;
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            if let Err(e) = self.rt.stop_container(&rec.id, grace).await {
                tracing::warn!(container = %c.name, "stopping: {e}");
            }
            self.probes.remove(&c.name);
            return Some(Duration::ZERO);
        }
        wake
    }

    /// Container statuses (init, regular) as the API shows them.
    async fn container_statuses(
        &mut self,
        pod: &Pod,
    ) -> (Vec<ContainerStatus>, Vec<ContainerStatus>) {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut init = Vec::new();
        let mut pending_init = false;
        for c in spec.init_containers.iter().flatten() {
            let s = self.status_of(c, "PodInitializing").await;
            if !status::init_done(&spec, &s) {
                pending_init = true;
            }
            init.push(s);
        }
        let mut containers = Vec::new();
        for c in &spec.containers {
            let reason = if pending_init {
                "PodInitializing"
            } else {
                "ContainerCreating"
            };
            containers.push(self.status_of(c, reason).await);
        }
        (init, containers)
    }

    async fn status_of(&mut self, c: &Container, waiting_reason: &str) -> ContainerStatus {
        let image_spec = c.image.clone().unwrap_or_default();
        let mut out = ContainerStatus {
            name: c.name.clone(),
            image: k8slite_runtime::normalize_image(&image_spec),
            image_id: String::new(),
            ready: false,
            restart_count: 0,
            started: Some(false),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(waiting_reason.into()),
                    message: None,
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let Some(rec) = self.records.get(&c.name).cloned() else {
            if let Some(w) = self.waiting.get(&c.name) {
                out.state = Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(w.reason.clone()),
                        message: Some(w.message.clone()),
                    }),
                    ..ContainerState::default()
                });
            }
            return out;
        };
        out.restart_count = i32::try_from(rec.attempt).unwrap_or(i32::MAX);
        out.last_state = rec.last_terminated.clone().map(|t| ContainerState {
            terminated: Some(t),
            ..ContainerState::default()
        });
        let Ok(s) = self.rt.container_status(&rec.id).await else {
            return out;
        };
        out.image = s.image.clone();
        out.image_id = s.image_ref.clone();
        out.container_id = Some(format!("{}://{}", self.cfg.runtime_scheme, s.id));
        match s.state {
            k8slite_runtime::ContainerState::Running => {
                let p = self.probes.get(&c.name).filter(|p| p.container == rec.id);
                let started = p.map_or(c.startup_probe.is_none(), |p| p.started);
                let ready = match p {
                    Some(p) => p.ready,
                    None => c.readiness_probe.is_none() && started,
                };
                out.started = Some(started);
                out.ready = ready;
                out.state = Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: ns_time(s.started_at),
                    }),
                    ..ContainerState::default()
                });
            }
            k8slite_runtime::ContainerState::Exited => {
                if let Some(w) = self.waiting.get(&c.name) {
                    // Backing off before the next attempt: waiting, last state = this exit.
                    out.last_state = Some(ContainerState {
                        terminated: Some(self.terminated_state(&s)),
                        ..ContainerState::default()
                    });
                    out.state = Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(w.reason.clone()),
                            message: Some(w.message.clone()),
                        }),
                        ..ContainerState::default()
                    });
                } else {
                    out.state = Some(ContainerState {
                        terminated: Some(self.terminated_state(&s)),
                        ..ContainerState::default()
                    });
                }
            }
            k8slite_runtime::ContainerState::Created | k8slite_runtime::ContainerState::Unknown => {
                if let Some(w) = self.waiting.get(&c.name) {
                    out.state = Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(w.reason.clone()),
                            message: Some(w.message.clone()),
                        }),
                        ..ContainerState::default()
                    });
                }
            }
        }
        out
    }

    /// Graceful deletion: stop the containers within the grace period, report their final
    /// state, remove the sandbox, then delete the pod object for good.
    pub async fn terminate(&mut self, pod: &Pod) {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        self.stop_all(pod, grace).await;
        self.waiting.clear();
        if self.sandbox.is_some() || !self.records.is_empty() {
            let (init, containers) = self.container_statuses(pod).await;
            let facts = PodFacts {
                sandbox_ready: false,
                pod_ip: self.sandbox.as_ref().map(|s| s.1.clone()),
                host_ip: self.host_ip.clone(),
                start_time: self.start_time.clone(),
                all_stopped: true,
            };
            let desired =
                status::pod_status(pod, init, containers, &facts, crate::node::now_secs());
            self.write_status(pod, &desired).await;
        }
        self.remove_sandbox().await;
        if let Err(e) = self.api.delete_terminated(pod).await {
            tracing::warn!("deleting the pod: {e}");
        }
    }

    /// The pod object is gone (deleted with grace 0, or no longer bound here): kill at once.
    pub async fn kill(&mut self, pod: Option<&Pod>) {
        if let Some(p) = pod {
            self.stop_all(p, 0).await;
        }
        self.remove_sandbox().await;
    }

    async fn stop_all(&mut self, pod: &Pod, grace: i64) {
        let mut running = Vec::new();
        for (name, rec) in &self.records {
            if let Ok(s) = self.rt.container_status(&rec.id).await
                && s.state == k8slite_runtime::ContainerState::Running
            {
                running.push((name.clone(), rec.id.clone()));
            }
        }
        running.sort();
        let spec = pod.spec.clone().unwrap_or_default();
        for (name, _) in &running {
            let field = if spec.containers.iter().any(|c| &c.name == name) {
                format!("spec.containers{{{name}}}")
            } else {
                format!("spec.initContainers{{{name}}}")
            };
            self.event(
                pod,
                false,
                "Killing",
                format!("Stopping container {name}"),
                Some(field),
            )
            .await;
        }
        let rt = self.rt.clone();
        let stops = running.iter().map(|(name, id)| {
            let rt = rt.clone();
            async move {
                if let Err(e) = rt.stop_container(id, grace).await {
                    tracing::warn!(container = %name, "stopping: {e}");
                }
            }
        });
        futures::future::join_all(stops).await;
    }

    async fn remove_sandbox(&mut self) {
        if let Some((id, _, sc)) = self.sandbox.take() {
            self.register_sandbox(&id, false);
            if let Err(e) = self.rt.stop_pod_sandbox(&id).await {
                tracing::warn!("stopping the sandbox: {e}");
            }
            if let Err(e) = self.rt.remove_pod_sandbox(&id).await {
                tracing::warn!("removing the sandbox: {e}");
            }
            if !sc.cgroup_parent.is_empty() {
                super::cgroups::remove(&sc.cgroup_parent);
            }
            if !sc.log_directory.is_empty() {
                let _ = std::fs::remove_dir_all(&sc.log_directory);
            }
        }
        if let Some(pod) = self.last_pod.clone() {
            if self.volumes_ready
                && let Some(v) = &self.volumes
            {
                v.teardown(&pod).await;
                self.volumes_ready = false;
            }
            if let Some(dir) = self.pod_dir(&pod)
                && dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                tracing::warn!(dir = %dir.display(), "removing the pod directory: {e}");
            }
        }
    }
}

/// Whether the pod uses the node's network namespace.
fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}
