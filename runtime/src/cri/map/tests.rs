//! Every field of the trait's configs lands in the CRI message, and statuses come back whole.

use std::collections::BTreeMap;

use super::*;
use crate::{Capabilities, ContainerMetadata};

fn map_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sandbox() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            attempt: 2,
        },
        hostname: "web".into(),
        labels: map_of(&[("app", "web")]),
        annotations: map_of(&[("a", "b")]),
        host_network: false,
        host_pid: false,
        host_ipc: false,
        log_directory: "/var/log/pods/default_web_u-1".into(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.43.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![PortMapping {
            protocol: Protocol::Udp,
            container_port: 53,
            host_port: 5353,
            host_ip: "127.0.0.1".into(),
        }],
        cgroup_parent: "/k8slite-n1/podu-1".into(),
        sysctls: map_of(&[("net.ipv4.ping_group_range", "0 2147483647")]),
        privileged: true,
        run_as_user: Some(1000),
        supplemental_groups: vec![5, 6],
    }
}

#[test]
fn sandbox_config_maps_every_field() {
    let c = sandbox_config(&sandbox());
    let m = c.metadata.as_ref().expect("metadata");
    assert_eq!(
        (
            m.name.as_str(),
            m.namespace.as_str(),
            m.uid.as_str(),
            m.attempt
        ),
        ("web", "default", "u-1", 2)
    );
    assert_eq!(c.hostname, "web");
    assert_eq!(c.log_directory, "/var/log/pods/default_web_u-1");
    let d = c.dns_config.as_ref().expect("dns");
    assert_eq!(d.servers, ["10.43.0.10"]);
    assert_eq!(d.searches, ["default.svc.cluster.local"]);
    assert_eq!(d.options, ["ndots:5"]);
    assert_eq!(
        c.port_mappings,
        [pb::PortMapping {
            protocol: pb::Protocol::Udp.into(),
            container_port: 53,
            host_port: 5353,
            host_ip: "127.0.0.1".into(),
        }]
    );
    assert_eq!(c.labels, map_of(&[("app", "web")]));
    assert_eq!(c.annotations, map_of(&[("a", "b")]));
    let l = c.linux.as_ref().expect("linux");
    assert_eq!(l.cgroup_parent, "/k8slite-n1/podu-1");
    assert_eq!(l.sysctls.len(), 1);
    let sc = l.security_context.as_ref().expect("security");
    assert!(sc.privileged);
    assert_eq!(sc.run_as_user, Some(pb::Int64Value { value: 1000 }));
    assert_eq!(sc.supplemental_groups, [5, 6]);
    let ns = sc.namespace_options.as_ref().expect("namespaces");
    assert_eq!(ns.network(), pb::NamespaceMode::Pod);
    assert_eq!(ns.pid(), pb::NamespaceMode::Container);
    assert_eq!(ns.ipc(), pb::NamespaceMode::Pod);
}

#[test]
fn host_namespaces_and_no_dns() {
    let mut s = sandbox();
    s.host_network = true;
    s.host_pid = true;
    s.host_ipc = true;
    s.dns_config = None;
    s.run_as_user = None;
    let c = sandbox_config(&s);
    assert!(c.dns_config.is_none());
    assert_eq!(c.hostname, "", "the node's UTS namespace keeps its name");
    let sc = c.linux.and_then(|l| l.security_context).expect("security");
    assert_eq!(sc.run_as_user, None);
    let ns = sc.namespace_options.expect("namespaces");
    assert_eq!(ns.network(), pb::NamespaceMode::Node);
    assert_eq!(ns.pid(), pb::NamespaceMode::Node);
    assert_eq!(ns.ipc(), pb::NamespaceMode::Node);
}

#[test]
fn container_config_maps_every_field() {
    let mut s = sandbox();
    s.host_network = true;
    let c = ContainerConfig {
        metadata: ContainerMetadata {
            name: "app".into(),
            attempt: 3,
        },
        image: "docker.io/library/busybox:latest".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo hi".into()],
        envs: vec![("A".into(), "1".into()), ("B".into(), "2".into())],
        labels: map_of(&[("io.kubernetes.container.name", "app")]),
        annotations: map_of(&[("io.kubernetes.container.restartCount", "3")]),
        working_dir: "/work".into(),
        mounts: vec![
            Mount {
                container_path: "/data".into(),
                host_path: "/var/lib/k8slite/agent/pods/u-1/volumes/data".into(),
                readonly: true,
                propagation: MountPropagation::HostToContainer,
            },
            Mount {
                container_path: "/shared".into(),
                host_path: "/srv".into(),
                readonly: false,
                propagation: MountPropagation::Bidirectional,
            },
        ],
        log_path: "app/3.log".into(),
        stdin: true,
        stdin_once: true,
        tty: true,
        resources: Some(LinuxResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 999,
        }),
        security: SecurityContext {
            privileged: false,
            capabilities: Capabilities {
                add: vec!["NET_ADMIN".into()],
                drop: vec!["ALL".into()],
            },
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            run_as_username: String::new(),
            readonly_rootfs: true,
            supplemental_groups: vec![4000],
            no_new_privs: true,
        },
    };
    let p = container_config(&c, &s);
    let m = p.metadata.as_ref().expect("metadata");
    assert_eq!((m.name.as_str(), m.attempt), ("app", 3));
    assert_eq!(
        p.image.as_ref().map(|i| i.image.as_str()),
        Some("docker.io/library/busybox:latest")
    );
    assert_eq!(p.command, ["sh", "-c"]);
    assert_eq!(p.args, ["echo hi"]);
    assert_eq!(p.working_dir, "/work");
    assert_eq!(
        p.envs
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect::<Vec<_>>(),
        [("A", "1"), ("B", "2")]
    );
    assert_eq!(p.mounts.len(), 2);
    assert!(p.mounts[0].readonly);
    assert_eq!(
        p.mounts[0].propagation(),
        pb::MountPropagation::PropagationHostToContainer
    );
    assert_eq!(p.mounts[0].container_path, "/data");
    assert_eq!(
        p.mounts[1].propagation(),
        pb::MountPropagation::PropagationBidirectional
    );
    assert_eq!(p.labels, c.labels);
    assert_eq!(p.annotations, c.annotations);
    assert_eq!(p.log_path, "app/3.log");
    assert!(p.stdin && p.stdin_once && p.tty);
    let l = p.linux.as_ref().expect("linux");
    let r = l.resources.as_ref().expect("resources");
    assert_eq!(
        (
            r.cpu_period,
            r.cpu_quota,
            r.cpu_shares,
            r.memory_limit_in_bytes,
            r.oom_score_adj
        ),
        (100_000, 50_000, 512, 64 << 20, 999)
    );
    let sc = l.security_context.as_ref().expect("security");
    let caps = sc.capabilities.as_ref().expect("caps");
    assert_eq!(caps.add_capabilities, ["NET_ADMIN"]);
    assert_eq!(caps.drop_capabilities, ["ALL"]);
    assert!(!sc.privileged);
    assert_eq!(sc.run_as_user, Some(pb::Int64Value { value: 1000 }));
    assert_eq!(sc.run_as_group, Some(pb::Int64Value { value: 3000 }));
    assert!(sc.readonly_rootfs && sc.no_new_privs);
    assert_eq!(sc.supplemental_groups, [4000]);
    assert_eq!(
        sc.namespace_options.as_ref().map(|n| n.network()),
        Some(pb::NamespaceMode::Node)
    );
}

#[test]
fn container_without_resources_or_user() {
    let c = ContainerConfig {
        security: SecurityContext {
            run_as_username: "nobody".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let p = container_config(&c, &PodSandboxConfig::default());
    let l = p.linux.expect("linux");
    assert!(l.resources.is_none());
    let sc = l.security_context.expect("security");
    assert_eq!(sc.run_as_user, None);
    assert_eq!(sc.run_as_username, "nobody");
}

#[test]
fn container_status_comes_back_whole() {
    let s = pb::ContainerStatus {
        id: "c1".into(),
        metadata: Some(pb::ContainerMetadata {
            name: "app".into(),
            attempt: 1,
        }),
        state: pb::ContainerState::ContainerExited.into(),
        created_at: 1,
        started_at: 2,
        finished_at: 3,
        exit_code: 137,
        image: Some(image_spec("docker.io/library/busybox:latest")),
        image_ref: "sha256:abc".into(),
        reason: "OOMKilled".into(),
        message: "killed".into(),
        labels: map_of(&[("l", "1")]),
        annotations: map_of(&[("a", "2")]),
        mounts: Vec::new(),
        log_path: "/var/log/pods/x/app/1.log".into(),
    };
    let c = container_status(s, "sb1".into());
    assert_eq!(c.id, "c1");
    assert_eq!(c.pod_sandbox_id, "sb1");
    assert_eq!(c.metadata.name, "app");
    assert_eq!(c.metadata.attempt, 1);
    assert_eq!(c.state, ContainerState::Exited);
    assert_eq!(
        (c.created_at, c.started_at, c.finished_at, c.exit_code),
        (1, 2, 3, 137)
    );
    assert_eq!(c.image, "docker.io/library/busybox:latest");
    assert_eq!(c.image_ref, "sha256:abc");
    assert_eq!(c.reason, "OOMKilled");
    assert_eq!(c.message, "killed");
    assert_eq!(c.labels, map_of(&[("l", "1")]));
    assert_eq!(c.annotations, map_of(&[("a", "2")]));
    assert_eq!(c.log_path, "/var/log/pods/x/app/1.log");
}

#[test]
fn states_and_filters() {
    for (raw, want) in [
        (0, ContainerState::Created),
        (1, ContainerState::Running),
        (2, ContainerState::Exited),
        (3, ContainerState::Unknown),
        (42, ContainerState::Unknown),
    ] {
        assert_eq!(container_state(raw), want);
    }
    let f = container_filter(&ContainerFilter {
        id: None,
        pod_sandbox_id: Some("sb".into()),
        state: Some(ContainerState::Running),
    });
    assert_eq!(f.id, "");
    assert_eq!(f.pod_sandbox_id, "sb");
    assert_eq!(
        f.state.map(|s| s.state()),
        Some(pb::ContainerState::ContainerRunning)
    );
    let s = sandbox_status(pb::PodSandboxStatus {
        id: "sb".into(),
        state: pb::PodSandboxState::SandboxNotready.into(),
        network: Some(pb::PodSandboxNetworkStatus {
            ip: "10.42.0.7".into(),
            additional_ips: Vec::new(),
        }),
        ..Default::default()
    });
    assert_eq!(s.state, SandboxState::NotReady);
    assert_eq!(s.ip, "10.42.0.7");
}

#[test]
fn image_user_comes_back() {
    let i = image(pb::Image {
        id: "sha256:1".into(),
        repo_tags: vec!["docker.io/library/busybox:latest".into()],
        repo_digests: Vec::new(),
        size: 42,
        uid: Some(pb::Int64Value { value: 65534 }),
        username: String::new(),
        spec: None,
        pinned: false,
    });
    assert_eq!(
        (i.id.as_str(), i.size, i.uid),
        ("sha256:1", 42, Some(65534))
    );
    let named = image(pb::Image {
        username: "nginx".into(),
        ..Default::default()
    });
    assert_eq!((named.uid, named.username.as_str()), (None, "nginx"));
}

#[test]
fn tty_sessions_do_not_ask_for_stderr() {
    let r = StreamRequest {
        container_id: "c".into(),
        cmd: vec!["sh".into()],
        tty: true,
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let e = exec_request(&r);
    assert!(e.tty && e.stdin && e.stdout && !e.stderr);
    let a = attach_request(&StreamRequest { tty: false, ..r });
    assert!(a.stderr && !a.tty);
}
