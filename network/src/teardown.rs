//! Undoing what the pod network leaves on a host, for tests and uninstall: the bridge (the
//! bridge plugin never deletes it) and libcni's cached results for our network name under the
//! hard-coded `/var/lib/cni/results` (normally removed by CNI DEL; left behind when containerd
//! is killed). portmap's `CNI-HOSTPORT-*` chains are shared by every CNI user of the host and
//! are not touched here.

use std::path::Path;

use crate::host::HostOps;
use crate::{NetworkError, Result};

/// libcni's result cache directory (hard-coded in libcni).
pub const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";

/// Delete the bridge `name` with `ip link del` (`ip` searched in /usr/sbin, /sbin, /usr/bin,
/// /bin). A bridge that does not exist is fine. Run it in the node's network namespace.
pub fn delete_bridge(ops: &dyn HostOps, name: &str) -> Result<()> {
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(Path::new)
        .find(|p| ops.exists(p))
        .ok_or_else(|| {
            NetworkError::Prerequisite("ip (package iproute2) is not installed".into())
        })?;
    let out = ops.run(ip, &["link", "del", name]).map_err(|e| {
        NetworkError::Prerequisite(format!("running {} link del {name}: {e}", ip.display()))
    })?;
    if out.success
        || out.stderr.contains("Cannot find device")
        || out.stderr.contains("does not exist")
    {
        return Ok(());
    }
    Err(NetworkError::Command {
        what: format!("ip link del {name}"),
        stderr: out.stderr.trim().to_string(),
    })
}

/// Remove libcni's cached results for `network_name` (`<network>-<container>-<ifname>`) from
/// `results_dir` ([`CNI_RESULTS_DIR`]). Returns how many files were removed.
pub fn remove_cni_results(
    ops: &dyn HostOps,
    results_dir: &Path,
    network_name: &str,
) -> Result<usize> {
    let prefix = format!("{network_name}-");
    let names = ops
        .list_dir(results_dir)
        .map_err(|source| NetworkError::Io {
            what: "listing".into(),
            path: results_dir.to_path_buf(),
            source,
        })?;
    let mut n = 0;
    for name in names.iter().filter(|n| n.starts_with(&prefix)) {
        let path = results_dir.join(name);
        ops.remove_file(&path).map_err(|source| NetworkError::Io {
            what: "removing".into(),
            path: path.clone(),
            source,
        })?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Effect, RecordingHost};

    #[test]
    fn bridge_deletion_tolerates_absence() {
        let h = RecordingHost::new()
            .with_file("/usr/sbin/ip", "")
            .with_output("ip", false, "", "Cannot find device \"k8slite0\"");
        delete_bridge(&h, "k8slite0").expect("absent is fine");
        assert_eq!(
            h.effects(),
            [Effect::Run(
                "/usr/sbin/ip".into(),
                vec!["link".into(), "del".into(), "k8slite0".into()]
            )]
        );
        let h = RecordingHost::new().with_file("/sbin/ip", "").with_output(
            "ip",
            false,
            "",
            "RTNETLINK answers: Operation not permitted",
        );
        let err = delete_bridge(&h, "k8slite0")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("not permitted"), "{err}");
        assert!(
            delete_bridge(&RecordingHost::new(), "x").is_err(),
            "no ip binary"
        );
    }

    #[test]
    fn only_our_results_are_removed() {
        let dir = "/var/lib/cni/results";
        let h = RecordingHost::new()
            .with_file(&format!("{dir}/k8slite-abc-eth0"), "{}")
            .with_file(&format!("{dir}/k8slite-def-eth0"), "{}")
            .with_file(&format!("{dir}/k8slite2-xyz-eth0"), "{}")
            .with_file(&format!("{dir}/other-abc-eth0"), "{}");
        assert_eq!(
            remove_cni_results(&h, Path::new(dir), "k8slite").expect("rm"),
            2
        );
        assert!(h.file(&format!("{dir}/k8slite2-xyz-eth0")).is_some());
        assert!(h.file(&format!("{dir}/other-abc-eth0")).is_some());
        assert!(h.file(&format!("{dir}/k8slite-abc-eth0")).is_none());
    }
}
