//! The DNS load generator of `k8slite-bench-dns`: a fixed number of UDP queries in flight, one
//! socket per slot, on the calling (current-thread) tokio runtime.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

/// Figures of one timed phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Answers per second in the timed window.
    pub qps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Queries without an answer within the timeout.
    pub lost: u64,
    /// Answers including the warm-up.
    pub total_answered: u64,
}

/// A query for `name` A, RD set, no EDNS, id 0 (patched per send).
pub fn query_wire(name: &str) -> anyhow::Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).with_context(|| format!("name {name}"))?,
        RecordType::A,
    ));
    let mut w = m.to_vec().context("encoding a query")?;
    w[0] = 0;
    w[1] = 0;
    Ok(w)
}

/// Ask `addr` for `name` A once and check the answer holds `ip` (parsed with hickory-proto).
pub async fn check_answer(addr: SocketAddr, name: &str, ip: [u8; 4]) -> anyhow::Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let mut q = query_wire(name)?;
    q[0] = 0x12;
    q[1] = 0x34;
    sock.send_to(&q, addr).await?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
        .await
        .with_context(|| format!("no answer for {name} from {addr}"))??;
    let m = Message::from_vec(&buf[..n]).context("parsing the answer")?;
    if m.metadata.id != 0x1234 || m.metadata.response_code != ResponseCode::NoError {
        bail!(
            "{name}: id {} rcode {}",
            m.metadata.id,
            m.metadata.response_code
        );
    }
    let ok = m
        .answers
        .iter()
        .any(|r| matches!(&r.data, RData::A(a) if a.0.octets() == ip));
    if !ok {
        bail!("{name}: answer {:?} lacks {ip:?}", m.answers);
    }
    Ok(())
}

/// Where the phase stands.
struct Clock {
    measure_from: Instant,
    until: Instant,
}

/// Keep `inflight` queries (taken in turn from `queries`) in flight against `addr`: `warm`
/// seconds unrecorded, then `secs` seconds recorded. An answer counts when its id matches and
/// its header says NOERROR with at least one answer record.
pub async fn load(
    addr: SocketAddr,
    queries: &[Vec<u8>],
    inflight: usize,
    warm: f64,
    secs: f64,
) -> anyhow::Result<Phase> {
    let start = Instant::now();
    let clock = Rc::new(Clock {
        measure_from: start + Duration::from_secs_f64(warm),
        until: start + Duration::from_secs_f64(warm + secs),
    });
    let lat: Rc<RefCell<Vec<u32>>> = Rc::new(RefCell::new(Vec::with_capacity(1 << 20)));
    let totals = Rc::new(RefCell::new((0u64, 0u64))); // (answered, lost)
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for slot in 0..inflight {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        sock.connect(addr).await?;
        let (clock, lat, totals) = (clock.clone(), lat.clone(), totals.clone());
        let queries: Vec<Vec<u8>> = queries.to_vec();
        handles.push(local.spawn_local(async move {
            let mut buf = vec![0u8; 1500];
            let mut i = slot % queries.len();
            let mut id: u16 = (slot as u16).wrapping_mul(1021);
            loop {
                let now = Instant::now();
                if now >= clock.until {
                    return anyhow::Ok(());
                }
                id = id.wrapping_add(1);
                let mut q = queries[i].clone();
                i = (i + inflight) % queries.len();
                q[0..2].copy_from_slice(&id.to_be_bytes());
                let sent = Instant::now();
                sock.send(&q).await?;
                let got = loop {
                    match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                        Err(_) => break None,
                        Ok(r) => {
                            let n = r?;
                            // A late answer of an earlier query: keep waiting for ours.
                            if n >= 12 && buf[0..2] == id.to_be_bytes() {
                                break Some(n);
                            }
                        }
                    }
                };
                let Some(n) = got else {
                    totals.borrow_mut().1 += 1;
                    continue;
                };
                let done = Instant::now();
                let rcode = buf[3] & 0x0f;
                let ancount = u16::from_be_bytes([buf[6], buf[7]]);
                if buf[2] & 0x80 == 0 || rcode != 0 || ancount == 0 || n < 12 {
                    bail!("bad answer from {addr}: rcode {rcode}, {ancount} answers");
                }
                totals.borrow_mut().0 += 1;
                if sent >= clock.measure_from && done <= clock.until {
                    let us = (done - sent).as_nanos() / 1000;
                    lat.borrow_mut().push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
        }));
    }
    local
        .run_until(async {
            for h in handles {
                h.await.context("load task")??;
            }
            anyhow::Ok(())
        })
        .await?;
    let mut v = std::mem::take(&mut *lat.borrow_mut());
    v.sort_unstable();
    let pct = |p: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        v[(((v.len() - 1) as f64) * p).round() as usize] as f64
    };
    let (answered, lost) = *totals.borrow();
    Ok(Phase {
        qps: v.len() as f64 / secs,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        lost,
        total_answered: answered,
    })
}
