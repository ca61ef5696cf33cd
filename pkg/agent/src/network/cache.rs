//! The agent's watch cache of what the cluster network is made of: Services, EndpointSlices
//! and Nodes, one reflector each, shared by the service proxy, the DNS server and the overlay
//! (one copy of each object in memory, whoever reads it). Objects are stored slimmed: without
//! the metadata, annotations, labels and endpoint fields nobody here reads (see [`slim_service`],
//! [`slim_slice`], [`slim_node`]).
//!
//! Every change bumps a generation counter ([`Cache::changes`]) that the consumers wait on; they
//! read whole snapshots (`Vec<Arc<_>>`) when they sync, so many changes coalesce into one sync.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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

/// Labels of Services and EndpointSlices the network code reads (or kube-proxy honours).
const KEPT_LABELS: [&str; 4] = [
    "kubernetes.io/service-name",
    "endpointslice.kubernetes.io/managed-by",
    "service.kubernetes.io/service-proxy-name",
    "service.kubernetes.io/headless",
];

/// What every stored object drops: bookkeeping no consumer here reads (the reflector keys its
/// store by namespace and name).
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

/// Services and EndpointSlices also drop their annotations and every label but
/// [`KEPT_LABELS`].
fn strip_more(meta: &mut ObjectMeta) {
    strip(meta);
    meta.annotations = None;
    if let Some(l) = meta.labels.as_mut() {
        l.retain(|k, _| KEPT_LABELS.contains(&k.as_str()));
        if l.is_empty() {
            meta.labels = None;
        }
    }
}

/// A Service as stored: its uid stays (Events name it), its status keeps the load balancer.
pub(crate) fn slim_service(s: &mut Service) {
    strip_more(&mut s.metadata);
    if let Some(st) = s.status.as_mut() {
        st.conditions = None;
    }
}

/// An EndpointSlice as stored: endpoints keep addresses, conditions, hostname and node name.
pub(crate) fn slim_slice(s: &mut EndpointSlice) {
    strip_more(&mut s.metadata);
    s.metadata.uid = None;
    for e in &mut s.endpoints {
        e.target_ref = None;
        e.deprecated_topology = None;
        e.hints = None;
        e.zone = None;
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
        let services = spawn_reflector(
            Api::<Service>::all(client.clone()),
            slim_service,
            tx.clone(),
            |g| g.services += 1,
            shutdown.clone(),
        );
        let slices = spawn_reflector(
            Api::<EndpointSlice>::all(client.clone()),
            slim_slice,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_keep_what_the_proxy_and_dns_read() {
        let mut s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "generateName": "web-", "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"kubernetes.io/service-name": "web", "app": "web",
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "annotations": {"a": "b"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "s"}]},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": true},
                "hostname": "web-0", "nodeName": "n1", "zone": "z",
                "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "ns"}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .expect("test value");
        slim_slice(&mut s);
        let m = &s.metadata;
        assert_eq!(m.name.as_deref(), Some("web-abc"));
        assert_eq!(m.namespace.as_deref(), Some("ns"));
        let labels = m.labels.as_ref().expect("test value");
        assert_eq!(labels.len(), 2);
        assert_eq!(labels["kubernetes.io/service-name"], "web");
        assert!(m.annotations.is_none() && m.uid.is_none() && m.resource_version.is_none());
        assert!(m.owner_references.is_none() && m.creation_timestamp.is_none());
        let e = &s.endpoints[0];
        assert_eq!(e.addresses, vec!["10.42.0.5".to_string()]);
        assert_eq!(e.conditions.as_ref().and_then(|c| c.ready), Some(true));
        assert_eq!(e.hostname.as_deref(), Some("web-0"));
        assert_eq!(e.node_name.as_deref(), Some("n1"));
        assert!(e.target_ref.is_none() && e.zone.is_none());
        assert_eq!(s.ports.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn services_keep_uid_spec_and_load_balancer() {
        let mut s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "web", "service.kubernetes.io/service-proxy-name": "other"},
                "annotations": {LAST_APPLIED: "{}", "x": "y"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9",
                "ports": [{"port": 80, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]},
                "conditions": [{"type": "x", "status": "True", "reason": "r", "message": "m",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .expect("test value");
        slim_service(&mut s);
        assert_eq!(s.metadata.uid.as_deref(), Some("u"));
        let labels = s.metadata.labels.as_ref().expect("test value");
        assert_eq!(labels.len(), 1);
        assert!(labels.contains_key("service.kubernetes.io/service-proxy-name"));
        assert!(s.metadata.annotations.is_none() && s.metadata.managed_fields.is_none());
        let spec = s.spec.as_ref().expect("test value");
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.9"));
        let st = s.status.as_ref().expect("test value");
        assert!(st.conditions.is_none());
        let ingress = st
            .load_balancer
            .as_ref()
            .and_then(|l| l.ingress.as_ref())
            .expect("test value");
        assert_eq!(ingress[0].ip.as_deref(), Some("192.0.2.1"));
    }

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
