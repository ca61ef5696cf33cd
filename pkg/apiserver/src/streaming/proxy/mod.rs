//! `pods/proxy`, `services/proxy` and `nodes/proxy`: any HTTP request (and upgrade) passed on to
//! a pod, a ready endpoint of a service, or a node's kubelet.
//!
//! Pods are reached through the kubelet API of their node (`POST /k8slite/tunnel`, see
//! [`k8slite_api::tunnel`]) so the API server needs no route to the pod network: it already
//! reaches every kubelet. Then one HTTP/1.1 exchange runs over the tunnel (wrapped in TLS,
//! unverified, for `https:` names). `nodes/{name}/proxy` talks to the kubelet API itself.

mod endpoints;
mod forward;
mod location;
mod tls;

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use k8slite_api::ApiError;
use location::{Location, Scheme, Via};
use tokio::io::{AsyncRead, AsyncWrite};

use super::dial::TunnelError;
use crate::ApiServer;
use crate::body::{Body, full};
use crate::handler::ResourceRequest;

/// Whether `plural` has a proxy subresource.
pub(crate) fn serves(plural: &str) -> bool {
    matches!(plural, "pods" | "services" | "nodes")
}

/// A connection to the target.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Serve `{plural}/{name}/proxy[/{path}]` (authorization already done by the caller).
pub(crate) async fn serve<B>(
    server: &Arc<ApiServer>,
    r: &ResourceRequest,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = r.path.proxy_path.clone().unwrap_or_default();
    if path.is_empty() {
        // As upstream: `…/proxy` redirects to `…/proxy/` so relative links resolve.
        return Ok(redirect_with_slash(req.uri()));
    }
    let ns = r.ns().unwrap_or_default();
    let loc = location::resolve(server, &r.info.plural, ns, r.name()).await?;
    let io = dial(server, &loc).await?;
    let target_uri = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let forwarded_uri = req.uri().path().to_string();
    tracing::debug!(via = ?loc.via, %target_uri, "proxying");
    forward::forward(io, &loc.authority(), &target_uri, &forwarded_uri, req).await
}

fn redirect_with_slash(uri: &http::Uri) -> Response<Body> {
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut resp = Response::new(full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Open the connection `loc` describes (TLS included for `https:` targets).
async fn dial(server: &Arc<ApiServer>, loc: &Location) -> Result<Box<dyn Io>, ApiError> {
    let plain: Box<dyn Io> = match loc.via {
        Via::Kubelet(addr) => {
            let dialer = super::dialer(server)?;
            let conn = dialer.connect(addr).await.map_err(kubelet_unreachable)?;
            return Ok(Box::new(conn));
        }
        Via::Tunnel { kubelet, target } => {
            let dialer = super::dialer(server)?;
            match dialer.tunnel(kubelet, target).await {
                Ok(io) => Box::new(io),
                Err(e) => return Err(tunnel_error(kubelet, target, e)),
            }
        }
        Via::Direct(addr) => {
            let tcp = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .map_err(|_| forward::unreachable(format!("dial tcp {addr}: i/o timeout")))?
            .map_err(|e| forward::unreachable(format!("dial tcp {addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            Box::new(tcp)
        }
    };
    if loc.scheme == Scheme::Http {
        return Ok(plain);
    }
    let connector = tls::connector().map_err(|e| ApiError::internal(format!("proxy TLS: {e}")))?;
    let ip = match loc.via {
        Via::Tunnel { target, .. } => target.ip(),
        Via::Kubelet(a) | Via::Direct(a) => a.ip(),
    };
    let tls = connector
        .connect(rustls::pki_types::ServerName::IpAddress(ip.into()), plain)
        .await
        .map_err(|e| forward::unreachable(format!("tls handshake with {ip}: {e}")))?;
    Ok(Box::new(tls))
}

/// A kubelet that cannot be reached: upstream's "error dialing backend" text, as a 503.
fn kubelet_unreachable(e: ApiError) -> ApiError {
    forward::unreachable(e.message)
}

/// The answer to a failed tunnel: the node's dial error as upstream words a failed dial, or
/// the node's refusal as k3s words an egress-proxy error.
fn tunnel_error(
    kubelet: std::net::SocketAddr,
    target: std::net::SocketAddr,
    e: TunnelError,
) -> ApiError {
    match e {
        TunnelError::Kubelet(e) => kubelet_unreachable(e),
        TunnelError::Refused { code: 502, body } => forward::unreachable(body),
        TunnelError::Refused { code, body } => forward::unreachable(format!(
            "proxy error from {kubelet} while dialing {target}, code {code}: {body}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_proxy_paths_redirect_with_a_slash() {
        let uri: http::Uri = "/api/v1/namespaces/default/services/web:80/proxy?x=1"
            .parse()
            .expect("uri");
        let r = redirect_with_slash(&uri);
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            r.headers()[header::LOCATION],
            "/api/v1/namespaces/default/services/web:80/proxy/?x=1"
        );
    }

    #[test]
    fn tunnel_failures_read_like_upstream() {
        let k: std::net::SocketAddr = "192.168.5.2:10250".parse().expect("addr");
        let t: std::net::SocketAddr = "10.42.0.5:80".parse().expect("addr");
        let e = tunnel_error(
            k,
            t,
            TunnelError::Refused {
                code: 502,
                body: "dial tcp 10.42.0.5:80: Connection refused (os error 111)".into(),
            },
        );
        assert_eq!(
            (e.code, e.reason.as_str(), e.message.as_str()),
            (
                503,
                "ServiceUnavailable",
                "error trying to reach service: dial tcp 10.42.0.5:80: Connection refused (os error 111)"
            )
        );
        let e = tunnel_error(
            k,
            t,
            TunnelError::Refused {
                code: 403,
                body: "Forbidden: 10.42.0.5 is not the address of a pod running on this node"
                    .into(),
            },
        );
        assert_eq!(
            e.message,
            "error trying to reach service: proxy error from 192.168.5.2:10250 while dialing \
             10.42.0.5:80, code 403: Forbidden: 10.42.0.5 is not the address of a pod running on this node"
        );
    }
}
