//! JSON bytes as the Kubernetes API server's Go encoder writes them: compact, `<`, `>`, `&`,
//! U+2028 and U+2029 escaped as `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029` (Go's
//! `encoding/json` escapes HTML by default), and a trailing newline (`json.Encoder.Encode`).
//! Key order is the caller's: build values in the Go struct's field order (serde_json keeps
//! insertion order here).

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

/// Compact output (the trait's defaults) plus Go's extra string escapes.
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let esc = match ch {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(esc.as_bytes())?;
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `v` as Go's `json.Encoder` writes it, newline included.
pub fn to_vec<T: Serialize + ?Sized>(v: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    v.serialize(&mut ser)?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    #[test]
    fn escapes_as_go_and_ends_with_a_newline() {
        let v = json!({"kind": "Status", "message": "a <b> & c\u{2028}d \"q\" \\ é"});
        let got = String::from_utf8(super::to_vec(&v).unwrap()).unwrap();
        assert_eq!(
            got,
            "{\"kind\":\"Status\",\"message\":\"a \\u003cb\\u003e \\u0026 c\\u2028d \\\"q\\\" \\\\ é\"}\n"
        );
    }
}
