//! [`ContainerRuntime`] over CRI: one gRPC call per trait method (list calls add one status
//! call per item, since CRI's list items lack what the trait's statuses carry).

use std::time::Duration;

use super::{CriRuntime, DEFAULT_PROBE_TIMEOUT, Subject, call, map, pb, plus_secs, request};
use crate::{
    ContainerConfig, ContainerFilter, ContainerRuntime, ContainerStatus, ExecSyncResponse, Image,
    PodSandboxConfig, PodSandboxStatus, ProbeAction, ProbeKind, ProbeResult, Result, RuntimeError,
    RuntimeVersion, StreamRequest,
};

#[async_trait::async_trait]
impl ContainerRuntime for CriRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        let v = call(
            "Version",
            t,
            Subject::Nothing,
            c.version(request(
                pb::VersionRequest {
                    version: super::CRI_CLIENT_VERSION.to_string(),
                },
                t,
            )),
        )
        .await?;
        Ok(map::version(v))
    }

    async fn update_pod_cidr(&self, pod_cidr: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        call(
            "UpdateRuntimeConfig",
            t,
            Subject::Nothing,
            c.update_runtime_config(request(
                pb::UpdateRuntimeConfigRequest {
                    runtime_config: Some(pb::RuntimeConfig {
                        network_config: Some(pb::NetworkConfig {
                            pod_cidr: pod_cidr.to_string(),
                        }),
                    }),
                },
                t,
            )),
        )
        .await?;
        Ok(())
    }

    async fn network_not_ready(&self) -> Result<Option<String>> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        let r = call(
            "Status",
            t,
            Subject::Nothing,
            c.status(request(pb::StatusRequest { verbose: false }, t)),
        )
        .await?;
        let conditions = r.status.map(|s| s.conditions).unwrap_or_default();
        Ok(
            match conditions.iter().find(|c| c.r#type == "NetworkReady") {
                Some(c) if c.status => None,
                Some(c) => Some(format!(
                    "NetworkReady=false reason:{} message:{}",
                    c.reason, c.message
                )),
                None => Some("NetworkReady=false reason: message:no NetworkReady condition".into()),
            },
        )
    }

    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.long;
        let r = call(
            "RunPodSandbox",
            t,
            Subject::Nothing,
            c.run_pod_sandbox(request(
                pb::RunPodSandboxRequest {
                    config: Some(map::sandbox_config(config)),
                    runtime_handler: String::new(),
                },
                t,
            )),
        )
        .await?;
        Ok(r.pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.long;
        call(
            "StopPodSandbox",
            t,
            Subject::Sandbox(id),
            c.stop_pod_sandbox(request(
                pb::StopPodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                },
                t,
            )),
        )
        .await?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.long;
        let r = call(
            "RemovePodSandbox",
            t,
            Subject::Sandbox(id),
            c.remove_pod_sandbox(request(
                pb::RemovePodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                },
                t,
            )),
        )
        .await;
        if let Ok(mut m) = self.sandbox_of.lock() {
            m.retain(|_, s| s != id);
        }
        match r {
            Ok(_) | Err(RuntimeError::SandboxNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        let r = call(
            "PodSandboxStatus",
            t,
            Subject::Sandbox(id),
            c.pod_sandbox_status(request(
                pb::PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_string(),
                    verbose: false,
                },
                t,
            )),
        )
        .await?;
        let status = r.status.ok_or_else(|| {
            RuntimeError::Unavailable(format!("PodSandboxStatus: no status for sandbox {id}"))
        })?;
        Ok(map::sandbox_status(status))
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        let r = call(
            "ListPodSandbox",
            t,
            Subject::Nothing,
            c.list_pod_sandbox(request(pb::ListPodSandboxRequest { filter: None }, t)),
        )
        .await?;
        // The list items have no network status: ask for each sandbox's (its IP).
        let statuses = futures::future::join_all(r.items.into_iter().map(|item| async move {
            match self.pod_sandbox_status(&item.id).await {
                Ok(s) => Ok(Some(s)),
                Err(RuntimeError::SandboxNotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }))
        .await;
        statuses.into_iter().filter_map(Result::transpose).collect()
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        let r = call(
            "CreateContainer",
            t,
            Subject::NewContainer(&config.metadata.name),
            c.create_container(request(
                pb::CreateContainerRequest {
                    pod_sandbox_id: sandbox_id.to_string(),
                    config: Some(map::container_config(config, sandbox_config)),
                    sandbox_config: Some(map::sandbox_config(sandbox_config)),
                },
                t,
            )),
        )
        .await?;
        self.remember(&r.container_id, sandbox_id);
        Ok(r.container_id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        call(
            "StartContainer",
            t,
            Subject::Starting(id),
            c.start_container(request(
                pb::StartContainerRequest {
                    container_id: id.to_string(),
                },
                t,
            )),
        )
        .await?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<()> {
        let mut c = self.runtime.clone();
        let t = plus_secs(self.timeouts.normal, timeout_seconds);
        call(
            "StopContainer",
            t,
            Subject::Container(id),
            c.stop_container(request(
                pb::StopContainerRequest {
                    container_id: id.to_string(),
                    timeout: timeout_seconds.max(0),
                },
                t,
            )),
        )
        .await?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        let r = call(
            "RemoveContainer",
            t,
            Subject::Container(id),
            c.remove_container(request(
                pb::RemoveContainerRequest {
                    container_id: id.to_string(),
                },
                t,
            )),
        )
        .await;
        self.forget(id);
        match r {
            Ok(_) | Err(RuntimeError::ContainerNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>> {
        let items = self.list_container_items(filter).await?;
        // List items lack times, exit codes, reasons and log paths: complete each with its
        // ContainerStatus (a container removed in between is left out).
        let statuses = futures::future::join_all(items.into_iter().map(|item| async move {
            match self.raw_container_status(&item.id).await {
                Ok(s) => Ok(Some(map::container_status(s, item.pod_sandbox_id))),
                Err(RuntimeError::ContainerNotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }))
        .await;
        statuses.into_iter().filter_map(Result::transpose).collect()
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let status = self.raw_container_status(id).await?;
        let sandbox = self.sandbox_id_of(id).await?;
        Ok(map::container_status(status, sandbox))
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout_seconds: i64,
    ) -> Result<ExecSyncResponse> {
        let mut c = self.runtime.clone();
        let t = plus_secs(self.timeouts.normal, timeout_seconds);
        let r = call(
            "ExecSync",
            t,
            Subject::Container(id),
            c.exec_sync(request(
                pb::ExecSyncRequest {
                    container_id: id.to_string(),
                    cmd: cmd.to_vec(),
                    timeout: timeout_seconds.max(0),
                },
                t,
            )),
        )
        .await?;
        Ok(ExecSyncResponse {
            stdout: r.stdout,
            stderr: r.stderr,
            exit_code: r.exit_code,
        })
    }

    async fn probe(&self, id: &str, kind: ProbeKind, action: &ProbeAction) -> Result<ProbeResult> {
        self.probe_with_timeout(id, kind, action, DEFAULT_PROBE_TIMEOUT)
            .await
    }

    async fn probe_with_timeout(
        &self,
        id: &str,
        _kind: ProbeKind,
        action: &ProbeAction,
        timeout: Duration,
    ) -> Result<ProbeResult> {
        self.run_probe(id, action, timeout).await
    }

    async fn exec(&self, req: &StreamRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        let r = call(
            "Exec",
            t,
            Subject::Container(&req.container_id),
            c.exec(request(map::exec_request(req), t)),
        )
        .await?;
        Ok(r.url)
    }

    async fn attach(&self, req: &StreamRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        let r = call(
            "Attach",
            t,
            Subject::Container(&req.container_id),
            c.attach(request(map::attach_request(req), t)),
        )
        .await?;
        Ok(r.url)
    }

    async fn port_forward(&self, sandbox_id: &str, ports: &[i32]) -> Result<String> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        let r = call(
            "PortForward",
            t,
            Subject::Sandbox(sandbox_id),
            c.port_forward(request(
                pb::PortForwardRequest {
                    pod_sandbox_id: sandbox_id.to_string(),
                    port: ports.to_vec(),
                },
                t,
            )),
        )
        .await?;
        Ok(r.url)
    }

    async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let t = self.timeouts.normal;
        call(
            "ReopenContainerLog",
            t,
            Subject::Container(id),
            c.reopen_container_log(request(
                pb::ReopenContainerLogRequest {
                    container_id: id.to_string(),
                },
                t,
            )),
        )
        .await?;
        Ok(())
    }

    async fn list_images(&self) -> Result<Vec<Image>> {
        let mut c = self.images.clone();
        let t = self.timeouts.normal;
        let r = call(
            "ListImages",
            t,
            Subject::Nothing,
            c.list_images(request(pb::ListImagesRequest { filter: None }, t)),
        )
        .await?;
        Ok(r.images.into_iter().map(map::image).collect())
    }

    async fn pull_image(&self, image: &str) -> Result<String> {
        let mut c = self.images.clone();
        let t = self.timeouts.long;
        let r = call(
            "PullImage",
            t,
            Subject::Image(image),
            c.pull_image(request(
                pb::PullImageRequest {
                    image: Some(map::image_spec(image)),
                    auth: None,
                    sandbox_config: None,
                },
                t,
            )),
        )
        .await?;
        Ok(r.image_ref)
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>> {
        let mut c = self.images.clone();
        let t = self.timeouts.normal;
        let r = call(
            "ImageStatus",
            t,
            Subject::Nothing,
            c.image_status(request(
                pb::ImageStatusRequest {
                    image: Some(map::image_spec(image)),
                    verbose: false,
                },
                t,
            )),
        )
        .await?;
        Ok(r.image.map(map::image))
    }
}
