//! What users see of the scheduler's decisions: the pod's `PodScheduled` condition and the
//! `Scheduled` / `FailedScheduling` events (reporting controller `default-scheduler`).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};

/// The reporting controller of the scheduler's events.
pub const REPORTER: &str = "default-scheduler";

/// A recorder reporting as `default-scheduler`. Repeats of one event through the same recorder
/// are aggregated into a series.
pub fn recorder(client: kube::Client) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: REPORTER.to_string(),
            instance: None,
        },
    )
}

/// The `FailedScheduling` warning.
pub fn failed_scheduling(message: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: "FailedScheduling".into(),
        note: Some(message.to_string()),
        action: "Scheduling".into(),
        secondary: None,
    }
}

/// The `Scheduled` event.
pub fn scheduled(namespace: &str, pod: &str, node: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "Scheduled".into(),
        note: Some(format!("Successfully assigned {namespace}/{pod} to {node}")),
        action: "Binding".into(),
        secondary: None,
    }
}

/// The status patch (strategic merge) setting `PodScheduled=False, reason Unschedulable` with
/// `message`, or `None` when the pod already says exactly that.
pub fn unschedulable_condition_patch(pod: &Pod, message: &str, now: Timestamp) -> Option<Value> {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    let transition = match current {
        Some(c)
            if c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message) =>
        {
            return None;
        }
        Some(c) if c.status == "False" => {
            c.last_transition_time.as_ref().map(|t| t.0).unwrap_or(now)
        }
        _ => now,
    };
    Some(json!({
        "status": {
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": transition.to_string(),
            }]
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn condition_patch_only_when_something_changes() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let mut pod = pod_with_requests("p", &[]);
        let patch =
            unschedulable_condition_patch(&pod, "0/1 nodes are available: 1 Too many pods.", now)
                .expect("patch");
        let c = &patch["status"]["conditions"][0];
        assert_eq!(c["type"], "PodScheduled");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "Unschedulable");
        assert_eq!(c["lastTransitionTime"], "2026-01-01T00:00:00Z");
        let earlier: Timestamp = "2025-01-01T00:00:00Z".parse().expect("ts");
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("old".into()),
                last_transition_time: Some(Time(earlier)),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(unschedulable_condition_patch(&pod, "old", now).is_none());
        let patch = unschedulable_condition_patch(&pod, "new", now).expect("patch");
        assert_eq!(
            patch["status"]["conditions"][0]["lastTransitionTime"], "2025-01-01T00:00:00Z",
            "still False: the transition time stays"
        );
    }

    #[test]
    fn event_shapes() {
        let e = scheduled("default", "web-1", "n2");
        assert_eq!(e.reason, "Scheduled");
        assert_eq!(
            e.note.as_deref(),
            Some("Successfully assigned default/web-1 to n2")
        );
        assert_eq!(e.type_, EventType::Normal);
        let f = failed_scheduling("0/3 nodes are available: 3 Insufficient cpu.");
        assert_eq!(
            (f.reason.as_str(), f.type_),
            ("FailedScheduling", EventType::Warning)
        );
    }
}
