//! Accepting a WebSocket upgrade from a client (kubectl).

use std::future::Future;

use http::{Request, Response, StatusCode, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use k8slite_api::ApiError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::body::{Body, full};

/// A WebSocket accepted from a client.
pub(crate) type ClientWs = WebSocketStream<TokioIo<Upgraded>>;

/// Whether the request asks for a WebSocket.
pub(crate) fn is_websocket<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The values of a comma-separated, possibly repeated header.
pub(crate) fn header_list<B>(req: &Request<B>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The first protocol in the client's order that is in `supported`.
pub(crate) fn pick(offered: &[String], supported: &[&str]) -> Option<String> {
    offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
}

/// Answer `101` choosing `protocol` and run `session` on the upgraded connection.
pub(crate) fn accept<B, F, Fut>(
    req: Request<B>,
    protocol: &str,
    session: F,
) -> Result<Response<Body>, ApiError>
where
    B: Send + 'static,
    F: FnOnce(ClientWs) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
        .ok_or_else(|| ApiError::bad_request("WebSocket upgrade without Sec-WebSocket-Key"))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
                session(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut r = Response::new(full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    // A client that offered no subprotocol gets none back (it would fail the handshake).
    if !protocol.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(protocol)
    {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    Ok(r)
}
