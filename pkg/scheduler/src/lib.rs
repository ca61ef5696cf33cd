//! k8slite-scheduler: places pending pods on nodes (filter → score → bind via `pods/binding`).
//!
//! Pods with no `spec.nodeName`, `spec.schedulerName: default-scheduler` (the API's default),
//! not being deleted and without scheduling gates are taken in priority order (`spec.priority`,
//! then creation time). Each attempt is a pure function ([`framework::schedule`]) over the
//! [`cache`]: the filters of upstream's default profile — NodeUnschedulable (cordon),
//! TaintToleration (NoSchedule/NoExecute), NodeAffinity (nodeSelector and required affinity),
//! NodePorts, NodeResourcesFit (cpu, memory, ephemeral-storage, pod count, extended
//! resources; init containers, sidecars and overhead as upstream), PodTopologySpread
//! (DoNotSchedule), InterPodAffinity (required affinity, anti-affinity, and existing pods'
//! anti-affinity) — then its scores (least allocated, balanced allocation, preferred node
//! affinity, PreferNoSchedule taints, preferred inter-pod affinity, topology spread with
//! upstream's system defaults per controller). Node readiness is not checked directly: as
//! upstream, the node-lifecycle controller's `not-ready`/`unreachable` taints keep pods away.
//!
//! A pod that fits nowhere gets `PodScheduled=False` (reason `Unschedulable`) and a
//! `FailedScheduling` event with upstream's message (`0/3 nodes are available: 3 Insufficient
//! cpu. preemption: …`), and waits until the cluster changes (a node added or changed, a pod
//! deleted, finished or relabelled, the pod itself updated) or five minutes pass.
//!
//! **Preemption is not implemented**: a pod never evicts lower-priority pods to make room;
//! priority only orders the queue. The `preemption:` part of the message says what upstream's
//! default preemption would find when no victims exist, and says preemption is not
//! implemented where upstream would look for lower-priority victims.

pub mod cache;
pub mod events;
pub mod filters;
pub mod framework;
pub mod interpod;
pub mod matching;
pub mod queue;
pub mod resources;
mod run;
pub mod scores;
pub mod spread;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use run::{SCHEDULER_NAME, needs_scheduling, run};

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
}
