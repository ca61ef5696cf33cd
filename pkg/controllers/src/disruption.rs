//! Disruption controller: keeps each PodDisruptionBudget's status (currentHealthy,
//! desiredHealthy, disruptionsAllowed, expectedPods, observedGeneration, disruptedPods and the
//! `DisruptionAllowed` condition). minAvailable/maxUnavailable percentages (and
//! maxUnavailable) resolve against the scale of the pods' controllers (Deployment through its
//! ReplicaSet, ReplicaSet, ReplicationController, StatefulSet, or any scale subresource). The
//! eviction API reads `status.disruptionsAllowed`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error, util};

/// How long a pod the eviction API recorded in `disruptedPods` may take to be deleted before
/// it counts again (upstream's DeletionTimeout).
const DELETION_TIMEOUT_SECS: i64 = 120;

/// Pods a budget selects. policy/v1: an empty selector selects every pod of the namespace,
/// a missing one none.
pub fn selects(sel: Option<&LabelSelector>, pod: &Pod) -> bool {
    match sel {
        None => false,
        Some(s) => util::selector_matches(s, &util::labels(&pod.metadata)),
    }
}

/// The numbers of a budget's status, before the condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Healthy pods (Ready, not being deleted, not just disrupted).
    pub current_healthy: i32,
    /// Healthy pods the budget wants.
    pub desired_healthy: i32,
    /// Pods expected (from the controllers' scale, or the pods found for an integer
    /// minAvailable).
    pub expected_pods: i32,
    /// Evictions allowed now.
    pub disruptions_allowed: i32,
}

/// Errors of the budget computation (they end up in the `DisruptionAllowed` condition with
/// reason `SyncFailed`).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BudgetError {
    /// A percentage or value could not be read.
    #[error("invalid value {0:?} for minAvailable/maxUnavailable")]
    BadValue(String),
    /// A pod's controller scale was needed and the pod has no controller.
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    /// A controller's scale could not be read.
    #[error("{0}")]
    Scale(String),
}

/// Compute a budget from its spec, the number of healthy pods, the pods found and, when the
/// spec needs it, the summed scale of the pods' controllers (upstream's
/// `getExpectedPodCount` + `updatePdbStatus`).
pub fn compute_budget(
    pdb: &PodDisruptionBudget,
    healthy: i32,
    found: i32,
    controller_scale: impl FnOnce() -> Result<i32, BudgetError>,
) -> Result<Budget, BudgetError> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let spec = pdb.spec.clone().unwrap_or_default();
    let (expected, desired) = if let Some(max_unavailable) = &spec.max_unavailable {
        let expected = controller_scale()?;
        let unavailable = util::scaled_int_or_percent(max_unavailable, expected, true)
            .ok_or_else(|| BudgetError::BadValue(format!("{max_unavailable:?}")))?;
        (expected, (expected - unavailable).max(0))
    } else if let Some(min_available) = &spec.min_available {
        match min_available {
            IntOrString::Int(n) => (found, *n),
            IntOrString::String(_) => {
                let expected = controller_scale()?;
                let desired = util::scaled_int_or_percent(min_available, expected, true)
                    .ok_or_else(|| BudgetError::BadValue(format!("{min_available:?}")))?;
                (expected, desired)
            }
        }
    } else {
        (found, 0)
    };
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    Ok(Budget {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
    })
}

/// The full status: the budget (or the failure), the still-pending disrupted pods, the
/// condition (keeping its transition time when unchanged).
pub fn build_status(
    pdb: &PodDisruptionBudget,
    budget: Result<Budget, BudgetError>,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let prev = pdb.status.clone().unwrap_or_default();
    let (b, status, reason, message) = match budget {
        Ok(b) if b.disruptions_allowed > 0 => (b, "True", "SufficientPods", String::new()),
        Ok(b) => (b, "False", "InsufficientPods", String::new()),
        Err(e) => (
            Budget {
                current_healthy: prev.current_healthy,
                desired_healthy: prev.desired_healthy,
                expected_pods: prev.expected_pods,
                disruptions_allowed: 0,
            },
            "False",
            "SyncFailed",
            e.to_string(),
        ),
    };
    let old = prev
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed");
    let transition = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    PodDisruptionBudgetStatus {
        current_healthy: b.current_healthy,
        desired_healthy: b.desired_healthy,
        expected_pods: b.expected_pods,
        disruptions_allowed: b.disruptions_allowed,
        observed_generation: pdb.metadata.generation,
        disrupted_pods: if disrupted.is_empty() {
            None
        } else {
            Some(disrupted)
        },
        conditions: Some(vec![Condition {
            type_: "DisruptionAllowed".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: transition,
            observed_generation: pdb.metadata.generation,
        }]),
    }
}

/// Disrupted pods still pending: recorded by the eviction API less than the deletion timeout
/// ago and not yet being deleted.
pub fn pending_disruptions(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    now: Timestamp,
) -> BTreeMap<String, Time> {
    let by_name: HashMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, *p)))
        .collect();
    pdb.status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, t)| {
            by_name
                .get(name.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
                && now.as_second() - t.0.as_second() < DELETION_TIMEOUT_SECS
        })
        .collect()
}

struct State {
    ctx: Ctx,
    pods: Store<Pod>,
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let pdbs: Api<PodDisruptionBudget> = Api::all(ctx.client.clone());
    let (pod_store, writer) = reflector::store::<Pod>();
    let pod_events = watcher(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let controller = Controller::new(pdbs, watcher::Config::default());
    let pdb_store = controller.store();
    let controller = controller.watches_stream(pod_events, move |pod: Pod| {
        let ns = pod.namespace().unwrap_or_default();
        pdb_store
            .state()
            .iter()
            .filter(|b| b.namespace().as_deref() == Some(ns.as_str()))
            .filter(|b| selects(b.spec.as_ref().and_then(|s| s.selector.as_ref()), &pod))
            .map(|b| ObjectRef::from_obj(b.as_ref()))
            .collect::<Vec<_>>()
    });
    let state = Arc::new(State {
        ctx,
        pods: pod_store,
    });
    controller
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, state)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "pdb reconcile");
            }
            futures::future::ready(())
        })
        .await;
    Ok(())
}

fn error_policy(_p: Arc<PodDisruptionBudget>, err: &Error, _s: Arc<State>) -> Action {
    tracing::warn!(error = %err, "pdb sync failed");
    util::conflict_backoff(err)
}

/// The scale of a pod's controller, keyed by "Kind/name" so each counts once.
async fn controller_scale(
    client: &kube::Client,
    ns: &str,
    pod: &Pod,
) -> Result<(String, i32), BudgetError> {
    let pname = pod.name_any();
    let r = util::controller_of(&pod.metadata)
        .ok_or_else(|| BudgetError::NoController(pname.clone()))?;
    let err =
        |e: kube::Error| BudgetError::Scale(format!("getting scale of {} {}: {e}", r.kind, r.name));
    match r.kind.as_str() {
        "ReplicaSet" => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get(&r.name)
                .await
                .map_err(err)?;
            if let Some(d) = util::controller_of(&rs.metadata).filter(|d| d.kind == "Deployment") {
                let dep = Api::<Deployment>::namespaced(client.clone(), ns)
                    .get(&d.name)
                    .await
                    .map_err(|e| {
                        BudgetError::Scale(format!("getting scale of Deployment {}: {e}", d.name))
                    })?;
                let n = dep.spec.and_then(|s| s.replicas).unwrap_or(1);
                return Ok((format!("Deployment/{}", d.name), n));
            }
            Ok((
                format!("ReplicaSet/{}", r.name),
                rs.spec.and_then(|s| s.replicas).unwrap_or(1),
            ))
        }
        "ReplicationController" => {
            let rc = Api::<ReplicationController>::namespaced(client.clone(), ns)
                .get(&r.name)
                .await
                .map_err(err)?;
            Ok((
                format!("ReplicationController/{}", r.name),
                rc.spec.and_then(|s| s.replicas).unwrap_or(1),
            ))
        }
        "StatefulSet" => {
            let ss = Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get(&r.name)
                .await
                .map_err(err)?;
            Ok((
                format!("StatefulSet/{}", r.name),
                ss.spec.and_then(|s| s.replicas).unwrap_or(1),
            ))
        }
        _ => {
            // Any other controller with a scale subresource.
            let (group, version) = match r.api_version.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), r.api_version.clone()),
            };
            let gvk = kube::api::GroupVersionKind::gvk(&group, &version, &r.kind);
            let (ar, _) = kube::discovery::pinned_kind(client, &gvk)
                .await
                .map_err(err)?;
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let scale = api.get_scale(&r.name).await.map_err(err)?;
            Ok((
                format!("{}/{}", r.kind, r.name),
                scale.spec.and_then(|s| s.replicas).unwrap_or(0),
            ))
        }
    }
}

async fn reconcile(obj: Arc<PodDisruptionBudget>, state: Arc<State>) -> Result<Action, Error> {
    if tokio::time::timeout(Duration::from_secs(10), state.pods.wait_until_ready())
        .await
        .is_err()
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(state.ctx.client.clone(), &ns);
    let Some(pdb) = api.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    let selector = pdb.spec.as_ref().and_then(|s| s.selector.clone());
    let all = state.pods.state();
    let pods: Vec<&Pod> = all
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| selects(selector.as_ref(), p))
        .collect();
    let disrupted = pending_disruptions(&pdb, &pods, now);
    let healthy = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && util::is_pod_ready(p)
                && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default())
        })
        .count();
    let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    let found = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    // The controllers' scale, fetched only when the spec needs it.
    let needs_scale = pdb.spec.as_ref().is_some_and(|s| {
        s.max_unavailable.is_some()
            || matches!(
                s.min_available,
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_))
            )
    });
    let scale = if needs_scale {
        let mut seen: HashMap<String, i32> = HashMap::new();
        let mut failure = None;
        for p in &pods {
            match controller_scale(&state.ctx.client, &ns, p).await {
                Ok((k, n)) => {
                    seen.insert(k, n);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(seen.values().sum()),
        }
    } else {
        Ok(0)
    };
    let budget = compute_budget(&pdb, healthy, found, || scale);
    let status = build_status(&pdb, budget, disrupted.clone(), now);
    if pdb.status.as_ref() != Some(&status) {
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        if status.disrupted_pods.is_none()
            && let Some(m) = value.as_object_mut()
        {
            m.insert("disruptedPods".into(), serde_json::Value::Null);
        }
        let patch = json!({ "status": value });
        api.patch_status(
            &pdb.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    // Disrupted pods time out: look again then; controllers' scale changes are not watched,
    // so look again now and then.
    let next = disrupted
        .values()
        .map(|t| DELETION_TIMEOUT_SECS - (now.as_second() - t.0.as_second()))
        .min()
        .map(|s| Duration::from_secs(u64::try_from(s.max(1)).unwrap_or(1)))
        .unwrap_or(Duration::from_secs(30));
    Ok(Action::requeue(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                selector: Some(LabelSelector::default()),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        }
    }

    #[test]
    fn min_available_int_uses_found_pods() {
        let b = compute_budget(&pdb(Some(IntOrString::Int(2)), None), 3, 3, || {
            panic!("scale not needed")
        })
        .expect("budget");
        assert_eq!(
            b,
            Budget {
                current_healthy: 3,
                desired_healthy: 2,
                expected_pods: 3,
                disruptions_allowed: 1
            }
        );
        let b =
            compute_budget(&pdb(Some(IntOrString::Int(3)), None), 2, 3, || Ok(0)).expect("budget");
        assert_eq!(b.disruptions_allowed, 0);
    }

    #[test]
    fn percentages_and_max_unavailable_use_controller_scale() {
        // 50% of 5 rounds up to 3.
        let b = compute_budget(
            &pdb(Some(IntOrString::String("50%".into())), None),
            5,
            5,
            || Ok(5),
        )
        .expect("budget");
        assert_eq!(
            (b.desired_healthy, b.disruptions_allowed, b.expected_pods),
            (3, 2, 5)
        );
        // maxUnavailable 1 of 4: desired 3.
        let b =
            compute_budget(&pdb(None, Some(IntOrString::Int(1))), 4, 4, || Ok(4)).expect("budget");
        assert_eq!((b.desired_healthy, b.disruptions_allowed), (3, 1));
        // maxUnavailable 30% of 4 rounds up to 2: desired 2; only 2 healthy → 0 allowed.
        let b = compute_budget(
            &pdb(None, Some(IntOrString::String("30%".into()))),
            2,
            4,
            || Ok(4),
        )
        .expect("budget");
        assert_eq!((b.desired_healthy, b.disruptions_allowed), (2, 0));
        // No expected pods: nothing allowed.
        let b =
            compute_budget(&pdb(None, Some(IntOrString::Int(1))), 0, 0, || Ok(0)).expect("budget");
        assert_eq!(b.disruptions_allowed, 0);
        let e = compute_budget(&pdb(None, Some(IntOrString::Int(1))), 1, 1, || {
            Err(BudgetError::NoController("p".into()))
        });
        assert_eq!(e, Err(BudgetError::NoController("p".into())));
    }

    #[test]
    fn status_condition() {
        let now = Timestamp::from_second(1000).expect("now");
        let p = pdb(Some(IntOrString::Int(1)), None);
        let ok = build_status(
            &p,
            Ok(Budget {
                current_healthy: 2,
                desired_healthy: 1,
                expected_pods: 2,
                disruptions_allowed: 1,
            }),
            BTreeMap::new(),
            now,
        );
        let c = &ok.conditions.clone().unwrap_or_default()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "SufficientPods")
        );
        let failed = build_status(
            &p,
            Err(BudgetError::NoController("x".into())),
            BTreeMap::new(),
            now,
        );
        let c = &failed.conditions.unwrap_or_default()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SyncFailed")
        );
        assert_eq!(c.message, "found no controllers for pod \"x\"");
        assert_eq!(failed.disruptions_allowed, 0);
    }

    #[test]
    fn disrupted_pods_expire() {
        let now = Timestamp::from_second(1000).expect("now");
        let mut p = pdb(Some(IntOrString::Int(1)), None);
        p.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([
                (
                    "fresh".to_string(),
                    Time(Timestamp::from_second(990).expect("t")),
                ),
                (
                    "stale".to_string(),
                    Time(Timestamp::from_second(10).expect("t")),
                ),
                (
                    "gone".to_string(),
                    Time(Timestamp::from_second(990).expect("t")),
                ),
            ])),
            ..PodDisruptionBudgetStatus::default()
        });
        let mk = |n: &str| {
            let mut pod = Pod::default();
            pod.metadata.name = Some(n.into());
            pod
        };
        let (a, b) = (mk("fresh"), mk("stale"));
        let left = pending_disruptions(&p, &[&a, &b], now);
        assert_eq!(left.keys().collect::<Vec<_>>(), ["fresh"]);
    }
}
