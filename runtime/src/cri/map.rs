//! Mapping between k8slite's CRI-shaped types (crate root) and the generated CRI v1 messages.
//! Pure functions, so every field can be checked without a runtime.

use super::pb;
use crate::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStatus,
    DnsConfig, Image, LinuxResources, Mount, MountPropagation, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatus, PortMapping, Protocol, RuntimeVersion, SandboxState,
    SecurityContext, StreamRequest,
};

/// `PodSandboxMetadata` → CRI.
pub(crate) fn sandbox_metadata(m: &PodSandboxMetadata) -> pb::PodSandboxMetadata {
    pb::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

/// CRI → `PodSandboxMetadata`.
pub(crate) fn from_sandbox_metadata(m: Option<pb::PodSandboxMetadata>) -> PodSandboxMetadata {
    let m = m.unwrap_or_default();
    PodSandboxMetadata {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        attempt: m.attempt,
    }
}

fn dns(d: &DnsConfig) -> pb::DnsConfig {
    pb::DnsConfig {
        servers: d.servers.clone(),
        searches: d.searches.clone(),
        options: d.options.clone(),
    }
}

fn protocol(p: Protocol) -> pb::Protocol {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
        Protocol::Sctp => pb::Protocol::Sctp,
    }
}

fn port_mapping(p: &PortMapping) -> pb::PortMapping {
    pb::PortMapping {
        protocol: protocol(p.protocol).into(),
        container_port: p.container_port,
        host_port: p.host_port,
        host_ip: p.host_ip.clone(),
    }
}

/// The namespace modes of a pod: kubelet's choice (network and IPC per pod, PID per container)
/// unless the pod shares the node's.
pub(crate) fn namespace_options(c: &PodSandboxConfig) -> pb::NamespaceOption {
    let mode = |host: bool, default: pb::NamespaceMode| {
        if host {
            pb::NamespaceMode::Node
        } else {
            default
        }
    };
    pb::NamespaceOption {
        network: mode(c.host_network, pb::NamespaceMode::Pod).into(),
        pid: mode(c.host_pid, pb::NamespaceMode::Container).into(),
        ipc: mode(c.host_ipc, pb::NamespaceMode::Pod).into(),
        target_id: String::new(),
    }
}

fn int64(v: Option<i64>) -> Option<pb::Int64Value> {
    v.map(|value| pb::Int64Value { value })
}

/// `PodSandboxConfig` → CRI. A host-network sandbox gets no hostname (it has the node's UTS
/// namespace; runc refuses to set one there), as the kubelet does.
pub(crate) fn sandbox_config(c: &PodSandboxConfig) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(sandbox_metadata(&c.metadata)),
        hostname: if c.host_network {
            String::new()
        } else {
            c.hostname.clone()
        },
        log_directory: c.log_directory.clone(),
        dns_config: c.dns_config.as_ref().map(dns),
        port_mappings: c.port_mappings.iter().map(port_mapping).collect(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: c.cgroup_parent.clone(),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(c)),
                run_as_user: int64(c.run_as_user),
                readonly_rootfs: false,
                supplemental_groups: c.supplemental_groups.clone(),
                privileged: c.privileged,
                run_as_group: None,
            }),
            sysctls: c.sysctls.clone(),
        }),
    }
}

fn propagation(p: MountPropagation) -> pb::MountPropagation {
    match p {
        MountPropagation::Private => pb::MountPropagation::PropagationPrivate,
        MountPropagation::HostToContainer => pb::MountPropagation::PropagationHostToContainer,
        MountPropagation::Bidirectional => pb::MountPropagation::PropagationBidirectional,
    }
}

fn mount(m: &Mount) -> pb::Mount {
    pb::Mount {
        container_path: m.container_path.clone(),
        host_path: m.host_path.clone(),
        readonly: m.readonly,
        selinux_relabel: false,
        propagation: propagation(m.propagation).into(),
    }
}

fn resources(r: &LinuxResources) -> pb::LinuxContainerResources {
    pb::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        ..Default::default()
    }
}

fn security(s: &SecurityContext, sandbox: &PodSandboxConfig) -> pb::LinuxContainerSecurityContext {
    pb::LinuxContainerSecurityContext {
        capabilities: Some(pb::Capability {
            add_capabilities: s.capabilities.add.clone(),
            drop_capabilities: s.capabilities.drop.clone(),
        }),
        privileged: s.privileged,
        namespace_options: Some(namespace_options(sandbox)),
        run_as_user: int64(s.run_as_user),
        run_as_username: s.run_as_username.clone(),
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: s.supplemental_groups.clone(),
        no_new_privs: s.no_new_privs,
        run_as_group: int64(s.run_as_group),
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
    }
}

/// `ContainerConfig` → CRI (the sandbox's config supplies the namespace modes).
pub(crate) fn container_config(
    c: &ContainerConfig,
    sandbox: &PodSandboxConfig,
) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: c.metadata.name.clone(),
            attempt: c.metadata.attempt,
        }),
        image: Some(image_spec(&c.image)),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        envs: c
            .envs
            .iter()
            .map(|(key, value)| pb::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: c.mounts.iter().map(mount).collect(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        log_path: c.log_path.clone(),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        linux: Some(pb::LinuxContainerConfig {
            resources: c.resources.as_ref().map(resources),
            security_context: Some(security(&c.security, sandbox)),
        }),
    }
}

/// An `ImageSpec` naming `image`.
pub(crate) fn image_spec(image: &str) -> pb::ImageSpec {
    pb::ImageSpec {
        image: image.to_string(),
        annotations: Default::default(),
    }
}

fn sandbox_state(s: i32) -> SandboxState {
    match pb::PodSandboxState::try_from(s) {
        Ok(pb::PodSandboxState::SandboxReady) => SandboxState::Ready,
        _ => SandboxState::NotReady,
    }
}

/// CRI `PodSandboxStatus` → ours.
pub(crate) fn sandbox_status(s: pb::PodSandboxStatus) -> PodSandboxStatus {
    PodSandboxStatus {
        id: s.id,
        metadata: from_sandbox_metadata(s.metadata),
        state: sandbox_state(s.state),
        created_at: s.created_at,
        ip: s.network.map(|n| n.ip).unwrap_or_default(),
        labels: s.labels,
    }
}

fn container_state(s: i32) -> ContainerState {
    match pb::ContainerState::try_from(s) {
        Ok(pb::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(pb::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(pb::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

fn to_container_state(s: ContainerState) -> pb::ContainerState {
    match s {
        ContainerState::Created => pb::ContainerState::ContainerCreated,
        ContainerState::Running => pb::ContainerState::ContainerRunning,
        ContainerState::Exited => pb::ContainerState::ContainerExited,
        ContainerState::Unknown => pb::ContainerState::ContainerUnknown,
    }
}

fn container_metadata(m: Option<pb::ContainerMetadata>) -> ContainerMetadata {
    let m = m.unwrap_or_default();
    ContainerMetadata {
        name: m.name,
        attempt: m.attempt,
    }
}

/// CRI `ContainerStatus` → ours (CRI's status does not name the sandbox: the caller knows it).
pub(crate) fn container_status(s: pb::ContainerStatus, pod_sandbox_id: String) -> ContainerStatus {
    ContainerStatus {
        id: s.id,
        pod_sandbox_id,
        metadata: container_metadata(s.metadata),
        state: container_state(s.state),
        created_at: s.created_at,
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        image: s.image.map(|i| i.image).unwrap_or_default(),
        image_ref: s.image_ref,
        reason: s.reason,
        message: s.message,
        labels: s.labels,
        annotations: s.annotations,
        log_path: s.log_path,
    }
}

/// CRI `Container` (a list item: no times, exit code or reason) → ours.
pub(crate) fn container_item(c: pb::Container) -> ContainerStatus {
    ContainerStatus {
        id: c.id,
        pod_sandbox_id: c.pod_sandbox_id,
        metadata: container_metadata(c.metadata),
        state: container_state(c.state),
        created_at: c.created_at,
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        image: c.image.map(|i| i.image).unwrap_or_default(),
        image_ref: c.image_ref,
        reason: String::new(),
        message: String::new(),
        labels: c.labels,
        annotations: c.annotations,
        log_path: String::new(),
    }
}

/// Our container filter → CRI.
pub(crate) fn container_filter(f: &ContainerFilter) -> pb::ContainerFilter {
    pb::ContainerFilter {
        id: f.id.clone().unwrap_or_default(),
        state: f.state.map(|s| pb::ContainerStateValue {
            state: to_container_state(s).into(),
        }),
        pod_sandbox_id: f.pod_sandbox_id.clone().unwrap_or_default(),
        label_selector: Default::default(),
    }
}

/// CRI `Image` → ours.
pub(crate) fn image(i: pb::Image) -> Image {
    Image {
        id: i.id,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
        size: i.size,
        uid: i.uid.map(|u| u.value),
        username: i.username,
    }
}

/// CRI `VersionResponse` → ours.
pub(crate) fn version(v: pb::VersionResponse) -> RuntimeVersion {
    RuntimeVersion {
        runtime_name: v.runtime_name,
        runtime_version: v.runtime_version,
        runtime_api_version: v.runtime_api_version,
    }
}

/// Our exec request → CRI.
pub(crate) fn exec_request(r: &StreamRequest) -> pb::ExecRequest {
    pb::ExecRequest {
        container_id: r.container_id.clone(),
        cmd: r.cmd.clone(),
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        // With a TTY stderr is merged into stdout; CRI rejects asking for both.
        stderr: r.stderr && !r.tty,
    }
}

/// Our attach request → CRI.
pub(crate) fn attach_request(r: &StreamRequest) -> pb::AttachRequest {
    pb::AttachRequest {
        container_id: r.container_id.clone(),
        stdin: r.stdin,
        tty: r.tty,
        stdout: r.stdout,
        stderr: r.stderr && !r.tty,
    }
}

#[cfg(test)]
mod tests;
