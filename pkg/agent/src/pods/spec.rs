//! Pod spec → CRI configuration, as the kubelet maps it: the sandbox (hostname, DNS, host
//! namespaces, port mappings, cgroup parent, log directory) and each container (command and
//! args with `$(VAR)` expansion, resources → cgroup settings, securityContext, mounts).
//! Pure functions: environment values and volume mounts are resolved by the caller.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8slite_api::quantity::Quantity;
use k8slite_runtime::{
    Capabilities, ContainerConfig, ContainerMetadata, DnsConfig, LinuxResources, Mount,
    PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol, SecurityContext,
};

/// What the node contributes to every pod's configuration.
#[derive(Debug, Clone, Default)]
pub struct NodeContext {
    /// Cluster DNS server addresses (`10.43.0.10`).
    pub cluster_dns: Vec<String>,
    /// Cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Root of the CRI log directories (`/var/log/pods`); empty: no log directory (fake runtime).
    pub log_root: PathBuf,
    /// Root of the per-pod state directories (`<data-dir>/agent/pods`); empty: none.
    pub pods_dir: PathBuf,
    /// cgroup parent of all pods of this node (`/k8slite-<node>`); empty: the runtime's default.
    pub cgroup_root: String,
    /// The host's resolv.conf (for `dnsPolicy: Default` and search-path inheritance).
    pub host_dns: DnsConfig,
    /// Node allocatable CPU in millicores (default of `limits.cpu` in resourceFieldRef).
    pub allocatable_cpu_milli: i64,
    /// Node allocatable memory in bytes.
    pub allocatable_memory: i64,
}

/// Why a container's configuration cannot be built (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// runAsNonRoot with UID 0.
    #[error("container's runAsUser breaks non-root policy (pod: {pod}, container: {container})")]
    RunsAsRoot {
        /// `name_namespace(uid)`.
        pod: String,
        /// Container name.
        container: String,
    },
    /// runAsNonRoot and the image runs as root.
    #[error(
        "container has runAsNonRoot and image will run as root (pod: {pod}, container: {container})"
    )]
    ImageRunsAsRoot {
        /// `name_namespace(uid)`.
        pod: String,
        /// Container name.
        container: String,
    },
    /// runAsNonRoot and the image names a user by name only.
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod}, container: {container})"
    )]
    NonNumericUser {
        /// The image's user.
        user: String,
        /// `name_namespace(uid)`.
        pod: String,
        /// Container name.
        container: String,
    },
    /// A referenced object or key is missing (env from configMap/secret).
    #[error("{0}")]
    Missing(String),
}

fn spec(pod: &Pod) -> PodSpec {
    pod.spec.clone().unwrap_or_default()
}

/// `name_namespace(uid)`, as the kubelet names pods in messages.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// The pod's hostname: `spec.hostname`, else its name, cut to 63 characters without a
/// trailing `-`/`.` (as the kubelet does).
pub fn hostname(pod: &Pod) -> String {
    let s = spec(pod);
    let name = s
        .hostname
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with('-') || h.ends_with('.') {
        h.pop();
    }
    h
}

/// The pod's fully qualified name when it has a subdomain (`h.sub.ns.svc.<domain>`).
pub fn fqdn(pod: &Pod, domain: &str) -> Option<String> {
    let s = spec(pod);
    let sub = s.subdomain.filter(|d| !d.is_empty())?;
    Some(format!(
        "{}.{}.{}.svc.{}",
        hostname(pod),
        sub,
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        domain
    ))
}

/// Parse a resolv.conf (`nameserver`, `search`/`domain`, `options` lines).
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut cfg = DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => cfg.servers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => {
                cfg.searches = words.map(str::to_string).collect();
            }
            Some("options") => cfg.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    cfg
}

/// The pod's resolv.conf per `dnsPolicy` and `dnsConfig`; `None` for host-network pods with
/// policy `ClusterFirst` (they keep the host's, as upstream).
pub fn dns_config(pod: &Pod, node: &NodeContext) -> Option<DnsConfig> {
    let s = spec(pod);
    let host_network = s.host_network.unwrap_or(false);
    let policy = s.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut cfg = match policy {
        "None" => DnsConfig::default(),
        "Default" => node.host_dns.clone(),
        "ClusterFirst" if host_network => node.host_dns.clone(),
        _ if node.cluster_dns.is_empty() => node.host_dns.clone(),
        _ => {
            let d = &node.cluster_domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(node.host_dns.searches.iter().cloned());
            DnsConfig {
                servers: node.cluster_dns.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(extra) = &s.dns_config {
        for n in extra.nameservers.iter().flatten() {
            if !cfg.servers.contains(n) {
                cfg.servers.push(n.clone());
            }
        }
        for d in extra.searches.iter().flatten() {
            if !cfg.searches.contains(d) {
                cfg.searches.push(d.clone());
            }
        }
        for o in extra.options.iter().flatten() {
            let opt = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or("")),
                None => o.name.clone().unwrap_or_default(),
            };
            let key = opt.split(':').next().unwrap_or("").to_string();
            cfg.options
                .retain(|x| x.split(':').next().unwrap_or("") != key);
            cfg.options.push(opt);
        }
    }
    // Upstream limits: 3 name servers, 32 search domains.
    cfg.servers.truncate(3);
    cfg.searches.truncate(32);
    Some(cfg)
}

/// The pod's `/etc/hosts` (for pods not on the host network).
pub fn etc_hosts(pod: &Pod, pod_ip: &str, domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if !pod_ip.is_empty() {
        match fqdn(pod, domain) {
            Some(f) => out.push_str(&format!("{pod_ip}\t{f}\t{}\n", hostname(pod))),
            None => out.push_str(&format!("{pod_ip}\t{}\n", hostname(pod))),
        }
    }
    let aliases = spec(pod).host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", a.ip));
        }
    }
    out
}

/// The pod's CRI log directory (`<log_root>/<ns>_<name>_<uid>`), or `None` without a log root.
pub fn log_directory(pod: &Pod, node: &NodeContext) -> Option<PathBuf> {
    if node.log_root.as_os_str().is_empty() {
        return None;
    }
    let m = &pod.metadata;
    Some(node.log_root.join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    )))
}

/// The sandbox of `pod`.
pub fn sandbox_config(pod: &Pod, node: &NodeContext) -> PodSandboxConfig {
    let m = &pod.metadata;
    let s = spec(pod);
    let all: Vec<&Container> = s
        .init_containers
        .iter()
        .flatten()
        .chain(s.containers.iter())
        .collect();
    let port_mappings = all
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = p.host_port.filter(|h| *h > 0)?;
            Some(PortMapping {
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect();
    let privileged = all.iter().any(|c| {
        c.security_context
            .as_ref()
            .and_then(|sc| sc.privileged)
            .unwrap_or(false)
    });
    let psc = s.security_context.clone().unwrap_or_default();
    let sysctls = psc
        .sysctls
        .iter()
        .flatten()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    let cgroup_parent = if node.cgroup_root.is_empty() {
        String::new()
    } else {
        format!(
            "{}/pod{}",
            node.cgroup_root.trim_end_matches('/'),
            m.uid.as_deref().unwrap_or("")
        )
    };
    PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            attempt: 0,
        },
        // Host-network pods keep the node's UTS namespace and name (the runtime refuses a
        // hostname there).
        hostname: if s.host_network.unwrap_or(false) {
            String::new()
        } else {
            hostname(pod)
        },
        labels: m.labels.clone().unwrap_or_default(),
        annotations: m.annotations.clone().unwrap_or_default(),
        host_network: s.host_network.unwrap_or(false),
        host_pid: s.host_pid.unwrap_or(false),
        host_ipc: s.host_ipc.unwrap_or(false),
        log_directory: log_directory(pod, node)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dns_config: dns_config(pod, node),
        port_mappings,
        cgroup_parent,
        sysctls,
        privileged,
        run_as_user: psc.run_as_user,
        supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
    }
}

/// Expand `$(VAR)` references against `env` (upstream's rules, [`k8slite_api::expand`]).
pub fn expand(input: &str, env: &HashMap<String, String>) -> String {
    k8slite_api::expand::expand(input, |n| env.get(n).map(String::as_str))
}

fn qty(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    key: &str,
) -> Option<Quantity> {
    list.and_then(|l| l.get(key)).and_then(Quantity::from_k8s)
}

/// Minimum CPU shares the kernel accepts.
const MIN_SHARES: i64 = 2;
/// CFS period the kubelet uses (100 ms).
const CFS_PERIOD: i64 = 100_000;

/// The container's cgroup settings from its requests and limits (kubelet's mapping).
pub fn linux_resources(c: &Container, pod: &Pod, node: &NodeContext) -> LinuxResources {
    let r = c.resources.clone().unwrap_or_default();
    let req_cpu = qty(r.requests.as_ref(), "cpu");
    let lim_cpu = qty(r.limits.as_ref(), "cpu");
    let lim_mem = qty(r.limits.as_ref(), "memory");
    // Requests default to limits (API defaulting does this too).
    let cpu_req_milli = req_cpu.or(lim_cpu).map_or(0, |q| q.milli_i64());
    let cpu_shares = if cpu_req_milli == 0 {
        MIN_SHARES
    } else {
        (cpu_req_milli * 1024 / 1000).max(MIN_SHARES)
    };
    let cpu_quota = lim_cpu
        .map(|q| (q.milli_i64() * CFS_PERIOD / 1000).max(1000))
        .unwrap_or(0);
    let memory_limit_in_bytes = lim_mem.map_or(0, |q| q.value());
    LinuxResources {
        cpu_period: if cpu_quota > 0 { CFS_PERIOD } else { 0 },
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes,
        oom_score_adj: oom_score_adj(c, pod, node),
    }
}

fn qos(pod: &Pod) -> &'static str {
    let s = spec(pod);
    let mut any = false;
    let mut guaranteed = true;
    for c in s
        .containers
        .iter()
        .chain(s.init_containers.iter().flatten())
    {
        let r = c.resources.clone().unwrap_or_default();
        for key in ["cpu", "memory"] {
            let l = qty(r.limits.as_ref(), key);
            let q = qty(r.requests.as_ref(), key).or(l);
            if q.is_some() || l.is_some() {
                any = true;
            }
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn oom_score_adj(c: &Container, pod: &Pod, node: &NodeContext) -> i64 {
    match qos(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let r = c.resources.clone().unwrap_or_default();
            let req = qty(r.requests.as_ref(), "memory")
                .or(qty(r.limits.as_ref(), "memory"))
                .map_or(0, |q| q.value());
            if node.allocatable_memory <= 0 {
                return 999;
            }
            let adj = 1000 - (1000 * i128::from(req) / i128::from(node.allocatable_memory)) as i64;
            adj.clamp(2, 999)
        }
    }
}

/// The container's security settings (pod-level values as defaults), after the
/// runAsNonRoot check against the UID it would run as (`image_user`: the image's `User`).
pub fn security_context(
    pod: &Pod,
    c: &Container,
    image_user: &str,
) -> Result<SecurityContext, ConfigError> {
    let psc = spec(pod).security_context.unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let run_as_user = csc.run_as_user.or(psc.run_as_user);
    let run_as_group = csc.run_as_group.or(psc.run_as_group);
    let non_root = csc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false);
    let (pod_key, container) = (pod_key(pod), c.name.clone());
    if non_root {
        match run_as_user {
            Some(0) => {
                return Err(ConfigError::RunsAsRoot {
                    pod: pod_key,
                    container,
                });
            }
            Some(_) => {}
            None => {
                let user = image_user.split(':').next().unwrap_or("");
                match user.parse::<i64>() {
                    Ok(0) => {
                        return Err(ConfigError::ImageRunsAsRoot {
                            pod: pod_key,
                            container,
                        });
                    }
                    Ok(_) => {}
                    Err(_) if user.is_empty() || user == "root" => {
                        return Err(ConfigError::ImageRunsAsRoot {
                            pod: pod_key,
                            container,
                        });
                    }
                    Err(_) => {
                        return Err(ConfigError::NonNumericUser {
                            user: user.to_string(),
                            pod: pod_key,
                            container,
                        });
                    }
                }
            }
        }
    }
    let caps = csc.capabilities.clone().unwrap_or_default();
    let privileged = csc.privileged.unwrap_or(false);
    let mut groups = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(fs) = psc.fs_group
        && !groups.contains(&fs)
    {
        groups.push(fs);
    }
    Ok(SecurityContext {
        privileged,
        capabilities: Capabilities {
            add: caps.add.unwrap_or_default(),
            drop: caps.drop.unwrap_or_default(),
        },
        run_as_user,
        run_as_group,
        run_as_username: String::new(),
        readonly_rootfs: csc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: groups,
        // allowPrivilegeEscalation defaults to true; false sets no_new_privs.
        no_new_privs: !privileged && csc.allow_privilege_escalation == Some(false),
    })
}

/// The whole container configuration for attempt `attempt` of `c`. `env` is the resolved
/// environment in order; `mounts` the volume mounts (plus /etc/hosts etc.).
pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    security: SecurityContext,
    node: &NodeContext,
) -> ContainerConfig {
    let m = &pod.metadata;
    let map: HashMap<String, String> = env.iter().cloned().collect();
    let labels = BTreeMap::from([
        ("io.kubernetes.container.name".to_string(), c.name.clone()),
        (
            "io.kubernetes.pod.name".to_string(),
            m.name.clone().unwrap_or_default(),
        ),
        (
            "io.kubernetes.pod.namespace".to_string(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (
            "io.kubernetes.pod.uid".to_string(),
            m.uid.clone().unwrap_or_default(),
        ),
    ]);
    let annotations = BTreeMap::from([
        (
            "io.kubernetes.container.restartCount".to_string(),
            attempt.to_string(),
        ),
        (
            "io.kubernetes.container.terminationMessagePath".to_string(),
            c.termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        ),
    ]);
    ContainerConfig {
        metadata: ContainerMetadata {
            name: c.name.clone(),
            attempt,
        },
        image: c.image.clone().unwrap_or_default(),
        command: c
            .command
            .iter()
            .flatten()
            .map(|s| expand(s, &map))
            .collect(),
        args: c.args.iter().flatten().map(|s| expand(s, &map)).collect(),
        envs: env,
        labels,
        annotations,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        mounts,
        log_path: if node.log_root.as_os_str().is_empty() {
            String::new()
        } else {
            format!("{}/{attempt}.log", c.name)
        },
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        resources: Some(linux_resources(c, pod, node)),
        security,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    fn node() -> NodeContext {
        NodeContext {
            cluster_dns: vec!["10.43.0.10".into()],
            cluster_domain: "cluster.local".into(),
            log_root: "/var/log/pods".into(),
            cgroup_root: "/k8slite-n1".into(),
            host_dns: DnsConfig {
                servers: vec!["192.0.2.53".into()],
                searches: vec!["example.lan".into()],
                options: vec![],
            },
            allocatable_memory: 8 << 30,
            allocatable_cpu_milli: 2000,
            ..NodeContext::default()
        }
    }

    #[test]
    fn resolv_conf_parses() {
        let c = parse_resolv_conf(
            "# x\nnameserver 192.0.2.53\nsearch a.lan b.lan\noptions ndots:2 edns0\n",
        );
        assert_eq!(c.servers, vec!["192.0.2.53"]);
        assert_eq!(c.searches, vec!["a.lan", "b.lan"]);
        assert_eq!(c.options, vec!["ndots:2", "edns0"]);
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        let env = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)", &env), "x-$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("a$b $(A", &env), "a$b $(A");
        assert_eq!(expand("$(A)$(A)", &env), "xx");
    }

    #[test]
    fn cluster_first_dns_and_dns_config_merge() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [], "dnsConfig": {"nameservers": ["1.1.1.1"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}),
        );
        let d = dns_config(&p, &node()).expect("dns");
        assert_eq!(d.servers, vec!["10.43.0.10", "1.1.1.1"]);
        assert_eq!(
            d.searches,
            vec![
                "ns.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "example.lan"
            ]
        );
        assert_eq!(d.options, vec!["ndots:2", "edns0"]);
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "dnsPolicy": "Default"}}),
        );
        assert_eq!(
            dns_config(&p, &node()).expect("dns").servers,
            vec!["192.0.2.53"]
        );
    }

    #[test]
    fn sandbox_maps_ports_cgroups_logs_and_hostname() {
        let p = pod(
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"hostname": "h", "subdomain": "s", "containers": [{"name": "c", "image": "x",
                "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}]}}),
        );
        let s = sandbox_config(&p, &node());
        assert_eq!(s.hostname, "h");
        assert_eq!(s.cgroup_parent, "/k8slite-n1/podu1");
        assert_eq!(s.log_directory, "/var/log/pods/ns_web_u1");
        assert_eq!(s.port_mappings.len(), 1);
        assert_eq!(s.port_mappings[0].host_port, 8080);
        let hosts = etc_hosts(&p, "10.42.0.5", "cluster.local");
        assert!(
            hosts.contains("10.42.0.5\th.s.ns.svc.cluster.local\th\n"),
            "{hosts}"
        );
    }

    #[test]
    fn resources_map_to_cgroup_settings() {
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}}),
        );
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let r = linux_resources(c, &p, &node());
        assert_eq!(r.cpu_shares, 512);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.oom_score_adj, -997);
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}));
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let r = linux_resources(c, &p, &node());
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.memory_limit_in_bytes,
                r.oom_score_adj
            ),
            (2, 0, 0, 1000)
        );
    }

    #[test]
    fn security_context_merges_and_checks_non_root() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"securityContext": {"runAsUser": 1000, "runAsNonRoot": true, "fsGroup": 2000},
              "containers": [{"name": "c", "securityContext": {"readOnlyRootFilesystem": true,
                 "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}),
        );
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let s = security_context(&p, c, "").expect("ok");
        assert_eq!(s.run_as_user, Some(1000));
        assert!(s.readonly_rootfs && s.no_new_privs);
        assert_eq!(s.supplemental_groups, vec![2000]);
        assert_eq!(s.capabilities.drop, vec!["ALL"]);
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]}}),
        );
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let e = security_context(&p, c, "").expect_err("root");
        assert!(e.to_string().contains("image will run as root"), "{e}");
        assert!(security_context(&p, c, "1000").is_ok());
        assert!(matches!(
            security_context(&p, c, "www"),
            Err(ConfigError::NonNumericUser { .. })
        ));
    }

    #[test]
    fn container_config_expands_command_and_sets_log_path() {
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "image": "busybox", "command": ["sh", "-c"], "args": ["echo $(MSG)"], "workingDir": "/w"}]}}),
        );
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let cfg = container_config(
            &p,
            c,
            2,
            vec![("MSG".into(), "hi".into())],
            vec![],
            SecurityContext::default(),
            &node(),
        );
        assert_eq!(cfg.args, vec!["echo hi"]);
        assert_eq!(cfg.log_path, "c/2.log");
        assert_eq!(cfg.working_dir, "/w");
    }
}
