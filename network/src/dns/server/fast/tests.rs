//! The answer cache against the full path: a served response must be byte for byte what the
//! full path sends for the same packet.

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::sync::Semaphore;

use super::super::super::forward::{Forwarder, Upstream};
use super::super::super::records::Records;
use super::super::super::tests::{cluster_ip, fixture, headless, port, slice};
use super::super::RecordsHandle;
use super::super::handle::{ClientEdns, Handler, Outcome, Scratch};
use super::super::wire::cache_key;
use super::{AnswerCache, plain_query};

const D: &str = "cluster.local";

fn handler_with(records: Records, answers: AnswerCache) -> Handler {
    let h = Handler {
        records: RecordsHandle::new(Records::empty(D), 5),
        answers,
        forwarder: Forwarder::new(Vec::new(), Duration::from_secs(1), 100),
        pending: Arc::new(Semaphore::new(10)),
    };
    h.records.replace(records);
    h
}

fn handler(records: Records) -> Handler {
    handler_with(records, AnswerCache::default())
}

/// A query; `edns`: (payload, DO).
fn query(
    name: &str,
    t: RecordType,
    id: u16,
    rd: bool,
    cd: bool,
    edns: Option<(u16, bool)>,
) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = rd;
    m.metadata.checking_disabled = cd;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some((size, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// What the handler sends for `packet` (None: nothing or an upstream query).
fn ask(h: &Handler, packet: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match h.handle(packet, false, &mut Scratch::default(), &mut out) {
        Outcome::Reply => Some(out),
        _ => None,
    }
}

/// What the full path alone sends for `packet`.
fn full(h: &Handler, packet: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match h.handle_full(packet, false, &mut Scratch::default(), &mut out) {
        Outcome::Reply => Some(out),
        _ => None,
    }
}

/// Whether the answer cache alone has a response for `packet`.
fn cached(h: &Handler, packet: &[u8]) -> bool {
    let mut key = Vec::new();
    let Some(plain) = plain_query(packet, &mut key) else {
        return false;
    };
    let mut out = Vec::new();
    h.answers
        .serve(&key, packet, &plain, h.records.generation(), &mut out)
}

fn key_of(packet: &[u8]) -> Option<Vec<u8>> {
    let mut key = Vec::new();
    plain_query(packet, &mut key).map(|_| key)
}

const NAMES: &[(&str, RecordType)] = &[
    ("web.default.svc.cluster.local.", RecordType::A),
    ("dual.default.svc.cluster.local.", RecordType::AAAA),
    ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
    ("pg.db.svc.cluster.local.", RecordType::SRV),
    ("pg-0.pg.db.svc.cluster.local.", RecordType::A),
    ("nope.default.svc.cluster.local.", RecordType::A),
    ("web.default.svc.cluster.local.", RecordType::MX),
    ("inner.default.svc.cluster.local.", RecordType::A),
    ("ext.default.svc.cluster.local.", RecordType::CNAME),
    ("20.0.43.10.in-addr.arpa.", RecordType::PTR),
    ("dns-version.cluster.local.", RecordType::TXT),
    ("cluster.local.", RecordType::SOA),
    ("cluster.local.", RecordType::NS),
    ("10-42-0-9.default.pod.cluster.local.", RecordType::A),
];

const EDNS: &[Option<(u16, bool)>] = &[
    None,
    Some((512, false)),
    Some((1232, false)),
    Some((4096, true)),
    Some((100, false)),
    Some((65000, false)),
];

/// Flip the case of every other letter.
fn mixed(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[test]
fn served_answers_equal_the_full_path_with_id_rd_cd_of_the_client() {
    let h = handler(fixture());
    let mut hits = 0;
    for &(name, t) in NAMES {
        for &edns in EDNS {
            // Filled by one client...
            let first = query(name, t, 1, true, false, edns);
            assert_eq!(ask(&h, &first), full(&h, &first), "{name} {t} {edns:?}");
            assert!(cached(&h, &first), "{name} {t} {edns:?} kept");
            // ...not served to another letter case (the layout may differ)...
            let upper = query(&name.to_ascii_uppercase(), t, 1, true, false, edns);
            assert!(!cached(&h, &upper));
            // ...served to other ids and flags; another case replaces the entry.
            for n in [name.to_string(), mixed(name), name.to_ascii_uppercase()] {
                for (i, (rd, cd)) in [(true, false), (false, true), (false, false)]
                    .iter()
                    .enumerate()
                {
                    let id = 0x4242 + i as u16;
                    let q = query(&n, t, id, *rd, *cd, edns);
                    hits += usize::from(cached(&h, &q));
                    let got = ask(&h, &q).unwrap();
                    assert_eq!(
                        Some(&got),
                        full(&h, &q).as_ref(),
                        "{n} {t} {edns:?} rd {rd} cd {cd}"
                    );
                    assert_eq!(got[..2], id.to_be_bytes());
                    assert_eq!(got[2] & 0x01 != 0, *rd);
                    assert_eq!(got[3] & 0x10 != 0, *cd);
                    let qend = q.len() - if edns.is_some() { 11 } else { 0 };
                    assert_eq!(
                        got[12..qend],
                        q[12..qend],
                        "the client's question, case kept"
                    );
                }
            }
        }
    }
    // Lowercase: 3 hits; each other case: a miss that refills, then 2 hits.
    assert_eq!(hits, NAMES.len() * EDNS.len() * 7);
}

#[test]
fn edns_variants_are_keyed_apart() {
    let name = "web.default.svc.cluster.local.";
    let key = |e| key_of(&query(name, RecordType::A, 7, true, false, e)).unwrap();
    let none = key(None);
    let small = key(Some((512, false)));
    let mid = key(Some((1232, false)));
    let big = key(Some((4096, false)));
    let dnssec = key(Some((1232, true)));
    let all = [&none, &small, &mid, &big, &dnssec];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // Sizes are keyed as clamped (512..=4096).
    assert_eq!(key(Some((100, false))), small);
    assert_eq!(key(Some((65000, false))), big);
    // The name is keyed lowercase; the type is part of the key.
    assert_eq!(
        key_of(&query(&mixed(name), RecordType::A, 9, false, true, None)).unwrap(),
        none
    );
    assert_ne!(
        key_of(&query(name, RecordType::AAAA, 7, true, false, None)).unwrap(),
        none
    );
}

/// A headless Service of 60 endpoints: its A answer needs about 1 KiB.
fn big_records() -> Records {
    let eps: Vec<String> = (0..60).map(|i| format!("10.42.9.{}", i + 1)).collect();
    let eps: Vec<(&str, Option<&str>, Option<bool>)> =
        eps.iter().map(|a| (a.as_str(), None, Some(true))).collect();
    Records::build(
        D,
        &[headless(
            "default",
            "many",
            vec![port("p", "TCP", 1)],
            false,
        )],
        &[slice("default", "many", "a", &eps, &[("p", "TCP", 1)])],
    )
}

#[test]
fn truncation_follows_the_clients_limit() {
    let h = handler(big_records());
    let name = "many.default.svc.cluster.local.";
    for _ in 0..2 {
        let plain = ask(&h, &query(name, RecordType::A, 1, true, false, None)).unwrap();
        assert!(plain.len() <= 512);
        assert_ne!(plain[2] & 0x02, 0, "TC without EDNS");
        let small = ask(
            &h,
            &query(name, RecordType::A, 1, true, false, Some((512, false))),
        )
        .unwrap();
        assert!(small.len() <= 512);
        assert_ne!(small[2] & 0x02, 0, "TC at 512 with EDNS");
        let big = ask(
            &h,
            &query(name, RecordType::A, 1, true, false, Some((4096, false))),
        )
        .unwrap();
        assert!(big.len() > 512);
        assert_eq!(big[2] & 0x02, 0, "no TC at 4096");
        let m = Message::from_vec(&big).unwrap();
        assert_eq!(m.answers.len(), 60);
    }
    for e in [None, Some((512, false)), Some((4096, false))] {
        assert!(cached(&h, &query(name, RecordType::A, 3, true, false, e)));
    }
}

fn address(resp: &[u8]) -> Vec<String> {
    Message::from_vec(resp)
        .unwrap()
        .answers
        .iter()
        .map(|r| r.data.to_string())
        .collect()
}

#[test]
fn replaced_records_are_never_served_from_the_cache() {
    let h = handler(fixture());
    let q = query(
        "web.default.svc.cluster.local.",
        RecordType::A,
        1,
        true,
        false,
        None,
    );
    assert_eq!(address(&ask(&h, &q).unwrap()), ["10.43.0.20"]);
    assert!(cached(&h, &q));
    h.records.replace(Records::build(
        D,
        &[cluster_ip(
            "default",
            "web",
            &["10.43.0.99"],
            vec![port("http", "TCP", 80)],
        )],
        &[],
    ));
    assert!(!cached(&h, &q));
    assert_eq!(address(&ask(&h, &q).unwrap()), ["10.43.0.99"]);
    assert!(cached(&h, &q));
    // A name gone with the replacement is NXDOMAIN from then on.
    h.records.replace(Records::empty(D));
    let r = ask(&h, &q).unwrap();
    assert_eq!(r[3] & 0x0f, 3);
}

fn ttls(resp: &[u8]) -> Vec<u32> {
    Message::from_vec(resp)
        .unwrap()
        .answers
        .iter()
        .map(|r| r.ttl)
        .collect()
}

#[test]
fn forwarded_answers_count_their_ttls_down() {
    let h = handler(fixture());
    let name = Name::from_ascii("example.org.").unwrap();
    let rec = Record::from_rdata(name, 3600, RData::A(A::new(192, 0, 2, 1)));
    let mut key = Vec::new();
    let edns = Some(ClientEdns {
        payload: 1232,
        dnssec_ok: false,
    });
    for e in [None, edns] {
        cache_key("example.org", RecordType::A, DNSClass::IN, e, &mut key);
        let up = Upstream::answered(vec![rec.clone()], Duration::from_millis(10_500));
        h.forwarder.cache.put(&key, Arc::new(up));
    }
    for e in [None, Some((1232, false))] {
        let q = query("example.org.", RecordType::A, 1, true, false, e);
        let before = full(&h, &q).unwrap();
        let first = ask(&h, &q).unwrap();
        let again = ask(&h, &q).unwrap();
        let after = full(&h, &q).unwrap();
        for r in [&first, &again] {
            assert!(*r == before || *r == after, "served as the full path does");
        }
        let t0 = ttls(&first)[0];
        assert!(t0 <= 3590, "{t0}");
        std::thread::sleep(Duration::from_millis(1100));
        let later = ask(&h, &q).unwrap();
        let t1 = ttls(&later)[0];
        assert!(t1 < t0, "{t1} after {t0}");
        assert_eq!(later, full(&h, &q).unwrap());
    }
}

#[test]
fn the_cache_stays_within_its_bounds() {
    let h = handler_with(fixture(), AnswerCache::with_bounds(16, 4096));
    for i in 0..500 {
        let q = query(
            &format!("n{i}.default.svc.cluster.local."),
            RecordType::A,
            1,
            true,
            false,
            None,
        );
        assert!(ask(&h, &q).is_some());
        let (entries, bytes) = h.answers.usage();
        assert!(
            entries <= 16 && bytes <= 4096,
            "{entries} entries, {bytes} bytes"
        );
        // The newest answer is kept.
        assert!(cached(&h, &q));
    }
    let h = handler(fixture());
    for i in 0..5000 {
        let q = query(
            &format!("name-{i}.default.svc.cluster.local."),
            RecordType::A,
            1,
            true,
            false,
            None,
        );
        ask(&h, &q);
    }
    let (entries, bytes) = h.answers.usage();
    assert!(
        entries <= 2048 && bytes <= 256 * 1024,
        "{entries} entries, {bytes} bytes"
    );
    assert!(entries > 100, "{entries}");
}

#[test]
fn unusual_queries_take_the_full_path() {
    let base = query(
        "web.default.svc.cluster.local.",
        RecordType::A,
        1,
        true,
        false,
        None,
    );
    assert!(key_of(&base).is_some());
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = base.clone();
        f(&mut p);
        p
    };
    let edns = query(
        "web.default.svc.cluster.local.",
        RecordType::A,
        1,
        true,
        false,
        Some((1232, false)),
    );
    let mut odd = vec![
        with(&|p| p[2] |= 0x80),               // a response
        with(&|p| p[2] |= 0x08),               // opcode 1
        with(&|p| p[2] |= 0x02),               // TC
        with(&|p| p[5] = 2),                   // two questions
        with(&|p| p[7] = 1),                   // an answer record
        with(&|p| p[9] = 1),                   // an authority record
        with(&|p| p.push(0)),                  // trailing byte
        with(&|p| p.truncate(p.len() - 1)),    // cut
        with(&|p| *p.last_mut().unwrap() = 3), // class CH
        with(&|p| p[13] = b'.'),               // a dot in a label
        with(&|p| p[13] = 0xc3),               // a non-ASCII byte
        query(
            "web.default.svc.cluster.local.",
            RecordType::AXFR,
            1,
            true,
            false,
            None,
        ),
        query(
            "web.default.svc.cluster.local.",
            RecordType::IXFR,
            1,
            true,
            false,
            None,
        ),
    ];
    let mut bad_opt = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = edns.clone();
        f(&mut p);
        odd.push(p);
    };
    let n = edns.len();
    bad_opt(&|p| p[n - 5] = 1); // version 1
    bad_opt(&|p| p[n - 6] = 1); // extended rcode
    bad_opt(&|p| p[n - 3] = 1); // a flag other than DO
    bad_opt(&|p| {
        // an option (cookie-like, 8 bytes)
        p[n - 1] = 12;
        p.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    });
    bad_opt(&|p| p[n - 11] = 1); // OPT owner not the root
    let h = handler(fixture());
    for p in &odd {
        assert!(key_of(p).is_none(), "{p:?}");
        assert_eq!(ask(&h, p), full(&h, p));
    }
    assert_eq!(h.answers.usage().0, 0);
}

/// A small deterministic generator (no extra dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn no_byte_string_panics_and_every_reply_equals_the_full_path() {
    let h = handler(fixture());
    let mut bases = Vec::new();
    for &(name, t) in NAMES {
        for &e in EDNS {
            bases.push(query(name, t, 0x1234, true, false, e));
        }
    }
    // Warm: every base is cached.
    for b in &bases {
        ask(&h, b);
    }
    let check = |p: &[u8]| {
        let got = ask(&h, p);
        assert_eq!(got, full(&h, p), "{p:?}");
    };
    for b in &bases {
        for len in 0..b.len() {
            check(&b[..len]);
        }
        for i in 0..b.len() {
            for v in [
                0x00,
                0xff,
                0xc0,
                0x01,
                0x3f,
                0x29,
                b[i] ^ 0x20,
                b[i].wrapping_add(1),
            ] {
                let mut p = b.clone();
                p[i] = v;
                check(&p);
            }
        }
    }
    let mut rng = Lcg(7);
    for _ in 0..3000 {
        let b = &bases[rng.next() as usize % bases.len()];
        let mut p = b.clone();
        for _ in 0..1 + rng.next() % 4 {
            let i = rng.next() as usize % p.len();
            p[i] = rng.next() as u8;
        }
        check(&p);
        let len = rng.next() as usize % 80;
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check(&junk);
    }
}
