//! Garbage collection through the real binary and kubectl: owner chains built from ConfigMaps
//! (so no other controller is involved), deleted with Background, Orphan and Foreground
//! propagation, and references to owners that never existed.

use std::time::Duration;

use k8slite_tests::{Server, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn uid(s: &Server, kind: &str, name: &str) -> String {
    let u = s.k(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"]);
    assert!(!u.trim().is_empty(), "{kind}/{name} has no uid");
    u.trim().to_string()
}

/// Create ConfigMap `name` owned by ConfigMap `owner` (with `uid`).
fn create_dependent(
    s: &Server,
    name: &str,
    owner: &str,
    owner_uid: &str,
    block: bool,
    finalizer: bool,
) {
    let fin = if finalizer {
        r#","finalizers":["example.com/hold"]"#
    } else {
        ""
    };
    let yaml = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"{fin},
"ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"{owner}","uid":"{owner_uid}","blockOwnerDeletion":{block}}}]}},"data":{{"k":"v"}}}}"#
    );
    s.k_stdin(&["create", "-f", "-"], Some(&yaml));
}

fn exists(s: &Server, kind: &str, name: &str) -> bool {
    let out = s.kubectl(&["get", kind, name, "-o", "name"]);
    if out.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NotFound"),
        "kubectl get {kind}/{name} failed: {err}"
    );
    false
}

#[test]
fn background_deletion_removes_dependents_down_a_chain() {
    let s = Server::start();
    s.k(&["create", "configmap", "root"]);
    let root = uid(&s, "cm", "root");
    create_dependent(&s, "child", "root", &root, false, false);
    let child = uid(&s, "cm", "child");
    create_dependent(&s, "grandchild", "child", &child, false, false);
    s.k(&["create", "configmap", "bystander"]);
    s.k(&["delete", "cm", "root"]);
    eventually(WAIT, || {
        (!exists(&s, "cm", "child") && !exists(&s, "cm", "grandchild")).then_some(())
    })
    .expect("child and grandchild deleted after their owner");
    assert!(
        exists(&s, "cm", "bystander"),
        "an object without owners stays"
    );
}

#[test]
fn orphan_deletion_leaves_dependents_without_the_reference() {
    let s = Server::start();
    s.k(&["create", "configmap", "owner"]);
    s.k(&["create", "configmap", "other"]);
    let owner = uid(&s, "cm", "owner");
    let other = uid(&s, "cm", "other");
    // dep is owned by both; only the reference to `owner` must go
    let yaml = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"dep",
"ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"{owner}"}},
{{"apiVersion":"v1","kind":"ConfigMap","name":"other","uid":"{other}"}}]}}}}"#
    );
    s.k_stdin(&["create", "-f", "-"], Some(&yaml));
    create_dependent(&s, "single", "owner", &owner, true, false);
    s.k(&["delete", "cm", "owner", "--cascade=orphan"]);
    eventually(WAIT, || (!exists(&s, "cm", "owner")).then_some(()))
        .expect("owner deleted once its orphan finalizer is removed");
    let refs = s.k(&[
        "get",
        "cm",
        "dep",
        "-o",
        "jsonpath={.metadata.ownerReferences[*].name}",
    ]);
    assert_eq!(refs.trim(), "other");
    let refs = s.k(&[
        "get",
        "cm",
        "single",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert_eq!(
        refs.trim(),
        "",
        "orphaned dependent keeps no owner reference"
    );
    // and they stay
    std::thread::sleep(Duration::from_secs(2));
    assert!(exists(&s, "cm", "dep") && exists(&s, "cm", "single"));
}

#[test]
fn foreground_deletion_waits_for_blocking_dependents() {
    let s = Server::start();
    s.k(&["create", "configmap", "owner"]);
    let owner = uid(&s, "cm", "owner");
    // blocks its owner and holds itself with a finalizer of its own
    create_dependent(&s, "blocker", "owner", &owner, true, true);
    create_dependent(&s, "loose", "owner", &owner, false, false);
    s.k(&[
        "delete",
        "cm",
        "owner",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let fins = s.k(&[
        "get",
        "cm",
        "owner",
        "-o",
        "jsonpath={.metadata.finalizers}",
    ]);
    assert!(fins.contains("foregroundDeletion"), "finalizers: {fins}");
    eventually(WAIT, || {
        let ts = s.k(&[
            "get",
            "cm",
            "blocker",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        (!ts.trim().is_empty() && !exists(&s, "cm", "loose")).then_some(())
    })
    .expect("dependents deleted (the blocker is held by its finalizer)");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        exists(&s, "cm", "owner"),
        "the owner waits while a blocking dependent exists"
    );
    s.k(&[
        "patch",
        "cm",
        "blocker",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually(WAIT, || {
        (!exists(&s, "cm", "blocker") && !exists(&s, "cm", "owner")).then_some(())
    })
    .expect("owner deleted after its blocking dependent");
}

#[test]
fn references_to_owners_that_never_existed_are_verified_and_collected() {
    let s = Server::start();
    s.k(&["create", "configmap", "real"]);
    // right name, wrong uid: the owner is not this object
    create_dependent(
        &s,
        "wrong-uid",
        "real",
        "00000000-0000-0000-0000-000000000001",
        false,
        false,
    );
    create_dependent(
        &s,
        "no-owner",
        "ghost",
        "00000000-0000-0000-0000-000000000002",
        false,
        false,
    );
    let real = uid(&s, "cm", "real");
    create_dependent(&s, "fine", "real", &real, false, false);
    eventually(WAIT, || {
        (!exists(&s, "cm", "wrong-uid") && !exists(&s, "cm", "no-owner")).then_some(())
    })
    .expect("dependents of absent owners deleted");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        exists(&s, "cm", "fine"),
        "a dependent of a present owner stays"
    );
}
