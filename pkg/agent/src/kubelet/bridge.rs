//! One exec/attach session: the API server's WebSocket (`v5.channel.k8s.io` or
//! `v4.channel.k8s.io`) bridged to a SPDY/3.1 connection to the runtime's streaming server.
//!
//! WebSocket → SPDY: channel 0 → stdin DATA; channel 255 with payload 0 (v5's close-stdin) →
//! `FLAG_FIN` on stdin; channel 4 → resize DATA. SPDY → WebSocket: stdout/stderr DATA →
//! channels 1/2; the error stream's content (a `metav1.Status`) → channel 3 once the error
//! stream or the connection ends, then a close frame with code 1000 (client-go treats a close
//! without a status code as a failure).

use futures::{SinkExt, StreamExt};
use k8slite_api::spdy::{Codec, FLAG_FIN, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::spdy::{StreamIds, Streams, data_frames, encode_all, open_streams};

/// How long the runtime may take to accept the streams.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What ended a session abnormally (logged; the client sees its WebSocket closed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BridgeError {
    /// SPDY framing failed.
    #[error("SPDY towards the streaming server: {0}")]
    Spdy(#[from] k8slite_api::spdy::SpdyError),
    /// The runtime connection failed.
    #[error("streaming server connection: {0}")]
    Io(#[from] std::io::Error),
    /// The runtime did not accept the streams in time.
    #[error("the streaming server did not accept the streams within {0:?}")]
    Timeout(std::time::Duration),
}

/// The runtime side of a session.
struct Runtime<S> {
    io: S,
    codec: Codec,
    buf: Vec<u8>,
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Runtime<S> {
    async fn send(&mut self, frames: &[Frame]) -> Result<(), BridgeError> {
        if frames.is_empty() {
            return Ok(());
        }
        let bytes = encode_all(&mut self.codec, frames)?;
        self.io.write_all(&bytes).await?;
        Ok(())
    }

    /// The next frame; `None` at end of stream.
    async fn next(&mut self) -> Result<Option<Frame>, BridgeError> {
        loop {
            if let Some((f, used)) = self.codec.decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(f));
            }
            if self.eof {
                return Ok(None);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                self.eof = true;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Run a session until the runtime ends it (or the client goes away).
pub(crate) async fn run<A, S>(
    client: WebSocketStream<A>,
    runtime: S,
    leftover: Vec<u8>,
    streams: Streams,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut c_tx, mut c_rx) = client.split();
    let mut rt = Runtime {
        io: runtime,
        codec: Codec::new(),
        buf: leftover,
        eof: false,
    };
    let mut status = Vec::new();
    let r = session(&mut c_rx, &mut c_tx, &mut rt, streams, &mut status).await;
    if let Err(e) = &r {
        tracing::debug!(error = %e, "exec session ended with an error");
    }
    if !status.is_empty() {
        let mut m = Vec::with_capacity(status.len() + 1);
        m.push(3u8);
        m.extend_from_slice(&status);
        let _ = c_tx.send(Message::Binary(m.into())).await;
    }
    let _ = c_tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = c_tx.close().await;
    // Let the runtime know we are done (its streams are torn down with the connection).
    let _ = rt
        .send(&[Frame::GoAway {
            last_stream_id: 0,
            status: 0,
        }])
        .await;
    let _ = rt.io.shutdown().await;
}

async fn session<R, W, S>(
    c_rx: &mut R,
    c_tx: &mut W,
    rt: &mut Runtime<S>,
    streams: Streams,
    status: &mut Vec<u8>,
) -> Result<(), BridgeError>
where
    R: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    W: futures::Sink<Message> + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (syn, ids) = open_streams(streams);
    let mut pending = syn.len();
    rt.send(&syn).await?;
    // As client-go: every stream accepted before any data flows.
    let accepted = tokio::time::timeout(REPLY_TIMEOUT, async {
        while pending > 0 {
            match rt.next().await? {
                Some(Frame::SynReply { .. }) => pending -= 1,
                Some(f) => {
                    if handle(rt, c_tx, &ids, f, status).await? {
                        return Ok(false);
                    }
                }
                None => return Ok(false),
            }
        }
        Ok::<_, BridgeError>(true)
    })
    .await
    .map_err(|_| BridgeError::Timeout(REPLY_TIMEOUT))??;
    if !accepted {
        return Ok(());
    }
    let mut stdin_open = ids.stdin.is_some();
    let mut client_open = true;
    loop {
        tokio::select! {
            m = c_rx.next(), if client_open => {
                let m = match m {
                    // Upstream reads text messages as the bytes of their text (the Python
                    // client sends `str` stdin so).
                    Some(Ok(Message::Text(t))) => Message::Binary(t.as_bytes().to_vec().into()),
                    Some(Ok(m)) => m,
                    _ => {
                        client_open = false;
                        Message::Close(None)
                    }
                };
                match m {
                    Message::Binary(b) if !b.is_empty() => {
                        let frames = match (b[0], ids.stdin, ids.resize) {
                            (0, Some(id), _) if stdin_open => data_frames(id, &b[1..], false),
                            (4, _, Some(id)) => data_frames(id, &b[1..], false),
                            (255, Some(id), _) if stdin_open && b.get(1) == Some(&0) => {
                                stdin_open = false;
                                data_frames(id, &[], true)
                            }
                            _ => Vec::new(),
                        };
                        rt.send(&frames).await?;
                    }
                    Message::Close(_) => {
                        // The client is gone: nobody reads the output any more.
                        return Ok(());
                    }
                    _ => {}
                }
            }
            f = rt.next() => {
                let Some(f) = f? else { return Ok(()) };
                if handle(rt, c_tx, &ids, f, status).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// Handle one frame from the runtime; `true` when the session is over.
async fn handle<W, S>(
    rt: &mut Runtime<S>,
    c_tx: &mut W,
    ids: &StreamIds,
    f: Frame,
    status: &mut Vec<u8>,
) -> Result<bool, BridgeError>
where
    W: futures::Sink<Message> + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    match f {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if stream_id == ids.error {
                status.extend_from_slice(&data);
                return Ok(flags & FLAG_FIN != 0);
            }
            let channel = if Some(stream_id) == ids.stdout {
                1u8
            } else if Some(stream_id) == ids.stderr {
                2
            } else {
                return Ok(false);
            };
            if !data.is_empty() {
                let mut m = Vec::with_capacity(data.len() + 1);
                m.push(channel);
                m.extend_from_slice(&data);
                if c_tx.send(Message::Binary(m.into())).await.is_err() {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Frame::RstStream { stream_id, .. } => Ok(stream_id == ids.error),
        Frame::SynReply {
            stream_id, flags, ..
        } => Ok(stream_id == ids.error && flags & FLAG_FIN != 0),
        Frame::Headers {
            stream_id, flags, ..
        } => Ok(stream_id == ids.error && flags & FLAG_FIN != 0),
        Frame::GoAway { .. } => Ok(true),
        Frame::Ping { id } => {
            rt.send(&[Frame::Ping { id }]).await?;
            Ok(false)
        }
        Frame::SynStream { stream_id, .. } => {
            // The runtime has no reason to open streams: refuse (REFUSED_STREAM).
            rt.send(&[Frame::RstStream {
                stream_id,
                status: 3,
            }])
            .await?;
            Ok(false)
        }
        Frame::Settings { .. } | Frame::WindowUpdate { .. } => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8slite_api::spdy::header;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A streaming server as containerd's: replies to each stream, echoes stdin on stdout
    /// until stdin's FIN, then writes the status on the error stream and resets the streams.
    async fn fake_runtime(io: tokio::io::DuplexStream) -> Vec<(String, Vec<u8>)> {
        let mut rt = Runtime {
            io,
            codec: Codec::new(),
            buf: Vec::new(),
            eof: false,
        };
        let mut kinds = std::collections::BTreeMap::new();
        let mut seen = Vec::new();
        while let Some(f) = rt.next().await.expect("test step") {
            match f {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    kinds.insert(
                        stream_id,
                        header(&headers, "streamtype")
                            .expect("test step")
                            .to_string(),
                    );
                    rt.send(&[Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Vec::new(),
                    }])
                    .await
                    .expect("test step");
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let kind = kinds[&stream_id].clone();
                    seen.push((kind.clone(), data.clone()));
                    if kind == "stdin" && !data.is_empty() {
                        rt.send(&data_frames(5, &data, false))
                            .await
                            .expect("test step");
                    }
                    if kind == "stdin" && flags & FLAG_FIN != 0 {
                        rt.send(&data_frames(7, b"done\n", false))
                            .await
                            .expect("test step");
                        rt.send(&data_frames(1, br#"{"status":"Success"}"#, false))
                            .await
                            .expect("test step");
                        for id in [1, 3, 5, 7] {
                            rt.send(&[Frame::RstStream {
                                stream_id: id,
                                status: 5,
                            }])
                            .await
                            .expect("test step");
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
        seen
    }

    #[tokio::test]
    async fn stdin_close_reaches_the_runtime_and_the_status_comes_back() {
        // stdin in a binary message, and in a text message as the Python client sends `str`
        stdin_session(Message::Binary(b"\x00hello".to_vec().into())).await;
        stdin_session(Message::Text("\u{0}hello".into())).await;
    }

    async fn stdin_session(stdin: Message) {
        let (c_near, c_far) = tokio::io::duplex(64 * 1024);
        let (r_near, r_far) = tokio::io::duplex(64 * 1024);
        let server_ws = WebSocketStream::from_raw_socket(c_near, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(c_far, Role::Client, None).await;
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let bridge = tokio::spawn(run(server_ws, r_near, Vec::new(), streams));
        let runtime = tokio::spawn(fake_runtime(r_far));
        client.send(stdin).await.expect("test step");
        client
            .send(Message::Binary(vec![255, 0].into()))
            .await
            .expect("test step");
        let mut got = Vec::new();
        let mut close = None;
        while let Some(m) = client.next().await {
            match m.expect("test step") {
                Message::Binary(b) => got.push((b[0], b[1..].to_vec())),
                Message::Close(c) => {
                    close = c;
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(
            got,
            [
                (1, b"hello".to_vec()),
                (2, b"done\n".to_vec()),
                (3, br#"{"status":"Success"}"#.to_vec())
            ]
        );
        assert_eq!(close.map(|c| c.code), Some(CloseCode::Normal));
        bridge.await.expect("test step");
        let seen = runtime.await.expect("test step");
        assert_eq!(
            seen,
            [
                ("stdin".to_string(), b"hello".to_vec()),
                ("stdin".to_string(), Vec::new())
            ]
        );
    }
}
