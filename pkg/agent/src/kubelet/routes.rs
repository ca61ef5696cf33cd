//! Request dispatch of the kubelet API and plain-text error responses.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

use super::Kubelet;

/// Response body of the kubelet API.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// An error answered as plain text with a status code (as the kubelet does).
#[derive(Debug)]
pub(crate) struct HttpError {
    pub code: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    pub fn into_response(self) -> Response<Body> {
        text(self.code, self.message)
    }
}

/// A plain-text response.
pub(crate) fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Query parameters (repeated keys kept in order).
#[derive(Debug, Default, Clone)]
pub(crate) struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    /// A boolean flag: present with an empty value, `1` or `true`.
    pub fn flag(&self, k: &str) -> bool {
        self.get(k)
            .is_some_and(|v| v.is_empty() || v == "1" || v.eq_ignore_ascii_case("true"))
    }
}

/// What a request path addresses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Healthz,
    Logs {
        ns: String,
        pod: String,
        container: String,
    },
    Exec(Target),
    Attach(Target),
    PortForward {
        ns: String,
        pod: String,
        uid: Option<String>,
    },
    /// `k8slite_api::tunnel::PATH`: a byte tunnel to a pod of this node.
    Tunnel,
}

/// A container of a pod, optionally pinned to a pod UID.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub ns: String,
    pub pod: String,
    pub uid: Option<String>,
    pub container: String,
}

pub(crate) fn parse(path: &str) -> Option<Route> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    if s.iter().any(|x| x.is_empty() || *x == "." || *x == "..") {
        return None;
    }
    let t = |ns: &str, pod: &str, uid: Option<&str>, c: &str| Target {
        ns: ns.into(),
        pod: pod.into(),
        uid: uid.map(str::to_string),
        container: c.into(),
    };
    Some(match s.as_slice() {
        ["healthz"] => Route::Healthz,
        ["k8slite", "tunnel"] => Route::Tunnel,
        ["containerLogs", ns, pod, c] => Route::Logs {
            ns: (*ns).into(),
            pod: (*pod).into(),
            container: (*c).into(),
        },
        ["exec", ns, pod, c] => Route::Exec(t(ns, pod, None, c)),
        ["exec", ns, pod, uid, c] => Route::Exec(t(ns, pod, Some(uid), c)),
        ["attach", ns, pod, c] => Route::Attach(t(ns, pod, None, c)),
        ["attach", ns, pod, uid, c] => Route::Attach(t(ns, pod, Some(uid), c)),
        ["portForward", ns, pod] => Route::PortForward {
            ns: (*ns).into(),
            pod: (*pod).into(),
            uid: None,
        },
        ["portForward", ns, pod, uid] => Route::PortForward {
            ns: (*ns).into(),
            pod: (*pod).into(),
            uid: Some((*uid).into()),
        },
        _ => return None,
    })
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Serve one request.
pub(crate) async fn handle<B>(kubelet: Arc<Kubelet>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body + Send + 'static,
{
    let query = Query::parse(req.uri().query());
    let Some(route) = parse(req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    };
    tracing::debug!(?route, "kubelet API request");
    let result = match route {
        Route::Healthz => Ok(text(StatusCode::OK, "ok")),
        Route::Logs { ns, pod, container } => {
            super::logs::container_logs(&kubelet, &ns, &pod, &container, &query).await
        }
        Route::Exec(t) => super::relay::exec(&kubelet, req, t, &query, false).await,
        Route::Attach(t) => super::relay::exec(&kubelet, req, t, &query, true).await,
        Route::PortForward { ns, pod, uid } => {
            super::relay::port_forward(&kubelet, req, &ns, &pod, uid.as_deref(), &query).await
        }
        Route::Tunnel => super::tunnel::serve(&kubelet, req, &query).await,
    };
    result.unwrap_or_else(HttpError::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/healthz"), Some(Route::Healthz));
        assert_eq!(
            parse("/exec/default/web/u1/app"),
            Some(Route::Exec(Target {
                ns: "default".into(),
                pod: "web".into(),
                uid: Some("u1".into()),
                container: "app".into()
            }))
        );
        assert!(matches!(
            parse("/portForward/default/web"),
            Some(Route::PortForward { uid: None, .. })
        ));
        assert_eq!(parse("/containerLogs/default/../x"), None);
        assert_eq!(parse("/other"), None);
        assert_eq!(parse(k8slite_api::tunnel::PATH), Some(Route::Tunnel));
        let q = Query::parse(Some(
            "command=sh&command=-c&command=echo+hi&stdin=1&tty=false",
        ));
        assert_eq!(q.all("command"), ["sh", "-c", "echo hi"]);
        assert!(q.flag("stdin"));
        assert!(!q.flag("tty"));
    }
}
