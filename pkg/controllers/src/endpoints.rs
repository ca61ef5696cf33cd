//! Endpoints controller: for every Service with a selector, an `Endpoints` object of the same
//! name listing the IPs of the selected pods — ready pods in `addresses`, the others in
//! `notReadyAddresses` (all in `addresses` with `publishNotReadyAddresses`) — with each port
//! resolved from `targetPort` (named ports looked up in the pod's containers). Terminating and
//! terminated pods are left out. Services without a selector (such as `default/kubernetes`,
//! kept by the API server) are left alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error};

/// Label upstream puts on the Endpoints/EndpointSlices of headless services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Ports, ready and not-ready addresses of one subset being built.
type AddressGroup = (
    Vec<EndpointPort>,
    Vec<EndpointAddress>,
    Vec<EndpointAddress>,
);

/// What each pod (namespace, name) matched last.
type LastMatches = HashMap<(String, String), HashSet<ObjectRef<Service>>>;

/// One selected pod as an endpoint of a service.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEndpoint {
    /// Pod IP.
    pub ip: String,
    /// Node the pod runs on.
    pub node_name: Option<String>,
    /// Hostname (headless services whose name is the pod's subdomain).
    pub hostname: Option<String>,
    /// Reference to the pod.
    pub target: ObjectReference,
    /// Pod is Ready.
    pub serving: bool,
    /// Pod is being deleted.
    pub terminating: bool,
    /// Resolved ports (service port → endpoint port) for this pod.
    pub ports: Vec<EndpointPort>,
}

/// Whether the service is headless (`clusterIP: None`).
pub fn is_headless(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

/// The service's selector, when it has a non-empty one.
pub fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// Whether `pod` is selected by `svc` (same namespace, selector matches its labels).
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = service_selector(svc) else {
        return false;
    };
    if svc.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The container port a service port targets on `pod`: `targetPort` as a number, a named
/// container port of the same protocol, or `port` when `targetPort` is unset.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// Whether the pod belongs in the endpoints at all (upstream's ShouldPodBeInEndpoints): it has
/// an IP, is not being deleted (unless `include_terminating`), and is not done for good.
pub fn should_include(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    if status
        .and_then(|s| s.pod_ip.as_deref())
        .is_none_or(str::is_empty)
    {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    match pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
    {
        "Never" => phase != "Failed" && phase != "Succeeded",
        "OnFailure" => phase != "Succeeded",
        _ => true,
    }
}

/// The endpoint a pod makes for `svc`, if it is one.
pub fn pod_endpoint(svc: &Service, pod: &Pod, include_terminating: bool) -> Option<PodEndpoint> {
    if !should_include(pod, include_terminating) {
        return None;
    }
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let spec = pod.spec.as_ref();
    let svc_name = svc.metadata.name.as_deref().unwrap_or("");
    let hostname = match spec {
        Some(s)
            if is_headless(svc)
                && s.subdomain.as_deref() == Some(svc_name)
                && s.hostname.as_deref().is_some_and(|h| !h.is_empty()) =>
        {
            s.hostname.clone()
        }
        _ => None,
    };
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            find_port(pod, sp).map(|port| EndpointPort {
                name: sp.name.clone(),
                port,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    Some(PodEndpoint {
        ip,
        node_name: spec.and_then(|s| s.node_name.clone()),
        hostname,
        target: ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        },
        serving: crate::util::is_pod_ready(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        ports,
    })
}

/// Labels of the Endpoints/EndpointSlices of `svc`: the service's own labels, plus the
/// headless marker.
pub fn endpoint_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    l.remove(HEADLESS_LABEL);
    if is_headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l
}

/// The subsets the Endpoints of `svc` should have given all pods of its namespace: addresses
/// grouped by their resolved port set, addresses sorted by IP.
pub fn desired_subsets(svc: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let tolerate_unready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let has_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| !p.is_empty());
    // port set (as JSON key) → (ports, ready, not ready)
    let mut groups: BTreeMap<String, AddressGroup> = BTreeMap::new();
    for pod in pods.iter().filter(|p| selects(svc, p)) {
        let Some(ep) = pod_endpoint(svc, pod, tolerate_unready) else {
            continue;
        };
        if has_ports && ep.ports.is_empty() {
            continue;
        }
        let mut ports = ep.ports.clone();
        ports.sort_by(|a, b| a.name.cmp(&b.name).then(a.port.cmp(&b.port)));
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let addr = EndpointAddress {
            ip: ep.ip.clone(),
            hostname: ep.hostname.clone(),
            node_name: ep.node_name.clone(),
            target_ref: Some(ep.target.clone()),
        };
        let g = groups.entry(key).or_insert_with(|| (ports, vec![], vec![]));
        if tolerate_unready || ep.serving {
            g.1.push(addr);
        } else {
            g.2.push(addr);
        }
    }
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

/// The Endpoints object `svc` should have (None: the service has no selector, leave it be).
pub fn desired_endpoints(svc: &Service, pods: &[Pod]) -> Option<Endpoints> {
    service_selector(svc)?;
    let subsets = desired_subsets(svc, pods);
    Some(Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(endpoint_labels(svc)),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    })
}

/// A mapper from pods to the services selecting them, remembering what each pod matched last
/// so a pod leaving a selector still wakes its old service.
#[derive(Clone)]
pub(crate) struct PodToServices {
    services: Store<Service>,
    last: Arc<Mutex<LastMatches>>,
}

impl PodToServices {
    pub(crate) fn new(services: Store<Service>) -> Self {
        Self {
            services,
            last: Arc::default(),
        }
    }

    pub(crate) fn map(&self, pod: &Pod) -> Vec<ObjectRef<Service>> {
        let now: HashSet<ObjectRef<Service>> = self
            .services
            .state()
            .iter()
            .filter(|s| selects(s, pod))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        let mut all = now.clone();
        if let Ok(mut last) = self.last.lock() {
            if let Some(old) = last.get(&key) {
                all.extend(old.iter().cloned());
            }
            if pod.metadata.deletion_timestamp.is_some() && now.is_empty() {
                last.remove(&key);
            } else {
                last.insert(key, now);
            }
        }
        all.into_iter().collect()
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    // The store may still hold a service the API has deleted (its delete event can reach the
    // trigger stream first): decide from the API's copy, and clean up when it is gone.
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(svc) = svcs.get_opt(&name).await? else {
        delete_orphaned(&ctx, &name, Some(&ns)).await;
        return Ok(Action::await_change());
    };
    if service_selector(&svc).is_none() {
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let sel = service_selector(&svc)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = pods.list(&ListParams::default().labels(&sel)).await?.items;
    let Some(want) = desired_endpoints(&svc, &pods) else {
        return Ok(Action::await_change());
    };
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &want).await?;
        }
        Some(mut cur) => {
            if cur.subsets != want.subsets || cur.metadata.labels != want.metadata.labels {
                cur.subsets = want.subsets;
                cur.metadata.labels = want.metadata.labels;
                api.replace(&name, &PostParams::default(), &cur).await?;
            }
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_svc: Arc<Service>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(error = %err, "endpoints: reconcile failed");
    Action::requeue(Duration::from_secs(1))
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let mapper = PodToServices::new(controller.store());
    let cleanup_ctx = ctx.clone();
    controller
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |p| mapper.map(&p),
        )
        .watches(
            Api::<Endpoints>::all(client.clone()),
            watcher::Config::default(),
            |e| {
                Some(
                    ObjectRef::<Service>::new(&e.name_any())
                        .within(&e.namespace().unwrap_or_default()),
                )
            },
        )
        // deleted services (the main stream only sees applied ones)
        .watches(
            Api::<Service>::all(client),
            watcher::Config::default(),
            |s| Some(ObjectRef::from_obj(&s)),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|res| {
            let ctx = cleanup_ctx.clone();
            async move {
                if let Err(controller::Error::ObjectNotFound(obj)) = res {
                    delete_orphaned(&ctx, &obj.name, obj.namespace.as_deref()).await;
                }
            }
        })
        .await;
    Ok(())
}

/// The service `name` is gone: delete its Endpoints unless they belong to a selector-less
/// service's owner (they carry no marker, so only Endpoints whose service is gone are touched).
async fn delete_orphaned(ctx: &Ctx, name: &str, ns: Option<&str>) {
    let Some(ns) = ns else { return };
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    if let Ok(Some(_)) = svcs.get_opt(name).await {
        return;
    }
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), ns);
    if let Err(e) = api.delete(name, &Default::default()).await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        tracing::debug!(error = %e, "endpoints: deleting endpoints of a deleted service");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub(crate) fn svc(name: &str, headless: bool, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                cluster_ip: headless.then(|| "None".into()),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    pub(crate) fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: Some(target),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        }
    }

    pub(crate) fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("{name}-uid")),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                hostname: Some(name.into()),
                subdomain: Some("web".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: http_port,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: (!ip.is_empty()).then(|| ip.into()),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn ready_and_not_ready_addresses_with_named_ports() {
        let s = svc(
            "web",
            false,
            vec![port("http", 80, IntOrString::String("http".into()))],
        );
        let mut other = pod("other", "10.0.0.9", true, 80);
        other.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        let mut deleting = pod("del", "10.0.0.8", true, 8080);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let pods = vec![
            pod("b", "10.0.0.2", true, 8080),
            pod("a", "10.0.0.1", false, 8080),
            pod("c", "", true, 8080),
            other,
            deleting,
        ];
        let ep = desired_endpoints(&s, &pods).expect("selector");
        let subsets = ep.subsets.expect("subsets");
        assert_eq!(subsets.len(), 1);
        let ss = &subsets[0];
        let ready: Vec<_> = ss
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        let not_ready: Vec<_> = ss
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ready, ["10.0.0.2"]);
        assert_eq!(not_ready, ["10.0.0.1"]);
        let ports = ss.ports.as_ref().expect("ports");
        assert_eq!(ports[0].port, 8080);
        let a = &ss.addresses.as_ref().expect("ready")[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(
            a.target_ref.as_ref().and_then(|t| t.name.as_deref()),
            Some("b")
        );
        assert_eq!(a.hostname, None, "hostnames only for headless services");
    }

    #[test]
    fn different_named_port_numbers_make_separate_subsets() {
        let s = svc(
            "web",
            false,
            vec![port("http", 80, IntOrString::String("http".into()))],
        );
        let pods = vec![
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", true, 9090),
        ];
        let subsets = desired_subsets(&s, &pods);
        assert_eq!(subsets.len(), 2);
        let mut nums: Vec<i32> = subsets
            .iter()
            .map(|ss| ss.ports.as_ref().expect("ports")[0].port)
            .collect();
        nums.sort();
        assert_eq!(nums, [8080, 9090]);
    }

    #[test]
    fn publish_not_ready_headless_and_no_selector() {
        let mut s = svc("web", true, vec![port("p", 80, IntOrString::Int(81))]);
        if let Some(spec) = s.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(true);
        }
        let pods = vec![pod("a", "10.0.0.1", false, 8080)];
        let ep = desired_endpoints(&s, &pods).expect("selector");
        let ss = &ep.subsets.expect("subsets")[0];
        let a = &ss.addresses.as_ref().expect("published although not ready")[0];
        assert_eq!(a.hostname.as_deref(), Some("a"));
        assert_eq!(ss.ports.as_ref().expect("ports")[0].port, 81);
        assert!(
            ep.metadata
                .labels
                .expect("labels")
                .contains_key(HEADLESS_LABEL)
        );
        if let Some(spec) = s.spec.as_mut() {
            spec.selector = None;
        }
        assert!(desired_endpoints(&s, &pods).is_none());
    }

    #[test]
    fn restart_policy_decides_terminated_pods() {
        let mut p = pod("a", "10.0.0.1", false, 80);
        if let Some(st) = p.status.as_mut() {
            st.phase = Some("Succeeded".into());
        }
        assert!(
            should_include(&p, false),
            "restartPolicy Always: still an endpoint"
        );
        if let Some(sp) = p.spec.as_mut() {
            sp.restart_policy = Some("OnFailure".into());
        }
        assert!(!should_include(&p, false));
    }
}
