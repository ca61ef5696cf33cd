//! The supervised containerd's paths and its generated `config.toml` (version 2).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::PAUSE_IMAGE;

/// Bit of `CAP_SYS_RESOURCE` in the capability masks of `/proc/<pid>/status`.
const CAP_SYS_RESOURCE: u32 = 24;

/// Where and how the supervised containerd runs. [`ContainerdConfig::new`] gives k8slite's layout;
/// every field can be changed before [`super::Supervisor::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// The containerd binary (`/usr/bin/containerd`).
    pub containerd: PathBuf,
    /// containerd's `root`: metadata, content, snapshots (`<data-dir>/agent/containerd`).
    pub root: PathBuf,
    /// Directory of everything volatile (`<run-dir>/containerd`): the sockets, containerd's
    /// `state`, runc's state, the generated config, the log and the pid file.
    pub run_dir: PathBuf,
    /// CNI plugin binaries (`/usr/lib/cni`, Debian's location).
    pub cni_bin_dir: PathBuf,
    /// CNI network configs (`<data-dir>/agent/cni/net.d`); containerd loads the first one.
    pub cni_conf_dir: PathBuf,
    /// The sandbox (pause) image; imported locally, never pulled ([`PAUSE_IMAGE`]).
    pub sandbox_image: String,
    /// Directories put in front of containerd's `PATH`; CNI plugins inherit it (e.g. a
    /// directory with `iptables` links where the host has no `iptables` command).
    pub extra_path: Vec<PathBuf>,
    /// runc binary; `None` lets containerd find `runc` on its `PATH`.
    pub runc: Option<PathBuf>,
    /// `restrict_oom_score_adj`; `None` decides from the host: restrict unless this process
    /// holds `CAP_SYS_RESOURCE` (without it runc cannot lower a container's OOM score).
    pub restrict_oom_score_adj: Option<bool>,
    /// containerd's log level (`info`).
    pub log_level: String,
}

impl ContainerdConfig {
    /// k8slite's layout below the agent's data dir (`/var/lib/k8slite`) and run dir
    /// (`/run/k8slite`): root `<data>/agent/containerd`, CNI configs `<data>/agent/cni/net.d`,
    /// socket `<run>/containerd/containerd.sock`.
    pub fn new(data_dir: &Path, run_dir: &Path) -> Self {
        let agent = data_dir.join("agent");
        Self {
            containerd: PathBuf::from("/usr/bin/containerd"),
            root: agent.join("containerd"),
            run_dir: run_dir.join("containerd"),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            cni_conf_dir: agent.join("cni").join("net.d"),
            sandbox_image: PAUSE_IMAGE.to_string(),
            extra_path: Vec::new(),
            runc: None,
            restrict_oom_score_adj: None,
            log_level: "info".to_string(),
        }
    }

    /// The CRI/containerd gRPC socket (`<run_dir>/containerd.sock`).
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("containerd.sock")
    }

    /// The generated config (`<run_dir>/config.toml`).
    pub fn config_path(&self) -> PathBuf {
        self.run_dir.join("config.toml")
    }

    /// containerd's stdout/stderr (`<run_dir>/containerd.log`).
    pub fn log_path(&self) -> PathBuf {
        self.run_dir.join("containerd.log")
    }

    /// PID of the running containerd (`<run_dir>/containerd.pid`).
    pub fn pid_path(&self) -> PathBuf {
        self.run_dir.join("containerd.pid")
    }

    /// containerd's `state` (task bundles, CRI netns pins): `<run_dir>/state`.
    pub fn state_dir(&self) -> PathBuf {
        self.run_dir.join("state")
    }

    /// runc's state (`<run_dir>/runc`; runc's default would be `/run/containerd/runc`).
    pub fn runc_root(&self) -> PathBuf {
        self.run_dir.join("runc")
    }

    /// The `opt` plugin's directory (`<root>/opt`; its default is `/opt/containerd`).
    pub fn opt_dir(&self) -> PathBuf {
        self.root.join("opt")
    }

    /// `restrict_oom_score_adj` as configured, or as detected from this process' capabilities.
    pub fn restrict_oom(&self) -> bool {
        self.restrict_oom_score_adj.unwrap_or_else(|| {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            !has_sys_resource(&status)
        })
    }

    /// The `PATH` containerd runs with: [`ContainerdConfig::extra_path`], then ours.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut parts: Vec<PathBuf> = self.extra_path.clone();
        let inherited = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        parts.extend(std::env::split_paths(&inherited));
        std::env::join_paths(parts).unwrap_or(inherited)
    }

    /// The config file's text.
    pub fn render(&self) -> String {
        render(self, self.restrict_oom())
    }
}

/// Whether a `/proc/<pid>/status` text shows `CAP_SYS_RESOURCE` both effective and in the
/// bounding set.
pub(crate) fn has_sys_resource(status: &str) -> bool {
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let bit = 1u64 << CAP_SYS_RESOURCE;
    mask("CapEff:") & bit != 0 && mask("CapBnd:") & bit != 0
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn p(path: &Path) -> String {
    toml_str(&path.to_string_lossy())
}

pub(crate) fn render(c: &ContainerdConfig, restrict_oom: bool) -> String {
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Generated by k8slite at every agent start; edits are overwritten.\nversion = 2"
    );
    let _ = writeln!(s, "root = {}", p(&c.root));
    let _ = writeln!(s, "state = {}", p(&c.state_dir()));
    // Negative scores need CAP_SYS_RESOURCE; containerd's own stays at the default.
    let _ = writeln!(s, "oom_score = 0");
    s.push_str(
        "disabled_plugins = [\n  \"io.containerd.snapshotter.v1.aufs\",\n  \
         \"io.containerd.snapshotter.v1.btrfs\",\n  \"io.containerd.snapshotter.v1.zfs\",\n  \
         \"io.containerd.snapshotter.v1.devmapper\",\n]\n\n",
    );
    let sock = c.socket();
    let _ = writeln!(s, "[grpc]\n  address = {}", p(&sock));
    let _ = writeln!(
        s,
        "[ttrpc]\n  address = {}",
        toml_str(&format!("{}.ttrpc", sock.to_string_lossy()))
    );
    let _ = writeln!(s, "[debug]\n  level = {}\n", toml_str(&c.log_level));
    let _ = writeln!(
        s,
        "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n",
        p(&c.opt_dir())
    );
    let _ = writeln!(s, "[{cri}]");
    let _ = writeln!(s, "  sandbox_image = {}", toml_str(&c.sandbox_image));
    // Pod netns pins under <state> instead of /var/run/netns.
    let _ = writeln!(s, "  netns_mounts_under_state_dir = true");
    let _ = writeln!(s, "  restrict_oom_score_adj = {restrict_oom}");
    // Exec/Attach/PortForward URLs: http://127.0.0.1:<random>/… in this node's netns.
    let _ = writeln!(s, "  stream_server_address = \"127.0.0.1\"");
    let _ = writeln!(s, "  stream_server_port = \"0\"");
    let _ = writeln!(s, "  enable_unprivileged_ports = true");
    let _ = writeln!(s, "  enable_unprivileged_icmp = true");
    let _ = writeln!(s, "  max_container_log_line_size = 16384\n");
    let _ = writeln!(s, "  [{cri}.cni]");
    let _ = writeln!(s, "    bin_dir = {}", p(&c.cni_bin_dir));
    let _ = writeln!(s, "    conf_dir = {}", p(&c.cni_conf_dir));
    let _ = writeln!(s, "    max_conf_num = 1\n");
    let _ = writeln!(s, "  [{cri}.containerd]");
    let _ = writeln!(s, "    snapshotter = \"overlayfs\"");
    let _ = writeln!(s, "    default_runtime_name = \"runc\"");
    let _ = writeln!(s, "    [{cri}.containerd.runtimes.runc]");
    let _ = writeln!(s, "      runtime_type = \"io.containerd.runc.v2\"");
    let _ = writeln!(s, "      [{cri}.containerd.runtimes.runc.options]");
    if let Some(runc) = &c.runc {
        let _ = writeln!(s, "        BinaryName = {}", p(runc));
    }
    let _ = writeln!(s, "        Root = {}", p(&c.runc_root()));
    // cgroupfs driver: pod cgroup parents are paths like /k8slite-<node>/pod<uid>.
    let _ = writeln!(s, "        SystemdCgroup = false");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_data_and_run_dirs() {
        let c = ContainerdConfig::new(Path::new("/var/lib/k8slite"), Path::new("/run/k8slite"));
        assert_eq!(c.root, Path::new("/var/lib/k8slite/agent/containerd"));
        assert_eq!(
            c.cni_conf_dir,
            Path::new("/var/lib/k8slite/agent/cni/net.d")
        );
        assert_eq!(
            c.socket(),
            Path::new("/run/k8slite/containerd/containerd.sock")
        );
        assert_eq!(c.state_dir(), Path::new("/run/k8slite/containerd/state"));
        assert_eq!(c.runc_root(), Path::new("/run/k8slite/containerd/runc"));
        assert_eq!(
            c.config_path(),
            Path::new("/run/k8slite/containerd/config.toml")
        );
        assert_eq!(c.sandbox_image, PAUSE_IMAGE);
    }

    #[test]
    fn rendered_config_has_every_setting() {
        let mut c = ContainerdConfig::new(Path::new("/d"), Path::new("/r"));
        c.runc = Some(PathBuf::from("/usr/sbin/runc"));
        let text = render(&c, true);
        for want in [
            "version = 2\n",
            "root = \"/d/agent/containerd\"\n",
            "state = \"/r/containerd/state\"\n",
            "oom_score = 0\n",
            "\"io.containerd.snapshotter.v1.aufs\"",
            "\"io.containerd.snapshotter.v1.btrfs\"",
            "\"io.containerd.snapshotter.v1.zfs\"",
            "\"io.containerd.snapshotter.v1.devmapper\"",
            "[grpc]\n  address = \"/r/containerd/containerd.sock\"\n",
            "[ttrpc]\n  address = \"/r/containerd/containerd.sock.ttrpc\"\n",
            "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"/d/agent/containerd/opt\"\n",
            "  sandbox_image = \"k8slite.local/pause:",
            "  netns_mounts_under_state_dir = true\n",
            "  restrict_oom_score_adj = true\n",
            "  stream_server_address = \"127.0.0.1\"\n",
            "  stream_server_port = \"0\"\n",
            "[plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = \"/usr/lib/cni\"\n    conf_dir = \"/d/agent/cni/net.d\"\n    max_conf_num = 1\n",
            "runtime_type = \"io.containerd.runc.v2\"",
            "        BinaryName = \"/usr/sbin/runc\"\n",
            "        Root = \"/r/containerd/runc\"\n",
            "        SystemdCgroup = false\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(render(&c, false).contains("restrict_oom_score_adj = false\n"));
        c.runc = None;
        assert!(!render(&c, false).contains("BinaryName"));
    }

    #[test]
    fn oom_restriction_follows_cap_sys_resource() {
        // This VM: everything but CAP_SYS_RESOURCE (bit 24).
        let without = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\n\
                       CapEff:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\n";
        assert!(!has_sys_resource(without));
        let with = "CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";
        assert!(has_sys_resource(with));
        let not_effective = "CapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n";
        assert!(!has_sys_resource(not_effective));
        let mut c = ContainerdConfig::new(Path::new("/d"), Path::new("/r"));
        c.restrict_oom_score_adj = Some(false);
        assert!(!c.restrict_oom());
        c.restrict_oom_score_adj = Some(true);
        assert!(c.render().contains("restrict_oom_score_adj = true"));
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_str("x\ny"), "\"x\\ny\"");
    }

    #[test]
    fn path_env_puts_extra_dirs_first() {
        let mut c = ContainerdConfig::new(Path::new("/d"), Path::new("/r"));
        c.extra_path = vec![PathBuf::from("/d/bin")];
        let path = c.path_env();
        let first = std::env::split_paths(&path).next();
        assert_eq!(first, Some(PathBuf::from("/d/bin")));
    }
}
