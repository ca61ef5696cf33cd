//! ResourceQuota controller: keeps `status.hard` (a copy of `spec.hard`) and `status.used` of
//! every ResourceQuota up to date, recomputed when pods, services, config maps, secrets, PVCs,
//! replication controllers or quotas of its namespace change (and every
//! [`RESYNC`] for `count/<resource>` of other kinds). Tracked: `pods`, `cpu`/`requests.cpu`,
//! `memory`/`requests.memory`, `limits.cpu`, `limits.memory`, ephemeral storage and extended
//! resources (`requests.<name>`, `limits.<name>`), `services`, `services.nodeports`,
//! `services.loadbalancers`, `configmaps`, `secrets`, `persistentvolumeclaims`,
//! `requests.storage`, `<class>.storageclass.storage.k8s.io/{requests.storage,persistentvolumeclaims}`,
//! `replicationcontrollers`, `resourcequotas`, and `count/<resource>[.<group>]`. Pod scopes
//! `Terminating`, `NotTerminating`, `BestEffort` and `NotBestEffort` apply to pod resources.
//! (Rejecting over-quota objects is the API server's admission.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota,
    ResourceRequirements, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8slite_api::quantity::{self, ResourceList};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::discovery::Discovery;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::util::is_pod_terminal;
use crate::{Ctx, Error};

/// How often quotas are recomputed without a triggering change.
pub const RESYNC: Duration = Duration::from_secs(30);

const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// The objects of one namespace a quota's usage is computed from.
#[derive(Default, Debug)]
pub struct Inputs {
    /// Pods.
    pub pods: Vec<Pod>,
    /// Services.
    pub services: Vec<Service>,
    /// PersistentVolumeClaims.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// Object counts by resource name as used in `count/<name>` (`configmaps`,
    /// `deployments.apps`, …).
    pub counts: HashMap<String, usize>,
}

fn parse(q: &Quantity) -> Option<quantity::Quantity> {
    quantity::Quantity::from_k8s(q)
}

/// Sum in the canonical form (the same arithmetic and printing as quota admission).
fn sum(items: impl IntoIterator<Item = quantity::Quantity>) -> Quantity {
    items.into_iter().sum::<quantity::Quantity>().to_k8s()
}

fn count(n: usize) -> Quantity {
    quantity::Quantity::from_units(i64::try_from(n).unwrap_or(i64::MAX)).to_k8s()
}

fn resource_list(m: Option<&BTreeMap<String, Quantity>>) -> ResourceList {
    m.into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), parse(v)?)))
        .collect()
}

/// A pod's effective requests (`limits == false`) or limits: max(sum of containers, max of
/// init containers) plus the pod overhead, by the rule shared with quota admission.
pub fn pod_effective(pod: &Pod, limits: bool) -> ResourceList {
    let Some(spec) = pod.spec.as_ref() else {
        return ResourceList::new();
    };
    let list = |r: &Option<ResourceRequirements>| {
        resource_list(r.as_ref().and_then(|r| {
            if limits {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            }
        }))
    };
    let containers: Vec<ResourceList> =
        spec.containers.iter().map(|c| list(&c.resources)).collect();
    let init: Vec<ResourceList> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| list(&c.resources))
        .collect();
    let overhead = resource_list(spec.overhead.as_ref());
    quantity::pod_effective(&containers, &init, Some(&overhead))
}

/// What a pod charges against quotas (`requests.cpu`, `limits.memory`, …), exactly as the
/// API server's quota admission computes it ([`quantity::pod_quota_usage`]).
pub fn pod_usage(pod: &Pod) -> ResourceList {
    quantity::pod_quota_usage(&pod_effective(pod, false), &pod_effective(pod, true))
}

fn is_best_effort(pod: &Pod) -> bool {
    pod.spec.as_ref().is_none_or(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .all(|c| {
                c.resources.as_ref().is_none_or(|r| {
                    r.requests.as_ref().is_none_or(BTreeMap::is_empty)
                        && r.limits.as_ref().is_none_or(BTreeMap::is_empty)
                })
            })
    })
}

/// Whether the pod matches every scope (unknown scopes match nothing).
pub fn pod_in_scopes(pod: &Pod, scopes: &[String]) -> bool {
    scopes.iter().all(|s| {
        let terminating = pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .is_some();
        match s.as_str() {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => is_best_effort(pod),
            "NotBestEffort" => !is_best_effort(pod),
            _ => false,
        }
    })
}

/// `status.used` for `hard` with `scopes`, from `inputs`. Keys the controller cannot compute
/// are left out.
pub fn compute_usage(
    hard: &BTreeMap<String, Quantity>,
    scopes: &[String],
    inputs: &Inputs,
) -> BTreeMap<String, Quantity> {
    let pods: Vec<&Pod> = inputs
        .pods
        .iter()
        .filter(|p| !is_pod_terminal(p) && pod_in_scopes(p, scopes))
        .collect();
    let pod_usage: Vec<ResourceList> = pods.iter().map(|p| pod_usage(p)).collect();
    let pod_sum = |key: &str| sum(pod_usage.iter().filter_map(|u| u.get(key).copied()));
    let node_ports = |svc: &&Service| {
        let spec = svc.spec.as_ref();
        let t = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
        if t == "NodePort" || t == "LoadBalancer" {
            spec.and_then(|s| s.ports.as_ref()).map_or(0, Vec::len)
        } else {
            0
        }
    };
    let pvc_storage = |class: Option<&str>| {
        sum(inputs
            .pvcs
            .iter()
            .filter(|c| {
                class.is_none()
                    || c.spec
                        .as_ref()
                        .and_then(|s| s.storage_class_name.as_deref())
                        == class
            })
            .filter_map(|c| {
                c.spec
                    .as_ref()?
                    .resources
                    .as_ref()?
                    .requests
                    .as_ref()?
                    .get("storage")
                    .and_then(parse)
            }))
    };
    let counted = |name: &str| inputs.counts.get(name).copied().map(count);
    let mut used = BTreeMap::new();
    for key in hard.keys() {
        let value = match key.as_str() {
            "pods" | "count/pods" => Some(count(pods.len())),
            "cpu" | "memory" | "ephemeral-storage" => Some(pod_sum(key)),
            "services" | "count/services" => Some(count(inputs.services.len())),
            "services.nodeports" => {
                Some(count(inputs.services.iter().map(|s| node_ports(&s)).sum()))
            }
            "services.loadbalancers" => Some(count(
                inputs
                    .services
                    .iter()
                    .filter(|s| {
                        s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
                    })
                    .count(),
            )),
            "persistentvolumeclaims" | "count/persistentvolumeclaims" => {
                Some(count(inputs.pvcs.len()))
            }
            "requests.storage" => Some(pvc_storage(None)),
            "configmaps" => counted("configmaps"),
            "secrets" => counted("secrets"),
            "replicationcontrollers" => counted("replicationcontrollers"),
            "resourcequotas" => counted("resourcequotas"),
            k if k.starts_with("requests.") || k.starts_with("limits.") => Some(pod_sum(k)),
            k if k.starts_with("count/") => counted(&k["count/".len()..]),
            k if k.contains(STORAGE_CLASS_SUFFIX) => {
                let (class, what) = k.split_once(STORAGE_CLASS_SUFFIX).unwrap_or_default();
                match what {
                    "requests.storage" => Some(pvc_storage(Some(class))),
                    "persistentvolumeclaims" => Some(count(
                        inputs
                            .pvcs
                            .iter()
                            .filter(|c| {
                                c.spec
                                    .as_ref()
                                    .and_then(|s| s.storage_class_name.as_deref())
                                    == Some(class)
                            })
                            .count(),
                    )),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(v) = value {
            used.insert(key.clone(), v);
        }
    }
    used
}

/// The resource names (`configmaps`, `deployments.apps`) whose objects must be counted.
fn count_names(hard: &BTreeMap<String, Quantity>) -> Vec<String> {
    let mut out = Vec::new();
    for k in hard.keys() {
        let name = match k.as_str() {
            "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => k.as_str(),
            "count/pods" | "count/services" | "count/persistentvolumeclaims" => continue,
            k if k.starts_with("count/") => &k["count/".len()..],
            _ => continue,
        };
        out.push(name.to_string());
    }
    out
}

async fn count_objects(ctx: &Ctx, ns: &str, name: &str) -> Result<Option<usize>, Error> {
    let c = ctx.client.clone();
    let lp = ListParams::default();
    let n = match name {
        "configmaps" => Api::<ConfigMap>::namespaced(c, ns)
            .list_metadata(&lp)
            .await?
            .items
            .len(),
        "secrets" => Api::<Secret>::namespaced(c, ns)
            .list_metadata(&lp)
            .await?
            .items
            .len(),
        "replicationcontrollers" => Api::<ReplicationController>::namespaced(c, ns)
            .list_metadata(&lp)
            .await?
            .items
            .len(),
        "resourcequotas" => Api::<ResourceQuota>::namespaced(c, ns)
            .list_metadata(&lp)
            .await?
            .items
            .len(),
        other => {
            let (plural, group) = other.split_once('.').unwrap_or((other, ""));
            let discovery = Discovery::new(c.clone()).filter(&[group]).run().await?;
            let found = discovery.get(group).and_then(|g| {
                g.recommended_resources()
                    .into_iter()
                    .find(|(ar, _)| ar.plural == plural)
            });
            let Some((ar, _)) = found else {
                return Ok(None);
            };
            Api::<PartialObjectMeta<DynamicObject>>::namespaced_with(c, ns, &ar)
                .list(&lp)
                .await?
                .items
                .len()
        }
    };
    Ok(Some(n))
}

async fn reconcile(rq: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = rq.namespace().unwrap_or_default();
    let spec = rq.spec.clone().unwrap_or_default();
    let hard = spec.hard.unwrap_or_default();
    let scopes = spec.scopes.unwrap_or_default();
    let c = ctx.client.clone();
    let lp = ListParams::default();
    let wants = |p: &dyn Fn(&str) -> bool| hard.keys().any(|k| p(k));
    let mut inputs = Inputs::default();
    if wants(&|k| {
        matches!(
            k,
            "pods" | "count/pods" | "cpu" | "memory" | "ephemeral-storage"
        ) || k.starts_with("requests.") && k != "requests.storage"
            || k.starts_with("limits.")
    }) {
        inputs.pods = Api::<Pod>::namespaced(c.clone(), &ns)
            .list(&lp)
            .await?
            .items;
    }
    if wants(&|k| k.starts_with("services") || k == "count/services") {
        inputs.services = Api::<Service>::namespaced(c.clone(), &ns)
            .list(&lp)
            .await?
            .items;
    }
    if wants(&|k| k.contains("persistentvolumeclaims") || k.contains("requests.storage")) {
        inputs.pvcs = Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns)
            .list(&lp)
            .await?
            .items;
    }
    for name in count_names(&hard) {
        if let Some(n) = count_objects(&ctx, &ns, &name).await? {
            inputs.counts.insert(name, n);
        }
    }
    let used = compute_usage(&hard, &scopes, &inputs);
    let status = rq.status.clone().unwrap_or_default();
    if status.hard.as_ref() != Some(&hard) || status.used.as_ref() != Some(&used) {
        let api: Api<ResourceQuota> = Api::namespaced(c, &ns);
        let patch = json!({"status": {"hard": hard, "used": used}});
        api.patch_status(
            &rq.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(Action::requeue(RESYNC))
}

fn error_policy(_rq: Arc<ResourceQuota>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(error = %err, "resourcequota: reconcile failed");
    Action::requeue(Duration::from_secs(1))
}

/// All quotas of the namespace of `obj`.
fn quotas_of<K: Resource>(store: &Store<ResourceQuota>, obj: &K) -> Vec<ObjectRef<ResourceQuota>> {
    let ns = obj.meta().namespace.clone();
    store
        .state()
        .iter()
        .filter(|q| q.metadata.namespace == ns)
        .map(|q| ObjectRef::from_obj(q.as_ref()))
        .collect()
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let c = ctx.client.clone();
    let controller = Controller::new(
        Api::<ResourceQuota>::all(c.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    let (s1, s2, s3, s4, s5, s6) = (
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        store,
    );
    let wc = watcher::Config::default;
    controller
        .watches(Api::<Pod>::all(c.clone()), wc(), move |o| {
            quotas_of(&s1, &o)
        })
        .watches(Api::<Service>::all(c.clone()), wc(), move |o| {
            quotas_of(&s2, &o)
        })
        .watches(
            Api::<PartialObjectMeta<ConfigMap>>::all(c.clone()),
            wc(),
            move |o| quotas_of(&s3, &o),
        )
        .watches(
            Api::<PartialObjectMeta<Secret>>::all(c.clone()),
            wc(),
            move |o| quotas_of(&s4, &o),
        )
        .watches(
            Api::<PersistentVolumeClaim>::all(c.clone()),
            wc(),
            move |o| quotas_of(&s5, &o),
        )
        .watches(
            Api::<PartialObjectMeta<ReplicationController>>::all(c),
            wc(),
            move |o| quotas_of(&s6, &o),
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
    use k8s_openapi::api::core::v1::{
        Container, PersistentVolumeClaimSpec, PodSpec, PodStatus, ServicePort, ServiceSpec,
        VolumeResourceRequirements,
    };

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    fn pod(cpu: &str, mem: &str, phase: &str) -> Pod {
        let req = BTreeMap::from([("cpu".to_string(), q(cpu)), ("memory".to_string(), q(mem))]);
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(req.clone()),
                        limits: Some(req),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn hard(keys: &[&str]) -> BTreeMap<String, Quantity> {
        keys.iter().map(|k| (k.to_string(), q("100"))).collect()
    }

    #[test]
    fn pod_usage_sums_non_terminal_pods() {
        let inputs = Inputs {
            pods: vec![
                pod("100m", "128Mi", "Running"),
                pod("200m", "128Mi", "Pending"),
                pod("4", "1Gi", "Succeeded"),
                Pod::default(),
            ],
            ..Inputs::default()
        };
        let used = compute_usage(
            &hard(&[
                "pods",
                "requests.cpu",
                "limits.memory",
                "memory",
                "requests.nvidia.com/gpu",
            ]),
            &[],
            &inputs,
        );
        assert_eq!(used["pods"], q("3"));
        assert_eq!(used["requests.cpu"], q("300m"));
        assert_eq!(used["limits.memory"], q("256Mi"));
        assert_eq!(used["memory"], q("256Mi"));
        assert_eq!(used["requests.nvidia.com/gpu"], q("0"));
        // scopes
        let used = compute_usage(&hard(&["pods"]), &["BestEffort".into()], &inputs);
        assert_eq!(used["pods"], q("1"));
    }

    #[test]
    fn init_containers_and_overhead() {
        let mut p = pod("100m", "1Mi", "Running");
        if let Some(spec) = p.spec.as_mut() {
            spec.init_containers = Some(vec![Container {
                name: "init".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([("cpu".to_string(), q("500m"))])),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }]);
            spec.overhead = Some(BTreeMap::from([("cpu".to_string(), q("10m"))]));
        }
        assert_eq!(pod_usage(&p)["requests.cpu"].to_k8s(), q("510m"));
        assert_eq!(pod_usage(&p)["cpu"].to_k8s(), q("510m"));
    }

    #[test]
    fn object_counts_services_and_storage() {
        let svc = |t: &str, ports: usize| Service {
            spec: Some(ServiceSpec {
                type_: Some(t.into()),
                ports: Some(vec![ServicePort::default(); ports]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        let pvc = |class: &str, size: &str| PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_string(), q(size))])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        };
        let inputs = Inputs {
            services: vec![
                svc("ClusterIP", 1),
                svc("NodePort", 2),
                svc("LoadBalancer", 1),
            ],
            pvcs: vec![pvc("fast", "1Gi"), pvc("slow", "2Gi")],
            counts: HashMap::from([
                ("configmaps".to_string(), 4),
                ("deployments.apps".to_string(), 2),
            ]),
            ..Inputs::default()
        };
        let used = compute_usage(
            &hard(&[
                "services",
                "services.nodeports",
                "services.loadbalancers",
                "configmaps",
                "count/deployments.apps",
                "persistentvolumeclaims",
                "requests.storage",
                "fast.storageclass.storage.k8s.io/requests.storage",
                "unknown-thing",
            ]),
            &[],
            &inputs,
        );
        assert_eq!(used["services"], q("3"));
        assert_eq!(used["services.nodeports"], q("3"));
        assert_eq!(used["services.loadbalancers"], q("1"));
        assert_eq!(used["configmaps"], q("4"));
        assert_eq!(used["count/deployments.apps"], q("2"));
        assert_eq!(used["persistentvolumeclaims"], q("2"));
        assert_eq!(used["requests.storage"], q("3Gi"));
        assert_eq!(
            used["fast.storageclass.storage.k8s.io/requests.storage"],
            q("1Gi")
        );
        assert!(!used.contains_key("unknown-thing"));
        assert_eq!(
            count_names(&hard(&[
                "configmaps",
                "count/pods",
                "count/deployments.apps"
            ])),
            ["configmaps", "deployments.apps"]
        );
    }
}
