//! The SPDY/3.1 client side towards the runtime's streaming server (containerd's CRI streaming
//! server speaks it for exec and attach): the HTTP/1.1 upgrade, then one stream per channel.
//!
//! Over SPDY, stdin can be half-closed (`FLAG_FIN`), which the runtime's WebSocket
//! `v4.channel.k8s.io` cannot express: `kubectl exec -i … -- cat` and `kubectl cp` need it.

use k8slite_api::spdy::{Codec, FLAG_FIN, Frame, Headers, SpdyError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The remote-command protocol asked for (its error stream carries a `metav1.Status`).
pub(crate) const PROTOCOL: &str = "v4.channel.k8s.io";
/// Largest response head accepted from the streaming server.
const MAX_HEAD: usize = 16 * 1024;

/// What failed when dialling the streaming server over SPDY.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    /// The URL is not `http://host:port/…`.
    #[error("unsupported streaming URL {0:?}")]
    Url(String),
    /// TCP or reading/writing the handshake failed.
    #[error("connecting to the streaming server {addr}: {source}")]
    Io {
        /// Address dialled.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The server answered, but not `101 Switching Protocols` to SPDY/3.1 with our protocol.
    #[error("the streaming server refused the SPDY upgrade: {0}")]
    Refused(String),
    /// The server's answer is not HTTP.
    #[error("malformed upgrade response from the streaming server")]
    Malformed,
}

/// Which streams a session has (the runtime expects exactly those of its exec/attach request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Stream ids of an opened session (client streams are odd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StreamIds {
    pub error: u32,
    pub stdin: Option<u32>,
    pub stdout: Option<u32>,
    pub stderr: Option<u32>,
    pub resize: Option<u32>,
}

/// The SYN_STREAM frames opening a session's streams, in client-go's order (error, stdin,
/// stdout, stderr, resize), and their ids.
pub(crate) fn open_streams(s: Streams) -> (Vec<Frame>, StreamIds) {
    let mut frames = Vec::new();
    let mut next = 1u32;
    let mut open = |kind: &str| {
        let id = next;
        next += 2;
        let headers: Headers = vec![("streamtype".into(), kind.into())];
        frames.push(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers,
        });
        id
    };
    let error = open("error");
    let stdin = s.stdin.then(|| open("stdin"));
    let stdout = s.stdout.then(|| open("stdout"));
    let stderr = (s.stderr && !s.tty).then(|| open("stderr"));
    let resize = s.tty.then(|| open("resize"));
    (
        frames,
        StreamIds {
            error,
            stdin,
            stdout,
            stderr,
            resize,
        },
    )
}

/// Host:port and the request head of the upgrade for `url` (`http://host:port/path?query`).
pub(crate) fn upgrade_request(url: &str) -> Result<(String, Vec<u8>), DialError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| DialError::Url(url.to_string()))?;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty()
        || authority.contains(['\r', '\n', ' '])
        || path.contains(['\r', '\n', ' '])
    {
        return Err(DialError::Url(url.to_string()));
    }
    let path = if path.starts_with('?') || path.is_empty() {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {PROTOCOL}\r\nContent-Length: 0\r\n\r\n"
    );
    Ok((authority.to_string(), head.into_bytes()))
}

/// A response head: status code, headers (names lower-cased), bytes used.
pub(crate) type ResponseHead = (u16, Vec<(String, String)>, usize);

/// Parse the response head at the front of `buf`: `None` while incomplete.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, DialError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(DialError::Malformed)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| DialError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(DialError::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(DialError::Malformed);
    }
    let code: u16 = code.parse().map_err(|_| DialError::Malformed)?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Some((code, headers, end + 4)))
}

/// An upgraded connection: the socket and the bytes already read past the response head.
pub(crate) struct Upgraded {
    pub tcp: TcpStream,
    pub leftover: Vec<u8>,
}

/// Dial `url` and upgrade to SPDY/3.1 with [`PROTOCOL`].
pub(crate) async fn dial(url: &str) -> Result<Upgraded, DialError> {
    let (addr, head) = upgrade_request(url)?;
    let io = |source| DialError::Io {
        addr: addr.clone(),
        source,
    };
    let mut tcp = TcpStream::connect(&addr).await.map_err(io)?;
    let _ = tcp.set_nodelay(true);
    tcp.write_all(&head).await.map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (code, headers, used) = loop {
        if let Some(r) = parse_response(&buf)? {
            break r;
        }
        let n = tcp.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(DialError::Refused(
                "connection closed before a response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let get = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    if code != 101 {
        let body = String::from_utf8_lossy(&buf[used..]).trim().to_string();
        return Err(DialError::Refused(format!("HTTP {code} {body}")));
    }
    if !get("upgrade").eq_ignore_ascii_case("spdy/3.1") {
        return Err(DialError::Refused(format!(
            "upgraded to {:?}, not SPDY/3.1",
            get("upgrade")
        )));
    }
    let chosen = get("x-stream-protocol-version");
    if chosen != PROTOCOL {
        return Err(DialError::Refused(format!(
            "protocol {chosen:?} chosen, {PROTOCOL} needed"
        )));
    }
    Ok(Upgraded {
        tcp,
        leftover: buf.split_off(used),
    })
}

/// Encode frames for the wire.
pub(crate) fn encode_all(codec: &mut Codec, frames: &[Frame]) -> Result<Vec<u8>, SpdyError> {
    let mut out = Vec::new();
    for f in frames {
        out.extend(codec.encode(f)?);
    }
    Ok(out)
}

/// DATA frames carrying `data` on `stream_id` (SPDY lengths are 24 bits; keep frames small),
/// the last one with `FLAG_FIN` when `fin`.
pub(crate) fn data_frames(stream_id: u32, data: &[u8], fin: bool) -> Vec<Frame> {
    const CHUNK: usize = 32 * 1024;
    let mut frames: Vec<Frame> = data
        .chunks(CHUNK)
        .map(|c| Frame::Data {
            stream_id,
            flags: 0,
            data: c.to_vec(),
        })
        .collect();
    if fin {
        match frames.last_mut() {
            Some(Frame::Data { flags, .. }) => *flags = FLAG_FIN,
            _ => frames.push(Frame::Data {
                stream_id,
                flags: FLAG_FIN,
                data: Vec::new(),
            }),
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8slite_api::spdy::header;

    #[test]
    fn streams_in_client_go_order() {
        let (frames, ids) = open_streams(Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        });
        let kinds: Vec<(u32, String)> = frames
            .iter()
            .map(|f| match f {
                Frame::SynStream {
                    stream_id, headers, ..
                } => (
                    *stream_id,
                    header(headers, "streamtype")
                        .expect("test step")
                        .to_string(),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (1, "error".to_string()),
                (3, "stdin".into()),
                (5, "stdout".into()),
                (7, "stderr".into())
            ]
        );
        assert_eq!(
            ids,
            StreamIds {
                error: 1,
                stdin: Some(3),
                stdout: Some(5),
                stderr: Some(7),
                resize: None
            }
        );
        // tty: no stderr, a resize stream.
        let (frames, ids) = open_streams(Streams {
            stdin: false,
            stdout: true,
            stderr: true,
            tty: true,
        });
        assert_eq!(frames.len(), 3);
        assert_eq!(
            (ids.stdout, ids.stderr, ids.resize),
            (Some(3), None, Some(5))
        );
    }

    #[test]
    fn upgrade_head_and_response() {
        let (addr, head) =
            upgrade_request("http://127.0.0.1:4321/exec/AbC?x=1").expect("test step");
        assert_eq!(addr, "127.0.0.1:4321");
        let head = String::from_utf8(head).expect("test step");
        assert!(head.starts_with("GET /exec/AbC?x=1 HTTP/1.1\r\nHost: 127.0.0.1:4321\r\n"));
        assert!(head.contains("\r\nUpgrade: SPDY/3.1\r\n"));
        assert!(head.contains("\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
        assert!(upgrade_request("https://x/y").is_err());
        assert!(upgrade_request("http://a b/").is_err());

        let resp = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
            Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n\x80\x03";
        assert!(parse_response(&resp[..20]).expect("test step").is_none());
        let (code, headers, used) = parse_response(resp).expect("test step").expect("test step");
        assert_eq!(code, 101);
        assert_eq!(used, resp.len() - 2);
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "x-stream-protocol-version" && v == PROTOCOL)
        );
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn data_is_chunked_and_fin_marks_the_end() {
        let big = vec![7u8; 70 * 1024];
        let frames = data_frames(3, &big, true);
        assert_eq!(frames.len(), 3);
        let total: usize = frames
            .iter()
            .map(|f| match f {
                Frame::Data { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, big.len());
        assert!(matches!(
            frames[2],
            Frame::Data {
                flags: FLAG_FIN,
                ..
            }
        ));
        assert!(matches!(frames[0], Frame::Data { flags: 0, .. }));
        assert_eq!(
            data_frames(3, b"", true),
            [Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Vec::new()
            }]
        );
        assert!(data_frames(3, b"", false).is_empty());
    }
}
