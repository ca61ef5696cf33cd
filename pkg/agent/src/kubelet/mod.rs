//! The kubelet API on :10250 (TLS; only the server's client certificate is accepted):
//! containerLogs, exec, attach, portForward — proxied to the runtime's streaming server.
//!
//! Routes (as the kubelet's): `GET /containerLogs/{ns}/{pod}/{container}` (`follow`,
//! `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes`, `previous`),
//! `/exec/{ns}/{pod}[/{uid}]/{container}?command=…&stdin&stdout&stderr&tty`,
//! `/attach/{ns}/{pod}[/{uid}]/{container}`, `/portForward/{ns}/{pod}[/{uid}]?port=…`, `/healthz`,
//! and k8slite's own `POST /k8slite/tunnel?ip=…&port=…` (`tunnel`: a byte tunnel to a pod of
//! this node for the API server's `pods/proxy` and `services/proxy`).
//! exec, attach and portForward are WebSocket upgrades (`v4.channel.k8s.io`, or
//! `v5.channel.k8s.io` for exec/attach); each session gets a one-shot URL from the runtime
//! (`ContainerRuntime::exec`/`attach`/`port_forward`). exec/attach sessions talk SPDY/3.1 to
//! it (`spdy`, `bridge`: stdin can be closed there), falling back to WebSocket v4 when the
//! streaming server refuses the SPDY upgrade; port-forward frames are relayed over WebSocket.

mod bridge;
mod logs;
mod relay;
mod resolve;
mod routes;
mod spdy;
mod tls;
mod tunnel;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8slite_runtime::ContainerRuntime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Settings of the kubelet API server.
#[derive(Clone)]
pub struct KubeletServerConfig {
    /// Listening address (`0.0.0.0:10250` by default).
    pub addr: SocketAddr,
    /// Serving certificate chain (PEM), issued by the server CA for the node's addresses.
    pub serving_cert_pem: String,
    /// Its private key (PEM).
    pub serving_key_pem: String,
    /// CA (PEM) that client certificates must chain to (the cluster's client CA).
    pub client_ca_pem: String,
    /// Root of the CRI pod log directories (`/var/log/pods`).
    pub log_root: PathBuf,
}

impl std::fmt::Debug for KubeletServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletServerConfig")
            .field("addr", &self.addr)
            .field("log_root", &self.log_root)
            .finish_non_exhaustive()
    }
}

/// Group a client certificate must carry to use the kubelet API (the API server's
/// kubelet-client certificate is `kube-apiserver-kubelet-client` in `system:masters`).
pub const ALLOWED_GROUP: &str = "system:masters";

/// What failed in the kubelet API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The TLS configuration could not be built from the given PEMs.
    #[error("kubelet API TLS configuration: {0}")]
    Tls(String),
    /// Binding the listener failed.
    #[error("binding the kubelet API on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Shared state of the handlers.
pub(crate) struct Kubelet {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub log_root: PathBuf,
    pub shutdown: CancellationToken,
}

/// Serve the kubelet API on `cfg.addr` until `shutdown`.
pub async fn serve(
    cfg: KubeletServerConfig,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<(), KubeletError> {
    let listener = TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| KubeletError::Bind {
            addr: cfg.addr,
            source,
        })?;
    serve_on(listener, cfg, runtime, shutdown).await
}

/// [`serve`] on an already bound listener (`cfg.addr` is ignored).
pub async fn serve_on(
    listener: TcpListener,
    cfg: KubeletServerConfig,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<(), KubeletError> {
    let tls = tls::server_config(&cfg)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let kubelet = Arc::new(Kubelet {
        runtime,
        log_root: cfg.log_root.clone(),
        shutdown: shutdown.clone(),
    });
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "kubelet API listening");
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let kubelet = kubelet.clone();
        tokio::spawn(async move { serve_conn(kubelet, acceptor, tcp, peer).await });
    }
    Ok(())
}

async fn serve_conn(
    kubelet: Arc<Kubelet>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "kubelet API: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let allowed = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| k8slite_pki::identity_from_cert(c.as_ref()).ok())
        .filter(|id| id.groups.iter().any(|g| g == ALLOWED_GROUP));
    let shutdown = kubelet.shutdown.clone();
    let svc = service_fn(move |req| {
        let kubelet = kubelet.clone();
        let allowed = allowed.is_some();
        async move {
            if !allowed {
                return Ok::<_, std::convert::Infallible>(routes::text(
                    http::StatusCode::FORBIDDEN,
                    "Forbidden: only the API server's client certificate may use the kubelet API",
                ));
            }
            Ok(routes::handle(kubelet, req).await)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "kubelet API connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}

#[cfg(test)]
mod tests;
