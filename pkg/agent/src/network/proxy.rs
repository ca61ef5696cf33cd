//! The service proxy's loop: after the watch cache has listed once, every burst of Service /
//! EndpointSlice / Node changes becomes one full sync (one `iptables-restore` transaction, run
//! on a blocking thread), plus a full resync every [`RESYNC`]. Services the proxy cannot
//! program get a Warning Event (once per distinct problem); health-check node ports follow each
//! sync. Rules stay in place when the agent stops, so service traffic keeps flowing across an
//! agent restart.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8slite_network::objects::ServiceInfo;
use k8slite_network::proxy::{
    ConntrackTool, HealthChecks, IptablesBackend, Problem, Proxier, ProxyConfig, SyncReport,
};
use k8slite_network::routes::Backend;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use tokio_util::sync::CancellationToken;

use super::cache::Cache;
use super::{NodeNetwork, next_change};

/// Full resync period (also re-creates rules someone removed by hand).
const RESYNC: Duration = Duration::from_secs(30);
/// How long to let a burst of changes settle before syncing.
const SETTLE: Duration = Duration::from_millis(5);
/// A sync that takes this long (lock waits, a loaded host) is logged as a warning.
const SLOW_SYNC_MS: u64 = 1000;

type Key = (String, String, String, String);

fn config(net: &NodeNetwork) -> ProxyConfig {
    let c = &net.cluster;
    let mut cfg = ProxyConfig::new(
        net.node_name.clone(),
        vec![net.node_ip],
        c.cluster_cidr,
        c.service_cidr,
    );
    cfg.chain_prefix = net.opts.chain_prefix.clone();
    cfg.local_dns = c.dns.then_some(c.cluster_dns);
    cfg.pod_cidr = net.pod_cidr();
    cfg.masquerade_egress = net.backend != Backend::None;
    cfg.vxlan_port = (net.backend == Backend::Vxlan).then_some(k8slite_network::routes::VXLAN_PORT);
    cfg
}

async fn report(recorder: &Recorder, cache: &Cache, p: &Problem) {
    let svc: Option<Arc<ServiceInfo>> = cache
        .services_in(&p.namespace)
        .into_iter()
        .find(|s| s.name() == Some(p.name.as_str()));
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some(p.name.clone()),
        namespace: Some(p.namespace.clone()),
        uid: svc.and_then(|s| s.uid().map(str::to_string)),
        ..ObjectReference::default()
    };
    let ev = KubeEvent {
        type_: EventType::Warning,
        reason: p.reason.clone(),
        note: Some(p.message.clone()),
        action: "Sync".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &reference).await {
        tracing::debug!(reason = %p.reason, "recording event: {e}");
    }
}

/// Health-check ports follow the sync; every problem not reported at the last sync becomes a
/// Warning Event on its Service (and a log line).
async fn report_problems(
    recorder: &Recorder,
    cache: &Cache,
    health: &HealthChecks,
    r: SyncReport,
    reported: &mut HashSet<Key>,
) {
    let mut problems = r.problems;
    problems.extend(health.update(&r.health_checks).await);
    let key = |p: &Problem| {
        (
            p.namespace.clone(),
            p.name.clone(),
            p.reason.clone(),
            p.message.clone(),
        )
    };
    for p in &problems {
        if !reported.contains(&key(p)) {
            tracing::warn!(service = %format!("{}/{}", p.namespace, p.name), reason = %p.reason, "{}", p.message);
            report(recorder, cache, p).await;
        }
    }
    *reported = problems.iter().map(key).collect();
}

pub(super) async fn run(
    net: Arc<NodeNetwork>,
    client: kube::Client,
    cache: Cache,
    shutdown: CancellationToken,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "k8slite-proxy".into(),
            instance: Some(net.node_name.clone()),
        },
    );
    let backend = IptablesBackend::new(net.opts.iptables.clone());
    let mut proxier = Some(Proxier::new(config(&net), backend, ConntrackTool));
    let health = HealthChecks::new();
    if !cache.wait_ready(&shutdown).await {
        return;
    }
    let mut changes = cache.changes();
    let mut reported: HashSet<Key> = HashSet::new();
    let mut first = true;
    loop {
        changes.borrow_and_update();
        let Some(mut p) = proxier.take() else { return };
        p.set_config(config(&net));
        let services = cache.services.state();
        let slices = cache.slices.state();
        let started = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let r = p.sync_compact(&services, &slices);
            (p, r)
        })
        .await;
        let (p, result) = match joined {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("service proxy sync panicked: {e}");
                return;
            }
        };
        proxier = Some(p);
        match result {
            Ok(r) if first => {
                first = false;
                tracing::info!(
                    services = r.services,
                    rules = r.rules,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "service rules programmed"
                );
                report_problems(&recorder, &cache, &health, r, &mut reported).await;
            }
            Ok(r) => {
                let elapsed_ms = started.elapsed().as_millis() as u64;
                // A slow sync leaves terminated endpoints in the rules for that long.
                if elapsed_ms >= SLOW_SYNC_MS {
                    tracing::warn!(
                        services = r.services,
                        rules = r.rules,
                        elapsed_ms,
                        "slow service rules sync"
                    );
                } else {
                    tracing::debug!(
                        services = r.services,
                        rules = r.rules,
                        elapsed_ms,
                        "service rules synced"
                    );
                }
                report_problems(&recorder, &cache, &health, r, &mut reported).await;
            }
            Err(e) => tracing::warn!("syncing service rules: {e}"),
        }
        if next_change(&mut changes, RESYNC, SETTLE, &shutdown)
            .await
            .is_none()
        {
            health.shutdown().await;
            return;
        }
    }
}
