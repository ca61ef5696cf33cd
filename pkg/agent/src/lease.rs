//! The node Lease in `kube-node-lease`: named after the node, owned by the Node object, renewed
//! every `lease_renew_interval` (upstream: 10 s, a quarter of the 40 s duration). The server's
//! node-lifecycle controller reads `renewTime` to tell live nodes from silent ones.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::{AgentConfig, Error, Result};

/// Namespace of node Leases.
pub const NAMESPACE: &str = "kube-node-lease";

/// The Lease `cfg`'s node holds, renewed at `now`, keeping `existing`'s metadata.
pub fn renewed(
    cfg: &AgentConfig,
    node_uid: &str,
    existing: Option<Lease>,
    now: Timestamp,
) -> Lease {
    let mut lease = existing.unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    if !node_uid.is_empty()
        && lease
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty())
    {
        lease.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: cfg.node_name.clone(),
            uid: node_uid.to_string(),
            ..OwnerReference::default()
        }]);
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(cfg.node_name.clone());
    spec.lease_duration_seconds = Some(i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(40));
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// Create or renew the Lease once.
pub async fn renew_once(api: &Api<Lease>, cfg: &AgentConfig, node_uid: &str) -> Result<Lease> {
    let name = &cfg.node_name;
    let existing = match api.get_opt(name).await {
        Ok(l) => l,
        Err(e) => return Err(Error::kube(format!("reading lease {NAMESPACE}/{name}"))(e)),
    };
    let create = existing.is_none();
    let lease = renewed(cfg, node_uid, existing, Timestamp::now());
    let res = if create {
        api.create(&PostParams::default(), &lease).await
    } else {
        api.replace(name, &PostParams::default(), &lease).await
    };
    res.map_err(Error::kube(format!("renewing lease {NAMESPACE}/{name}")))
}

/// Renew the Lease every `lease_renew_interval` until `shutdown`. Failures are retried sooner
/// (upstream retries at 200 ms doubling up to 7 s).
pub async fn run(
    client: kube::Client,
    cfg: Arc<AgentConfig>,
    node_uid: String,
    shutdown: CancellationToken,
) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let mut retry = Duration::from_millis(200);
    loop {
        let wait = match renew_once(&api, &cfg, &node_uid).await {
            Ok(_) => {
                retry = Duration::from_millis(200);
                cfg.lease_renew_interval
            }
            Err(e) => {
                tracing::warn!(node = %cfg.node_name, "{e}");
                let w = retry;
                retry = (retry * 2).min(Duration::from_secs(7));
                w.min(cfg.lease_renew_interval)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_held_by_the_node_and_owned_by_it() {
        let cfg = AgentConfig::new("node-1");
        let t0 = Timestamp::from_second(1_700_000_000).expect("ts");
        let l = renewed(&cfg, "uid-1", None, t0);
        assert_eq!(l.metadata.name.as_deref(), Some("node-1"));
        assert_eq!(l.metadata.namespace.as_deref(), Some(NAMESPACE));
        let spec = l.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("node-1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(t0)));
        let owner = &l.metadata.owner_references.clone().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "uid-1"));
        let t1 = Timestamp::from_second(1_700_000_010).expect("ts");
        let l2 = renewed(&cfg, "uid-1", Some(l), t1);
        assert_eq!(l2.spec.expect("spec").renew_time, Some(MicroTime(t1)));
        assert_eq!(l2.metadata.owner_references.map(|o| o.len()), Some(1));
    }
}
