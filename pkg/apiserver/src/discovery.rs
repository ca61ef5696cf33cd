//! Discovery: `/version`, legacy (`/api`, `/apis`, group, group/version) and aggregated
//! (`apidiscovery.k8s.io` v2 and v2beta1) documents, all from the registry.

use http::{Response, StatusCode};
use k8slite_api::{ApiError, Registry, ResourceInfo};
use serde_json::{Value, json};

use crate::ApiServerConfig;
use crate::body::{Body, error_response, json_bytes, json_response};
use crate::route::Route;

pub use k8slite_api::KUBE_VERSION;

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("{KUBE_VERSION}+k8slite.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Which aggregated discovery version the client accepts first, if any.
fn aggregated(accept: &str) -> Option<&'static str> {
    for range in accept.split(',') {
        let r = range.replace(' ', "");
        if !r.contains("as=APIGroupDiscoveryList") || !r.contains("g=apidiscovery.k8s.io") {
            if r.starts_with("application/json") || r.starts_with("*/*") {
                return None;
            }
            continue;
        }
        if r.contains("v=v2beta1") {
            return Some("v2beta1");
        }
        if r.contains("v=v2") {
            return Some("v2");
        }
    }
    None
}

fn verbs(r: &ResourceInfo) -> Value {
    json!(r.verbs)
}

fn legacy_resources(list: &[std::sync::Arc<ResourceInfo>]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in list {
        let mut e = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": verbs(r),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for s in &r.subresources {
            let mut e = json!({
                "name": format!("{}/{}", r.plural, s.name), "singularName": "", "namespaced": r.namespaced,
                "kind": s.kind, "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                e["group"] = json!(s.group);
                e["version"] = json!(s.version);
            }
            out.push(e);
        }
    }
    out
}

fn aggregated_version(group: &str, version: &str, list: &[std::sync::Arc<ResourceInfo>]) -> Value {
    let resources: Vec<Value> = list
        .iter()
        .map(|r| {
            let mut e = json!({
                "resource": r.plural,
                "responseKind": {"group": group, "version": version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": verbs(r),
            });
            if !r.short_names.is_empty() {
                e["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                e["categories"] = json!(r.categories);
            }
            if !r.subresources.is_empty() {
                e["subresources"] = Value::Array(
                    r.subresources
                        .iter()
                        .map(|s| json!({"subresource": s.name, "responseKind": {"group": s.group, "version": s.version, "kind": s.kind}, "verbs": s.verbs}))
                        .collect(),
                );
            }
            e
        })
        .collect();
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

fn aggregated_list(reg: &Registry, legacy: bool, v: &str) -> Value {
    let mut items = Vec::new();
    if legacy {
        let core = reg.in_group_version("", "v1");
        items.push(
            json!({"metadata": {"name": ""}, "versions": [aggregated_version("", "v1", &core)]}),
        );
    } else {
        for (g, versions) in reg.groups() {
            let vs: Vec<Value> = versions
                .iter()
                .map(|ver| aggregated_version(&g, ver, &reg.in_group_version(&g, ver)))
                .collect();
            items.push(json!({"metadata": {"name": g}, "versions": vs}));
        }
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{v}"), "metadata": {}, "items": items})
}

fn group_json(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": g, "versions": vs, "preferredVersion": preferred})
}

/// Answer a discovery route.
pub fn respond(
    reg: &Registry,
    route: &Route,
    accept: &str,
    cfg: &ApiServerConfig,
) -> Response<Body> {
    match route {
        Route::LegacyRoot | Route::GroupsRoot => {
            let legacy = matches!(route, Route::LegacyRoot);
            if let Some(v) = aggregated(accept) {
                let body = serde_json::to_vec(&aggregated_list(reg, legacy, v)).unwrap_or_default();
                let ct: &'static str = if v == "v2" {
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
                } else {
                    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
                };
                return json_bytes(StatusCode::OK, body, ct);
            }
            if legacy {
                let addr = format!("{}:{}", cfg.advertise_address, cfg.secure_port);
                json_response(
                    StatusCode::OK,
                    &json!({
                        "kind": "APIVersions", "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
                    }),
                )
            } else {
                let groups: Vec<Value> = reg
                    .groups()
                    .iter()
                    .map(|(g, vs)| group_json(g, vs))
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                )
            }
        }
        Route::Group(g) => match reg.groups().into_iter().find(|(name, _)| name == g) {
            Some((name, vs)) => {
                let mut v = group_json(&name, &vs);
                v["kind"] = json!("APIGroup");
                v["apiVersion"] = json!("v1");
                json_response(StatusCode::OK, &v)
            }
            None => error_response(&ApiError::path_not_found()),
        },
        Route::GroupVersion(g, v) => {
            if !reg.has_group_version(g, v) {
                return error_response(&ApiError::path_not_found());
            }
            let gv = if g.is_empty() {
                v.clone()
            } else {
                format!("{g}/{v}")
            };
            json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": legacy_resources(&reg.in_group_version(g, v)),
                }),
            )
        }
        _ => error_response(&ApiError::path_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_accept() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated(kubectl), Some("v2"));
        assert_eq!(aggregated("application/json"), None);
        assert_eq!(
            aggregated("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"),
            Some("v2beta1")
        );
    }

    #[test]
    fn legacy_lists_subresources() {
        let reg = Registry::builtin();
        let res = legacy_resources(&reg.in_group_version("apps", "v1"));
        let scale = res
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .expect("scale listed");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
    }
}
