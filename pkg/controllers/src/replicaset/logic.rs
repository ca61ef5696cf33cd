//! Pure logic of the replica controllers: which pods a controller owns, adopts or releases,
//! which pods go first on scale-down, slow-start batches and the status they report.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::util;

/// Upstream's burst limit: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 500;

/// Upstream's first slow-start batch size.
pub const SLOW_START_INITIAL_BATCH: usize = 1;

/// The batch sizes in which `count` pods are created: 1, 2, 4, … (the last one what is left).
pub fn slow_start_batches(count: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut remaining = count;
    let mut batch = SLOW_START_INITIAL_BATCH;
    while remaining > 0 {
        let size = batch.min(remaining);
        out.push(size);
        remaining -= size;
        batch *= 2;
    }
    out
}

/// What a controller does with the pods of its namespace.
#[derive(Debug, Default, PartialEq)]
pub struct Claim<'a> {
    /// Pods it controls and whose labels match its selector.
    pub owned: Vec<&'a Pod>,
    /// Orphans matching its selector that it adopts.
    pub adopt: Vec<&'a Pod>,
    /// Pods it controls that no longer match its selector.
    pub release: Vec<&'a Pod>,
}

/// Sort the active pods of a namespace into owned, to adopt and to release, like upstream's
/// `ClaimPods`. An empty or missing selector matches nothing. A controller being deleted
/// neither adopts nor releases.
pub fn claim_pods<'a>(
    uid: &str,
    selector: Option<&LabelSelector>,
    deleting: bool,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Claim<'a> {
    let mut claim = Claim::default();
    for pod in pods {
        if !util::is_pod_active(pod) {
            continue;
        }
        let matches = selector.is_some_and(|s| !selector_is_empty(s))
            && selector.is_some_and(|s| util::selector_matches(s, &util::labels(&pod.metadata)));
        match util::controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    claim.owned.push(pod);
                } else if !deleting {
                    claim.release.push(pod);
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting {
                    claim.adopt.push(pod);
                }
            }
        }
    }
    claim
}

/// Whether a selector has no requirement at all.
pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Log2 bucket of the time since `t` (upstream's LogarithmicScaleDown compares these, so pods
/// of similar age count as equal and the other criteria decide).
fn log_bucket(t: Option<Timestamp>, now: Timestamp) -> i64 {
    match t {
        None => -1,
        Some(t) => {
            let secs = (now.as_second() - t.as_second()).max(0);
            if secs == 0 {
                0
            } else {
                i64::from(64 - secs.leading_zeros())
            }
        }
    }
}

/// Compare two pods for scale-down: `Less` means `a` is deleted before `b`. Like upstream's
/// `ActivePodsWithRanks`: unassigned before assigned; Pending before Unknown before Running;
/// not ready before ready; more pods of the same controller on its node first; ready for a
/// shorter time first; more restarts first; newer first.
pub fn deletion_order(
    a: &Pod,
    b: &Pod,
    colocated: &HashMap<String, usize>,
    now: Timestamp,
) -> Ordering {
    let assigned = |p: &Pod| node_of(p).is_some();
    let ranked = |p: &Pod| {
        node_of(p)
            .and_then(|n| colocated.get(n).copied())
            .unwrap_or(0)
    };
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(util::is_pod_ready(a).cmp(&util::is_pod_ready(b)))
        .then(ranked(b).cmp(&ranked(a)))
        .then_with(|| {
            if util::is_pod_ready(a) && util::is_pod_ready(b) {
                log_bucket(util::pod_ready_since(a), now)
                    .cmp(&log_bucket(util::pod_ready_since(b), now))
            } else {
                Ordering::Equal
            }
        })
        .then(restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            // Newer (later timestamp) first.
            created(b).cmp(&created(a))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The `count` pods to delete first, ranked with [`deletion_order`].
pub fn pods_to_delete<'a>(pods: &[&'a Pod], count: usize, now: Timestamp) -> Vec<&'a Pod> {
    let mut colocated: HashMap<String, usize> = HashMap::new();
    for p in pods {
        if let Some(n) = node_of(p) {
            *colocated.entry(n.to_string()).or_default() += 1;
        }
    }
    let mut sorted: Vec<&Pod> = pods.to_vec();
    sorted.sort_by(|a, b| deletion_order(a, b, &colocated, now));
    sorted.truncate(count);
    sorted
}

/// A condition of a ReplicaSet or ReplicationController (same shape in both).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCondition {
    /// Condition type (`ReplicaFailure`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`/`False`/`Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Status of a ReplicaSet or ReplicationController (same JSON shape in both).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Active pods it controls.
    #[serde(default)]
    pub replicas: i32,
    /// Of those, pods whose labels include the template's labels.
    #[serde(default)]
    pub fully_labeled_replicas: i32,
    /// Of those, Ready pods.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Of those, pods Ready for at least minReadySeconds.
    #[serde(default)]
    pub available_replicas: i32,
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (`ReplicaFailure`).
    #[serde(default)]
    pub conditions: Vec<ReplicaCondition>,
}

/// The status of a controller owning `pods` (its claimed, active pods), given the template's
/// labels, minReadySeconds, its generation, the previous status and the outcome of the last
/// attempt to create/delete pods (`Some((reason, message))` when it failed).
pub fn compute_status(
    pods: &[&Pod],
    template_labels: &BTreeMap<String, String>,
    min_ready_seconds: i32,
    generation: Option<i64>,
    previous: &ReplicaStatus,
    failure: Option<(&str, String)>,
    now: Timestamp,
) -> ReplicaStatus {
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p: &Pod| {
        let l = util::labels(&p.metadata);
        template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
    });
    let mut conditions: Vec<ReplicaCondition> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .cloned()
        .collect();
    if let Some((reason, message)) = failure {
        let prev = previous
            .conditions
            .iter()
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True");
        conditions.push(ReplicaCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(reason.to_string()),
            message: Some(message),
            last_transition_time: prev
                .and_then(|c| c.last_transition_time.clone())
                .or_else(|| Some(now.to_string())),
        });
    }
    ReplicaStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: fully_labeled,
        ready_replicas: count(&util::is_pod_ready),
        available_replicas: count(&|p| util::is_pod_available(p, min_ready_seconds, now)),
        observed_generation: generation,
        conditions,
    }
}

/// When a pod that is Ready but not yet available becomes available, the earliest of them:
/// the controller checks again then.
pub fn next_available_in(
    pods: &[&Pod],
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<std::time::Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    pods.iter()
        .filter_map(|p| util::pod_ready_since(p))
        .map(|since| i64::from(min_ready_seconds) - (now.as_second() - since.as_second()))
        .filter(|left| *left >= 0)
        .min()
        .map(|left| std::time::Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    fn pod(name: &str, owner: Option<&str>, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                owner_references: owner.map(|u| {
                    vec![OwnerReference {
                        uid: u.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn with_status(mut p: Pod, node: Option<&str>, phase: &str, ready_since: Option<i64>) -> Pod {
        p.spec = Some(PodSpec {
            node_name: node.map(String::from),
            ..PodSpec::default()
        });
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: ready_since.map(|s| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::from_second(s).expect("timestamp"))),
                    ..PodCondition::default()
                }]
            }),
            ..PodStatus::default()
        });
        p
    }

    fn sel(labels: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        }
    }

    #[test]
    fn batches_double() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), vec![1]);
        assert_eq!(slow_start_batches(10), vec![1, 2, 4, 3]);
        assert_eq!(slow_start_batches(15), vec![1, 2, 4, 8]);
    }

    #[test]
    fn claims_adopt_release_and_skip_others() {
        let mine = pod("a", Some("me"), &[("app", "web")]);
        let stale = pod("b", Some("me"), &[("app", "db")]);
        let orphan = pod("c", None, &[("app", "web")]);
        let foreign = pod("d", Some("other"), &[("app", "web")]);
        let mut dead = pod("e", None, &[("app", "web")]);
        dead.status = Some(PodStatus {
            phase: Some("Failed".into()),
            ..PodStatus::default()
        });
        let pods = [mine, stale, orphan, foreign, dead];
        let s = sel(&[("app", "web")]);
        let c = claim_pods("me", Some(&s), false, pods.iter());
        let names = |v: &[&Pod]| {
            v.iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&c.owned), ["a"]);
        assert_eq!(names(&c.adopt), ["c"]);
        assert_eq!(names(&c.release), ["b"]);
        // Being deleted: neither adopt nor release.
        let c = claim_pods("me", Some(&s), true, pods.iter());
        assert!(c.adopt.is_empty() && c.release.is_empty());
        // An empty selector matches nothing.
        let c = claim_pods("me", Some(&LabelSelector::default()), false, pods.iter());
        assert!(c.owned.is_empty() && c.adopt.is_empty());
    }

    #[test]
    fn ranking_unscheduled_pending_notready_newer_first() {
        let now = Timestamp::from_second(10_000).expect("now");
        let running_ready = with_status(pod("ready", None, &[]), Some("n1"), "Running", Some(100));
        let running_unready = with_status(pod("unready", None, &[]), Some("n2"), "Running", None);
        let pending = with_status(pod("pending", None, &[]), Some("n3"), "Pending", None);
        let unscheduled = with_status(pod("unscheduled", None, &[]), None, "Pending", None);
        let pods = [&running_ready, &running_unready, &pending, &unscheduled];
        let order: Vec<_> = pods_to_delete(&pods, 4, now)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(order, ["unscheduled", "pending", "unready", "ready"]);
        assert_eq!(pods_to_delete(&pods, 1, now).len(), 1);

        // Among equally ready pods: the one ready for a much shorter time goes first, then
        // the one on a crowded node, then more restarts, then newer.
        let old = with_status(pod("old", None, &[]), Some("n1"), "Running", Some(100));
        let young = with_status(pod("young", None, &[]), Some("n1"), "Running", Some(9_990));
        assert_eq!(
            pods_to_delete(&[&old, &young], 1, now)[0]
                .metadata
                .name
                .as_deref(),
            Some("young")
        );
        let lonely = with_status(pod("lonely", None, &[]), Some("n9"), "Running", Some(100));
        let crowded = [
            with_status(pod("c1", None, &[]), Some("n1"), "Running", Some(100)),
            with_status(pod("c2", None, &[]), Some("n1"), "Running", Some(100)),
        ];
        assert_eq!(
            pods_to_delete(&[&lonely, &crowded[0], &crowded[1]], 1, now)[0]
                .metadata
                .name
                .as_deref(),
            Some("c1")
        );
        let mut restarted = with_status(
            pod("restarted", None, &[]),
            Some("n5"),
            "Running",
            Some(100),
        );
        if let Some(s) = restarted.status.as_mut() {
            s.container_statuses = Some(vec![ContainerStatus {
                restart_count: 3,
                ..ContainerStatus::default()
            }]);
        }
        let calm = with_status(pod("calm", None, &[]), Some("n6"), "Running", Some(100));
        assert_eq!(
            pods_to_delete(&[&calm, &restarted], 1, now)[0]
                .metadata
                .name
                .as_deref(),
            Some("restarted")
        );
        let mut older = with_status(pod("older", None, &[]), Some("n7"), "Running", Some(100));
        older.metadata.creation_timestamp = Some(Time(Timestamp::from_second(50).expect("ts")));
        let mut newer = with_status(pod("newer", None, &[]), Some("n8"), "Running", Some(100));
        newer.metadata.creation_timestamp = Some(Time(Timestamp::from_second(60).expect("ts")));
        assert_eq!(
            pods_to_delete(&[&older, &newer], 1, now)[0]
                .metadata
                .name
                .as_deref(),
            Some("newer")
        );
    }

    #[test]
    fn status_counts_and_failure_condition() {
        let now = Timestamp::from_second(1_000).expect("now");
        let a = with_status(
            pod("a", None, &[("app", "web"), ("x", "1")]),
            Some("n"),
            "Running",
            Some(995),
        );
        let b = with_status(
            pod("b", None, &[("app", "web")]),
            Some("n"),
            "Running",
            Some(100),
        );
        let c = with_status(
            pod("c", None, &[("app", "web"), ("x", "1")]),
            Some("n"),
            "Pending",
            None,
        );
        let tl = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("x".to_string(), "1".to_string()),
        ]);
        let pods = [&a, &b, &c];
        let s = compute_status(
            &pods,
            &tl,
            10,
            Some(4),
            &ReplicaStatus::default(),
            None,
            now,
        );
        assert_eq!(
            (
                s.replicas,
                s.fully_labeled_replicas,
                s.ready_replicas,
                s.available_replicas
            ),
            (3, 2, 2, 1)
        );
        assert_eq!(s.observed_generation, Some(4));
        assert!(s.conditions.is_empty());
        assert_eq!(
            next_available_in(&pods, 10, now),
            Some(std::time::Duration::from_secs(6))
        );

        let failed = compute_status(
            &pods,
            &tl,
            0,
            Some(4),
            &s,
            Some(("FailedCreate", "quota".into())),
            now,
        );
        assert_eq!(failed.conditions.len(), 1);
        assert_eq!(failed.conditions[0].reason.as_deref(), Some("FailedCreate"));
        assert_eq!(failed.available_replicas, 2);
        // Success clears it.
        let ok = compute_status(&pods, &tl, 0, Some(4), &failed, None, now);
        assert!(ok.conditions.is_empty());
    }
}
