//! Node lifecycle: watches nodes and their Leases in `kube-node-lease`. Every
//! `Config::node_monitor_period` it checks each node: one whose Lease (or Ready heartbeat) has
//! not been renewed within `Config::node_monitor_grace_period` gets its Ready, MemoryPressure,
//! DiskPressure and PIDPressure conditions set to Unknown (`NodeStatusUnknown`), a
//! `NodeNotReady` event, and its pods marked not Ready (upstream's MarkPodsNotReady). Nodes get
//! the `node.kubernetes.io/unreachable` (Ready Unknown) or `node.kubernetes.io/not-ready`
//! (Ready False) NoExecute and NoSchedule taints, removed when they recover. The taint manager
//! part evicts (deletes) pods on nodes with NoExecute taints they do not tolerate, or once
//! their `tolerationSeconds` have passed, with a `TaintManagerEviction` event.

pub mod logic;

use std::collections::HashMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error};

/// Namespace of the node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What was last seen of a node's heartbeat, and when (local clock).
struct Probe {
    seen: (Option<String>, Option<String>),
    at: Instant,
}

struct Lifecycle {
    ctx: Ctx,
    probes: HashMap<String, Probe>,
    node_events: Recorder,
    eviction_events: Recorder,
}

fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

impl Lifecycle {
    async fn event(
        rec: &Recorder,
        obj: &impl Resource<DynamicType = ()>,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = rec.publish(&ev, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, "node-lifecycle: recording event");
        }
    }

    async fn pass(&mut self) -> Result<(), Error> {
        let client = self.ctx.client.clone();
        let grace = self.ctx.config.node_monitor_grace_period;
        let nodes_api: Api<Node> = Api::all(client.clone());
        let nodes = nodes_api.list(&ListParams::default()).await?.items;
        let leases: HashMap<String, Lease> =
            Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE)
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(|l| (l.name_any(), l))
                .collect();
        self.probes
            .retain(|name, _| nodes.iter().any(|n| &n.name_any() == name));
        for node in nodes {
            let name = node.name_any();
            let lease_renew = leases
                .get(&name)
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.to_string());
            let ready_heartbeat = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0.to_string());
            let seen = (lease_renew, ready_heartbeat);
            let now_i = Instant::now();
            let probe = self.probes.entry(name.clone()).or_insert(Probe {
                seen: seen.clone(),
                at: now_i,
            });
            if probe.seen != seen {
                probe.seen = seen;
                probe.at = now_i;
            }
            let stale = now_i.duration_since(probe.at) > grace;
            if let Err(e) = self.check(&node, stale).await {
                tracing::debug!(node = name, error = %e, "node-lifecycle: check failed");
            }
        }
        Ok(())
    }

    async fn check(&self, node: &Node, stale: bool) -> Result<(), Error> {
        let client = self.ctx.client.clone();
        let name = node.name_any();
        let nodes_api: Api<Node> = Api::all(client.clone());
        let now = Timestamp::now();
        let mut ready = ready_status(node);
        let mut resource_version = node.resource_version();
        if stale {
            let conds = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if let Some(new) = logic::stale_conditions(&conds, now) {
                let was_ready = ready.as_deref() == Some("True");
                let updated = nodes_api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"conditions": new}})),
                    )
                    .await?;
                resource_version = updated.resource_version();
                ready = Some("Unknown".into());
                tracing::info!(node = name, "node stopped posting status: Ready is Unknown");
                if was_ready || conds.is_empty() {
                    Self::event(
                        &self.node_events,
                        node,
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await;
                }
            }
        }
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let taints = match logic::lifecycle_taints(ready.as_deref(), &taints, now) {
            Some(new) => {
                let value = if new.is_empty() {
                    json!(null)
                } else {
                    json!(new)
                };
                let patch = json!({"metadata": {"resourceVersion": resource_version}, "spec": {"taints": value}});
                nodes_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                new
            }
            None => taints,
        };
        let unreachable = ready.as_deref() == Some("Unknown");
        let no_execute: Vec<Taint> = taints
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if !unreachable && no_execute.is_empty() {
            return Ok(());
        }
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await?
            .items;
        for pod in pods {
            if unreachable {
                self.mark_not_ready(&pod, now).await;
            }
            if pod.metadata.deletion_timestamp.is_some() || no_execute.is_empty() {
                continue;
            }
            let tols = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            if let Some(at) = logic::eviction_time(&tols, &no_execute, now)
                && at <= now
            {
                self.evict(&pod).await;
            }
        }
        Ok(())
    }

    /// Set the pod's Ready condition False (its node is unreachable).
    async fn mark_not_ready(&self, pod: &Pod, now: Timestamp) {
        let Some(conds) = pod.status.as_ref().and_then(|s| s.conditions.clone()) else {
            return;
        };
        if crate::util::is_pod_terminal(pod) {
            return;
        }
        let mut changed = false;
        let conds: Vec<PodCondition> = conds
            .into_iter()
            .map(|mut c| {
                if c.type_ == "Ready" && c.status != "False" {
                    c.status = "False".into();
                    c.last_transition_time = Some(Time(now));
                    changed = true;
                }
                c
            })
            .collect();
        if !changed {
            return;
        }
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"conditions": conds}})),
            )
            .await
        {
            Ok(_) => {
                Self::event(
                    &self.node_events,
                    pod,
                    "NodeNotReady",
                    "Node is not ready".into(),
                )
                .await;
            }
            Err(e) => tracing::debug!(error = %e, "node-lifecycle: marking pod not ready"),
        }
    }

    async fn evict(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        Self::event(
            &self.eviction_events,
            pod,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        )
        .await;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => tracing::info!(namespace = ns, pod = name, "evicted pod from tainted node"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(namespace = ns, pod = name, error = %e, "eviction failed"),
        }
    }
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let mut lc = Lifecycle {
        node_events: ctx.recorder("node-controller"),
        eviction_events: ctx.recorder("taint-eviction-controller"),
        probes: HashMap::new(),
        ctx,
    };
    let mut tick = tokio::time::interval(lc.ctx.config.node_monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                if let Err(e) = lc.pass().await {
                    tracing::warn!(error = %e, "node-lifecycle: pass failed");
                }
            }
        }
    }
}
