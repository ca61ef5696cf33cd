//! TTL-after-finished controller: deletes a finished Job (`Complete` or `Failed`) once
//! `ttlSecondsAfterFinished` have passed since it finished, with Background propagation so the
//! garbage collector removes its pods.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error, job, util};

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let jobs = Api::<Job>::all(ctx.client.clone());
    Controller::new(jobs, watcher::Config::default())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "ttl-after-finished reconcile");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_job: Arc<Job>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(error = %err, "ttl-after-finished failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// When the Job expires: its finish time (completionTime, else the finishing condition's
/// transition) plus its TTL. `None` when it has no TTL, is not finished, or is being deleted.
pub fn expires_at(j: &Job) -> Option<Timestamp> {
    if j.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = j.spec.as_ref()?.ttl_seconds_after_finished?;
    let cond = job::finished_condition(j)?;
    let finished = cond
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))?;
    Some(finished + SignedDuration::from_secs(i64::from(ttl)))
}

async fn reconcile(j: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(at) = expires_at(&j) else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    if now < at {
        let left = at.duration_since(now).unsigned_abs();
        return Ok(Action::requeue(left + Duration::from_millis(100)));
    }
    let ns = j.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: j.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    tracing::info!(job = %j.name_any(), namespace = %ns, "deleting finished job past its ttl");
    match api.delete(&j.name_any(), &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if util::is_not_found(&e) || util::is_conflict(&e) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn expiry() {
        let t0 = Timestamp::from_second(1_000_000).expect("ts");
        let mut j = Job {
            spec: Some(JobSpec {
                ttl_seconds_after_finished: Some(30),
                ..JobSpec::default()
            }),
            ..Job::default()
        };
        assert_eq!(expires_at(&j), None, "not finished");
        j.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                last_transition_time: Some(Time(t0)),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
        assert_eq!(expires_at(&j), Some(t0 + SignedDuration::from_secs(30)));
        if let Some(s) = j.spec.as_mut() {
            s.ttl_seconds_after_finished = None;
        }
        assert_eq!(expires_at(&j), None, "no ttl");
    }
}
