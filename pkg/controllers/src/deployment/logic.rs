//! Pure logic of the Deployment controller: template hash, surge/unavailable resolution, the
//! rolling-update steps, proportional scaling, history cleanup, status and conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::util;

/// Label carrying the template hash on ReplicaSets and their pods.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Revision annotation on Deployments and ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet was at (set when a rollback re-uses it).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The deployment's replicas when the ReplicaSet was last scaled by it.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations not copied onto its ReplicaSets (upstream's skip list).
pub const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-32a of `data`.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream's `rand.SafeEncodeString`: each character mapped into an alphabet without vowels
/// (so no words appear) and without look-alike characters.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The template with the `pod-template-hash` label removed (how templates are compared).
pub fn template_without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(meta) = t.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
    t
}

/// Drop what Go's `omitempty` would drop (null, empty maps and lists) and a zero
/// `metadata.generation`, so that a template that took a round trip through another client
/// (e.g. `kubectl rollout undo` copying it back) still compares equal.
fn prune(v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Object(m) => {
            m.retain(|_, x| prune(x));
            !m.is_empty()
        }
        serde_json::Value::Array(a) => {
            for x in a.iter_mut() {
                prune(x);
            }
            !a.is_empty()
        }
        _ => true,
    }
}

/// The template in the canonical JSON form it is compared and hashed in.
pub fn canonical_template(t: &PodTemplateSpec) -> serde_json::Value {
    let mut v = serde_json::to_value(template_without_hash(t)).unwrap_or_default();
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut())
        && meta.get("generation") == Some(&serde_json::json!(0))
    {
        meta.remove("generation");
    }
    prune(&mut v);
    v
}

/// The pod-template hash: FNV-32a over the template's canonical JSON (the hash label left
/// out) followed by the collision count (4 bytes, little endian) when there is one, printed
/// in decimal and safe-encoded, like upstream's `ComputeHash`.
pub fn pod_template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(&canonical_template(t)).unwrap_or_default();
    if let Some(c) = collision_count {
        data.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&data).to_string())
}

/// Whether two templates are equal ignoring the hash label (upstream's `EqualIgnoreHash`).
pub fn templates_equal(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical_template(a) == canonical_template(b)
}

/// Desired replicas of a deployment (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Whether the deployment uses the Recreate strategy.
pub fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// maxSurge and maxUnavailable of a RollingUpdate deployment resolved against its replicas:
/// surge rounds up, unavailable down; both zero becomes unavailable 1 (upstream's
/// `ResolveFenceposts`). Recreate has (0, replicas). Defaults are 25%/25%.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let want = replicas(d);
    if is_recreate(d) {
        return (0, want);
    }
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = ru
        .and_then(|r| r.max_surge.clone())
        .unwrap_or_else(|| quarter.clone());
    let unavailable = ru
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(quarter);
    let s = util::scaled_int_or_percent(&surge, want, true)
        .unwrap_or(0)
        .max(0);
    let mut u = util::scaled_int_or_percent(&unavailable, want, false)
        .unwrap_or(0)
        .max(0);
    if s == 0 && u == 0 {
        u = 1;
    }
    (s, u.min(want.max(1)))
}

/// What the rollout math needs of one ReplicaSet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RsView {
    /// Name.
    pub name: String,
    /// spec.replicas.
    pub spec_replicas: i32,
    /// Available pods it has (never more than spec.replicas: a scale-down already sent
    /// removes pods).
    pub available: i32,
    /// Revision annotation.
    pub revision: i64,
}

/// Replicas the new ReplicaSet should have now (upstream's `NewRSNewReplicas`).
pub fn new_rs_replicas(d: &Deployment, new_rs: &RsView, old: &[RsView]) -> i32 {
    let want = replicas(d);
    if is_recreate(d) {
        return want;
    }
    let (surge, _) = fenceposts(d);
    let current: i32 = old.iter().map(|r| r.spec_replicas).sum::<i32>() + new_rs.spec_replicas;
    let max_total = want + surge;
    if current >= max_total {
        return new_rs.spec_replicas;
    }
    let up = (max_total - current)
        .min(want - new_rs.spec_replicas)
        .max(0);
    new_rs.spec_replicas + up
}

/// New spec.replicas for the old ReplicaSets (same order) in one rolling-update step
/// (upstream's `reconcileOldReplicaSets`: first unhealthy replicas, then available ones down
/// to `replicas - maxUnavailable`, oldest first).
pub fn scale_down_old(d: &Deployment, new_rs: &RsView, old: &[RsView]) -> Vec<i32> {
    let mut out: Vec<i32> = old.iter().map(|r| r.spec_replicas).collect();
    let old_count: i32 = out.iter().sum();
    if old_count == 0 {
        return out;
    }
    let (_, unavailable) = fenceposts(d);
    let min_available = replicas(d) - unavailable;
    let all = old_count + new_rs.spec_replicas;
    let new_unavailable = (new_rs.spec_replicas - new_rs.available).max(0);
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return out;
    }
    // Unhealthy replicas first.
    for (i, r) in old.iter().enumerate() {
        if budget <= 0 {
            break;
        }
        let unhealthy = (out[i] - r.available.min(out[i])).max(0);
        let cut = unhealthy.min(budget);
        out[i] -= cut;
        budget -= cut;
    }
    // Then available ones, keeping minAvailable.
    let available: i32 = old
        .iter()
        .zip(&out)
        .map(|(r, n)| r.available.min(*n))
        .sum::<i32>()
        + new_rs.available.min(new_rs.spec_replicas);
    let mut total_cut = (available - min_available).min(budget);
    for (i, r) in old.iter().enumerate() {
        if total_cut <= 0 {
            break;
        }
        let _ = r;
        let cut = out[i].min(total_cut);
        out[i] -= cut;
        total_cut -= cut;
    }
    out
}

/// Spread a change of the deployment's size over its active ReplicaSets in proportion to
/// their sizes (upstream's proportional scaling); the remainder goes to the newest. `sizes`
/// are the current spec.replicas, newest first; the result has the same order.
pub fn proportional(sizes: &[i32], allowed_total: i32) -> Vec<i32> {
    let current: i32 = sizes.iter().sum();
    let delta = allowed_total - current;
    if delta == 0 || current == 0 {
        return sizes.to_vec();
    }
    let mut out = sizes.to_vec();
    let mut added = 0;
    for (i, s) in sizes.iter().enumerate() {
        let share = i64::from(*s) * i64::from(delta) / i64::from(current);
        let share = i32::try_from(share).unwrap_or(0);
        out[i] = (s + share).max(0);
        added += out[i] - s;
    }
    // Leftover (from rounding) to the newest, never below zero.
    if let Some(first) = out.first_mut() {
        *first = (*first + delta - added).max(0);
    }
    out
}

/// Old ReplicaSets to delete to respect revisionHistoryLimit: those scaled to zero with no
/// pods left, oldest revision first, beyond the limit. Input: (name, revision, spec replicas,
/// status replicas).
pub fn history_to_delete(old: &[(String, i64, i32, i32)], limit: i32) -> Vec<String> {
    let mut idle: Vec<&(String, i64, i32, i32)> =
        old.iter().filter(|r| r.2 == 0 && r.3 == 0).collect();
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if idle.len() <= limit {
        return Vec::new();
    }
    idle.sort_by_key(|r| r.1);
    let n = idle.len() - limit;
    idle.into_iter().take(n).map(|r| r.0.clone()).collect()
}

/// The revision after the highest of `old` (1 when there is none).
pub fn next_revision(old: &[i64]) -> i64 {
    old.iter().copied().max().unwrap_or(0) + 1
}

/// Counts the status is made of, summed over the ReplicaSets (from their statuses).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Sum of status.replicas.
    pub replicas: i32,
    /// The new ReplicaSet's status.replicas.
    pub updated: i32,
    /// Sum of status.readyReplicas.
    pub ready: i32,
    /// Sum of status.availableReplicas.
    pub available: i32,
}

fn find_cond<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == t)
}

/// Set a condition, keeping lastTransitionTime when the status does not change.
pub fn set_condition(
    status: &mut DeploymentStatus,
    type_: &str,
    cond_status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let prev = conds.iter().find(|c| c.type_ == type_).cloned();
    if let Some(p) = &prev
        && p.status == cond_status
        && p.reason.as_deref() == Some(reason)
        && p.message.as_deref() == Some(message.as_str())
    {
        return;
    }
    let transition = match &prev {
        Some(p) if p.status == cond_status => p.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    conds.retain(|c| c.type_ != type_);
    conds.push(DeploymentCondition {
        type_: type_.to_string(),
        status: cond_status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: transition.or(Some(Time(now))),
    });
    // Upstream order: Available before Progressing.
    conds.sort_by_key(|c| match c.type_.as_str() {
        "Available" => 0,
        "Progressing" => 1,
        _ => 2,
    });
}

/// Whether the rollout is complete: every replica updated and available, no old ones left.
pub fn is_complete(d: &Deployment, c: &Counts) -> bool {
    let want = replicas(d);
    c.updated == want && c.replicas == want && c.available == want
}

/// The new status of `d` given counts, the previous status, the new ReplicaSet's name (if
/// any) and the time; also says when to look again for the progress deadline.
pub fn compute_status(
    d: &Deployment,
    c: &Counts,
    new_rs: Option<&str>,
    collision_count: Option<i32>,
    now: Timestamp,
) -> (DeploymentStatus, Option<std::time::Duration>) {
    let prev = d.status.clone().unwrap_or_default();
    let want = replicas(d);
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(c.replicas),
        updated_replicas: Some(c.updated),
        ready_replicas: Some(c.ready),
        available_replicas: Some(c.available),
        unavailable_replicas: Some((want - c.available).max(0)),
        collision_count: collision_count.or(prev.collision_count),
        conditions: prev.conditions.clone(),
        terminating_replicas: None,
    };
    let (_, max_unavailable) = fenceposts(d);
    if c.available >= want - max_unavailable {
        set_condition(
            &mut s,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        );
    } else {
        set_condition(
            &mut s,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        );
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds);
    let mut requeue = None;
    if paused {
        return (s, None);
    }
    let Some(deadline) = deadline.filter(|d| *d < i32::MAX) else {
        return (s, None);
    };
    let rs_name = new_rs.unwrap_or_default();
    let progressing = find_cond(&s, "Progressing").cloned();
    let complete = is_complete(d, c);
    let moved = c.updated > prev.updated_replicas.unwrap_or(0)
        || c.ready > prev.ready_replicas.unwrap_or(0)
        || c.available > prev.available_replicas.unwrap_or(0)
        || c.replicas - c.updated < prev.replicas.unwrap_or(0) - prev.updated_replicas.unwrap_or(0);
    if complete && new_rs.is_some() {
        set_condition(
            &mut s,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            now,
        );
    } else if moved && new_rs.is_some() {
        // Progress refreshes lastUpdateTime.
        let conds = s.conditions.get_or_insert_with(Vec::new);
        let transition = progressing
            .as_ref()
            .filter(|p| p.status == "True")
            .and_then(|p| p.last_transition_time.clone())
            .unwrap_or(Time(now));
        conds.retain(|c| c.type_ != "Progressing");
        conds.push(DeploymentCondition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: Some("ReplicaSetUpdated".into()),
            message: Some(format!("ReplicaSet \"{rs_name}\" is progressing.")),
            last_update_time: Some(Time(now)),
            last_transition_time: Some(transition),
        });
        requeue = Some(std::time::Duration::from_secs(
            u64::try_from(deadline).unwrap_or(600) + 1,
        ));
    } else if let Some(p) = &progressing
        && p.reason.as_deref() != Some("NewReplicaSetAvailable")
        && p.reason.as_deref() != Some("ProgressDeadlineExceeded")
        && !complete
    {
        let since = p.last_update_time.as_ref().map(|t| t.0).unwrap_or(now);
        let elapsed = now.as_second() - since.as_second();
        if elapsed > i64::from(deadline) {
            set_condition(
                &mut s,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                now,
            );
        } else {
            requeue = Some(std::time::Duration::from_secs(
                u64::try_from(i64::from(deadline) - elapsed).unwrap_or(0) + 1,
            ));
        }
    }
    (s, requeue)
}

/// ReplicaSet annotations for a deployment: its own (minus the skip list) plus revision,
/// desired and max replicas.
pub fn rs_annotations(
    d: &Deployment,
    revision: i64,
    existing: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = existing.clone();
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if !SKIPPED_ANNOTATIONS.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    let old_rev = existing.get(REVISION).cloned();
    let rev = revision.to_string();
    if let Some(old) = old_rev
        && old != rev
        && old.parse::<i64>().is_ok_and(|o| o < revision)
    {
        let hist = match existing.get(REVISION_HISTORY) {
            Some(h) if !h.is_empty() => format!("{h},{old}"),
            _ => old,
        };
        out.insert(REVISION_HISTORY.into(), hist);
    }
    out.insert(REVISION.into(), rev);
    let (surge, _) = fenceposts(d);
    out.insert(DESIRED_REPLICAS.into(), replicas(d).to_string());
    out.insert(MAX_REPLICAS.into(), (replicas(d) + surge).to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deploy(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                progress_deadline_seconds: Some(600),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    fn rs(name: &str, spec: i32, available: i32) -> RsView {
        RsView {
            name: name.into(),
            spec_replicas: spec,
            available,
            revision: 1,
        }
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "nginx".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn fnv_and_safe_encoding() {
        // FNV-1a 32 reference values.
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        let h = pod_template_hash(&template("nginx"), None);
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        // Stable, sensitive to the template and the collision count, blind to the label.
        assert_eq!(h, pod_template_hash(&template("nginx"), None));
        assert_ne!(h, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(h, pod_template_hash(&template("nginx"), Some(1)));
        let mut labelled = template("nginx");
        if let Some(l) = labelled.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(HASH_LABEL.into(), h.clone());
        }
        assert_eq!(h, pod_template_hash(&labelled, None));
        assert!(templates_equal(&labelled, &template("nginx")));
        assert!(!templates_equal(&labelled, &template("nginx:2")));
        // A zero generation and empty lists (what a protobuf round trip leaves) compare equal.
        let mut roundtripped = template("nginx");
        if let Some(m) = roundtripped.metadata.as_mut() {
            m.generation = Some(0);
            m.annotations = Some(BTreeMap::new());
        }
        if let Some(s) = roundtripped.spec.as_mut() {
            s.volumes = Some(Vec::new());
        }
        assert!(templates_equal(&roundtripped, &template("nginx")));
        assert_eq!(h, pod_template_hash(&roundtripped, None));
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(&deploy(10, p("25%"), p("25%"))), (3, 2));
        assert_eq!(fenceposts(&deploy(3, p("25%"), p("25%"))), (1, 0));
        assert_eq!(
            fenceposts(&deploy(3, IntOrString::Int(0), IntOrString::Int(0))),
            (0, 1)
        );
        let mut r = deploy(4, p("25%"), p("25%"));
        if let Some(s) = r.spec.as_mut() {
            s.strategy = Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            });
        }
        assert_eq!(fenceposts(&r), (0, 4));
        assert_eq!(new_rs_replicas(&r, &rs("n", 0, 0), &[]), 4);
    }

    /// Simulate a whole rolling update step by step (pods become available as soon as they
    /// exist) and check that no step breaks maxSurge or maxUnavailable.
    #[test]
    fn rolling_update_never_violates_bounds() {
        for (want, surge, unav) in [(3, 1, 0), (3, 0, 1), (10, 3, 2), (5, 2, 2), (1, 1, 0)] {
            let d = deploy(want, IntOrString::Int(surge), IntOrString::Int(unav));
            let mut new = rs("new", 0, 0);
            let mut old = vec![rs("old", want, want)];
            for _ in 0..100 {
                new.spec_replicas = new_rs_replicas(&d, &new, &old);
                assert!(
                    new.spec_replicas + old.iter().map(|r| r.spec_replicas).sum::<i32>()
                        <= want + surge
                );
                let sizes = scale_down_old(&d, &new, &old);
                for (r, s) in old.iter_mut().zip(sizes) {
                    r.spec_replicas = s;
                    r.available = r.available.min(s);
                }
                let avail = new.available + old.iter().map(|r| r.available).sum::<i32>();
                assert!(avail >= want - unav, "available {avail} < {want}-{unav}");
                // The new pods become available.
                new.available = new.spec_replicas;
                if new.spec_replicas == want && old.iter().all(|r| r.spec_replicas == 0) {
                    break;
                }
            }
            assert_eq!(new.spec_replicas, want);
            assert!(old.iter().all(|r| r.spec_replicas == 0));
        }
    }

    #[test]
    fn unhealthy_old_replicas_go_first() {
        let d = deploy(4, IntOrString::Int(1), IntOrString::Int(1));
        let new = rs("new", 1, 0);
        let old = vec![rs("a", 2, 0), rs("b", 2, 2)];
        // all 5, minAvailable 3, new unavailable 1 → budget 1, taken from "a" (unhealthy).
        assert_eq!(scale_down_old(&d, &new, &old), vec![1, 2]);
    }

    #[test]
    fn proportional_and_history() {
        assert_eq!(proportional(&[5, 5], 20), vec![10, 10]);
        assert_eq!(proportional(&[3, 0, 7], 13), vec![4, 0, 9]);
        assert_eq!(proportional(&[4, 4], 4), vec![2, 2]);
        let old = vec![
            ("r1".to_string(), 1, 0, 0),
            ("r2".to_string(), 2, 0, 0),
            ("r3".to_string(), 3, 0, 0),
            ("busy".to_string(), 4, 2, 2),
        ];
        assert_eq!(history_to_delete(&old, 1), vec!["r1", "r2"]);
        assert!(history_to_delete(&old, 10).is_empty());
        assert_eq!(next_revision(&[1, 3, 2]), 4);
        assert_eq!(next_revision(&[]), 1);
    }

    #[test]
    fn annotations_and_rollback_history() {
        let mut d = deploy(3, IntOrString::Int(1), IntOrString::Int(0));
        d.metadata.annotations = Some(BTreeMap::from([
            ("kubernetes.io/change-cause".to_string(), "x".to_string()),
            (REVISION.to_string(), "9".to_string()),
        ]));
        let a = rs_annotations(&d, 1, &BTreeMap::new());
        assert_eq!(a.get(REVISION).map(String::as_str), Some("1"));
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("3"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(
            a.get("kubernetes.io/change-cause").map(String::as_str),
            Some("x")
        );
        // Re-used by a rollback: revision 1 → 3 remembers 1.
        let b = rs_annotations(&d, 3, &a);
        assert_eq!(b.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(b.get(REVISION_HISTORY).map(String::as_str), Some("1"));
    }

    #[test]
    fn status_conditions() {
        let now = Timestamp::from_second(100_000).expect("now");
        let mut d = deploy(3, IntOrString::Int(1), IntOrString::Int(0));
        d.metadata.generation = Some(2);
        let c = Counts {
            replicas: 3,
            updated: 3,
            ready: 3,
            available: 3,
        };
        let (s, _) = compute_status(&d, &c, Some("web-abc"), None, now);
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.unavailable_replicas, Some(0));
        let conds = s.conditions.clone().unwrap_or_default();
        assert_eq!(conds[0].type_, "Available");
        assert_eq!(conds[0].reason.as_deref(), Some("MinimumReplicasAvailable"));
        assert_eq!(conds[1].reason.as_deref(), Some("NewReplicaSetAvailable"));
        assert_eq!(
            conds[1].message.as_deref(),
            Some("ReplicaSet \"web-abc\" has successfully progressed.")
        );

        // Stuck: no progress since long before the deadline.
        let mut stuck = d.clone();
        let mut st = DeploymentStatus {
            updated_replicas: Some(1),
            replicas: Some(4),
            available_replicas: Some(3),
            ready_replicas: Some(3),
            ..DeploymentStatus::default()
        };
        set_condition(
            &mut st,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            "x".into(),
            Timestamp::from_second(1).expect("t"),
        );
        stuck.status = Some(st);
        let c = Counts {
            replicas: 4,
            updated: 1,
            ready: 3,
            available: 3,
        };
        let (s, _) = compute_status(&stuck, &c, Some("web-new"), None, now);
        let p = s
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Progressing")
            .expect("progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("False", Some("ProgressDeadlineExceeded"))
        );
        // Progress within the deadline keeps it True and asks to look again.
        let c2 = Counts { updated: 2, ..c };
        let (s, again) = compute_status(&stuck, &c2, Some("web-new"), None, now);
        assert!(again.is_some());
        let p = s
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Progressing")
            .expect("progressing");
        assert_eq!(p.reason.as_deref(), Some("ReplicaSetUpdated"));
        // Below minimum availability.
        let low = Counts {
            replicas: 3,
            updated: 3,
            ready: 1,
            available: 1,
        };
        let (s, _) = compute_status(&d, &low, Some("web-abc"), None, now);
        assert_eq!(
            s.conditions.unwrap_or_default()[0].reason.as_deref(),
            Some("MinimumReplicasUnavailable")
        );
    }
}
