//! `pods/exec` and `pods/attach` over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io` and
//! their base64 variants):
//! the client's frames relayed to the node's kubelet, which relays them to the runtime. Older
//! kubectl's SPDY is bridged to the same kubelet WebSocket by [`super::exec_spdy`].

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use k8slite_api::ApiError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::channel::Framing;
use crate::ApiServer;
use crate::body::Body;
use crate::handler::ResourceRequest;

/// Channel protocols the kubelet speaks, best first.
pub(crate) const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// Channel protocols offered to clients: the kubelet's, and their base64 variants (translated
/// here, see [`Framing`]).
const CLIENT_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v5.base64.channel.k8s.io",
    "v4.base64.channel.k8s.io",
];

pub(crate) async fn exec<B: Send + 'static>(
    server: &Arc<ApiServer>,
    r: &ResourceRequest,
    req: Request<B>,
    attach: bool,
) -> Result<Response<Body>, ApiError> {
    let ns = r.ns().unwrap_or_default().to_string();
    let t = super::target::resolve(server, &ns, r.name()).await?;
    let container = super::target::container(&t.pod, r.query.get("container"))?;
    let commands = r.query.all("command");
    if !attach && commands.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let websocket = super::ws::is_websocket(&req);
    if !websocket && !super::spdy_upgrade::is_spdy(&req) {
        return Err(super::upgrade_unsupported(&req));
    }
    let offered = if websocket {
        super::ws::header_list(&req, "sec-websocket-protocol")
    } else {
        super::ws::header_list(&req, "x-stream-protocol-version")
    };
    let supported: &[&str] = if websocket {
        CLIENT_PROTOCOLS
    } else {
        &[super::exec_spdy::PROTOCOL]
    };
    let protocol = super::ws::pick(&offered, supported).ok_or_else(|| {
        ApiError::bad_request(format!(
            "none of the requested stream protocols {offered:?} is supported (supported: {supported:?})"
        ))
    })?;
    let query = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for c in &commands {
            q.append_pair("command", c);
        }
        for k in ["stdin", "stdout", "stderr", "tty"] {
            if r.query.flag(k) {
                q.append_pair(k, "1");
            }
        }
        q.finish()
    };
    let kind = if attach { "attach" } else { "exec" };
    let path = format!("/{kind}/{ns}/{}/{container}?{query}", r.name());
    let dialer = super::dialer(server)?;
    if !websocket {
        // SPDY from the client; v5 towards the kubelet so that closing stdin reaches it.
        let (backend, chosen) = dialer.websocket(t.node, &path, PROTOCOLS).await?;
        let expected = super::exec_spdy::Expected {
            stdin: r.query.flag("stdin"),
            stdout: r.query.flag("stdout"),
            stderr: r.query.flag("stderr"),
            tty: r.query.flag("tty"),
        };
        let v5 = chosen == PROTOCOLS[0];
        return Ok(super::spdy_upgrade::accept(
            req,
            super::exec_spdy::PROTOCOL,
            move |input, output| super::exec_spdy::session(input, output, expected, backend, v5),
        ));
    }
    let framing = Framing::of(&protocol);
    let towards_kubelet = protocol.replace("base64.", "");
    let (backend, _) = dialer.websocket(t.node, &path, &[&towards_kubelet]).await?;
    super::ws::accept(req, &protocol, move |client| async move {
        relay(client, backend, framing).await;
    })
}

/// Relay channel messages both ways until the backend ends (then the client gets a normal
/// close), converting the client's framing to the kubelet's binary one and back.
pub(crate) async fn relay<A, B>(
    client: tokio_tungstenite::WebSocketStream<A>,
    backend: tokio_tungstenite::WebSocketStream<B>,
    framing: Framing,
) where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut c_tx, mut c_rx) = client.split();
    let (mut b_tx, mut b_rx) = backend.split();
    let up = async {
        while let Some(Ok(m)) = c_rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
            if let Some(m) = framing.to_backend(m)
                && b_tx.send(m).await.is_err()
            {
                break;
            }
        }
        let _ = b_tx.close().await;
    };
    let down = async {
        while let Some(Ok(m)) = b_rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
            if let Some(m) = framing.to_client(m)
                && c_tx.send(m).await.is_err()
            {
                return;
            }
        }
        // A normal closure: client-go reads a close without a status code as an error.
        let _ = c_tx
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = c_tx.close().await;
    };
    tokio::pin!(up);
    tokio::pin!(down);
    tokio::select! {
        _ = &mut up => {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut down).await;
        }
        _ = &mut down => {}
    }
}
