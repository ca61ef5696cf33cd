//! The WebSocket channel protocols (`*.channel.k8s.io`) as clients speak them, and the one the
//! kubelet speaks: every message is one channel byte followed by that channel's data.
//!
//! Clients differ in framing: binary or text WebSocket messages (the Python client sends `str`
//! data as text messages; upstream reads both alike) and the base64 variants
//! (`v4.base64.channel.k8s.io`, …), where each message is text: the channel as an ASCII digit,
//! then the data in base64. The kubelet side is always binary; [`Framing`] converts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio_tungstenite::tungstenite::Message;

/// How a client frames channel messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Channel byte then raw data, in binary (or text) messages.
    Binary,
    /// Text messages: channel digit then base64 data.
    Base64,
}

impl Framing {
    /// The framing of a negotiated subprotocol (`""` when the client offered none: binary).
    pub(crate) fn of(protocol: &str) -> Self {
        if protocol.contains("base64.channel.k8s.io") {
            Self::Base64
        } else {
            Self::Binary
        }
    }

    /// A client message as the kubelet's binary channel message; `None` for control messages
    /// and messages that carry no channel (empty, or base64 that does not decode).
    pub(crate) fn to_backend(self, m: Message) -> Option<Message> {
        let raw: Vec<u8> = match m {
            Message::Binary(b) => b.to_vec(),
            Message::Text(t) => t.as_bytes().to_vec(),
            _ => return None,
        };
        let (&first, rest) = raw.split_first()?;
        match self {
            Self::Binary => Some(Message::Binary(raw.into())),
            Self::Base64 => {
                let channel = first.checked_sub(b'0')?;
                let mut out = vec![channel];
                STANDARD.decode_vec(rest, &mut out).ok()?;
                Some(Message::Binary(out.into()))
            }
        }
    }

    /// A kubelet message as the client expects it; `None` for control messages.
    pub(crate) fn to_client(self, m: Message) -> Option<Message> {
        let raw: Vec<u8> = match m {
            Message::Binary(b) => b.to_vec(),
            Message::Text(t) => t.as_bytes().to_vec(),
            _ => return None,
        };
        match self {
            Self::Binary => Some(Message::Binary(raw.into())),
            Self::Base64 => {
                let (&channel, rest) = raw.split_first()?;
                let mut text = String::with_capacity(1 + rest.len().div_ceil(3) * 4);
                text.push(char::from(b'0'.saturating_add(channel)));
                STANDARD.encode_string(rest, &mut text);
                Some(Message::Text(text.into()))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bytes(m: Option<Message>) -> Vec<u8> {
        match m {
            Some(Message::Binary(b)) => b.to_vec(),
            other => panic!("not binary: {other:?}"),
        }
    }

    #[test]
    fn text_and_binary_messages_reach_the_kubelet_alike() {
        let f = Framing::of("v5.channel.k8s.io");
        assert_eq!(f, Framing::Binary);
        let text = f.to_backend(Message::Text("\u{0}echo test string 1\n".into()));
        assert_eq!(bytes(text), b"\x00echo test string 1\n");
        let bin = f.to_backend(Message::Binary(b"\x00abc".to_vec().into()));
        assert_eq!(bytes(bin), b"\x00abc");
        assert!(f.to_backend(Message::Ping(Vec::new().into())).is_none());
        assert!(f.to_backend(Message::Binary(Vec::new().into())).is_none());
    }

    #[test]
    fn base64_both_ways() {
        let f = Framing::of("v4.base64.channel.k8s.io");
        assert_eq!(f, Framing::Base64);
        assert_eq!(Framing::of("base64.channel.k8s.io"), Framing::Base64);
        // "0" + base64("GET /\r\n") → channel 0 with the raw bytes
        let up = f.to_backend(Message::Text("0R0VUIC8NCg==".into()));
        assert_eq!(bytes(up), b"\x00GET /\r\n");
        let down = f.to_client(Message::Binary(b"\x01hello".to_vec().into()));
        assert_eq!(down, Some(Message::Text("1aGVsbG8=".into())));
        // the port prefix of a port-forward channel survives: 80 little-endian
        let down = f.to_client(Message::Binary(vec![2, 80, 0].into()));
        assert_eq!(down, Some(Message::Text("2UAA=".into())));
        assert!(f.to_backend(Message::Text("0not base64!".into())).is_none());
        assert!(f.to_backend(Message::Text("".into())).is_none());
    }
}
