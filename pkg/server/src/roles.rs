//! The server's own node carries `node-role.kubernetes.io/control-plane` and
//! `node-role.kubernetes.io/master` (`"true"`), as k3s labels its servers, so `kubectl get
//! nodes` shows `control-plane,master` for it. The labels are set from here: a kubelet may not
//! set node-role labels on its own Node. Kept while the Node exists; a re-registered Node gets
//! them again.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The role labels of a server node.
pub(crate) const ROLE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// The merge patch that adds the missing role labels, if any is missing.
pub(crate) fn missing_roles(labels: Option<&BTreeMap<String, String>>) -> Option<Value> {
    let missing: serde_json::Map<String, Value> = ROLE_LABELS
        .iter()
        .filter(|k| labels.and_then(|l| l.get(**k)).map(String::as_str) != Some("true"))
        .map(|k| ((*k).to_string(), json!("true")))
        .collect();
    (!missing.is_empty()).then(|| json!({"metadata": {"labels": missing}}))
}

/// Label node `name` until `shutdown`.
pub(crate) async fn run(client: kube::Client, name: String, shutdown: CancellationToken) {
    let nodes: Api<Node> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(nodes.clone(), cfg)
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(events);
    loop {
        let node = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.next() => match ev {
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    tracing::debug!(node = %name, error = %e, "watching the server's node");
                    continue;
                }
                None => return,
            },
        };
        let Some(patch) = missing_roles(node.metadata.labels.as_ref()) else {
            continue;
        };
        match nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(node = %name, "server node labelled control-plane,master"),
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "labelling the server's node");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_only_what_is_missing() {
        let none = missing_roles(None).expect("both missing");
        assert_eq!(
            none,
            json!({"metadata": {"labels": {
                "node-role.kubernetes.io/control-plane": "true",
                "node-role.kubernetes.io/master": "true"}}})
        );
        let mut l = BTreeMap::new();
        l.insert(ROLE_LABELS[0].to_string(), "true".to_string());
        l.insert(ROLE_LABELS[1].to_string(), "false".to_string());
        assert_eq!(
            missing_roles(Some(&l)),
            Some(json!({"metadata": {"labels": {"node-role.kubernetes.io/master": "true"}}}))
        );
        l.insert(ROLE_LABELS[1].to_string(), "true".to_string());
        assert_eq!(missing_roles(Some(&l)), None);
    }
}
