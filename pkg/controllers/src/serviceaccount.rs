//! ServiceAccount controller: a `default` ServiceAccount in every active namespace, recreated
//! when it is deleted.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error};

/// Name of the ServiceAccount every namespace gets.
pub const DEFAULT_SA: &str = "default";

/// Whether namespace `ns` should have a default ServiceAccount created now.
pub fn wants_default_sa(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p != "Terminating")
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !wants_default_sa(&ns) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    if api.get_opt(DEFAULT_SA).await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SA.into()),
                namespace: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::info!(namespace = name, "created the default service account"),
            // exists already, or the namespace started terminating meanwhile
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(error = %err, "serviceaccount: reconcile failed");
    Action::requeue(Duration::from_secs(1))
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let client = ctx.client.clone();
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceAccount>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SA}")),
        |sa| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
    )
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile, error_policy, Arc::new(ctx))
    .for_each(|_| async {})
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;

    #[test]
    fn only_active_namespaces_get_one() {
        let mut ns = Namespace::default();
        assert!(wants_default_sa(&ns));
        ns.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..NamespaceStatus::default()
        });
        assert!(!wants_default_sa(&ns));
    }
}
