//! `pods/portforward`: kubectl's SPDY/3.1 port-forward session, tunnelled in a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31) or over a plain `Upgrade: SPDY/3.1`
//! connection (older kubectl). Each (requestID, port) pair of streams — an error stream and a
//! data stream — becomes one WebSocket port-forward session to the kubelet
//! (`/portForward/{ns}/{pod}?port=P`, `v4.channel.k8s.io`: channel 0 data, channel 1 errors,
//! each channel's first frame carrying the port as 2 little-endian bytes). Clients that speak
//! that channel protocol themselves (`v4.channel.k8s.io`, its base64 variant, …) are relayed
//! to the kubelet as they are ([`channels`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use k8slite_api::ApiError;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::channel::Framing;
use super::spdy::{Codec, FLAG_FIN, Frame, header};
use crate::ApiServer;
use crate::body::Body;
use crate::handler::ResourceRequest;

/// The WebSocket subprotocol of the tunnel.
pub(crate) const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The port-forward protocol inside SPDY.
const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Where a session's streams go.
#[derive(Clone)]
struct Backend {
    server: Arc<ApiServer>,
    node: SocketAddr,
    ns: String,
    pod: String,
}

pub(crate) async fn serve<B: Send + 'static>(
    server: &Arc<ApiServer>,
    r: &ResourceRequest,
    req: Request<B>,
) -> Result<Response<Body>, ApiError> {
    let ns = r.ns().unwrap_or_default().to_string();
    let t = super::target::resolve(server, &ns, r.name()).await?;
    super::dialer(server)?;
    let backend = Backend {
        server: server.clone(),
        node: t.node,
        ns,
        pod: r.name().to_string(),
    };
    if super::ws::is_websocket(&req) {
        let offered = super::ws::header_list(&req, "sec-websocket-protocol");
        if super::ws::pick(&offered, &[TUNNEL_PROTOCOL]).is_none() {
            let protocol = if offered.is_empty() {
                String::new()
            } else {
                super::ws::pick(&offered, CHANNEL_PROTOCOLS).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "none of the requested port-forward protocols {offered:?} is supported \
                         (supported: {TUNNEL_PROTOCOL}, {})",
                        CHANNEL_PROTOCOLS.join(", ")
                    ))
                })?
            };
            return channels(&backend, r, req, &protocol).await;
        }
        return super::ws::accept(req, TUNNEL_PROTOCOL, move |ws| async move {
            let (mut ws_tx, mut ws_rx) = ws.split();
            let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(32);
            let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(32);
            let reader = async move {
                while let Some(Ok(m)) = ws_rx.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                    if let Message::Binary(b) = m
                        && in_tx.send(b.to_vec()).await.is_err()
                    {
                        break;
                    }
                }
            };
            let writer = async move {
                while let Some(b) = out_rx.recv().await {
                    if ws_tx.send(Message::Binary(b.into())).await.is_err() {
                        break;
                    }
                }
                let _ = ws_tx.close().await;
            };
            tokio::join!(reader, writer, session(backend, in_rx, out_tx));
        });
    }
    let versions = super::ws::header_list(&req, "x-stream-protocol-version");
    if !super::spdy_upgrade::is_spdy(&req) || !versions.iter().any(|v| v == PORTFORWARD_PROTOCOL) {
        return Err(super::upgrade_unsupported(&req));
    }
    Ok(super::spdy_upgrade::accept(
        req,
        PORTFORWARD_PROTOCOL,
        move |input, output| session(backend, input, output),
    ))
}

/// The WebSocket channel protocols of port-forward (Python, JavaScript and Java clients): per
/// requested port a data and an error channel, each starting with the port in 2 little-endian
/// bytes. `portforward.k8s.io` and no subprotocol at all are read as binary, as upstream does.
const CHANNEL_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "portforward.k8s.io",
];

/// Port-forward over the channel protocol: the kubelet speaks the same (binary v4) for every
/// port of `?ports=`, so the session is relayed, its framing converted.
async fn channels<B: Send + 'static>(
    backend: &Backend,
    r: &ResourceRequest,
    req: Request<B>,
    protocol: &str,
) -> Result<Response<Body>, ApiError> {
    let mut ports = Vec::new();
    for value in r.query.all("ports") {
        for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid port {p:?}: ports must be between 1 and 65535"
                    )));
                }
            }
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "at least one port must be given with ?ports= for a WebSocket port-forward",
        ));
    }
    let query: Vec<String> = ports.iter().map(|p| format!("port={p}")).collect();
    let path = format!(
        "/portForward/{}/{}?{}",
        backend.ns,
        backend.pod,
        query.join("&")
    );
    let dialer = super::dialer(&backend.server)?;
    let (kubelet, _) = dialer
        .websocket(backend.node, &path, &["v4.channel.k8s.io"])
        .await?;
    let framing = Framing::of(protocol);
    super::ws::accept(req, protocol, move |client| async move {
        super::exec::relay(client, kubelet, framing).await;
    })
}

/// One stream pair being forwarded.
#[derive(Default)]
struct Pair {
    error_stream: Option<u32>,
    data_stream: Option<u32>,
    to_pod: Option<mpsc::Sender<Vec<u8>>>,
    task: Option<tokio::task::AbortHandle>,
}

/// Run a SPDY session: bytes from the client arrive on `input`, bytes for it go to `output`.
async fn session(
    backend: Backend,
    mut input: mpsc::Receiver<Vec<u8>>,
    output: mpsc::Sender<Vec<u8>>,
) {
    let (frames_tx, mut frames_rx) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut codec = Codec::new();
        while let Some(f) = frames_rx.recv().await {
            match codec.encode(&f) {
                Ok(b) => {
                    if output.send(b).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SPDY: encoding a frame failed");
                    break;
                }
            }
        }
    });
    let mut codec = Codec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut by_stream: HashMap<u32, String> = HashMap::new();
    'outer: while let Some(chunk) = input.recv().await {
        buf.extend_from_slice(&chunk);
        loop {
            let (frame, used) = match codec.decode(&buf) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY: bad frame; ending the session");
                    break 'outer;
                }
            };
            buf.drain(..used);
            match frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let _ = frames_tx
                        .send(Frame::SynReply {
                            stream_id,
                            flags: 0,
                            headers: Vec::new(),
                        })
                        .await;
                    let request = header(&headers, "requestid").unwrap_or("0").to_string();
                    let port = header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                    let pair = pairs.entry(request.clone()).or_default();
                    by_stream.insert(stream_id, request.clone());
                    match header(&headers, "streamtype") {
                        Some("error") => pair.error_stream = Some(stream_id),
                        Some("data") => {
                            pair.data_stream = Some(stream_id);
                            let (tx, rx) = mpsc::channel(16);
                            pair.to_pod = Some(tx);
                            let task = tokio::spawn(forward(
                                backend.clone(),
                                port,
                                stream_id,
                                pair.error_stream,
                                rx,
                                frames_tx.clone(),
                            ));
                            pair.task = Some(task.abort_handle());
                        }
                        other => {
                            tracing::debug!(?other, "SPDY: unknown stream type; resetting");
                            let _ = frames_tx
                                .send(Frame::RstStream {
                                    stream_id,
                                    status: 3, // REFUSED_STREAM
                                })
                                .await;
                        }
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let Some(pair) = by_stream.get(&stream_id).and_then(|r| pairs.get_mut(r))
                    else {
                        continue;
                    };
                    if pair.data_stream != Some(stream_id) {
                        continue;
                    }
                    if !data.is_empty() {
                        let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
                        if let Some(tx) = &pair.to_pod {
                            let _ = tx.send(data).await;
                        }
                        let _ = frames_tx
                            .send(Frame::WindowUpdate {
                                stream_id,
                                delta: n,
                            })
                            .await;
                        let _ = frames_tx
                            .send(Frame::WindowUpdate {
                                stream_id: 0,
                                delta: n,
                            })
                            .await;
                    }
                    if flags & FLAG_FIN != 0 {
                        pair.to_pod = None;
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    if let Some(r) = by_stream.remove(&stream_id)
                        && let Some(pair) = pairs.get_mut(&r)
                        && pair.data_stream == Some(stream_id)
                        && let Some(pair) = pairs.remove(&r)
                        && let Some(t) = pair.task
                    {
                        t.abort();
                    }
                }
                Frame::Ping { id } => {
                    let _ = frames_tx.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'outer,
                Frame::SynReply { .. }
                | Frame::Settings { .. }
                | Frame::Headers { .. }
                | Frame::WindowUpdate { .. } => {}
            }
        }
    }
    for (_, p) in pairs {
        if let Some(t) = p.task {
            t.abort();
        }
    }
    drop(frames_tx);
    let _ = writer.await;
}

/// Forward one connection: client bytes from `from_client` to the pod's `port` through the
/// kubelet, pod bytes back as DATA on `data_stream`, errors on `error_stream`.
async fn forward(
    backend: Backend,
    port: Option<u16>,
    data_stream: u32,
    error_stream: Option<u32>,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<Frame>,
) {
    let fin = |stream_id: u32| Frame::Data {
        stream_id,
        flags: FLAG_FIN,
        data: Vec::new(),
    };
    let report = |msg: String| async {
        if let Some(e) = error_stream {
            let _ = frames
                .send(Frame::Data {
                    stream_id: e,
                    flags: 0,
                    data: msg.into_bytes(),
                })
                .await;
        }
    };
    let ws = match (port, super::dialer(&backend.server)) {
        (None, _) => Err("missing or invalid port header".to_string()),
        (Some(_), Err(e)) => Err(e.message),
        (Some(p), Ok(d)) => d
            .websocket(
                backend.node,
                &format!("/portForward/{}/{}?port={p}", backend.ns, backend.pod),
                &["v4.channel.k8s.io"],
            )
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| e.message),
    };
    match ws {
        Err(msg) => {
            report(format!(
                "error forwarding port {} to pod {}: {msg}",
                port.unwrap_or_default(),
                backend.pod
            ))
            .await;
        }
        Ok(ws) => {
            let (mut ws_tx, mut ws_rx) = ws.split();
            let up = async {
                while let Some(data) = from_client.recv().await {
                    let mut m = Vec::with_capacity(data.len() + 1);
                    m.push(0u8);
                    m.extend_from_slice(&data);
                    if ws_tx.send(Message::Binary(m.into())).await.is_err() {
                        return;
                    }
                }
                // The client finished sending; WebSocket port-forward has no half-close, so
                // keep the session until the pod side ends.
                std::future::pending::<()>().await;
            };
            let down = async {
                let mut seen = [false; 2];
                while let Some(Ok(m)) = ws_rx.next().await {
                    let Message::Binary(b) = m else {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                        continue;
                    };
                    let Some((&ch, mut payload)) = b.split_first() else {
                        continue;
                    };
                    let ch = usize::from(ch);
                    if ch > 1 {
                        continue;
                    }
                    if !seen[ch] {
                        // The first frame of each channel starts with the port (2 bytes LE).
                        seen[ch] = true;
                        payload = payload.get(2..).unwrap_or_default();
                    }
                    if payload.is_empty() {
                        continue;
                    }
                    if ch == 0 {
                        let f = Frame::Data {
                            stream_id: data_stream,
                            flags: 0,
                            data: payload.to_vec(),
                        };
                        if frames.send(f).await.is_err() {
                            break;
                        }
                    } else {
                        report(String::from_utf8_lossy(payload).into_owned()).await;
                    }
                }
            };
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        }
    }
    let _ = frames.send(fin(data_stream)).await;
    if let Some(e) = error_stream {
        let _ = frames.send(fin(e)).await;
    }
}
