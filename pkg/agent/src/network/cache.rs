//! The agent's watch cache of what the cluster network is made of: Services, EndpointSlices
//! and Nodes, one watch each, shared by the service proxy, the DNS server and the overlay
//! (one copy of each object in memory, whoever reads it). Services and EndpointSlices are
//! stored as the network crate's compact copies ([`ServiceInfo`], [`SliceInfo`]: what the
//! proxy and the DNS read, a few hundred bytes each, see [`super::compact`]); Nodes as slimmed
//! k8s-openapi objects in a reflector's store, without what nobody here reads ([`slim_node`]).
//!
//! Every change bumps a generation counter ([`Cache::changes`]) that the consumers wait on; they
//! read whole snapshots (`Vec<Arc<_>>`) when they sync, so many changes coalesce into one sync.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8slite_network::objects::{ServiceInfo, SliceInfo};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::compact::{self, CompactStore};

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
    pub services: CompactStore<ServiceInfo>,
    /// EndpointSlices of every namespace.
    pub slices: CompactStore<SliceInfo>,
    /// Nodes.
    pub nodes: Store<Node>,
    changes: watch::Receiver<Generation>,
    ready: watch::Receiver<bool>,
}

/// What a stored Node drops: bookkeeping no consumer here reads (the reflector keys its store
/// by name).
fn strip(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A Node as stored: annotations (the VTEPs), addresses, podCIDRs and conditions stay; images
/// and node info, which change often or are large, go.
pub(crate) fn slim_node(n: &mut Node) {
    strip(&mut n.metadata);
    if let Some(s) = n.status.as_mut() {
        s.images = None;
        s.node_info = None;
        s.volumes_attached = None;
        s.volumes_in_use = None;
        s.config = None;
    }
}

impl Cache {
    /// Start the three reflectors over `client`; they run until `shutdown`.
    pub fn start(client: &kube::Client, shutdown: &CancellationToken) -> Self {
        let (tx, changes) = watch::channel(Generation::default());
        let tx = Arc::new(tx);
        let services = compact::spawn(
            Api::<Service>::all(client.clone()),
            tx.clone(),
            |g| g.services += 1,
            shutdown.clone(),
        );
        let slices = compact::spawn(
            Api::<EndpointSlice>::all(client.clone()),
            tx.clone(),
            |g| g.slices += 1,
            shutdown.clone(),
        );
        let nodes = spawn_reflector(
            Api::<Node>::all(client.clone()),
            slim_node,
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
                stores.0.wait_until_ready().await
                    && stores.1.wait_until_ready().await
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
    pub fn services_in(&self, namespace: &str) -> Vec<Arc<ServiceInfo>> {
        self.services
            .state()
            .into_iter()
            .filter(|s| s.namespace() == Some(namespace))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_keep_annotations_addresses_and_pod_cidrs() {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "annotations": {"vtep": "x", LAST_APPLIED: "{}"}},
            "spec": {"podCIDR": "10.42.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.7"}],
                "images": [{"names": ["a"]}],
                "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                    "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                    "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""}}
        }))
        .expect("test value");
        slim_node(&mut n);
        let a = n.metadata.annotations.as_ref().expect("test value");
        assert_eq!(a.len(), 1);
        assert_eq!(a["vtep"], "x");
        assert_eq!(
            n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
            Some("10.42.1.0/24")
        );
        let st = n.status.as_ref().expect("test value");
        assert_eq!(st.addresses.as_ref().map(Vec::len), Some(1));
        assert!(st.images.is_none() && st.node_info.is_none());
    }
}
