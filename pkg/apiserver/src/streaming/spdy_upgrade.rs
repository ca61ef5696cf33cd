//! Accepting a plain `Upgrade: SPDY/3.1` connection from a client (kubectl before 1.30 for
//! exec/attach, before 1.31 for port-forward).

use std::future::Future;

use http::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::body::{Body, full};

/// Whether the request asks for SPDY/3.1.
pub(crate) fn is_spdy<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"))
}

/// Answer `101` with `X-Stream-Protocol-Version: protocol` and run `session` on the upgraded
/// connection: it receives the client's bytes on the first channel (closed when the client's
/// side ends) and sends bytes for the client on the second (the connection is shut down once
/// every sender is gone).
pub(crate) fn accept<B, F, Fut>(
    req: Request<B>,
    protocol: &'static str,
    session: F,
) -> Response<Body>
where
    B: Send + 'static,
    F: FnOnce(mpsc::Receiver<Vec<u8>>, mpsc::Sender<Vec<u8>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let up = match hyper::upgrade::on(req).await {
            Ok(up) => up,
            Err(e) => {
                tracing::debug!(error = %e, "SPDY upgrade failed");
                return;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(up));
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(32);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(32);
        let reader = async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 || in_tx.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        };
        let writer = async move {
            while let Some(b) = out_rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        tokio::join!(reader, writer, session(in_rx, out_tx));
    });
    let mut resp = Response::new(full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(header::UPGRADE, http::HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "X-Stream-Protocol-Version",
        http::HeaderValue::from_static(protocol),
    );
    resp
}
