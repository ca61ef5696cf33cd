//! Conversion between served versions that share storage: autoscaling/v1 ↔ autoscaling/v2
//! HorizontalPodAutoscalers (stored as v2) and events.k8s.io/v1 ↔ core/v1 Events (stored as
//! core/v1). Everything else is stored in the version it is served in.

use serde_json::{Map, Value, json};

/// The apiVersion objects of `group`/`kind` are stored in (`None`: the served one).
pub fn storage_api_version(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("autoscaling", "HorizontalPodAutoscaler") => Some("autoscaling/v2"),
        ("events.k8s.io", "Event") | ("", "Event") => Some("v1"),
        _ => None,
    }
}

/// Convert `obj` to `to` (an apiVersion). Unknown pairs are returned unchanged.
pub fn convert(obj: Value, to: &str) -> Value {
    let from = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if from == to {
        return obj;
    }
    match (kind.as_str(), from.as_str(), to) {
        ("HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v1") => hpa_v2_to_v1(obj),
        ("HorizontalPodAutoscaler", "autoscaling/v1", "autoscaling/v2") => hpa_v1_to_v2(obj),
        ("Event", "v1", "events.k8s.io/v1") => event_core_to_events(obj),
        ("Event", "events.k8s.io/v1", "v1") => event_events_to_core(obj),
        _ => obj,
    }
}

fn take(m: &mut Map<String, Value>, k: &str) -> Option<Value> {
    m.remove(k)
}

fn hpa_v1_to_v2(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let target = take(spec, "targetCPUUtilizationPercentage");
        if let Some(t) = target {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": t}}}]),
            );
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
        && let Some(c) = take(status, "currentCPUUtilizationPercentage")
    {
        status.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": c}}}]),
        );
    }
    obj
}

fn hpa_v2_to_v1(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v1");
    let is_cpu = |m: &Value| {
        m.pointer("/type").and_then(Value::as_str) == Some("Resource")
            && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
    };
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = take(spec, "metrics");
        take(spec, "behavior");
        let cpu = metrics
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|ms| ms.iter().find(|m| is_cpu(m)))
            .and_then(|m| m.pointer("/resource/target/averageUtilization").cloned());
        if let Some(c) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), c);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let current = take(status, "currentMetrics");
        take(status, "conditions");
        let cpu = current
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|ms| ms.iter().find(|m| is_cpu(m)))
            .and_then(|m| m.pointer("/resource/current/averageUtilization").cloned());
        if let Some(c) = cpu {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    obj
}

/// Field renames between core/v1 Event (left) and events.k8s.io/v1 Event (right).
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(obj: &mut Value, pairs: &[(&str, &str)], forward: bool) {
    let Some(m) = obj.as_object_mut() else { return };
    for (a, b) in pairs {
        let (from, to) = if forward { (a, b) } else { (b, a) };
        if let Some(v) = m.remove(*from) {
            m.insert((*to).to_string(), v);
        }
    }
}

fn event_core_to_events(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("events.k8s.io/v1");
    rename(&mut obj, EVENT_RENAMES, true);
    if let Some(m) = obj.as_object_mut() {
        // core's series.count/lastObservedTime keep their names; a repeated core Event without
        // series reports its count as deprecatedCount (done by the rename).
        if m.get("reportingController").is_none()
            && let Some(c) = m.remove("reportingComponent")
        {
            m.insert("reportingController".into(), c);
        }
        m.remove("reportingComponent");
    }
    obj
}

fn event_events_to_core(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("v1");
    rename(&mut obj, EVENT_RENAMES, false);
    if let Some(m) = obj.as_object_mut() {
        if let Some(c) = m.remove("reportingController") {
            m.insert("reportingComponent".into(), c);
        }
        fill_legacy_times(m);
    }
    obj
}

/// An event written through events.k8s.io carries `eventTime` (and `series` once repeated)
/// but none of core's `firstTimestamp`/`lastTimestamp`/`count`. Upstream leaves them null;
/// there most events still come from the kubelet's core recorder, but here every component
/// records through events.k8s.io, so `kubectl get events --sort-by=.lastTimestamp` would find
/// nothing to sort by and print "No resources found". Events are stored in the core form, so
/// they are derived on the way in: first = eventTime, last = the series' lastObservedTime (else
/// eventTime), count = the series' count (else 1). They show in the events.k8s.io view as the
/// `deprecated*` fields, which clients ignore.
fn fill_legacy_times(m: &mut serde_json::Map<String, Value>) {
    // core's timestamps are `Time` (whole seconds); eventTime is a `MicroTime`.
    let seconds = |t: &Value| match t.as_str() {
        Some(s) => match (s.find('.'), s.rfind(['Z', '+', '-'])) {
            (Some(dot), Some(zone)) if zone > dot => json!(format!("{}{}", &s[..dot], &s[zone..])),
            _ => t.clone(),
        },
        None => t.clone(),
    };
    let Some(event_time) = m.get("eventTime").filter(|t| !t.is_null()).map(seconds) else {
        return;
    };
    let series = m.get("series").cloned().unwrap_or(Value::Null);
    if m.get("firstTimestamp").is_none_or(Value::is_null) {
        m.insert("firstTimestamp".into(), event_time.clone());
    }
    let observed = series
        .get("lastObservedTime")
        .filter(|t| !t.is_null())
        .map(seconds);
    if observed.is_some() || m.get("lastTimestamp").is_none_or(Value::is_null) {
        m.insert("lastTimestamp".into(), observed.unwrap_or(event_time));
    }
    let repeats = series.get("count").and_then(Value::as_i64);
    if repeats.is_some() || m.get("count").is_none_or(Value::is_null) {
        m.insert("count".into(), json!(repeats.unwrap_or(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_round_trip() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}});
        let v2 = convert(v1.clone(), "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
        assert_eq!(convert(v2, "autoscaling/v1"), v1);
    }

    #[test]
    fn event_round_trip() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Scheduled", "message": "assigned", "type": "Normal",
            "source": {"component": "scheduler"}, "count": 2, "firstTimestamp": "2026-01-01T00:00:00Z", "reportingComponent": "k8slite"});
        let ev = convert(core.clone(), "events.k8s.io/v1");
        assert_eq!(ev["regarding"]["name"], "p");
        assert_eq!(ev["note"], "assigned");
        assert_eq!(ev["deprecatedCount"], 2);
        assert_eq!(ev["reportingController"], "k8slite");
        assert_eq!(convert(ev, "v1"), core);
    }

    #[test]
    fn events_api_event_gets_core_times() {
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p"}, "reason": "Started", "note": "started", "type": "Normal",
            "eventTime": "2026-01-01T00:00:00.000001Z", "reportingController": "kubelet", "action": "Start"});
        let core = convert(ev.clone(), "v1");
        assert_eq!(core["firstTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(core["lastTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(core["count"], 1);
        let mut repeated = ev;
        repeated["series"] = json!({"count": 4, "lastObservedTime": "2026-01-01T00:05:00.000001Z"});
        let core = convert(repeated, "v1");
        assert_eq!(core["firstTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(core["lastTimestamp"], "2026-01-01T00:05:00Z");
        assert_eq!(core["count"], 4);
    }
}
