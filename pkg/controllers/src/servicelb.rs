//! ServiceLB without helper pods: k3s's ServiceLB semantics, with the node agents serving the
//! Services themselves instead of a DaemonSet of `svclb` pods.
//!
//! For every Service of type LoadBalancer without `spec.loadBalancerClass`,
//! `status.loadBalancer.ingress` lists the addresses of the eligible nodes (a node's ExternalIPs
//! when it has any, else its InternalIPs; of the Service's IP families; sorted; `ipMode: VIP`).
//! Eligible: Ready, schedulable, not being deleted, not labelled
//! `node.kubernetes.io/exclude-from-external-load-balancers` and not labelled
//! [`ENABLE_LB_LABEL`]`=false`; when any node is labelled [`ENABLE_LB_LABEL`]`=true`, only those.
//!
//! A port (and protocol) is held on a node by one LoadBalancer Service only, the oldest by
//! `creationTimestamp` (then namespace/name): a newer Service gets no ingress for the nodes where
//! one of its ports is held by another, and a Warning Event `PortInUse` naming the holder.
//! A Service that is no longer of type LoadBalancer loses its ingress. The status is written
//! only when it changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error, util};

/// Node label choosing the nodes that serve LoadBalancer Services (k3s:
/// `svccontroller.k3s.cattle.io/enablelb`).
pub const ENABLE_LB_LABEL: &str = "svccontroller.k8slite.io/enablelb";
/// Upstream's node label excluding a node from external load balancers.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The `ipMode` of the ingress entries: traffic arrives with the ingress IP as destination.
pub const IP_MODE: &str = "VIP";
/// Reason of the Event about a port held by another Service.
pub const PORT_IN_USE: &str = "PortInUse";

/// An eligible node and the addresses it serves LoadBalancer Services on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbNode {
    /// Node name.
    pub name: String,
    /// ExternalIPs, else InternalIPs.
    pub addresses: Vec<IpAddr>,
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn addresses(node: &Node) -> Vec<IpAddr> {
    let all = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let of = |ty: &str| -> Vec<IpAddr> {
        all.iter()
            .filter(|a| a.type_ == ty)
            .filter_map(|a| a.address.parse().ok())
            .collect()
    };
    let external = of("ExternalIP");
    if external.is_empty() {
        of("InternalIP")
    } else {
        external
    }
}

/// The nodes that serve LoadBalancer Services, by name.
pub fn lb_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<LbNode> {
    let nodes: Vec<&Node> = nodes.into_iter().collect();
    let restricted = nodes
        .iter()
        .any(|n| label(n, ENABLE_LB_LABEL) == Some("true"));
    let mut out: Vec<LbNode> = nodes
        .into_iter()
        .filter(|n| {
            let enable = label(n, ENABLE_LB_LABEL);
            enable != Some("false")
                && (!restricted || enable == Some("true"))
                && label(n, EXCLUDE_LB_LABEL).is_none()
                && n.metadata.deletion_timestamp.is_none()
                && !n
                    .spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false)
                && ready(n)
        })
        .map(|n| LbNode {
            name: n.name_any(),
            addresses: addresses(n),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// Whether this controller serves `svc`: type LoadBalancer, no `loadBalancerClass`, not being
/// deleted.
pub fn is_managed(svc: &Service) -> bool {
    is_load_balancer(svc)
        && svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.as_deref())
            .is_none()
        && svc.metadata.deletion_timestamp.is_none()
}

/// `(port, protocol)` pairs of a Service (protocol defaulting to TCP).
fn ports(svc: &Service) -> BTreeSet<(i32, String)> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| (p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        .collect()
}

/// Whether the Service takes addresses of this family (its `ipFamilies`, else its ClusterIP's).
fn wants(svc: &Service, ip: &IpAddr) -> bool {
    let spec = svc.spec.as_ref();
    let family = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    match spec
        .and_then(|s| s.ip_families.as_ref())
        .filter(|f| !f.is_empty())
    {
        Some(f) => f.iter().any(|f| f == family),
        None => {
            let v6 = spec
                .and_then(|s| s.cluster_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .is_some_and(|ip| ip.is_ipv6());
            v6 == ip.is_ipv6()
        }
    }
}

/// `namespace/name` of an object.
fn key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

/// A port of a Service held on some nodes by an older LoadBalancer Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clash {
    /// Port.
    pub port: i32,
    /// Protocol.
    pub protocol: String,
    /// `namespace/name` of the Service holding it.
    pub holder: String,
    /// Nodes where it is held, by name.
    pub nodes: Vec<String>,
}

impl Clash {
    /// The Event message.
    pub fn message(&self) -> String {
        format!(
            "port {}/{} is already used by LoadBalancer Service {} on node(s) {}: not serving this Service there",
            self.port,
            self.protocol,
            self.holder,
            self.nodes.join(", ")
        )
    }
}

/// What the status of one Service should be.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// `status.loadBalancer.ingress` (empty: none).
    pub ingress: Vec<LoadBalancerIngress>,
    /// Ports held by other Services.
    pub clashes: Vec<Clash>,
}

/// The decisions for every managed Service of `services`, by `namespace/name`: the Services,
/// oldest first, take the nodes where none of their ports is held yet.
pub fn assign(services: &[&Service], nodes: &[LbNode]) -> BTreeMap<String, Decision> {
    let mut managed: Vec<&Service> = services.iter().copied().filter(|s| is_managed(s)).collect();
    managed.sort_by(|a, b| {
        let ts = |s: &Service| s.metadata.creation_timestamp.clone().map(|t| t.0);
        // Services without a timestamp (not stored yet) count as newest.
        (ts(a).is_none(), ts(a), key(a)).cmp(&(ts(b).is_none(), ts(b), key(b)))
    });
    let mut held: HashMap<(&str, (i32, String)), String> = HashMap::new();
    let mut out = BTreeMap::new();
    for svc in managed {
        let me = key(svc);
        let wanted = ports(svc);
        let mut addrs: BTreeSet<IpAddr> = BTreeSet::new();
        let mut clashes: BTreeMap<(i32, String, String), Vec<String>> = BTreeMap::new();
        for node in nodes {
            let taken: Vec<(&(i32, String), &String)> = wanted
                .iter()
                .filter_map(|p| {
                    held.get(&(node.name.as_str(), p.clone()))
                        .map(|holder| (p, holder))
                })
                .collect();
            if taken.is_empty() {
                for p in &wanted {
                    held.insert((node.name.as_str(), p.clone()), me.clone());
                }
                addrs.extend(node.addresses.iter().filter(|ip| wants(svc, ip)));
            } else {
                for ((port, proto), holder) in taken {
                    clashes
                        .entry((*port, proto.clone(), holder.clone()))
                        .or_default()
                        .push(node.name.clone());
                }
            }
        }
        let ingress = addrs
            .into_iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some(IP_MODE.into()),
                ..LoadBalancerIngress::default()
            })
            .collect();
        let clashes = clashes
            .into_iter()
            .map(|((port, protocol, holder), nodes)| Clash {
                port,
                protocol,
                holder,
                nodes,
            })
            .collect();
        out.insert(me, Decision { ingress, clashes });
    }
    out
}

/// The decision for `svc` given every Service (`services`, `svc` among them) and the nodes:
/// `None` when the Service is not this controller's (a LoadBalancer of another class).
pub fn decide(svc: &Service, services: &[&Service], nodes: &[Node]) -> Option<Decision> {
    if !is_load_balancer(svc) {
        return Some(Decision::default());
    }
    if !is_managed(svc) {
        return None;
    }
    let mut all: Vec<&Service> = services
        .iter()
        .copied()
        .filter(|s| key(s) != key(svc))
        .collect();
    all.push(svc);
    assign(&all, &lb_nodes(nodes)).remove(&key(svc))
}

fn current_ingress(svc: &Service) -> Vec<LoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
}

fn ips(ingress: &[LoadBalancerIngress]) -> String {
    ingress
        .iter()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect::<Vec<_>>()
        .join(", ")
}

struct State {
    ctx: Ctx,
    services: Store<Service>,
    nodes: Store<Node>,
    recorder: Recorder,
    /// Clash messages last reported, by Service UID (reported again only when they change).
    reported: Mutex<HashMap<String, BTreeSet<String>>>,
}

async fn reconcile(svc: Arc<Service>, st: Arc<State>) -> Result<Action, Error> {
    // Without the full set of nodes the ingress would be cut short.
    if st.nodes.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let services = st.services.state();
    let refs: Vec<&Service> = services.iter().map(Arc::as_ref).collect();
    let nodes: Vec<Node> = st.nodes.state().iter().map(|n| (**n).clone()).collect();
    let Some(d) = decide(&svc, &refs, &nodes) else {
        return Ok(Action::await_change());
    };
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let new_messages = {
        let mut reported = st.reported.lock().map_err(|_| Error::Invalid {
            kind: "Service",
            name: key(&svc),
            what: "servicelb event lock poisoned".into(),
        })?;
        let live: BTreeSet<&str> = refs
            .iter()
            .filter_map(|s| s.metadata.uid.as_deref())
            .collect();
        reported.retain(|u, _| live.contains(u.as_str()));
        let now: BTreeSet<String> = d.clashes.iter().map(Clash::message).collect();
        let before = reported.remove(&uid).unwrap_or_default();
        let new: Vec<(String, String)> = d
            .clashes
            .iter()
            .filter(|c| !before.contains(&c.message()))
            .map(|c| (c.holder.clone(), c.message()))
            .collect();
        if !now.is_empty() {
            reported.insert(uid, now);
        }
        new
    };
    for (holder, msg) in new_messages {
        tracing::warn!(service = %key(&svc), "{msg}");
        let related = refs
            .iter()
            .find(|s| key(s) == holder)
            .map(|s| s.object_ref(&()));
        util::publish_event(
            &st.recorder,
            svc.as_ref(),
            true,
            PORT_IN_USE,
            "Serving",
            msg,
            related,
        )
        .await;
    }
    let current = current_ingress(&svc);
    if current != d.ingress {
        let ns = svc.namespace().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(st.ctx.client.clone(), &ns);
        let ingress = if d.ingress.is_empty() {
            serde_json::Value::Null
        } else {
            json!(d.ingress)
        };
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        match api
            .patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(service = %key(&svc), from = %ips(&current), to = %ips(&d.ingress), "load balancer ingress updated");
        if is_load_balancer(&svc) {
            util::publish_event(
                &st.recorder,
                svc.as_ref(),
                false,
                "UpdatedIngressIP",
                "Serving",
                format!(
                    "LoadBalancer Ingress IP addresses updated: [{}]",
                    ips(&d.ingress)
                ),
                None,
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_svc: Arc<Service>, err: &Error, _st: Arc<State>) -> Action {
    tracing::debug!(error = %err, "servicelb: reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// A stream yielding `()` whenever `project` of a watched store's content changes.
fn on_change<K, P>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    reader: Store<K>,
    project: impl Fn(&[Arc<K>]) -> P + Send + 'static,
) -> impl Stream<Item = ()> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    P: PartialEq + Send + 'static,
{
    let mut last: Option<P> = None;
    reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .filter_map(move |ev| {
            let changed = match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) | Err(_) => false,
                Ok(_) => {
                    let now = project(&reader.state());
                    let changed = last.as_ref() != Some(&now);
                    last = Some(now);
                    changed
                }
            };
            std::future::ready(changed.then_some(()))
        })
}

/// `(port, protocol)` pairs held.
type Ports = BTreeSet<(i32, String)>;

/// What of the Services matters to the other Services' decisions.
fn claims(services: &[Arc<Service>]) -> BTreeMap<String, (Option<String>, Ports)> {
    services
        .iter()
        .filter(|s| is_managed(s))
        .map(|s| {
            let ts = s
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string());
            (key(s), (ts, ports(s)))
        })
        .collect()
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let client = ctx.client.clone();
    let services_api = Api::<Service>::all(client.clone());
    let controller = Controller::new(services_api.clone(), watcher::Config::default());
    let (nodes, node_writer) = reflector::store::<Node>();
    let node_changes = on_change(
        Api::<Node>::all(client),
        node_writer,
        nodes.clone(),
        |n: &[Arc<Node>]| lb_nodes(n.iter().map(Arc::as_ref)),
    );
    // Another Service's ports or age changing can change this one's decision.
    let (claim_store, claim_writer) = reflector::store::<Service>();
    let claim_changes = on_change(services_api, claim_writer, claim_store, claims);
    let state = Arc::new(State {
        services: controller.store(),
        nodes,
        recorder: ctx.recorder("service-lb-controller"),
        reported: Mutex::new(HashMap::new()),
        ctx,
    });
    controller
        .reconcile_all_on(futures::stream::select(node_changes, claim_changes))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "servicelb reconcile");
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests;
