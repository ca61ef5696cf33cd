//! The answer cache: encoded UDP responses keyed by the question, served without parsing the
//! whole request or encoding anything.
//!
//! Only a plain query takes this path: QR 0, opcode 0, AA and TC clear, one question of class
//! IN whose labels are letters, digits, `-` or `_` (no compression pointer), no answer or
//! authority records, and at most an OPT record of version 0 without options and without
//! flags other than DO, with nothing after it. The key is the lowercased question (name,
//! type, class) plus what else shapes the response: EDNS present, the DO bit and the size
//! limit after clamping. A hit copies the cached response and puts the client's ID, RD and
//! CD bits in: byte for byte what the full path would send.
//!
//! A hit also needs the question in the same letter case as the one the entry was answered
//! for: hickory compresses names by exact bytes, so where a record name shares a suffix with
//! the question the response's layout depends on the question's case. A query in another
//! case (say with 0x20 randomisation) takes the full path, and its answer replaces the entry.
//!
//! Anything else takes the full path, which fills the cache. Every answer lives as long as
//! the records it was answered with (a generation number); answers from the forwarding cache
//! also only within the whole second their TTLs were counted down to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Most entries kept.
const MAX_ENTRIES: usize = 2048;
/// Most bytes kept (keys, responses and a rough per-entry overhead).
const MAX_BYTES: usize = 256 * 1024;
/// Bookkeeping bytes counted per entry (map slot, boxes).
const ENTRY_OVERHEAD: usize = 64;
/// Longest name on the wire.
const MAX_NAME: usize = 255;
/// Record types never answered from this cache (zone transfers, OPT as a question).
const SLOW_TYPES: [u16; 3] = [41, 251, 252];

/// How long a cached response is right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Validity {
    /// While the records served have this generation (every answer: replaced records may
    /// turn a forwarded name into a cluster name).
    pub(super) generation: u64,
    /// And before this moment (a forwarded answer: its TTLs change on the next second).
    pub(super) until: Option<Instant>,
}

impl Validity {
    fn holds(&self, generation: u64, now: impl FnOnce() -> Instant) -> bool {
        self.generation == generation && self.until.is_none_or(|t| now() < t)
    }
}

struct Entry {
    response: Box<[u8]>,
    valid: Validity,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Box<[u8]>, Entry>,
    bytes: usize,
}

/// Encoded responses by question (see the module documentation).
pub(super) struct AnswerCache {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for AnswerCache {
    fn default() -> Self {
        Self::with_bounds(MAX_ENTRIES, MAX_BYTES)
    }
}

/// A plain query's key and where its question ends.
pub(super) struct Plain {
    /// Offset after the question's type and class.
    pub(super) qend: usize,
}

/// Parse `packet` as a plain query: its key into `key`, or `None` for anything else.
pub(super) fn plain_query(packet: &[u8], key: &mut Vec<u8>) -> Option<Plain> {
    key.clear();
    let header = packet.get(..12)?;
    // QR, opcode, AA, TC must be 0 (RD is free); byte 3 (RA, Z, AD, CD, rcode) is ignored.
    if header[2] & 0xfe != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let arcount = count(10);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || arcount > 1 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = usize::from(*packet.get(i)?);
        if len == 0 {
            key.push(0);
            i += 1;
            break;
        }
        if len > 63 || i + 1 + len - 12 >= MAX_NAME {
            return None;
        }
        let label = packet.get(i + 1..i + 1 + len)?;
        key.push(len as u8);
        for &b in label {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return None;
            }
            key.push(b.to_ascii_lowercase());
        }
        i += 1 + len;
    }
    let tail = packet.get(i..i + 4)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    if tail[2..4] != [0, 1] || SLOW_TYPES.contains(&qtype) {
        return None;
    }
    key.extend_from_slice(tail);
    let qend = i + 4;
    let rest = &packet[qend..];
    if arcount == 0 {
        if !rest.is_empty() {
            return None;
        }
        key.extend_from_slice(&[0, 0, 0]);
        return Some(Plain { qend });
    }
    // OPT: root name, type 41, payload, extended rcode 0, version 0, flags DO only, no data.
    if rest.len() != 11 || rest[0] != 0 || rest[1..3] != [0, 41] {
        return None;
    }
    let payload = u16::from_be_bytes([rest[3], rest[4]]);
    let flags = u16::from_be_bytes([rest[7], rest[8]]);
    if rest[5] != 0 || rest[6] != 0 || flags & 0x7fff != 0 || rest[9..11] != [0, 0] {
        return None;
    }
    let limit = payload.clamp(512, super::MAX_UDP_PAYLOAD);
    key.push(1 | u8::from(flags & 0x8000 != 0) << 1);
    key.extend_from_slice(&limit.to_be_bytes());
    Some(Plain { qend })
}

impl AnswerCache {
    /// A cache holding at most `max_entries` entries and about `max_bytes` bytes.
    pub(super) fn with_bounds(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_entries,
            max_bytes,
        }
    }

    /// Write the cached response to `packet` (a plain query with this key) into `out`; false
    /// when there is none that is still right.
    pub(super) fn serve(
        &self,
        key: &[u8],
        packet: &[u8],
        plain: &Plain,
        generation: u64,
        out: &mut Vec<u8>,
    ) -> bool {
        let qend = plain.qend;
        {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let Some(e) = inner.map.get(key) else {
                return false;
            };
            // The same question, letter for letter.
            if !e.valid.holds(generation, Instant::now)
                || e.response.get(12..qend) != packet.get(12..qend)
            {
                return false;
            }
            out.clear();
            out.extend_from_slice(&e.response);
        }
        out[..2].copy_from_slice(&packet[..2]);
        out[2] = (out[2] & !0x01) | (packet[2] & 0x01);
        out[3] = (out[3] & !0x10) | (packet[3] & 0x10);
        true
    }

    /// Keep `response` (the full path's answer to `packet`, a plain query with this key).
    pub(super) fn insert(
        &self,
        key: &[u8],
        packet: &[u8],
        plain: &Plain,
        response: &[u8],
        valid: Validity,
    ) {
        let qend = plain.qend;
        // The response must carry exactly the question asked (not an error without one).
        if response.len() < qend
            || response[4..6] != [0, 1]
            || response.get(12..qend) != packet.get(12..qend)
        {
            return;
        }
        let size = key.len() + response.len() + ENTRY_OVERHEAD;
        if self.max_entries == 0 || size > self.max_bytes {
            return;
        }
        let entry = Entry {
            response: response.into(),
            valid,
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.map.remove(key) {
            inner.bytes -= key.len() + old.response.len() + ENTRY_OVERHEAD;
        }
        if inner.map.len() >= self.max_entries || inner.bytes + size > self.max_bytes {
            self.evict(&mut inner, size, valid.generation);
        }
        inner.bytes += size;
        inner.map.insert(key.into(), entry);
    }

    /// Make room for `size` bytes: drop what is stale, then (still full) arbitrary entries
    /// down to three quarters of the bounds, so that eviction stays rare.
    fn evict(&self, inner: &mut Inner, size: usize, generation: u64) {
        let now = Instant::now();
        let mut freed = 0;
        inner.map.retain(|k, e| {
            let live = e.valid.holds(generation, || now);
            if !live {
                freed += k.len() + e.response.len() + ENTRY_OVERHEAD;
            }
            live
        });
        inner.bytes -= freed;
        let entries = self.max_entries * 3 / 4;
        let bytes = (self.max_bytes * 3 / 4).saturating_sub(size);
        if inner.map.len() < self.max_entries && inner.bytes + size <= self.max_bytes {
            return;
        }
        let mut left = inner.map.len();
        let mut held = inner.bytes;
        inner.map.retain(|k, e| {
            if left <= entries && held <= bytes {
                return true;
            }
            left -= 1;
            held -= k.len() + e.response.len() + ENTRY_OVERHEAD;
            false
        });
        inner.bytes = held;
    }

    /// Entries and bytes held (for tests).
    #[cfg(test)]
    pub(super) fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.map.len(), inner.bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
