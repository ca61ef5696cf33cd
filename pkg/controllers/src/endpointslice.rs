//! EndpointSlice controller: for every Service with a selector, `discovery.k8s.io/v1`
//! EndpointSlices (addressType IPv4, at most 100 endpoints each, named `<svc>-<random>` through
//! generateName, owned by the Service) listing the selected pods with their conditions
//! (`ready`, `serving`, `terminating`), node, hostname (headless services) and target
//! reference, and the ports resolved per pod. Labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, as upstream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::endpoints::{PodToServices, endpoint_labels, pod_endpoint, selects, service_selector};
use crate::{Ctx, Error};

/// Label naming the service of a slice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller managing a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice (upstream's default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The content one slice should have.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceContent {
    /// Ports.
    pub ports: Vec<EndpointPort>,
    /// Endpoints (at most [`MAX_ENDPOINTS_PER_SLICE`]).
    pub endpoints: Vec<Endpoint>,
}

/// The slices `svc` should have given the pods of its namespace (None: no selector).
pub fn desired_slices(svc: &Service, pods: &[Pod]) -> Option<Vec<SliceContent>> {
    service_selector(svc)?;
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let has_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| !p.is_empty());
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in pods.iter().filter(|p| selects(svc, p)) {
        let Some(ep) = pod_endpoint(svc, pod, true) else {
            continue;
        };
        if ep.ip.contains(':') || (has_ports && ep.ports.is_empty()) {
            continue;
        }
        let mut ports: Vec<EndpointPort> = ep
            .ports
            .iter()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        ports.sort_by(|a, b| a.name.cmp(&b.name).then(a.port.cmp(&b.port)));
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let endpoint = Endpoint {
            addresses: vec![ep.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(publish || (ep.serving && !ep.terminating)),
                serving: Some(ep.serving),
                terminating: Some(ep.terminating),
            }),
            hostname: ep.hostname.clone(),
            node_name: ep.node_name.clone(),
            target_ref: Some(ep.target.clone()),
            ..Endpoint::default()
        };
        groups
            .entry(key)
            .or_insert_with(|| (ports, vec![]))
            .1
            .push(endpoint);
    }
    let mut out = Vec::new();
    for (_, (ports, mut eps)) in groups {
        eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        for chunk in eps.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.push(SliceContent {
                ports: ports.clone(),
                endpoints: chunk.to_vec(),
            });
        }
    }
    if out.is_empty() {
        // A service with no endpoints still gets one (empty placeholder) slice, as upstream.
        out.push(SliceContent {
            ports: vec![],
            endpoints: vec![],
        });
    }
    Some(out)
}

/// Labels of the slices of `svc`.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = endpoint_labels(svc);
    l.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    l.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    l
}

/// What to write to make the existing slices match the desired ones.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Slices to create (generateName).
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new content.
    pub update: Vec<EndpointSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

fn slice_ports(s: &EndpointSlice) -> Vec<EndpointPort> {
    s.ports.clone().unwrap_or_default()
}

/// Match desired contents to existing slices (same ports; identical content first), reusing
/// slices where possible.
pub fn plan(svc: &Service, desired: Vec<SliceContent>, existing: &[EndpointSlice]) -> Plan {
    let labels = slice_labels(svc);
    let mut unused: Vec<&EndpointSlice> = existing.iter().collect();
    let mut out = Plan::default();
    let mut rest = Vec::new();
    // exact matches first
    for d in desired {
        if let Some(i) = unused.iter().position(|s| {
            slice_ports(s) == d.ports
                && s.endpoints == d.endpoints
                && s.metadata.labels.as_ref() == Some(&labels)
        }) {
            unused.remove(i);
        } else {
            rest.push(d);
        }
    }
    for d in rest {
        if let Some(i) = unused.iter().position(|s| slice_ports(s) == d.ports) {
            let mut s = unused.remove(i).clone();
            s.endpoints = d.endpoints;
            s.metadata.labels = Some(labels.clone());
            out.update.push(s);
        } else {
            out.create.push(new_slice(svc, d, labels.clone()));
        }
    }
    out.delete = unused.iter().map(|s| s.name_any()).collect();
    out
}

fn new_slice(svc: &Service, d: SliceContent, labels: BTreeMap<String, String>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: svc.name_any(),
                uid: svc.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: d.endpoints,
        ports: Some(d.ports),
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = svc.namespace().unwrap_or_default();
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = slices
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
            svc.name_any()
        )))
        .await?
        .items;
    let desired = match service_selector(&svc) {
        None => Vec::new(),
        Some(sel) => {
            let sel = sel
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let pods = pods.list(&ListParams::default().labels(&sel)).await?.items;
            desired_slices(&svc, &pods).unwrap_or_default()
        }
    };
    let p = plan(&svc, desired, &existing);
    for s in &p.update {
        slices
            .replace(&s.name_any(), &PostParams::default(), s)
            .await?;
    }
    for s in &p.create {
        slices.create(&PostParams::default(), s).await?;
    }
    for name in &p.delete {
        match slices.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_svc: Arc<Service>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(error = %err, "endpointslice: reconcile failed");
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
    controller
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |p| mapper.map(&p),
        )
        .watches(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
            |s| {
                let svc = s.labels().get(SERVICE_NAME_LABEL)?.clone();
                Some(ObjectRef::<Service>::new(&svc).within(&s.namespace().unwrap_or_default()))
            },
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|_| async {})
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::tests::{pod, port, svc};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let s = svc(
            "web",
            true,
            vec![port("http", 80, IntOrString::String("http".into()))],
        );
        let mut term = pod("c", "10.0.0.3", true, 8080);
        term.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let pods = vec![
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", false, 8080),
            term,
        ];
        let d = desired_slices(&s, &pods).expect("selector");
        assert_eq!(d.len(), 1);
        let c: Vec<(bool, bool, bool)> = d[0]
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().expect("conditions");
                (
                    c.ready.expect("ready"),
                    c.serving.expect("serving"),
                    c.terminating.expect("terminating"),
                )
            })
            .collect();
        assert_eq!(
            c,
            [
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
        assert_eq!(d[0].ports[0].port, Some(8080));
        assert_eq!(d[0].endpoints[0].hostname.as_deref(), Some("a"));
    }

    #[test]
    fn at_most_100_per_slice_and_plan_reuses_slices() {
        let s = svc("web", false, vec![port("", 80, IntOrString::Int(80))]);
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.1.{}.{}", i / 200, i % 200),
                    true,
                    80,
                )
            })
            .collect();
        let d = desired_slices(&s, &pods).expect("selector");
        assert_eq!(
            d.iter().map(|c| c.endpoints.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let p = plan(&s, d.clone(), &[]);
        assert_eq!(p.create.len(), 3);
        let created = &p.create[0];
        assert_eq!(created.metadata.generate_name.as_deref(), Some("web-"));
        let l = created.metadata.labels.clone().expect("labels");
        assert_eq!(l[SERVICE_NAME_LABEL], "web");
        assert_eq!(l[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(created.address_type, "IPv4");
        // existing slices named: same content → nothing; fewer pods → an update and a delete
        let existing: Vec<EndpointSlice> = p
            .create
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                s.metadata.name = Some(format!("web-{i}"));
                s
            })
            .collect();
        assert_eq!(plan(&s, d, &existing), Plan::default());
        let d2 = desired_slices(&s, &pods[..150]).expect("selector");
        let p2 = plan(&s, d2, &existing);
        assert!(p2.create.is_empty());
        assert_eq!(p2.delete.len(), 1);
    }

    #[test]
    fn service_without_endpoints_gets_one_empty_slice() {
        let s = svc("web", false, vec![port("http", 80, IntOrString::Int(80))]);
        let d = desired_slices(&s, &[]).expect("selector");
        assert_eq!(
            d,
            vec![SliceContent {
                ports: vec![],
                endpoints: vec![]
            }]
        );
    }
}
