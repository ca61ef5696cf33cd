//! Prerequisites of the e2e harness. A missing one fails the test with a message naming it and
//! how to get it (`packaging/prereqs.sh --test` installs them on Debian).

use std::path::Path;

const HINT: &str = "(packaging/prereqs.sh --test installs the Debian packages)";

/// What is missing, one message per item (empty: all present). `k8slite` adds the checks for
/// running the binary (the binary itself and kubectl).
pub fn missing(k8slite: bool) -> Vec<String> {
    let mut m = Vec::new();
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        m.push("root (the e2e tests create network namespaces, cgroups and mounts)".to_string());
    }
    let file = |p: &str, what: &str, m: &mut Vec<String>| {
        if !Path::new(p).exists() {
            m.push(format!("{what} ({p})"));
        }
    };
    file("/usr/bin/containerd", "containerd", &mut m);
    if which("runc").is_none() {
        m.push("runc".into());
    }
    file("/usr/lib/cni/bridge", "containernetworking-plugins", &mut m);
    file(
        "/usr/lib/cni/host-local",
        "containernetworking-plugins",
        &mut m,
    );
    file(
        "/usr/lib/cni/portmap",
        "containernetworking-plugins",
        &mut m,
    );
    if which("iptables").is_none() {
        m.push(
            "iptables (an `iptables` command on PATH or in /usr/sbin; Debian's package left unconfigured has none)"
                .into(),
        );
    }
    let bb = Path::new("/bin/busybox");
    if !bb.exists() {
        m.push("busybox-static (/bin/busybox)".into());
    } else if std::process::Command::new("ldd")
        .arg(bb)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        m.push("busybox-static (/bin/busybox is the dynamic busybox)".into());
    }
    for (cmd, pkg) in [
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
        ("ctr", "containerd"),
        ("tar", "tar"),
        ("sha256sum", "coreutils"),
    ] {
        if which(cmd).is_none() {
            m.push(format!("{cmd} ({pkg})"));
        }
    }
    if k8slite && which("kubectl").is_none() {
        m.push("kubectl".into());
    }
    m.dedup();
    m
}

/// Panic naming every missing prerequisite.
pub fn check(k8slite: bool) {
    let m = missing(k8slite);
    assert!(
        m.is_empty(),
        "prerequisite missing: {} {HINT}",
        m.join(", ")
    );
    if k8slite {
        // panics naming the binary when it is absent
        let _ = crate::k8slite_bin();
    }
}

/// A command on PATH or in the sbin directories.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&format!("{path}:/usr/local/sbin:/usr/sbin:/sbin"))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
