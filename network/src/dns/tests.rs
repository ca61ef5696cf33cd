//! Tests of the records index (plain values) and of the server on loopback with a fake
//! upstream resolver.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::records::{Lookup, lower_name};
use super::*;

// ---------------------------------------------------------------------------------------------
// values

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

pub(super) fn port(name: &str, proto: &str, port: i32) -> ServicePort {
    ServicePort {
        name: (!name.is_empty()).then(|| name.to_string()),
        protocol: Some(proto.into()),
        port,
        ..Default::default()
    }
}

pub(super) fn cluster_ip(
    ns: &str,
    name: &str,
    ips: &[&str],
    ports: Vec<ServicePort>,
) -> Arc<Service> {
    Arc::new(Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            cluster_ip: ips.first().map(|s| s.to_string()),
            cluster_ips: Some(ips.iter().map(|s| s.to_string()).collect()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(super) fn headless(
    ns: &str,
    name: &str,
    ports: Vec<ServicePort>,
    not_ready: bool,
) -> Arc<Service> {
    Arc::new(Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            cluster_ips: Some(vec!["None".into()]),
            ports: Some(ports),
            publish_not_ready_addresses: not_ready.then_some(true),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn external(ns: &str, name: &str, target: &str) -> Arc<Service> {
    Arc::new(Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some(target.into()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// (address, hostname, ready)
pub(super) fn slice(
    ns: &str,
    svc: &str,
    suffix: &str,
    eps: &[(&str, Option<&str>, Option<bool>)],
    ports: &[(&str, &str, i32)],
) -> Arc<EndpointSlice> {
    let mut m = meta(ns, &format!("{svc}-{suffix}"));
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        svc.to_string(),
    )]));
    let v6 = eps.first().is_some_and(|e| e.0.contains(':'));
    Arc::new(EndpointSlice {
        metadata: m,
        address_type: if v6 { "IPv6" } else { "IPv4" }.into(),
        endpoints: eps
            .iter()
            .map(|(addr, host, ready)| Endpoint {
                addresses: vec![addr.to_string()],
                hostname: host.map(str::to_string),
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p, port)| EndpointPort {
                    name: Some(n.to_string()),
                    protocol: Some(p.to_string()),
                    port: Some(*port),
                    ..Default::default()
                })
                .collect(),
        ),
    })
}

const D: &str = "cluster.local";

/// The fixture cluster: a ClusterIP service with two named ports, a dual-stack one, a
/// headless StatefulSet service, a headless service publishing not-ready addresses, an
/// ExternalName, an empty headless service and kube-dns.
pub(super) fn fixture() -> Records {
    let services = vec![
        cluster_ip(
            "default",
            "web",
            &["10.43.0.20"],
            vec![port("http", "TCP", 80), port("dns", "UDP", 53)],
        ),
        cluster_ip(
            "default",
            "dual",
            &["10.43.0.21", "fd00:43::21"],
            vec![port("", "TCP", 8080)],
        ),
        headless("db", "pg", vec![port("sql", "TCP", 5432)], false),
        headless("db", "warm", vec![port("", "TCP", 9000)], true),
        headless("db", "empty", vec![port("x", "TCP", 1)], false),
        external("default", "ext", "example.com"),
        external("default", "inner", "web.default.svc.cluster.local"),
        cluster_ip(
            "kube-system",
            "kube-dns",
            &["10.43.0.10"],
            vec![port("dns", "UDP", 53)],
        ),
    ];
    let slices = vec![
        slice(
            "default",
            "web",
            "a",
            &[
                ("10.42.0.5", None, Some(true)),
                ("10.42.0.6", None, Some(false)),
            ],
            &[("http", "TCP", 8080), ("dns", "UDP", 5353)],
        ),
        slice(
            "db",
            "pg",
            "a",
            &[
                ("10.42.1.10", Some("pg-0"), Some(true)),
                ("10.42.1.11", Some("pg-1"), None),
                ("10.42.1.12", Some("pg-2"), Some(false)),
            ],
            &[("sql", "TCP", 5432)],
        ),
        // The same endpoint repeated in a second slice (as during a slice split): once.
        slice(
            "db",
            "pg",
            "b",
            &[("10.42.1.10", Some("pg-0"), Some(true))],
            &[("sql", "TCP", 5432)],
        ),
        slice(
            "db",
            "warm",
            "a",
            &[
                ("10.42.2.1", None, Some(false)),
                ("fd00:42::7", None, Some(true)),
            ],
            &[("", "TCP", 9000)],
        ),
    ];
    let mut r = Records::build(D, &services, &slices);
    r.set_ttl(5);
    r
}

fn look(r: &Records, name: &str, t: RecordType) -> Lookup {
    let n = Name::from_ascii(name).unwrap();
    let mut lower = String::new();
    assert!(lower_name(&n, &mut lower));
    r.lookup(&lower, &n, t)
}

fn answers(r: &Records, name: &str, t: RecordType) -> (Vec<String>, Vec<String>) {
    match look(r, name, t) {
        Lookup::Answer {
            answers,
            additionals,
        } => (
            answers.iter().map(|r| r.data.to_string()).collect(),
            additionals
                .iter()
                .map(|r| format!("{} {}", r.name, r.data))
                .collect(),
        ),
        other => panic!("{name} {t}: expected records, got {other:?}"),
    }
}

fn ips(r: &Records, name: &str, t: RecordType) -> Vec<String> {
    let mut v = answers(r, name, t).0;
    v.sort();
    v
}

fn is_nodata(r: &Records, name: &str, t: RecordType) -> bool {
    matches!(look(r, name, t), Lookup::NoData)
}

fn is_nx(r: &Records, name: &str, t: RecordType) -> bool {
    matches!(look(r, name, t), Lookup::NxDomain)
}

// ---------------------------------------------------------------------------------------------
// records

#[test]
fn service_addresses() {
    let r = fixture();
    assert_eq!(
        ips(&r, "web.default.svc.cluster.local.", RecordType::A),
        ["10.43.0.20"]
    );
    // Case-insensitive.
    assert_eq!(
        ips(&r, "WeB.DeFault.SVC.Cluster.Local.", RecordType::A),
        ["10.43.0.20"]
    );
    // No AAAA for a v4-only Service, no TXT: NODATA.
    assert!(is_nodata(
        &r,
        "web.default.svc.cluster.local.",
        RecordType::AAAA
    ));
    assert!(is_nodata(
        &r,
        "web.default.svc.cluster.local.",
        RecordType::TXT
    ));
    assert_eq!(
        ips(&r, "dual.default.svc.cluster.local.", RecordType::A),
        ["10.43.0.21"]
    );
    assert_eq!(
        ips(&r, "dual.default.svc.cluster.local.", RecordType::AAAA),
        ["fd00:43::21"]
    );
    assert_eq!(
        ips(&r, "ns.dns.cluster.local.", RecordType::A),
        ["10.43.0.10"]
    );
    // Answer records carry the name as asked and the TTL.
    if let Lookup::Answer { answers, .. } =
        look(&r, "WEB.default.svc.cluster.local.", RecordType::A)
    {
        assert_eq!(
            answers[0].name.to_string(),
            "WEB.default.svc.cluster.local."
        );
        assert_eq!(answers[0].ttl, 5);
    } else {
        panic!("no answer");
    }
}

#[test]
fn headless_addresses_and_endpoint_names() {
    let r = fixture();
    // Ready (true or unset) endpoints only, deduplicated across slices.
    assert_eq!(
        ips(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["10.42.1.10", "10.42.1.11"]
    );
    assert_eq!(
        ips(&r, "pg-0.pg.db.svc.cluster.local.", RecordType::A),
        ["10.42.1.10"]
    );
    assert!(is_nx(&r, "pg-2.pg.db.svc.cluster.local.", RecordType::A));
    // publishNotReadyAddresses: all of them, both families.
    assert_eq!(
        ips(&r, "warm.db.svc.cluster.local.", RecordType::A),
        ["10.42.2.1"]
    );
    assert_eq!(
        ips(&r, "warm.db.svc.cluster.local.", RecordType::AAAA),
        ["fd00:42::7"]
    );
    // Endpoints without a hostname are named by their dashed IP.
    assert_eq!(
        ips(&r, "10-42-2-1.warm.db.svc.cluster.local.", RecordType::A),
        ["10.42.2.1"]
    );
    assert_eq!(
        ips(
            &r,
            "fd00-42--7.warm.db.svc.cluster.local.",
            RecordType::AAAA
        ),
        ["fd00:42::7"]
    );
    assert!(is_nodata(
        &r,
        "fd00-42--7.warm.db.svc.cluster.local.",
        RecordType::A
    ));
    // CoreDNS also answers endpoint names of a ClusterIP Service (ready ones).
    assert_eq!(
        ips(
            &r,
            "10-42-0-5.web.default.svc.cluster.local.",
            RecordType::A
        ),
        ["10.42.0.5"]
    );
    assert!(is_nx(
        &r,
        "10-42-0-6.web.default.svc.cluster.local.",
        RecordType::A
    ));
    // A headless Service without endpoints does not exist (CoreDNS).
    assert!(is_nx(&r, "empty.db.svc.cluster.local.", RecordType::A));
}

#[test]
fn srv_records() {
    let r = fixture();
    // ClusterIP, named port: target the Service, its address in additional.
    let (ans, extra) = answers(
        &r,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(ans, ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(extra, ["web.default.svc.cluster.local. 10.43.0.20"]);
    // Case and underscores do not matter; wrong protocol does not exist.
    let (ans, _) = answers(
        &r,
        "_DNS._UDP.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(ans, ["0 100 53 web.default.svc.cluster.local."]);
    assert!(is_nx(
        &r,
        "_http._udp.web.default.svc.cluster.local.",
        RecordType::SRV
    ));
    assert!(is_nx(
        &r,
        "_nope._tcp.web.default.svc.cluster.local.",
        RecordType::SRV
    ));
    // An A query on the SRV name answers the Service's address (CoreDNS).
    assert_eq!(
        ips(
            &r,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::A
        ),
        ["10.43.0.20"]
    );
    // Port-less SRV: every port, weight 100/n.
    let (mut ans, _) = answers(&r, "web.default.svc.cluster.local.", RecordType::SRV);
    ans.sort();
    assert_eq!(
        ans,
        [
            "0 50 53 web.default.svc.cluster.local.",
            "0 50 80 web.default.svc.cluster.local."
        ]
    );
    // Headless: one per endpoint, target the endpoint's name, A records in additional.
    let (mut ans, mut extra) = answers(&r, "_sql._tcp.pg.db.svc.cluster.local.", RecordType::SRV);
    ans.sort();
    extra.sort();
    assert_eq!(
        ans,
        [
            "0 50 5432 pg-0.pg.db.svc.cluster.local.",
            "0 50 5432 pg-1.pg.db.svc.cluster.local."
        ]
    );
    assert_eq!(
        extra,
        [
            "pg-0.pg.db.svc.cluster.local. 10.42.1.10",
            "pg-1.pg.db.svc.cluster.local. 10.42.1.11"
        ]
    );
    let (ans, _) = answers(&r, "pg.db.svc.cluster.local.", RecordType::SRV);
    assert_eq!(ans.len(), 2);
    // Unnamed port of a headless service: the port-less form only.
    let (ans, _) = answers(&r, "warm.db.svc.cluster.local.", RecordType::SRV);
    assert_eq!(ans.len(), 2);
    assert!(ans.iter().all(|a| a.starts_with("0 50 9000 ")));
    // ExternalName: no SRV.
    assert!(is_nodata(
        &r,
        "ext.default.svc.cluster.local.",
        RecordType::SRV
    ));
}

#[test]
fn reverse_records() {
    let r = fixture();
    let (ans, _) = answers(&r, "20.0.43.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(ans, ["web.default.svc.cluster.local."]);
    let (ans, _) = answers(&r, "10.1.42.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(ans, ["pg-0.pg.db.svc.cluster.local."]);
    let (ans, _) = answers(&r, "1.2.42.10.IN-ADDR.ARPA.", RecordType::PTR);
    assert_eq!(ans, ["10-42-2-1.warm.db.svc.cluster.local."]);
    let v6: IpAddr = "fd00:43::21".parse().unwrap();
    let IpAddr::V6(v6) = v6 else { unreachable!() };
    let mut rev: Vec<String> = v6
        .octets()
        .iter()
        .flat_map(|b| [format!("{:x}", b >> 4), format!("{:x}", b & 0xf)])
        .collect();
    rev.reverse();
    let name = format!("{}.ip6.arpa.", rev.join("."));
    let (ans, _) = answers(&r, &name, RecordType::PTR);
    assert_eq!(ans, ["dual.default.svc.cluster.local."]);
    // Unknown IPs and other types fall through to the upstreams.
    assert!(matches!(
        look(&r, "1.1.168.192.in-addr.arpa.", RecordType::PTR),
        Lookup::Forward
    ));
    assert!(matches!(
        look(&r, "20.0.43.10.in-addr.arpa.", RecordType::A),
        Lookup::Forward
    ));
}

#[test]
fn external_name_and_pods() {
    let r = fixture();
    match look(&r, "ext.default.svc.cluster.local.", RecordType::A) {
        Lookup::Alias { cname, target } => {
            assert_eq!(target.to_string(), "example.com.");
            assert_eq!(cname.data.to_string(), "example.com.");
            assert_eq!(cname.name.to_string(), "ext.default.svc.cluster.local.");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ips(&r, "10-42-0-9.default.pod.cluster.local.", RecordType::A),
        ["10.42.0.9"]
    );
    assert_eq!(
        ips(&r, "10-42-0-9.anyns.pod.cluster.local.", RecordType::A),
        ["10.42.0.9"]
    );
    assert!(is_nodata(
        &r,
        "10-42-0-9.default.pod.cluster.local.",
        RecordType::AAAA
    ));
    assert_eq!(
        ips(&r, "fd00--9.x.pod.cluster.local.", RecordType::AAAA),
        ["fd00::9"]
    );
    assert!(is_nx(
        &r,
        "not-an-ip.default.pod.cluster.local.",
        RecordType::A
    ));
    assert!(is_nx(
        &r,
        "a.10-42-0-9.default.pod.cluster.local.",
        RecordType::A
    ));
}

#[test]
fn nxdomain_and_nodata() {
    let r = fixture();
    // Intermediate nodes exist.
    assert!(is_nodata(&r, "cluster.local.", RecordType::A));
    assert!(is_nodata(&r, "svc.cluster.local.", RecordType::A));
    assert!(is_nodata(&r, "pod.cluster.local.", RecordType::A));
    assert!(is_nodata(&r, "default.svc.cluster.local.", RecordType::A));
    assert!(is_nodata(&r, "DB.svc.cluster.local.", RecordType::A));
    assert!(is_nodata(&r, "default.pod.cluster.local.", RecordType::A));
    // Everything else in the zone does not.
    assert!(is_nx(&r, "nosuchns.svc.cluster.local.", RecordType::A));
    assert!(is_nx(&r, "nope.default.svc.cluster.local.", RecordType::A));
    assert!(is_nx(&r, "foo.cluster.local.", RecordType::A));
    assert!(is_nx(
        &r,
        "a.b.c.web.default.svc.cluster.local.",
        RecordType::A
    ));
    // Search-path expansions of names outside the cluster (ndots:5).
    assert!(is_nx(
        &r,
        "example.com.default.svc.cluster.local.",
        RecordType::A
    ));
    assert!(is_nx(
        &r,
        "web.default.svc.cluster.local.default.svc.cluster.local.",
        RecordType::A
    ));
    assert!(is_nx(
        &r,
        "www.example.com.svc.cluster.local.",
        RecordType::AAAA
    ));
    // Apex SOA and NS, dns-version.
    let (soa, _) = answers(&r, "cluster.local.", RecordType::SOA);
    assert!(
        soa[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local. "),
        "{soa:?}"
    );
    assert!(soa[0].ends_with(" 7200 1800 86400 5"), "{soa:?}");
    let (ns, extra) = answers(&r, "cluster.local.", RecordType::NS);
    assert_eq!(ns, ["ns.dns.cluster.local."]);
    assert_eq!(extra, ["ns.dns.cluster.local. 10.43.0.10"]);
    let (txt, _) = answers(&r, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(txt, ["1.1.0"]);
    // Outside the domain: forwarded.
    assert!(matches!(
        look(&r, "example.com.", RecordType::A),
        Lookup::Forward
    ));
    assert!(matches!(look(&r, "local.", RecordType::A), Lookup::Forward));
    assert!(matches!(
        look(&r, "xcluster.local.", RecordType::A),
        Lookup::Forward
    ));
    // Empty records: services are NXDOMAIN, namespaces too.
    let e = Records::empty("Cluster.Local.");
    assert!(is_nx(&e, "web.default.svc.cluster.local.", RecordType::A));
    assert!(is_nx(&e, "default.svc.cluster.local.", RecordType::A));
    assert!(is_nodata(&e, "svc.cluster.local.", RecordType::A));
    assert_eq!(e.len(), 0);
}

#[test]
fn build_of_a_thousand_services_is_cheap() {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..1000 {
        let name = format!("svc{i}");
        services.push(cluster_ip(
            "bench",
            &name,
            &[&format!("10.43.{}.{}", i / 250, i % 250 + 1)],
            vec![port("http", "TCP", 80)],
        ));
        let a = format!("10.42.{}.{}", i / 120, (i % 120) * 2 + 1);
        let b = format!("10.42.{}.{}", i / 120, (i % 120) * 2 + 2);
        slices.push(slice(
            "bench",
            &name,
            "x",
            &[(&a, None, Some(true)), (&b, None, Some(true))],
            &[("http", "TCP", 8080)],
        ));
    }
    let start = Instant::now();
    let r = Records::build(D, &services, &slices);
    let took = start.elapsed();
    assert_eq!(r.len(), 3000);
    assert_eq!(
        ips(&r, "svc999.bench.svc.cluster.local.", RecordType::A),
        ["10.43.3.250"]
    );
    // Rough lookup cost (printed, never asserted).
    let n = Name::from_ascii("svc500.bench.svc.cluster.local.").unwrap();
    let mut lower = String::new();
    let t = Instant::now();
    for _ in 0..100_000 {
        lower_name(&n, &mut lower);
        std::hint::black_box(r.lookup(&lower, &n, RecordType::A));
    }
    eprintln!(
        "build 1000 services + 2000 endpoints: {took:?}; lookup: {:?}/query",
        t.elapsed() / 100_000
    );
}

// ---------------------------------------------------------------------------------------------
// server on loopback

/// A fake upstream on 127.0.0.1 (UDP and TCP on one port): `*.example.` → 192.0.2.1 TTL 60,
/// `nx.example.` NXDOMAIN, `big.example.` 60 A records (TC over UDP without room),
/// `tc.example.` TC over UDP and two records over TCP. Counts the queries it gets.
struct FakeUpstream {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn upstream_answer(q: &Message, tcp: bool) -> Message {
    let query = q.queries[0].clone();
    let name = query.name().to_lowercase().to_ascii();
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_available = true;
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.add_query(query.clone());
    let a = |i: u8| Record::from_rdata(query.name().clone(), 60, RData::A(A::new(192, 0, 2, i)));
    match name.as_str() {
        "nx.example." => {
            m.metadata.response_code = ResponseCode::NXDomain;
            let soa = SOA::new(
                Name::from_ascii("ns.example.").unwrap(),
                Name::from_ascii("h.example.").unwrap(),
                1,
                1,
                1,
                1,
                20,
            );
            m.authorities.push(Record::from_rdata(
                Name::from_ascii("example.").unwrap(),
                60,
                RData::SOA(soa),
            ));
        }
        "big.example." => {
            for i in 1..=60 {
                m.answers.push(a(i));
            }
        }
        "tc.example." if !tcp => m.metadata.truncation = true,
        "tc.example." => {
            m.answers.push(a(7));
            m.answers.push(a(8));
        }
        _ if query.query_type() == RecordType::A => m.answers.push(a(1)),
        _ => {}
    }
    m
}

async fn fake_upstream(answer: bool) -> FakeUpstream {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let stop = CancellationToken::new();
    let udp_queries = Arc::new(AtomicUsize::new(0));
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    let (s, c) = (stop.clone(), udp_queries.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = tokio::select! {
                _ = s.cancelled() => return,
                r = udp.recv_from(&mut buf) => r.unwrap(),
            };
            c.fetch_add(1, Ordering::SeqCst);
            if !answer {
                continue;
            }
            let q = Message::from_vec(&buf[..n]).unwrap();
            let reply = upstream_answer(&q, false).to_vec().unwrap();
            udp.send_to(&reply, peer).await.unwrap();
        }
    });
    let (s, c) = (stop.clone(), tcp_queries.clone());
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = tokio::select! {
                _ = s.cancelled() => return,
                r = tcp.accept() => r.unwrap(),
            };
            let c = c.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                while conn.read_exact(&mut len).await.is_ok() {
                    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                    conn.read_exact(&mut buf).await.unwrap();
                    c.fetch_add(1, Ordering::SeqCst);
                    if !answer {
                        continue;
                    }
                    let q = Message::from_vec(&buf).unwrap();
                    let reply = upstream_answer(&q, true).to_vec().unwrap();
                    conn.write_all(&(reply.len() as u16).to_be_bytes())
                        .await
                        .unwrap();
                    conn.write_all(&reply).await.unwrap();
                }
            });
        }
    });
    FakeUpstream {
        addr,
        udp_queries,
        tcp_queries,
        stop,
    }
}

struct Running {
    addr: SocketAddr,
    records: RecordsHandle,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(upstreams: Vec<SocketAddr>) -> Running {
    let mut cfg = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()], D, upstreams);
    cfg.upstream_timeout = Duration::from_millis(300);
    let server = DnsServer::bind(cfg).await.unwrap();
    let addr = server.local_addrs()[0];
    let records = server.records();
    records.replace(fixture());
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    Running {
        addr,
        records,
        stop,
    }
}

fn query_msg(name: &str, t: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

async fn udp_raw(addr: SocketAddr, wire: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(wire, addr).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("no udp answer")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn udp(addr: SocketAddr, name: &str, t: RecordType, edns: Option<u16>) -> Message {
    let q = query_msg(name, t, edns);
    let reply = Message::from_vec(&udp_raw(addr, &q.to_vec().unwrap()).await).unwrap();
    assert_eq!(reply.metadata.id, q.metadata.id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    reply
}

async fn tcp(addr: SocketAddr, name: &str, t: RecordType) -> Message {
    let q = query_msg(name, t, None).to_vec().unwrap();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(&(q.len() as u16).to_be_bytes())
        .await
        .unwrap();
    conn.write_all(&q).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut len))
        .await
        .expect("no tcp answer")
        .unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    conn.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn data(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn serves_cluster_names_over_udp_and_tcp() {
    let up = fake_upstream(true).await;
    let s = start(vec![up.addr]).await;
    let r = udp(
        s.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(data(&r), ["10.43.0.20"]);
    assert_eq!(r.answers[0].ttl, 5);
    let r = tcp(s.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&r), ["10.43.0.20"]);
    let r = udp(
        s.addr,
        "pg.db.svc.cluster.local.",
        RecordType::A,
        Some(1232),
    )
    .await;
    assert_eq!(data(&r), ["10.42.1.10", "10.42.1.11"]);
    assert!(r.edns.is_some(), "an EDNS query gets an OPT back");
    let r = udp(
        s.addr,
        "_sql._tcp.pg.db.svc.cluster.local.",
        RecordType::SRV,
        None,
    )
    .await;
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.additionals.len(), 2);
    let r = udp(s.addr, "20.0.43.10.in-addr.arpa.", RecordType::PTR, None).await;
    assert_eq!(data(&r), ["web.default.svc.cluster.local."]);
    let r = udp(
        s.addr,
        "10-1-2-3.default.pod.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(data(&r), ["10.1.2.3"]);
    // ExternalName: the CNAME, then the target's address through the upstream.
    let r = udp(
        s.addr,
        "ext.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(r.answers.len(), 2, "{r:?}");
    assert_eq!(r.answers[0].data.to_string(), "example.com.");
    assert_eq!(r.answers[1].data.to_string(), "192.0.2.1");
    assert_eq!(
        r.queries[0].name().to_string(),
        "ext.default.svc.cluster.local."
    );
    // An ExternalName pointing into the cluster is resolved from the records.
    let r = udp(
        s.addr,
        "inner.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(data(&r), ["10.43.0.20", "web.default.svc.cluster.local."]);
    let r = udp(
        s.addr,
        "ext.default.svc.cluster.local.",
        RecordType::CNAME,
        None,
    )
    .await;
    assert_eq!(data(&r), ["example.com."]);
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let up = fake_upstream(true).await;
    let s = start(vec![up.addr]).await;
    let r = udp(
        s.addr,
        "nope.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.len(), 1);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = udp(
        s.addr,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
        None,
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = udp(s.addr, "default.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    // No upstream was asked for any of it.
    assert_eq!(up.udp_queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn forwards_and_caches() {
    let up = fake_upstream(true).await;
    let s = start(vec![up.addr]).await;
    let r = udp(s.addr, "www.example.", RecordType::A, None).await;
    assert_eq!(data(&r), ["192.0.2.1"]);
    assert!(r.metadata.recursion_available);
    assert!(!r.metadata.authoritative);
    let r = udp(s.addr, "WWW.Example.", RecordType::A, None).await;
    assert_eq!(data(&r), ["192.0.2.1"]);
    assert_eq!(r.queries[0].name().to_string(), "WWW.Example.");
    assert!(r.answers[0].ttl <= 60);
    assert_eq!(
        up.udp_queries.load(Ordering::SeqCst),
        1,
        "the second came from the cache"
    );
    // NXDOMAIN is passed on and cached too.
    let r = udp(s.addr, "nx.example.", RecordType::A, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let _ = udp(s.addr, "nx.example.", RecordType::A, None).await;
    assert_eq!(up.udp_queries.load(Ordering::SeqCst), 2);
    // Over TCP the upstream is asked over TCP.
    let r = tcp(s.addr, "other.example.", RecordType::A).await;
    assert_eq!(data(&r), ["192.0.2.1"]);
    assert_eq!(up.tcp_queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn fails_over_and_servfails() {
    let dead = fake_upstream(false).await;
    let up = fake_upstream(true).await;
    let s = start(vec![dead.addr, up.addr]).await;
    let r = udp(s.addr, "fail.example.", RecordType::A, None).await;
    assert_eq!(data(&r), ["192.0.2.1"]);
    assert_eq!(dead.udp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(up.udp_queries.load(Ordering::SeqCst), 1);

    let dead2 = fake_upstream(false).await;
    // A closed port too (connection refused).
    let closed = {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.local_addr().unwrap()
    };
    let s = start(vec![closed, dead2.addr]).await;
    let r = udp(s.addr, "fail.example.", RecordType::A, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(r.answers.is_empty());
    // Cluster names still answer.
    let r = udp(
        s.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(data(&r), ["10.43.0.20"]);
}

#[tokio::test]
async fn truncation_then_tcp() {
    let up = fake_upstream(true).await;
    let s = start(vec![up.addr]).await;
    // A headless Service with 60 endpoints does not fit 512 bytes.
    let svc = vec![headless("big", "many", vec![port("p", "TCP", 1)], false)];
    let eps: Vec<(String, Option<&str>, Option<bool>)> = (1..=60)
        .map(|i| (format!("10.42.9.{i}"), None, Some(true)))
        .collect();
    let eps: Vec<(&str, Option<&str>, Option<bool>)> =
        eps.iter().map(|(a, h, r)| (a.as_str(), *h, *r)).collect();
    let sl = vec![slice("big", "many", "a", &eps, &[("p", "TCP", 1)])];
    s.records.replace(Records::build(D, &svc, &sl));
    let r = udp(s.addr, "many.big.svc.cluster.local.", RecordType::A, None).await;
    assert!(r.metadata.truncation);
    assert!(
        r.answers.len() < 60 && !r.answers.is_empty(),
        "{}",
        r.answers.len()
    );
    let r = udp(
        s.addr,
        "many.big.svc.cluster.local.",
        RecordType::A,
        Some(4096),
    )
    .await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 60);
    assert!(r.edns.is_some(), "OPT kept");
    let r = tcp(s.addr, "many.big.svc.cluster.local.", RecordType::A).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 60);
    // A forwarded answer too big for the client: TC from the cache's copy.
    let r = udp(s.addr, "big.example.", RecordType::A, Some(1232)).await;
    assert_eq!(r.answers.len(), 60);
    let r = udp(s.addr, "big.example.", RecordType::A, None).await;
    assert!(r.metadata.truncation);
    // Upstream TC is passed on (not cached); the TCP retry goes to the upstream over TCP.
    let r = udp(s.addr, "tc.example.", RecordType::A, None).await;
    assert!(r.metadata.truncation);
    let r = tcp(s.addr, "tc.example.", RecordType::A).await;
    assert!(!r.metadata.truncation);
    assert_eq!(data(&r), ["192.0.2.7", "192.0.2.8"]);
    assert_eq!(up.tcp_queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bad_input() {
    let up = fake_upstream(true).await;
    let s = start(vec![up.addr]).await;
    // Header claiming one question that is not there: FORMERR with the id.
    let junk = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'x'];
    let r = Message::from_vec(&udp_raw(s.addr, &junk).await).unwrap();
    assert_eq!(r.metadata.id, 0xabcd);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Two questions: FORMERR.
    let mut m = query_msg("web.default.svc.cluster.local.", RecordType::A, None);
    m.add_query(Query::query(Name::from_ascii("x.").unwrap(), RecordType::A));
    let r = Message::from_vec(&udp_raw(s.addr, &m.to_vec().unwrap()).await).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Another opcode: NOTIMP.
    let mut m = query_msg("web.default.svc.cluster.local.", RecordType::A, None);
    m.metadata.op_code = OpCode::Status;
    let r = Message::from_vec(&udp_raw(s.addr, &m.to_vec().unwrap()).await).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    // Class CH: NOTIMP; AXFR: REFUSED.
    let mut m = query_msg("web.default.svc.cluster.local.", RecordType::A, None);
    let mut q = m.queries[0].clone();
    q.set_query_class(hickory_proto::rr::DNSClass::CH);
    m.queries = vec![q];
    let r = Message::from_vec(&udp_raw(s.addr, &m.to_vec().unwrap()).await).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    let r = udp(s.addr, "cluster.local.", RecordType::AXFR, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    // A name longer than 255 bytes (label lengths are fine): FORMERR.
    let mut wire = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        wire.push(63);
        wire.extend_from_slice(&[b'a'; 63]);
    }
    wire.extend_from_slice(&[0, 0, 1, 0, 1]);
    let r = Message::from_vec(&udp_raw(s.addr, &wire).await).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Still serving.
    let r = udp(
        s.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(data(&r), ["10.43.0.20"]);
    // Garbage over TCP closes that connection only.
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
    let r = tcp(s.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&r), ["10.43.0.20"]);
}

#[tokio::test]
async fn records_replaced_while_serving_and_kept_otherwise() {
    let up = fake_upstream(true).await;
    let s = start(vec![up.addr]).await;
    let r = udp(
        s.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(data(&r), ["10.43.0.20"]);
    // Nothing replaces the records (API server unreachable): they keep being served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = udp(
        s.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(data(&r), ["10.43.0.20"]);
    // Replaced: the new set answers at once, the old name is gone.
    let svc = vec![cluster_ip(
        "default",
        "api",
        &["10.43.0.99"],
        vec![port("h", "TCP", 1)],
    )];
    s.records.replace(Records::build(D, &svc, &[]));
    let r = udp(
        s.addr,
        "api.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(data(&r), ["10.43.0.99"]);
    let r = udp(
        s.addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
}

/// Rough throughput of the server on loopback (printed; no assertion on it): one client
/// socket keeping 64 queries in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rough_throughput() {
    let up = fake_upstream(true).await;
    let s = start(vec![up.addr]).await;
    let mut targets = vec![
        ("service", "web.default.svc.cluster.local.", s.addr),
        ("cached forward", "www.example.", s.addr),
    ];
    // Another server for the same loop, e.g. dnsmasq with
    // --host-record=web.default.svc.cluster.local,10.43.0.20.
    if let Ok(other) = std::env::var("K8SLITE_DNS_COMPARE") {
        let addr: SocketAddr = other.parse().unwrap();
        targets.push((
            "other server, service",
            "web.default.svc.cluster.local.",
            addr,
        ));
    }
    for (label, name, addr) in targets {
        let q = query_msg(name, RecordType::A, None).to_vec().unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(addr).await.unwrap();
        let _ = udp_raw(addr, &q).await; // warm the cache
        let total = 20_000usize;
        let window = 64usize;
        let mut buf = vec![0u8; 1500];
        let start = Instant::now();
        let mut sent = 0;
        let mut got = 0;
        while sent < window {
            sock.send(&q).await.unwrap();
            sent += 1;
        }
        while got < total {
            match tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
                Ok(r) => {
                    r.unwrap();
                    got += 1;
                }
                Err(_) => {
                    // A lost datagram: refill the window.
                    got += window;
                }
            }
            if sent < total {
                sock.send(&q).await.unwrap();
                sent += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!("{label}: {:.0} queries/s", total as f64 / secs);
        assert!(got >= total);
    }
}

// ---------------------------------------------------------------------------------------------
// snapshot

/// A lookup as comparable text (record order ignored).
fn describe(r: &Records, name: &str, t: RecordType) -> String {
    match look(r, name, t) {
        Lookup::Answer {
            answers,
            additionals,
        } => {
            let mut a: Vec<String> = answers
                .iter()
                .map(|r| format!("{} {} {}", r.name, r.ttl, r.data))
                .collect();
            let mut b: Vec<String> = additionals
                .iter()
                .map(|r| format!("{} {}", r.name, r.data))
                .collect();
            a.sort();
            b.sort();
            format!("answer {a:?} {b:?}")
        }
        Lookup::Alias { cname, target } => format!("alias {} {target}", cname.data),
        Lookup::NoData => "nodata".into(),
        Lookup::NxDomain => "nxdomain".into(),
        Lookup::Forward => "forward".into(),
    }
}

const SNAPSHOT_NAMES: &[&str] = &[
    "web.default.svc.cluster.local",
    "dual.default.svc.cluster.local",
    "_http._tcp.web.default.svc.cluster.local",
    "_dns._udp.web.default.svc.cluster.local",
    "10-42-0-5.web.default.svc.cluster.local",
    "pg.db.svc.cluster.local",
    "pg-1.pg.db.svc.cluster.local",
    "pg-2.pg.db.svc.cluster.local",
    "_sql._tcp.pg.db.svc.cluster.local",
    "warm.db.svc.cluster.local",
    "empty.db.svc.cluster.local",
    "ext.default.svc.cluster.local",
    "inner.default.svc.cluster.local",
    "kube-dns.kube-system.svc.cluster.local",
    "ns.dns.cluster.local",
    "cluster.local",
    "db.svc.cluster.local",
    "nosuch.default.svc.cluster.local",
    "nosuch.svc.cluster.local",
    "20.0.43.10.in-addr.arpa",
    "10.1.42.10.in-addr.arpa",
    "1.2.3.4.in-addr.arpa",
    "10-42-0-9.default.pod.cluster.local",
    "example.com",
];

#[test]
fn snapshot_answers_as_the_records_it_was_made_from() {
    let live = fixture();
    let bytes = live.to_snapshot();
    let mut loaded = Records::from_snapshot(D, &bytes).unwrap();
    loaded.set_ttl(5);
    assert_eq!(loaded.len(), live.len());
    for name in SNAPSHOT_NAMES {
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::PTR,
            RecordType::NS,
            RecordType::TXT,
        ] {
            assert_eq!(
                describe(&loaded, name, t),
                describe(&live, name, t),
                "{name} {t}"
            );
        }
    }
    // Canonical: the loaded records give the same bytes again.
    assert_eq!(loaded.to_snapshot(), bytes);
}

#[test]
fn snapshot_bytes_do_not_depend_on_input_order() {
    let a = cluster_ip(
        "default",
        "a",
        &["10.43.0.1"],
        vec![port("http", "TCP", 80)],
    );
    let b = headless("default", "b", vec![port("x", "TCP", 1)], false);
    let sa = slice(
        "default",
        "b",
        "1",
        &[("10.42.0.2", None, Some(true)), ("10.42.0.1", None, None)],
        &[("x", "TCP", 1)],
    );
    let sb = slice(
        "default",
        "b",
        "2",
        &[("10.42.0.3", Some("h"), Some(true))],
        &[("x", "TCP", 1)],
    );
    let one = Records::build(D, &[a.clone(), b.clone()], &[sa.clone(), sb.clone()]);
    let two = Records::build(D, &[b, a], &[sb, sa]);
    assert_eq!(one.to_snapshot(), two.to_snapshot());
    let text = String::from_utf8(one.to_snapshot()).unwrap();
    assert!(text.len() < 300, "compact: {text}");
}

#[test]
fn snapshot_loads_under_another_domain_and_rejects_garbage() {
    let bytes = fixture().to_snapshot();
    let other = Records::from_snapshot("edge.example", &bytes).unwrap();
    assert_eq!(
        ips(&other, "web.default.svc.edge.example", RecordType::A),
        vec!["10.43.0.20"]
    );
    assert!(!matches!(
        look(&other, "web.default.svc.cluster.local", RecordType::A),
        Lookup::Answer { .. }
    ));
    assert!(Records::from_snapshot(D, b"{not json").is_err());
    assert!(matches!(
        Records::from_snapshot(D, br#"{"v":99,"s":[]}"#),
        Err(SnapshotError::Layout(99))
    ));
    assert!(Records::from_snapshot(D, br#"{"v":1}"#).unwrap().is_empty());
}

#[test]
fn snapshot_of_a_thousand_services_is_small() {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..1000 {
        let name = format!("svc-{i}");
        services.push(cluster_ip(
            "default",
            &name,
            &[&format!("10.43.{}.{}", i / 250, i % 250 + 1)],
            vec![port("http", "TCP", 80)],
        ));
        slices.push(slice(
            "default",
            &name,
            "a",
            &[
                (
                    &format!("10.42.{}.{}", i / 120, (i % 120) * 2 + 1),
                    None,
                    Some(true),
                ),
                (
                    &format!("10.42.{}.{}", i / 120, (i % 120) * 2 + 2),
                    None,
                    Some(true),
                ),
            ],
            &[("http", "TCP", 8080)],
        ));
    }
    let r = Records::build(D, &services, &slices);
    let bytes = r.to_snapshot();
    eprintln!(
        "snapshot of 1,000 services / 2,000 endpoints: {} bytes",
        bytes.len()
    );
    assert!(bytes.len() < 300_000, "{} bytes", bytes.len());
    assert_eq!(Records::from_snapshot(D, &bytes).unwrap().len(), r.len());
}
