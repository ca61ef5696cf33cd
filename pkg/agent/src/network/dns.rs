//! The cluster DNS on this node: the cluster DNS address on a dummy device (traffic to it never
//! leaves the node and, with the proxy's NOTRACK rules, never goes through conntrack), a DNS
//! server bound there, and a loop that rebuilds its records from the watch cache after every
//! burst of Service / EndpointSlice changes. When the API server is unreachable the cache
//! keeps its last state, and so do the answers.
//!
//! Across agent restarts: the records are saved ([`super::state`]: when they changed, at most
//! once a minute, and at shutdown). At the next start, [`start_early`] binds the server and
//! answers from that snapshot before the agent joins (with the settings saved by the last
//! [`super::load_settings`]); [`run`] then takes that server over and replaces the snapshot with
//! the live records as soon as the watch cache has listed. The server answers until the agent
//! cancels its `serve_until` token, last thing before it exits. While no agent runs, the
//! proxy's rules (`render_dns`) keep the kernel from refusing queries, so clients retry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8slite_network::dns::{
    DnsConfig, DnsServer, Records, RecordsHandle, upstreams_from_resolv_conf,
};
use k8slite_network::persist::{FileStore, StateFile, spawn_writer};
use k8slite_network::routes::{RtNetlink, ensure_dummy_address};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cache::Cache;
use super::{NetworkOptions, NodeNetwork, Woke, dns_address, lock, next_change, state};

/// Rebuild period when nothing changed (a no-op for the answers; keeps the loop honest).
const RESYNC: Duration = Duration::from_secs(300);
/// How long to let a burst of changes settle before rebuilding.
const SETTLE: Duration = Duration::from_millis(5);

/// What the agent hands to [`run`]: the early server, and how long servers answer.
pub(super) struct Handoff {
    pub(super) early: Option<EarlyDns>,
    pub(super) serve_until: CancellationToken,
}

/// A cluster DNS server started before the agent joined, answering from the saved records.
pub struct EarlyDns {
    listen: SocketAddr,
    domain: String,
    records: RecordsHandle,
    file: StateFile<FileStore>,
    stop: CancellationToken,
    serving: JoinHandle<()>,
}

impl EarlyDns {
    /// The address it answers on.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Stop it and wait until its sockets are closed.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        let _ = self.serving.await;
    }
}

fn upstreams(opts: &NetworkOptions) -> Vec<SocketAddr> {
    match std::fs::read_to_string(&opts.resolv_conf) {
        Ok(t) => upstreams_from_resolv_conf(&t),
        Err(e) => {
            tracing::warn!(file = %opts.resolv_conf.display(), "no upstream resolvers for the cluster DNS: {e}");
            Vec::new()
        }
    }
}

async fn serve(server: DnsServer, until: CancellationToken) {
    if let Err(e) = server.run(until).await {
        tracing::warn!("cluster DNS: {e}");
    }
}

/// Start the cluster DNS from what the last run saved in `opts.state_dir`: when the saved
/// settings (with this agent's overrides) have the DNS on and a records snapshot is there,
/// ensure the DNS address, bind the server and answer from the snapshot until `serve_until`
/// (or until [`NodeNetwork::run`] takes it over). `None` (logged) when anything is missing:
/// then nothing listens until the agent has joined, and clients retry meanwhile.
pub async fn start_early(
    opts: &NetworkOptions,
    serve_until: &CancellationToken,
) -> Option<EarlyDns> {
    let dir = opts.state_dir.as_deref()?;
    let settings = super::with_overrides(state::load_settings(state::settings_store(dir))?, opts);
    if !settings.dns {
        return None;
    }
    let mut file = state::dns_records(dir);
    let body = file.load()?;
    let domain = settings.cluster_domain.clone();
    let records = match Records::from_snapshot(&domain, &body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("ignoring the saved DNS records: {e}");
            return None;
        }
    };
    let ip = settings.cluster_dns;
    if let Err(e) = ensure_dummy_address(&RtNetlink, &opts.dns_device, ip).await {
        tracing::warn!(device = %opts.dns_device, %ip, "cluster DNS address (early start): {e}");
        return None;
    }
    let listen = SocketAddr::new(ip, opts.dns_port);
    let server = match DnsServer::bind(DnsConfig::new(
        vec![listen],
        domain.clone(),
        upstreams(opts),
    ))
    .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%listen, "binding the cluster DNS (early start): {e}");
            return None;
        }
    };
    let handle = server.records();
    let n = records.len();
    handle.replace(records);
    let stop = serve_until.child_token();
    let serving = tokio::spawn(serve(server, stop.clone()));
    tracing::info!(%listen, records = n, "cluster DNS answering from the saved records, before joining");
    Some(EarlyDns {
        listen,
        domain,
        records: handle,
        file,
        stop,
        serving,
    })
}

/// Bind the server on `listen` (ensuring the address first), retrying until `shutdown`.
async fn bind(
    net: &NodeNetwork,
    listen: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<DnsServer> {
    let ip = listen.ip();
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
            _ = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    let upstreams = upstreams(&net.opts);
    loop {
        match DnsServer::bind(DnsConfig::new(
            vec![listen],
            net.cluster.cluster_domain.clone(),
            upstreams.clone(),
        ))
        .await
        {
            Ok(s) => {
                tracing::info!(addr = %listen, upstreams = ?upstreams, "cluster DNS serving");
                return Some(s);
            }
            Err(e) => tracing::warn!(addr = %listen, "binding the cluster DNS: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

pub(super) async fn run(net: Arc<NodeNetwork>, cache: Cache, shutdown: CancellationToken) {
    let domain = net.cluster.cluster_domain.clone();
    let listen = SocketAddr::new(dns_address(&net), net.opts.dns_port);
    let handoff = lock(&net.dns_handoff).take();
    let serve_until = handoff
        .as_ref()
        .map_or_else(|| shutdown.clone(), |h| h.serve_until.clone());
    let early = handoff.and_then(|h| h.early);
    let (records, file) = match early {
        Some(e) if e.listen == listen && e.domain == domain => {
            tracing::info!(addr = %listen, "cluster DNS: keeping the server started before joining");
            (e.records, Some(e.file))
        }
        other => {
            if let Some(e) = other {
                tracing::info!(old = %e.listen, new = %listen, "cluster DNS settings changed: restarting the server");
                e.stop().await;
            }
            let mut file = net.opts.state_dir.as_deref().map(state::dns_records);
            let saved = file.as_mut().and_then(|f| f.load()).and_then(|b| {
                match Records::from_snapshot(&domain, &b) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!("ignoring the saved DNS records: {e}");
                        None
                    }
                }
            });
            // Without saved records, bind once the live ones are known: answering NXDOMAIN for
            // names that exist would be worse than a client retrying.
            if saved.is_none() && !cache.wait_ready(&shutdown).await {
                return;
            }
            let Some(server) = bind(&net, listen, &shutdown).await else {
                return;
            };
            let handle = server.records();
            if let Some(r) = saved {
                handle.replace(r);
            }
            tokio::spawn(serve(server, serve_until.child_token()));
            (handle, file)
        }
    };

    // Saving the records: the writer encodes the records served at the time it writes.
    let (saved_tx, saved_rx) = tokio::sync::watch::channel(0u64);
    let writer = file.map(|f| {
        let h = records.clone();
        spawn_writer(f, state::dns_debounce(), saved_rx, move || {
            h.current().to_snapshot()
        })
    });
    if cache.wait_ready(&shutdown).await {
        let mut changes = cache.changes();
        let mut built = None;
        loop {
            let g = *changes.borrow_and_update();
            if built != Some((g.services, g.slices)) {
                let services = cache.services.state();
                let slices = cache.slices.state();
                records.replace(Records::build_compact(&domain, &services, &slices));
                saved_tx.send_modify(|n| *n += 1);
                built = Some((g.services, g.slices));
            }
            match next_change(&mut changes, RESYNC, SETTLE, &shutdown).await {
                None => break,
                Some(Woke::Timer) => built = None,
                Some(Woke::Changed) => {}
            }
        }
    }
    // The last write (if the records changed since the previous one), then the server keeps
    // answering from these records until `serve_until`.
    drop(saved_tx);
    if let Some(w) = writer
        && let Err(e) = w.await
    {
        tracing::warn!("saving the DNS records: {e}");
    }
}
