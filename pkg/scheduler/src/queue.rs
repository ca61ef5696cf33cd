//! The scheduling queue: pods waiting for a node, highest `spec.priority` first, then oldest.
//! Pods that fit nowhere park in an unschedulable set until the cluster changes (or a slow
//! periodic flush); a change seen while a pod was being tried sends it straight back. As
//! upstream, a pod that failed recently waits out a per-pod back-off (1 s doubling to 10 s)
//! before a cluster change makes it active again, so a busy cluster does not spin on it.

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

/// First back-off after a failed attempt (upstream's podInitialBackoffDuration).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off (upstream's podMaxBackoffDuration).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Back-off after `attempts` failed attempts.
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(8);
    (INITIAL_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// The queue.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    active: BTreeSet<QueuedPod>,
    active_by_uid: HashMap<String, QueuedPod>,
    unschedulable: HashMap<String, (QueuedPod, Instant)>,
    /// Pods due back once their back-off ends, by (ready time, uid).
    backoff: BTreeSet<(Instant, String)>,
    backoff_by_uid: HashMap<String, (Instant, QueuedPod)>,
    /// Failed attempts per pod, and when the last one ended.
    attempts: HashMap<String, (u32, Instant)>,
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
        if let Some((at, _)) = self.backoff_by_uid.get(&uid) {
            let at = *at;
            self.backoff_by_uid.insert(uid, (at, entry));
            return;
        }
        if let Some((_, since)) = self.unschedulable.get(&uid) {
            let since = *since;
            if activate {
                self.unschedulable.remove(&uid);
                self.activate_or_back_off(entry, Instant::now());
            } else {
                self.unschedulable.insert(uid, (entry, since));
            }
            return;
        }
        if let Some(old) = self.active_by_uid.remove(&uid) {
            self.active.remove(&old);
        }
        self.active.insert(entry.clone());
        self.active_by_uid.insert(uid, entry);
    }

    /// Make a parked pod active, or put it in back-off until its back-off ends.
    fn activate_or_back_off(&mut self, entry: QueuedPod, now: Instant) {
        let ready = self
            .attempts
            .get(&entry.uid)
            .map(|(n, last)| *last + backoff(*n));
        match ready {
            Some(at) if at > now => {
                self.backoff.insert((at, entry.uid.clone()));
                self.backoff_by_uid.insert(entry.uid.clone(), (at, entry));
            }
            _ => {
                self.active_by_uid.insert(entry.uid.clone(), entry.clone());
                self.active.insert(entry);
            }
        }
    }

    /// When the next back-off ends, if any pod is backing off.
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.first().map(|(at, _)| *at)
    }

    /// Move pods whose back-off has ended to the active queue.
    pub fn flush_backoff(&mut self, now: Instant) {
        while let Some((at, uid)) = self.backoff.first().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop_first();
            if let Some((_, entry)) = self.backoff_by_uid.remove(&uid) {
                self.active_by_uid.insert(uid, entry.clone());
                self.active.insert(entry);
            }
        }
    }

    /// Remove a pod wherever it is.
    pub fn remove(&mut self, uid: &str) {
        if let Some(old) = self.active_by_uid.remove(uid) {
            self.active.remove(&old);
        }
        self.unschedulable.remove(uid);
        if let Some((at, _)) = self.backoff_by_uid.remove(uid) {
            self.backoff.remove(&(at, uid.to_string()));
        }
        self.in_flight.remove(uid);
        self.attempts.remove(uid);
    }

    /// Whether a pod is anywhere in the queue (or being tried).
    pub fn contains(&self, uid: &str) -> bool {
        self.active_by_uid.contains_key(uid)
            || self.unschedulable.contains_key(uid)
            || self.backoff_by_uid.contains_key(uid)
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
        self.attempts.remove(uid);
    }

    /// The attempt found no node: park the pod — unless the cluster changed meanwhile, then
    /// it is tried again right away.
    pub fn unschedulable(&mut self, entry: QueuedPod) {
        let Some(at) = self.in_flight.remove(&entry.uid) else {
            return;
        };
        let now = Instant::now();
        let n = self.attempts.get(&entry.uid).map_or(0, |(n, _)| *n);
        self.attempts.insert(entry.uid.clone(), (n + 1, now));
        if self.moves > at {
            self.activate_or_back_off(entry, now);
        } else {
            self.unschedulable
                .insert(entry.uid.clone(), (entry, Instant::now()));
        }
    }

    /// The cluster changed in a way that may make parked pods fit: try them all again.
    pub fn move_all_to_active(&mut self) {
        self.moves += 1;
        let now = Instant::now();
        let parked: Vec<QueuedPod> = self.unschedulable.drain().map(|(_, (e, _))| e).collect();
        for entry in parked {
            self.activate_or_back_off(entry, now);
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
    fn parked_pods_wait_for_a_change_then_their_back_off() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(e("a", 0, 1), false);
        let a = q.pop().expect("a");
        q.unschedulable(a.clone());
        assert!(!q.has_active());
        assert_eq!(q.unschedulable_len(), 1);
        // A status-only update keeps it parked.
        q.add_or_update(a.clone(), false);
        assert!(!q.has_active());
        // A change right after the failure: the pod backs off first (1 s), then is active.
        q.move_all_to_active();
        assert!(!q.has_active());
        let at = q.next_backoff().expect("backing off");
        q.flush_backoff(at - Duration::from_millis(1));
        assert!(!q.has_active());
        q.flush_backoff(at);
        assert_eq!(q.pop().map(|p| p.uid).as_deref(), Some("a"));
        assert!(q.next_backoff().is_none());
    }

    #[test]
    fn back_off_doubles_up_to_ten_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn a_change_during_the_attempt_requeues_after_the_back_off() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(e("a", 0, 1), false);
        let a = q.pop().expect("a");
        q.move_all_to_active(); // e.g. a node was added while `a` was being tried
        q.unschedulable(a);
        assert_eq!(
            q.unschedulable_len(),
            0,
            "not parked: the change may have helped"
        );
        assert!(q.next_backoff().is_some());
        q.flush_backoff(Instant::now() + MAX_BACKOFF);
        assert!(q.has_active());
    }

    #[test]
    fn removing_a_backing_off_pod_forgets_it() {
        let mut q = SchedulingQueue::new();
        q.add_or_update(e("a", 0, 1), false);
        let a = q.pop().expect("a");
        q.unschedulable(a);
        q.move_all_to_active();
        assert!(q.contains("a"));
        q.remove("a");
        assert!(!q.contains("a"));
        assert!(q.next_backoff().is_none());
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
