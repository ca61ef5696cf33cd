//! CronJob controller: creates a Job `<cronjob>-<scheduled time in minutes since the epoch>`
//! at each time of a standard 5-field cron schedule (or `@hourly`, `@daily`, …; parsed by
//! `croner` with seconds and years disallowed), evaluated in `timeZone` (jiff's tz database;
//! local time of the server when unset, UTC here). Honours `concurrencyPolicy`
//! (Allow/Forbid/Replace), `suspend`, `startingDeadlineSeconds`, and trims finished Jobs beyond
//! `successfulJobsHistoryLimit`/`failedJobsHistoryLimit`. Requeues itself at the next time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, TimeZone as _, Timelike};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error, job, util};

/// Annotation with the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Missed start times beyond which upstream warns (`TooManyMissedTimes`).
const MAX_MISSED: usize = 100;

/// A parsed schedule in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: k8s_openapi::jiff::tz::TimeZone,
}

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("unparseable schedule: {0:?} : {1}")]
    Unparseable(String, String),
    /// The time zone is unknown.
    #[error("unknown time zone {0}")]
    UnknownTimeZone(String),
}

fn to_chrono(
    ts: Timestamp,
    tz: &k8s_openapi::jiff::tz::TimeZone,
) -> Option<chrono::DateTime<chrono::Utc>> {
    // The civil time in the zone, as if it were UTC: croner then works in civil time.
    let c = ts.to_zoned(tz.clone()).datetime();
    let naive = chrono::NaiveDate::from_ymd_opt(
        i32::from(c.year()),
        u32::try_from(c.month()).ok()?,
        u32::try_from(c.day()).ok()?,
    )?
    .and_hms_opt(
        u32::try_from(c.hour()).ok()?,
        u32::try_from(c.minute()).ok()?,
        u32::try_from(c.second()).ok()?,
    )?;
    Some(chrono::Utc.from_utc_datetime(&naive))
}

fn from_chrono(
    dt: chrono::DateTime<chrono::Utc>,
    tz: &k8s_openapi::jiff::tz::TimeZone,
) -> Option<Timestamp> {
    let n = dt.naive_utc();
    let civil = k8s_openapi::jiff::civil::DateTime::new(
        i16::try_from(n.year()).ok()?,
        i8::try_from(n.month()).ok()?,
        i8::try_from(n.day()).ok()?,
        i8::try_from(n.hour()).ok()?,
        i8::try_from(n.minute()).ok()?,
        i8::try_from(n.second()).ok()?,
        0,
    )
    .ok()?;
    tz.to_ambiguous_zoned(civil)
        .compatible()
        .ok()
        .map(|z| z.timestamp())
}

impl Schedule {
    /// Parse a standard cron expression evaluated in `time_zone` (UTC when `None`).
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expr)
            .map_err(|e| ScheduleError::Unparseable(expr.to_string(), e.to_string()))?;
        let tz = match time_zone {
            None => k8s_openapi::jiff::tz::TimeZone::UTC,
            Some(name) => k8s_openapi::jiff::tz::TimeZone::get(name)
                .map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))?,
        };
        Ok(Self { cron, tz })
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let mut from = t;
        for _ in 0..3 {
            let c = to_chrono(from, &self.tz)?;
            let next = self.cron.find_next_occurrence(&c, false).ok()?;
            let ts = from_chrono(next, &self.tz)?;
            if ts > t {
                return Some(ts);
            }
            // A DST fold mapped the civil time back: look past it.
            from += SignedDuration::from_secs(3600);
        }
        None
    }

    /// The latest scheduled time in `(earliest, now]` and how many times there are in it
    /// (counted up to `MAX_MISSED + 1`).
    pub fn most_recent(&self, earliest: Timestamp, now: Timestamp) -> (Option<Timestamp>, usize) {
        let Some(first) = self.next_after(earliest) else {
            return (None, 0);
        };
        if first > now {
            return (None, 0);
        }
        let mut count = 1;
        let mut last = first;
        while count <= MAX_MISSED {
            match self.next_after(last) {
                Some(n) if n <= now => {
                    last = n;
                    count += 1;
                }
                _ => return (Some(last), count),
            }
        }
        // Too many to walk: the most recent is the latest time at or before `now`.
        let latest = to_chrono(now, &self.tz)
            .and_then(|c| self.cron.find_previous_occurrence(&c, true).ok())
            .and_then(|p| from_chrono(p, &self.tz))
            .filter(|p| *p <= now)
            .unwrap_or(last);
        (Some(latest), count)
    }

    /// The zone's RFC 3339 rendering of `t` (for the scheduled-timestamp annotation).
    pub fn format(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace("+00:00", "Z")
    }
}

/// Name of the Job for the time `t`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, t: Timestamp) -> String {
    format!("{cronjob}-{}", t.as_second().div_euclid(60))
}

/// What the schedule asks for at `now` (pure).
#[derive(Debug, PartialEq)]
pub enum Due {
    /// Start a Job for this time.
    Start(Timestamp),
    /// The time was missed past `startingDeadlineSeconds`.
    TooLate(Timestamp),
    /// Nothing due.
    Nothing,
}

/// What is due for `cj` at `now`, with how many start times were missed.
pub fn due(cj: &CronJob, sched: &Schedule, now: Timestamp) -> (Due, usize) {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    if let Some(d) = spec.starting_deadline_seconds {
        let floor = now - SignedDuration::from_secs(d);
        if earliest < floor {
            earliest = floor;
        }
    }
    let (recent, missed) = sched.most_recent(earliest, now);
    let Some(t) = recent else {
        return (Due::Nothing, 0);
    };
    if let Some(d) = spec.starting_deadline_seconds
        && t + SignedDuration::from_secs(d) < now
    {
        return (Due::TooLate(t), missed);
    }
    (Due::Start(t), missed)
}

/// Finished Jobs to delete beyond the history limits, oldest first (pure).
pub fn to_trim(jobs: &[Job], successful_limit: i32, failed_limit: i32) -> Vec<String> {
    let mut ok: Vec<&Job> = Vec::new();
    let mut failed: Vec<&Job> = Vec::new();
    for j in jobs {
        match job::finished_condition(j).map(|c| c.type_.as_str()) {
            Some("Complete") => ok.push(j),
            Some("Failed") => failed.push(j),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (mut list, limit) in [(ok, successful_limit), (failed, failed_limit)] {
        list.sort_by_key(|j| {
            (
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0),
                j.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        let keep = usize::try_from(limit.max(0)).unwrap_or(0);
        let excess = list.len().saturating_sub(keep);
        out.extend(list.into_iter().take(excess).map(|j| j.name_any()));
    }
    out
}

/// The Job for the scheduled time `t`.
pub fn new_job(cj: &CronJob, sched: &Schedule, t: Timestamp) -> Option<Job> {
    let spec = cj.spec.as_ref()?;
    let tmpl = &spec.job_template;
    let tmeta = tmpl.metadata.clone().unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), sched.format(t));
    Some(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), t)),
            namespace: cj.namespace(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![cj.controller_owner_ref(&())?]),
            ..ObjectMeta::default()
        },
        spec: tmpl.spec.clone(),
        status: None,
    })
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        field_path: None,
    }
}

struct State {
    ctx: Ctx,
    recorder: Recorder,
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let cjs = Api::<CronJob>::all(ctx.client.clone());
    let jobs = Api::<Job>::all(ctx.client.clone());
    let state = Arc::new(State {
        recorder: ctx.recorder("cronjob-controller"),
        ctx,
    });
    Controller::new(cjs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cronjob reconcile");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_cj: Arc<CronJob>, err: &Error, _st: Arc<State>) -> Action {
    tracing::debug!(error = %err, "cronjob reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(cj: Arc<CronJob>, st: Arc<State>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = st.ctx.client.clone();
    let ns = cj.namespace().unwrap_or_else(|| "default".into());
    let name = cj.name_any();
    let Some(uid) = cj.metadata.uid.clone() else {
        return Ok(Action::await_change());
    };
    let spec = cj.spec.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(client, &ns);
    let rec = &st.recorder;
    let cjr = cj.as_ref();

    let children: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| util::is_controlled_by(&j.metadata, &uid))
        .collect();
    let old_status = cj.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let by_uid: BTreeMap<String, &Job> = children
        .iter()
        .filter_map(|j| Some((j.metadata.uid.clone()?, j)))
        .collect();

    // Active list: drop finished and vanished Jobs, add running children.
    let mut active: Vec<ObjectReference> = Vec::new();
    for r in old_status.active.iter().flatten() {
        let Some(j) = r.uid.as_ref().and_then(|u| by_uid.get(u)) else {
            continue;
        };
        if let Some(c) = job::finished_condition(j) {
            util::publish_event(
                rec,
                cjr,
                false,
                "SawCompletedJob",
                "Sync",
                format!(
                    "Saw completed job: {}, condition: {}",
                    j.name_any(),
                    c.type_
                ),
                Some(util::obj_ref("batch/v1", "Job", *j)),
            )
            .await;
            continue;
        }
        active.push(r.clone());
    }
    for j in &children {
        if job::is_finished(j) || j.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if !active.iter().any(|r| r.uid == j.metadata.uid) {
            active.push(job_ref(j));
        }
    }
    if let Some(last_ok) = children
        .iter()
        .filter(|j| job::finished_condition(j).is_some_and(|c| c.type_ == "Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .max()
        && status
            .last_successful_time
            .as_ref()
            .is_none_or(|t| t.0 < last_ok)
    {
        status.last_successful_time = Some(Time(last_ok));
    }

    // History limits.
    for jname in to_trim(
        &children,
        spec.successful_jobs_history_limit.unwrap_or(3),
        spec.failed_jobs_history_limit.unwrap_or(1),
    ) {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match jobs_api.delete(&jname, &dp).await {
            Ok(_) => {
                util::publish_event(
                    rec,
                    cjr,
                    false,
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted job {jname}"),
                    Some(util::named_ref("batch/v1", "Job", &ns, &jname)),
                )
                .await
            }
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }

    let now = Timestamp::now();
    let mut requeue = None;
    match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Err(e) => {
            let reason = match e {
                ScheduleError::Unparseable(..) => "UnparseableSchedule",
                ScheduleError::UnknownTimeZone(_) => "UnknownTimeZone",
            };
            util::publish_event(rec, cjr, true, reason, "Schedule", e.to_string(), None).await;
        }
        Ok(sched) => {
            if spec.suspend != Some(true) {
                let (due, missed) = due(&cj, &sched, now);
                if missed > MAX_MISSED {
                    util::publish_event(rec, cjr, true, "TooManyMissedTimes", "Schedule", format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"), None).await;
                }
                match due {
                    Due::Nothing => {}
                    Due::TooLate(t) => {
                        util::publish_event(
                            rec,
                            cjr,
                            true,
                            "MissSchedule",
                            "Schedule",
                            format!("Missed scheduled time to start a job: {}", sched.format(t)),
                            None,
                        )
                        .await;
                        status.last_schedule_time = Some(Time(t));
                    }
                    Due::Start(t) => {
                        let jname = job_name(&name, t);
                        let exists = children.iter().any(|j| j.name_any() == jname);
                        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                        if exists {
                            status.last_schedule_time = Some(Time(t));
                        } else if policy == "Forbid" && !active.is_empty() {
                            util::publish_event(rec, cjr, false, "JobAlreadyActive", "Schedule", "Not starting job because prior execution is running and concurrency policy is Forbid".into(), None).await;
                        } else {
                            if policy == "Replace" {
                                for r in std::mem::take(&mut active) {
                                    let Some(jn) = r.name.clone() else { continue };
                                    let dp = DeleteParams {
                                        propagation_policy: Some(PropagationPolicy::Background),
                                        ..DeleteParams::default()
                                    };
                                    match jobs_api.delete(&jn, &dp).await {
                                        Ok(_) => {
                                            util::publish_event(
                                                rec,
                                                cjr,
                                                false,
                                                "SuccessfulDelete",
                                                "Delete",
                                                format!("Deleted job {jn}"),
                                                Some(util::named_ref("batch/v1", "Job", &ns, &jn)),
                                            )
                                            .await
                                        }
                                        Err(e) if util::is_not_found(&e) => {}
                                        Err(e) => return Err(e.into()),
                                    }
                                }
                            }
                            let j = new_job(&cj, &sched, t).ok_or(Error::Invalid {
                                kind: "CronJob",
                                name: format!("{ns}/{name}"),
                                what: "has no spec or uid".into(),
                            })?;
                            match jobs_api.create(&PostParams::default(), &j).await {
                                Ok(created) => {
                                    util::publish_event(
                                        rec,
                                        cjr,
                                        false,
                                        "SuccessfulCreate",
                                        "Create",
                                        format!("Created job {jname}"),
                                        Some(util::obj_ref("batch/v1", "Job", &created)),
                                    )
                                    .await;
                                    active.push(job_ref(&created));
                                }
                                Err(e) if util::is_conflict(&e) => {}
                                Err(e) => {
                                    util::publish_event(
                                        rec,
                                        cjr,
                                        true,
                                        "FailedCreate",
                                        "Create",
                                        format!("Error creating job: {e}"),
                                        None,
                                    )
                                    .await;
                                    return Err(e.into());
                                }
                            }
                            status.last_schedule_time = Some(Time(t));
                        }
                    }
                }
                requeue = sched
                    .next_after(now)
                    .map(|n| n.duration_since(now).unsigned_abs() + Duration::from_millis(100));
            }
        }
    }
    status.active = if active.is_empty() {
        None
    } else {
        Some(active)
    };
    if status != old_status {
        // `active` must be able to become empty: send it explicitly.
        let mut patch = serde_json::json!({ "status": status });
        if status.active.is_none()
            && let Some(s) = patch.get_mut("status").and_then(|s| s.as_object_mut())
        {
            s.insert("active".into(), serde_json::Value::Null);
        }
        cj_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus, JobCondition, JobStatus};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn cj(schedule: &str, created: &str) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("hello".into()),
                namespace: Some("default".into()),
                uid: Some("cuid".into()),
                creation_timestamp: Some(Time(ts(created))),
                ..ObjectMeta::default()
            },
            spec: Some(CronJobSpec {
                schedule: schedule.into(),
                ..CronJobSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn standard_syntax_and_nicknames() {
        let s = Schedule::parse("*/5 * * * *", None).expect("parse");
        assert_eq!(
            s.next_after(ts("2025-01-01T00:02:00Z")),
            Some(ts("2025-01-01T00:05:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2025-01-01T00:05:00Z")),
            Some(ts("2025-01-01T00:10:00Z"))
        );
        let h = Schedule::parse("@hourly", None).expect("parse");
        assert_eq!(
            h.next_after(ts("2025-01-01T00:02:00Z")),
            Some(ts("2025-01-01T01:00:00Z"))
        );
        // Sunday is 0 (POSIX): 2025-01-05 is a Sunday.
        let sun = Schedule::parse("30 6 * * 0", None).expect("parse");
        assert_eq!(
            sun.next_after(ts("2025-01-01T00:00:00Z")),
            Some(ts("2025-01-05T06:30:00Z"))
        );
        assert!(
            Schedule::parse("0 */5 * * * *", None).is_err(),
            "six fields are not standard"
        );
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(matches!(
            Schedule::parse("* * * * *", Some("Mars/Olympus")),
            Err(ScheduleError::UnknownTimeZone(_))
        ));
    }

    #[test]
    fn time_zone() {
        let s = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).expect("parse");
        // 09:00 in Berlin in winter is 08:00 UTC, in summer 07:00 UTC.
        assert_eq!(
            s.next_after(ts("2025-01-10T12:00:00Z")),
            Some(ts("2025-01-11T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2025-07-10T12:00:00Z")),
            Some(ts("2025-07-11T07:00:00Z"))
        );
        assert_eq!(
            s.format(ts("2025-01-11T08:00:00Z")),
            "2025-01-11T09:00:00+01:00"
        );
    }

    #[test]
    fn due_times_and_deadline() {
        let c = cj("*/1 * * * *", "2025-01-01T00:00:30Z");
        let s = Schedule::parse("*/1 * * * *", None).expect("parse");
        assert_eq!(due(&c, &s, ts("2025-01-01T00:00:50Z")), (Due::Nothing, 0));
        assert_eq!(
            due(&c, &s, ts("2025-01-01T00:03:10Z")),
            (Due::Start(ts("2025-01-01T00:03:00Z")), 3)
        );
        let mut c2 = c.clone();
        c2.status = Some(CronJobStatus {
            last_schedule_time: Some(Time(ts("2025-01-01T00:03:00Z"))),
            ..CronJobStatus::default()
        });
        assert_eq!(due(&c2, &s, ts("2025-01-01T00:03:40Z")), (Due::Nothing, 0));
        // A deadline of 10 s: at 00:03:20 the 00:03 run is too late.
        if let Some(sp) = c.clone().spec.as_mut() {
            sp.starting_deadline_seconds = Some(10);
            let mut c3 = c.clone();
            c3.spec = Some(sp.clone());
            assert_eq!(due(&c3, &s, ts("2025-01-01T00:03:20Z")).0, Due::Nothing);
            assert_eq!(
                due(&c3, &s, ts("2025-01-01T00:03:05Z")).0,
                Due::Start(ts("2025-01-01T00:03:00Z"))
            );
        }
        // Many missed times: the most recent one is found, the count says "too many".
        let (d, missed) = due(&c, &s, ts("2025-01-02T00:00:10Z"));
        assert_eq!(d, Due::Start(ts("2025-01-02T00:00:00Z")));
        assert!(missed > MAX_MISSED);
    }

    #[test]
    fn job_names_and_annotation() {
        let c = cj("*/1 * * * *", "2025-01-01T00:00:00Z");
        let s = Schedule::parse("*/1 * * * *", None).expect("parse");
        let t = ts("2025-01-01T00:03:00Z");
        assert_eq!(
            job_name("hello", t),
            format!("hello-{}", t.as_second() / 60)
        );
        let j = new_job(&c, &s, t).expect("job");
        assert_eq!(
            j.annotations().get(SCHEDULED_TIMESTAMP).map(String::as_str),
            Some("2025-01-01T00:03:00Z")
        );
        assert_eq!(j.owner_references()[0].kind, "CronJob");
    }

    #[test]
    fn history_trimming() {
        let mk = |name: &str, cond: &str, start: &str| Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(JobStatus {
                start_time: Some(Time(ts(start))),
                conditions: (!cond.is_empty()).then(|| {
                    vec![JobCondition {
                        type_: cond.into(),
                        status: "True".into(),
                        ..JobCondition::default()
                    }]
                }),
                ..JobStatus::default()
            }),
        };
        let jobs = vec![
            mk("ok3", "Complete", "2025-01-01T00:03:00Z"),
            mk("ok1", "Complete", "2025-01-01T00:01:00Z"),
            mk("ok2", "Complete", "2025-01-01T00:02:00Z"),
            mk("f1", "Failed", "2025-01-01T00:01:30Z"),
            mk("f2", "Failed", "2025-01-01T00:02:30Z"),
            mk("running", "", "2025-01-01T00:00:00Z"),
        ];
        assert_eq!(
            to_trim(&jobs, 2, 1),
            vec!["ok1".to_string(), "f1".to_string()]
        );
        assert_eq!(to_trim(&jobs, 0, 0).len(), 5);
        assert!(to_trim(&jobs, 3, 2).is_empty());
    }
}
