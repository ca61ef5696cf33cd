//! The server: UDP and TCP sockets on every listen address, request checks (FORMERR, NOTIMP,
//! REFUSED, BADVERS), answers from the current [`Records`] or through the forwarder, and
//! responses fitted to the client's size (TC set when records were dropped).
//!
//! - `handle`: one request to its answer (or to a pending upstream query).
//! - `udp`: a dedicated thread per UDP socket answering in batches; upstream queries go to
//!   the tokio runtime.
//! - `tcp`: accept loop and connections on the tokio runtime.
//! - `wire`: response assembly and encoding.

mod fast;
mod handle;
mod tcp;
mod udp;
mod wire;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::forward::Forwarder;
use super::records::Records;
use super::{DnsConfig, DnsError, Result};
use handle::{ClientEdns, Handler, Request};
use tcp::tcp_accept_loop;
use udp::UdpThread;

/// Largest UDP response we send, whatever the client offers.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// Concurrent TCP connections.
const MAX_TCP_CONNECTIONS: usize = 256;
/// Upper bound of concurrent upstream queries from UDP clients.
const MAX_PENDING: usize = 1024;
/// Size of an OPT record without options.
const OPT_LEN: usize = 11;

/// The records served, replaceable while the server runs (cheap to clone).
#[derive(Clone)]
pub struct RecordsHandle {
    /// The records and their generation (counts replacements; cached answers name it).
    current: Arc<RwLock<(Arc<Records>, u64)>>,
    /// The generation, readable without the lock (written under it).
    generation: Arc<AtomicU64>,
    ttl: u32,
}

impl RecordsHandle {
    fn new(records: Records, ttl: u32) -> Self {
        Self {
            current: Arc::new(RwLock::new((Arc::new(records), 0))),
            generation: Arc::new(AtomicU64::new(0)),
            ttl,
        }
    }

    /// Serve these records from now on (queries in flight finish with the old ones; answers
    /// cached from older records are not served again).
    pub fn replace(&self, mut records: Records) {
        records.set_ttl(self.ttl);
        let records = Arc::new(records);
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let generation = cur.1.wrapping_add(1);
        *cur = (records, generation);
        self.generation.store(generation, Ordering::Release);
    }

    /// The records served now.
    pub fn current(&self) -> Arc<Records> {
        self.get()
    }

    fn get(&self) -> Arc<Records> {
        self.with_generation().0
    }

    /// The records served now and their generation, read together.
    fn with_generation(&self) -> (Arc<Records>, u64) {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The generation of the records served now.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
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
            records: RecordsHandle::new(records, cfg.ttl),
            answers: fast::AnswerCache::default(),
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

    /// Serve until `shutdown` is cancelled; returns once every socket is closed.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let rt = tokio::runtime::Handle::current();
        let mut threads = Vec::with_capacity(self.udp.len());
        for sock in &self.udp {
            let t = UdpThread::start(
                sock.clone(),
                self.handler.clone(),
                rt.clone(),
                shutdown.clone(),
            )
            .map_err(|source| DnsError::Thread { source })?;
            threads.push(t);
        }
        let addrs = self.local_addrs();
        drop(self.udp);
        let mut tasks = JoinSet::new();
        let conns = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        for listener in self.tcp {
            tasks.spawn(tcp_accept_loop(
                listener,
                self.handler.clone(),
                conns.clone(),
                shutdown.clone(),
            ));
        }
        tracing::info!(?addrs, "cluster dns serving");
        shutdown.cancelled().await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        for t in threads {
            t.stop().await;
        }
        Ok(())
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 10 } else { 1 } {
        let udp = UdpSocket::bind(addr)
            .and_then(|u| u.set_nonblocking(true).map(|()| u))
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
