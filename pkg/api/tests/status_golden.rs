//! Status bodies byte for byte as kube-apiserver writes them (Go's `metav1.Status` field order,
//! `omitempty`, HTML escaping, the encoder's trailing newline). The expected bytes are upstream's,
//! not ours: each comes from a published kube-apiserver response (the Kubernetes API
//! conventions, issue 11's capture, responses quoted in public bug reports and chart READMEs) or
//! from upstream's message constants (`OptimisticLockErrorMsg`, the RFC 1123 validation text),
//! laid out as `apierrors.New*` builds them.
#![allow(clippy::unwrap_used)]

use k8slite_api::ApiError;
use k8slite_api::gojson;
use k8slite_api::validation::{NameRule, validate_name};

fn body(e: &ApiError) -> String {
    String::from_utf8(gojson::to_vec(&e.to_status()).unwrap()).unwrap()
}

#[test]
fn not_found_404() {
    // API conventions, "Response Status Kind" (pods "grafana"), compact as served.
    assert_eq!(
        body(&ApiError::not_found("", "pods", "grafana")),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"grafana\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"grafana\",\"kind\":\"pods\"},\"code\":404}\n"
    );
    // A grouped resource keeps its group in the details (a public 404 capture).
    assert_eq!(
        body(&ApiError::not_found(
            "hive.openshift.io",
            "clusterdeployments",
            "foobar"
        )),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"clusterdeployments.hive.openshift.io \\\"foobar\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"foobar\",\"group\":\"hive.openshift.io\",\"kind\":\"clusterdeployments\"},\"code\":404}\n"
    );
}

#[test]
fn already_exists_409() {
    // Issue 11: what upstream sends to the Python client's second create_from_yaml.
    assert_eq!(
        body(&ApiError::already_exists("", "services", "mock-2")),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"services \\\"mock-2\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"mock-2\",\"kind\":\"services\"},\"code\":409}\n"
    );
}

#[test]
fn conflict_409() {
    assert_eq!(
        body(&ApiError::conflict(
            "apps",
            "deployments",
            "web",
            "the object has been modified; please apply your changes to the latest version and try again"
        )),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Operation cannot be fulfilled on deployments.apps \\\"web\\\": the object has been modified; please apply your changes to the latest version and try again\",\"reason\":\"Conflict\",\"details\":{\"name\":\"web\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":409}\n"
    );
}

#[test]
fn invalid_422_with_causes() {
    let causes = validate_name("Bad_Name", NameRule::Subdomain, "metadata.name");
    let msg = "Invalid value: \\\"Bad_Name\\\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    assert_eq!(
        body(&ApiError::invalid("", "ConfigMap", "Bad_Name", causes)),
        format!(
            "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"ConfigMap \\\"Bad_Name\\\" is invalid: metadata.name: {msg}\",\"reason\":\"Invalid\",\"details\":{{\"name\":\"Bad_Name\",\"kind\":\"ConfigMap\",\"causes\":[{{\"reason\":\"FieldValueInvalid\",\"message\":\"{msg}\",\"field\":\"metadata.name\"}}]}},\"code\":422}}\n"
        )
    );
}

#[test]
fn forbidden_403() {
    // Quoted from a real API server's answer to a service account without RBAC (a chart README).
    assert_eq!(
        body(&ApiError::forbidden(
            "system:serviceaccount:prefect:prefect-worker",
            "get",
            "",
            "namespaces",
            Some("kube-system"),
            Some("kube-system"),
        )),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"namespaces \\\"kube-system\\\" is forbidden: User \\\"system:serviceaccount:prefect:prefect-worker\\\" cannot get resource \\\"namespaces\\\" in API group \\\"\\\" in the namespace \\\"kube-system\\\"\",\"reason\":\"Forbidden\",\"details\":{\"name\":\"kube-system\",\"kind\":\"namespaces\"},\"code\":403}\n"
    );
    // A create (no name) of a grouped resource (quoted from a public bug report).
    assert_eq!(
        body(&ApiError::forbidden(
            "system:serviceaccount:default:default",
            "create",
            "extensions.agents.x-k8s.io",
            "sandboxclaims",
            None,
            Some("default"),
        )),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"sandboxclaims.extensions.agents.x-k8s.io is forbidden: User \\\"system:serviceaccount:default:default\\\" cannot create resource \\\"sandboxclaims\\\" in API group \\\"extensions.agents.x-k8s.io\\\" in the namespace \\\"default\\\"\",\"reason\":\"Forbidden\",\"details\":{\"group\":\"extensions.agents.x-k8s.io\",\"kind\":\"sandboxclaims\"},\"code\":403}\n"
    );
    // A non-resource path: empty details, still present (nmap's capture of an API server).
    assert_eq!(
        body(&ApiError::forbidden_path("system:anonymous", "get", "/x")),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"forbidden: User \\\"system:anonymous\\\" cannot get path \\\"/x\\\"\",\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n"
    );
}

#[test]
fn gone_410() {
    assert_eq!(
        body(&ApiError::gone(
            "too old resource version: 379140622 (380367990)"
        )),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource version: 379140622 (380367990)\",\"reason\":\"Expired\",\"code\":410}\n"
    );
}

#[test]
fn internal_500_repeats_its_cause_and_escapes_html() {
    // NewInternalError: the message again as the only cause (a public capture of a 500).
    assert_eq!(
        body(&ApiError::internal(
            "replace operation does not apply: doc is missing path: /a"
        )),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Internal error occurred: replace operation does not apply: doc is missing path: /a\",\"reason\":\"InternalError\",\"details\":{\"causes\":[{\"message\":\"replace operation does not apply: doc is missing path: /a\"}]},\"code\":500}\n"
    );
    // Go's encoder escapes <, > and &.
    let e = ApiError::bad_request("a <b> & c");
    assert_eq!(
        body(&e),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"a \\u003cb\\u003e \\u0026 c\",\"reason\":\"BadRequest\",\"code\":400}\n"
    );
    // An unknown path: empty details.
    assert_eq!(
        body(&ApiError::path_not_found()),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"the server could not find the requested resource\",\"reason\":\"NotFound\",\"details\":{},\"code\":404}\n"
    );
}
