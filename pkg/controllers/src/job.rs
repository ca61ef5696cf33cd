//! Job controller: runs pods until `completions` succeed (NonIndexed or Indexed), at most
//! `parallelism` at a time; fails the Job past `backoffLimit` or `activeDeadlineSeconds`;
//! `suspend` deletes its active pods. Pods carry the `batch.kubernetes.io/job-tracking`
//! finalizer until their outcome is recorded in the Job's status (through
//! `uncountedTerminatedPods`, as upstream), so a pod deleted early is still counted.
//!
//! `podFailurePolicy` rules (onExitCodes, onPodConditions) with FailJob, Ignore and Count
//! (FailIndex counts, as `backoffLimitPerIndex` is not done).
//!
//! Not done: `successPolicy`, `backoffLimitPerIndex`, `podReplacementPolicy`
//! (pods are replaced once terminal, i.e. upstream's `TerminatingOrFailed`), adoption of orphans.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error, util};

/// Finalizer the controller puts on its pods until their outcome is counted.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation and label holding an Indexed Job pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// Label with the Job's uid.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Label with the Job's name.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// Legacy label with the Job's uid.
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
/// Legacy label with the Job's name.
pub const LEGACY_JOB_NAME: &str = "job-name";

const MSG_BACKOFF: &str = "Job has reached the specified backoff limit";
const MSG_DEADLINE: &str = "Job was active longer than specified deadline";
const MSG_COMPLETE: &str = "Reached expected number of succeeded pods";

struct State {
    ctx: Ctx,
    recorder: Recorder,
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let jobs = Api::<Job>::all(ctx.client.clone());
    let pods = Api::<Pod>::all(ctx.client.clone());
    let state = Arc::new(State {
        recorder: ctx.recorder("job-controller"),
        ctx,
    });
    Controller::new(jobs, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "job reconcile");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_job: Arc<Job>, err: &Error, _st: Arc<State>) -> Action {
    tracing::debug!(error = %err, "job reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Whether the Job has a `Complete` or `Failed` condition that is `True`.
pub fn is_finished(job: &Job) -> bool {
    finished_condition(job).is_some()
}

/// The `Complete` or `Failed` condition that is `True`, if any.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn cond_true(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn set_cond(
    status: &mut JobStatus,
    type_: &str,
    value: bool,
    reason: &str,
    msg: &str,
    now: Timestamp,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let v = if value { "True" } else { "False" };
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != v {
            c.last_transition_time = Some(Time(now));
        }
        c.status = v.into();
        c.reason = Some(reason.into());
        c.message = Some(msg.into());
        c.last_probe_time = Some(Time(now));
    } else {
        conds.push(JobCondition {
            type_: type_.into(),
            status: v.into(),
            reason: Some(reason.into()),
            message: Some(msg.into()),
            last_probe_time: Some(Time(now)),
            last_transition_time: Some(Time(now)),
        });
    }
}

/// The completion index of a pod (annotation, else label).
pub fn pod_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_KEY))
        .or_else(|| pod.metadata.labels.as_ref().and_then(|l| l.get(INDEX_KEY)))
        .and_then(|v| v.parse().ok())
}

/// Parse upstream's index list (`1,3-5,7`).
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(v) = part.parse() {
                    out.insert(v);
                }
            }
        }
    }
    out
}

/// Format indexes as upstream does: ascending, runs of 2+ consecutive values as `a-b`.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if end > start {
            format!("{start}-{end}")
        } else {
            start.to_string()
        });
    }
    parts.join(",")
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// When a terminal pod finished: the latest container finish time, else its creation.
fn finish_time(pod: &Pod) -> Option<Timestamp> {
    let st = pod.status.as_ref();
    st.and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .or_else(|| {
            st.and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
        })
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The first `podFailurePolicy` rule a failed pod matches: (action, message for FailJob).
pub fn match_pod_failure_policy(
    policy: &k8s_openapi::api::batch::v1::PodFailurePolicy,
    pod: &Pod,
) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    let pod_key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.name_any()
    );
    for (i, rule) in policy.rules.iter().enumerate() {
        if let Some(req) = &rule.on_exit_codes {
            let statuses = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten());
            for cs in statuses {
                if req.container_name.as_ref().is_some_and(|n| *n != cs.name) {
                    continue;
                }
                let Some(code) = cs
                    .state
                    .as_ref()
                    .and_then(|st| st.terminated.as_ref())
                    .map(|t| t.exit_code)
                    .filter(|c| *c != 0)
                else {
                    continue;
                };
                let hit = match req.operator.as_str() {
                    "In" => req.values.contains(&code),
                    "NotIn" => !req.values.contains(&code),
                    _ => false,
                };
                if hit {
                    return Some((
                        rule.action.clone(),
                        format!(
                            "Container {} for pod {pod_key} failed with exit code {code} matching {} rule at index {i}",
                            cs.name, rule.action
                        ),
                    ));
                }
            }
        }
        for pat in rule.on_pod_conditions.iter().flatten() {
            let want = if pat.status.is_empty() {
                "True"
            } else {
                pat.status.as_str()
            };
            if status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == pat.type_ && c.status == want)
            {
                return Some((
                    rule.action.clone(),
                    format!(
                        "Pod {pod_key} has condition {} matching {} rule at index {i}",
                        pat.type_, rule.action
                    ),
                ));
            }
        }
    }
    None
}

/// What one reconcile should do (the pure part of the controller).
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Pods to create: their completion index (`None` for NonIndexed Jobs).
    pub create: Vec<Option<i32>>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The status to record.
    pub status: JobStatus,
    /// Names of pods whose tracking finalizer goes once the status is written.
    pub remove_finalizers: Vec<String>,
    /// Events: (warning, reason, message).
    pub events: Vec<(bool, &'static str, String)>,
    /// Reconcile again after this long.
    pub requeue: Option<Duration>,
}

/// Decide what the Job needs given its pods at `now`.
pub fn decide(job: &Job, pods: &[Pod], now: Timestamp) -> Decision {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let mut d = Decision::default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let suspended = spec.suspend == Some(true);
    let finished = cond_true(&old, "Complete") || cond_true(&old, "Failed");
    let stopping = finished
        || suspended
        || cond_true(&old, "FailureTarget")
        || cond_true(&old, "SuccessCriteriaMet");

    // --- accounting: terminal pods → uncounted → counted, through the finalizer.
    let unc = old.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_ok: Vec<String> = unc.succeeded.clone().unwrap_or_default();
    let mut unc_failed: Vec<String> = unc.failed.clone().unwrap_or_default();
    let by_uid: BTreeMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.uid.as_deref()?, p)))
        .collect();
    let mut succeeded = old.succeeded.unwrap_or(0);
    let mut failed = old.failed.unwrap_or(0);
    let mut completed = parse_indexes(old.completed_indexes.as_deref().unwrap_or_default());
    // Uncounted pods whose finalizer is gone (or that are gone) move into the counters.
    unc_ok.retain(|uid| {
        let done = by_uid.get(uid.as_str()).is_none_or(|p| !has_finalizer(p));
        if done {
            succeeded += 1;
        }
        !done
    });
    unc_failed.retain(|uid| {
        let done = by_uid.get(uid.as_str()).is_none_or(|p| !has_finalizer(p));
        if done {
            failed += 1;
        }
        !done
    });
    let known: HashSet<String> = unc_ok.iter().chain(unc_failed.iter()).cloned().collect();
    let mut active: Vec<&Pod> = Vec::new();
    let mut terminating = 0;
    let mut last_failure: Option<Timestamp> = None;
    let mut fail_job: Option<String> = None;
    for p in pods {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let ph = phase(p);
        let deleting = p.metadata.deletion_timestamp.is_some();
        if ph == "Failed" {
            let t = finish_time(p);
            last_failure = last_failure.max(t);
        }
        let terminal = ph == "Succeeded" || ph == "Failed";
        if !terminal && !deleting {
            active.push(p);
            continue;
        }
        if !terminal {
            terminating += 1;
        }
        if !has_finalizer(p) {
            continue;
        }
        if known.contains(&uid) {
            d.remove_finalizers.push(p.name_any());
            continue;
        }
        if ph == "Succeeded" {
            if indexed && let Some(i) = pod_index(p) {
                completed.insert(i);
            }
            unc_ok.push(uid);
        } else if terminal || !stopping {
            // A pod deleted while running counts as failed, unless we were stopping the Job.
            // podFailurePolicy may ignore the failure or fail the whole Job.
            match spec
                .pod_failure_policy
                .as_ref()
                .and_then(|pol| match_pod_failure_policy(pol, p))
            {
                Some((action, _)) if action == "Ignore" => {}
                Some((action, msg)) if action == "FailJob" => {
                    fail_job.get_or_insert(msg);
                    unc_failed.push(uid);
                }
                _ => unc_failed.push(uid),
            }
        }
        d.remove_finalizers.push(p.name_any());
    }
    let succeeded_total = succeeded + i32::try_from(unc_ok.len()).unwrap_or(i32::MAX);
    let restarts: i32 = if spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure")
    {
        active
            .iter()
            .flat_map(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let failed_total = failed + i32::try_from(unc_failed.len()).unwrap_or(i32::MAX);

    st.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(unc_ok.clone()),
        failed: Some(unc_failed.clone()),
    });
    st.succeeded = Some(succeeded);
    st.failed = Some(failed);
    if indexed {
        st.completed_indexes = Some(format_indexes(&completed));
    }

    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);

    if !finished {
        if suspended {
            for p in &active {
                d.delete.push(p.name_any());
            }
            if !cond_true(&old, "Suspended") {
                set_cond(
                    &mut st,
                    "Suspended",
                    true,
                    "JobSuspended",
                    "Job suspended",
                    now,
                );
                d.events.push((false, "Suspended", "Job suspended".into()));
            }
            st.start_time = None;
        } else {
            if cond_true(&old, "Suspended") {
                set_cond(
                    &mut st,
                    "Suspended",
                    false,
                    "JobResumed",
                    "Job resumed",
                    now,
                );
                d.events.push((false, "Resumed", "Job resumed".into()));
                st.start_time = Some(Time(now));
            }
            let start = st.start_time.get_or_insert(Time(now)).0;
            // Failure and success targets.
            if !cond_true(&st, "FailureTarget") && !cond_true(&st, "SuccessCriteriaMet") {
                let deadline = spec
                    .active_deadline_seconds
                    .map(|s| start + k8s_openapi::jiff::SignedDuration::from_secs(s));
                let done = if indexed {
                    completions.is_some_and(|c| completed.len() >= usize::try_from(c).unwrap_or(0))
                } else {
                    match completions {
                        Some(c) => succeeded_total >= c,
                        None => succeeded_total >= 1 && active.is_empty(),
                    }
                };
                if let Some(msg) = &fail_job {
                    set_cond(&mut st, "FailureTarget", true, "PodFailurePolicy", msg, now);
                } else if done {
                    set_cond(
                        &mut st,
                        "SuccessCriteriaMet",
                        true,
                        "CompletionsReached",
                        MSG_COMPLETE,
                        now,
                    );
                } else if failed_total + restarts > backoff_limit {
                    set_cond(
                        &mut st,
                        "FailureTarget",
                        true,
                        "BackoffLimitExceeded",
                        MSG_BACKOFF,
                        now,
                    );
                } else if let Some(dl) = deadline {
                    if now >= dl {
                        set_cond(
                            &mut st,
                            "FailureTarget",
                            true,
                            "DeadlineExceeded",
                            MSG_DEADLINE,
                            now,
                        );
                    } else {
                        let left = dl.duration_since(now).unsigned_abs();
                        d.requeue = Some(left + Duration::from_millis(100));
                    }
                }
            }
            let target = st
                .conditions
                .iter()
                .flatten()
                .find(|c| {
                    (c.type_ == "FailureTarget" || c.type_ == "SuccessCriteriaMet")
                        && c.status == "True"
                })
                .cloned();
            if let Some(t) = target {
                for p in &active {
                    d.delete.push(p.name_any());
                }
                let settled = active.is_empty()
                    && terminating == 0
                    && unc_ok.is_empty()
                    && unc_failed.is_empty()
                    && d.remove_finalizers.is_empty();
                if settled {
                    let reason = t.reason.clone().unwrap_or_default();
                    let msg = t.message.clone().unwrap_or_default();
                    if t.type_ == "SuccessCriteriaMet" {
                        set_cond(&mut st, "Complete", true, &reason, &msg, now);
                        st.completion_time = Some(Time(now));
                        d.events.push((false, "Completed", "Job completed".into()));
                    } else {
                        set_cond(&mut st, "Failed", true, &reason, &msg, now);
                        let ev = match reason.as_str() {
                            "DeadlineExceeded" => "DeadlineExceeded",
                            "PodFailurePolicy" => "PodFailurePolicy",
                            _ => "BackoffLimitExceeded",
                        };
                        d.events.push((true, ev, msg));
                    }
                }
            } else {
                // Back-off before replacing failed pods: 10s doubled per failure, at most 6m.
                let mut wait = None;
                if failed_total > 0
                    && let Some(last) = last_failure
                {
                    let exp = u32::try_from((failed_total - 1).clamp(0, 6)).unwrap_or(6);
                    let delay =
                        Duration::from_secs(10 * 2u64.pow(exp)).min(Duration::from_secs(360));
                    let since = now.duration_since(last).unsigned_abs();
                    if since < delay {
                        wait = Some(delay - since);
                    }
                }
                plan_pods(
                    &mut d,
                    &active,
                    indexed,
                    parallelism,
                    completions,
                    succeeded_total,
                    &completed,
                    wait,
                );
            }
        }
    } else {
        for p in &active {
            d.delete.push(p.name_any());
        }
    }
    let deleting: HashSet<&String> = d.delete.iter().collect();
    let still_active: Vec<&&Pod> = active
        .iter()
        .filter(|p| !deleting.contains(&p.name_any()))
        .collect();
    st.active = Some(i32::try_from(still_active.len() + d.create.len()).unwrap_or(i32::MAX));
    st.ready = Some(
        i32::try_from(
            still_active
                .iter()
                .filter(|p| util::is_pod_ready(p))
                .count(),
        )
        .unwrap_or(0),
    );
    st.terminating = Some(terminating + i32::try_from(deleting.len()).unwrap_or(0));
    d.status = st;
    d
}

#[allow(clippy::too_many_arguments)]
fn plan_pods(
    d: &mut Decision,
    active: &[&Pod],
    indexed: bool,
    parallelism: i32,
    completions: Option<i32>,
    succeeded_total: i32,
    completed: &BTreeSet<i32>,
    wait: Option<Duration>,
) {
    let par = usize::try_from(parallelism).unwrap_or(0);
    if indexed {
        let n = completions.unwrap_or(0);
        let mut seen = BTreeSet::new();
        let mut keep = 0usize;
        let mut sorted: Vec<&&Pod> = active.iter().collect();
        sorted.sort_by_key(|p| pod_index(p));
        for p in sorted {
            match pod_index(p) {
                Some(i) if i < n && !completed.contains(&i) && seen.insert(i) && keep < par => {
                    keep += 1
                }
                _ => d.delete.push(p.name_any()),
            }
        }
        if wait.is_some() && keep < par {
            d.requeue = d.requeue.min(wait).or(wait);
            return;
        }
        for i in 0..n {
            if keep >= par {
                break;
            }
            if !completed.contains(&i) && !seen.contains(&i) {
                d.create.push(Some(i));
                keep += 1;
            }
        }
    } else {
        let want = match completions {
            Some(c) => usize::try_from((c - succeeded_total).max(0))
                .unwrap_or(0)
                .min(par),
            None if succeeded_total > 0 => 0,
            None => par,
        };
        if active.len() > want {
            // Delete the surplus, not-ready pods first, then the newest.
            let mut extra: Vec<&&Pod> = active.iter().collect();
            extra.sort_by_key(|p| {
                (
                    util::is_pod_ready(p),
                    std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                )
            });
            for p in extra.into_iter().take(active.len() - want) {
                d.delete.push(p.name_any());
            }
        } else if active.len() < want {
            if wait.is_some() {
                d.requeue = d.requeue.min(wait).or(wait);
                return;
            }
            d.create
                .extend(std::iter::repeat_n(None, want - active.len()));
        }
    }
}

/// The pod for `job` (with completion `index` for Indexed Jobs).
pub fn new_pod(job: &Job, index: Option<i32>) -> Option<Pod> {
    let spec = job.spec.as_ref()?;
    let name = job.name_any();
    let uid = job.metadata.uid.clone()?;
    let owner = job.controller_owner_ref(&())?;
    let generate = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    let mut pod = util::pod_from_template(
        &spec.template,
        job.namespace().as_deref().unwrap_or("default"),
        None,
        Some(generate),
        owner,
    );
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(CONTROLLER_UID.into(), uid.clone());
    labels.insert(JOB_NAME.into(), name.clone());
    labels.insert(LEGACY_CONTROLLER_UID.into(), uid);
    labels.insert(LEGACY_JOB_NAME.into(), name.clone());
    if let Some(i) = index {
        labels.insert(INDEX_KEY.into(), i.to_string());
        pod.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(INDEX_KEY.into(), i.to_string());
        if let Some(ps) = pod.spec.as_mut()
            && ps.hostname.is_none()
        {
            ps.hostname = Some(format!("{name}-{i}"));
        }
    }
    let fins = pod.metadata.finalizers.get_or_insert_with(Vec::new);
    if !fins.iter().any(|f| f == TRACKING_FINALIZER) {
        fins.push(TRACKING_FINALIZER.into());
    }
    Some(pod)
}

async fn list_pods(pods: &Api<Pod>, job: &Job, uid: &str) -> Result<Vec<Pod>, Error> {
    let lp = ListParams::default().labels(&format!("{CONTROLLER_UID}={uid}"));
    Ok(pods
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| util::is_controlled_by(&p.metadata, uid))
        .chain(
            // Pods of a Job whose template labels lack the uid label: by the Job's own selector.
            match job.spec.as_ref().and_then(|s| s.selector.as_ref()) {
                Some(sel) if !util::selector_string(sel).is_empty() => pods
                    .list(&ListParams::default().labels(&util::selector_string(sel)))
                    .await?
                    .items
                    .into_iter()
                    .filter(|p| {
                        util::is_controlled_by(&p.metadata, uid)
                            && p.labels().get(CONTROLLER_UID).map(String::as_str) != Some(uid)
                    })
                    .collect(),
                _ => Vec::new(),
            },
        )
        .collect())
}

async fn remove_finalizer(pods: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    let rest: Vec<String> = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING_FINALIZER)
        .cloned()
        .collect();
    let patch = serde_json::json!({
        "metadata": { "finalizers": rest, "resourceVersion": pod.metadata.resource_version }
    });
    match pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile(job: Arc<Job>, st: Arc<State>) -> Result<Action, Error> {
    let client = st.ctx.client.clone();
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let Some(uid) = job.metadata.uid.clone() else {
        return Ok(Action::await_change());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    // The cache may not show our last status write yet; counting pods against a stale status
    // would count them twice (or not at all), so read the Job itself.
    let Some(job) = jobs
        .get_opt(&job.name_any())
        .await?
        .filter(|j| j.metadata.uid.as_deref() == Some(uid.as_str()))
    else {
        return Ok(Action::await_change());
    };
    let job = Arc::new(job);
    let owned = list_pods(&pods, &job, &uid).await?;
    if job.metadata.deletion_timestamp.is_some() {
        for p in owned.iter().filter(|p| has_finalizer(p)) {
            remove_finalizer(&pods, p).await?;
        }
        return Ok(Action::await_change());
    }
    let d = decide(&job, &owned, Timestamp::now());

    // 1. Record the status (uncounted pods first, so a pod is never lost).
    if job.status.as_ref() != Some(&d.status) {
        let patch = serde_json::json!({ "status": d.status });
        jobs.patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    // 2. Release the pods whose outcome is recorded.
    let by_name: BTreeMap<String, &Pod> = owned.iter().map(|p| (p.name_any(), p)).collect();
    for name in &d.remove_finalizers {
        if let Some(p) = by_name.get(name) {
            remove_finalizer(&pods, p).await?;
        }
    }
    // 3. Delete and create pods.
    for name in &d.delete {
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                util::publish_event(
                    &st.recorder,
                    job.as_ref(),
                    false,
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted pod: {name}"),
                    Some(util::named_ref("v1", "Pod", &ns, name)),
                )
                .await;
            }
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for index in &d.create {
        let Some(pod) = new_pod(&job, *index) else {
            return Err(Error::Invalid {
                kind: "Job",
                name: format!("{ns}/{}", job.name_any()),
                what: "has no spec or uid".into(),
            });
        };
        util::create_pod_recorded(&pods, &st.recorder, job.as_ref(), &pod).await?;
    }
    for (warning, reason, msg) in d.events {
        util::publish_event(
            &st.recorder,
            job.as_ref(),
            warning,
            reason,
            reason,
            msg,
            None,
        )
        .await;
    }
    Ok(match d.requeue {
        Some(t) => Action::requeue(t),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn job(completions: Option<i32>, parallelism: i32, indexed: bool) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("juid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(1),
                completion_mode: indexed.then(|| "Indexed".into()),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        restart_policy: Some("Never".into()),
                        ..PodSpec::default()
                    }),
                },
                ..JobSpec::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, phase: &str, index: Option<i32>) -> Pod {
        let j = job(None, 1, index.is_some());
        let mut p = new_pod(&j, index).expect("pod");
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        });
        p
    }

    /// Apply a decision's status and the finalizer removals to the world, as the I/O layer does.
    fn apply(j: &mut Job, pods: &mut [Pod], d: &Decision) {
        j.status = Some(d.status.clone());
        for p in pods.iter_mut() {
            if d.remove_finalizers.contains(&p.name_any()) {
                p.metadata.finalizers = Some(vec![]);
            }
        }
    }

    #[test]
    fn creates_up_to_parallelism_and_completes() {
        let now = Timestamp::now();
        let mut j = job(Some(3), 2, false);
        let d = decide(&j, &[], now);
        assert_eq!(d.create, vec![None, None]);
        assert_eq!(d.status.active, Some(2));
        assert!(d.status.start_time.is_some());
        apply(&mut j, &mut [], &d);
        // Two pods succeeded: counted through uncounted, one more created.
        let mut pods = vec![pod("a", "Succeeded", None), pod("b", "Succeeded", None)];
        let d = decide(&j, &pods, now);
        assert_eq!(d.create, vec![None]);
        assert_eq!(
            d.status
                .uncounted_terminated_pods
                .as_ref()
                .and_then(|u| u.succeeded.clone()),
            Some(vec!["uid-a".to_string(), "uid-b".to_string()])
        );
        assert_eq!(d.remove_finalizers.len(), 2);
        apply(&mut j, &mut pods, &d);
        let d = decide(&j, &pods, now);
        assert_eq!(d.status.succeeded, Some(2));
        apply(&mut j, &mut pods, &d);
        pods.push(pod("c", "Succeeded", None));
        let d = decide(&j, &pods, now);
        assert!(cond_true(&d.status, "SuccessCriteriaMet"));
        assert!(
            !cond_true(&d.status, "Complete"),
            "not before the pod is counted"
        );
        apply(&mut j, &mut pods, &d);
        let d = decide(&j, &pods, now);
        assert!(cond_true(&d.status, "Complete"));
        assert_eq!(d.status.succeeded, Some(3));
        assert!(d.status.completion_time.is_some());
        assert!(d.events.iter().any(|e| e.1 == "Completed"));
        assert!(d.create.is_empty());
    }

    #[test]
    fn backoff_limit_fails_the_job() {
        let now = Timestamp::now();
        let mut j = job(Some(1), 1, false);
        let mut pods = vec![pod("a", "Failed", None), pod("b", "Failed", None)];
        let d = decide(&j, &pods, now);
        assert!(cond_true(&d.status, "FailureTarget"));
        apply(&mut j, &mut pods, &d);
        let d = decide(&j, &pods, now);
        let failed = d
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed")
            .expect("Failed condition");
        assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(d.status.failed, Some(2));
        assert!(
            d.events
                .iter()
                .any(|e| e.0 && e.1 == "BackoffLimitExceeded")
        );
    }

    #[test]
    fn failed_pod_is_replaced_after_backoff() {
        let now = Timestamp::now();
        let j = job(Some(1), 1, false);
        let mut p = pod("a", "Failed", None);
        p.metadata.creation_timestamp = Some(Time(now));
        let d = decide(&j, &[p.clone()], now);
        assert!(d.create.is_empty());
        assert!(d.requeue.is_some_and(|r| r <= Duration::from_secs(10)));
        let later = now + k8s_openapi::jiff::SignedDuration::from_secs(11);
        let d = decide(&j, &[p], later);
        assert_eq!(d.create, vec![None]);
    }

    #[test]
    fn deadline_exceeded() {
        let now = Timestamp::now();
        let mut j = job(Some(1), 1, false);
        if let Some(s) = j.spec.as_mut() {
            s.active_deadline_seconds = Some(5);
        }
        j.status = Some(JobStatus {
            start_time: Some(Time(now - k8s_openapi::jiff::SignedDuration::from_secs(6))),
            ..JobStatus::default()
        });
        let running = pod("a", "Running", None);
        let d = decide(&j, std::slice::from_ref(&running), now);
        assert_eq!(d.delete, vec!["a".to_string()]);
        let c = d
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "FailureTarget")
            .expect("target");
        assert_eq!(c.reason.as_deref(), Some("DeadlineExceeded"));
    }

    #[test]
    fn indexed_creates_missing_indexes() {
        let now = Timestamp::now();
        let mut j = job(Some(4), 3, true);
        let mut pods = vec![pod("x", "Succeeded", Some(1)), pod("y", "Running", Some(0))];
        let d = decide(&j, &pods, now);
        assert_eq!(d.create, vec![Some(2), Some(3)]);
        assert_eq!(d.status.completed_indexes.as_deref(), Some("1"));
        apply(&mut j, &mut pods, &d);
        let p = new_pod(&j, Some(2)).expect("pod");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(
            p.annotations().get(INDEX_KEY).map(String::as_str),
            Some("2")
        );
        assert_eq!(p.labels().get(INDEX_KEY).map(String::as_str), Some("2"));
        assert_eq!(p.labels().get(JOB_NAME).map(String::as_str), Some("pi"));
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.hostname.as_deref()),
            Some("pi-2")
        );
        assert_eq!(
            p.metadata.finalizers,
            Some(vec![TRACKING_FINALIZER.to_string()])
        );
    }

    #[test]
    fn suspend_deletes_active_pods() {
        let now = Timestamp::now();
        let mut j = job(Some(2), 2, false);
        if let Some(s) = j.spec.as_mut() {
            s.suspend = Some(true);
        }
        let d = decide(&j, &[pod("a", "Running", None)], now);
        assert_eq!(d.delete, vec!["a".to_string()]);
        assert!(cond_true(&d.status, "Suspended"));
        assert!(d.create.is_empty());
        assert_eq!(d.status.active, Some(0));
    }

    #[test]
    fn pod_failure_policy_fail_job_and_ignore() {
        use k8s_openapi::api::batch::v1::{
            PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
            PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
        };
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition,
        };
        let now = Timestamp::now();
        let mut j = job(Some(1), 1, false);
        if let Some(s) = j.spec.as_mut() {
            s.backoff_limit = Some(6);
            s.pod_failure_policy = Some(PodFailurePolicy {
                rules: vec![
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_exit_codes: None,
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: "True".into(),
                        }]),
                    },
                    PodFailurePolicyRule {
                        action: "FailJob".into(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: None,
                            operator: "In".into(),
                            values: vec![42],
                        }),
                        on_pod_conditions: None,
                    },
                ],
            });
        }
        let exited = |name: &str, code: i32| {
            let mut p = pod(name, "Failed", None);
            if let Some(st) = p.status.as_mut() {
                st.container_statuses = Some(vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]);
            }
            p
        };
        // A disrupted pod is ignored: not counted as failed.
        let mut disrupted = exited("d", 1);
        if let Some(st) = disrupted.status.as_mut() {
            st.conditions = Some(vec![PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]);
        }
        let d = decide(&j, std::slice::from_ref(&disrupted), now);
        let unc = d
            .status
            .uncounted_terminated_pods
            .clone()
            .unwrap_or_default();
        assert_eq!(unc.failed, Some(vec![]));
        assert_eq!(d.remove_finalizers, vec!["d".to_string()]);
        assert!(!cond_true(&d.status, "FailureTarget"));
        // Exit code 42 fails the Job at once.
        let d = decide(&j, &[exited("x", 42)], now);
        let c = d
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "FailureTarget")
            .expect("FailureTarget");
        assert_eq!(c.reason.as_deref(), Some("PodFailurePolicy"));
        assert_eq!(
            c.message.as_deref(),
            Some(
                "Container main for pod default/x failed with exit code 42 matching FailJob rule at index 1"
            )
        );
        // Another exit code just counts.
        let d = decide(&j, &[exited("y", 3)], now);
        assert!(!cond_true(&d.status, "FailureTarget"));
        assert_eq!(
            d.status.uncounted_terminated_pods.and_then(|u| u.failed),
            Some(vec!["uid-y".to_string()])
        );
    }

    #[test]
    fn index_lists() {
        let s = parse_indexes("0,2-4,7");
        assert_eq!(s, BTreeSet::from([0, 2, 3, 4, 7]));
        assert_eq!(format_indexes(&s), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::from([1, 2])), "1-2");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }
}
