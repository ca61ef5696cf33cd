//! Node IPAM: gives every node a `spec.podCIDR`/`spec.podCIDRs` block of
//! `Config::node_cidr_mask` bits cut from `Config::cluster_cidr`, never the same block to two
//! nodes. The allocation is derived from the nodes themselves, so a deleted node's block is
//! free again and a restarted server continues where it was.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error};

/// The pod CIDRs a node has (parsed; unparsable ones ignored).
pub fn node_cidrs(node: &Node) -> Vec<IpNet> {
    let spec = node.spec.as_ref();
    let mut out: Vec<IpNet> = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.and_then(|s| s.pod_cidr.as_ref()))
        .filter_map(|c| c.parse().ok())
        .collect();
    out.dedup();
    out
}

/// The first block of `mask` bits in `cluster` not overlapping any of `used`.
pub fn allocate(cluster: IpNet, mask: u8, used: &HashSet<IpNet>) -> Option<IpNet> {
    let mask = mask.max(cluster.prefix_len());
    cluster
        .subnets(mask)
        .ok()?
        .find(|c| !used.iter().any(|u| u.contains(c) || c.contains(u)))
}

struct State {
    nodes: Store<Node>,
    /// Blocks handed out whose node the store does not show with them yet.
    pending: Mutex<HashMap<String, IpNet>>,
    recorder: Recorder,
}

async fn reconcile(node: Arc<Node>, ctx: Arc<(Ctx, State)>) -> Result<Action, Error> {
    let (ctx, st) = (&ctx.0, &ctx.1);
    if !node_cidrs(&node).is_empty() || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = node.name_any();
    let cidr = {
        let mut pending = st.pending.lock().map_err(|_| Error::Invalid {
            kind: "Node",
            name: name.clone(),
            what: "cidr allocator lock poisoned".into(),
        })?;
        let nodes = st.nodes.state();
        let present: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        // drop pending blocks of nodes that are gone or now show a CIDR
        pending.retain(|n, _| {
            present.contains(n)
                && nodes
                    .iter()
                    .find(|x| &x.name_any() == n)
                    .is_some_and(|x| node_cidrs(x).is_empty())
        });
        if let Some(c) = pending.get(&name) {
            Some(*c)
        } else {
            let mut used: HashSet<IpNet> = nodes.iter().flat_map(|n| node_cidrs(n)).collect();
            used.extend(pending.values().copied());
            let c = allocate(ctx.config.cluster_cidr, ctx.config.node_cidr_mask, &used);
            if let Some(c) = c {
                pending.insert(name.clone(), c);
            }
            c
        }
    };
    let Some(cidr) = cidr else {
        let _ = st
            .recorder
            .publish(
                &Event {
                    type_: EventType::Normal,
                    reason: "CIDRNotAvailable".into(),
                    note: Some(format!("Node {name} status is now: CIDRNotAvailable")),
                    action: "Allocating".into(),
                    secondary: None,
                },
                &node.object_ref(&()),
            )
            .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(node = name, cidr = %cidr, "allocated pod CIDR");
    Ok(Action::await_change())
}

fn error_policy(_n: Arc<Node>, err: &Error, _ctx: Arc<(Ctx, State)>) -> Action {
    tracing::debug!(error = %err, "node-ipam: reconcile failed");
    Action::requeue(Duration::from_secs(1))
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let controller = Controller::new(
        Api::<Node>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().concurrency(1));
    let state = State {
        nodes: controller.store(),
        pending: Mutex::new(HashMap::new()),
        recorder: ctx.recorder("node-ipam-controller"),
    };
    controller
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new((ctx, state)))
        .for_each(|_| async {})
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_blocks_and_reuses_freed_ones() {
        let cluster: IpNet = "10.42.0.0/16".parse().expect("cidr");
        let mut used = HashSet::new();
        let a = allocate(cluster, 24, &used).expect("free");
        assert_eq!(a.to_string(), "10.42.0.0/24");
        used.insert(a);
        let b = allocate(cluster, 24, &used).expect("free");
        assert_eq!(b.to_string(), "10.42.1.0/24");
        used.insert(b);
        used.remove(&a);
        assert_eq!(
            allocate(cluster, 24, &used),
            Some(a),
            "a freed block is reused"
        );
        // overlapping foreign blocks are avoided
        used.insert("10.42.0.0/23".parse().expect("cidr"));
        assert_eq!(
            allocate(cluster, 24, &used)
                .map(|c| c.to_string())
                .as_deref(),
            Some("10.42.2.0/24")
        );
        // exhaustion
        let tiny: IpNet = "10.0.0.0/24".parse().expect("cidr");
        let used = HashSet::from([tiny]);
        assert_eq!(allocate(tiny, 25, &used), None);
    }
}
