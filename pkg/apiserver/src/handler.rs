//! Request dispatch: authentication result → route → authorization → handler.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Body as HttpBody;
use k8slite_api::{ApiError, ResourceInfo};
use tracing::Instrument;

use crate::ApiServer;
use crate::authz::{Attributes, Decision, Identity};
use crate::body::{Body, error_response, json_response, text_response};
use crate::codec::read_body;
use crate::query::Query;
use crate::route::{ResourcePath, Route, parse};

/// What the server negotiated to send back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Plain JSON objects.
    Json,
    /// `as=Table` (meta.k8s.io/v1 or v1beta1).
    Table(&'static str),
    /// `as=PartialObjectMetadata[List]`.
    Metadata(&'static str),
    /// YAML.
    Yaml,
}

/// Pick the response form from an `Accept` header (first supported media range wins).
pub(crate) fn negotiate(accept: &str) -> Result<Output, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let base = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut as_ = "";
        let mut v = "";
        let mut g = "";
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = val.trim(),
                    "v" => v = val.trim(),
                    "g" => g = val.trim(),
                    _ => {}
                }
            }
        }
        match base.as_str() {
            "application/json" | "*/*" | "application/*" | "application/json-seq" => {}
            "application/yaml" if as_.is_empty() => return Ok(Output::Yaml),
            _ => continue,
        }
        match (as_, g, v) {
            ("", _, _) => return Ok(Output::Json),
            ("Table", "meta.k8s.io", "v1") => return Ok(Output::Table("meta.k8s.io/v1")),
            ("Table", "meta.k8s.io", "v1beta1") => return Ok(Output::Table("meta.k8s.io/v1beta1")),
            ("PartialObjectMetadata" | "PartialObjectMetadataList", "meta.k8s.io", "v1") => {
                return Ok(Output::Metadata("meta.k8s.io/v1"));
            }
            ("PartialObjectMetadata" | "PartialObjectMetadataList", "meta.k8s.io", "v1beta1") => {
                return Ok(Output::Metadata("meta.k8s.io/v1beta1"));
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// A request to a resource, parsed.
#[derive(Clone)]
pub(crate) struct ResourceRequest {
    pub info: Arc<ResourceInfo>,
    pub path: ResourcePath,
    pub query: Query,
    pub identity: Identity,
    pub output: Output,
    pub content_type: String,
    pub user_agent: String,
    pub verb: &'static str,
}

impl ResourceRequest {
    /// Namespace of the request (URL).
    pub fn ns(&self) -> Option<&str> {
        self.path.namespace.as_deref()
    }
    /// Name in the URL.
    pub fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or_default()
    }
    /// Subresource in the URL.
    pub fn sub(&self) -> Option<&str> {
        self.path.subresource.as_deref()
    }
    /// The body of a subresource or review request, in its declared media type (JSON when the
    /// header is absent or unknown).
    pub fn decode_body(&self, body: &[u8]) -> Result<serde_json::Value, ApiError> {
        let media = crate::codec::MediaType::from_header(&self.content_type)
            .unwrap_or(crate::codec::MediaType::Json);
        crate::codec::decode(body, media)
    }

    /// Whether this is a server-side apply.
    pub fn applying(&self) -> bool {
        self.verb == "patch"
            && crate::codec::MediaType::from_header(&self.content_type)
                == Some(crate::codec::MediaType::ApplyPatch)
    }

    /// Field manager: `fieldManager` or the user agent's program name.
    pub fn field_manager(&self) -> String {
        match self.query.get("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self
                .user_agent
                .split('/')
                .next()
                .unwrap_or("unknown")
                .to_string(),
        }
    }
}

fn verb_for(method: &Method, has_name: bool, watch: bool) -> Option<&'static str> {
    Some(match (method.as_str(), has_name, watch) {
        ("GET" | "HEAD", _, true) => "watch",
        ("GET" | "HEAD", true, false) => "get",
        ("GET" | "HEAD", false, false) => "list",
        ("POST", _, _) => "create",
        ("PUT", true, _) => "update",
        ("PATCH", true, _) => "patch",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        _ => return None,
    })
}

impl ApiServer {
    /// Serve one request from an authenticated (or not) client.
    pub async fn handle<B>(
        self: &Arc<Self>,
        req: Request<B>,
        identity: Option<Identity>,
    ) -> Response<Body>
    where
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let span = tracing::debug_span!("request", %method, %path);
        let (verb, resource, resp) = self.dispatch(req, identity).instrument(span).await;
        let code = resp.status().as_u16();
        self.metrics.observe(verb, &resource, code, start.elapsed());
        tracing::debug!(%method, %path, code, elapsed_ms = start.elapsed().as_secs_f64() * 1e3, "served");
        resp
    }

    async fn dispatch<B>(
        self: &Arc<Self>,
        req: Request<B>,
        identity: Option<Identity>,
    ) -> (&'static str, String, Response<Body>)
    where
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // Agents fetch the CA bundle before they trust the server (pinned by their token's hash).
        if let (true, Some(pem)) = (req.uri().path() == "/cacerts", &self.config.cacerts) {
            let resp = Response::builder()
                .header(http::header::CONTENT_TYPE, "application/x-pem-file")
                .body(crate::body::full(bytes::Bytes::from(pem.to_string())));
            if let Ok(resp) = resp {
                return ("get", String::new(), resp);
            }
        }
        // Agents trade the join token for node certificates (token checked by the signer).
        if req.uri().path() == k8slite_pki::NODE_CERTS_PATH
            && let Some(signer) = self.node_certs.get()
        {
            let signer = signer.clone();
            return (
                "create",
                "node-certs".to_string(),
                crate::join::serve(signer.as_ref(), req).await,
            );
        }
        let identity = match identity {
            Some(id) => Some(id),
            None => match crate::authn::bearer_token(req.headers()).map(str::to_string) {
                Some(t) => self.authenticate_token(&t).await,
                None => None,
            },
        };
        let registry = self.registry();
        let route = match parse(req.uri().path(), |g, v, p| {
            registry.get(g, v, p).is_some_and(|r| r.namespaced)
        }) {
            Ok(r) => r,
            Err(e) => {
                return match identity {
                    None => ("", String::new(), error_response(&ApiError::unauthorized())),
                    Some(_) => ("", String::new(), error_response(&e)),
                };
            }
        };
        // Health endpoints answer without credentials (probes); everything else needs them.
        if let Route::Health(check) = &route {
            return ("get", String::new(), self.health(check).await);
        }
        let Some(identity) = identity else {
            return ("", String::new(), error_response(&ApiError::unauthorized()));
        };
        let Route::Resource(rp) = route else {
            let attrs = Attributes {
                verb: "get".into(),
                path: req.uri().path().to_string(),
                ..Default::default()
            };
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return (
                    "",
                    String::new(),
                    error_response(&ApiError::method_not_allowed(
                        req.method().as_str(),
                        req.uri().path(),
                    )),
                );
            }
            if self.authorizer.authorize(&identity, &attrs) == Decision::Deny {
                let e = ApiError::forbidden_path(
                    &identity.user,
                    &req.method().as_str().to_ascii_lowercase(),
                    req.uri().path(),
                );
                return ("get", String::new(), error_response(&e));
            }
            let accept = header_str(&req, header::ACCEPT);
            return (
                "get",
                String::new(),
                self.non_resource(&route, &accept).await,
            );
        };
        let query = Query::parse(req.uri().query());
        let Some(info) = registry.get(&rp.group, &rp.version, &rp.plural) else {
            return (
                "",
                String::new(),
                error_response(&ApiError::path_not_found()),
            );
        };
        // A proxy's query belongs to the target: `?watch=` there is no watch here.
        let watch = (rp.legacy_watch || query.flag("watch")) && rp.proxy_path.is_none();
        let Some(verb) = verb_for(req.method(), rp.name.is_some(), watch) else {
            return (
                "",
                info.plural.clone(),
                error_response(&ApiError::method_not_allowed(
                    req.method().as_str(),
                    &info.plural,
                )),
            );
        };
        let resource_label = match &rp.subresource {
            Some(s) => format!("{}/{s}", info.group_resource()),
            None => info.group_resource(),
        };
        let attrs = Attributes {
            verb: verb.to_string(),
            group: info.group.clone(),
            resource: info.plural.clone(),
            subresource: rp.subresource.clone().unwrap_or_default(),
            namespace: rp.namespace.clone(),
            name: rp.name.clone(),
            path: String::new(),
        };
        if self.authorizer.authorize(&identity, &attrs) == Decision::Deny {
            let resource = match &rp.subresource {
                Some(sub) => format!("{}/{sub}", info.plural),
                None => info.plural.clone(),
            };
            let e = ApiError::forbidden(
                &identity.user,
                verb,
                &info.group,
                &resource,
                rp.name.as_deref(),
                rp.namespace.as_deref(),
            );
            return (verb, resource_label, error_response(&e));
        }
        let output = match negotiate(&header_str(&req, header::ACCEPT)) {
            Ok(o) => o,
            Err(e) => return (verb, resource_label, error_response(&e)),
        };
        let rr = ResourceRequest {
            info,
            path: rp,
            query,
            identity,
            output,
            content_type: header_str(&req, header::CONTENT_TYPE),
            user_agent: header_str(&req, header::USER_AGENT),
            verb,
        };
        if crate::streaming::is_streaming(&rr.info.plural, rr.sub()) && rr.info.group.is_empty() {
            return (
                verb,
                resource_label,
                crate::streaming::handle(self, rr, req).await,
            );
        }
        let body = if matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) {
            match read_body(req.into_body(), self.config.max_body_bytes).await {
                Ok(b) => b,
                Err(e) => return (verb, resource_label, error_response(&e)),
            }
        } else {
            Bytes::new()
        };
        let resp = match self.resource(rr, body).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        (verb, resource_label, resp)
    }

    async fn resource(
        self: &Arc<Self>,
        r: ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        if let Some(sub) = r.sub()
            && r.info.subresource(sub).is_none()
        {
            return Err(ApiError::path_not_found());
        }
        if !r.info.has_verb(r.verb) && r.sub().is_none() {
            return Err(ApiError::method_not_allowed(r.verb, &r.info.plural));
        }
        if r.info.namespaced && r.ns().is_none() && !matches!(r.verb, "list" | "watch") {
            return Err(ApiError::path_not_found());
        }
        match (r.verb, r.sub()) {
            ("get" | "list", None) if r.info.kind == "ComponentStatus" => {
                self.component_statuses(&r).await
            }
            ("get", None | Some("status" | "approval")) => self.get(&r).await,
            ("get", Some("scale")) => self.get_scale(&r).await,
            ("list", _) => self.list(&r).await,
            ("watch", _) => self.watch(&r).await,
            ("create", None) if !r.info.stored => self.review(&r, body).await,
            ("create", None) => self.create(&r, body).await,
            ("create", Some("binding")) => self.bind(&r, body).await,
            ("create", Some("eviction")) => self.evict(&r, body).await,
            ("create", Some("token")) => self.create_token(&r, body).await,
            ("update", None | Some("status" | "finalize" | "approval")) => {
                self.update(&r, body).await
            }
            ("update", Some("scale")) => self.update_scale(&r, body).await,
            ("patch", None | Some("status" | "approval")) => self.patch(&r, body).await,
            ("patch", Some("scale")) => self.patch_scale(&r, body).await,
            ("delete", None) => self.delete(&r, body).await,
            ("deletecollection", None) => self.delete_collection(&r, body).await,
            (verb, Some(sub)) => Err(ApiError::method_not_allowed(
                verb,
                &format!("{}/{sub}", r.info.plural),
            )),
            (verb, None) => Err(ApiError::method_not_allowed(verb, &r.info.plural)),
        }
    }

    async fn health(&self, check: &str) -> Response<Body> {
        let ok = match self.store.current_revision().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "health check: datastore not answering");
                false
            }
        };
        let ok = ok && !(check.starts_with("readyz") && self.shutdown.is_cancelled());
        if ok {
            text_response(StatusCode::OK, "ok", "text/plain; charset=utf-8")
        } else {
            text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("[-]{check} failed"),
                "text/plain; charset=utf-8",
            )
        }
    }

    async fn non_resource(&self, route: &Route, accept: &str) -> Response<Body> {
        match route {
            Route::Version => json_response(StatusCode::OK, &crate::discovery::version()),
            Route::Metrics => self.metrics_response().await,
            Route::OpenApiV2 => crate::openapi::v2(accept),
            Route::OpenApiV3(path) => self.openapi_v3(path.as_deref()).await,
            Route::LegacyRoot | Route::GroupsRoot | Route::Group(_) | Route::GroupVersion(..) => {
                crate::discovery::respond(&self.registry(), route, accept, &self.config)
            }
            Route::Health(_) | Route::Resource(_) => error_response(&ApiError::path_not_found()),
        }
    }
}

fn header_str<B>(req: &Request<B>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(kubectl).expect("ok"),
            Output::Table("meta.k8s.io/v1")
        );
        assert_eq!(negotiate("application/json").expect("ok"), Output::Json);
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf, */*").expect("ok"),
            Output::Json
        );
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf")
                .expect_err("406")
                .code,
            406
        );
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
                .expect("ok"),
            Output::Metadata("meta.k8s.io/v1")
        );
    }
}
