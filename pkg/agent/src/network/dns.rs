//! The cluster DNS on this node: the cluster DNS address on a dummy device (traffic to it never
//! leaves the node and, with the proxy's NOTRACK rules, never goes through conntrack), a DNS
//! server bound there, and a loop that rebuilds its records from the watch cache after every
//! burst of Service / EndpointSlice changes. When the API server is unreachable the cache
//! keeps its last state, and so do the answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8slite_network::dns::{DnsConfig, DnsServer, Records, upstreams_from_resolv_conf};
use k8slite_network::routes::{RtNetlink, ensure_dummy_address};
use tokio_util::sync::CancellationToken;

use super::cache::Cache;
use super::{NodeNetwork, Woke, dns_address, next_change};

/// Rebuild period when nothing changed (a no-op for the answers; keeps the loop honest).
const RESYNC: Duration = Duration::from_secs(300);
/// How long to let a burst of changes settle before rebuilding.
const SETTLE: Duration = Duration::from_millis(5);

pub(super) async fn run(net: Arc<NodeNetwork>, cache: Cache, shutdown: CancellationToken) {
    let ip = dns_address(&net);
    let domain = net.cluster.cluster_domain.clone();
    let mut delay = Duration::from_millis(500);
    // The address first: binding needs it.
    loop {
        match ensure_dummy_address(&RtNetlink, &net.opts.dns_device, ip).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(device = %net.opts.dns_device, %ip, "cluster DNS address: {e}")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    let upstreams = match std::fs::read_to_string(&net.opts.resolv_conf) {
        Ok(t) => upstreams_from_resolv_conf(&t),
        Err(e) => {
            tracing::warn!(file = %net.opts.resolv_conf.display(), "no upstream resolvers for the cluster DNS: {e}");
            Vec::new()
        }
    };
    let listen = vec![SocketAddr::new(ip, net.opts.dns_port)];
    let server = loop {
        match DnsServer::bind(DnsConfig::new(
            listen.clone(),
            domain.clone(),
            upstreams.clone(),
        ))
        .await
        {
            Ok(s) => break s,
            Err(e) => tracing::warn!(addr = ?listen, "binding the cluster DNS: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    };
    tracing::info!(addr = ?listen, upstreams = ?upstreams, "cluster DNS serving");
    let records = server.records();
    let serving = tokio::spawn(server.run(shutdown.clone()));
    if cache.wait_ready(&shutdown).await {
        let mut changes = cache.changes();
        let mut built = None;
        loop {
            let g = *changes.borrow_and_update();
            if built != Some((g.services, g.slices)) {
                let services = cache.services.state();
                let slices = cache.slices.state();
                records.replace(Records::build(&domain, &services, &slices));
                built = Some((g.services, g.slices));
            }
            match next_change(&mut changes, RESYNC, SETTLE, &shutdown).await {
                None => break,
                Some(Woke::Timer) => built = None,
                Some(Woke::Changed) => {}
            }
        }
    }
    match serving.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cluster DNS: {e}"),
        Err(e) => tracing::warn!("cluster DNS task: {e}"),
    }
}
