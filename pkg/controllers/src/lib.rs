//! k8slite-controllers: the control loops of `k8slite server`.
//!
//! Every controller is one module with one shape: `pub async fn run(ctx: Ctx, shutdown:
//! CancellationToken) -> Result<(), Error>`, built on `kube-runtime` (a `Controller` or watchers
//! feeding a level-based, idempotent reconcile that returns the next `Action`). They talk to the
//! cluster only through `kube::Client` — in the server that client runs over the in-process
//! transport. [`run_all`] starts them all and restarts one that fails, after a pause.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod history;
pub mod util;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbage_collector;
pub mod hpa;
pub mod job;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod pod_gc;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod ttl_after_finished;

/// Errors shared by the controllers (a module with failure modes of its own may add its own enum).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// An object lacks something the controller needs.
    #[error("{kind} {name}: {what}")]
    Invalid {
        /// Kind of the object.
        kind: &'static str,
        /// Name (namespace/name).
        name: String,
        /// What is wrong.
        what: String,
    },
    /// A watch stream ended with an error.
    #[error("watching {what}: {source}")]
    Watch {
        /// What was watched.
        what: &'static str,
        /// Cause.
        #[source]
        source: kube::runtime::watcher::Error,
    },
}

/// Settings of the controllers (upstream's defaults; flags of `k8slite server` override them).
#[derive(Clone, Debug)]
pub struct Config {
    /// Pod CIDR of the cluster; node IPAM cuts one block per node from it.
    pub cluster_cidr: ipnet::IpNet,
    /// Prefix length of each node's pod CIDR.
    pub node_cidr_mask: u8,
    /// How long a node may go without renewing its Lease before it is NotReady/Unknown.
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked.
    pub node_monitor_period: Duration,
    /// Terminated pods kept before the pod GC deletes the oldest.
    pub terminated_pod_gc_threshold: usize,
    /// How often the HPA reconciles.
    pub hpa_sync_period: Duration,
    /// Whether the ServiceLB controller runs ([`servicelb`]; off: LoadBalancer Services are left
    /// to another controller, e.g. MetalLB).
    pub servicelb: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_cidr: ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 42, 0, 0),
                16,
            )),
            node_cidr_mask: 24,
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            terminated_pod_gc_threshold: 12500,
            hpa_sync_period: Duration::from_secs(15),
            servicelb: true,
        }
    }
}

/// What every controller gets: the client and the settings.
#[derive(Clone)]
pub struct Ctx {
    /// The client (in-process in the server).
    pub client: kube::Client,
    /// Settings.
    pub config: Arc<Config>,
}

impl Ctx {
    /// A context over `client` with `config`.
    pub fn new(client: kube::Client, config: Config) -> Self {
        Self {
            client,
            config: Arc::new(config),
        }
    }

    /// An event recorder reporting as `component` (e.g. `deployment-controller`). Repeats of
    /// one event are aggregated into a series, as upstream does.
    pub fn recorder(&self, component: &str) -> Recorder {
        Recorder::new(
            self.client.clone(),
            Reporter {
                controller: component.to_string(),
                instance: None,
            },
        )
    }
}

type RunFn = fn(Ctx, CancellationToken) -> futures::future::BoxFuture<'static, Result<(), Error>>;

fn boxed<F, Fut>(
    f: F,
    ctx: Ctx,
    shutdown: CancellationToken,
) -> futures::future::BoxFuture<'static, Result<(), Error>>
where
    F: FnOnce(Ctx, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    Box::pin(f(ctx, shutdown))
}

/// Every controller, by name.
pub fn all() -> Vec<(&'static str, RunFn)> {
    vec![
        ("deployment", |c, s| boxed(deployment::run, c, s)),
        ("replicaset", |c, s| boxed(replicaset::run, c, s)),
        ("replicationcontroller", |c, s| {
            boxed(replicationcontroller::run, c, s)
        }),
        ("statefulset", |c, s| boxed(statefulset::run, c, s)),
        ("daemonset", |c, s| boxed(daemonset::run, c, s)),
        ("job", |c, s| boxed(job::run, c, s)),
        ("cronjob", |c, s| boxed(cronjob::run, c, s)),
        ("ttl-after-finished", |c, s| {
            boxed(ttl_after_finished::run, c, s)
        }),
        ("garbage-collector", |c, s| {
            boxed(garbage_collector::run, c, s)
        }),
        ("endpoints", |c, s| boxed(endpoints::run, c, s)),
        ("endpointslice", |c, s| boxed(endpointslice::run, c, s)),
        ("serviceaccount", |c, s| boxed(serviceaccount::run, c, s)),
        ("node-ipam", |c, s| boxed(node_ipam::run, c, s)),
        ("node-lifecycle", |c, s| boxed(node_lifecycle::run, c, s)),
        ("pod-gc", |c, s| boxed(pod_gc::run, c, s)),
        ("resourcequota", |c, s| boxed(resourcequota::run, c, s)),
        ("disruption", |c, s| boxed(disruption::run, c, s)),
        ("horizontal-pod-autoscaler", |c, s| boxed(hpa::run, c, s)),
        ("servicelb", |c, s| boxed(servicelb::run, c, s)),
    ]
}

/// Whether the controller `name` of [`all`] is switched on in `config`.
pub fn enabled(config: &Config, name: &str) -> bool {
    match name {
        "servicelb" => config.servicelb,
        _ => true,
    }
}

/// Start every controller [`enabled`] on `tracker`; each runs until `shutdown` and is restarted
/// after a pause if it fails.
pub fn run_all(ctx: Ctx, shutdown: CancellationToken, tracker: &TaskTracker) {
    for (name, run) in all() {
        if !enabled(&ctx.config, name) {
            tracing::info!(controller = name, "controller disabled");
            continue;
        }
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            loop {
                let span = tracing::info_span!("controller", name);
                let result = tracing::Instrument::instrument(run(ctx.clone(), shutdown.clone()), span).await;
                if shutdown.is_cancelled() {
                    break;
                }
                match result {
                    Ok(()) => tracing::warn!(controller = name, "controller stopped; restarting"),
                    Err(e) => tracing::error!(controller = name, error = %e, "controller failed; restarting"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        });
    }
}
