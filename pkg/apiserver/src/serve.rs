//! Serving HTTPS: TLS handshake, client-certificate authentication, HTTP/1.1 and HTTP/2,
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ApiServer;
use crate::authz::Identity;

/// Errors of the listener.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Accepting connections failed.
    #[error("accepting connections on {addr}: {source}")]
    Accept {
        /// Listening address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Maps a verified peer certificate to an identity.
pub type CertIdentity = Arc<dyn Fn(&[u8]) -> Option<Identity> + Send + Sync>;

/// Accept TLS connections on `listener` until `shutdown`, serving each on its own task.
pub async fn serve_tls(
    server: Arc<ApiServer>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    identify: CertIdentity,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<(), ServeError> {
    let acceptor = TlsAcceptor::from(tls);
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Transient (EMFILE, ECONNABORTED): back off instead of spinning.
                    tracing::warn!(error = %e, %addr, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        let identify = identify.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            serve_conn(server, acceptor, tcp, peer, identify, shutdown).await;
        });
    }
    Ok(())
}

async fn serve_conn(
    server: Arc<ApiServer>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    identify: CertIdentity,
    shutdown: CancellationToken,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| identify(c.as_ref()));
    let svc = service_fn(move |req| {
        let server = server.clone();
        let identity = identity.clone();
        async move { Ok::<_, std::convert::Infallible>(server.handle(req, identity).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().max_concurrent_streams(250);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
        }
    }
}
