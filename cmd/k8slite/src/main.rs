//! `k8slite`: a lightweight, single-binary Kubernetes distribution. Wiring only: CLI and config
//! → `k8slite_server::run` / `k8slite_agent::run`.

mod agent;
mod alloc;
mod config;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

/// Lightweight Kubernetes for edge devices: API server, SQLite datastore, controllers and a node
/// agent in one binary.
#[derive(Debug, Parser)]
#[command(name = "k8slite", version = concat!(env!("CARGO_PKG_VERSION"), " (Kubernetes v1.33 API)"), about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane (API server, datastore, controllers) and, unless
    /// --disable-agent, a node agent on this machine.
    Server(ServerArgs),
    /// Run a node agent that joins a server (`--runtime fake`: a simulated node).
    Agent(agent::AgentArgs),
}

/// Flags of `k8slite server`. Every long flag can also be set in the config file (same name)
/// or as an environment variable `K8SLITE_<FLAG_IN_CAPS>`; flags win over the environment,
/// which wins over the config file.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
struct ServerArgs {
    /// Config file (YAML; keys are the long flag names).
    #[arg(
        long,
        env = "K8SLITE_CONFIG",
        default_value = "/etc/k8slite/config.yaml",
        value_name = "FILE"
    )]
    config: PathBuf,
    /// Directory holding the datastore, certificates and token.
    #[arg(
        long,
        env = "K8SLITE_DATA_DIR",
        default_value = "/var/lib/k8slite",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// Address the API server listens on.
    #[arg(
        long,
        env = "K8SLITE_BIND_ADDRESS",
        default_value = "0.0.0.0",
        value_name = "IP"
    )]
    bind_address: IpAddr,
    /// Port of the HTTPS API.
    #[arg(
        long,
        env = "K8SLITE_HTTPS_LISTEN_PORT",
        default_value_t = 6443,
        value_name = "PORT"
    )]
    https_listen_port: u16,
    /// Address advertised to clients and nodes (default: the first non-loopback address).
    #[arg(long, env = "K8SLITE_ADVERTISE_ADDRESS", value_name = "IP")]
    advertise_address: Option<IpAddr>,
    /// Extra subject alternative name (IP or DNS) on the serving certificate; repeatable.
    #[arg(
        long = "tls-san",
        env = "K8SLITE_TLS_SAN",
        value_delimiter = ',',
        value_name = "SAN"
    )]
    tls_san: Vec<String>,
    /// Where to write the admin kubeconfig.
    #[arg(
        long,
        env = "K8SLITE_WRITE_KUBECONFIG",
        default_value = "/etc/k8slite/k8slite.yaml",
        value_name = "FILE"
    )]
    write_kubeconfig: PathBuf,
    /// File mode of the admin kubeconfig (octal).
    #[arg(
        long,
        env = "K8SLITE_WRITE_KUBECONFIG_MODE",
        default_value = "0600",
        value_name = "MODE"
    )]
    write_kubeconfig_mode: String,
    /// Pod network range; each node gets a /24 from it.
    #[arg(
        long,
        env = "K8SLITE_CLUSTER_CIDR",
        default_value = "10.42.0.0/16",
        value_name = "CIDR"
    )]
    cluster_cidr: IpNet,
    /// Service ClusterIP range.
    #[arg(
        long,
        env = "K8SLITE_SERVICE_CIDR",
        default_value = "10.43.0.0/16",
        value_name = "CIDR"
    )]
    service_cidr: IpNet,
    /// ClusterIP of the cluster DNS service.
    #[arg(
        long,
        env = "K8SLITE_CLUSTER_DNS",
        default_value = "10.43.0.10",
        value_name = "IP"
    )]
    cluster_dns: IpAddr,
    /// Cluster domain.
    #[arg(
        long,
        env = "K8SLITE_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        value_name = "DOMAIN"
    )]
    cluster_domain: String,
    /// Turn off a packaged component: `servicelb` (leave LoadBalancer Services to another
    /// controller, e.g. MetalLB), `dns` (the embedded cluster DNS and its kube-dns Service, for
    /// users who bring CoreDNS; `coredns` is accepted too); repeatable.
    #[arg(
        long,
        env = "K8SLITE_DISABLE",
        value_delimiter = ',',
        value_name = "COMPONENT",
        value_parser = ["servicelb", "dns", "coredns"]
    )]
    disable: Vec<String>,
    /// Run only the control plane, without a node agent on this machine.
    #[arg(long, env = "K8SLITE_DISABLE_AGENT")]
    disable_agent: bool,
    /// Settings of the embedded node agent.
    #[command(flatten)]
    node: agent::NodeArgs,
    /// Seconds between datastore compactions (history older than the retention is dropped).
    #[arg(
        long,
        env = "K8SLITE_COMPACT_INTERVAL",
        default_value_t = 60,
        value_name = "SECONDS"
    )]
    compact_interval: u64,
    /// Revisions of history kept for watch resumption.
    #[arg(
        long,
        env = "K8SLITE_COMPACT_RETENTION",
        default_value_t = 1000,
        value_name = "REVISIONS"
    )]
    compact_retention: i64,
    /// Log filter (tracing's EnvFilter syntax, e.g. `info,k8slite_apiserver=debug`).
    /// Seconds a node may go without renewing its Lease before it is marked NotReady
    /// (upstream's node-monitor-grace-period).
    #[arg(
        long,
        env = "K8SLITE_NODE_MONITOR_GRACE_PERIOD",
        default_value_t = 40,
        value_name = "SECONDS"
    )]
    node_monitor_grace_period: u64,
    /// Seconds between node health checks.
    #[arg(
        long,
        env = "K8SLITE_NODE_MONITOR_PERIOD",
        default_value_t = 5,
        value_name = "SECONDS"
    )]
    node_monitor_period: u64,
    /// Prefix length of the pod CIDR given to each node.
    #[arg(
        long,
        env = "K8SLITE_NODE_CIDR_MASK_SIZE",
        default_value_t = 24,
        value_name = "BITS"
    )]
    node_cidr_mask_size: u8,
    /// Terminated pods kept before the oldest are deleted.
    #[arg(
        long,
        env = "K8SLITE_TERMINATED_POD_GC_THRESHOLD",
        default_value_t = 12500,
        value_name = "PODS"
    )]
    terminated_pod_gc_threshold: usize,
    /// tolerationSeconds of the `not-ready` NoExecute toleration added to pods without one.
    #[arg(
        long,
        env = "K8SLITE_DEFAULT_NOT_READY_TOLERATION_SECONDS",
        default_value_t = 300,
        value_name = "SECONDS"
    )]
    default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the `unreachable` NoExecute toleration added to pods without one.
    #[arg(
        long,
        env = "K8SLITE_DEFAULT_UNREACHABLE_TOLERATION_SECONDS",
        default_value_t = 300,
        value_name = "SECONDS"
    )]
    default_unreachable_toleration_seconds: i64,
    #[arg(
        long,
        env = "K8SLITE_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    log: String,
}

fn init_logging(filter: &str) {
    let mut env_filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The agent fetches /cacerts without verifying the server (it checks the bundle against
    // the token's CA hash itself); kube-client warns "Server cert bypassed" on every such
    // handshake, which reads like a fault. Kept quiet unless the filter names kube_client.
    if !filter.contains("kube_client")
        && let Ok(d) = "kube_client::client::tls=error".parse()
    {
        env_filter = env_filter.add_directive(d);
    }
    let filter = env_filter;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

#[allow(clippy::print_stderr)] // before logging is set up, stderr is the only channel
fn main() -> ExitCode {
    alloc::tune();
    let known = |sub: &str, key: &str| {
        use clap::CommandFactory;
        Cli::command()
            .find_subcommand(sub)
            .is_some_and(|c| c.get_arguments().any(|a| a.get_long() == Some(key)))
    };
    let args = match config::args_with_config_file(std::env::args_os().collect(), &known) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("k8slite: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    alloc::start_trimmer();
    let result = match cli.command {
        Command::Server(s) => {
            init_logging(&s.log);
            run_server(s)
        }
        Command::Agent(a) => {
            init_logging(&a.log);
            agent::run(a)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(s: ServerArgs) -> anyhow::Result<()> {
    let mode = u32::from_str_radix(s.write_kubeconfig_mode.trim_start_matches("0o"), 8)
        .with_context(|| {
            format!(
                "--write-kubeconfig-mode {:?} is not an octal file mode",
                s.write_kubeconfig_mode
            )
        })?;
    let advertise = s
        .advertise_address
        .unwrap_or_else(k8slite_server::detect_node_ip);
    let embedded = if s.disable_agent {
        tracing::debug!("agent disabled");
        None
    } else {
        let cfg = agent::node_config(&s.node, advertise)?;
        let setup = agent::node_setup(
            &s.node,
            &s.data_dir,
            Some(s.cluster_dns),
            Some(&s.cluster_domain),
        );
        let host = if s.bind_address.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            s.bind_address
        };
        let url = format!(
            "https://{}",
            std::net::SocketAddr::new(host, s.https_listen_port)
        );
        let token_file = s.data_dir.join("server").join("token");
        Some((cfg, setup, url, token_file))
    };
    let cfg = k8slite_server::ServerConfig {
        data_dir: s.data_dir,
        bind_address: s.bind_address,
        https_listen_port: s.https_listen_port,
        advertise_address: s.advertise_address,
        tls_san: s.tls_san,
        write_kubeconfig: s.write_kubeconfig,
        write_kubeconfig_mode: mode,
        cluster_cidr: s.cluster_cidr,
        service_cidr: s.service_cidr,
        cluster_dns: s.cluster_dns,
        cluster_domain: s.cluster_domain,
        network_backend: s
            .node
            .network_backend
            .clone()
            .unwrap_or_else(|| "vxlan".into()),
        network_mtu: s.node.network_mtu,
        servicelb: !s.disable.iter().any(|d| d == "servicelb"),
        cluster_dns_service: !s.disable.iter().any(|d| d == "dns" || d == "coredns"),
        compact_interval: std::time::Duration::from_secs(s.compact_interval.max(1)),
        compact_retention: s.compact_retention.max(1),
        controllers: k8slite_server::ControllersConfig {
            cluster_cidr: s.cluster_cidr,
            node_cidr_mask: s.node_cidr_mask_size,
            node_monitor_grace_period: std::time::Duration::from_secs(
                s.node_monitor_grace_period.max(1),
            ),
            node_monitor_period: std::time::Duration::from_secs(s.node_monitor_period.max(1)),
            terminated_pod_gc_threshold: s.terminated_pod_gc_threshold,
            ..k8slite_server::ControllersConfig::default()
        },
        default_not_ready_toleration_seconds: s.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds: s.default_unreachable_toleration_seconds,
        own_node: embedded.as_ref().map(|(c, ..)| c.node_name.clone()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("k8slite")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            signals.cancel();
        });
        let server = k8slite_server::run(cfg, shutdown.clone());
        let Some((agent_cfg, setup, url, token_file)) = embedded else {
            return server.await.context("server failed");
        };
        let agent_shutdown = shutdown.clone();
        let node = async move {
            // The server writes its join token at start; the agent joins like any other.
            let token = loop {
                match std::fs::read_to_string(&token_file) {
                    Ok(t) if !t.trim().is_empty() => break t.trim().to_string(),
                    _ => {}
                }
                tokio::select! {
                    _ = agent_shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            };
            k8slite_agent::boot::run_joined(&url, &token, agent_cfg, setup, agent_shutdown).await
        };
        let (server, node) = tokio::join!(server, async {
            let r = node.await;
            if let Err(e) = &r {
                tracing::error!("embedded agent failed: {e}");
            }
            r
        });
        server.context("server failed")?;
        node.context("embedded agent failed")
    })
}

/// Wait for SIGTERM or SIGINT.
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
