//! Worker tests over a recording `FakeRuntime` and a recording API: the calls the worker makes,
//! the statuses it writes and the events it records.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use k8slite_runtime::{FakeRuntime, ProbeKind, ProbeResult, RuntimeCall};

use super::{Next, PodConfig, RecordingPodApi, Worker};

struct Harness {
    rt: FakeRuntime,
    api: Arc<RecordingPodApi>,
    worker: Worker,
    pod: Pod,
}

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-p", "resourceVersion": "1"},
        "spec": spec,
    }))
    .expect("pod")
}

fn harness(spec: serde_json::Value) -> Harness {
    let rt = FakeRuntime::recording();
    let api = Arc::new(RecordingPodApi::default());
    let cfg = PodConfig {
        sync_period: Duration::from_millis(50),
        evented_relist_period: Duration::from_secs(30),
        backoff_initial: Duration::from_millis(300),
        backoff_max: Duration::from_millis(600),
        runtime_scheme: "fake".into(),
        ..PodConfig::default()
    };
    let worker = Worker::new(
        Arc::new(rt.clone()),
        api.clone(),
        Arc::new(cfg),
        "10.0.0.1".into(),
    );
    Harness {
        rt,
        api,
        worker,
        pod: pod(spec),
    }
}

impl Harness {
    /// One sync; afterwards the pod carries the last written status (as the watch would show).
    async fn sync(&mut self) -> Next {
        let next = self.worker.sync(&self.pod).await;
        if let Some(s) = self.api.last_status() {
            self.pod.status = Some(s);
            let rv = self.api.statuses.lock().expect("lock").len() + 1;
            self.pod.metadata.resource_version = Some(rv.to_string());
        }
        next
    }

    fn status(&self) -> PodStatus {
        self.api.last_status().expect("a status was written")
    }

    fn container(&self, name: &str) -> ContainerStatus {
        let s = self.status();
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .find(|c| c.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no status for container {name}"))
    }

    fn condition(&self, t: &str) -> (String, Option<String>) {
        let s = self.status();
        let c = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no condition {t}"));
        (c.status.clone(), c.reason.clone())
    }

    fn writes(&self) -> usize {
        self.api.statuses.lock().expect("lock").len()
    }

    fn id(&self, container: &str) -> String {
        self.rt
            .find_container("default", "p", container)
            .unwrap_or_else(|| panic!("container {container} exists"))
    }

    fn created(&self) -> Vec<(String, u32)> {
        self.rt
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                RuntimeCall::CreateContainer { name, attempt } => Some((name, attempt)),
                _ => None,
            })
            .collect()
    }
}

fn state_of(c: &ContainerStatus) -> &'static str {
    let s = c.state.as_ref().expect("state");
    if s.running.is_some() {
        "running"
    } else if s.terminated.is_some() {
        "terminated"
    } else {
        "waiting"
    }
}

#[tokio::test]
async fn runs_a_pod_and_writes_status_only_on_change() {
    let mut h = harness(serde_json::json!({
        "nodeName": "n1",
        "containers": [{"name": "web", "image": "nginx:1.27"}],
    }));
    assert!(matches!(h.sync().await, Next::After(_)));
    assert_eq!(
        h.rt.calls(),
        [
            RuntimeCall::RunPodSandbox("default/p".into()),
            RuntimeCall::PullImage("nginx:1.27".into()),
            RuntimeCall::CreateContainer {
                name: "web".into(),
                attempt: 0
            },
            RuntimeCall::StartContainer("web".into()),
        ]
    );
    let s = h.status();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.host_ip.as_deref(), Some("10.0.0.1"));
    assert!(
        s.pod_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.42."))
    );
    assert!(s.start_time.is_some());
    let web = h.container("web");
    assert_eq!(state_of(&web), "running");
    assert!(web.ready);
    assert_eq!(web.started, Some(true));
    assert_eq!(web.image, "docker.io/library/nginx:1.27");
    assert!(web.image_id.starts_with("docker.io/library/nginx@sha256:"));
    assert!(
        web.container_id
            .as_deref()
            .is_some_and(|c| c.starts_with("fake://"))
    );
    assert_eq!(h.condition("Ready").0, "True");
    assert_eq!(
        h.api.event_reasons(),
        ["Pulling", "Pulled", "Created", "Started"]
    );
    // Nothing changed: no second write, no new runtime calls that create anything.
    h.sync().await;
    h.sync().await;
    assert_eq!(h.writes(), 1);
    assert_eq!(h.created().len(), 1);
}

#[tokio::test]
async fn never_policy_exit_code_decides_the_phase() {
    let mut h = harness(serde_json::json!({
        "restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox"}],
    }));
    h.sync().await;
    assert!(h.rt.exit_container(&h.id("c"), 3));
    assert_eq!(h.sync().await, Next::Idle);
    let s = h.status();
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    let c = h.container("c");
    let t = c
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert_eq!(
        h.condition("Ready"),
        ("False".into(), Some("PodCompleted".into()))
    );
    assert_eq!(h.condition("PodReadyToStartContainers").0, "False");
    assert!(
        h.rt.calls()
            .iter()
            .any(|c| matches!(c, RuntimeCall::StopPodSandbox(_)))
    );
    // Not restarted.
    h.sync().await;
    assert_eq!(h.created().len(), 1);
}

#[tokio::test]
async fn shell_snippets_complete_jobs() {
    let mut h = harness(serde_json::json!({
        "restartPolicy": "OnFailure",
        "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo hi; exit 0"]}],
    }));
    h.sync().await;
    let s = h.status();
    assert_eq!(s.phase.as_deref(), Some("Succeeded"));
    let t = h
        .container("c")
        .state
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
}

#[tokio::test]
async fn on_failure_restarts_with_doubling_back_off() {
    let mut h = harness(serde_json::json!({
        "restartPolicy": "OnFailure",
        "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", "exit 2"]}],
    }));
    // Attempt 0 exits at once; the first restart is immediate (no back-off yet).
    h.sync().await;
    h.sync().await;
    assert_eq!(h.created(), [("c".into(), 0), ("c".into(), 1)]);
    // Attempt 1 exits too: now it backs off for the initial 300 ms.
    h.sync().await;
    let c = h.container("c");
    assert_eq!(state_of(&c), "waiting");
    let w = c
        .state
        .as_ref()
        .and_then(|s| s.waiting.clone())
        .expect("waiting");
    assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
    assert!(
        w.message
            .as_deref()
            .is_some_and(|m| m
                .starts_with("back-off 300ms restarting failed container=c pod=p_default(uid-p)")),
        "{w:?}"
    );
    assert_eq!(c.restart_count, 1);
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(last.exit_code, 2);
    assert_eq!(h.status().phase.as_deref(), Some("Running"));
    assert!(h.api.event_reasons().contains(&"BackOff".to_string()));
    assert_eq!(h.created().len(), 2, "no restart during back-off");
    tokio::time::sleep(Duration::from_millis(350)).await;
    h.sync().await;
    assert_eq!(h.created().last(), Some(&("c".into(), 2)));
    assert_eq!(h.container("c").restart_count, 2);
    // The next back-off doubles to 600 ms: still backing off after 350 ms.
    h.sync().await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    h.sync().await;
    assert_eq!(h.created().len(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.sync().await;
    assert_eq!(h.created().len(), 4);
    // Exit 0 under OnFailure: done.
    let mut ok = harness(serde_json::json!({
        "restartPolicy": "OnFailure",
        "containers": [{"name": "c", "image": "busybox"}],
    }));
    ok.sync().await;
    assert!(ok.rt.exit_container(&ok.id("c"), 0));
    ok.sync().await;
    assert_eq!(ok.status().phase.as_deref(), Some("Succeeded"));
}

#[tokio::test]
async fn always_policy_restarts_a_container_that_exits_zero() {
    let mut h = harness(serde_json::json!({
        "containers": [{"name": "c", "image": "busybox"}],
    }));
    h.sync().await;
    assert!(h.rt.exit_container(&h.id("c"), 0));
    h.sync().await;
    assert_eq!(h.created(), [("c".into(), 0), ("c".into(), 1)]);
    let c = h.container("c");
    assert_eq!(state_of(&c), "running");
    assert_eq!(c.restart_count, 1);
    let last = c.last_state.and_then(|s| s.terminated).expect("lastState");
    assert_eq!(last.reason.as_deref(), Some("Completed"));
}

#[tokio::test]
async fn init_containers_run_in_order_before_the_app() {
    let mut h = harness(serde_json::json!({
        "initContainers": [
            {"name": "first", "image": "busybox", "command": ["true"]},
            {"name": "second", "image": "busybox"},
        ],
        "containers": [{"name": "app", "image": "nginx"}],
    }));
    h.sync().await;
    assert_eq!(h.created(), [("first".into(), 0)]);
    assert_eq!(h.status().phase.as_deref(), Some("Pending"));
    let (st, reason) = h.condition("Initialized");
    assert_eq!(
        (st.as_str(), reason.as_deref()),
        ("False", Some("ContainersNotInitialized"))
    );
    let app = h.container("app");
    assert_eq!(
        app.state
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason)
            .as_deref(),
        Some("PodInitializing")
    );
    h.sync().await;
    assert_eq!(h.created(), [("first".into(), 0), ("second".into(), 0)]);
    h.sync().await;
    assert_eq!(
        h.created().len(),
        2,
        "app waits for the running init container"
    );
    assert!(h.rt.exit_container(&h.id("second"), 0));
    h.sync().await;
    assert_eq!(h.created().last(), Some(&("app".into(), 0)));
    assert_eq!(h.status().phase.as_deref(), Some("Running"));
    assert_eq!(h.condition("Initialized").0, "True");
    assert_eq!(h.status().init_container_statuses.map(|s| s.len()), Some(2));
}

#[tokio::test]
async fn failed_init_container_fails_a_never_pod() {
    let mut h = harness(serde_json::json!({
        "restartPolicy": "Never",
        "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c", "exit 4"]}],
        "containers": [{"name": "app", "image": "nginx"}],
    }));
    h.sync().await;
    h.sync().await;
    assert_eq!(h.status().phase.as_deref(), Some("Failed"));
    assert_eq!(h.created(), [("init".into(), 0)]);
}

#[tokio::test]
async fn readiness_probe_failures_make_the_pod_unready() {
    let mut h = harness(serde_json::json!({
        "containers": [{
            "name": "web", "image": "nginx",
            "ports": [{"name": "http", "containerPort": 80}],
            "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 1, "failureThreshold": 1},
        }],
    }));
    h.sync().await;
    assert!(
        !h.container("web").ready,
        "not ready before the first probe"
    );
    h.sync().await;
    assert!(h.container("web").ready, "first probe succeeds");
    assert_eq!(h.condition("Ready").0, "True");
    h.rt.set_probe_result(
        &h.id("web"),
        ProbeKind::Readiness,
        ProbeResult::Failure("HTTP probe failed with statuscode: 503".into()),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.sync().await;
    assert!(!h.container("web").ready);
    assert_eq!(
        h.condition("Ready"),
        ("False".into(), Some("ContainersNotReady".into()))
    );
    let events = h.api.events.lock().expect("lock").clone();
    let unhealthy = events
        .iter()
        .find(|e| e.reason == "Unhealthy")
        .expect("Unhealthy event");
    assert!(unhealthy.warning);
    assert_eq!(
        unhealthy.message,
        "Readiness probe failed: HTTP probe failed with statuscode: 503"
    );
    assert_eq!(
        unhealthy.field_path.as_deref(),
        Some("spec.containers{web}")
    );
}

#[tokio::test]
async fn readiness_annotation_keeps_the_pod_unready() {
    let mut h = harness(serde_json::json!({
        "containers": [{
            "name": "web", "image": "nginx",
            "readinessProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 1},
        }],
    }));
    h.pod.metadata.annotations = Some(
        [("sim.k8slite.io/ready".to_string(), "false".to_string())]
            .into_iter()
            .collect(),
    );
    h.sync().await;
    assert!(!h.container("web").ready);
    assert_eq!(h.status().phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn liveness_failure_kills_and_restarts_the_container() {
    let mut h2 = harness(serde_json::json!({
        "containers": [{
            "name": "web", "image": "nginx",
            "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "failureThreshold": 1, "initialDelaySeconds": 1},
        }],
        "terminationGracePeriodSeconds": 7,
    }));
    h2.sync().await;
    let id = h2.id("web");
    h2.rt.set_probe_result(
        &id,
        ProbeKind::Liveness,
        ProbeResult::Failure("cat: can't open '/tmp/healthy'".into()),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h2.sync().await;
    assert!(h2.rt.calls().contains(&RuntimeCall::StopContainer {
        name: "web".into(),
        timeout: 7
    }));
    let reasons = h2.api.event_reasons();
    assert!(reasons.contains(&"Unhealthy".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"Killing".to_string()), "{reasons:?}");
    h2.sync().await;
    assert_eq!(h2.created(), [("web".into(), 0), ("web".into(), 1)]);
    assert_eq!(h2.container("web").restart_count, 1);
}

#[tokio::test]
async fn deletion_stops_containers_within_grace_then_deletes_the_pod() {
    let mut h = harness(serde_json::json!({
        "containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx"}],
    }));
    h.sync().await;
    h.pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    h.pod.metadata.deletion_grace_period_seconds = Some(5);
    assert_eq!(h.sync().await, Next::Done);
    let calls = h.rt.calls();
    for n in ["a", "b"] {
        assert!(
            calls.contains(&RuntimeCall::StopContainer {
                name: n.into(),
                timeout: 5
            }),
            "{calls:?}"
        );
    }
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, RuntimeCall::RemovePodSandbox(_)))
    );
    assert_eq!(*h.api.deleted.lock().expect("lock"), ["uid-p".to_string()]);
    let killing: Vec<String> = h
        .api
        .events
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e.reason == "Killing")
        .map(|e| e.message.clone())
        .collect();
    assert_eq!(killing, ["Stopping container a", "Stopping container b"]);
    // The final status shows the containers terminated.
    assert_eq!(state_of(&h.container("a")), "terminated");
    assert_eq!(h.condition("Ready").0, "False");
    assert_eq!(h.rt.running_containers(), 0);
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_waits_for_the_container() {
    let mut h = harness(serde_json::json!({
        "containers": [{"name": "a", "image": "nginx"}],
    }));
    h.pod.metadata.annotations = Some(
        [(
            "sim.k8slite.io/termination-seconds".to_string(),
            "600".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    h.sync().await;
    h.pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    h.pod.metadata.deletion_grace_period_seconds = Some(30);
    let t0 = tokio::time::Instant::now();
    assert_eq!(h.sync().await, Next::Done);
    // Killed when the 30 s grace ran out (paused clock: no real waiting).
    assert_eq!(t0.elapsed().as_secs(), 30);
    let t = h
        .container("a")
        .state
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(t.exit_code, 137);
    assert_eq!(h.status().phase.as_deref(), Some("Failed"));
}

#[tokio::test]
async fn a_new_worker_adopts_the_running_sandbox_after_an_agent_restart() {
    let mut h = harness(serde_json::json!({
        "nodeName": "n1",
        "containers": [{"name": "web", "image": "nginx:1.27"}],
    }));
    h.sync().await;
    h.sync().await;
    assert_eq!(state_of(&h.container("web")), "running");
    let before = h.id("web");
    let sandboxes_before =
        h.rt.calls()
            .iter()
            .filter(|c| matches!(c, RuntimeCall::RunPodSandbox(_)))
            .count();
    // The agent restarts: a fresh worker over the same runtime and the pod as stored.
    let mut again = Worker::new(
        Arc::new(h.rt.clone()),
        h.api.clone(),
        Arc::new(PodConfig::default()),
        "10.0.0.1".into(),
    );
    again.sync(&h.pod).await;
    let pod = {
        let mut p = h.pod.clone();
        p.status = h.api.last_status();
        p
    };
    again.sync(&pod).await;
    assert_eq!(h.id("web"), before, "the running container was kept");
    assert_eq!(
        h.created(),
        vec![("web".to_string(), 0)],
        "nothing was created again"
    );
    let sandboxes_after =
        h.rt.calls()
            .iter()
            .filter(|c| matches!(c, RuntimeCall::RunPodSandbox(_)))
            .count();
    assert_eq!(sandboxes_before, sandboxes_after, "no second sandbox");
    let st = h.api.last_status().expect("status");
    let web = st
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == "web")
        .expect("web");
    assert_eq!(web.restart_count, 0);
    assert!(
        web.state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some()
    );
}

#[tokio::test]
async fn no_sandbox_on_the_pod_network_until_the_runtime_network_is_ready() {
    let mut h = harness(serde_json::json!({
        "containers": [{"name": "c", "image": "busybox"}],
    }));
    h.rt.set_network_not_ready(Some(
        "NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized".into(),
    ));
    assert_eq!(h.sync().await, Next::After(Duration::from_secs(1)));
    assert!(h.rt.calls().is_empty(), "{:?}", h.rt.calls());
    assert_eq!(h.api.event_reasons(), ["NetworkNotReady"]);
    // A host-network pod does not need it.
    let mut host = harness(serde_json::json!({
        "hostNetwork": true,
        "containers": [{"name": "c", "image": "busybox"}],
    }));
    host.rt.set_network_not_ready(Some("not ready".into()));
    host.sync().await;
    assert!(
        host.rt
            .calls()
            .contains(&RuntimeCall::RunPodSandbox("default/p".into()))
    );
    // Once ready, the pod starts.
    h.rt.set_network_not_ready(None);
    h.sync().await;
    assert_eq!(
        h.rt.calls().first(),
        Some(&RuntimeCall::RunPodSandbox("default/p".into()))
    );
}
