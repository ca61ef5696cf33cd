//! ReplicationController controller: the same core as the ReplicaSet controller
//! ([`crate::replicaset::core`]), with the RC's map selector (defaulting to the template's
//! labels).

use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use tokio_util::sync::CancellationToken;

use crate::replicaset::core::{self, ReplicaOwner};
use crate::{Ctx, Error};

impl ReplicaOwner for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn label_selector(&self) -> Option<LabelSelector> {
        let spec = self.spec.as_ref()?;
        let labels = spec
            .selector
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| spec.template.as_ref()?.metadata.as_ref()?.labels.clone())?;
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
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
    core::run::<ReplicationController>(ctx, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ReplicationControllerSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    #[test]
    fn selector_defaults_to_template_labels() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let rc = ReplicationController {
            spec: Some(ReplicationControllerSpec {
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                }),
                ..ReplicationControllerSpec::default()
            }),
            ..ReplicationController::default()
        };
        assert_eq!(
            rc.label_selector().and_then(|s| s.match_labels),
            Some(labels)
        );
        assert_eq!(rc.desired_replicas(), 1);
    }
}
