//! Host preparation for the pod network, before containerd starts:
//!
//! - **iptables on PATH.** The bridge (ipMasq) and portmap plugins exec `iptables` from the
//!   PATH they inherit from containerd. On hosts where the iptables package is unpacked but
//!   its alternatives were never configured (seen on these Debian 12 machines) there is no
//!   `iptables`, only `xtables-nft-multi`/`xtables-legacy-multi`: then a `bin/` directory of
//!   symlinks (`iptables`, `iptables-save`, `iptables-restore`, `ip6tables*`) to the multi
//!   binary is created under the run dir, and the caller must put [`HostPrep::path_dirs`] first
//!   on containerd's PATH. The nf_tables backend is preferred (Debian's default); legacy is
//!   used only when no nft binary exists. The legacy tables are never listed to decide: merely
//!   listing one registers it in the kernel.
//! - **Forwarding**: `net.ipv4.ip_forward=1` (and `net.ipv6.conf.all.forwarding=1` when the
//!   pod CIDR is IPv6) — set explicitly, not left to the first CNI ADD.
//! - **No ICMP redirects** (`net.ipv4.conf.{all,default,k8slite0}.send_redirects=0`): a pod
//!   told to reach a ClusterIP through the endpoint pod directly bypasses the DNAT.
//! - **br_netfilter**: `net.bridge.bridge-nf-call-iptables=1` so pod → service → pod on the same
//!   bridge is un-NATed; `modprobe br_netfilter` when the sysctl is missing. Failing that is a
//!   warning (pods still get IPs), reported in [`HostPrep::warnings`].
//!
//! Every effect goes through [`HostOps`]; [`RecordingHost`] records them for unit tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{NetworkError, Result};

/// Output of a command run through [`HostOps::run`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The host effects host preparation and teardown need.
pub trait HostOps: Send + Sync {
    /// Whether `path` exists (following symlinks).
    fn exists(&self, path: &Path) -> bool;
    /// The contents of `path`.
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// Write `contents` to `path` (sysctls under /proc/sys).
    fn write(&self, path: &Path, contents: &str) -> std::io::Result<()>;
    /// Create `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()>;
    /// Make `link` a symlink to `target`, replacing what is there.
    fn symlink(&self, target: &Path, link: &Path) -> std::io::Result<()>;
    /// Remove the file `path` (not an error when it is absent).
    fn remove_file(&self, path: &Path) -> std::io::Result<()>;
    /// Names of the entries of `dir` (empty when it does not exist).
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>>;
    /// Run `program` with `args`.
    fn run(&self, program: &Path, args: &[&str]) -> std::io::Result<CmdOutput>;
}

/// The real host.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealHost;

impl HostOps for RealHost {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, contents: &str) -> std::io::Result<()> {
        std::fs::write(path, contents)
    }

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn symlink(&self, target: &Path, link: &Path) -> std::io::Result<()> {
        match std::fs::symlink_metadata(link) {
            Ok(_) => std::fs::remove_file(link)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(target, link)
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        match std::fs::read_dir(dir) {
            Ok(rd) => Ok(rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn run(&self, program: &Path, args: &[&str]) -> std::io::Result<CmdOutput> {
        let out = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()?;
        Ok(CmdOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// One effect [`RecordingHost`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A file write.
    Write(PathBuf, String),
    /// A directory creation.
    Mkdir(PathBuf),
    /// A symlink `link -> target`.
    Symlink(PathBuf, PathBuf),
    /// A file removal.
    Remove(PathBuf),
    /// A command.
    Run(PathBuf, Vec<String>),
}

/// An in-memory host for unit tests: files (and symlinks, which count as existing), canned
/// command outputs, and the list of effects.
#[derive(Debug, Default)]
pub struct RecordingHost {
    files: Mutex<HashMap<PathBuf, String>>,
    outputs: Mutex<HashMap<String, CmdOutput>>,
    effects: Mutex<Vec<Effect>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RecordingHost {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a file.
    pub fn with_file(self, path: &str, contents: &str) -> Self {
        lock(&self.files).insert(path.into(), contents.into());
        self
    }

    /// What running `program` (its file name; any arguments) answers. Unknown programs fail
    /// with "not found".
    pub fn with_output(self, program: &str, success: bool, stdout: &str, stderr: &str) -> Self {
        lock(&self.outputs).insert(
            program.into(),
            CmdOutput {
                success,
                stdout: stdout.into(),
                stderr: stderr.into(),
            },
        );
        self
    }

    /// The effects so far.
    pub fn effects(&self) -> Vec<Effect> {
        lock(&self.effects).clone()
    }

    /// The current contents of `path`.
    pub fn file(&self, path: &str) -> Option<String> {
        lock(&self.files).get(Path::new(path)).cloned()
    }

    fn record(&self, e: Effect) {
        lock(&self.effects).push(e);
    }
}

impl HostOps for RecordingHost {
    fn exists(&self, path: &Path) -> bool {
        lock(&self.files).contains_key(path)
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        lock(&self.files)
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn write(&self, path: &Path, contents: &str) -> std::io::Result<()> {
        self.record(Effect::Write(path.into(), contents.into()));
        lock(&self.files).insert(path.into(), contents.into());
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.record(Effect::Mkdir(dir.into()));
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> std::io::Result<()> {
        self.record(Effect::Symlink(link.into(), target.into()));
        lock(&self.files).insert(link.into(), format!("-> {}", target.display()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.record(Effect::Remove(path.into()));
        lock(&self.files).remove(path);
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        Ok(lock(&self.files)
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn run(&self, program: &Path, args: &[&str]) -> std::io::Result<CmdOutput> {
        self.record(Effect::Run(
            program.into(),
            args.iter().map(|s| s.to_string()).collect(),
        ));
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        lock(&self.outputs)
            .get(&name)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

/// The iptables backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// nf_tables (`iptables-nft`).
    Nft,
    /// The legacy x_tables backend.
    Legacy,
}

/// What host preparation found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPrep {
    /// Directories to put first on containerd's PATH (empty when `iptables` is on PATH).
    pub path_dirs: Vec<PathBuf>,
    /// The `iptables` that CNI plugins will run.
    pub iptables: PathBuf,
    /// Its backend.
    pub backend: Backend,
    /// Problems that do not stop pods from getting IPs, already logged (e.g. br_netfilter
    /// could not be loaded).
    pub warnings: Vec<String>,
}

/// Settings of [`prepare`].
#[derive(Clone, Debug)]
pub struct PrepOptions {
    /// The agent's run dir (`/run/k8slite`; the symlink dir is `<run-dir>/bin`).
    pub run_dir: PathBuf,
    /// The PATH to search (`$PATH` of the agent; `/usr/sbin` and `/sbin` are searched too).
    pub path: String,
    /// Also enable IPv6 forwarding (IPv6 pod CIDR).
    pub ipv6: bool,
}

impl PrepOptions {
    /// Options for `run_dir` with this process's PATH, IPv4 only.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            path: std::env::var("PATH").unwrap_or_default(),
            ipv6: false,
        }
    }
}

const TOOLS: [&str; 6] = [
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

fn search_dirs(path: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
        .collect();
    for extra in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(extra.into());
        }
    }
    dirs
}

fn find(ops: &dyn HostOps, dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| ops.exists(p))
}

fn backend_of(version_output: &str) -> Backend {
    if version_output.contains("legacy") {
        Backend::Legacy
    } else {
        Backend::Nft
    }
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

/// Set sysctl `name` to `value` unless it already has it. `Ok(false)` when it does not exist.
fn ensure_sysctl(ops: &dyn HostOps, name: &str, value: &str) -> Result<bool> {
    let path = sysctl_path(name);
    let current = match ops.read(&path) {
        Ok(v) => v,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(NetworkError::Io {
                what: "reading".into(),
                path,
                source,
            });
        }
    };
    if current.trim() != value {
        ops.write(&path, value).map_err(|source| NetworkError::Io {
            what: format!("setting {name}={value} via"),
            path: path.clone(),
            source,
        })?;
        tracing::info!(
            sysctl = name,
            value,
            previous = current.trim(),
            "set sysctl"
        );
    }
    Ok(true)
}

/// The iptables part of [`prepare`] alone (no sysctls): the `iptables` CNI plugins will run,
/// its backend, and the directories to put first on their PATH (a symlink dir under
/// `<run-dir>/bin` when only the xtables multi binaries exist).
pub fn ensure_iptables(
    ops: &dyn HostOps,
    opts: &PrepOptions,
) -> Result<(PathBuf, Backend, Vec<PathBuf>)> {
    let dirs = search_dirs(&opts.path);
    let on_path = std::env::split_paths(&opts.path)
        .map(|d| d.join("iptables"))
        .find(|p| ops.exists(p));
    if let Some(ipt) = on_path {
        let backend = match ops.run(&ipt, &["--version"]) {
            Ok(out) if out.success => backend_of(&out.stdout),
            Ok(out) => {
                return Err(NetworkError::Prerequisite(format!(
                    "{} --version failed: {}",
                    ipt.display(),
                    out.stderr.trim()
                )));
            }
            Err(e) => {
                return Err(NetworkError::Prerequisite(format!(
                    "running {} --version: {e}",
                    ipt.display()
                )));
            }
        };
        return Ok((ipt, backend, Vec::new()));
    }
    let (multi, backend) = match (
        find(ops, &dirs, "xtables-nft-multi"),
        find(ops, &dirs, "xtables-legacy-multi"),
    ) {
        (Some(nft), _) => (nft, Backend::Nft),
        (None, Some(legacy)) => (legacy, Backend::Legacy),
        (None, None) => {
            // An iptables outside PATH (e.g. /usr/sbin while PATH lacks it) is still usable.
            if let Some(ipt) = find(ops, &dirs, "iptables") {
                let dir = ipt.parent().map(Path::to_path_buf).unwrap_or_default();
                let backend = ops
                    .run(&ipt, &["--version"])
                    .map(|o| backend_of(&o.stdout))
                    .unwrap_or(Backend::Nft);
                return Ok((ipt, backend, vec![dir]));
            }
            return Err(NetworkError::Prerequisite(
                "iptables: no `iptables` on PATH and neither xtables-nft-multi nor xtables-legacy-multi in /usr/sbin or /sbin; install the iptables package".into(),
            ));
        }
    };
    let bin = opts.run_dir.join("bin");
    ops.create_dir_all(&bin)
        .map_err(|source| NetworkError::Io {
            what: "creating".into(),
            path: bin.clone(),
            source,
        })?;
    for tool in TOOLS {
        let link = bin.join(tool);
        ops.symlink(&multi, &link)
            .map_err(|source| NetworkError::Io {
                what: format!("linking to {}", multi.display()),
                path: link.clone(),
                source,
            })?;
    }
    tracing::info!(
        multi = %multi.display(),
        dir = %bin.display(),
        "no iptables on PATH: created iptables symlinks; put this directory first on containerd's PATH"
    );
    Ok((bin.join("iptables"), backend, vec![bin]))
}

/// Prepare the host for the pod network (see the module documentation). Errors name the
/// missing prerequisite (iptables) or the sysctl that could not be set.
pub fn prepare(ops: &dyn HostOps, opts: &PrepOptions) -> Result<HostPrep> {
    let (iptables, backend, path_dirs) = ensure_iptables(ops, opts)?;
    let mut warnings = Vec::new();
    if !ensure_sysctl(ops, "net.ipv4.ip_forward", "1")? {
        return Err(NetworkError::Prerequisite(
            "sysctl net.ipv4.ip_forward is missing (/proc/sys not mounted?)".into(),
        ));
    }
    // No ICMP redirects from the node: a pod reaching a Service whose endpoint sits on the
    // same bridge would otherwise be told to send to that pod directly, and from then on its
    // packets for the ClusterIP bypass the node's DNAT and go unanswered. The sysctl is
    // "all OR device", so all, default (the bridge created later) and an existing bridge.
    for dev in ["all", "default", crate::cni::DEFAULT_BRIDGE] {
        ensure_sysctl(ops, &format!("net.ipv4.conf.{dev}.send_redirects"), "0")?;
    }
    if opts.ipv6 && !ensure_sysctl(ops, "net.ipv6.conf.all.forwarding", "1")? {
        warnings.push("sysctl net.ipv6.conf.all.forwarding is missing (IPv6 disabled?)".into());
    }
    let nf_call = "net.bridge.bridge-nf-call-iptables";
    if !ops.exists(&sysctl_path(nf_call)) {
        let loaded = match find(ops, &search_dirs(&opts.path), "modprobe") {
            Some(modprobe) => match ops.run(&modprobe, &["br_netfilter"]) {
                Ok(o) if o.success => Ok(()),
                Ok(o) => Err(format!("modprobe br_netfilter failed: {}", o.stderr.trim())),
                Err(e) => Err(format!("running modprobe br_netfilter: {e}")),
            },
            None => Err("modprobe is not installed (package kmod)".to_string()),
        };
        if let Err(why) = loaded {
            warnings.push(format!(
                "br_netfilter is not loaded and could not be loaded ({why}): pod-to-service traffic between pods on the same bridge will not be un-NATed; load it with `modprobe br_netfilter`"
            ));
        }
    }
    for name in [nf_call, "net.bridge.bridge-nf-call-ip6tables"] {
        match ensure_sysctl(ops, name, "1") {
            Ok(true) => {}
            Ok(false) if name == nf_call && warnings.is_empty() => warnings.push(format!(
                "sysctl {name} is missing although br_netfilter was loaded"
            )),
            Ok(false) => {}
            Err(e) => warnings.push(e.to_string()),
        }
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(HostPrep {
        path_dirs,
        iptables,
        backend,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysctls(h: RecordingHost) -> RecordingHost {
        h.with_file("/proc/sys/net/ipv4/ip_forward", "0\n")
            .with_file("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n")
            .with_file("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "0\n")
    }

    fn opts() -> PrepOptions {
        PrepOptions {
            run_dir: "/run/k8slite".into(),
            path: "/usr/local/bin:/usr/bin:/bin".into(),
            ipv6: false,
        }
    }

    #[test]
    fn iptables_on_path_is_used_as_is() {
        let h = sysctls(RecordingHost::new())
            .with_file("/usr/bin/iptables", "")
            .with_output("iptables", true, "iptables v1.8.9 (nf_tables)\n", "");
        let p = prepare(&h, &opts()).expect("prepare");
        assert!(p.path_dirs.is_empty());
        assert_eq!(p.iptables, Path::new("/usr/bin/iptables"));
        assert_eq!(p.backend, Backend::Nft);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(
            h.file("/proc/sys/net/ipv4/ip_forward").as_deref(),
            Some("1")
        );
        assert_eq!(
            h.file("/proc/sys/net/bridge/bridge-nf-call-ip6tables")
                .as_deref(),
            Some("1")
        );
        assert!(
            !h.effects().iter().any(
                |e| matches!(e, Effect::Write(p, _) if p.ends_with("bridge-nf-call-iptables"))
            ),
            "already 1: not written"
        );
        let legacy = sysctls(RecordingHost::new())
            .with_file("/usr/bin/iptables", "")
            .with_output("iptables", true, "iptables v1.8.9 (legacy)\n", "");
        assert_eq!(
            prepare(&legacy, &opts()).expect("legacy").backend,
            Backend::Legacy
        );
    }

    #[test]
    fn unconfigured_alternatives_get_a_symlink_dir() {
        let h = sysctls(RecordingHost::new())
            .with_file("/usr/sbin/xtables-nft-multi", "")
            .with_file("/usr/sbin/xtables-legacy-multi", "");
        let p = prepare(&h, &opts()).expect("prepare");
        assert_eq!(p.path_dirs, [PathBuf::from("/run/k8slite/bin")]);
        assert_eq!(p.backend, Backend::Nft);
        assert_eq!(p.iptables, Path::new("/run/k8slite/bin/iptables"));
        let links: Vec<(PathBuf, PathBuf)> = h
            .effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Symlink(l, t) => Some((l, t)),
                _ => None,
            })
            .collect();
        assert_eq!(links.len(), 6);
        for (l, t) in &links {
            assert!(l.starts_with("/run/k8slite/bin"), "{l:?}");
            assert_eq!(t, Path::new("/usr/sbin/xtables-nft-multi"));
        }
        // Legacy tables are never listed (that would register them).
        assert!(
            !h.effects()
                .iter()
                .any(|e| matches!(e, Effect::Run(p, _) if p.to_string_lossy().contains("legacy")))
        );
        let only_legacy = sysctls(RecordingHost::new()).with_file("/sbin/xtables-legacy-multi", "");
        assert_eq!(
            prepare(&only_legacy, &opts()).expect("legacy").backend,
            Backend::Legacy
        );
    }

    #[test]
    fn missing_iptables_names_the_prerequisite() {
        let h = sysctls(RecordingHost::new());
        let err = prepare(&h, &opts()).expect_err("no iptables").to_string();
        assert!(err.contains("iptables") && err.contains("install"), "{err}");
    }

    #[test]
    fn br_netfilter_is_loaded_or_reported() {
        let base = || {
            RecordingHost::new()
                .with_file("/proc/sys/net/ipv4/ip_forward", "1\n")
                .with_file("/usr/bin/iptables", "")
                .with_output("iptables", true, "iptables v1.8.9 (nf_tables)", "")
        };
        // No modprobe at all: a clear warning, not a failure.
        let p = prepare(&base(), &opts()).expect("prepare");
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains("modprobe is not installed"),
            "{:?}",
            p.warnings
        );
        // modprobe present but failing.
        let h = base().with_file("/sbin/modprobe", "").with_output(
            "modprobe",
            false,
            "",
            "FATAL: Module br_netfilter not found",
        );
        let p = prepare(&h, &opts()).expect("prepare");
        assert!(
            p.warnings[0].contains("Module br_netfilter not found"),
            "{:?}",
            p.warnings
        );
        assert!(h.effects().contains(&Effect::Run(
            "/sbin/modprobe".into(),
            vec!["br_netfilter".into()]
        )));
        // No ip_forward sysctl: an error.
        let h = RecordingHost::new()
            .with_file("/usr/bin/iptables", "")
            .with_output("iptables", true, "iptables v1.8.9 (nf_tables)", "");
        let err = prepare(&h, &opts()).expect_err("no sysctl").to_string();
        assert!(err.contains("ip_forward"), "{err}");
    }
}
