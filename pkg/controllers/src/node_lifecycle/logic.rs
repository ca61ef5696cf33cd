//! Node health, lifecycle taints and NoExecute toleration timing, without I/O.

use std::time::Duration;

use k8s_openapi::api::core::v1::{NodeCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Taint of nodes whose Ready condition is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of nodes whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Conditions set to Unknown when the kubelet stops posting status.
pub const WATCHED_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The node's conditions after its heartbeat went stale: the watched ones Unknown with
/// upstream's reasons (`NodeStatusUnknown`, or `NodeStatusNeverUpdated` for a condition never
/// posted). None when nothing changes.
pub fn stale_conditions(conds: &[NodeCondition], now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut out = conds.to_vec();
    let mut changed = false;
    for t in WATCHED_CONDITIONS {
        match out.iter_mut().find(|c| c.type_ == t) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                out.push(NodeCondition {
                    type_: t.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_transition_time: Some(Time(now)),
                    last_heartbeat_time: None,
                });
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// The node's taints given its Ready status (`True`, `False`, `Unknown`, or None when it has
/// no Ready condition yet): the `unreachable`/`not-ready` NoExecute and NoSchedule taints added
/// or removed, other taints kept, `timeAdded` of kept taints unchanged. None when nothing
/// changes.
pub fn lifecycle_taints(
    ready: Option<&str>,
    taints: &[Taint],
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let want_key = match ready {
        Some("Unknown") => Some(UNREACHABLE),
        Some("False") => Some(NOT_READY),
        _ => None,
    };
    let mut out: Vec<Taint> = taints
        .iter()
        .filter(|t| {
            let ours = t.key == UNREACHABLE || t.key == NOT_READY;
            let effect_ours = t.effect == "NoExecute" || t.effect == "NoSchedule";
            !(ours && effect_ours) || Some(t.key.as_str()) == want_key
        })
        .cloned()
        .collect();
    if let Some(key) = want_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    value: None,
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                });
            }
        }
    }
    (out != taints).then_some(out)
}

/// Whether `tol` tolerates `taint` (upstream's ToleratesTaint).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref()
        && !e.is_empty()
        && e != taint.effect
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or("");
    let op = tol.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return op == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" => tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// When a pod with `tolerations` must leave a node with `taints`: None when it tolerates all
/// NoExecute taints forever (or there are none); otherwise the instant of eviction — at once if
/// one taint is not tolerated, else the earliest `timeAdded + tolerationSeconds` over the
/// tolerations used (a taint without `timeAdded` counts from `now`).
pub fn eviction_time(
    tolerations: &[Toleration],
    taints: &[Taint],
    now: Timestamp,
) -> Option<Timestamp> {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Some(now);
        }
        // upstream: the minimum tolerationSeconds over the tolerations used; none set means
        // the taint is tolerated forever
        let secs = used.iter().filter_map(|t| t.toleration_seconds).min();
        if let Some(secs) = secs {
            let since = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
            let at = since
                .checked_add(Duration::from_secs(secs.max(0).unsigned_abs()))
                .unwrap_or(since);
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    earliest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(2_000_000).expect("time")
    }

    #[test]
    fn stale_node_conditions_become_unknown() {
        let conds = vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            ..NodeCondition::default()
        }];
        let out = stale_conditions(&conds, now()).expect("changed");
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|c| c.status == "Unknown"));
        assert_eq!(out[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            out[0].message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(out[1].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert!(stale_conditions(&out, now()).is_none(), "idempotent");
    }

    #[test]
    fn taints_follow_ready_status() {
        let other = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            value: Some("x".into()),
            time_added: None,
        };
        let t =
            lifecycle_taints(Some("Unknown"), std::slice::from_ref(&other), now()).expect("added");
        let keys: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (UNREACHABLE, "NoSchedule"),
                (UNREACHABLE, "NoExecute")
            ]
        );
        assert!(t[2].time_added.is_some());
        assert!(
            lifecycle_taints(Some("Unknown"), &t, now()).is_none(),
            "idempotent"
        );
        let nr = lifecycle_taints(Some("False"), &t, now()).expect("switched");
        assert!(
            nr.iter()
                .any(|t| t.key == NOT_READY && t.effect == "NoExecute")
        );
        assert!(!nr.iter().any(|t| t.key == UNREACHABLE));
        assert_eq!(
            lifecycle_taints(Some("True"), &nr, now()),
            Some(vec![other])
        );
        assert!(lifecycle_taints(None, &[], now()).is_none());
    }

    #[test]
    fn toleration_timing() {
        let added = Timestamp::from_second(1_999_900).expect("time");
        let taint = Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(added)),
        };
        let tol = |secs: Option<i64>| Toleration {
            key: Some(UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        };
        let t = std::slice::from_ref(&taint);
        assert_eq!(
            eviction_time(&[], t, now()),
            Some(now()),
            "not tolerated: at once"
        );
        assert_eq!(
            eviction_time(&[tol(None)], t, now()),
            None,
            "tolerated forever"
        );
        assert_eq!(
            eviction_time(&[tol(Some(300))], t, now()),
            Some(Timestamp::from_second(2_000_200).expect("time"))
        );
        // wildcard toleration
        let all = Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        };
        assert!(tolerates(&all, &taint));
        let wrong_effect = Toleration {
            effect: Some("NoSchedule".into()),
            ..tol(None)
        };
        assert_eq!(eviction_time(&[wrong_effect], t, now()), Some(now()));
        assert!(eviction_time(&[], &[], now()).is_none());
    }
}
