//! The server: UDP and TCP sockets on every listen address, request checks (FORMERR, NOTIMP,
//! REFUSED, BADVERS), answers from the current [`Records`] or through the [`Forwarder`], and
//! responses fitted to the client's size (TC set when records were dropped).
//!
//! Local answers and cache hits are answered inline by several receive tasks per UDP socket;
//! only upstream queries get a task of their own. Response assembly and encoding: `wire`.

mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::forward::Forwarder;
use super::records::{Lookup, Records, lower_name};
use super::{DnsConfig, DnsError, Result};
use wire::{alias_response, cache_key, cached_response, encode, raw_error};

/// Largest UDP response we send, whatever the client offers.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// Receive buffer per UDP task.
const RECV_BUFFER: usize = 4096;
/// Concurrent TCP connections.
const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection idle this long is closed (CoreDNS: 10 s).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Upper bound of concurrent upstream queries from UDP clients.
const MAX_PENDING: usize = 1024;
/// Size of an OPT record without options.
const OPT_LEN: usize = 11;

/// The records served, replaceable while the server runs (cheap to clone).
#[derive(Clone)]
pub struct RecordsHandle {
    current: Arc<RwLock<Arc<Records>>>,
    ttl: u32,
}

impl RecordsHandle {
    /// Serve these records from now on (queries in flight finish with the old ones).
    pub fn replace(&self, mut records: Records) {
        records.set_ttl(self.ttl);
        let records = Arc::new(records);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = records;
    }

    /// The records served now.
    pub fn current(&self) -> Arc<Records> {
        self.get()
    }

    fn get(&self) -> Arc<Records> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The cluster DNS server, bound and ready to [`run`](DnsServer::run).
pub struct DnsServer {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
    handler: Arc<Handler>,
}

impl DnsServer {
    /// Bind UDP and TCP on every listen address (for port 0, TCP takes the port UDP got).
    pub async fn bind(cfg: DnsConfig) -> Result<Self> {
        if cfg.listen.is_empty() {
            return Err(DnsError::Config("no listen address".into()));
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in &cfg.listen {
            let (u, t) = bind_pair(*addr).await?;
            udp.push(Arc::new(u));
            tcp.push(t);
        }
        let mut records = Records::empty(&cfg.cluster_domain);
        records.set_ttl(cfg.ttl);
        let handler = Arc::new(Handler {
            records: RecordsHandle {
                current: Arc::new(RwLock::new(Arc::new(records))),
                ttl: cfg.ttl,
            },
            forwarder: Forwarder::new(cfg.upstreams, cfg.upstream_timeout, cfg.cache_entries),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
        });
        Ok(Self { udp, tcp, handler })
    }

    /// The handle through which the agent replaces the records.
    pub fn records(&self) -> RecordsHandle {
        self.handler.records.clone()
    }

    /// The bound addresses (one per listen address; UDP and TCP share it).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Serve until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let mut tasks = JoinSet::new();
        let receivers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8);
        for sock in &self.udp {
            for _ in 0..receivers {
                tasks.spawn(udp_loop(
                    sock.clone(),
                    self.handler.clone(),
                    shutdown.clone(),
                ));
            }
        }
        let conns = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        for listener in self.tcp {
            tasks.spawn(tcp_accept_loop(
                listener,
                self.handler.clone(),
                conns.clone(),
                shutdown.clone(),
            ));
        }
        tracing::info!(addrs = ?self.udp.iter().filter_map(|s| s.local_addr().ok()).collect::<Vec<_>>(), "cluster dns serving");
        shutdown.cancelled().await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 10 } else { 1 } {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "udp",
                addr,
                source,
            })?;
        let bound = udp.local_addr().map_err(|source| DnsError::Bind {
            proto: "udp",
            addr,
            source,
        })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => {
                last = Some(DnsError::Bind {
                    proto: "tcp",
                    addr: bound,
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| DnsError::Config("no listen address".into())))
}

async fn udp_loop(sock: Arc<UdpSocket>, handler: Arc<Handler>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut out = Vec::with_capacity(512);
    let mut scratch = Scratch::default();
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // ICMP errors of earlier replies surface here on some kernels: keep serving.
                tracing::debug!(error = %e, "dns udp receive");
                continue;
            }
        };
        match handler.handle(&buf[..n], false, &mut scratch, &mut out) {
            Outcome::Reply => {
                if let Err(e) = sock.send_to(&out, peer).await {
                    tracing::debug!(%peer, error = %e, "dns udp send");
                }
            }
            Outcome::Later(pending) => {
                let Ok(permit) = handler.pending.clone().try_acquire_owned() else {
                    // Too many upstream queries in flight: the client will retry.
                    continue;
                };
                let handler = handler.clone();
                let sock = sock.clone();
                let shutdown = shutdown.clone();
                // Ends with the server (the socket is not held past `run`).
                tokio::spawn(async move {
                    let answer = async {
                        let mut out = Vec::with_capacity(512);
                        handler.finish(pending, false, &mut out).await;
                        drop(permit);
                        if let Err(e) = sock.send_to(&out, peer).await {
                            tracing::debug!(%peer, error = %e, "dns udp send");
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = answer => {}
                    }
                });
            }
            Outcome::Nothing => {}
        }
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    conns: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let Ok(permit) = conns.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "dns tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = tcp_conn(stream, &handler) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "dns tcp connection");
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn tcp_conn(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(512);
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        buf.resize(usize::from(u16::from_be_bytes(len)), 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await {
            Ok(r) => r.map(|_| ())?,
            Err(_) => return Ok(()),
        }
        match handler.handle(&buf, true, &mut scratch, &mut out) {
            Outcome::Reply => {}
            Outcome::Later(pending) => handler.finish(pending, true, &mut out).await,
            Outcome::Nothing => return Ok(()),
        }
        let Ok(n) = u16::try_from(out.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&out);
        match tokio::time::timeout(TCP_IDLE, stream.write_all(&framed)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        }
    }
}

/// Per-task buffers reused across queries.
#[derive(Default)]
struct Scratch {
    lower: String,
    key: Vec<u8>,
}

/// What the client said beyond the question.
#[derive(Debug, Clone, Copy)]
struct ClientEdns {
    payload: u16,
    dnssec_ok: bool,
}

#[derive(Debug)]
struct Request {
    id: u16,
    rd: bool,
    cd: bool,
    query: Query,
    edns: Option<ClientEdns>,
}

impl Request {
    fn limit(&self, tcp: bool) -> usize {
        if tcp {
            return usize::from(u16::MAX);
        }
        let payload = self
            .edns
            .map(|e| e.payload.clamp(512, MAX_UDP_PAYLOAD))
            .unwrap_or(512);
        usize::from(payload)
    }

    fn response(&self, rcode: ResponseCode, authoritative: bool) -> Message {
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
pub(crate) struct Pending {
    req: Request,
    key: Vec<u8>,
    /// For an ExternalName: the CNAME to put before the target's records.
    cname: Option<Record>,
}

enum Outcome {
    /// The response is in the output buffer.
    Reply,
    /// Needs an upstream query.
    Later(Box<Pending>),
    /// Send nothing (not a query, or too short to answer).
    Nothing,
}

struct Handler {
    records: RecordsHandle,
    forwarder: Forwarder,
    pending: Arc<Semaphore>,
}

impl Handler {
    /// Answer `packet` into `out`, or say what else to do.
    fn handle(&self, packet: &[u8], tcp: bool, s: &mut Scratch, out: &mut Vec<u8>) -> Outcome {
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

        let records = self.records.get();
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
    async fn finish(&self, p: Box<Pending>, tcp: bool, out: &mut Vec<u8>) {
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
