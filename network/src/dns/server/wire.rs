//! Responses on the wire: cache keys, answers from upstream copies (TTLs counted down), and
//! encoding fitted to the client's size with the OPT record appended.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::super::forward::Upstream;
use super::{ClientEdns, MAX_UDP_PAYLOAD, OPT_LEN, Request};

/// Cache key: lowercase name, type, class, DO bit.
pub(super) fn cache_key(
    lower: &str,
    qtype: RecordType,
    qclass: DNSClass,
    edns: Option<ClientEdns>,
    key: &mut Vec<u8>,
) {
    key.clear();
    key.extend_from_slice(lower.as_bytes());
    key.push(0);
    key.extend_from_slice(&u16::from(qtype).to_be_bytes());
    key.extend_from_slice(&u16::from(qclass).to_be_bytes());
    key.push(u8::from(edns.is_some_and(|e| e.dnssec_ok)));
}

pub(super) fn aged(records: &[Record], age: u32) -> Vec<Record> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = r.ttl.saturating_sub(age);
            r
        })
        .collect()
}

/// The client's response from an upstream answer (TTLs counted down since it was received).
pub(super) fn cached_response(req: &Request, up: &Upstream) -> Message {
    let mut m = req.response(up.rcode, false);
    let age = up.age();
    m.answers = aged(&up.answers, age);
    m.authorities = aged(&up.authorities, age);
    m.additionals = aged(&up.additionals, age);
    m.metadata.truncation = up.truncated;
    m.metadata.authentic_data = up.authentic_data && req.edns.is_some_and(|e| e.dnssec_ok);
    m
}

/// CNAME of an ExternalName Service followed by the upstream's records of its target.
pub(super) fn alias_response(req: &Request, cname: Record, up: &Upstream) -> Message {
    let mut m = req.response(ResponseCode::NoError, true);
    m.answers.push(cname);
    m.answers.extend(aged(&up.answers, up.age()));
    m.metadata.truncation = up.truncated;
    m
}

/// Encode `m` into `out`, at most `limit` bytes (records that do not fit are left out and TC
/// set), with an OPT record when the client sent one.
pub(super) fn encode(m: &Message, edns: Option<ClientEdns>, limit: usize, out: &mut Vec<u8>) {
    out.clear();
    let reserve = if edns.is_some() { OPT_LEN } else { 0 };
    let max = u16::try_from(limit.saturating_sub(reserve)).unwrap_or(u16::MAX);
    let ok = {
        let mut enc = BinEncoder::new(out);
        enc.set_max_size(max);
        m.emit(&mut enc).is_ok()
    };
    if !ok || out.len() < 12 {
        out.clear();
        let mut bad = Message::error_msg(m.metadata.id, m.metadata.op_code, ResponseCode::ServFail);
        bad.metadata.recursion_desired = m.metadata.recursion_desired;
        let mut enc = BinEncoder::new(out);
        if bad.emit(&mut enc).is_err() {
            return;
        }
    }
    if edns.is_some() {
        // OPT: root name, type 41, our payload size, extended rcode, version 0, no flags.
        let arcount = u16::from_be_bytes([out[10], out[11]]).saturating_add(1);
        out[10..12].copy_from_slice(&arcount.to_be_bytes());
        out.push(0);
        out.extend_from_slice(&41u16.to_be_bytes());
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        out.push(m.metadata.response_code.high());
        out.extend_from_slice(&[0, 0, 0, 0, 0]);
    }
}

/// An error response built from the raw header of a packet that does not parse.
pub(super) fn raw_error(packet: &[u8], rcode: ResponseCode, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&packet[..2]);
    // QR, the client's opcode and RD; RA; rcode.
    out.push(0x80 | (packet[2] & 0x79));
    out.push(0x80 | (rcode.low() & 0x0f));
    out.extend_from_slice(&[0; 8]);
}
