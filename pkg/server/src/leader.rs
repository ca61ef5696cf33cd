//! Leader election over a `coordination.k8s.io/v1` Lease: only the server holding it runs the
//! controllers and the scheduler. A single server acquires it at once; with several (HA later)
//! the others wait until the holder stops renewing.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

/// Name of the Lease in `kube-system`.
pub const LEASE_NAME: &str = "k8slite-controllers";
/// How long a Lease is valid without renewal.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews (and others retry).
const RETRY: Duration = Duration::from_secs(2);

/// Try once to acquire or renew the Lease for `identity`; true when we hold it afterwards.
async fn try_acquire(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    match api.get_opt(LEASE_NAME).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(0, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let cur = lease.spec.clone().unwrap_or_default();
            let ours = cur.holder_identity.as_deref() == Some(identity);
            let expired = cur.renew_time.as_ref().is_none_or(|t| {
                let secs = i64::from(cur.lease_duration_seconds.unwrap_or(15));
                now.as_second() - t.0.as_second() > secs
            });
            if !ours && !expired {
                return Ok(false);
            }
            let transitions = cur.lease_transitions.unwrap_or(0) + i32::from(!ours);
            lease.spec = Some(spec(
                transitions,
                if ours { cur.acquire_time } else { None },
            ));
            // The resourceVersion makes this a compare-and-swap: a rival's write wins cleanly.
            match api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Hold the Lease as `identity` and run `lead(token)` while holding it; `token` is cancelled
/// when leadership is lost or `shutdown` fires. Returns at shutdown.
pub async fn run<F, Fut>(
    client: kube::Client,
    identity: String,
    shutdown: CancellationToken,
    lead: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, "kube-system");
    let mut leading: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
    let mut last_renew = std::time::Instant::now();
    loop {
        let held = match try_acquire(&api, &identity).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "leader lease: renewing failed");
                // Keep leading until the lease would have expired for others.
                leading.is_some() && last_renew.elapsed() < LEASE_DURATION - RETRY
            }
        };
        match (held, leading.is_some()) {
            (true, false) => {
                tracing::info!(%identity, "leader lease acquired; starting controllers and scheduler");
                let token = shutdown.child_token();
                let handle = tokio::spawn(lead(token.clone()));
                leading = Some((token, handle));
                last_renew = std::time::Instant::now();
            }
            (true, true) => last_renew = std::time::Instant::now(),
            (false, true) => {
                tracing::warn!("leader lease lost; stopping controllers and scheduler");
                if let Some((token, handle)) = leading.take() {
                    token.cancel();
                    let _ = handle.await;
                }
            }
            (false, false) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
    if let Some((token, handle)) = leading.take() {
        token.cancel();
        let _ = handle.await;
    }
}
