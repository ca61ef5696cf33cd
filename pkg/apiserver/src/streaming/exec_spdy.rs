//! `pods/exec` and `pods/attach` over plain SPDY/3.1, as kubectl before 1.30 speaks them
//! (`X-Stream-Protocol-Version: v4.channel.k8s.io`): the client opens one SPDY stream per
//! `streamtype` (error, stdin, stdout, stderr, resize) and the session is bridged to the
//! kubelet's WebSocket channels:
//!
//! | SPDY stream | WebSocket channel (to/from the kubelet) |
//! |---|---|
//! | stdin DATA | 0 |
//! | stdin FIN | 255 with payload 0 (`v5.channel.k8s.io` only) |
//! | stdout / stderr DATA | 1 / 2 |
//! | error DATA (a v4 `Status`) | 3 |
//! | resize (newline-separated `{"Width":…,"Height":…}`) | 4, one message per size |
//!
//! When the kubelet's side ends, stdout, stderr and error get FIN, which is how the client
//! learns that the command finished.

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::spdy::{Codec, FLAG_FIN, Frame, header};

/// The exec protocol inside SPDY this server speaks.
pub(crate) const PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client has to open the streams it asked for.
const STREAM_CREATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which streams the client asked for (the request's query flags).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected {
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
}

/// Stream ids by type, as the client opened them.
#[derive(Debug, Default)]
struct Streams {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl Streams {
    /// Every stream the client is expected to open is there (like upstream, stderr is not
    /// expected with a TTY, and a TTY brings the resize stream).
    fn complete(&self, e: Expected) -> bool {
        self.error.is_some()
            && (!e.stdin || self.stdin.is_some())
            && (!e.stdout || self.stdout.is_some())
            && (!e.stderr || e.tty || self.stderr.is_some())
            && (!e.tty || self.resize.is_some())
    }
}

/// Encodes frames for the client.
struct Out {
    codec: Codec,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Out {
    /// Send one frame; false once the client is gone.
    async fn send(&mut self, f: &Frame) -> bool {
        match self.codec.encode(f) {
            Ok(b) => self.tx.send(b).await.is_ok(),
            Err(e) => {
                tracing::debug!(error = %e, "SPDY exec: encoding a frame failed");
                false
            }
        }
    }

    async fn data(&mut self, stream: Option<u32>, data: &[u8]) -> bool {
        match stream {
            Some(stream_id) => {
                self.send(&Frame::Data {
                    stream_id,
                    flags: 0,
                    data: data.to_vec(),
                })
                .await
            }
            None => true,
        }
    }

    async fn fin(&mut self, stream: Option<u32>) {
        if let Some(stream_id) = stream {
            self.send(&Frame::Data {
                stream_id,
                flags: FLAG_FIN,
                data: Vec::new(),
            })
            .await;
        }
    }
}

/// Run one session: client bytes on `input`, bytes for the client to `output`, the kubelet's
/// WebSocket `backend` (`v5` when it chose `v5.channel.k8s.io`).
pub(crate) async fn session<S>(
    mut input: mpsc::Receiver<Vec<u8>>,
    output: mpsc::Sender<Vec<u8>>,
    expected: Expected,
    backend: WebSocketStream<S>,
    v5: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut out = Out {
        codec: Codec::new(),
        tx: output,
    };
    let mut codec = Codec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut streams = Streams::default();
    let mut resize_buf: Vec<u8> = Vec::new();
    let (mut b_tx, mut b_rx) = backend.split();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    let mut ready = false;
    let finished = loop {
        tokio::select! {
            chunk = input.recv() => {
                // None: the client is gone.
                let Some(chunk) = chunk else { break false };
                buf.extend_from_slice(&chunk);
                let mut open = true;
                while open {
                    let (frame, used) = match codec.decode(&buf) {
                        Ok(Some(x)) => x,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "SPDY exec: bad frame; ending the session");
                            open = false;
                            continue;
                        }
                    };
                    buf.drain(..used);
                    open = on_frame(frame, &mut streams, &mut out, &mut b_tx, &mut resize_buf, v5).await;
                }
                if !open {
                    break false;
                }
                ready = ready || streams.complete(expected);
            }
            () = tokio::time::sleep_until(deadline), if !ready => {
                tracing::debug!(?streams, "SPDY exec: the client did not open its streams in time");
                break false;
            }
            m = b_rx.next(), if ready => {
                let Some(Ok(m)) = m else { break true };
                let b = match m {
                    Message::Binary(b) => b,
                    Message::Close(_) => break true,
                    _ => continue,
                };
                let Some((&ch, payload)) = b.split_first() else { continue };
                let stream = match ch {
                    1 => streams.stdout,
                    2 => streams.stderr,
                    3 => streams.error,
                    _ => continue,
                };
                if !payload.is_empty() && !out.data(stream, payload).await {
                    break false;
                }
            }
        }
    };
    let _ = b_tx.close().await;
    if finished {
        // The command ended: the client reads to EOF on its output streams, then the error.
        out.fin(streams.stdout).await;
        out.fin(streams.stderr).await;
        out.fin(streams.error).await;
        // Let the client close the connection after reading them.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while input.recv().await.is_some() {}
        })
        .await;
    }
}

/// Handle one client frame; false ends the session.
async fn on_frame<W>(
    frame: Frame,
    streams: &mut Streams,
    out: &mut Out,
    backend: &mut W,
    resize_buf: &mut Vec<u8>,
    v5: bool,
) -> bool
where
    W: futures::Sink<Message> + Unpin,
{
    match frame {
        Frame::SynStream {
            stream_id, headers, ..
        } => {
            let slot = match header(&headers, "streamtype") {
                Some("error") => &mut streams.error,
                Some("stdin") => &mut streams.stdin,
                Some("stdout") => &mut streams.stdout,
                Some("stderr") => &mut streams.stderr,
                Some("resize") => &mut streams.resize,
                other => {
                    tracing::debug!(?other, "SPDY exec: unknown stream type; refusing it");
                    return out
                        .send(&Frame::RstStream {
                            stream_id,
                            status: 3, // REFUSED_STREAM
                        })
                        .await;
                }
            };
            *slot = Some(stream_id);
            out.send(&Frame::SynReply {
                stream_id,
                flags: 0,
                headers: Vec::new(),
            })
            .await
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if !data.is_empty() {
                let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
                for id in [stream_id, 0] {
                    if !out
                        .send(&Frame::WindowUpdate {
                            stream_id: id,
                            delta: n,
                        })
                        .await
                    {
                        return false;
                    }
                }
            }
            if Some(stream_id) == streams.stdin {
                if !data.is_empty() && !send_channel(backend, 0, &data).await {
                    return false;
                }
                if flags & FLAG_FIN != 0 && v5 && !send_channel(backend, 255, &[0]).await {
                    return false;
                }
            } else if Some(stream_id) == streams.resize {
                resize_buf.extend_from_slice(&data);
                while let Some(end) = resize_buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = resize_buf.drain(..=end).collect();
                    let line = line.trim_ascii();
                    if !line.is_empty() && !send_channel(backend, 4, line).await {
                        return false;
                    }
                }
            }
            true
        }
        Frame::Ping { id } => out.send(&Frame::Ping { id }).await,
        Frame::GoAway { .. } => false,
        Frame::RstStream { .. }
        | Frame::SynReply { .. }
        | Frame::Settings { .. }
        | Frame::Headers { .. }
        | Frame::WindowUpdate { .. } => true,
    }
}

/// Send `payload` on WebSocket channel `ch`.
async fn send_channel<W>(backend: &mut W, ch: u8, payload: &[u8]) -> bool
where
    W: futures::Sink<Message> + Unpin,
{
    let mut m = Vec::with_capacity(payload.len() + 1);
    m.push(ch);
    m.extend_from_slice(payload);
    backend.send(Message::Binary(m.into())).await.is_ok()
}
