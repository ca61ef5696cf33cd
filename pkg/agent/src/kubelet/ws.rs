//! WebSocket plumbing: accepting an upgrade from the API server, dialling the runtime's
//! streaming server, relaying frames between the two.

use std::future::Future;

use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{ClientRequestBuilder, Message};

use super::routes::{Body, HttpError};

/// The channel protocol containerd's streaming server speaks.
pub(crate) const V4: &str = "v4.channel.k8s.io";
/// v4 plus the close-stdin signal on channel 255.
pub(crate) const V5: &str = "v5.channel.k8s.io";

/// A WebSocket accepted from the API server.
pub(crate) type ServerWs = WebSocketStream<TokioIo<Upgraded>>;

/// The first protocol of the client's list that is in `supported`.
pub(crate) fn pick_protocol<B>(req: &Request<B>, supported: &[&str]) -> Option<String> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| supported.contains(p))
        .map(str::to_string)
}

/// Answer `101 Switching Protocols` and run `session` on the WebSocket once upgraded.
pub(crate) fn accept<B, F, Fut>(
    req: Request<B>,
    protocol: &str,
    session: F,
) -> Result<Response<Body>, HttpError>
where
    B: Send + 'static,
    F: FnOnce(ServerWs) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let (true, Some(key)) = (upgrade, key) else {
        return Err(HttpError::bad_request(
            "this endpoint needs a WebSocket upgrade (SPDY is not supported by this kubelet)",
        ));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
                session(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "kubelet API: upgrade failed"),
        }
    });
    let mut r = Response::new(http_body_util::Empty::new().boxed_unsync());
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
    if let Ok(v) = http::HeaderValue::from_str(protocol) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    Ok(r)
}

/// Dial a runtime streaming URL (`http://host:port/path?query`) as a WebSocket with `protocol`.
pub(crate) async fn connect(
    url: &str,
    protocol: &str,
) -> Result<WebSocketStream<tokio::net::TcpStream>, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("unsupported streaming URL {url:?}"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting to the streaming server {authority}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let uri: http::Uri = format!("ws://{rest}")
        .parse()
        .map_err(|e| format!("streaming URL {url:?}: {e}"))?;
    let req = ClientRequestBuilder::new(uri).with_sub_protocol(protocol);
    let (ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| format!("WebSocket handshake with the streaming server: {e}"))?;
    Ok(ws)
}

/// Relay frames both ways until one side ends. Frames from `client` on channel 255 (v5's
/// close-stdin signal, unknown to a v4 runtime) are passed only when `pass_close` is set.
pub(crate) async fn relay<A, B>(
    client: WebSocketStream<A>,
    runtime: WebSocketStream<B>,
    pass_close: bool,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut c_tx, mut c_rx) = client.split();
    let (mut r_tx, mut r_rx) = runtime.split();
    let up = async {
        while let Some(Ok(m)) = c_rx.next().await {
            let m = match m {
                Message::Close(_) => break,
                // Text messages are read as their bytes, as upstream does.
                Message::Text(t) => Message::Binary(t.as_bytes().to_vec().into()),
                m => m,
            };
            if let Message::Binary(b) = &m
                && b.first() == Some(&255)
                && !pass_close
            {
                tracing::debug!("close-stdin signal not relayed to a v4 runtime stream");
                continue;
            }
            if (m.is_binary() || m.is_text()) && r_tx.send(m).await.is_err() {
                break;
            }
        }
        let _ = r_tx.close().await;
    };
    let down = async {
        while let Some(Ok(m)) = r_rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
            if (m.is_binary() || m.is_text()) && c_tx.send(m).await.is_err() {
                return;
            }
        }
        let _ = c_tx
            .send(Message::Close(Some(CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = c_tx.close().await;
    };
    // The session is over when the runtime side ends; a client that stops sending (stdin
    // done) still receives output.
    tokio::pin!(up);
    tokio::pin!(down);
    tokio::select! {
        _ = &mut up => {
            // Client gone: give the runtime a moment to finish, then stop.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut down).await;
        }
        _ = &mut down => {}
    }
}
