//! POST pods/eviction: delete a pod unless that would break its PodDisruptionBudget. The
//! budget's `status.disruptionsAllowed` (kept by the disruption controller) is decremented
//! with a compare-and-swap and the pod recorded in `status.disruptedPods` before the pod is
//! deleted; no budget left → 429 with upstream's message and a `DisruptionBudget` cause.
//! Pods that are not running (Pending, Succeeded, Failed) or already being deleted are
//! evicted regardless, like upstream.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use k8slite_api::{ApiError, Cause, meta, selector::LabelSelector};
use k8slite_datastore::StoreError;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::body::Body;
use crate::handler::ResourceRequest;
use crate::objects::{from_stored, to_stored};

/// Message of a refused eviction.
pub const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";
/// Status cause type of a refusal by a budget (upstream's `policyv1.DisruptionBudgetCause`).
pub const CAUSE: &str = "DisruptionBudget";
/// Most pods a budget records as disrupted before evictions are refused.
const MAX_DISRUPTED_PODS: usize = 2000;

/// Whether the pod is evicted without consulting budgets.
pub fn ignores_budget(pod: &Value) -> bool {
    meta::is_deleting(pod)
        || matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Pending" | "Succeeded" | "Failed") | None
        )
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Ready")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

/// The budgets whose selector matches the pod (policy/v1: an empty selector matches every pod,
/// a missing one none).
pub fn matching_budgets<'a>(pod: &Value, pdbs: &'a [(Value, i64)]) -> Vec<&'a (Value, i64)> {
    let labels = meta::labels(pod);
    pdbs.iter()
        .filter(|(pdb, _)| match pdb.pointer("/spec/selector") {
            None | Some(Value::Null) => false,
            Some(sel) => LabelSelector::from_json(sel).is_ok_and(|s| s.matches(&labels)),
        })
        .collect()
}

fn i64_at(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// What the budget says about evicting `pod`: `Ok(None)` when the pod may go without touching
/// the budget (an unhealthy pod the policy lets go), `Ok(Some(updated budget))` to write
/// before deleting, or the refusal.
pub fn check_and_decrement(pdb: &Value, pod: &Value, now: &str) -> Result<Option<Value>, ApiError> {
    let name = meta::name(pdb);
    let running_unready =
        pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running") && !is_ready(pod);
    if running_unready {
        let policy = pdb
            .pointer("/spec/unhealthyPodEvictionPolicy")
            .and_then(Value::as_str)
            .unwrap_or("IfHealthyBudget");
        let healthy = i64_at(pdb, "/status/currentHealthy");
        let desired = i64_at(pdb, "/status/desiredHealthy");
        if policy == "AlwaysAllow" || (healthy >= desired && desired > 0) {
            return Ok(None);
        }
    }
    let observed = i64_at(pdb, "/status/observedGeneration");
    let generation = i64_at(pdb, "/metadata/generation");
    if observed < generation {
        let mut e = ApiError::too_many_requests(VIOLATION, 10);
        e.causes.push(Cause::new(
            CAUSE,
            "",
            format!("The disruption budget {name} is still being processed by the server."),
        ));
        return Err(e);
    }
    let allowed = i64_at(pdb, "/status/disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden_msg(format!(
            "poddisruptionbudgets.policy \"{name}\" is forbidden: pdb disruptions allowed is negative"
        )));
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden_msg(format!(
            "poddisruptionbudgets.policy \"{name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
        )));
    }
    if allowed == 0 {
        let mut e = ApiError::too_many_requests(VIOLATION, 0);
        e.causes.push(Cause::new(
            CAUSE,
            "",
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                i64_at(pdb, "/status/desiredHealthy"),
                i64_at(pdb, "/status/currentHealthy")
            ),
        ));
        return Err(e);
    }
    let mut out = pdb.clone();
    out["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if !out["status"]
        .get("disruptedPods")
        .is_some_and(Value::is_object)
    {
        out["status"]["disruptedPods"] = json!({});
    }
    out["status"]["disruptedPods"][meta::name(pod)] = json!(now);
    if allowed - 1 == 0 {
        let conds = out["status"]
            .as_object_mut()
            .map(|m| m.entry("conditions").or_insert_with(|| json!([])));
        if let Some(Value::Array(conds)) = conds {
            conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("DisruptionAllowed"));
            conds.push(json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
                              "message": "", "lastTransitionTime": now, "observedGeneration": generation}));
        }
    }
    Ok(Some(out))
}

impl ApiServer {
    /// POST pods/eviction.
    pub(crate) async fn evict(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let ev = r.decode_body(&body)?;
        let (group, kind) = meta::type_meta(&ev);
        if !kind.is_empty()
            && (kind != "Eviction" || !matches!(group, "policy/v1" | "policy/v1beta1"))
        {
            return Err(ApiError::bad_request(format!(
                "the body must be a policy/v1 Eviction, not {group} {kind}"
            )));
        }
        let name = meta::name(&ev);
        if !name.is_empty() && name != r.name() {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object: {} != {name}",
                r.name()
            )));
        }
        let mut opts = ev
            .get("deleteOptions")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let dry_run = r.query.dry_run()?
            || opts
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        let ns = r.ns().unwrap_or_default().to_string();
        let key = r.info.key(Some(&ns), r.name());
        let created = || {
            crate::body::json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            )
        };
        for _attempt in 0..8 {
            let kv = self
                .store
                .get(&key)
                .await
                .map_err(|e| crate::objects::store_err(r, r.name(), e))?
                .ok_or_else(|| ApiError::not_found("", "pods", r.name()))?;
            let pod = from_stored(&kv)?;
            // The pod deleted must be the one checked against the budget.
            if opts.get("preconditions").is_none() {
                opts["preconditions"] = json!({"uid": meta::uid(&pod)});
            }
            if !ignores_budget(&pod) {
                let pdbs = self.list_budgets(&ns).await?;
                let matching = matching_budgets(&pod, &pdbs);
                if matching.len() > 1 {
                    return Err(ApiError::internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    ));
                }
                if let Some((pdb, rev)) = matching.first() {
                    let now = meta::now_rfc3339();
                    if let Some(updated) = check_and_decrement(pdb, &pod, &now)? {
                        if dry_run {
                            return Ok(created());
                        }
                        let pkey = self
                            .registry()
                            .get("policy", "v1", "poddisruptionbudgets")
                            .map(|i| i.key(Some(&ns), meta::name(pdb)))
                            .ok_or_else(|| {
                                ApiError::internal("poddisruptionbudgets not registered")
                            })?;
                        match self.store.update(&pkey, to_stored(&updated)?, *rev).await {
                            Ok(_) => {}
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(e) => {
                                return Err(ApiError::internal(format!(
                                    "updating disruption budget: {e}"
                                )));
                            }
                        }
                    }
                }
                if !dry_run {
                    self.mark_disruption_target(&key, &kv).await;
                }
            }
            let info = r.info.clone();
            match self.delete_one(&info, &key, &opts, dry_run).await {
                Ok(_) => return Ok(created()),
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(
            "",
            "pods",
            r.name(),
            "too many concurrent writers, try again",
        ))
    }

    async fn list_budgets(&self, ns: &str) -> Result<Vec<(Value, i64)>, ApiError> {
        let Some(info) = self.registry().get("policy", "v1", "poddisruptionbudgets") else {
            return Ok(Vec::new());
        };
        let page = self
            .store
            .list(
                &info.key_prefix_in(Some(ns)),
                k8slite_datastore::ListOptions {
                    skip_count: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ApiError::internal(format!("listing disruption budgets: {e}")))?;
        page.items
            .iter()
            .map(|kv| Ok((crate::objects::from_stored_as(&info, kv)?, kv.mod_revision)))
            .collect()
    }

    /// Record the `DisruptionTarget` condition (reason `EvictionByEvictionAPI`) on the pod
    /// before it is deleted; best effort.
    async fn mark_disruption_target(&self, key: &str, kv: &k8slite_datastore::KeyValue) {
        let Ok(mut pod) = from_stored(kv) else { return };
        let cond = json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                          "message": "Eviction API: evicting", "lastTransitionTime": meta::now_rfc3339(), "lastProbeTime": null});
        let Some(st) = pod
            .as_object_mut()
            .map(|m| m.entry("status").or_insert_with(|| json!({})))
        else {
            return;
        };
        if !st.get("conditions").is_some_and(Value::is_array) {
            st["conditions"] = json!([]);
        }
        if let Some(conds) = st["conditions"].as_array_mut() {
            conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("DisruptionTarget"));
            conds.push(cond);
        }
        meta::metadata_mut(&mut pod).remove("resourceVersion");
        if let Ok(bytes) = to_stored(&pod)
            && let Err(e) = self.store.update(key, bytes, kv.mod_revision).await
        {
            tracing::debug!(error = %e, "recording DisruptionTarget condition");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(allowed: i64, generation: i64, observed: i64) -> Value {
        json!({"metadata": {"name": "web", "generation": generation},
               "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
               "status": {"disruptionsAllowed": allowed, "observedGeneration": observed, "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 2}})
    }

    fn running(ready: bool) -> Value {
        json!({"metadata": {"name": "p", "labels": {"app": "web"}},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    #[test]
    fn refused_without_budget() {
        let e = check_and_decrement(&pdb(0, 1, 1), &running(true), "t").expect_err("no budget");
        assert_eq!(
            (e.code, e.reason.as_str(), e.message.as_str()),
            (429, "TooManyRequests", VIOLATION)
        );
        assert_eq!(e.causes[0].reason, CAUSE);
        assert_eq!(
            e.causes[0].message,
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
        let e = check_and_decrement(&pdb(1, 2, 1), &running(true), "t").expect_err("stale status");
        assert_eq!((e.code, e.retry_after), (429, Some(10)));
        assert!(e.causes[0].message.contains("still being processed"));
    }

    #[test]
    fn decrements_and_records() {
        let out = check_and_decrement(&pdb(1, 1, 1), &running(true), "2026-01-01T00:00:00Z")
            .expect("allowed")
            .expect("budget updated");
        assert_eq!(out["status"]["disruptionsAllowed"], 0);
        assert_eq!(out["status"]["disruptedPods"]["p"], "2026-01-01T00:00:00Z");
        assert_eq!(out["status"]["conditions"][0]["reason"], "InsufficientPods");
        // an unready pod goes when the budget is otherwise healthy
        assert!(
            check_and_decrement(&pdb(0, 1, 1), &running(false), "t")
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn selection_and_bypass() {
        let pdbs = vec![
            (pdb(1, 1, 1), 1),
            (json!({"metadata": {"name": "none"}, "spec": {}}), 2),
            (
                json!({"metadata": {"name": "all"}, "spec": {"selector": {}}}),
                3,
            ),
        ];
        let m = matching_budgets(&running(true), &pdbs);
        assert_eq!(
            m.iter().map(|(p, _)| meta::name(p)).collect::<Vec<_>>(),
            ["web", "all"]
        );
        assert!(ignores_budget(&json!({"status": {"phase": "Pending"}})));
        assert!(ignores_budget(&json!({"status": {"phase": "Succeeded"}})));
        assert!(!ignores_budget(&running(true)));
    }
}
