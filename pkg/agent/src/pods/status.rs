//! Pure pod-status computation: phase from container states, the kubelet's conditions with
//! their transition times, and whether a status differs from what is stored (so it is written
//! only on change).

use k8s_openapi::api::core::v1::{
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Phase names.
pub const PENDING: &str = "Pending";
/// Phase names.
pub const RUNNING: &str = "Running";
/// Phase names.
pub const SUCCEEDED: &str = "Succeeded";
/// Phase names.
pub const FAILED: &str = "Failed";

/// Whether `phase` is terminal.
pub fn is_terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some(SUCCEEDED | FAILED))
}

fn terminated_code(s: &ContainerStatus) -> Option<i32> {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}

fn is_running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

fn is_sidecar(spec: &PodSpec, name: &str) -> bool {
    spec.init_containers
        .iter()
        .flatten()
        .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
}

/// Whether init container `s` has done its part (exited 0; a sidecar: started).
pub fn init_done(spec: &PodSpec, s: &ContainerStatus) -> bool {
    if is_sidecar(spec, &s.name) {
        return s.started == Some(true) || is_running(s);
    }
    terminated_code(s) == Some(0)
}

/// The pod phase from its container statuses, as the kubelet computes it. `all_stopped`
/// means the pod is being torn down and its containers will not run again.
pub fn phase(
    spec: &PodSpec,
    init: &[ContainerStatus],
    containers: &[ContainerStatus],
    all_stopped: bool,
) -> &'static str {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let n_init = spec.init_containers.as_ref().map_or(0, Vec::len);
    let init_ok = init.len() == n_init && init.iter().all(|s| init_done(spec, s));
    if !init_ok {
        let failed = init
            .iter()
            .any(|s| !is_sidecar(spec, &s.name) && terminated_code(s).is_some_and(|c| c != 0));
        if failed && (policy == "Never" || all_stopped) {
            return FAILED;
        }
        if all_stopped {
            return FAILED;
        }
        return PENDING;
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in containers {
        let st = s.state.as_ref();
        if st.is_some_and(|st| st.running.is_some()) {
            running += 1;
        } else if let Some(code) = terminated_code(s) {
            stopped += 1;
            if code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            // Waiting to restart after having run.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    let n = spec.containers.len();
    if containers.len() < n {
        waiting += n - containers.len();
    }
    if all_stopped {
        return if waiting == 0 && stopped == succeeded && running == 0 {
            SUCCEEDED
        } else {
            FAILED
        };
    }
    if waiting > 0 {
        return PENDING;
    }
    if running > 0 {
        return RUNNING;
    }
    if stopped > 0 {
        return match policy {
            "Always" => RUNNING,
            "OnFailure" if stopped == succeeded => SUCCEEDED,
            "OnFailure" => RUNNING,
            _ if stopped == succeeded => SUCCEEDED,
            _ => FAILED,
        };
    }
    PENDING
}

fn cond(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        message,
        last_probe_time: None,
        last_transition_time: None,
        observed_generation: None,
    }
}

/// What the agent knows beyond container statuses.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// The sandbox exists and runs.
    pub sandbox_ready: bool,
    /// Pod IP (the node IP with host networking).
    pub pod_ip: Option<String>,
    /// Node IP.
    pub host_ip: String,
    /// When the agent accepted the pod.
    pub start_time: Option<Time>,
    /// The pod is being torn down (deleted): its containers will not run again.
    pub all_stopped: bool,
}

/// The status the agent reports for `pod`.
pub fn pod_status(
    pod: &Pod,
    init: Vec<ContainerStatus>,
    containers: Vec<ContainerStatus>,
    facts: &PodFacts,
    now: Timestamp,
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let phase = phase(&spec, &init, &containers, facts.all_stopped);
    let terminal = is_terminal(Some(phase));
    let old = pod.status.as_ref();

    let incomplete: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| !init.iter().any(|s| s.name == c.name && init_done(&spec, s)))
        .map(|c| c.name.as_str())
        .collect();
    let initialized = if incomplete.is_empty() {
        cond("Initialized", true, None, None)
    } else if terminal && phase == SUCCEEDED {
        cond("Initialized", true, Some("PodCompleted"), None)
    } else {
        cond(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        )
    };
    let unready: Vec<&str> = spec
        .containers
        .iter()
        .filter(|c| !containers.iter().any(|s| s.name == c.name && s.ready))
        .map(|c| c.name.as_str())
        .collect();
    let containers_ready = if terminal {
        cond("ContainersReady", false, Some("PodCompleted"), None)
    } else if unready.is_empty() {
        cond("ContainersReady", true, None, None)
    } else {
        cond(
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let old_conds: &[PodCondition] = old.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let gates_missing: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .filter(|g| {
            !old_conds
                .iter()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        })
        .map(|g| g.condition_type.clone())
        .collect();
    let ready = if terminal {
        cond("Ready", false, Some("PodCompleted"), None)
    } else if !unready.is_empty() {
        cond(
            "Ready",
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    } else if let Some(g) = gates_missing.first() {
        cond(
            "Ready",
            false,
            Some("ReadinessGatesNotReady"),
            Some(format!(
                "corresponding condition of pod readiness gate \"{g}\" does not exist."
            )),
        )
    } else {
        cond("Ready", true, None, None)
    };
    let scheduled = old_conds
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .cloned()
        .unwrap_or_else(|| cond("PodScheduled", true, None, None));
    let mut conditions = vec![
        cond("PodReadyToStartContainers", facts.sandbox_ready, None, None),
        initialized,
        ready,
        containers_ready,
        scheduled,
    ];
    for c in &mut conditions {
        if c.last_transition_time.is_some() {
            continue;
        }
        c.last_transition_time = old_conds
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
            .and_then(|o| o.last_transition_time.clone())
            .or(Some(Time(now)));
    }
    // Conditions other components own (DisruptionTarget, readiness gates, …) are kept.
    let ours: Vec<String> = conditions.iter().map(|c| c.type_.clone()).collect();
    conditions.extend(
        old_conds
            .iter()
            .filter(|c| !ours.contains(&c.type_))
            .cloned(),
    );

    let mut status = PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(facts.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: facts.host_ip.clone(),
        }]),
        start_time: facts
            .start_time
            .clone()
            .or_else(|| old.and_then(|s| s.start_time.clone())),
        container_statuses: Some(containers),
        init_container_statuses: (!init.is_empty()).then_some(init),
        ..PodStatus::default()
    };
    if let Some(ip) = facts.pod_ip.as_ref().filter(|ip| !ip.is_empty()) {
        status.pod_ip = Some(ip.clone());
        status.pod_ips = Some(vec![PodIP { ip: ip.clone() }]);
    }
    status
}

/// `current` with the fields the agent writes replaced by `desired`'s (what a merge patch of
/// `desired` makes of it).
pub fn overlay(current: Option<&PodStatus>, desired: &PodStatus) -> PodStatus {
    let mut out = current.cloned().unwrap_or_default();
    macro_rules! take {
        ($($f:ident),*) => { $( if desired.$f.is_some() { out.$f = desired.$f.clone(); } )* };
    }
    take!(
        phase,
        conditions,
        host_ip,
        host_ips,
        pod_ip,
        pod_ips,
        start_time,
        container_statuses,
        init_container_statuses,
        reason,
        message
    );
    out
}

/// Whether writing `desired` would change `current`.
pub fn differs(current: Option<&PodStatus>, desired: &PodStatus) -> bool {
    match current {
        Some(cur) => overlay(Some(cur), desired) != *cur,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting,
    };

    fn spec(policy: &str, names: &[&str], init: &[&str]) -> PodSpec {
        let c = |n: &&str| Container {
            name: n.to_string(),
            ..Container::default()
        };
        PodSpec {
            restart_policy: Some(policy.into()),
            containers: names.iter().map(c).collect(),
            init_containers: (!init.is_empty()).then(|| init.iter().map(c).collect()),
            ..PodSpec::default()
        }
    }

    fn running(name: &str, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn exited(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn backing_off(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: None,
                }),
                ..ContainerState::default()
            }),
            last_state: exited(name, 1).state,
            restart_count: 1,
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn phases_follow_restart_policy() {
        let never = spec("Never", &["a"], &[]);
        assert_eq!(phase(&never, &[], &[], false), PENDING);
        assert_eq!(phase(&never, &[], &[running("a", true)], false), RUNNING);
        assert_eq!(phase(&never, &[], &[exited("a", 0)], false), SUCCEEDED);
        assert_eq!(phase(&never, &[], &[exited("a", 3)], false), FAILED);
        let onf = spec("OnFailure", &["a", "b"], &[]);
        assert_eq!(
            phase(&onf, &[], &[exited("a", 0), exited("b", 0)], false),
            SUCCEEDED
        );
        assert_eq!(
            phase(&onf, &[], &[exited("a", 0), backing_off("b")], false),
            RUNNING
        );
        let always = spec("Always", &["a"], &[]);
        assert_eq!(phase(&always, &[], &[exited("a", 0)], false), RUNNING);
        assert_eq!(phase(&always, &[], &[backing_off("a")], false), RUNNING);
        // Torn down by deletion: terminal by exit codes.
        assert_eq!(phase(&always, &[], &[exited("a", 0)], true), SUCCEEDED);
        assert_eq!(phase(&always, &[], &[exited("a", 137)], true), FAILED);
    }

    #[test]
    fn init_containers_gate_the_phase() {
        let s = spec("Never", &["a"], &["i1", "i2"]);
        assert_eq!(phase(&s, &[exited("i1", 0)], &[], false), PENDING);
        assert_eq!(phase(&s, &[exited("i1", 2)], &[], false), FAILED);
        let s2 = spec("Always", &["a"], &["i1"]);
        assert_eq!(phase(&s2, &[backing_off("i1")], &[], false), PENDING);
        assert_eq!(
            phase(&s2, &[exited("i1", 0)], &[running("a", false)], false),
            RUNNING
        );
    }

    #[test]
    fn conditions_and_transition_times() {
        let t0 = Timestamp::from_second(1_700_000_000).expect("ts");
        let t1 = Timestamp::from_second(1_700_000_050).expect("ts");
        let mut pod = Pod {
            spec: Some(spec("Always", &["a", "b"], &["init"])),
            ..Pod::default()
        };
        let facts = PodFacts {
            sandbox_ready: true,
            pod_ip: Some("10.42.0.5".into()),
            host_ip: "127.0.0.1".into(),
            ..PodFacts::default()
        };
        let s0 = pod_status(
            &pod,
            vec![exited("init", 0)],
            vec![running("a", true), running("b", false)],
            &facts,
            t0,
        );
        let get = |s: &PodStatus, t: &str| {
            s.conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == t).cloned())
                .expect("condition")
        };
        assert_eq!(s0.phase.as_deref(), Some(RUNNING));
        assert_eq!(get(&s0, "Initialized").status, "True");
        assert_eq!(get(&s0, "PodScheduled").status, "True");
        let r = get(&s0, "Ready");
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(s0.pod_ip.as_deref(), Some("10.42.0.5"));
        let types: Vec<&str> = s0
            .conditions
            .as_ref()
            .expect("conditions")
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        pod.status = Some(s0.clone());
        // Same inputs later: nothing to write.
        let same = pod_status(
            &pod,
            vec![exited("init", 0)],
            vec![running("a", true), running("b", false)],
            &facts,
            t1,
        );
        assert!(!differs(pod.status.as_ref(), &same));
        // b becomes ready: Ready flips with the new time, Initialized keeps the old one.
        let s1 = pod_status(
            &pod,
            vec![exited("init", 0)],
            vec![running("a", true), running("b", true)],
            &facts,
            t1,
        );
        assert!(differs(pod.status.as_ref(), &s1));
        assert_eq!(get(&s1, "Ready").status, "True");
        assert_eq!(get(&s1, "Ready").last_transition_time, Some(Time(t1)));
        assert_eq!(get(&s1, "Initialized").last_transition_time, Some(Time(t0)));
    }

    #[test]
    fn foreign_conditions_are_kept_and_completed_pods_are_not_ready() {
        let mut pod = Pod {
            spec: Some(spec("Never", &["a"], &[])),
            ..Pod::default()
        };
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            qos_class: Some("BestEffort".into()),
            ..PodStatus::default()
        });
        let s = pod_status(
            &pod,
            vec![],
            vec![exited("a", 0)],
            &PodFacts::default(),
            Timestamp::now(),
        );
        assert_eq!(s.phase.as_deref(), Some(SUCCEEDED));
        let conds = s.conditions.as_ref().expect("conditions");
        assert!(conds.iter().any(|c| c.type_ == "DisruptionTarget"));
        let ready = conds.iter().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("PodCompleted"))
        );
        let merged = overlay(pod.status.as_ref(), &s);
        assert_eq!(merged.qos_class.as_deref(), Some("BestEffort"));
    }
}
