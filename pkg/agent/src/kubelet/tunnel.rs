//! `POST /k8slite/tunnel?ip=…&port=…` with `Upgrade: k8slite-tunnel` (see
//! [`k8slite_api::tunnel`]): a TCP connection from this node to a pod it runs, relayed byte for
//! byte over the upgraded kubelet connection.
//!
//! The API server uses it for the `pods/proxy` and `services/proxy` subresources: it need not
//! be on the pod network (`--disable-agent`, or routes not up yet) since it already reaches
//! every kubelet. Only the address of a pod sandbox this node runs (ready, with an IP) is
//! dialled; anything else is refused with 403 so the tunnel is no open relay. The node dials
//! before answering `101`: a failed dial is a `502` whose text says why
//! (`dial tcp 10.42.0.5:80: Connection refused (os error 111)`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8slite_runtime::{PodSandboxStatus, SandboxState};
use tokio::net::TcpStream;

use super::Kubelet;
use super::routes::{Body, HttpError, Query};

use k8slite_api::tunnel::UPGRADE as TUNNEL_UPGRADE;

/// How long the node tries to connect to the pod.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The target of a tunnel request, validated (method, upgrade, `ip`, `port`).
pub(crate) fn target<B>(req: &Request<B>, q: &Query) -> Result<SocketAddr, HttpError> {
    if req.method() != http::Method::POST {
        return Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "the tunnel needs POST",
        ));
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case(TUNNEL_UPGRADE) {
        return Err(HttpError::bad_request(format!(
            "the tunnel needs Upgrade: {TUNNEL_UPGRADE}"
        )));
    }
    let ip: IpAddr = q
        .get("ip")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| HttpError::bad_request("ip: an IP address is required"))?;
    let port: u16 = q
        .get("port")
        .and_then(|v| v.parse().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| HttpError::bad_request("port: a port in 1-65535 is required"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Whether `ip` is the address of a ready pod sandbox in `sandboxes` (this node's).
pub(crate) fn is_local_pod(sandboxes: &[PodSandboxStatus], ip: IpAddr) -> bool {
    sandboxes.iter().any(|s| {
        s.state == SandboxState::Ready && s.ip.parse::<IpAddr>().is_ok_and(|own| own == ip)
    })
}

/// Serve a tunnel request.
pub(crate) async fn serve<B>(
    kubelet: &Arc<Kubelet>,
    req: Request<B>,
    q: &Query,
) -> Result<Response<Body>, HttpError>
where
    B: Send + 'static,
{
    let addr = target(&req, q)?;
    let sandboxes = kubelet
        .runtime
        .list_pod_sandboxes()
        .await
        .map_err(|e| HttpError::internal(format!("listing pod sandboxes: {e}")))?;
    if !is_local_pod(&sandboxes, addr.ip()) {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden: {} is not the address of a pod running on this node",
                addr.ip()
            ),
        ));
    }
    let tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(HttpError::new(
                StatusCode::BAD_GATEWAY,
                format!("dial tcp {addr}: {e}"),
            ));
        }
        Err(_) => {
            return Err(HttpError::new(
                StatusCode::BAD_GATEWAY,
                format!("dial tcp {addr}: i/o timeout"),
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    tracing::debug!(%addr, "kubelet API: tunnel to a pod");
    let shutdown = kubelet.shutdown.clone();
    tokio::spawn(async move {
        let up = match hyper::upgrade::on(req).await {
            Ok(up) => up,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(up);
        let mut pod = tcp;
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut pod) => {
                if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "tunnel ended");
                }
            }
            _ = shutdown.cancelled() => {}
        }
    });
    let mut resp = Response::new(Empty::new().boxed_unsync());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::UPGRADE,
        http::HeaderValue::from_static(TUNNEL_UPGRADE),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8slite_api::tunnel::PATH as TUNNEL_PATH;
    use k8slite_runtime::PodSandboxMetadata;

    fn sandbox(ip: &str, state: SandboxState) -> PodSandboxStatus {
        PodSandboxStatus {
            id: "s".into(),
            metadata: PodSandboxMetadata::default(),
            state,
            created_at: 0,
            ip: ip.into(),
            labels: Default::default(),
        }
    }

    #[test]
    fn only_ready_local_pods_are_reachable() {
        let s = [
            sandbox("10.42.0.5", SandboxState::Ready),
            sandbox("10.42.0.6", SandboxState::NotReady),
            sandbox("", SandboxState::Ready),
        ];
        let ip = |x: &str| x.parse::<IpAddr>().expect("ip");
        assert!(is_local_pod(&s, ip("10.42.0.5")));
        assert!(!is_local_pod(&s, ip("10.42.0.6")), "stopped sandbox");
        assert!(!is_local_pod(&s, ip("10.42.0.7")), "not on this node");
        assert!(!is_local_pod(&s, ip("127.0.0.1")), "the node itself");
        assert!(!is_local_pod(&[], ip("10.42.0.5")));
    }

    fn req(method: &str, upgrade: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(TUNNEL_PATH);
        if let Some(u) = upgrade {
            b = b.header(header::UPGRADE, u);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn tunnel_requests_are_validated() {
        let q = Query::parse(Some("ip=10.42.0.5&port=80"));
        assert_eq!(
            target(&req("POST", Some(TUNNEL_UPGRADE)), &q).expect("valid"),
            "10.42.0.5:80".parse().expect("addr")
        );
        let code = |r: Result<SocketAddr, HttpError>| r.expect_err("refused").code;
        assert_eq!(
            code(target(&req("GET", Some(TUNNEL_UPGRADE)), &q)),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            code(target(&req("POST", None), &q)),
            StatusCode::BAD_REQUEST
        );
        for bad in [
            "ip=x&port=80",
            "ip=10.42.0.5&port=0",
            "ip=10.42.0.5",
            "port=80",
        ] {
            assert_eq!(
                code(target(
                    &req("POST", Some(TUNNEL_UPGRADE)),
                    &Query::parse(Some(bad))
                )),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
