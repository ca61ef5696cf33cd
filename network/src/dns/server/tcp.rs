//! TCP: an accept loop per listener and one task per connection (length-prefixed messages,
//! closed after [`TCP_IDLE`] without traffic), on the tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::handle::{Handler, Outcome, Scratch};

/// A TCP connection idle this long is closed (CoreDNS: 10 s).
const TCP_IDLE: Duration = Duration::from_secs(10);

pub(super) async fn tcp_accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    conns: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let Ok(permit) = conns.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "dns tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = tcp_conn(stream, &handler) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "dns tcp connection");
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn tcp_conn(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(512);
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        buf.resize(usize::from(u16::from_be_bytes(len)), 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await {
            Ok(r) => r.map(|_| ())?,
            Err(_) => return Ok(()),
        }
        match handler.handle(&buf, true, &mut scratch, &mut out) {
            Outcome::Reply => {}
            Outcome::Later(pending) => handler.finish(pending, true, &mut out).await,
            Outcome::Nothing => return Ok(()),
        }
        let Ok(n) = u16::try_from(out.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&out);
        match tokio::time::timeout(TCP_IDLE, stream.write_all(&framed)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        }
    }
}
