//! k8slite-runtime: container runtimes behind one trait.
//!
//! [`ContainerRuntime`] is shaped after the CRI v1 `RuntimeService` and `ImageService`: pod
//! sandboxes, containers, their status and listing, `ExecSync` (the hook exec probes use), image
//! pull and status. The agent drives pods only through this trait, so the CRI client over
//! containerd ([`CriRuntime`], with [`containerd::Supervisor`] running containerd) and
//! [`FakeRuntime`] (simulated nodes, tests) are interchangeable.
//!
//! Times are Unix nanoseconds, as in CRI.

pub mod containerd;
pub mod cri;
mod fake;
pub mod images;
pub mod logs;
mod pause;
pub mod sim;

use std::collections::BTreeMap;

pub use cri::CriRuntime;
pub use fake::{FakeRuntime, RuntimeCall, normalize_image};
pub use pause::{PAUSE_IMAGE, pause_binary};

/// What failed in a runtime call.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No pod sandbox with this id.
    #[error("pod sandbox {0} not found")]
    SandboxNotFound(String),
    /// No container with this id.
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// The image could not be pulled.
    #[error("pulling image {image} failed: {reason}")]
    ImagePull {
        /// Image reference.
        image: String,
        /// Why.
        reason: String,
    },
    /// The container could not be created or started.
    #[error("container {name}: {reason}")]
    Container {
        /// Container name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The call is not valid in the object's current state (e.g. starting an exited container).
    #[error("{0}")]
    InvalidState(String),
    /// Transport or runtime-internal failure.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// This runtime does not offer the call (the fake runtime has no streaming server).
    #[error("not supported by this runtime: {0}")]
    Unsupported(String),
}

/// Result of runtime calls.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// CRI `PodSandboxMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSandboxMetadata {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Attempt number of this sandbox for the pod.
    pub attempt: u32,
}

/// CRI `PodSandboxConfig` (the parts k8slite uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSandboxConfig {
    /// Identity of the pod.
    pub metadata: PodSandboxMetadata,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Pod annotations (the fake runtime reads its `sim.k8slite.io/*` settings here).
    pub annotations: BTreeMap<String, String>,
    /// Whether the sandbox shares the host network namespace.
    pub host_network: bool,
    /// Whether it shares the host PID namespace.
    pub host_pid: bool,
    /// Whether it shares the host IPC namespace.
    pub host_ipc: bool,
    /// Directory (absolute) under which container logs are written
    /// (`/var/log/pods/<ns>_<name>_<uid>`); the agent creates it.
    pub log_directory: String,
    /// The pod's resolv.conf; `None` keeps the runtime's default (the host's).
    pub dns_config: Option<DnsConfig>,
    /// hostPort mappings (CNI portmap).
    pub port_mappings: Vec<PortMapping>,
    /// Parent cgroup of the sandbox (`/k8slite-<node>/pod<uid>`); empty: the runtime's default.
    pub cgroup_parent: String,
    /// Pod-level sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// Whether any container of the pod is privileged (CRI requires a privileged sandbox then).
    pub privileged: bool,
    /// Pod-level user for the sandbox process, if set.
    pub run_as_user: Option<i64>,
    /// Supplemental groups of the pod.
    pub supplemental_groups: Vec<i64>,
}

/// CRI `DNSConfig`: what goes into the pod's `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// Options (`ndots:5`).
    pub options: Vec<String>,
}

/// CRI `Protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// CRI `PortMapping`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMapping {
    /// Protocol.
    pub protocol: Protocol,
    /// Port in the pod.
    pub container_port: i32,
    /// Port on the node.
    pub host_port: i32,
    /// Node address to bind (empty: all).
    pub host_ip: String,
}

/// CRI `MountPropagation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MountPropagation {
    /// No propagation (`rprivate`).
    #[default]
    Private,
    /// Host mounts appear in the container (`rslave`).
    HostToContainer,
    /// Both ways (`rshared`).
    Bidirectional,
}

/// CRI `Mount`: a host path bind-mounted into a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    /// Path in the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// Read-only mount.
    pub readonly: bool,
    /// Propagation.
    pub propagation: MountPropagation,
}

/// CRI `LinuxContainerResources` (cgroup settings of a container).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxResources {
    /// CFS period in µs (0: default).
    pub cpu_period: i64,
    /// CFS quota in µs (0: none).
    pub cpu_quota: i64,
    /// CPU shares (relative weight).
    pub cpu_shares: i64,
    /// Memory limit in bytes (0: none).
    pub memory_limit_in_bytes: i64,
    /// OOM score adjustment.
    pub oom_score_adj: i64,
}

/// CRI `Capability`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Added capabilities (`NET_ADMIN`, without `CAP_`).
    pub add: Vec<String>,
    /// Dropped capabilities (`ALL` drops every one).
    pub drop: Vec<String>,
}

/// CRI `LinuxContainerSecurityContext` (the parts k8slite maps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityContext {
    /// Privileged container.
    pub privileged: bool,
    /// Capabilities.
    pub capabilities: Capabilities,
    /// UID to run as (`None`: the image's user).
    pub run_as_user: Option<i64>,
    /// GID to run as.
    pub run_as_group: Option<i64>,
    /// User name to run as (when the image names a user and no UID is set).
    pub run_as_username: String,
    /// Read-only root filesystem.
    pub readonly_rootfs: bool,
    /// Supplemental groups.
    pub supplemental_groups: Vec<i64>,
    /// `no_new_privs` (allowPrivilegeEscalation false).
    pub no_new_privs: bool,
}

/// CRI `PodSandboxState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// Running.
    Ready,
    /// Stopped.
    NotReady,
}

/// CRI `PodSandboxStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSandboxStatus {
    /// Sandbox id.
    pub id: String,
    /// Identity of the pod.
    pub metadata: PodSandboxMetadata,
    /// State.
    pub state: SandboxState,
    /// Creation time (Unix ns).
    pub created_at: i64,
    /// Pod IP (empty with host networking, where the node's address is used).
    pub ip: String,
    /// Labels the sandbox was created with.
    pub labels: BTreeMap<String, String>,
}

/// CRI `ContainerMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMetadata {
    /// Container name in the pod spec.
    pub name: String,
    /// Restart attempt (0 for the first run).
    pub attempt: u32,
}

/// CRI `ContainerConfig` (the parts k8slite uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Name and attempt.
    pub metadata: ContainerMetadata,
    /// Image reference (as pulled).
    pub image: String,
    /// Entrypoint (the pod spec's `command`).
    pub command: Vec<String>,
    /// Arguments (the pod spec's `args`).
    pub args: Vec<String>,
    /// Environment.
    pub envs: Vec<(String, String)>,
    /// Labels (k8slite sets `io.kubernetes.*` like the kubelet).
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Working directory (empty: the image's).
    pub working_dir: String,
    /// Bind mounts (volumes, /etc/hosts, termination log).
    pub mounts: Vec<Mount>,
    /// Log file, relative to the sandbox's `log_directory` (`<name>/<attempt>.log`).
    pub log_path: String,
    /// Keep stdin open.
    pub stdin: bool,
    /// Close stdin after the first attach ends.
    pub stdin_once: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// cgroup settings.
    pub resources: Option<LinuxResources>,
    /// Security settings.
    pub security: SecurityContext,
}

/// CRI `ContainerState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// Unknown.
    Unknown,
}

/// CRI `ContainerStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Container id.
    pub id: String,
    /// Sandbox the container belongs to.
    pub pod_sandbox_id: String,
    /// Name and attempt.
    pub metadata: ContainerMetadata,
    /// State.
    pub state: ContainerState,
    /// Creation time (Unix ns).
    pub created_at: i64,
    /// Start time (Unix ns; 0 if never started).
    pub started_at: i64,
    /// Exit time (Unix ns; 0 if not exited).
    pub finished_at: i64,
    /// Exit code (meaningful when exited).
    pub exit_code: i32,
    /// Image reference as requested.
    pub image: String,
    /// Resolved image reference (digest).
    pub image_ref: String,
    /// Short reason for the state (`Completed`, `Error`, `OOMKilled`, …).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// Labels the container was created with.
    pub labels: BTreeMap<String, String>,
    /// Annotations the container was created with.
    pub annotations: BTreeMap<String, String>,
    /// Absolute path of its log file (empty if none).
    pub log_path: String,
}

/// CRI `ExecRequest` / `AttachRequest`: what a streaming session asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRequest {
    /// Container id.
    pub container_id: String,
    /// Command (exec only; empty for attach).
    pub cmd: Vec<String>,
    /// Allocate a TTY.
    pub tty: bool,
    /// Stream stdin.
    pub stdin: bool,
    /// Stream stdout.
    pub stdout: bool,
    /// Stream stderr (ignored with a TTY).
    pub stderr: bool,
}

/// CRI `ContainerFilter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    /// Only this container.
    pub id: Option<String>,
    /// Only containers of this sandbox.
    pub pod_sandbox_id: Option<String>,
    /// Only containers in this state.
    pub state: Option<ContainerState>,
}

/// CRI `ExecSyncResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSyncResponse {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
}

/// CRI `Image` (from `ImageStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Image id (`sha256:…`).
    pub id: String,
    /// Tags.
    pub repo_tags: Vec<String>,
    /// Digests (`repo@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// UID the image's config runs as, when numeric.
    pub uid: Option<i64>,
    /// User name the image's config runs as, when not numeric.
    pub username: String,
}

/// CRI `VersionResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// Runtime name (`containerd`, `fake`).
    pub runtime_name: String,
    /// Runtime version.
    pub runtime_version: String,
    /// CRI API version.
    pub runtime_api_version: String,
}

/// Which probe is asked for (the runtime does not care; the fake answers per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Readiness probe.
    Readiness,
    /// Liveness probe.
    Liveness,
    /// Startup probe.
    Startup,
}

/// Outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// Succeeded.
    Success,
    /// Failed, with the message the kubelet puts into its `Unhealthy` event.
    Failure(String),
}

/// A container runtime, shaped after CRI v1 (`RuntimeService` + `ImageService`).
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// CRI `Version`.
    async fn version(&self) -> Result<RuntimeVersion>;

    /// CRI `UpdateRuntimeConfig`: the node's pod CIDR, once known.
    async fn update_pod_cidr(&self, pod_cidr: &str) -> Result<()>;

    /// CRI `Status`: `Ok(None)` when the runtime's `NetworkReady` condition holds, else
    /// `Ok(Some("NetworkReady=false reason:… message:…"))`. Runtimes without a pod network
    /// are always ready.
    async fn network_not_ready(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// CRI `RunPodSandbox`: create and start a sandbox; returns its id.
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String>;
    /// CRI `StopPodSandbox`: stop the sandbox and every container in it.
    async fn stop_pod_sandbox(&self, id: &str) -> Result<()>;
    /// CRI `RemovePodSandbox`: remove the sandbox and its containers (idempotent).
    async fn remove_pod_sandbox(&self, id: &str) -> Result<()>;
    /// CRI `PodSandboxStatus`.
    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus>;
    /// CRI `ListPodSandbox`.
    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>>;

    /// CRI `CreateContainer` in `sandbox_id`; returns the container id.
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String>;
    /// CRI `StartContainer`.
    async fn start_container(&self, id: &str) -> Result<()>;
    /// CRI `StopContainer`: SIGTERM, then SIGKILL after `timeout_seconds`.
    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<()>;
    /// CRI `RemoveContainer` (idempotent).
    async fn remove_container(&self, id: &str) -> Result<()>;
    /// CRI `ListContainers`.
    async fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>>;
    /// CRI `ContainerStatus`.
    async fn container_status(&self, id: &str) -> Result<ContainerStatus>;
    /// CRI `ExecSync`: run `cmd` in the container (exec probes use it).
    async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout_seconds: i64,
    ) -> Result<ExecSyncResponse>;

    /// Run one probe of `kind` against the container. The agent calls this for every probe;
    /// a CRI runtime runs exec probes through [`ContainerRuntime::exec_sync`] and HTTP/TCP
    /// probes from the node (the agent passes what the probe names in `action`); the fake
    /// answers from its simulation.
    async fn probe(&self, id: &str, kind: ProbeKind, action: &ProbeAction) -> Result<ProbeResult>;

    /// [`ContainerRuntime::probe`] with the probe's deadline (`timeoutSeconds`; zero means the
    /// kubelet's default of one second). Runtimes without deadlines ignore it.
    async fn probe_with_timeout(
        &self,
        id: &str,
        kind: ProbeKind,
        action: &ProbeAction,
        timeout: std::time::Duration,
    ) -> Result<ProbeResult> {
        let _ = timeout;
        self.probe(id, kind, action).await
    }

    /// CRI `Exec`: a one-shot URL of the runtime's streaming server for this session
    /// (WebSocket, `v4.channel.k8s.io`).
    async fn exec(&self, req: &StreamRequest) -> Result<String> {
        Err(RuntimeError::Unsupported(format!(
            "exec in container {}",
            req.container_id
        )))
    }
    /// CRI `Attach`: as [`ContainerRuntime::exec`], to the container's main process.
    async fn attach(&self, req: &StreamRequest) -> Result<String> {
        Err(RuntimeError::Unsupported(format!(
            "attach to container {}",
            req.container_id
        )))
    }
    /// CRI `PortForward`: a URL to forward connections into the sandbox's network namespace.
    async fn port_forward(&self, sandbox_id: &str, ports: &[i32]) -> Result<String> {
        let _ = ports;
        Err(RuntimeError::Unsupported(format!(
            "port-forward into sandbox {sandbox_id}"
        )))
    }
    /// CRI `ReopenContainerLog` (after log rotation).
    async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let _ = id;
        Ok(())
    }
    /// CRI `ListImages`.
    async fn list_images(&self) -> Result<Vec<Image>> {
        Ok(Vec::new())
    }

    /// CRI `PullImage`; returns the image reference (digest) it resolved to.
    async fn pull_image(&self, image: &str) -> Result<String>;
    /// CRI `ImageStatus`: `None` when the image is not present.
    async fn image_status(&self, image: &str) -> Result<Option<Image>>;

    /// CRI `GetContainerEvents` (evented PLEG): a stream of container state changes, when the
    /// runtime offers one. Without it the agent relists every second.
    fn container_events(&self) -> Option<tokio::sync::broadcast::Receiver<ContainerEvent>> {
        None
    }
}

/// CRI `ContainerEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    /// Created.
    Created,
    /// Started.
    Started,
    /// Stopped (exited).
    Stopped,
    /// Deleted.
    Deleted,
}

/// CRI `ContainerEventResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// Container id.
    pub container_id: String,
    /// Sandbox the container belongs to.
    pub pod_sandbox_id: String,
    /// What happened.
    pub kind: ContainerEventKind,
}

/// What a probe does, as the pod spec says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Run a command in the container; exit 0 succeeds.
    Exec(Vec<String>),
    /// HTTP GET; 200–399 succeeds.
    HttpGet {
        /// Host (the pod IP when empty).
        host: String,
        /// Port number.
        port: u16,
        /// Path.
        path: String,
        /// `HTTP` or `HTTPS`.
        scheme: String,
    },
    /// TCP connect succeeds.
    TcpSocket {
        /// Host (the pod IP when empty).
        host: String,
        /// Port number.
        port: u16,
    },
    /// gRPC health check.
    Grpc {
        /// Port number.
        port: u16,
        /// Service name.
        service: String,
    },
}

/// Current time as Unix nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
