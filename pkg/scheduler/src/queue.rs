//! The scheduling queue: pods waiting for a node, highest `spec.priority` first, then oldest.
//! Pods that fit nowhere park in an unschedulable set until the cluster changes (or a slow
//! periodic flush); a change seen while a pod was being tried sends it straight back.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// A queued pod's identity and ordering key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueuedPod {
    /// Higher priority first.
    pub priority: Reverse<i32>,
    /// Then older first (creation time in nanoseconds).
    pub created: i128,
    /// Then by uid (stable).
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl QueuedPod {
    /// The queue entry of a pod (missing priority counts as 0).
    pub fn of(pod: &Pod) -> Self {
        Self {
            priority: Reverse(pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)),
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_nanosecond())
                .unwrap_or(0),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// The queue.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    active: BTreeSet<QueuedPod>,
    active_by_uid: HashMap<String, QueuedPod>,
    unschedulable: HashMap<String, (QueuedPod, Instant)>,
    /// Pods popped and being tried, with the move counter at pop time.
    in_flight: HashMap<String, u64>,
    moves: u64,
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a pod, or update its entry. A parked pod whose spec changed (`activate`) goes back
    /// to the active queue; otherwise it stays parked.
    pub fn add_or_update(&mut self, entry: QueuedPod, activate: bool) {
        let uid = entry.uid.clone();
        if self.in_flight.contains_key(&uid) {
            if activate {
                self.moves += 1;
            }
            return;
        }
        if let Some((_, since)) = self.unschedulable.get(&uid) {
            if activate {
                self.unschedulable.remove(&uid);
            } else {
                let since = *since;
                self.unschedulable.insert(uid, (entry, since));
                return;
            }
        }
        if let Some(old) = self.active_by_uid.remove(&uid) {
            self.active.remove(&old);
        }
        self.active.insert(entry.clone());
        self.active_by_uid.insert(uid, entry);
    }

    /// Remove a pod wherever it is.
    pub fn remove(&mut self, uid: &str) {
        if let Some(old) = self.active_by_uid.remove(uid) {
            self.active.remove(&old);
        }
        self.unschedulable.remove(uid);
        self.in_flight.remove(uid);
    }

    /// Whether a pod is anywhere in the queue (or being tried).
    pub fn contains(&self, uid: &str) -> bool {
        self.active_by_uid.contains_key(uid)
            || self.unschedulable.contains_key(uid)
            || self.in_flight.contains_key(uid)
    }

    /// Take the next pod to try.
    pub fn pop(&mut self) -> Option<QueuedPod> {
        let next = self.active.pop_first()?;
        self.active_by_uid.remove(&next.uid);
        self.in_flight.insert(next.uid.clone(), self.moves);
        Some(next)
    }

    /// Whether a pod waits in the active queue.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// The attempt for `entry` is over (bound, or gone).
    pub fn done(&mut self, uid: &str) {
        self.in_flight.remove(uid);
    }

    /// The attempt found no node: park the pod — unless the cluster changed meanwhile, then
    /// it is tried again right away.
    pub fn unschedulable(&mut self, entry: QueuedPod) {
        let Some(at) = self.in_flight.remove(&entry.uid) else {
            return;
        };
        if self.moves > at {
            self.active_by_uid.insert(entry.uid.clone(), entry.clone());
            self.active.insert(entry);
        } else {
            self.unschedulable
                .insert(entry.uid.clone(), (entry, Instant::now()));
        }
    }

    /// The cluster changed in a way that may make parked pods fit: try them all again.
    pub fn move_all_to_active(&mut self) {
        self.moves += 1;
        for (uid, (entry, _)) in self.unschedulable.drain() {
            self.active.insert(entry.clone());
            self.active_by_uid.insert(uid, entry);
        }
    }

    /// Retry pods parked for longer than `age` (upstream's periodic flush, 5 minutes).
    pub fn flush_older_than(&mut self, age: Duration) {
        let now = Instant::now();
        let old: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|(_, (_, since))| now.duration_since(*since) >= age)
            .map(|(u, _)| u.clone())
            .collect();
        for uid in old {
            if let Some((entry, _)) = self.unschedulable.remove(&uid) {
                self.active.insert(entry.clone());
                self.active_by_uid.insert(uid, entry);
            }
        }
    }

    /// Number of parked pods.
    pub fn unschedulable_len(&self) -> usize {
        self.unschedulable.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(uid: &str, prio: i32, created: i128) -> QueuedPod {
        QueuedPod {
            priority: Reverse(prio),
            created,
            uid: uid.into(),
            namespace: "default".into(),
            name: uid.into(),
        }
    }

    #[test]
    fn priority_then_age() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(e("old-low", 0, 1), false);
        q.add_or_update(e("new-high", 1000, 9), false);
        q.add_or_update(e("old-high", 1000, 2), false);
        q.add_or_update(e("negative", -5, 0), false);
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).map(|p| p.uid).collect();
        assert_eq!(order, ["old-high", "new-high", "old-low", "negative"]);
    }

    #[test]
    fn updating_an_entry_replaces_it() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(e("a", 0, 1), false);
        q.add_or_update(e("b", 0, 2), false);
        q.add_or_update(e("b", 10, 2), false);
        assert_eq!(q.pop().map(|p| p.uid).as_deref(), Some("b"));
        assert_eq!(q.pop().map(|p| p.uid).as_deref(), Some("a"));
        assert!(q.pop().is_none());
    }

    #[test]
    fn parked_pods_wait_for_a_change() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(e("a", 0, 1), false);
        let a = q.pop().expect("a");
        q.unschedulable(a.clone());
        assert!(!q.has_active());
        assert_eq!(q.unschedulable_len(), 1);
        // A status-only update keeps it parked.
        q.add_or_update(a.clone(), false);
        assert!(!q.has_active());
        q.move_all_to_active();
        assert_eq!(q.pop().map(|p| p.uid).as_deref(), Some("a"));
    }

    #[test]
    fn a_change_during_the_attempt_requeues_at_once() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(e("a", 0, 1), false);
        let a = q.pop().expect("a");
        q.move_all_to_active(); // e.g. a node was added while `a` was being tried
        q.unschedulable(a);
        assert!(q.has_active());
    }

    #[test]
    fn flush_retries_old_parked_pods_and_remove_forgets() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(e("a", 0, 1), false);
        let a = q.pop().expect("a");
        q.unschedulable(a);
        q.flush_older_than(Duration::from_secs(300));
        assert!(!q.has_active(), "not old enough");
        q.flush_older_than(Duration::ZERO);
        assert!(q.has_active());
        q.remove("a");
        assert!(!q.contains("a"));
        assert!(q.pop().is_none());
    }
}
