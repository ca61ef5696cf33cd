//! Forwarding to the node's resolvers: one query per upstream in order (UDP, or TCP when the
//! client asked over TCP), failover on timeout, network error, SERVFAIL or REFUSED, and a
//! bounded answer cache (TTLs respected and counted down, denial cached at most 30 s, as
//! CoreDNS's `cache 30` does).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Longest time a positive answer is kept.
const MAX_POSITIVE_TTL: u32 = 3600;
/// Longest time a denial (NXDOMAIN, NODATA) is kept.
const MAX_NEGATIVE_TTL: u32 = 30;
/// Denial TTL when the upstream sent no SOA.
const DEFAULT_NEGATIVE_TTL: u32 = 5;
const SHARDS: usize = 16;

/// An upstream answer as kept in the cache (no OPT record).
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) rcode: ResponseCode,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
    pub(crate) additionals: Vec<Record>,
    pub(crate) truncated: bool,
    pub(crate) authentic_data: bool,
    stored: Instant,
    ttl: u32,
}

impl Upstream {
    /// Seconds since the answer was received (to count TTLs down).
    pub(crate) fn age(&self) -> u32 {
        self.stored.elapsed().as_secs() as u32
    }

    /// When [`age`](Upstream::age) next grows (read before the TTLs are counted down).
    pub(crate) fn next_second(&self) -> Instant {
        self.stored + Duration::from_secs(u64::from(self.age()) + 1)
    }
}

#[cfg(test)]
impl Upstream {
    /// A NOERROR answer with these records, received `age` ago.
    pub(crate) fn answered(answers: Vec<Record>, age: Duration) -> Self {
        let ttl = answers.iter().map(|r| r.ttl).min().unwrap_or(0);
        Self {
            rcode: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals: Vec::new(),
            truncated: false,
            authentic_data: false,
            stored: Instant::now() - age,
            ttl,
        }
    }
}

/// Why no upstream answered.
#[derive(Debug)]
pub(crate) struct AllFailed;

struct Entry {
    value: Arc<Upstream>,
    expires: Instant,
}

/// The answer cache: sharded maps keyed by lowercase name, type, class and DO bit.
pub(crate) struct Cache {
    shards: Vec<Mutex<HashMap<Box<[u8]>, Entry>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl Cache {
    pub(crate) fn new(entries: usize) -> Self {
        let per_shard = entries.div_ceil(SHARDS);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Box<[u8]>, Entry>> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Upstream>> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self.shard(key);
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(key)?;
        if entry.expires > Instant::now() {
            return Some(entry.value.clone());
        }
        map.remove(key);
        None
    }

    pub(crate) fn put(&self, key: &[u8], value: Arc<Upstream>) {
        if self.per_shard == 0 || value.ttl == 0 || value.truncated {
            return;
        }
        let expires = value.stored + Duration::from_secs(u64::from(value.ttl));
        let shard = self.shard(key);
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.per_shard && !map.contains_key(key) {
            let now = Instant::now();
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.per_shard {
                // Full of live entries: drop one (the map's order is random enough).
                if let Some(k) = map.keys().next().cloned() {
                    map.remove(&k);
                }
            }
        }
        map.insert(key.into(), Entry { value, expires });
    }
}

/// The upstream resolvers and the cache in front of them.
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    pub(crate) cache: Cache,
}

impl Forwarder {
    pub(crate) fn new(upstreams: Vec<SocketAddr>, timeout: Duration, cache_entries: usize) -> Self {
        Self {
            upstreams,
            timeout,
            cache: Cache::new(cache_entries),
        }
    }

    /// Ask the upstreams in order; the first usable answer is cached and returned.
    pub(crate) async fn resolve(
        &self,
        key: &[u8],
        query: &Query,
        dnssec_ok: bool,
        checking_disabled: bool,
        tcp: bool,
    ) -> Result<Arc<Upstream>, AllFailed> {
        // A random id (hickory's generator).
        let mut msg = Message::query();
        msg.metadata.recursion_desired = true;
        msg.metadata.checking_disabled = checking_disabled;
        msg.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.set_dnssec_ok(dnssec_ok);
        msg.set_edns(edns);
        let Ok(wire) = msg.to_vec() else {
            return Err(AllFailed);
        };
        for upstream in &self.upstreams {
            let res = if tcp {
                tokio::time::timeout(self.timeout, ask_tcp(*upstream, &wire)).await
            } else {
                tokio::time::timeout(self.timeout, ask_udp(*upstream, &wire)).await
            };
            let reply = match res {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    tracing::debug!(%upstream, error = %e, "dns upstream failed");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%upstream, "dns upstream timed out");
                    continue;
                }
            };
            let Some(reply) = matching_reply(&reply, msg.metadata.id, query) else {
                tracing::debug!(%upstream, "dns upstream sent an unusable reply");
                continue;
            };
            if matches!(
                reply.metadata.response_code,
                ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp
            ) {
                tracing::debug!(%upstream, rcode = %reply.metadata.response_code, "dns upstream refused");
                continue;
            }
            let value = Arc::new(to_upstream(reply));
            self.cache.put(key, value.clone());
            return Ok(value);
        }
        Err(AllFailed)
    }
}

async fn ask_udp(upstream: SocketAddr, wire: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(wire).await?;
    let mut buf = vec![0u8; 65535];
    let n = sock.recv(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

async fn ask_tcp(upstream: SocketAddr, wire: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(wire.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(wire.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(wire);
    stream.write_all(&out).await?;
    let mut lenb = [0u8; 2];
    stream.read_exact(&mut lenb).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lenb))];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The reply if it answers our query (id, response bit, same question).
fn matching_reply(bytes: &[u8], id: u16, query: &Query) -> Option<Message> {
    let reply = Message::from_vec(bytes).ok()?;
    if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response {
        return None;
    }
    let q = reply.queries.first()?;
    (q.query_type() == query.query_type()
        && q.query_class() == query.query_class()
        && q.name().eq_ignore_root(query.name()))
    .then_some(reply)
}

fn to_upstream(reply: Message) -> Upstream {
    let rcode = reply.metadata.response_code;
    let ttl = cache_ttl(&reply);
    Upstream {
        rcode,
        truncated: reply.metadata.truncation,
        authentic_data: reply.metadata.authentic_data,
        answers: reply.answers,
        authorities: reply.authorities,
        additionals: reply.additionals,
        stored: Instant::now(),
        ttl,
    }
}

/// How long an answer may be cached: the smallest TTL of its answers, or for a denial the
/// SOA's negative TTL (min of its TTL and MINIMUM), capped; other rcodes are not cached.
fn cache_ttl(reply: &Message) -> u32 {
    let rcode = reply.metadata.response_code;
    if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
        return 0;
    }
    if rcode == ResponseCode::NoError && !reply.answers.is_empty() {
        let min = reply.answers.iter().map(|r| r.ttl).min().unwrap_or(0);
        return min.min(MAX_POSITIVE_TTL);
    }
    let soa = reply.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) if r.record_type() == RecordType::SOA => Some(r.ttl.min(soa.minimum)),
        _ => None,
    });
    soa.unwrap_or(DEFAULT_NEGATIVE_TTL).min(MAX_NEGATIVE_TTL)
}
