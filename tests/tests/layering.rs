//! The crate dependency direction of DESIGN.md, checked from `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};

/// Which k8slite crates each crate may depend on (normal dependencies).
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("k8slite", &["k8slite-server", "k8slite-agent"][..]),
        (
            "k8slite-server",
            &[
                "k8slite-apiserver",
                "k8slite-datastore",
                "k8slite-controllers",
                "k8slite-scheduler",
                "k8slite-pki",
                "k8slite-api",
                "k8slite-agent",
            ][..],
        ),
        (
            "k8slite-agent",
            &[
                "k8slite-runtime",
                "k8slite-network",
                "k8slite-storage",
                "k8slite-pki",
                "k8slite-api",
            ][..],
        ),
        (
            "k8slite-apiserver",
            &["k8slite-datastore", "k8slite-pki", "k8slite-api"][..],
        ),
        ("k8slite-controllers", &["k8slite-api"][..]),
        ("k8slite-scheduler", &["k8slite-api"][..]),
        ("k8slite-runtime", &["k8slite-api"][..]),
        ("k8slite-network", &["k8slite-api"][..]),
        ("k8slite-storage", &["k8slite-api"][..]),
        ("k8slite-datastore", &[][..]),
        ("k8slite-pki", &[][..]),
        ("k8slite-api", &[][..]),
    ])
}

#[test]
fn dependency_edges_point_down() {
    // Run-time values (cargo sets both for test processes): a test binary reused from a build in
    // another checkout must not look at that checkout.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(std::path::Path::new(&manifest_dir).join(".."))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let rules = allowed();
    let mut checked = BTreeSet::new();
    for pkg in meta["packages"].as_array().expect("packages") {
        let name = pkg["name"].as_str().expect("name");
        if name == "k8slite-tests" {
            continue;
        }
        let allowed = rules.get(name).unwrap_or_else(|| {
            panic!("crate {name} is not in the layering table; add it with its allowed edges")
        });
        for dep in pkg["dependencies"].as_array().expect("deps") {
            let dname = dep["name"].as_str().expect("dep name");
            let normal = dep["kind"].is_null();
            if dname.starts_with("k8slite") && normal {
                assert!(
                    allowed.contains(&dname),
                    "{name} must not depend on {dname} (allowed: {allowed:?})"
                );
            }
        }
        checked.insert(name.to_string());
    }
    for must in [
        "k8slite",
        "k8slite-server",
        "k8slite-apiserver",
        "k8slite-datastore",
        "k8slite-api",
        "k8slite-pki",
    ] {
        assert!(checked.contains(must), "{must} missing from the workspace");
    }
}
