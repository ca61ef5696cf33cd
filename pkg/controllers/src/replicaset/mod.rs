//! ReplicaSet controller: keeps `spec.replicas` pods from the template, adopts matching orphans,
//! releases pods that stop matching, reports status and the `ReplicaFailure` condition. The
//! core ([`core`]) is shared with the ReplicationController controller.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error};

pub mod core;
pub mod logic;

impl core::ReplicaOwner for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn label_selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }

    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
}

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    core::run::<ReplicaSet>(ctx, shutdown).await
}
