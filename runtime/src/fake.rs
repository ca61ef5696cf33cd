//! `FakeRuntime`: an in-memory [`ContainerRuntime`] for tests and simulated nodes. Containers
//! follow their [`Plan`](crate::sim::Plan) (see [`crate::sim`]); tests can also make a container
//! exit or a probe fail, and (with [`FakeRuntime::recording`]) assert the calls made.
//!
//! Container state is computed lazily from the clock when it is read, so a thousand idle fake
//! containers cost nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::sim::{self, Plan};
use crate::{
    ContainerConfig, ContainerEvent, ContainerEventKind, ContainerFilter, ContainerMetadata,
    ContainerRuntime, ContainerState, ContainerStatus, ExecSyncResponse, Image, PodSandboxConfig,
    PodSandboxStatus, ProbeAction, ProbeKind, ProbeResult, Result, RuntimeError, RuntimeVersion,
    SandboxState, now_nanos,
};

/// One call made to the fake, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeCall {
    /// `run_pod_sandbox` of pod `namespace/name`.
    RunPodSandbox(String),
    /// `stop_pod_sandbox(id)`.
    StopPodSandbox(String),
    /// `remove_pod_sandbox(id)`.
    RemovePodSandbox(String),
    /// `pull_image(image)`.
    PullImage(String),
    /// `create_container` of container `name` attempt `attempt`.
    CreateContainer {
        /// Container name.
        name: String,
        /// Attempt.
        attempt: u32,
    },
    /// `start_container` of the container named `name` (by its spec name).
    StartContainer(String),
    /// `stop_container` of the container named `name` with this timeout.
    StopContainer {
        /// Container name.
        name: String,
        /// Timeout in seconds.
        timeout: i64,
    },
    /// `remove_container` of the container named `name`.
    RemoveContainer(String),
}

#[derive(Debug)]
struct Sandbox {
    config: PodSandboxConfig,
    state: SandboxState,
    created_at: i64,
    ip: String,
}

#[derive(Debug)]
struct Container {
    sandbox_id: String,
    metadata: ContainerMetadata,
    image: String,
    image_ref: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    envs: Vec<(String, String)>,
    state: ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
    plan: Plan,
    probes: HashMap<ProbeKind, ProbeResult>,
}

impl Container {
    /// Bring the state up to `now` (planned exits).
    fn refresh(&mut self, now: i64) {
        if self.state != ContainerState::Running {
            return;
        }
        if let Plan::Exit { after, code } = self.plan {
            let at = self
                .started_at
                .saturating_add(i64::try_from(after.as_nanos()).unwrap_or(i64::MAX));
            if now >= at {
                self.exit(at, code);
            }
        }
    }

    fn exit(&mut self, at: i64, code: i32) {
        self.state = ContainerState::Exited;
        self.finished_at = at;
        self.exit_code = code;
        self.reason = if code == 0 { "Completed" } else { "Error" }.into();
    }

    fn status(&self, id: &str) -> ContainerStatus {
        ContainerStatus {
            id: id.to_string(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: self.metadata.clone(),
            state: self.state,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: self.image.clone(),
            image_ref: self.image_ref.clone(),
            reason: self.reason.clone(),
            message: String::new(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            log_path: String::new(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Container>,
    images: HashMap<String, Image>,
    pod_cidr: Option<(Ipv4Addr, u8)>,
    used_ips: std::collections::BTreeSet<u32>,
    calls: Option<Vec<RuntimeCall>>,
    streaming_url: Option<String>,
    /// `Some(reason)`: the pod network is not ready (see [`FakeRuntime::set_network_not_ready`]).
    network_not_ready: Option<String>,
}

impl State {
    fn id(&mut self) -> String {
        self.next_id += 1;
        // 64 hex digits like containerd's ids.
        format!(
            "{:016x}{:048x}",
            self.next_id,
            self.next_id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        )
    }

    fn record(&mut self, call: RuntimeCall) {
        if let Some(c) = self.calls.as_mut() {
            c.push(call);
        }
    }

    fn allocate_ip(&mut self) -> String {
        let (base, bits) = self.pod_cidr.unwrap_or((Ipv4Addr::new(10, 42, 0, 0), 24));
        let size = 1u32 << (32 - u32::from(bits.min(30)));
        let base = u32::from(base) & !(size - 1);
        // .0 is the network, .1 the node's bridge, the last the broadcast address.
        for off in 2..size - 1 {
            let ip = base + off;
            if self.used_ips.insert(ip) {
                return Ipv4Addr::from(ip).to_string();
            }
        }
        String::new()
    }

    fn release_ip(&mut self, ip: &str) {
        if let Ok(a) = ip.parse::<Ipv4Addr>() {
            self.used_ips.remove(&u32::from(a));
        }
    }

    fn container_mut(&mut self, id: &str) -> Result<&mut Container> {
        let now = now_nanos();
        let c = self
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::ContainerNotFound(id.to_string()))?;
        c.refresh(now);
        Ok(c)
    }
}

/// The fake runtime. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    events: tokio::sync::broadcast::Sender<ContainerEvent>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            events: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

/// `docker.io/library/nginx:latest` for `nginx`, as containerd names images.
pub fn normalize_image(image: &str) -> String {
    // One normalisation for the fake and the real importer; an invalid reference stays as is
    // (the fake then simply never finds it).
    crate::images::normalize_reference(image).unwrap_or_else(|_| image.to_string())
}

fn fake_digest(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    (0..4u8)
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (s, i).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

impl FakeRuntime {
    /// A fake that does not record calls (simulated nodes).
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake that records every call (see [`FakeRuntime::calls`]).
    pub fn recording() -> Self {
        let f = Self::default();
        f.lock().calls = Some(Vec::new());
        f
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, container_id: &str, pod_sandbox_id: &str, kind: ContainerEventKind) {
        // No receiver is fine: nobody listens.
        let _ = self.events.send(ContainerEvent {
            container_id: container_id.to_string(),
            pod_sandbox_id: pod_sandbox_id.to_string(),
            kind,
        });
    }

    /// The planned exit of container `id` is due: make it happen even if the wall clock lags
    /// the timer. Returns whether it exited now.
    fn finish_planned(&self, id: &str) -> bool {
        let mut st = self.lock();
        let Some(c) = st.containers.get_mut(id) else {
            return false;
        };
        match (c.state, c.plan) {
            (ContainerState::Running, Plan::Exit { after, code }) => {
                let at = c
                    .started_at
                    .saturating_add(i64::try_from(after.as_nanos()).unwrap_or(i64::MAX));
                c.exit(at, code);
                true
            }
            // Already seen exiting on a read: still announce it once.
            (ContainerState::Exited, Plan::Exit { .. }) => true,
            _ => false,
        }
    }

    /// The calls recorded so far (empty unless built with [`FakeRuntime::recording`]).
    pub fn calls(&self) -> Vec<RuntimeCall> {
        self.lock().calls.clone().unwrap_or_default()
    }

    /// Forget the recorded calls.
    pub fn clear_calls(&self) {
        if let Some(c) = self.lock().calls.as_mut() {
            c.clear();
        }
    }

    /// The id of the latest container named `container` of pod `namespace/name`.
    pub fn find_container(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        let st = self.lock();
        st.containers
            .iter()
            .filter(|(_, c)| {
                c.metadata.name == container
                    && st.sandboxes.get(&c.sandbox_id).is_some_and(|s| {
                        s.config.metadata.namespace == namespace && s.config.metadata.name == pod
                    })
            })
            .max_by_key(|(_, c)| (c.metadata.attempt, c.created_at))
            .map(|(id, _)| id.clone())
    }

    /// The environment container `id` was created with, in order.
    pub fn container_env(&self, id: &str) -> Option<Vec<(String, String)>> {
        self.lock().containers.get(id).map(|c| c.envs.clone())
    }

    /// Make a running container exit now with `code`. Returns whether it was running.
    pub fn exit_container(&self, id: &str, code: i32) -> bool {
        let sandbox = {
            let mut st = self.lock();
            match st.container_mut(id) {
                Ok(c) if c.state == ContainerState::Running => {
                    c.exit(now_nanos(), code);
                    c.sandbox_id.clone()
                }
                _ => return false,
            }
        };
        self.emit(id, &sandbox, ContainerEventKind::Stopped);
        true
    }

    /// Set the result of the container's `kind` probes from now on.
    pub fn set_probe_result(&self, id: &str, kind: ProbeKind, result: ProbeResult) {
        if let Ok(c) = self.lock().container_mut(id) {
            c.probes.insert(kind, result);
        }
    }

    /// Make [`ContainerRuntime::network_not_ready`] answer `why` (None: ready).
    pub fn set_network_not_ready(&self, why: Option<String>) {
        self.lock().network_not_ready = why;
    }

    /// Serve `exec`/`attach`/`port_forward` with URLs under `base` (a test's streaming server):
    /// `<base>/exec/<container>`, `<base>/attach/<container>`, `<base>/portforward/<sandbox>`.
    pub fn set_streaming_url(&self, base: Option<String>) {
        self.lock().streaming_url = base;
    }

    fn streaming(&self, kind: &str, id: &str, what: String) -> Result<String> {
        match &self.lock().streaming_url {
            Some(base) => Ok(format!("{}/{kind}/{id}", base.trim_end_matches('/'))),
            None => Err(RuntimeError::Unsupported(what)),
        }
    }

    /// Number of containers currently running.
    pub fn running_containers(&self) -> usize {
        let now = now_nanos();
        let mut st = self.lock();
        let mut n = 0;
        for c in st.containers.values_mut() {
            c.refresh(now);
            n += usize::from(c.state == ContainerState::Running);
        }
        n
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn exec(&self, req: &crate::StreamRequest) -> Result<String> {
        let what = format!("exec in container {}", req.container_id);
        self.streaming("exec", &req.container_id, what)
    }

    async fn attach(&self, req: &crate::StreamRequest) -> Result<String> {
        let what = format!("attach to container {}", req.container_id);
        self.streaming("attach", &req.container_id, what)
    }

    async fn port_forward(&self, sandbox_id: &str, _ports: &[i32]) -> Result<String> {
        let what = format!("port-forward into sandbox {sandbox_id}");
        self.streaming("portforward", sandbox_id, what)
    }

    async fn version(&self) -> Result<RuntimeVersion> {
        Ok(RuntimeVersion {
            runtime_name: "fake".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn network_not_ready(&self) -> Result<Option<String>> {
        Ok(self.lock().network_not_ready.clone())
    }

    async fn update_pod_cidr(&self, pod_cidr: &str) -> Result<()> {
        let (addr, bits) = pod_cidr
            .split_once('/')
            .ok_or_else(|| RuntimeError::InvalidState(format!("pod CIDR {pod_cidr:?}")))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| RuntimeError::InvalidState(format!("pod CIDR {pod_cidr:?}")))?;
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= 30)
            .ok_or_else(|| RuntimeError::InvalidState(format!("pod CIDR {pod_cidr:?}")))?;
        self.lock().pod_cidr = Some((addr, bits));
        Ok(())
    }

    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        let mut st = self.lock();
        st.record(RuntimeCall::RunPodSandbox(format!(
            "{}/{}",
            config.metadata.namespace, config.metadata.name
        )));
        let id = st.id();
        let ip = if config.host_network {
            String::new()
        } else {
            st.allocate_ip()
        };
        st.sandboxes.insert(
            id.clone(),
            Sandbox {
                config: config.clone(),
                state: SandboxState::Ready,
                created_at: now_nanos(),
                ip,
            },
        );
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut stopped = Vec::new();
        {
            let mut st = self.lock();
            st.record(RuntimeCall::StopPodSandbox(id.to_string()));
            let now = now_nanos();
            for (cid, c) in st.containers.iter_mut().filter(|(_, c)| c.sandbox_id == id) {
                c.refresh(now);
                if c.state == ContainerState::Running {
                    c.exit(now, 137);
                    stopped.push(cid.clone());
                }
            }
            if let Some(s) = st.sandboxes.get_mut(id) {
                s.state = SandboxState::NotReady;
            }
        }
        for cid in stopped {
            self.emit(&cid, id, ContainerEventKind::Stopped);
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        st.record(RuntimeCall::RemovePodSandbox(id.to_string()));
        st.containers.retain(|_, c| c.sandbox_id != id);
        if let Some(s) = st.sandboxes.remove(id) {
            st.release_ip(&s.ip);
        }
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let st = self.lock();
        let s = st
            .sandboxes
            .get(id)
            .ok_or_else(|| RuntimeError::SandboxNotFound(id.to_string()))?;
        Ok(PodSandboxStatus {
            id: id.to_string(),
            metadata: s.config.metadata.clone(),
            state: s.state,
            created_at: s.created_at,
            ip: s.ip.clone(),
            labels: s.config.labels.clone(),
        })
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>> {
        let st = self.lock();
        Ok(st
            .sandboxes
            .iter()
            .map(|(id, s)| PodSandboxStatus {
                id: id.clone(),
                metadata: s.config.metadata.clone(),
                state: s.state,
                created_at: s.created_at,
                ip: s.ip.clone(),
                labels: s.config.labels.clone(),
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        let mut st = self.lock();
        st.record(RuntimeCall::CreateContainer {
            name: config.metadata.name.clone(),
            attempt: config.metadata.attempt,
        });
        if st
            .sandboxes
            .get(sandbox_id)
            .is_none_or(|s| s.state != SandboxState::Ready)
        {
            return Err(RuntimeError::SandboxNotFound(sandbox_id.to_string()));
        }
        let image = normalize_image(&config.image);
        let image_ref = st
            .images
            .get(&image)
            .and_then(|i| i.repo_digests.first().cloned())
            .unwrap_or_else(|| image.clone());
        let id = st.id();
        let plan = sim::plan(
            &config.metadata.name,
            &config.command,
            &config.args,
            &sandbox_config.annotations,
        );
        st.containers.insert(
            id.clone(),
            Container {
                sandbox_id: sandbox_id.to_string(),
                metadata: config.metadata.clone(),
                image,
                image_ref,
                labels: config.labels.clone(),
                annotations: sandbox_config.annotations.clone(),
                envs: config.envs.clone(),
                state: ContainerState::Created,
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                plan,
                probes: HashMap::new(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        if c.state != ContainerState::Created {
            return Err(RuntimeError::InvalidState(format!(
                "container {id} is not in created state"
            )));
        }
        c.state = ContainerState::Running;
        c.started_at = now_nanos();
        let name = c.metadata.name.clone();
        let sandbox = c.sandbox_id.clone();
        let plan = c.plan;
        c.refresh(c.started_at);
        st.record(RuntimeCall::StartContainer(name));
        drop(st);
        self.emit(id, &sandbox, ContainerEventKind::Started);
        // A planned exit is announced when it happens (the state itself is computed lazily).
        if let Plan::Exit { after, .. } = plan
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let me = self.clone();
            let id = id.to_string();
            handle.spawn(async move {
                tokio::time::sleep(after).await;
                if me.finish_planned(&id) {
                    me.emit(&id, &sandbox, ContainerEventKind::Stopped);
                }
            });
        }
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<()> {
        let wait = {
            let mut st = self.lock();
            let c = st.container_mut(id)?;
            let name = c.metadata.name.clone();
            let wait = if c.state == ContainerState::Running {
                let term = sim::annotation(&c.annotations, sim::TERMINATION_SECONDS, &name)
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .unwrap_or(0.0);
                let grace = timeout_seconds.max(0) as f64;
                Some(if term < grace {
                    (Duration::from_secs_f64(term), 0)
                } else {
                    (Duration::from_secs_f64(grace), 137)
                })
            } else {
                None
            };
            st.record(RuntimeCall::StopContainer {
                name,
                timeout: timeout_seconds,
            });
            wait
        };
        let Some((after, code)) = wait else {
            return Ok(());
        };
        if !after.is_zero() {
            tokio::time::sleep(after).await;
        }
        let sandbox = {
            let mut st = self.lock();
            match st.container_mut(id) {
                Ok(c) if c.state == ContainerState::Running => {
                    c.exit(now_nanos(), code);
                    Some(c.sandbox_id.clone())
                }
                _ => None,
            }
        };
        if let Some(sb) = sandbox {
            self.emit(id, &sb, ContainerEventKind::Stopped);
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        if let Some(c) = st.containers.remove(id) {
            st.record(RuntimeCall::RemoveContainer(c.metadata.name));
        }
        Ok(())
    }

    async fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>> {
        let now = now_nanos();
        let mut st = self.lock();
        let mut out = Vec::new();
        for (id, c) in st.containers.iter_mut() {
            c.refresh(now);
            if filter.id.as_ref().is_some_and(|f| f != id)
                || filter
                    .pod_sandbox_id
                    .as_ref()
                    .is_some_and(|f| *f != c.sandbox_id)
                || filter.state.is_some_and(|f| f != c.state)
            {
                continue;
            }
            out.push(c.status(id));
        }
        out.sort_by_key(|c| c.created_at);
        Ok(out)
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        Ok(c.status(id))
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        _timeout_seconds: i64,
    ) -> Result<ExecSyncResponse> {
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        if c.state != ContainerState::Running {
            return Err(RuntimeError::InvalidState(format!(
                "container {id} is not running"
            )));
        }
        let code = match sim::plan_of_argv(cmd) {
            Plan::Exit { code, .. } => code,
            Plan::RunForever => 0,
        };
        Ok(ExecSyncResponse {
            exit_code: code,
            ..ExecSyncResponse::default()
        })
    }

    async fn probe(&self, id: &str, kind: ProbeKind, action: &ProbeAction) -> Result<ProbeResult> {
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        if let Some(r) = c.probes.get(&kind) {
            return Ok(r.clone());
        }
        let key = match kind {
            ProbeKind::Readiness => sim::READY,
            ProbeKind::Liveness => sim::LIVE,
            ProbeKind::Startup => sim::STARTUP,
        };
        let failing = sim::annotation(&c.annotations, key, &c.metadata.name)
            .is_some_and(|v| v.eq_ignore_ascii_case("false"));
        if !failing {
            return Ok(ProbeResult::Success);
        }
        Ok(ProbeResult::Failure(match action {
            ProbeAction::HttpGet {
                host,
                port,
                path,
                scheme,
            } => {
                let host = if host.is_empty() { "10.42.0.2" } else { host };
                format!(
                    "Get \"{}://{host}:{port}{path}\": dial tcp {host}:{port}: connect: connection refused",
                    scheme.to_ascii_lowercase()
                )
            }
            ProbeAction::TcpSocket { host, port } => {
                format!("dial tcp {host}:{port}: connect: connection refused")
            }
            ProbeAction::Exec(_) => "command terminated with non-zero exit code: 1".into(),
            ProbeAction::Grpc { port, .. } => {
                format!("timeout: failed to connect service \":{port}\" within 1s")
            }
        }))
    }

    async fn pull_image(&self, image: &str) -> Result<String> {
        let mut st = self.lock();
        st.record(RuntimeCall::PullImage(image.to_string()));
        let full = normalize_image(image);
        let repo = full.rsplit_once(':').map(|(r, _)| r).unwrap_or(&full);
        let digest = format!("{repo}@sha256:{}", fake_digest(&full));
        let id = format!("sha256:{}", fake_digest(&digest));
        st.images.entry(full.clone()).or_insert_with(|| Image {
            id,
            repo_tags: vec![full.clone()],
            repo_digests: vec![digest.clone()],
            size: 1 << 20,
            uid: None,
            username: String::new(),
        });
        Ok(digest)
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>> {
        Ok(self.lock().images.get(&normalize_image(image)).cloned())
    }

    fn container_events(&self) -> Option<tokio::sync::broadcast::Receiver<ContainerEvent>> {
        Some(self.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(name: &str, annotations: &[(&str, &str)]) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: crate::PodSandboxMetadata {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            },
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn container(name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: ContainerMetadata {
                name: name.into(),
                attempt: 0,
            },
            image: "busybox".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn images_are_normalized_like_containerd() {
        assert_eq!(normalize_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            normalize_image("nginx:1.27"),
            "docker.io/library/nginx:1.27"
        );
        assert_eq!(
            normalize_image("bitnami/redis"),
            "docker.io/bitnami/redis:latest"
        );
        assert_eq!(
            normalize_image("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(
            normalize_image("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
    }

    #[tokio::test]
    async fn container_lifecycle_and_exit_plans() {
        let rt = FakeRuntime::recording();
        rt.update_pod_cidr("10.42.3.0/24").await.expect("cidr");
        let sc = sandbox("p", &[]);
        let sb = rt.run_pod_sandbox(&sc).await.expect("sandbox");
        assert_eq!(
            rt.pod_sandbox_status(&sb).await.expect("status").ip,
            "10.42.3.2"
        );
        rt.pull_image("busybox").await.expect("pull");
        let forever = rt
            .create_container(&sb, &container("web", &[]), &sc)
            .await
            .expect("create");
        let quick = rt
            .create_container(&sb, &container("job", &["sh", "-c", "exit 3"]), &sc)
            .await
            .expect("create");
        rt.start_container(&forever).await.expect("start");
        rt.start_container(&quick).await.expect("start");
        let q = rt.container_status(&quick).await.expect("status");
        assert_eq!(
            (q.state, q.exit_code, q.reason.as_str()),
            (ContainerState::Exited, 3, "Error")
        );
        assert!(q.image_ref.starts_with("docker.io/library/busybox@sha256:"));
        let f = rt.container_status(&forever).await.expect("status");
        assert_eq!(f.state, ContainerState::Running);
        assert_eq!(
            rt.find_container("default", "p", "web"),
            Some(forever.clone())
        );
        assert!(rt.exit_container(&forever, 7));
        let f = rt.container_status(&forever).await.expect("status");
        assert_eq!((f.state, f.exit_code), (ContainerState::Exited, 7));
        assert!(rt.start_container(&forever).await.is_err());
        rt.remove_pod_sandbox(&sb).await.expect("remove");
        assert!(rt.container_status(&forever).await.is_err());
        assert_eq!(
            rt.calls()[..3],
            [
                RuntimeCall::RunPodSandbox("default/p".into()),
                RuntimeCall::PullImage("busybox".into()),
                RuntimeCall::CreateContainer {
                    name: "web".into(),
                    attempt: 0
                },
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_honours_termination_seconds_and_grace() {
        let rt = FakeRuntime::new();
        let sc = sandbox("p", &[(sim::TERMINATION_SECONDS, "5")]);
        let sb = rt.run_pod_sandbox(&sc).await.expect("sandbox");
        let a = rt
            .create_container(&sb, &container("a", &[]), &sc)
            .await
            .expect("create");
        rt.start_container(&a).await.expect("start");
        rt.stop_container(&a, 2).await.expect("stop");
        let s = rt.container_status(&a).await.expect("status");
        assert_eq!((s.state, s.exit_code), (ContainerState::Exited, 137));
        let b = rt
            .create_container(&sb, &container("b", &[]), &sc)
            .await
            .expect("create");
        rt.start_container(&b).await.expect("start");
        rt.stop_container(&b, 30).await.expect("stop");
        let s = rt.container_status(&b).await.expect("status");
        assert_eq!((s.state, s.exit_code), (ContainerState::Exited, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn exits_are_announced_as_events() {
        let rt = FakeRuntime::new();
        let mut events = rt.container_events().expect("events");
        let sc = sandbox("p", &[]);
        let sb = rt.run_pod_sandbox(&sc).await.expect("sandbox");
        let a = rt
            .create_container(&sb, &container("a", &["sleep", "5"]), &sc)
            .await
            .expect("create");
        rt.start_container(&a).await.expect("start");
        let started = events.recv().await.expect("event");
        assert_eq!(started.kind, ContainerEventKind::Started);
        let stopped = events.recv().await.expect("event");
        assert_eq!(
            (
                stopped.kind,
                stopped.container_id.as_str(),
                stopped.pod_sandbox_id.as_str()
            ),
            (ContainerEventKind::Stopped, a.as_str(), sb.as_str())
        );
        let s = rt.container_status(&a).await.expect("status");
        assert_eq!((s.state, s.exit_code), (ContainerState::Exited, 0));
    }

    #[tokio::test]
    async fn probes_follow_annotations_and_overrides() {
        let rt = FakeRuntime::new();
        let sc = sandbox("p", &[(sim::READY, "false")]);
        let sb = rt.run_pod_sandbox(&sc).await.expect("sandbox");
        let a = rt
            .create_container(&sb, &container("a", &[]), &sc)
            .await
            .expect("create");
        rt.start_container(&a).await.expect("start");
        let act = ProbeAction::TcpSocket {
            host: "10.42.0.2".into(),
            port: 80,
        };
        assert!(matches!(
            rt.probe(&a, ProbeKind::Readiness, &act)
                .await
                .expect("probe"),
            ProbeResult::Failure(_)
        ));
        assert_eq!(
            rt.probe(&a, ProbeKind::Liveness, &act)
                .await
                .expect("probe"),
            ProbeResult::Success
        );
        rt.set_probe_result(&a, ProbeKind::Readiness, ProbeResult::Success);
        assert_eq!(
            rt.probe(&a, ProbeKind::Readiness, &act)
                .await
                .expect("probe"),
            ProbeResult::Success
        );
    }
}
