//! The CRI v1 client: `RuntimeService` and `ImageService` over containerd's unix socket (tonic),
//! implementing [`crate::ContainerRuntime`].
//!
//! [`CriRuntime::connect`] takes the socket of a running runtime (the supervised containerd's
//! [`crate::containerd::Supervisor::socket`], or `--container-runtime-endpoint`). The channel
//! connects lazily and re-dials after the runtime restarts. Every call has a deadline
//! ([`CriTimeouts`]); errors name the call (`RunPodSandbox: …`), and `NotFound` answers become
//! [`RuntimeError::SandboxNotFound`] / [`RuntimeError::ContainerNotFound`].

mod map;
mod probe;
mod transport;

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("runtime.v1");
}

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pb::image_service_client::ImageServiceClient;
use pb::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub use transport::socket_path;

use crate::{
    ContainerFilter, ContainerRuntime, ContainerStatus, ProbeAction, ProbeResult, Result,
    RuntimeError, RuntimeVersion,
};

/// The CRI API version k8slite asks for in `Version`.
const CRI_CLIENT_VERSION: &str = "0.1.0";
/// Largest message accepted from the runtime (ExecSync output can be large), as the kubelet.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Default deadline of a probe (`timeoutSeconds` unset), as the kubelet.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Deadlines of CRI calls. Generous: on a loaded 2-core node single calls took seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriTimeouts {
    /// `RunPodSandbox` and `PullImage` (CNI setup, image download).
    pub long: Duration,
    /// Every other call (ExecSync and StopContainer add their own timeout on top).
    pub normal: Duration,
}

impl Default for CriTimeouts {
    fn default() -> Self {
        Self {
            long: Duration::from_secs(4 * 60),
            normal: Duration::from_secs(2 * 60),
        }
    }
}

/// What a failed call was about, for mapping `NotFound` and naming the failure.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Sandbox(&'a str),
    Container(&'a str),
    NewContainer(&'a str),
    /// A container being started: its failures (bad command, mounts) are the container's.
    Starting(&'a str),
    Image(&'a str),
    Nothing,
}

/// Map a gRPC status of `call` to a [`RuntimeError`].
fn status_error(call: &str, subject: Subject<'_>, status: &tonic::Status) -> RuntimeError {
    use tonic::Code;
    let mut msg = status.message().to_string();
    if msg.is_empty() {
        msg = format!("{:?}", status.code());
    }
    if let Some(source) = std::error::Error::source(status) {
        msg = format!("{msg}: {source}");
    }
    let transport = matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded);
    match (status.code(), subject) {
        (Code::NotFound, Subject::Sandbox(id)) => RuntimeError::SandboxNotFound(id.to_string()),
        (Code::NotFound, Subject::Container(id) | Subject::Starting(id)) => {
            RuntimeError::ContainerNotFound(id.to_string())
        }
        (_, Subject::Image(image)) if !transport => RuntimeError::ImagePull {
            image: image.to_string(),
            reason: format!("{call}: {msg}"),
        },
        (_, Subject::NewContainer(name) | Subject::Starting(name)) if !transport => {
            RuntimeError::Container {
                name: name.to_string(),
                reason: format!("{call}: {msg}"),
            }
        }
        (Code::FailedPrecondition, _) => RuntimeError::InvalidState(format!("{call}: {msg}")),
        _ => RuntimeError::Unavailable(format!("{call}: {msg}")),
    }
}

/// A CRI v1 runtime (containerd) reached over its unix socket.
#[derive(Clone)]
pub struct CriRuntime {
    socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    timeouts: CriTimeouts,
    /// Container id → sandbox id (CRI's `ContainerStatus` does not carry the sandbox).
    sandbox_of: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for CriRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriRuntime")
            .field("socket", &self.socket)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl CriRuntime {
    /// A client for the runtime at `endpoint` (`unix:///abs/path.sock` or `/abs/path.sock`).
    /// Connects lazily: this succeeds while the runtime is still starting; use
    /// [`CriRuntime::wait_ready`] to wait for it.
    pub fn connect(endpoint: &str) -> Result<Self> {
        let socket = socket_path(endpoint)?;
        let channel = transport::channel(&socket)?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            images: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
            socket,
            timeouts: CriTimeouts::default(),
            sandbox_of: Arc::default(),
        })
    }

    /// The same client with other call deadlines.
    pub fn with_timeouts(mut self, timeouts: CriTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The unix socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Call `Version` until it answers (each try bounded by one second), for at most `limit`.
    pub async fn wait_ready(&self, limit: Duration) -> Result<RuntimeVersion> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let attempt = self.clone().with_timeouts(CriTimeouts {
                long: Duration::from_secs(1),
                normal: Duration::from_secs(1),
            });
            match attempt.version().await {
                Ok(v) => return Ok(v),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(RuntimeError::Unavailable(format!(
                        "CRI runtime at {} not ready within {limit:?}: {e}",
                        self.socket.display()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The raw sandbox status including containerd's `info` map (`verbose`): its JSON has the
    /// pause PID, the netns path and the runtime spec. For diagnostics and tests.
    pub async fn pod_sandbox_info(&self, id: &str) -> Result<HashMap<String, String>> {
        let mut c = self.runtime.clone();
        let resp = call(
            "PodSandboxStatus",
            self.timeouts.normal,
            Subject::Sandbox(id),
            c.pod_sandbox_status(request(
                pb::PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_string(),
                    verbose: true,
                },
                self.timeouts.normal,
            )),
        )
        .await?;
        Ok(resp.info.into_iter().collect())
    }

    /// Run a probe with its deadline (`timeoutSeconds`): exec through `ExecSync`, HTTP GET and TCP
    /// from the node. An empty host means the pod's IP, looked up from the sandbox.
    async fn run_probe(
        &self,
        id: &str,
        action: &ProbeAction,
        timeout: Duration,
    ) -> Result<ProbeResult> {
        let timeout = if timeout.is_zero() {
            DEFAULT_PROBE_TIMEOUT
        } else {
            timeout
        };
        match action {
            ProbeAction::Exec(cmd) => {
                let secs = i64::try_from(timeout.as_secs().max(1)).unwrap_or(i64::MAX);
                match self.exec_sync(id, cmd, secs).await {
                    Ok(r) => Ok(probe::exec_result(cmd, &r)),
                    Err(RuntimeError::Unavailable(msg)) if probe::is_exec_timeout(&msg) => Ok(
                        ProbeResult::Failure(format!("command {:?} timed out", cmd.join(" "))),
                    ),
                    Err(e) => Err(e),
                }
            }
            ProbeAction::HttpGet {
                host,
                port,
                path,
                scheme,
            } => {
                let host = self.probe_host(id, host).await?;
                Ok(probe::http_get(&host, *port, path, scheme, timeout).await)
            }
            ProbeAction::TcpSocket { host, port } => {
                let host = self.probe_host(id, host).await?;
                Ok(probe::tcp(&host, *port, timeout).await)
            }
            ProbeAction::Grpc { port, .. } => Err(RuntimeError::Unsupported(format!(
                "gRPC probe on port {port}"
            ))),
        }
    }

    async fn probe_host(&self, container: &str, host: &str) -> Result<String> {
        if !host.is_empty() {
            return Ok(host.to_string());
        }
        let sandbox = self.sandbox_id_of(container).await?;
        let ip = self.pod_sandbox_status(&sandbox).await?.ip;
        if ip.is_empty() {
            // Host network: the kubelet probes the node's own address; loopback reaches it.
            return Ok("127.0.0.1".to_string());
        }
        Ok(ip)
    }

    /// The sandbox `container` belongs to: from the cache, else `ListContainers` by id.
    async fn sandbox_id_of(&self, container: &str) -> Result<String> {
        if let Some(s) = self.cached_sandbox(container) {
            return Ok(s);
        }
        let filter = ContainerFilter {
            id: Some(container.to_string()),
            ..Default::default()
        };
        let found = self.list_container_items(&filter).await?;
        let item = found
            .into_iter()
            .find(|c| c.id == container)
            .ok_or_else(|| RuntimeError::ContainerNotFound(container.to_string()))?;
        Ok(item.pod_sandbox_id)
    }

    fn cached_sandbox(&self, container: &str) -> Option<String> {
        self.sandbox_of
            .lock()
            .ok()
            .and_then(|m| m.get(container).cloned())
    }

    fn remember(&self, container: &str, sandbox: &str) {
        if let Ok(mut m) = self.sandbox_of.lock() {
            m.insert(container.to_string(), sandbox.to_string());
        }
    }

    fn forget(&self, container: &str) {
        if let Ok(mut m) = self.sandbox_of.lock() {
            m.remove(container);
        }
    }

    /// `ListContainers` as list items (no exit codes or times).
    async fn list_container_items(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>> {
        let mut c = self.runtime.clone();
        let resp = call(
            "ListContainers",
            self.timeouts.normal,
            Subject::Nothing,
            c.list_containers(request(
                pb::ListContainersRequest {
                    filter: Some(map::container_filter(filter)),
                },
                self.timeouts.normal,
            )),
        )
        .await?;
        let items: Vec<ContainerStatus> = resp
            .containers
            .into_iter()
            .map(map::container_item)
            .collect();
        for i in &items {
            self.remember(&i.id, &i.pod_sandbox_id);
        }
        Ok(items)
    }

    async fn raw_container_status(&self, id: &str) -> Result<pb::ContainerStatus> {
        let mut c = self.runtime.clone();
        let resp = call(
            "ContainerStatus",
            self.timeouts.normal,
            Subject::Container(id),
            c.container_status(request(
                pb::ContainerStatusRequest {
                    container_id: id.to_string(),
                    verbose: false,
                },
                self.timeouts.normal,
            )),
        )
        .await?;
        resp.status.ok_or_else(|| {
            RuntimeError::Unavailable(format!("ContainerStatus: no status for container {id}"))
        })
    }
}

/// A request carrying `limit` as its gRPC deadline, so the runtime gives up too.
fn request<T>(msg: T, limit: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(limit);
    r
}

/// Await one call with a deadline; name it in any error.
async fn call<T, F>(name: &str, limit: Duration, subject: Subject<'_>, fut: F) -> Result<T>
where
    F: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(RuntimeError::Unavailable(format!(
            "{name}: no answer within {limit:?}"
        ))),
        Ok(Err(status)) => {
            tracing::debug!(call = name, code = ?status.code(), message = status.message(), "CRI call failed");
            Err(status_error(name, subject, &status))
        }
        Ok(Ok(resp)) => Ok(resp.into_inner()),
    }
}

/// `seconds` (≥ 0) as a duration added to a base deadline.
fn plus_secs(base: Duration, seconds: i64) -> Duration {
    base + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

mod service;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_maps_to_the_subject() {
        let s = tonic::Status::not_found("an error occurred when try to find sandbox: not found");
        assert!(matches!(
            status_error("StopPodSandbox", Subject::Sandbox("abc"), &s),
            RuntimeError::SandboxNotFound(id) if id == "abc"
        ));
        assert!(matches!(
            status_error("StartContainer", Subject::Container("c1"), &s),
            RuntimeError::ContainerNotFound(id) if id == "c1"
        ));
    }

    #[test]
    fn other_errors_name_the_call() {
        let s = tonic::Status::unknown("failed to reserve sandbox name");
        let e = status_error("RunPodSandbox", Subject::Nothing, &s);
        assert_eq!(
            e.to_string(),
            "runtime unavailable: RunPodSandbox: failed to reserve sandbox name"
        );
        let e = status_error("CreateContainer", Subject::NewContainer("web"), &s);
        assert_eq!(
            e.to_string(),
            "container web: CreateContainer: failed to reserve sandbox name"
        );
        let e = status_error("PullImage", Subject::Image("busybox"), &s);
        assert!(matches!(e, RuntimeError::ImagePull { .. }), "{e}");
        let e = status_error(
            "PullImage",
            Subject::Image("busybox"),
            &tonic::Status::unavailable("connection refused"),
        );
        assert!(matches!(e, RuntimeError::Unavailable(_)), "{e}");
        let e = status_error(
            "StartContainer",
            Subject::Container("x"),
            &tonic::Status::failed_precondition("container is in CONTAINER_EXITED state"),
        );
        assert!(matches!(e, RuntimeError::InvalidState(_)), "{e}");
    }

    #[test]
    fn endpoints_must_be_absolute() {
        assert_eq!(
            socket_path("unix:///run/k8slite/containerd/containerd.sock").expect("abs"),
            PathBuf::from("/run/k8slite/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").expect("abs"),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(socket_path("unix://node/containerd.sock").is_err());
        assert!(socket_path("containerd.sock").is_err());
    }

    #[tokio::test]
    async fn calls_to_a_missing_socket_fail_naming_the_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("none.sock");
        let rt = CriRuntime::connect(&sock.display().to_string())
            .expect("client")
            .with_timeouts(CriTimeouts {
                long: Duration::from_secs(2),
                normal: Duration::from_secs(2),
            });
        let e = rt.version().await.expect_err("no runtime");
        assert!(e.to_string().contains("Version:"), "{e}");
        let e = rt
            .wait_ready(Duration::from_millis(200))
            .await
            .expect_err("not ready");
        assert!(e.to_string().contains("not ready"), "{e}");
    }
}
