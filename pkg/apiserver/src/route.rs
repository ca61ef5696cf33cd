//! URL paths → what they address.

use k8slite_api::ApiError;

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/healthz`, `/livez`, `/readyz` (and their `/…/<check>` forms).
    Health(String),
    /// `/metrics`
    Metrics,
    /// `/openapi/v2`
    OpenApiV2,
    /// `/openapi/v3` (index) or `/openapi/v3/<api|apis/group>/<version>`.
    OpenApiV3(Option<String>),
    /// `/api`
    LegacyRoot,
    /// `/apis`
    GroupsRoot,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`
    GroupVersion(String, String),
    /// A resource path.
    Resource(ResourcePath),
}

/// A path under a group/version that addresses resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the URL.
    pub namespace: Option<String>,
    /// Resource plural.
    pub plural: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub subresource: Option<String>,
    /// Legacy `/watch/` prefix used.
    pub legacy_watch: bool,
    /// For a `proxy` subresource: the rest of the path after `/proxy`, as sent (still
    /// percent-encoded; `""` for `…/proxy`, `"/"` for `…/proxy/`).
    pub proxy_path: Option<String>,
}

fn segment_ok(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('%') && s.len() <= 253
}

/// Parse a request path. `is_namespaced(group, version, plural)` tells which plural names a
/// namespaced resource, to tell `/api/v1/namespaces/x/pods` from `/api/v1/namespaces/x/status`.
pub fn parse(
    path: &str,
    is_namespaced: impl Fn(&str, &str, &str) -> bool,
) -> Result<Route, ApiError> {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let not_found = ApiError::path_not_found;
    match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        [h @ ("healthz" | "livez" | "readyz"), rest @ ..] => {
            return Ok(Route::Health(if rest.is_empty() {
                (*h).to_string()
            } else {
                format!("{h}/{}", rest.join("/"))
            }));
        }
        ["metrics"] => return Ok(Route::Metrics),
        ["openapi", "v2"] => return Ok(Route::OpenApiV2),
        ["openapi", "v3"] => return Ok(Route::OpenApiV3(None)),
        ["openapi", "v3", rest @ ..] => return Ok(Route::OpenApiV3(Some(rest.join("/")))),
        ["api"] => return Ok(Route::LegacyRoot),
        ["apis"] => return Ok(Route::GroupsRoot),
        ["apis", g] => return Ok(Route::Group((*g).to_string())),
        ["api", "v1"] => return Ok(Route::GroupVersion(String::new(), "v1".into())),
        ["apis", g, v] => return Ok(Route::GroupVersion((*g).to_string(), (*v).to_string())),
        _ => {}
    }
    let (group, version, mut rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let mut rp = ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        ..Default::default()
    };
    if let ["watch", r @ ..] = rest {
        rp.legacy_watch = true;
        rest = r;
    }
    // /namespaces/<ns>/<plural>/... when <plural> is a namespaced resource.
    if let ["namespaces", ns, plural, r @ ..] = rest
        && is_namespaced(group, version, plural)
    {
        rp.namespace = Some((*ns).to_string());
        rp.plural = (*plural).to_string();
        return finish(rp, r, path.ends_with('/'));
    }
    match rest {
        [plural, r @ ..] => {
            rp.plural = (*plural).to_string();
            finish(rp, r, path.ends_with('/'))
        }
        _ => Err(not_found()),
    }
}

fn finish(mut rp: ResourcePath, rest: &[&str], trailing_slash: bool) -> Result<Route, ApiError> {
    match rest {
        [] => {}
        [name] => rp.name = Some((*name).to_string()),
        // `…/{name}/proxy[/{path}]`: the path goes to the proxied server as sent.
        [name, "proxy", path @ ..] if !rp.legacy_watch => {
            rp.name = Some((*name).to_string());
            rp.subresource = Some("proxy".to_string());
            let mut p: String = path.iter().map(|s| format!("/{s}")).collect();
            if trailing_slash {
                p.push('/');
            }
            rp.proxy_path = Some(p);
        }
        [name, sub] => {
            rp.name = Some((*name).to_string());
            rp.subresource = Some((*sub).to_string());
        }
        _ => return Err(ApiError::path_not_found()),
    }
    let all_ok = segment_ok(&rp.plural)
        && rp.name.as_deref().is_none_or(segment_ok)
        && rp.namespace.as_deref().is_none_or(segment_ok)
        && rp.subresource.as_deref().is_none_or(segment_ok);
    if !all_ok {
        return Err(ApiError::path_not_found());
    }
    Ok(Route::Resource(rp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(_: &str, _: &str, p: &str) -> bool {
        matches!(p, "pods" | "configmaps" | "deployments")
    }

    #[test]
    fn paths() {
        let r = parse("/api/v1/namespaces/default/pods/web/status", ns).expect("route");
        let Route::Resource(rp) = r else {
            panic!("not a resource route")
        };
        assert_eq!(rp.namespace.as_deref(), Some("default"));
        assert_eq!(rp.plural, "pods");
        assert_eq!(rp.name.as_deref(), Some("web"));
        assert_eq!(rp.subresource.as_deref(), Some("status"));

        let Route::Resource(rp) =
            parse("/api/v1/namespaces/kube-system/finalize", ns).expect("route")
        else {
            panic!()
        };
        assert_eq!(
            (
                rp.plural.as_str(),
                rp.name.as_deref(),
                rp.subresource.as_deref()
            ),
            ("namespaces", Some("kube-system"), Some("finalize"))
        );

        let Route::Resource(rp) = parse("/apis/apps/v1/deployments", ns).expect("route") else {
            panic!()
        };
        assert_eq!((rp.group.as_str(), rp.namespace.clone()), ("apps", None));

        let Route::Resource(rp) = parse("/api/v1/watch/namespaces/a/pods", ns).expect("route")
        else {
            panic!()
        };
        assert!(rp.legacy_watch);
        assert_eq!(
            parse("/apis/apps", ns).expect("route"),
            Route::Group("apps".into())
        );
        assert!(parse("/api/v1/pods/a/b/c/d", ns).is_err());
        assert!(parse("/api/v1/watch/nodes/n/proxy/x", ns).is_err());
        assert!(parse("/garbage", ns).is_err());
        assert!(parse("/api/v1/namespaces/../pods", ns).is_err());
    }

    fn proxy(path: &str) -> (Option<String>, Option<String>, Option<String>) {
        let Ok(Route::Resource(rp)) = parse(path, |_, _, p| p == "services" || p == "pods") else {
            panic!("{path}: not a resource route")
        };
        (rp.name, rp.subresource, rp.proxy_path)
    }

    #[test]
    fn proxy_paths() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            proxy("/api/v1/namespaces/default/services/http:web:80/proxy/"),
            (s("http:web:80"), s("proxy"), s("/"))
        );
        assert_eq!(
            proxy("/api/v1/namespaces/default/pods/p:8080/proxy"),
            (s("p:8080"), s("proxy"), s(""))
        );
        assert_eq!(
            proxy("/api/v1/nodes/n1/proxy/stats/a%20b/"),
            (s("n1"), s("proxy"), s("/stats/a%20b/"))
        );
        assert_eq!(
            proxy("/api/v1/nodes/n1:10255/proxy/healthz"),
            (s("n1:10255"), s("proxy"), s("/healthz"))
        );
        assert_eq!(proxy("/api/v1/nodes/n1/status").2, None);
    }
}
