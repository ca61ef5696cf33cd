//! Partial restores: only changed chains are written, deletions still happen, a failure or
//! the full-sync period makes the next sync full, and the host state after any sequence of
//! partial restores equals the state after one full restore.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// A model of `iptables-restore --noflush` on a host: table → chain → rules.
#[derive(Debug, Default, PartialEq, Eq)]
struct Host(BTreeMap<String, BTreeMap<String, Vec<String>>>);

impl Host {
    fn apply(&mut self, text: &str) {
        let mut table = String::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(d) = line.strip_prefix(':') {
                let c = d.split(' ').next().expect("chain");
                self.0
                    .entry(table.clone())
                    .or_default()
                    .insert(c.to_string(), Vec::new());
            } else if let Some(r) = line.strip_prefix("-A ") {
                let c = r.split(' ').next().expect("chain");
                let chains = self.0.get_mut(&table).expect("table");
                chains
                    .get_mut(c)
                    .unwrap_or_else(|| panic!("-A to missing chain {c}"))
                    .push(line.to_string());
            } else if let Some(c) = line.strip_prefix("-X ") {
                let chains = self.0.get_mut(&table).expect("table");
                chains
                    .remove(c)
                    .unwrap_or_else(|| panic!("-X of missing {c}"));
            }
        }
        // Every jump of ours goes to an existing chain (what the kernel enforces).
        for chains in self.0.values() {
            for rules in chains.values() {
                for r in rules {
                    if let Some(t) = r.split(" -j ").nth(1) {
                        let t = t.split(' ').next().expect("target");
                        if t.starts_with("K8SLITE-") {
                            assert!(chains.contains_key(t), "jump to missing {t}: {r}");
                        }
                    }
                }
            }
        }
    }
}

fn two_services(api_eps: Vec<Value>) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    let api = svc(
        "default",
        "api",
        json!({"clusterIP": "10.43.0.200", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}),
    );
    (
        vec![web("10.43.0.100", json!({})), api],
        vec![
            http_slice(
                "web",
                vec![ready("10.42.0.2", "node-a"), ready("10.42.0.3", "node-b")],
            ),
            http_slice("api", api_eps),
        ],
    )
}

/// The SVC chain of the service with cluster IP `vip` and its SEP chains, from a full text.
fn chains_of(text: &str, vip: &str) -> (String, Vec<String>) {
    let svc = target(one(
        table(text, "nat"),
        &[&format!("-A K8SLITE-SERVICES -d {vip}/32")],
    ))
    .to_string();
    let seps = chain(text, &svc)
        .into_iter()
        .map(target)
        .filter(|t| t.starts_with("K8SLITE-SEP-"))
        .map(str::to_string)
        .collect();
    (svc, seps)
}

fn declared(text: &str) -> BTreeSet<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split(' ').next())
        .collect()
}

#[test]
fn an_endpoint_change_rewrites_only_that_services_chains() {
    let (mut p, b, _) = proxier();
    let (s, e) = two_services(vec![
        ready("10.42.0.4", "node-a"),
        ready("10.42.0.5", "node-b"),
    ]);
    let rep = p.sync(&s, &e).expect("sync");
    assert!(rep.applied && rep.full);
    let full = b.restores()[0].clone();
    let (web_svc, web_seps) = chains_of(&full, "10.43.0.100");
    let mut web_chains = web_seps.clone();
    web_chains.push(web_svc);
    assert_eq!(web_chains.len(), 3, "{web_chains:?}");
    let (svc_chain, api_seps) = chains_of(&full, "10.43.0.200");
    assert_eq!(api_seps.len(), 2);
    let old_sep = one(&full, &["-s 10.42.0.5/32 -j K8SLITE-MARK-MASQ"])
        .split(' ')
        .nth(1)
        .expect("chain")
        .to_string();
    assert!(api_seps.contains(&old_sep));

    // api's second endpoint moves: its SVC chain and the two SEP chains (old deleted, new
    // created), nothing of web, no raw/filter, no top chain (the dispatch did not change).
    let (s, e) = two_services(vec![
        ready("10.42.0.4", "node-a"),
        ready("10.42.0.6", "node-b"),
    ]);
    let rep = p.sync(&s, &e).expect("sync");
    assert!(rep.applied && !rep.full);
    let t = b.restores()[1].clone();
    assert!(!t.contains("*raw") && !t.contains("*filter"), "{t}");
    for c in &web_chains {
        assert!(!t.contains(c), "web's chain {c} rewritten:\n{t}");
    }
    assert!(!declared(&t).contains("K8SLITE-SERVICES"), "{t}");
    let new_sep = one(&t, &["-s 10.42.0.6/32 -j K8SLITE-MARK-MASQ"])
        .split(' ')
        .nth(1)
        .expect("chain")
        .to_string();
    let d = declared(&t);
    assert!(
        d.contains(new_sep.as_str()) && d.contains(old_sep.as_str()),
        "{t}"
    );
    assert!(t.contains(&format!("-X {old_sep}\n")), "{t}");
    assert_eq!(d.len(), 3, "SVC + new SEP + deleted SEP: {t}");
    assert!(d.contains(svc_chain.as_str()), "{t}");
    assert!(lines(&t, &[&format!("-A {svc_chain} "), &new_sep]).len() == 1);

    // No endpoints any more: the dispatch chains change (nat SERVICES loses the entry, filter
    // SERVICES gains the REJECT) and api's chains are deleted.
    let (s, e) = two_services(vec![]);
    let rep = p.sync(&s, &e).expect("sync");
    assert!(rep.applied && !rep.full);
    let t = b.restores()[2].clone();
    assert!(t.contains("*filter\n:K8SLITE-SERVICES - [0:0]\n"), "{t}");
    one(&t, &["-A K8SLITE-SERVICES -d 10.43.0.200/32", "REJECT"]);
    assert!(t.contains(&format!("-X {svc_chain}\n")), "{t}");
    // nat SERVICES rewritten in full: web's entry is still there.
    let nat = table(&t, "nat");
    one(nat, &["-A K8SLITE-SERVICES -d 10.43.0.100/32"]);
    assert!(lines(nat, &["10.43.0.200"]).is_empty(), "{nat}");
}

#[test]
fn a_removed_service_has_its_chains_deleted() {
    let (mut p, b, _) = proxier();
    let (s, e) = two_services(vec![ready("10.42.0.4", "node-a")]);
    p.sync(&s, &e).expect("sync");
    let full = b.restores()[0].clone();
    let (api_svc, mut api) = chains_of(&full, "10.43.0.200");
    api.push(api_svc);
    assert_eq!(api.len(), 2, "SVC and SEP of api: {api:?}");
    let rep = p.sync(&s[..1], &e[..1]).expect("sync");
    assert!(rep.applied && !rep.full);
    let t = b.restores()[1].clone();
    for c in &api {
        assert!(t.contains(&format!(":{c} - [0:0]\n")), "{c} declared: {t}");
        assert!(t.contains(&format!("-X {c}\n")), "{c} deleted: {t}");
        assert!(lines(&t, &[&format!("-j {c}")]).is_empty(), "{t}");
    }
    // The next partial sync does not mention them again.
    let (s2, e2) = (
        vec![s[0].clone()],
        vec![http_slice("web", vec![ready("10.42.0.9", "node-a")])],
    );
    p.sync(&s2, &e2).expect("sync");
    let t = b.restores()[2].clone();
    for c in &api {
        assert!(!t.contains(c.as_str()), "{t}");
    }
}

#[test]
fn after_a_failed_restore_the_next_sync_is_full() {
    let (mut p, b, _) = proxier();
    let (s, e) = two_services(vec![ready("10.42.0.4", "node-a")]);
    p.sync(&s, &e).expect("sync");
    let (s, e) = two_services(vec![ready("10.42.0.7", "node-a")]);
    b.fail_restores_containing(Some("10.42.0.7"));
    assert!(p.sync(&s, &e).is_err());
    b.fail_restores_containing(None);
    let rep = p.sync(&s, &e).expect("sync");
    assert!(rep.applied && rep.full);
    let t = b.restores().last().cloned().expect("restore");
    assert!(t.contains("*raw") && t.contains("*filter") && t.contains("default/web"));
    // Back to partial afterwards; unchanged input restores nothing.
    let rep = p.sync(&s, &e).expect("sync");
    assert!(!rep.applied && !rep.full);
}

#[test]
fn full_sync_period_and_config_changes_make_full_syncs() {
    let (mut p, b, _) = proxier();
    let (s, e) = two_services(vec![ready("10.42.0.4", "node-a")]);
    p.sync(&s, &e).expect("sync");
    p.set_full_sync_every(std::time::Duration::ZERO);
    let rep = p.sync(&s, &e).expect("sync");
    assert!(
        rep.applied && rep.full,
        "due full sync restores even unchanged rules"
    );
    assert_eq!(b.restores()[1], b.restores()[0]);
    p.set_full_sync_every(FULL_SYNC_EVERY);
    let mut c = p.config().clone();
    c.node_ips = vec!["192.168.1.11".parse().expect("ip")];
    p.set_config(c);
    let rep = p.sync(&s, &e).expect("sync");
    assert!(rep.full);
    p.force_full_sync();
    assert!(p.sync(&s, &e).expect("sync").full);
}

#[test]
fn partial_restores_leave_the_host_as_a_full_restore_would() {
    let (mut p, b, _) = proxier();
    let mut host = Host::default();
    let eps = |n: u8, ready_b: bool| {
        vec![
            ready(&format!("10.42.0.{n}"), "node-a"),
            ep(
                &format!("10.42.1.{n}"),
                "node-b",
                ready_b,
                ready_b,
                !ready_b,
            ),
        ]
    };
    type Step = (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>);
    let steps: Vec<Step> = vec![
        two_services(eps(4, true)),
        two_services(eps(5, true)),
        two_services(eps(5, false)),
        two_services(vec![]),
        (
            two_services(vec![]).0[..1].to_vec(),
            two_services(vec![]).1[..1].to_vec(),
        ),
        two_services(eps(6, true)),
        (vec![], vec![]),
        two_services(eps(7, true)),
    ];
    for (i, (s, e)) in steps.iter().enumerate() {
        let before = b.restores().len();
        let rep = p.sync(s, e).expect("sync");
        assert_eq!(rep.full, i == 0);
        if b.restores().len() > before {
            host.apply(b.restores().last().expect("restore"));
        }
        // A fresh proxier's full restore onto an empty host.
        let (mut fresh, fb, _) = proxier();
        fresh.sync(s, e).expect("sync");
        let mut want = Host::default();
        want.apply(&fb.restores()[0]);
        assert_eq!(host, want, "step {i}");
    }
}
