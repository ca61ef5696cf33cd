//! Node controllers through the real binary: IPAM gives distinct pod CIDRs; the lifecycle
//! controller marks a node whose Lease stops Unknown and taints it within the grace period,
//! evicts pods by their tolerations, and untaints a recovered node; the pod GC removes the
//! pods of a deleted node; every namespace gets a default ServiceAccount.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8slite_tests::{Server, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn now_micro() -> String {
    // RFC 3339 with microseconds, as Lease renewTime (MicroTime) wants
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn create_node(s: &Server, name: &str) {
    s.k_stdin(
        &["create", "-f", "-"],
        Some(&format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}}}}"#
        )),
    );
    s.k_stdin(
        &["create", "-f", "-"],
        Some(&format!(
            r#"{{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{{"name":"{name}","namespace":"kube-node-lease"}},
"spec":{{"holderIdentity":"{name}","leaseDurationSeconds":40,"renewTime":"{}"}}}}"#,
            now_micro()
        )),
    );
    set_ready(s, name, "True");
}

fn set_ready(s: &Server, name: &str, status: &str) {
    let patch = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{status}","reason":"KubeletReady","lastHeartbeatTime":"{}"}}]}}}}"#,
        now_micro()
            .split('.')
            .next()
            .map(|s| format!("{s}Z"))
            .unwrap_or_default()
    );
    s.k(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

fn renew(s: &Server, name: &str) {
    let patch = format!(r#"{{"spec":{{"renewTime":"{}"}}}}"#, now_micro());
    s.k(&[
        "patch",
        "lease",
        name,
        "-n",
        "kube-node-lease",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

fn jp(s: &Server, args: &[&str], path: &str) -> String {
    let mut a: Vec<&str> = args.to_vec();
    let p = format!("jsonpath={path}");
    a.extend(["-o", p.as_str()]);
    let out = s.kubectl(&a);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn create_pod_on(s: &Server, name: &str, node: &str, tolerations: &str) {
    s.k_stdin(
        &["create", "-f", "-"],
        Some(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},
"spec":{{"nodeName":"{node}","tolerations":{tolerations},"containers":[{{"name":"c","image":"nginx"}}]}}}}"#
        )),
    );
    s.k(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
}

#[test]
fn ipam_gives_distinct_cidrs_that_survive_a_restart() {
    let mut s = Server::start_with(&["--cluster-cidr=10.50.0.0/16", "--node-cidr-mask-size=24"]);
    for n in ["n1", "n2", "n3"] {
        s.k_stdin(
            &["create", "-f", "-"],
            Some(&format!(
                r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{n}"}}}}"#
            )),
        );
    }
    let cidrs = eventually(WAIT, || {
        let c = jp(&s, &["get", "nodes"], "{.items[*].spec.podCIDR}");
        (c.split_whitespace().count() == 3).then_some(c)
    })
    .expect("three nodes with a podCIDR");
    let mut list: Vec<&str> = cidrs.split_whitespace().collect();
    assert!(
        list.iter()
            .all(|c| c.starts_with("10.50.") && c.ends_with("/24")),
        "{list:?}"
    );
    list.sort();
    list.dedup();
    assert_eq!(list.len(), 3, "distinct: {cidrs}");
    assert_eq!(
        jp(&s, &["get", "node", "n1"], "{.spec.podCIDRs[0]}"),
        jp(&s, &["get", "node", "n1"], "{.spec.podCIDR}")
    );
    // a deleted node's block is free again; a restart keeps the others
    let n2 = jp(&s, &["get", "node", "n2"], "{.spec.podCIDR}");
    s.k(&["delete", "node", "n2"]);
    assert!(s.terminate(Duration::from_secs(20)), "clean shutdown");
    s.spawn();
    s.k_stdin(
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n4"}}"#),
    );
    let n4 = eventually(WAIT, || {
        let c = jp(&s, &["get", "node", "n4"], "{.spec.podCIDR}");
        (!c.is_empty()).then_some(c)
    })
    .expect("n4 gets a CIDR after the restart");
    assert_eq!(n4, n2, "the freed block is the first free one");
    let all = jp(&s, &["get", "nodes"], "{.items[*].spec.podCIDR}");
    let mut v: Vec<&str> = all.split_whitespace().collect();
    v.sort();
    v.dedup();
    assert_eq!(v.len(), 3, "still distinct: {all}");
}

#[test]
fn silent_node_goes_unknown_is_tainted_and_its_pods_evicted() {
    let s = Server::start_with(&["--node-monitor-grace-period=4", "--node-monitor-period=1"]);
    create_node(&s, "alive");
    // the silent node's last heartbeat is posted after this instant
    let started = std::time::Instant::now();
    create_node(&s, "silent");
    // keep "alive" renewing its Lease
    let stop = Arc::new(AtomicBool::new(false));
    let recovered = Arc::new(AtomicBool::new(false));
    let renewer = {
        let stop = stop.clone();
        let recovered = recovered.clone();
        let kubeconfig = s.kubeconfig();
        let home = s.dir.path().to_path_buf();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let names: &[&str] = if recovered.load(Ordering::Relaxed) {
                    &["alive", "silent"]
                } else {
                    &["alive"]
                };
                for n in names {
                    let patch = format!(r#"{{"spec":{{"renewTime":"{}"}}}}"#, now_micro());
                    let _ = std::process::Command::new(k8slite_tests::kubectl_bin(None))
                        .args([
                            "patch",
                            "lease",
                            n,
                            "-n",
                            "kube-node-lease",
                            "--type=merge",
                            "-p",
                            &patch,
                        ])
                        .env("KUBECONFIG", &kubeconfig)
                        .env("HOME", &home)
                        .output();
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    create_pod_on(
        &s,
        "short",
        "silent",
        r#"[{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":2}]"#,
    );
    create_pod_on(&s, "forever", "silent", r#"[{"operator":"Exists"}]"#);
    eventually(WAIT, || {
        let st = jp(
            &s,
            &["get", "node", "silent"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        );
        let taints = jp(&s, &["get", "node", "silent"], "{.spec.taints[*].key}");
        (st == "Unknown" && taints.contains("node.kubernetes.io/unreachable")).then_some(())
    })
    .expect("silent node Unknown and tainted unreachable");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "not before the grace period"
    );
    let reason = jp(
        &s,
        &["get", "node", "silent"],
        "{.status.conditions[?(@.type==\"Ready\")].reason}",
    );
    assert_eq!(reason, "NodeStatusUnknown");
    let effects = jp(&s, &["get", "node", "silent"], "{.spec.taints[*].effect}");
    assert!(
        effects.contains("NoExecute") && effects.contains("NoSchedule"),
        "{effects}"
    );
    for c in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let st = jp(
            &s,
            &["get", "node", "silent"],
            &format!("{{.status.conditions[?(@.type==\"{c}\")].status}}"),
        );
        assert_eq!(st, "Unknown", "{c}");
    }
    // the alive node stays untainted
    assert_eq!(
        jp(&s, &["get", "node", "alive"], "{.spec.taints[*].key}"),
        ""
    );
    // pods: marked not ready; "short" evicted after its 2 s; "forever" stays
    eventually(WAIT, || {
        let ts = jp(
            &s,
            &["get", "pod", "short"],
            "{.metadata.deletionTimestamp}",
        );
        (!ts.is_empty()).then_some(())
    })
    .expect("pod with tolerationSeconds evicted");
    let ev = eventually(WAIT, || {
        let e = s.k(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=short",
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        e.contains("TaintManagerEviction").then_some(e)
    })
    .expect("TaintManagerEviction event");
    assert!(ev.contains("NodeNotReady"), "events of the pod: {ev}");
    assert_eq!(
        jp(
            &s,
            &["get", "pod", "forever"],
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "False"
    );
    assert_eq!(
        jp(
            &s,
            &["get", "pod", "forever"],
            "{.metadata.deletionTimestamp}"
        ),
        ""
    );

    // recovery: the node renews its Lease and reports Ready again → taints removed
    renew(&s, "silent");
    recovered.store(true, Ordering::Relaxed);
    set_ready(&s, "silent", "True");
    eventually(WAIT, || {
        (jp(&s, &["get", "node", "silent"], "{.spec.taints[*].key}").is_empty()).then_some(())
    })
    .expect("taints removed on recovery");
    // a node reporting Ready=False (kubelet alive) gets the not-ready taint
    set_ready(&s, "alive", "False");
    eventually(WAIT, || {
        jp(&s, &["get", "node", "alive"], "{.spec.taints[*].key}")
            .contains("node.kubernetes.io/not-ready")
            .then_some(())
    })
    .expect("not-ready taint");
    stop.store(true, Ordering::Relaxed);
    let _ = renewer.join();

    // pod GC: the pods of a deleted node go
    s.k(&["delete", "node", "silent"]);
    eventually(WAIT, || {
        let pods = jp(&s, &["get", "pods"], "{.items[*].metadata.name}");
        pods.is_empty().then_some(())
    })
    .expect("pods of the deleted node removed by the pod GC");
}

#[test]
fn every_namespace_gets_a_default_service_account() {
    let s = Server::start();
    s.k(&["create", "namespace", "team-a"]);
    for ns in ["default", "kube-system", "team-a"] {
        eventually(WAIT, || {
            s.kubectl(&["get", "sa", "default", "-n", ns])
                .status
                .success()
                .then_some(())
        })
        .unwrap_or_else(|| panic!("default service account in {ns}"));
    }
    s.k(&["delete", "sa", "default", "-n", "team-a"]);
    eventually(WAIT, || {
        s.kubectl(&["get", "sa", "default", "-n", "team-a"])
            .status
            .success()
            .then_some(())
    })
    .expect("default service account recreated");
}
