//! The CNI conflist of a node: bridge (isGateway, ipMasq, hairpinMode) with host-local IPAM
//! over the node's pod CIDR (gateway = its first address, default route, the IPAM state in
//! k8slite's own `dataDir`), portmap (hostPort) and loopback; `cniVersion` 1.0.0 (what Debian's
//! plugins 1.1.1 support). The shape proven on these machines is
//! `shared/reference/cri-lab/10-crilab.conflist`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::{NetworkError, Result};

/// File name of the conflist (containerd loads the first file of its conf dir).
pub const CONFLIST_FILE: &str = "10-k8slite.conflist";
/// Default CNI network name (also the prefix of libcni's result files).
pub const DEFAULT_NETWORK_NAME: &str = "k8slite";
/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "k8slite0";
/// CNI spec version written.
pub const CNI_VERSION: &str = "1.0.0";

/// `<data-dir>/agent/cni`.
pub fn cni_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("cni")
}

/// Where the conflist goes: `<data-dir>/agent/cni/net.d` (containerd's `cni.conf_dir`).
pub fn conf_dir(data_dir: &Path) -> PathBuf {
    cni_dir(data_dir).join("net.d")
}

/// host-local's state: `<data-dir>/agent/cni/networks` (never the shared
/// `/var/lib/cni/networks`: two nodes on one machine must not share allocations).
pub fn ipam_dir(data_dir: &Path) -> PathBuf {
    cni_dir(data_dir).join("networks")
}

/// What the conflist says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniSettings {
    /// Network name.
    pub network_name: String,
    /// Bridge device name (at most 15 bytes).
    pub bridge: String,
    /// The node's pod CIDR (`Node.spec.podCIDR`).
    pub pod_cidr: IpNet,
    /// host-local's `dataDir`.
    pub ipam_data_dir: PathBuf,
    /// Masquerade traffic leaving the pod CIDR (single node: yes; with host-gw routes between
    /// nodes the agent masquerades itself instead).
    pub ip_masq: bool,
    /// Hairpin mode on the bridge ports (a pod reaching itself through a service).
    pub hairpin_mode: bool,
    /// MTU of the bridge and veths, when not the default.
    pub mtu: Option<u32>,
}

impl CniSettings {
    /// Defaults for `pod_cidr` on a node whose data dir is `data_dir`: network `k8slite`,
    /// bridge `k8slite0`, IPAM state under [`ipam_dir`], ipMasq and hairpin on.
    pub fn new(data_dir: &Path, pod_cidr: IpNet) -> Self {
        Self {
            network_name: DEFAULT_NETWORK_NAME.into(),
            bridge: DEFAULT_BRIDGE.into(),
            pod_cidr,
            ipam_data_dir: ipam_dir(data_dir),
            ip_masq: true,
            hairpin_mode: true,
            mtu: None,
        }
    }
}

/// Parse a pod CIDR as the API stores it (`10.42.3.0/24`), normalised to its network.
pub fn parse_pod_cidr(s: &str) -> Result<IpNet> {
    let net: IpNet = s.trim().parse().map_err(|e| NetworkError::Invalid {
        what: format!("pod CIDR {s:?}"),
        reason: format!("{e}"),
    })?;
    Ok(net.trunc())
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> NetworkError {
    NetworkError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// The conflist document for `s`.
pub fn render(s: &CniSettings) -> Result<Value> {
    if s.bridge.is_empty() || s.bridge.len() > 15 || s.bridge.contains(['/', ' ']) {
        return Err(invalid(
            format!("bridge name {:?}", s.bridge),
            "must be 1 to 15 characters without '/' or spaces",
        ));
    }
    if s.network_name.is_empty() || s.network_name.contains(['/', ' ']) {
        return Err(invalid(
            format!("network name {:?}", s.network_name),
            "must be non-empty without '/' or spaces",
        ));
    }
    let net = s.pod_cidr.trunc();
    if net.prefix_len() + 2 > net.max_prefix_len() {
        return Err(invalid(
            format!("pod CIDR {net}"),
            "too small for a gateway and pods",
        ));
    }
    // The gateway (bridge address) is the first address after the network's.
    let gateway: std::net::IpAddr = match net {
        IpNet::V4(n) => std::net::Ipv4Addr::from(u32::from(n.network()).wrapping_add(1)).into(),
        IpNet::V6(n) => std::net::Ipv6Addr::from(u128::from(n.network()).wrapping_add(1)).into(),
    };
    let default_route = match net {
        IpNet::V4(_) => "0.0.0.0/0",
        IpNet::V6(_) => "::/0",
    };
    let mut bridge = json!({
        "type": "bridge",
        "bridge": s.bridge,
        "isGateway": true,
        "ipMasq": s.ip_masq,
        "hairpinMode": s.hairpin_mode,
        "ipam": {
            "type": "host-local",
            "dataDir": s.ipam_data_dir.display().to_string(),
            "ranges": [[{"subnet": net.to_string(), "gateway": gateway.to_string()}]],
            "routes": [{"dst": default_route}],
        },
    });
    if let (Some(mtu), Some(obj)) = (s.mtu, bridge.as_object_mut()) {
        obj.insert("mtu".into(), json!(mtu));
    }
    Ok(json!({
        "cniVersion": CNI_VERSION,
        "name": s.network_name,
        "plugins": [
            bridge,
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"},
        ],
    }))
}

/// Write the conflist for `s` as `dir/10-k8slite.conflist` (atomically: temp file, fsync,
/// rename; mode 0644; `dir` and the IPAM dir are created). An identical file is left alone.
/// Returns the file's path.
pub fn write_conflist(dir: &Path, s: &CniSettings) -> Result<PathBuf> {
    let doc = render(s)?;
    let mut text = serde_json::to_string_pretty(&doc)
        .map_err(|e| invalid("CNI conflist", format!("encoding: {e}")))?;
    text.push('\n');
    let path = dir.join(CONFLIST_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(path);
    }
    let io = |what: &str, p: &Path| {
        let what = what.to_string();
        let p = p.to_path_buf();
        move |source| NetworkError::Io {
            what,
            path: p,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    std::fs::create_dir_all(&s.ipam_data_dir).map_err(io("creating", &s.ipam_data_dir))?;
    let tmp = dir.join(format!(".{CONFLIST_FILE}.tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        f.write_all(text.as_bytes()).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("renaming into place", &path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    tracing::info!(path = %path.display(), pod_cidr = %s.pod_cidr, bridge = %s.bridge, "wrote CNI conflist");
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_cri_lab_shape() {
        let s = CniSettings::new(
            Path::new("/var/lib/k8slite"),
            parse_pod_cidr("10.42.3.0/24").expect("cidr"),
        );
        let v = render(&s).expect("render");
        let want = json!({
            "cniVersion": "1.0.0",
            "name": "k8slite",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "k8slite0",
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": "/var/lib/k8slite/agent/cni/networks",
                        "ranges": [[{"subnet": "10.42.3.0/24", "gateway": "10.42.3.1"}]],
                        "routes": [{"dst": "0.0.0.0/0"}]
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"}
            ]
        });
        assert_eq!(v, want);
    }

    #[test]
    fn host_bits_are_truncated_and_bad_values_refused() {
        assert_eq!(
            parse_pod_cidr("10.42.3.7/24").expect("cidr").to_string(),
            "10.42.3.0/24"
        );
        assert!(parse_pod_cidr("10.42.3.0").is_err());
        let mut s = CniSettings::new(Path::new("/d"), parse_pod_cidr("fd00:42::/64").expect("v6"));
        s.mtu = Some(1450);
        let v = render(&s).expect("v6");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["gateway"],
            "fd00:42::1"
        );
        assert_eq!(v["plugins"][0]["ipam"]["routes"][0]["dst"], "::/0");
        assert_eq!(v["plugins"][0]["mtu"], 1450);
        s.bridge = "a-very-long-bridge-name".into();
        assert!(render(&s).is_err());
        let tiny = CniSettings::new(Path::new("/d"), parse_pod_cidr("10.0.0.0/31").expect("c"));
        assert!(render(&tiny).is_err());
    }

    #[test]
    fn written_atomically_and_only_when_changed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let data = tmp.path();
        let s = CniSettings::new(data, parse_pod_cidr("10.42.0.0/24").expect("cidr"));
        let p = write_conflist(&conf_dir(data), &s).expect("write");
        assert_eq!(p, data.join("agent/cni/net.d/10-k8slite.conflist"));
        assert!(ipam_dir(data).is_dir());
        let text = std::fs::read_to_string(&p).expect("read");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v, render(&s).expect("render"));
        let before = std::fs::metadata(&p)
            .expect("meta")
            .modified()
            .expect("mtime");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_conflist(&conf_dir(data), &s).expect("again");
        let after = std::fs::metadata(&p)
            .expect("meta")
            .modified()
            .expect("mtime");
        assert_eq!(before, after, "unchanged file not rewritten");
        let s2 = CniSettings::new(data, parse_pod_cidr("10.42.9.0/24").expect("cidr"));
        write_conflist(&conf_dir(data), &s2).expect("changed");
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.9.0/24"
        );
        let names: Vec<_> = std::fs::read_dir(conf_dir(data))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp files left: {names:?}");
    }
}
