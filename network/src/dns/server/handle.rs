//! One request: the checks (FORMERR, NOTIMP, REFUSED, BADVERS), the answer from the current
//! [`Records`](super::super::records::Records) or the forwarding cache, or a [`Pending`] query
//! for the upstreams.

use std::sync::Arc;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use tokio::sync::Semaphore;

use super::super::forward::Forwarder;
use super::super::records::{Lookup, lower_name};
use super::fast::{AnswerCache, Validity, plain_query};
use super::wire::{alias_response, cache_key, cached_response, encode, raw_error};
use super::{MAX_UDP_PAYLOAD, RecordsHandle};

/// Per-task buffers reused across queries.
#[derive(Default)]
pub(super) struct Scratch {
    lower: String,
    key: Vec<u8>,
    /// Key of the answer cache.
    fast_key: Vec<u8>,
    /// Set by the full path when its reply may be kept in the answer cache.
    valid: Option<Validity>,
}

/// What the client said beyond the question.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientEdns {
    pub(super) payload: u16,
    pub(super) dnssec_ok: bool,
}

#[derive(Debug)]
pub(super) struct Request {
    pub(super) id: u16,
    pub(super) rd: bool,
    pub(super) cd: bool,
    pub(super) query: Query,
    pub(super) edns: Option<ClientEdns>,
}

impl Request {
    pub(super) fn limit(&self, tcp: bool) -> usize {
        if tcp {
            return usize::from(u16::MAX);
        }
        let payload = self
            .edns
            .map(|e| e.payload.clamp(512, MAX_UDP_PAYLOAD))
            .unwrap_or(512);
        usize::from(payload)
    }

    pub(super) fn response(&self, rcode: ResponseCode, authoritative: bool) -> Message {
        let mut m = Message::response(self.id, OpCode::Query);
        m.metadata.recursion_desired = self.rd;
        m.metadata.recursion_available = true;
        m.metadata.checking_disabled = self.cd;
        m.metadata.authoritative = authoritative;
        m.metadata.response_code = rcode;
        m.add_query(self.query.clone());
        m
    }
}

/// A query that needs the upstreams.
#[derive(Debug)]
pub(super) struct Pending {
    req: Request,
    key: Vec<u8>,
    /// For an ExternalName: the CNAME to put before the target's records.
    cname: Option<Record>,
}

pub(super) enum Outcome {
    /// The response is in the output buffer.
    Reply,
    /// Needs an upstream query.
    Later(Box<Pending>),
    /// Send nothing (not a query, or too short to answer).
    Nothing,
}

pub(super) struct Handler {
    pub(super) records: RecordsHandle,
    pub(super) answers: AnswerCache,
    pub(super) forwarder: Forwarder,
    pub(super) pending: Arc<Semaphore>,
}

impl Handler {
    /// Answer `packet` into `out`, or say what else to do. Over UDP a plain query is first
    /// looked up in the answer cache, and a cacheable reply of the full path is kept there.
    pub(super) fn handle(
        &self,
        packet: &[u8],
        tcp: bool,
        s: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let plain = if tcp {
            None
        } else {
            plain_query(packet, &mut s.fast_key)
        };
        let Some(plain) = plain else {
            return self.handle_full(packet, tcp, s, out);
        };
        if self
            .answers
            .serve(&s.fast_key, packet, &plain, self.records.generation(), out)
        {
            return Outcome::Reply;
        }
        s.valid = None;
        let outcome = self.handle_full(packet, tcp, s, out);
        if let (Outcome::Reply, Some(valid)) = (&outcome, s.valid.take()) {
            self.answers.insert(&s.fast_key, packet, &plain, out, valid);
        }
        outcome
    }

    /// The full path: parse, check, look up, encode.
    pub(super) fn handle_full(
        &self,
        packet: &[u8],
        tcp: bool,
        s: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Outcome {
        // Too short for a header, or a response (never answer those: no loops).
        if packet.len() < 12 || packet[2] & 0x80 != 0 {
            return Outcome::Nothing;
        }
        let msg = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(_) => {
                raw_error(packet, ResponseCode::FormErr, out);
                return Outcome::Reply;
            }
        };
        let edns = msg.edns.as_ref().map(|e| ClientEdns {
            payload: e.max_payload(),
            dnssec_ok: e.flags().dnssec_ok,
        });
        let version = msg.edns.as_ref().map_or(0, |e| e.version());
        let op = msg.metadata.op_code;
        let Message {
            metadata,
            mut queries,
            ..
        } = msg;
        if op != OpCode::Query || queries.len() != 1 {
            let rcode = if op != OpCode::Query {
                ResponseCode::NotImp
            } else {
                ResponseCode::FormErr
            };
            let mut m = Message::error_msg(metadata.id, op, rcode);
            m.metadata.recursion_desired = metadata.recursion_desired;
            m.queries = queries;
            encode(&m, edns, 512, out);
            return Outcome::Reply;
        }
        let query = queries.swap_remove(0);
        let req = Request {
            id: metadata.id,
            rd: metadata.recursion_desired,
            cd: metadata.checking_disabled,
            query,
            edns,
        };
        let limit = req.limit(tcp);
        if version > 0 {
            encode(
                &req.response(ResponseCode::BADVERS, false),
                edns,
                limit,
                out,
            );
            return Outcome::Reply;
        }
        let qtype = req.query.query_type();
        let qclass = req.query.query_class();
        let rcode = match (qclass, qtype) {
            (DNSClass::IN, RecordType::AXFR | RecordType::IXFR) => Some(ResponseCode::Refused),
            (DNSClass::IN, RecordType::OPT) => Some(ResponseCode::FormErr),
            (DNSClass::IN, _) => None,
            _ => Some(ResponseCode::NotImp),
        };
        if let Some(rcode) = rcode {
            encode(&req.response(rcode, false), edns, limit, out);
            return Outcome::Reply;
        }

        let (records, generation) = self.records.with_generation();
        // Every reply from here on depends only on the question and these records, except
        // where noted below.
        s.valid = Some(Validity {
            generation,
            until: None,
        });
        let qname = req.query.name();
        let lookup = if lower_name(qname, &mut s.lower) {
            records.lookup(&s.lower, qname, qtype)
        } else {
            // A label with a dot or a non-ASCII byte: no cluster name; the escaped text is the
            // cache key.
            s.lower = qname.to_lowercase().to_ascii();
            if Name::from_ascii(records.domain()).is_ok_and(|d| d.zone_of(qname)) {
                Lookup::NxDomain
            } else {
                Lookup::Forward
            }
        };
        match lookup {
            Lookup::Answer {
                answers,
                additionals,
            } => {
                let mut m = req.response(ResponseCode::NoError, true);
                m.answers = answers;
                m.additionals = additionals;
                encode(&m, edns, limit, out);
            }
            Lookup::NoData | Lookup::NxDomain => {
                let rcode = if matches!(lookup, Lookup::NxDomain) {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                let mut m = req.response(rcode, true);
                m.authorities.push(records.soa().clone());
                encode(&m, edns, limit, out);
            }
            Lookup::Alias { cname, target } => {
                if qtype == RecordType::CNAME {
                    let mut m = req.response(ResponseCode::NoError, true);
                    m.answers.push(*cname);
                    encode(&m, edns, limit, out);
                    return Outcome::Reply;
                }
                // A target inside the cluster domain is answered from the records.
                let mut tl = String::new();
                if lower_name(&target, &mut tl) {
                    match records.lookup(&tl, &target, qtype) {
                        Lookup::Forward => {}
                        Lookup::Answer {
                            answers,
                            additionals,
                        } => {
                            let mut m = req.response(ResponseCode::NoError, true);
                            m.answers.push(*cname);
                            m.answers.extend(answers);
                            m.additionals = additionals;
                            encode(&m, edns, limit, out);
                            return Outcome::Reply;
                        }
                        _ => {
                            let mut m = req.response(ResponseCode::NoError, true);
                            m.answers.push(*cname);
                            encode(&m, edns, limit, out);
                            return Outcome::Reply;
                        }
                    }
                }
                let target_query = Query::query(target, qtype);
                let mut key = Vec::new();
                cache_key(&tl, qtype, qclass, edns, &mut key);
                let mut req = req;
                if let Some(hit) = self.forwarder.cache.get(&key) {
                    // Mixes cluster and forwarded TTLs: not kept.
                    s.valid = None;
                    let m = alias_response(&req, *cname, &hit);
                    encode(&m, edns, limit, out);
                    return Outcome::Reply;
                }
                req.query = target_query;
                return Outcome::Later(Box::new(Pending {
                    req,
                    key,
                    cname: Some(*cname),
                }));
            }
            Lookup::Forward => {
                cache_key(&s.lower, qtype, qclass, edns, &mut s.key);
                if let Some(hit) = self.forwarder.cache.get(&s.key) {
                    // The TTLs counted down are right until the next whole second of age.
                    s.valid = Some(Validity {
                        generation,
                        until: Some(hit.next_second()),
                    });
                    encode(&cached_response(&req, &hit), edns, limit, out);
                    return Outcome::Reply;
                }
                return Outcome::Later(Box::new(Pending {
                    req,
                    key: s.key.clone(),
                    cname: None,
                }));
            }
        }
        Outcome::Reply
    }

    /// Answer a pending query through the upstreams into `out`.
    pub(super) async fn finish(&self, p: Box<Pending>, tcp: bool, out: &mut Vec<u8>) {
        let p = *p;
        let dnssec_ok = p.req.edns.is_some_and(|e| e.dnssec_ok);
        let res = self
            .forwarder
            .resolve(&p.key, &p.req.query, dnssec_ok, p.req.cd, tcp)
            .await;
        let limit = p.req.limit(tcp);
        match (res, p.cname) {
            (Ok(up), None) => encode(&cached_response(&p.req, &up), p.req.edns, limit, out),
            (Ok(up), Some(cname)) => {
                let mut req = p.req;
                // The client asked for the alias: the question it sent is the alias name.
                req.query = Query::query(cname.name.clone(), req.query.query_type());
                encode(&alias_response(&req, cname, &up), req.edns, limit, out)
            }
            (Err(_), None) => encode(
                &p.req.response(ResponseCode::ServFail, false),
                p.req.edns,
                limit,
                out,
            ),
            (Err(_), Some(cname)) => {
                let mut req = p.req;
                req.query = Query::query(cname.name.clone(), req.query.query_type());
                let mut m = req.response(ResponseCode::NoError, true);
                m.answers.push(cname);
                encode(&m, req.edns, limit, out)
            }
        }
    }
}
