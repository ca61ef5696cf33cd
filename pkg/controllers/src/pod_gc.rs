//! Pod garbage collector: deletes terminated pods beyond `Config::terminated_pod_gc_threshold`
//! (oldest first), pods bound to nodes that no longer exist (after the node has been missing
//! for a check period and a GET confirms it), and unscheduled pods that are terminating.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use tokio_util::sync::CancellationToken;

use crate::util::is_pod_terminal;
use crate::{Ctx, Error};

/// How often the pod GC runs (upstream's `gcCheckPeriod`).
pub const CHECK_PERIOD: Duration = Duration::from_secs(20);

/// `(namespace, name, uid)` of a pod to delete.
pub type PodKey = (String, String, String);

fn key(p: &Pod) -> PodKey {
    (
        p.namespace().unwrap_or_default(),
        p.name_any(),
        p.metadata.uid.clone().unwrap_or_default(),
    )
}

/// Terminated pods over `threshold`, oldest (by creation) first. 0 disables.
pub fn terminated_over_threshold(pods: &[Pod], threshold: usize) -> Vec<PodKey> {
    if threshold == 0 {
        return vec![];
    }
    let mut done: Vec<&Pod> = pods
        .iter()
        .filter(|p| is_pod_terminal(p) && p.metadata.deletion_timestamp.is_none())
        .collect();
    if done.len() <= threshold {
        return vec![];
    }
    done.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let n = done.len() - threshold;
    done.into_iter().take(n).map(key).collect()
}

/// Pods bound to a node not in `nodes`.
pub fn orphaned(pods: &[Pod], nodes: &HashSet<String>) -> Vec<(PodKey, String)> {
    pods.iter()
        .filter_map(|p| {
            let n = p.spec.as_ref()?.node_name.as_ref()?;
            (!n.is_empty() && !nodes.contains(n)).then(|| (key(p), n.clone()))
        })
        .collect()
}

/// Pods being deleted that were never scheduled.
pub fn unscheduled_terminating(pods: &[Pod]) -> Vec<PodKey> {
    pods.iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_none_or(str::is_empty)
        })
        .map(key)
        .collect()
}

async fn force_delete(ctx: &Ctx, k: &PodKey, why: &str) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &k.0);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(k.2.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&k.1, &dp).await {
        Ok(_) => tracing::info!(namespace = k.0, pod = k.1, why, "pod gc: deleted pod"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(namespace = k.0, pod = k.1, error = %e, "pod gc: delete failed"),
    }
}

/// One pass; `missing` remembers nodes seen missing at the previous pass.
async fn pass(ctx: &Ctx, missing: &mut HashMap<String, ()>) -> Result<(), Error> {
    let pods = Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let nodes_api = Api::<Node>::all(ctx.client.clone());
    let nodes: HashSet<String> = nodes_api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    for k in terminated_over_threshold(&pods, ctx.config.terminated_pod_gc_threshold) {
        force_delete(ctx, &k, "terminated pods over threshold").await;
    }
    let mut now_missing = HashMap::new();
    for (k, node) in orphaned(&pods, &nodes) {
        // quarantine: missing at two passes in a row, and confirmed by a GET
        if missing.contains_key(&node) && nodes_api.get_opt(&node).await?.is_none() {
            force_delete(ctx, &k, "bound to a node that no longer exists").await;
        }
        now_missing.insert(node, ());
    }
    *missing = now_missing;
    for k in unscheduled_terminating(&pods) {
        force_delete(ctx, &k, "unscheduled and terminating").await;
    }
    Ok(())
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    // A short period for clusters tuned for quick node monitoring (tests, edge), else upstream's.
    let period = CHECK_PERIOD.min(ctx.config.node_monitor_period * 2);
    let mut missing = HashMap::new();
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                if let Err(e) = pass(&ctx, &mut missing).await {
                    tracing::warn!(error = %e, "pod gc: pass failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    fn pod(name: &str, phase: &str, node: &str, age_s: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("{name}-uid")),
                creation_timestamp: Some(Time(
                    Timestamp::from_second(1_000_000 - age_s).expect("time"),
                )),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn oldest_terminated_over_threshold() {
        let pods = vec![
            pod("new", "Succeeded", "n", 10),
            pod("old", "Failed", "n", 100),
            pod("mid", "Succeeded", "n", 50),
            pod("running", "Running", "n", 1000),
        ];
        let d: Vec<String> = terminated_over_threshold(&pods, 1)
            .into_iter()
            .map(|k| k.1)
            .collect();
        assert_eq!(d, ["old", "mid"]);
        assert!(terminated_over_threshold(&pods, 3).is_empty());
        assert!(terminated_over_threshold(&pods, 0).is_empty(), "0 disables");
    }

    #[test]
    fn orphans_and_unscheduled_terminating() {
        let mut gone = pod("gone", "Pending", "", 1);
        gone.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let pods = vec![
            pod("a", "Running", "n1", 1),
            pod("b", "Running", "n2", 1),
            gone,
        ];
        let nodes = HashSet::from(["n1".to_string()]);
        let o = orphaned(&pods, &nodes);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].0.1.as_str(), o[0].1.as_str()), ("b", "n2"));
        let u: Vec<String> = unscheduled_terminating(&pods)
            .into_iter()
            .map(|k| k.1)
            .collect();
        assert_eq!(u, ["gone"]);
    }
}
