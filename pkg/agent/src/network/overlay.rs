//! The overlay's loop: publish this node's VTEP on its Node, then keep the routes / FDB /
//! neighbour entries towards every other node in step with the Node objects (and resync
//! periodically, so an entry removed by hand comes back).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use super::cache::Cache;
use super::{NodeNetwork, Progress, Woke, next_change};

/// How often the peers are synced when nothing changed.
const RESYNC: Duration = Duration::from_secs(60);
/// How long to let a burst of Node changes settle.
const SETTLE: Duration = Duration::from_millis(20);

pub(super) async fn run(
    net: Arc<NodeNetwork>,
    client: kube::Client,
    cache: Cache,
    shutdown: CancellationToken,
) {
    let Some((_, local)) = net.wait_pod_cidr(&shutdown).await else {
        return;
    };
    let nodes: Api<Node> = Api::all(client);
    publish(&nodes, &net, &local, &shutdown).await;
    if !cache.wait_ready(&shutdown).await {
        return;
    }
    let mut changes = cache.changes();
    let mut last_peers = None;
    // A periodic resync reprograms even unchanged peers (repairs entries removed by hand); a
    // Node change whose peers are the same as before (status heartbeats) does nothing.
    let mut resync = true;
    loop {
        let all = cache.nodes.state();
        let peers = super::peers_from_nodes(&net.node_name, all.iter().map(|n| &**n));
        let unchanged = !resync && last_peers.as_ref() == Some(&peers);
        let mut guard = net.overlay.lock().await;
        if let Some(overlay) = guard.as_mut().filter(|_| !unchanged) {
            match overlay.sync(&peers).await {
                Ok(report) => {
                    if let Some(local) = &report.recreated {
                        // The VXLAN device was gone and came back with a new MAC.
                        publish(&nodes, &net, local, &shutdown).await;
                    }
                    if last_peers.as_ref() != Some(&peers) {
                        tracing::info!(peers = peers.len(), ?report, "pod network routes synced");
                    }
                    last_peers = Some(peers);
                    resync = false;
                    net.set_progress(Progress::Ready);
                }
                Err(e) => tracing::warn!("syncing the pod network routes: {e}"),
            }
        }
        drop(guard);
        let synced = changes.borrow_and_update().nodes;
        loop {
            match next_change(&mut changes, RESYNC, SETTLE, &shutdown).await {
                None => return,
                Some(Woke::Timer) => {
                    resync = true;
                    break;
                }
                // Only Node changes matter here.
                Some(Woke::Changed) if changes.borrow_and_update().nodes != synced => break,
                Some(Woke::Changed) => {}
            }
        }
    }
}

/// Patch this node's VTEP annotations onto its Node (retrying until it works or shutdown).
async fn publish(
    nodes: &Api<Node>,
    net: &NodeNetwork,
    local: &k8slite_network::routes::LocalOverlay,
    shutdown: &CancellationToken,
) {
    let annotations = k8slite_network::routes::local_annotations(net.backend, local);
    let body = serde_json::json!({ "metadata": { "annotations": annotations } });
    let mut delay = Duration::from_millis(200);
    loop {
        match nodes
            .patch(
                &net.node_name,
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => return,
            Err(e) => tracing::warn!(node = %net.node_name, "publishing the VTEP annotations: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
