//! HorizontalPodAutoscaler controller (autoscaling/v2). Every `hpa_sync_period` it reads the
//! target's scale subresource, fetches resource metrics from the metrics API
//! (`metrics.k8s.io`) and computes the desired replicas like upstream (ratio of current to
//! target with a 10% tolerance, scale-up limit, scale-down stabilization window, min/max).
//! Without a metrics API it records upstream's `FailedGetResourceMetric` condition and event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricSpec, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8slite_api::quantity::Quantity;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::util::emit;
use crate::{Ctx, Error, util};

/// Upstream's tolerance: no rescale while the usage ratio is within 10% of 1.
pub const TOLERANCE: f64 = 0.1;
/// Upstream's default scale-down stabilization window.
pub const DEFAULT_DOWNSCALE_WINDOW_SECS: i64 = 300;

/// Replicas wanted for one metric: `ceil(current * usage / target)`, or `current` when the
/// ratio is within the tolerance (upstream's `GetResourceReplicas`).
pub fn replicas_for_ratio(current: i32, usage: f64, target: f64) -> i32 {
    if target <= 0.0 || current <= 0 {
        return current;
    }
    let ratio = usage / target;
    if (ratio - 1.0).abs() <= TOLERANCE {
        return current;
    }
    let want = (ratio * f64::from(current)).ceil();
    if want >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        want as i32
    }
}

/// Average utilization in percent of the request over pods: sum(usage) / sum(requests).
/// `None` when no pod has a request (upstream: "missing request for cpu").
pub fn utilization(usage_milli: &[(i64, i64)]) -> Option<(i64, i64)> {
    let requests: i64 = usage_milli.iter().map(|(_, r)| r).sum();
    if requests <= 0 || usage_milli.is_empty() {
        return None;
    }
    let usage: i64 = usage_milli.iter().map(|(u, _)| u).sum();
    let n = i64::try_from(usage_milli.len()).unwrap_or(1);
    Some((usage * 100 / requests, usage / n))
}

/// Upstream's default scale-up limit per period: double, or +4, whichever is more.
pub fn scale_up_limit(current: i32) -> i32 {
    current.saturating_mul(2).max(current.saturating_add(4))
}

/// Apply the scale-down stabilization window: the highest recommendation within the window
/// wins (so a short dip does not scale down). `history` is (time, recommendation).
pub fn stabilize(history: &[(i64, i32)], now: i64, window_secs: i64, recommendation: i32) -> i32 {
    history
        .iter()
        .filter(|(t, _)| now - t < window_secs)
        .map(|(_, r)| *r)
        .chain(std::iter::once(recommendation))
        .max()
        .unwrap_or(recommendation)
}

/// Clamp to [min, max]; the condition reason when it had to (`TooFewReplicas`,
/// `TooManyReplicas`).
pub fn clamp(desired: i32, min: i32, max: i32) -> (i32, Option<&'static str>) {
    if desired < min {
        (min, Some("TooFewReplicas"))
    } else if desired > max {
        (max, Some("TooManyReplicas"))
    } else {
        (desired, None)
    }
}

/// A quantity string in milli-units (`100m` → 100, `1` → 1000), by the shared parser.
fn milli(q: &str) -> Option<i64> {
    Quantity::parse(q).ok().map(|q| q.milli_i64())
}

fn set_condition(
    status: &mut HorizontalPodAutoscalerStatus,
    type_: &str,
    cond_status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let transition = conds
        .iter()
        .find(|c| c.type_ == type_ && c.status == cond_status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conds.retain(|c| c.type_ != type_);
    conds.push(HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: cond_status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(transition),
    });
    conds.sort_by_key(|c| match c.type_.as_str() {
        "AbleToScale" => 0,
        "ScalingActive" => 1,
        _ => 2,
    });
}

struct State {
    ctx: Ctx,
    recorder: Recorder,
    /// Recommendations per HPA (namespace/name) for the stabilization window.
    history: Mutex<HashMap<String, Vec<(i64, i32)>>>,
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(ctx.client.clone());
    let state = Arc::new(State {
        recorder: ctx.recorder("horizontal-pod-autoscaler"),
        ctx,
        history: Mutex::new(HashMap::new()),
    });
    Controller::new(hpas, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, state)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "hpa reconcile");
            }
            futures::future::ready(())
        })
        .await;
    Ok(())
}

fn error_policy(_h: Arc<HorizontalPodAutoscaler>, err: &Error, state: Arc<State>) -> Action {
    tracing::warn!(error = %err, "hpa sync failed");
    Action::requeue(state.ctx.config.hpa_sync_period)
}

/// The scale subresource API of a target (`apiVersion`, `kind`).
async fn scale_api(
    client: &kube::Client,
    ns: &str,
    api_version: &str,
    kind: &str,
) -> Result<Api<DynamicObject>, kube::Error> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    };
    let gvk = kube::api::GroupVersionKind::gvk(&group, &version, kind);
    let (ar, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    Ok(Api::namespaced_with(client.clone(), ns, &ar))
}

/// One resource metric: (usage per pod in milli-units, request per pod) from the metrics API
/// and the pods' requests. Errors carry upstream's message chain.
async fn fetch_resource(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    resource: &str,
) -> Result<Vec<(i64, i64)>, String> {
    let prefix = format!("unable to get metrics for resource {resource}");
    let url = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={}",
        url_escape(selector)
    );
    let req = http::Request::get(url)
        .body(Vec::new())
        .map_err(|e| format!("{prefix}: {e}"))?;
    let metrics: serde_json::Value = match client.request(req).await {
        Ok(v) => v,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(format!(
                "{prefix}: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)"
            ));
        }
        Err(e) => {
            return Err(format!(
                "{prefix}: unable to fetch metrics from resource metrics API: {e}"
            ));
        }
    };
    let items = metrics
        .get("items")
        .and_then(|i| i.as_array())
        .cloned()
        .unwrap_or_default();
    if items.is_empty() {
        return Err(format!(
            "{prefix}: no metrics returned from resource metrics API"
        ));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod_list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| format!("{prefix}: listing pods: {e}"))?;
    let requests: BTreeMap<String, i64> = pod_list
        .items
        .iter()
        .filter(|p| util::is_pod_active(p))
        .map(|p| {
            let req = p
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .filter_map(|c| {
                    c.resources
                        .as_ref()?
                        .requests
                        .as_ref()?
                        .get(resource)
                        .and_then(|q| milli(&q.0))
                })
                .sum::<i64>();
            (p.name_any(), req)
        })
        .collect();
    let mut out = Vec::new();
    for m in items {
        let name = m
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let Some(req) = requests.get(name) else {
            continue;
        };
        let usage: i64 = m
            .get("containers")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
            .filter_map(|c| c.pointer(&format!("/usage/{resource}"))?.as_str())
            .filter_map(milli)
            .sum();
        out.push((usage, *req));
    }
    Ok(out)
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Replicas wanted by one metric spec, with its current status; errors name the reason and
/// message for the condition.
async fn metric_replicas(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    current: i32,
    spec: &MetricSpec,
) -> Result<(i32, MetricStatus), (String, String)> {
    let Some(res) = spec.resource.as_ref().filter(|_| spec.type_ == "Resource") else {
        let kind = spec.type_.clone();
        return Err((
            format!("FailedGet{kind}Metric"),
            format!(
                "unable to get {} metric: no custom or external metrics API is served",
                kind.to_lowercase()
            ),
        ));
    };
    let target = &res.target;
    let by_util = target.type_ == "Utilization";
    let what = if by_util { "utilization" } else { "usage" };
    let samples = fetch_resource(client, ns, selector, &res.name)
        .await
        .map_err(|e| {
            (
                "FailedGetResourceMetric".to_string(),
                format!("failed to get {} {what}: {e}", res.name),
            )
        })?;
    if by_util {
        let Some((util_pct, avg)) = utilization(&samples) else {
            return Err((
                "FailedGetResourceMetric".into(),
                format!(
                    "failed to get {} utilization: missing request for {}",
                    res.name, res.name
                ),
            ));
        };
        let want = target.average_utilization.unwrap_or(80);
        let replicas = replicas_for_ratio(current, util_pct as f64, f64::from(want));
        Ok((
            replicas,
            MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: res.name.clone(),
                    current: MetricValueStatus {
                        average_utilization: i32::try_from(util_pct).ok(),
                        average_value: Some(Quantity::from_milli(i128::from(avg)).to_k8s()),
                        value: None,
                    },
                }),
                ..MetricStatus::default()
            },
        ))
    } else {
        let target_milli = target
            .average_value
            .as_ref()
            .and_then(|q| milli(&q.0))
            .unwrap_or(0);
        let n = i64::try_from(samples.len()).unwrap_or(1).max(1);
        let avg = samples.iter().map(|(u, _)| u).sum::<i64>() / n;
        let replicas = replicas_for_ratio(current, avg as f64, target_milli as f64);
        Ok((
            replicas,
            MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: res.name.clone(),
                    current: MetricValueStatus {
                        average_value: Some(Quantity::from_milli(i128::from(avg)).to_k8s()),
                        ..MetricValueStatus::default()
                    },
                }),
                ..MetricStatus::default()
            },
        ))
    }
}

async fn reconcile(obj: Arc<HorizontalPodAutoscaler>, state: Arc<State>) -> Result<Action, Error> {
    let period = state.ctx.config.hpa_sync_period;
    let client = state.ctx.client.clone();
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = format!("{ns}/{name}");
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let Some(hpa) = api.get_opt(&name).await? else {
        state.history.lock().map(|mut h| h.remove(&key)).ok();
        return Ok(Action::await_change());
    };
    let reference = hpa.object_ref(&());
    let now = Timestamp::now();
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let mut status = hpa.status.clone().unwrap_or_default();
    status.observed_generation = hpa.metadata.generation;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;

    let target_api = scale_api(
        &client,
        &ns,
        target.api_version.as_deref().unwrap_or("apps/v1"),
        &target.kind,
    )
    .await;
    let scale = match target_api {
        Ok(a) => a.get_scale(&target.name).await.map(|s| (a, s)),
        Err(e) => Err(e),
    };
    let (target_api, scale) = match scale {
        Ok(x) => x,
        Err(e) => {
            let msg =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            set_condition(
                &mut status,
                "AbleToScale",
                "False",
                "FailedGetScale",
                msg,
                now,
            );
            emit(
                &state.recorder,
                &reference,
                None,
                EventType::Warning,
                "FailedGetScale",
                "GetScale",
                e.to_string(),
            )
            .await;
            write_status(&api, &hpa, &status).await?;
            return Ok(Action::requeue(period));
        }
    };
    set_condition(
        &mut status,
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
        now,
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    status.current_replicas = Some(current);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();

    let (desired, reason) = if current == 0 && min != 0 {
        set_condition(
            &mut status,
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
            now,
        );
        (0, String::new())
    } else if current > max {
        (
            max,
            "Current number of replicas above Spec.MaxReplicas".to_string(),
        )
    } else if current < min {
        (
            min,
            "Current number of replicas below Spec.MinReplicas".to_string(),
        )
    } else {
        let metrics = spec.metrics.clone().unwrap_or_default();
        let mut best: Option<i32> = None;
        let mut statuses = Vec::new();
        let mut first_err: Option<(String, String)> = None;
        let mut invalid = 0;
        for m in &metrics {
            match metric_replicas(&client, &ns, &selector, current, m).await {
                Ok((r, st)) => {
                    best = Some(best.map_or(r, |b| b.max(r)));
                    statuses.push(st);
                }
                Err((reason, msg)) => {
                    invalid += 1;
                    emit(
                        &state.recorder,
                        &reference,
                        None,
                        EventType::Warning,
                        &reason,
                        "GetMetric",
                        msg.clone(),
                    )
                    .await;
                    first_err.get_or_insert((reason, msg));
                }
            }
        }
        status.current_metrics = if statuses.is_empty() {
            None
        } else {
            Some(statuses)
        };
        match (best, first_err) {
            (Some(r), err) if invalid == 0 || r > current => {
                let _ = err;
                set_condition(
                    &mut status,
                    "ScalingActive",
                    "True",
                    "ValidMetricFound",
                    "the HPA was able to successfully calculate a replica count from the metrics"
                        .into(),
                    now,
                );
                let window = spec
                    .behavior
                    .as_ref()
                    .and_then(|b| b.scale_down.as_ref())
                    .and_then(|d| d.stabilization_window_seconds)
                    .map(i64::from)
                    .unwrap_or(DEFAULT_DOWNSCALE_WINDOW_SECS);
                let stabilized = {
                    let mut h = state.history.lock().unwrap_or_else(|p| p.into_inner());
                    let entry = h.entry(key.clone()).or_default();
                    let s = stabilize(entry, now.as_second(), window, r);
                    entry.retain(|(t, _)| now.as_second() - t < window);
                    entry.push((now.as_second(), r));
                    s
                };
                let limited = stabilized.min(scale_up_limit(current));
                let (clamped, why) = clamp(limited, min, max);
                match why {
                    Some(w) => set_condition(
                        &mut status,
                        "ScalingLimited",
                        "True",
                        w,
                        if w == "TooFewReplicas" {
                            "the desired replica count is less than the minimum replica count"
                                .into()
                        } else {
                            "the desired replica count is more than the maximum replica count"
                                .into()
                        },
                        now,
                    ),
                    None => set_condition(
                        &mut status,
                        "ScalingLimited",
                        "False",
                        "DesiredWithinRange",
                        "the desired count is within the acceptable range".into(),
                        now,
                    ),
                }
                let reason = if clamped > current {
                    "metric above target"
                } else {
                    "All metrics below target"
                };
                (clamped, reason.to_string())
            }
            (_, Some((reason, msg))) => {
                let total = metrics.len();
                emit(
                    &state.recorder,
                    &reference,
                    None,
                    EventType::Warning,
                    "FailedComputeMetricsReplicas",
                    "ComputeReplicas",
                    format!(
                        "invalid metrics ({invalid} invalid out of {total}), first error is: {msg}"
                    ),
                )
                .await;
                set_condition(
                    &mut status,
                    "ScalingActive",
                    "False",
                    &reason,
                    format!("the HPA was unable to compute the replica count: {msg}"),
                    now,
                );
                (current, String::new())
            }
            _ => (current, String::new()),
        }
    };
    status.desired_replicas = desired;
    if desired != current && !reason.is_empty() {
        let patch = json!({ "spec": { "replicas": desired } });
        target_api
            .patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        status.last_scale_time = Some(Time(now));
        emit(
            &state.ctx.recorder("horizontal-pod-autoscaler"),
            &reference,
            None,
            EventType::Normal,
            "SuccessfulRescale",
            "Rescale",
            format!("New size: {desired}; reason: {reason}"),
        )
        .await;
    }
    write_status(&api, &hpa, &status).await?;
    Ok(Action::requeue(period))
}

async fn write_status(
    api: &Api<HorizontalPodAutoscaler>,
    hpa: &HorizontalPodAutoscaler,
    status: &HorizontalPodAutoscalerStatus,
) -> Result<(), Error> {
    if hpa.status.as_ref() == Some(status) {
        return Ok(());
    }
    let patch = json!({ "status": status });
    api.patch_status(
        &hpa.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_with_tolerance() {
        // 3 pods at 90% of a 50% target → ceil(3 * 1.8) = 6.
        assert_eq!(replicas_for_ratio(3, 90.0, 50.0), 6);
        // Within 10%: unchanged.
        assert_eq!(replicas_for_ratio(4, 54.0, 50.0), 4);
        assert_eq!(replicas_for_ratio(4, 46.0, 50.0), 4);
        // Below: ceil(10 * 0.2) = 2.
        assert_eq!(replicas_for_ratio(10, 10.0, 50.0), 2);
        assert_eq!(replicas_for_ratio(0, 10.0, 50.0), 0);
    }

    #[test]
    fn utilization_over_requests() {
        // usage 100m+300m over requests 200m+200m = 100%, average 200m.
        assert_eq!(utilization(&[(100, 200), (300, 200)]), Some((100, 200)));
        assert_eq!(utilization(&[(100, 0)]), None);
        // parsing itself is tested in k8slite_api::quantity
        assert_eq!(milli("250m"), Some(250));
        assert_eq!(milli("10x"), None);
    }

    #[test]
    fn limits_window_and_clamp() {
        assert_eq!(scale_up_limit(1), 5);
        assert_eq!(scale_up_limit(10), 20);
        // A recommendation of 8 two minutes ago holds a drop to 3 inside a 300s window.
        assert_eq!(stabilize(&[(880, 8)], 1000, 300, 3), 8);
        // Outside the window it does not.
        assert_eq!(stabilize(&[(600, 8)], 1000, 300, 3), 3);
        assert_eq!(clamp(0, 1, 5), (1, Some("TooFewReplicas")));
        assert_eq!(clamp(9, 1, 5), (5, Some("TooManyReplicas")));
        assert_eq!(clamp(3, 1, 5), (3, None));
    }
}
