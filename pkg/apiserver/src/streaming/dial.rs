//! Dialling a node's kubelet API: TLS verified against the server CA (the kubelet's serving
//! certificate names the node's IPs), presenting the API server's kubelet-client certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use k8slite_api::ApiError;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::ClientRequestBuilder;

use super::{KubeletClientConfig, StreamingError};

/// A connection to a kubelet.
pub(crate) type KubeletConn = TlsStream<TcpStream>;

/// Why a tunnel could not be opened.
#[derive(Debug)]
pub(crate) enum TunnelError {
    /// The kubelet could not be reached or spoke no HTTP.
    Kubelet(ApiError),
    /// The kubelet answered the tunnel request with `code` and `body`.
    Refused {
        /// Its status.
        code: u16,
        /// Its text.
        body: String,
    },
}

/// Dials kubelets.
pub(crate) struct KubeletDialer {
    tls: tokio_rustls::TlsConnector,
}

fn unavailable(addr: SocketAddr, what: &str, e: impl std::fmt::Display) -> ApiError {
    // Upstream answers a failed kubelet dial with 500 (InternalError).
    ApiError::internal(format!("error dialing backend: {what} {addr}: {e}"))
}

impl KubeletDialer {
    /// A dialer from the CA and client certificate.
    pub(crate) fn new(cfg: &KubeletClientConfig) -> Result<Self, StreamingError> {
        let client = k8slite_pki::CertAndKey {
            cert_pem: cfg.client_cert_pem.clone(),
            key_pem: cfg.client_key_pem.clone(),
        };
        let tls = k8slite_pki::client_tls_config(&cfg.server_ca_pem, Some(&client))
            .map_err(StreamingError::Tls)?;
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }

    /// A TLS connection to the kubelet at `addr`.
    pub(crate) async fn connect(&self, addr: SocketAddr) -> Result<KubeletConn, ApiError> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| unavailable(addr, "connecting to", "timed out"))?
            .map_err(|e| unavailable(addr, "connecting to", e))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::IpAddress(addr.ip().into());
        tokio::time::timeout(Duration::from_secs(10), self.tls.connect(name, tcp))
            .await
            .map_err(|_| unavailable(addr, "TLS handshake with", "timed out"))?
            .map_err(|e| unavailable(addr, "TLS handshake with", e))
    }

    /// `GET path` on the kubelet; the response streams.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
    ) -> Result<http::Response<Incoming>, ApiError> {
        let conn = self.connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .map_err(|e| unavailable(addr, "HTTP handshake with", e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "kubelet connection ended");
            }
        });
        let req = Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| ApiError::internal(format!("kubelet request: {e}")))?;
        send.send_request(req)
            .await
            .map_err(|e| unavailable(addr, "requesting", e))
    }

    /// A byte tunnel through the kubelet at `addr` to `target`, an address of a pod of that
    /// node (see [`k8slite_api::tunnel`]). A refusal comes back as the kubelet's status and text.
    pub(crate) async fn tunnel(
        &self,
        addr: SocketAddr,
        target: SocketAddr,
    ) -> Result<TokioIo<Upgraded>, TunnelError> {
        let conn = self.connect(addr).await.map_err(TunnelError::Kubelet)?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .map_err(|e| TunnelError::Kubelet(unavailable(addr, "HTTP handshake with", e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "kubelet tunnel connection ended");
            }
        });
        let req = Request::post(k8slite_api::tunnel::request_target(target))
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, k8slite_api::tunnel::UPGRADE)
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| {
                TunnelError::Kubelet(ApiError::internal(format!("tunnel request: {e}")))
            })?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| TunnelError::Kubelet(unavailable(addr, "requesting", e)))?;
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            let code = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
                .unwrap_or_default();
            return Err(TunnelError::Refused { code, body });
        }
        hyper::upgrade::on(resp)
            .await
            .map(TokioIo::new)
            .map_err(|e| TunnelError::Kubelet(unavailable(addr, "upgrading the tunnel with", e)))
    }

    /// Open a WebSocket on the kubelet offering `protocols`; returns it and the chosen protocol.
    /// A refused upgrade comes back as the kubelet's status and message.
    pub(crate) async fn websocket(
        &self,
        addr: SocketAddr,
        path: &str,
        protocols: &[&str],
    ) -> Result<(WebSocketStream<KubeletConn>, String), ApiError> {
        let conn = self.connect(addr).await?;
        let uri: http::Uri = format!("wss://{addr}{path}")
            .parse()
            .map_err(|e| ApiError::internal(format!("kubelet URL: {e}")))?;
        let mut req = ClientRequestBuilder::new(uri);
        for p in protocols {
            req = req.with_sub_protocol(*p);
        }
        match tokio_tungstenite::client_async(req, conn).await {
            Ok((ws, resp)) => {
                let chosen = resp
                    .headers()
                    .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                Ok((ws, chosen))
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let code = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_string())
                    .unwrap_or_default();
                Err(super::kubelet_error(code, body))
            }
            Err(e) => Err(unavailable(addr, "WebSocket handshake with", e)),
        }
    }
}
