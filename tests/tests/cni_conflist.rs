//! The conflist k8slite writes works with the distro's CNI plugins (Debian's
//! containernetworking-plugins in /usr/lib/cni): the bridge plugin with host-local IPAM, run
//! as containerd would run it, gives a pod network namespace an address from the pod CIDR that
//! the node reaches. Root only; everything happens in two private network namespaces (the
//! "node" and the "pod"), which are deleted afterwards with the bridge and the iptables rules
//! inside them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8slite_network::cni::{CniSettings, parse_pod_cidr, render};
use k8slite_network::host::{PrepOptions, RealHost, ensure_iptables};

const CNI_BIN: &str = "/usr/lib/cni";

fn require_root_and_plugins() {
    k8slite_tests::require_root("this test creates network namespaces");
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        assert!(
            Path::new(CNI_BIN).join(p).exists(),
            "prerequisite missing: {CNI_BIN}/{p} (Debian package containernetworking-plugins)"
        );
    }
    assert!(
        Path::new("/usr/sbin/ip").exists() || Path::new("/sbin/ip").exists(),
        "prerequisite missing: ip (iproute2)"
    );
    assert!(
        Path::new("/usr/bin/busybox").exists() || Path::new("/bin/busybox").exists(),
        "prerequisite missing: busybox (busybox-static), used for ping"
    );
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// Network namespaces deleted on drop.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

fn run_plugin(
    node_ns: &str,
    plugin: &str,
    conf: &serde_json::Value,
    command: &str,
    pod_ns: &str,
    path: &str,
) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", node_ns])
        .arg(Path::new(CNI_BIN).join(plugin))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "k8slite-cni-test")
        .env("CNI_NETNS", format!("/run/netns/{pod_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_BIN)
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run CNI plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("plugin output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bridge_and_host_local_from_our_conflist_give_the_pod_an_address() {
    require_root_and_plugins();
    let id = std::process::id();
    let (node_ns, pod_ns) = (format!("k8sl-jn-node-{id}"), format!("k8sl-jn-pod-{id}"));
    let _guard = Netns(vec![pod_ns.clone(), node_ns.clone()]);
    for n in [&node_ns, &pod_ns] {
        let out = ip(&["netns", "add", n]);
        assert!(
            out.status.success(),
            "ip netns add {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (_, _, path_dirs) =
        ensure_iptables(&RealHost, &PrepOptions::new(tmp.path().join("run"))).expect("iptables");
    let mut path: Vec<PathBuf> = path_dirs;
    path.extend(std::env::split_paths(
        &std::env::var("PATH").unwrap_or_default(),
    ));
    path.push("/usr/sbin".into());
    let path = std::env::join_paths(path)
        .expect("PATH")
        .to_string_lossy()
        .into_owned();

    let mut s = CniSettings::new(tmp.path(), parse_pod_cidr("10.199.7.0/24").expect("cidr"));
    s.network_name = format!("k8slite-test-{id}");
    let list = render(&s).expect("conflist");
    let mut bridge = list["plugins"][0].clone();
    bridge["cniVersion"] = list["cniVersion"].clone();
    bridge["name"] = list["name"].clone();

    let (ok, stdout, stderr) = run_plugin(&node_ns, "bridge", &bridge, "ADD", &pod_ns, &path);
    assert!(ok, "bridge ADD failed: {stdout} {stderr}");
    let result: serde_json::Value = serde_json::from_str(&stdout).expect("CNI result JSON");
    assert_eq!(result["ips"][0]["address"], "10.199.7.2/24", "{result}");
    assert_eq!(result["ips"][0]["gateway"], "10.199.7.1", "{result}");
    // host-local kept its state in our dataDir, not /var/lib/cni/networks.
    let ipam = s.ipam_data_dir.join(&s.network_name);
    assert!(
        ipam.join("10.199.7.2").exists(),
        "IPAM state in {}",
        ipam.display()
    );

    // The node (bridge k8slite0 as gateway) reaches the pod.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node_ns,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "10.199.7.2",
        ])
        .output()
        .expect("ping");
    assert!(
        ping.status.success(),
        "node cannot reach the pod: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    let link = Command::new("ip")
        .args([
            "netns", "exec", &node_ns, "ip", "-o", "addr", "show", "k8slite0",
        ])
        .output()
        .expect("ip addr");
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("10.199.7.1/24"),
        "bridge address: {}",
        String::from_utf8_lossy(&link.stdout)
    );

    // portmap accepts the chained result (no port mappings: nothing to do) and DEL cleans up.
    let mut portmap = list["plugins"][1].clone();
    portmap["cniVersion"] = list["cniVersion"].clone();
    portmap["name"] = list["name"].clone();
    portmap["prevResult"] = result.clone();
    let (ok, out, err) = run_plugin(&node_ns, "portmap", &portmap, "ADD", &pod_ns, &path);
    assert!(ok, "portmap ADD failed: {out} {err}");
    let (ok, out, err) = run_plugin(&node_ns, "bridge", &bridge, "DEL", &pod_ns, &path);
    assert!(ok, "bridge DEL failed: {out} {err}");
    assert!(!ipam.join("10.199.7.2").exists(), "address released");
}
