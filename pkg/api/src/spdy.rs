//! SPDY/3.1 framing, as far as Kubernetes' streaming protocols use it (kubectl's port-forward
//! tunnels SPDY over a WebSocket; older kubectl speaks it over an upgraded connection).
//!
//! Frames: SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE
//! and DATA. Header blocks are compressed with one zlib stream per direction and connection,
//! primed with the SPDY/3 dictionary (`spdy3.dict`, 1423 bytes, a constant of the protocol).
//!
//! Pure: the API server's port-forward and the kubelet API's exec/attach client (towards the
//! runtime's streaming server) do the I/O.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY/3 header compression dictionary.
pub const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");

/// `FLAG_FIN`: the sender's half of the stream ends with this frame.
pub const FLAG_FIN: u8 = 0x01;
/// Largest frame payload accepted (SPDY lengths are 24 bits).
const MAX_LEN: usize = 0x00ff_ffff;
/// Largest decompressed header block accepted.
const MAX_HEADERS: usize = 256 * 1024;

/// What failed in SPDY.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A frame is malformed.
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    /// A header block could not be (de)compressed.
    #[error("SPDY header compression: {0}")]
    Compression(String),
    /// Unsupported version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
}

/// Header name/value pairs (names lower-case; several values joined by NUL).
pub type Headers = Vec<(String, String)>;

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream (odd from the client, even from the server).
        stream_id: u32,
        /// Stream it is associated to (0: none).
        associated_to: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// `FLAG_FIN` and/or `FLAG_UNIDIRECTIONAL`.
        flags: u8,
        /// Headers (`streamtype`, …).
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The accepted stream.
        stream_id: u32,
        /// `FLAG_FIN` or 0.
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// The aborted stream.
        stream_id: u32,
        /// Status code (1 PROTOCOL_ERROR, 5 CANCEL, …).
        status: u32,
    },
    /// Settings (id, value) pairs with their flags.
    Settings {
        /// Frame flags.
        flags: u8,
        /// (flags, id, value) per setting.
        entries: Vec<(u8, u32, u32)>,
    },
    /// Ping (echoed by the peer).
    Ping {
        /// Ping id (odd from the client).
        id: u32,
    },
    /// The session ends.
    GoAway {
        /// Last stream the sender accepted.
        last_stream_id: u32,
        /// Status (0 OK).
        status: u32,
    },
    /// More headers on a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN` or 0.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow control credit.
    WindowUpdate {
        /// The stream (0: the connection).
        stream_id: u32,
        /// Credit added.
        delta: u32,
    },
    /// Payload of a stream.
    Data {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN` when the sender's half ends here.
        flags: u8,
        /// Payload.
        data: Vec<u8>,
    },
}

/// Header block compression state of one connection (both directions).
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Codec {
    /// Fresh compression contexts.
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Priming the compressor cannot fail for a valid, fresh stream; if it did, the peer
        // would still inflate our blocks (the dictionary is then simply not referenced).
        let _ = deflate.set_dictionary(DICTIONARY);
        Self {
            inflate: Decompress::new(true),
            deflate,
        }
    }

    /// Parse one frame from the front of `buf`; `None` when more bytes are needed. Returns the
    /// frame and the bytes it used.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let flags = buf[4];
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let p = &buf[8..8 + len];
        let used = 8 + len;
        if buf[0] & 0x80 == 0 {
            let stream_id = be32(buf) & 0x7fff_ffff;
            return Ok(Some((
                Frame::Data {
                    stream_id,
                    flags,
                    data: p.to_vec(),
                },
                used,
            )));
        }
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != 3 {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        let need = |n: usize| {
            if p.len() < n {
                Err(SpdyError::Malformed("control frame too short"))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            1 => {
                need(10)?;
                Frame::SynStream {
                    stream_id: be32(p) & 0x7fff_ffff,
                    associated_to: be32(&p[4..]) & 0x7fff_ffff,
                    priority: p[8] >> 5,
                    flags,
                    headers: self.inflate_headers(&p[10..])?,
                }
            }
            2 => {
                need(4)?;
                Frame::SynReply {
                    stream_id: be32(p) & 0x7fff_ffff,
                    flags,
                    headers: self.inflate_headers(&p[4..])?,
                }
            }
            3 => {
                need(8)?;
                Frame::RstStream {
                    stream_id: be32(p) & 0x7fff_ffff,
                    status: be32(&p[4..]),
                }
            }
            4 => {
                need(4)?;
                let n = be32(p) as usize;
                if p.len() < 4 + n.saturating_mul(8) {
                    return Err(SpdyError::Malformed("SETTINGS shorter than its entries"));
                }
                let entries = (0..n)
                    .map(|i| {
                        let e = &p[4 + i * 8..];
                        (e[0], be32(e) & 0x00ff_ffff, be32(&e[4..]))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            6 => {
                need(4)?;
                Frame::Ping { id: be32(p) }
            }
            7 => {
                need(8)?;
                Frame::GoAway {
                    last_stream_id: be32(p) & 0x7fff_ffff,
                    status: be32(&p[4..]),
                }
            }
            8 => {
                need(4)?;
                Frame::Headers {
                    stream_id: be32(p) & 0x7fff_ffff,
                    flags,
                    headers: self.inflate_headers(&p[4..])?,
                }
            }
            9 => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: be32(p) & 0x7fff_ffff,
                    delta: be32(&p[4..]) & 0x7fff_ffff,
                }
            }
            _ => return Err(SpdyError::Malformed("unknown control frame type")),
        };
        Ok(Some((frame, used)))
    }

    /// Serialise a frame (header blocks compressed).
    pub fn encode(&mut self, f: &Frame) -> Result<Vec<u8>, SpdyError> {
        let control = |kind: u16, flags: u8, payload: Vec<u8>| -> Result<Vec<u8>, SpdyError> {
            if payload.len() > MAX_LEN {
                return Err(SpdyError::Malformed("frame too long"));
            }
            let mut out = Vec::with_capacity(8 + payload.len());
            out.extend_from_slice(&(0x8003u16).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&payload);
            Ok(out)
        };
        match f {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut p = Vec::new();
                p.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                p.push(priority << 5);
                p.push(0);
                p.extend(self.deflate_headers(headers)?);
                control(1, *flags, p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend(self.deflate_headers(headers)?);
                control(2, *flags, p)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend(self.deflate_headers(headers)?);
                control(8, *flags, p)
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(3, 0, p)
            }
            Frame::Settings { flags, entries } => {
                let mut p = (entries.len() as u32).to_be_bytes().to_vec();
                for (f, id, v) in entries {
                    let idf = (u32::from(*f) << 24) | (id & 0x00ff_ffff);
                    p.extend_from_slice(&idf.to_be_bytes());
                    p.extend_from_slice(&v.to_be_bytes());
                }
                control(4, *flags, p)
            }
            Frame::Ping { id } => control(6, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_stream_id,
                status,
            } => {
                let mut p = (last_stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(7, 0, p)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(9, 0, p)
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_LEN {
                    return Err(SpdyError::Malformed("frame too long"));
                }
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                Ok(out)
            }
        }
    }

    fn inflate_headers(&mut self, input: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate(input)?;
        parse_header_block(&raw)
    }

    /// Decompress one header block (the zlib stream continues across blocks).
    pub fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0usize;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let before = self.inflate.total_in();
            let r = self
                .inflate
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += usize::try_from(self.inflate.total_in() - before).unwrap_or(usize::MAX);
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if pos >= input.len() && out.len() < out.capacity() {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            if out.len() > MAX_HEADERS {
                return Err(SpdyError::Compression("header block too large".into()));
            }
        }
        Ok(out)
    }

    fn deflate_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        self.deflate(&header_block(headers))
    }

    /// Compress one header block, ending it with a sync flush.
    pub fn deflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(input.len() + 64);
        let mut pos = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&input[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            pos += usize::try_from(self.deflate.total_in() - before).unwrap_or(usize::MAX);
            if pos >= input.len() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }
}

/// The uncompressed header block: count, then length-prefixed names and values.
pub fn header_block(headers: &Headers) -> Vec<u8> {
    let mut b = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn parse_header_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let short = SpdyError::Malformed("header block truncated");
    if b.len() < 4 {
        return Err(short);
    }
    let n = be32(b) as usize;
    let mut pos = 4;
    let take = |pos: &mut usize| -> Result<String, SpdyError> {
        if b.len() < *pos + 4 {
            return Err(SpdyError::Malformed("header block truncated"));
        }
        let len = be32(&b[*pos..]) as usize;
        *pos += 4;
        if b.len() < *pos + len {
            return Err(SpdyError::Malformed("header block truncated"));
        }
        let s = String::from_utf8_lossy(&b[*pos..*pos + len]).into_owned();
        *pos += len;
        Ok(s)
    };
    let mut headers = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let k = take(&mut pos)?;
        let v = take(&mut pos)?;
        headers.push((k.to_ascii_lowercase(), v));
    }
    Ok(headers)
}

/// A header's value.
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }

    fn roundtrip(frames: &[Frame]) {
        let mut a = Codec::new();
        let mut b = Codec::new();
        let mut wire = Vec::new();
        for f in frames {
            wire.extend(a.encode(f).expect("encode"));
        }
        let mut pos = 0;
        for f in frames {
            let (got, used) = b.decode(&wire[pos..]).expect("decode").expect("complete");
            assert_eq!(&got, f);
            pos += used;
        }
        assert_eq!(pos, wire.len());
        assert!(b.decode(&wire[..3]).expect("short").is_none());
    }

    #[test]
    fn frames_round_trip() {
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        roundtrip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 2,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536), (1, 4, 100)],
            },
            Frame::Ping { id: 7 },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 4096,
            },
            Frame::Headers {
                stream_id: 3,
                flags: 0,
                headers: h(&[("a", "b\0c")]),
            },
            Frame::GoAway {
                last_stream_id: 3,
                status: 0,
            },
        ]);
    }

    #[test]
    fn inflates_a_block_compressed_with_the_dictionary() {
        // A peer compressing with the dictionary (zlib FDICT set) as Go's spdy framer does.
        let block = header_block(&vec![("streamtype".into(), "data".into())]);
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(DICTIONARY).expect("dictionary");
        let mut z = Vec::with_capacity(256);
        c.compress_vec(&block, &mut z, FlushCompress::Sync)
            .expect("compress");
        assert_eq!(z[1] & 0x20, 0x20, "FDICT flag set");
        let mut codec = Codec::new();
        assert_eq!(codec.inflate(&z).expect("inflate"), block);
        // The stream continues: a second block on the same context.
        let mut z2 = Vec::with_capacity(256);
        c.compress_vec(&block, &mut z2, FlushCompress::Sync)
            .expect("compress");
        assert_eq!(codec.inflate(&z2).expect("inflate"), block);
    }
}
