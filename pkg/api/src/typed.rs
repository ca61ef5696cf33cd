//! Typed decoding of built-in objects through the `k8s-openapi` types: rejects values of the
//! wrong type and finds fields the schema does not declare (for `fieldValidation`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
    autoscaling::v1 as as1, autoscaling::v2 as as2, batch::v1 as batch, certificates::v1 as certs,
    coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, events::v1 as events,
    networking::v1 as net, node::v1 as node, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as sched, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;

fn roundtrip_as<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

macro_rules! typed_table {
    ($($g:literal, $v:literal, $k:literal => $t:ty;)*) => {
        /// Decode `obj` as the typed `group/version/kind` and encode it again; `None` when the
        /// kind has no built-in type (custom resources).
        pub fn roundtrip(group: &str, version: &str, kind: &str, obj: &Value) -> Option<Result<Value, String>> {
            match (group, version, kind) {
                $(($g, $v, $k) => Some(roundtrip_as::<$t>(obj)),)*
                _ => None,
            }
        }

        /// Add the schema of the typed `group/version/kind` (and everything it references) to
        /// `generator`; returns the schema's name (`io.k8s.api.apps.v1.Deployment`).
        pub fn add_schema(generator: &mut schemars::SchemaGenerator, group: &str, version: &str, kind: &str) -> Option<String> {
            match (group, version, kind) {
                $(($g, $v, $k) => {
                    generator.subschema_for::<$t>();
                    Some(<$t as schemars::JsonSchema>::schema_name().into_owned())
                })*
                _ => None,
            }
        }
    };
}

typed_table! {
    "", "v1", "Binding" => core::Binding;
    "", "v1", "ComponentStatus" => core::ComponentStatus;
    "", "v1", "ConfigMap" => core::ConfigMap;
    "", "v1", "Endpoints" => core::Endpoints;
    "", "v1", "Event" => core::Event;
    "", "v1", "LimitRange" => core::LimitRange;
    "", "v1", "Namespace" => core::Namespace;
    "", "v1", "Node" => core::Node;
    "", "v1", "PersistentVolumeClaim" => core::PersistentVolumeClaim;
    "", "v1", "PersistentVolume" => core::PersistentVolume;
    "", "v1", "Pod" => core::Pod;
    "", "v1", "PodTemplate" => core::PodTemplate;
    "", "v1", "ReplicationController" => core::ReplicationController;
    "", "v1", "ResourceQuota" => core::ResourceQuota;
    "", "v1", "Secret" => core::Secret;
    "", "v1", "ServiceAccount" => core::ServiceAccount;
    "", "v1", "Service" => core::Service;
    "apps", "v1", "ControllerRevision" => apps::ControllerRevision;
    "apps", "v1", "DaemonSet" => apps::DaemonSet;
    "apps", "v1", "Deployment" => apps::Deployment;
    "apps", "v1", "ReplicaSet" => apps::ReplicaSet;
    "apps", "v1", "StatefulSet" => apps::StatefulSet;
    "authentication.k8s.io", "v1", "SelfSubjectReview" => authn::SelfSubjectReview;
    "authentication.k8s.io", "v1", "TokenReview" => authn::TokenReview;
    "authorization.k8s.io", "v1", "LocalSubjectAccessReview" => authz::LocalSubjectAccessReview;
    "authorization.k8s.io", "v1", "SelfSubjectAccessReview" => authz::SelfSubjectAccessReview;
    "authorization.k8s.io", "v1", "SelfSubjectRulesReview" => authz::SelfSubjectRulesReview;
    "authorization.k8s.io", "v1", "SubjectAccessReview" => authz::SubjectAccessReview;
    "autoscaling", "v1", "HorizontalPodAutoscaler" => as1::HorizontalPodAutoscaler;
    "autoscaling", "v1", "Scale" => as1::Scale;
    "autoscaling", "v2", "HorizontalPodAutoscaler" => as2::HorizontalPodAutoscaler;
    "batch", "v1", "CronJob" => batch::CronJob;
    "batch", "v1", "Job" => batch::Job;
    "certificates.k8s.io", "v1", "CertificateSigningRequest" => certs::CertificateSigningRequest;
    "coordination.k8s.io", "v1", "Lease" => coord::Lease;
    "discovery.k8s.io", "v1", "EndpointSlice" => disc::EndpointSlice;
    "events.k8s.io", "v1", "Event" => events::Event;
    "networking.k8s.io", "v1", "IngressClass" => net::IngressClass;
    "networking.k8s.io", "v1", "Ingress" => net::Ingress;
    "networking.k8s.io", "v1", "NetworkPolicy" => net::NetworkPolicy;
    "node.k8s.io", "v1", "RuntimeClass" => node::RuntimeClass;
    "policy", "v1", "PodDisruptionBudget" => policy::PodDisruptionBudget;
    "policy", "v1", "Eviction" => policy::Eviction;
    "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding" => rbac::ClusterRoleBinding;
    "rbac.authorization.k8s.io", "v1", "ClusterRole" => rbac::ClusterRole;
    "rbac.authorization.k8s.io", "v1", "RoleBinding" => rbac::RoleBinding;
    "rbac.authorization.k8s.io", "v1", "Role" => rbac::Role;
    "scheduling.k8s.io", "v1", "PriorityClass" => sched::PriorityClass;
    "storage.k8s.io", "v1", "CSIDriver" => storage::CSIDriver;
    "storage.k8s.io", "v1", "CSINode" => storage::CSINode;
    "storage.k8s.io", "v1", "StorageClass" => storage::StorageClass;
    "storage.k8s.io", "v1", "VolumeAttachment" => storage::VolumeAttachment;
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition" => apiext::CustomResourceDefinition;
}

/// Paths (`spec.template.spec.containers[0].foo`) present in `input` but not in `typed`.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, typed, String::new(), &mut out);
    out
}

fn walk(input: &Value, typed: &Value, path: String, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    Some(tv) => walk(v, tv, p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t.iter()).enumerate() {
                walk(iv, tv, format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_and_type_errors() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "labels": {"x": "y"}},
            "spec": {"replicas": 1, "bogus": true, "selector": {"matchLabels": {"x": "y"}},
              "template": {"metadata": {"labels": {"x": "y"}}, "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always", "extra": 1, "resources": {"limits": {"cpu": "100m"}}}]}}}});
        let t = roundtrip("apps", "v1", "Deployment", &d)
            .expect("typed kind")
            .expect("decodes");
        assert_eq!(
            unknown_fields(&d, &t),
            vec![
                "spec.bogus".to_string(),
                "spec.template.spec.containers[0].extra".to_string()
            ]
        );
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": "three"}});
        assert!(
            roundtrip("apps", "v1", "Deployment", &bad)
                .expect("typed kind")
                .is_err()
        );
        assert!(roundtrip("example.com", "v1", "Widget", &bad).is_none());
    }
}
