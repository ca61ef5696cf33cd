//! The agent's watch cache of what the cluster network is made of: Services, EndpointSlices
//! and Nodes, one reflector each, shared by the service proxy, the DNS server and the overlay
//! (one copy of each object in memory, whoever reads it). Objects are stored without their
//! managedFields and `last-applied-configuration` annotation, which nobody here reads.
//!
//! Every change bumps a generation counter ([`Cache::changes`]) that the consumers wait on; they
//! read whole snapshots (`Vec<Arc<_>>`) when they sync, so many changes coalesce into one sync.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Which kind of object changed last (bit set in [`Cache::changes`]'s value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Generation {
    /// Bumped on every Service change.
    pub services: u64,
    /// Bumped on every EndpointSlice change.
    pub slices: u64,
    /// Bumped on every Node change.
    pub nodes: u64,
}

/// The shared cache.
#[derive(Clone)]
pub struct Cache {
    /// Services of every namespace.
    pub services: Store<Service>,
    /// EndpointSlices of every namespace.
    pub slices: Store<EndpointSlice>,
    /// Nodes.
    pub nodes: Store<Node>,
    changes: watch::Receiver<Generation>,
    ready: watch::Receiver<bool>,
}

fn strip(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

impl Cache {
    /// Start the three reflectors over `client`; they run until `shutdown`.
    pub fn start(client: &kube::Client, shutdown: &CancellationToken) -> Self {
        let (tx, changes) = watch::channel(Generation::default());
        let tx = Arc::new(tx);
        let services = spawn_reflector(
            Api::<Service>::all(client.clone()),
            |s: &mut Service| strip(&mut s.metadata),
            tx.clone(),
            |g| g.services += 1,
            shutdown.clone(),
        );
        let slices = spawn_reflector(
            Api::<EndpointSlice>::all(client.clone()),
            |s: &mut EndpointSlice| strip(&mut s.metadata),
            tx.clone(),
            |g| g.slices += 1,
            shutdown.clone(),
        );
        let nodes = spawn_reflector(
            Api::<Node>::all(client.clone()),
            |n: &mut Node| {
                strip(&mut n.metadata);
                // Images and conditions change often and are not read here.
                if let Some(s) = n.status.as_mut() {
                    s.images = None;
                }
            },
            tx,
            |g| g.nodes += 1,
            shutdown.clone(),
        );
        // One task waits for the three initial lists and tells every consumer: a reflector
        // store's own readiness wakes only one of several concurrent waiters (it sits on a
        // oneshot channel, which keeps a single waker), which left the service proxy waiting
        // for ever while the overlay went ahead.
        let (ready_tx, ready) = watch::channel(false);
        let stores = (services.clone(), slices.clone(), nodes.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let all = async {
                stores.0.wait_until_ready().await.is_ok()
                    && stores.1.wait_until_ready().await.is_ok()
                    && stores.2.wait_until_ready().await.is_ok()
            };
            tokio::select! {
                ok = all => if ok { let _ = ready_tx.send(true); },
                _ = stop.cancelled() => {}
            }
        });
        Self {
            services,
            slices,
            nodes,
            changes,
            ready,
        }
    }

    /// A receiver that sees every change.
    pub fn changes(&self) -> watch::Receiver<Generation> {
        self.changes.clone()
    }

    /// Wait until all three have listed once (or `shutdown`); `false` on shutdown.
    pub async fn wait_ready(&self, shutdown: &CancellationToken) -> bool {
        let mut ready = self.ready.clone();
        tokio::select! {
            r = ready.wait_for(|r| *r) => r.is_ok(),
            _ = shutdown.cancelled() => false,
        }
    }

    /// The Services of `namespace`.
    pub fn services_in(&self, namespace: &str) -> Vec<Arc<Service>> {
        self.services
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .collect()
    }
}

fn spawn_reflector<K>(
    api: Api<K>,
    trim: fn(&mut K),
    tx: Arc<watch::Sender<Generation>>,
    bump: fn(&mut Generation),
    shutdown: CancellationToken,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(trim),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::select! {
                i = stream.next() => i,
                _ = shutdown.cancelled() => return,
            };
            match item {
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => tx.send_modify(bump),
                Some(Err(e)) => tracing::debug!("network cache watch: {e}"),
                None => return,
            }
        }
    });
    reader
}
