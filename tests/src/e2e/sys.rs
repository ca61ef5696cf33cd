//! Small OS helpers for the e2e harness: running commands, signalling processes by PID,
//! reading mountinfo and the cgroup hierarchies. Everything goes through the ordinary tools
//! (`kill`, `umount`, `ip`, `nsenter`) so the harness needs no unsafe code and no extra crates.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Run `prog args…`, capture its output; error (with stderr) when it fails.
pub fn run(prog: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// [`run`], ignoring failure (for cleanup steps that may find nothing to do).
pub fn run_quiet(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // state is the field after the parenthesised command name
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// Send `sig` (`TERM`, `KILL`, …) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    run_quiet("kill", &[&format!("-{sig}"), &pid.to_string()]);
}

/// SIGTERM `pid`, wait up to `grace`, then SIGKILL and wait up to 5 s more. Returns whether it
/// is gone. Only for processes the harness started (or found by their own paths).
pub fn stop_pid(pid: u32, grace: Duration) -> bool {
    if !alive(pid) {
        return true;
    }
    signal(pid, "TERM");
    if wait_gone(pid, grace) {
        return true;
    }
    signal(pid, "KILL");
    wait_gone(pid, Duration::from_secs(5))
}

/// Poll until `pid` is gone.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Command line of `pid` split at NULs (empty when the process is gone).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// All PIDs in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Processes whose command line mentions `needle` (e.g. a run's base directory): what cleanup
/// must have stopped.
pub fn pids_mentioning(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter_map(|p| {
            let c = cmdline(p).join(" ");
            c.contains(needle).then_some((p, c))
        })
        .collect()
}

/// Mount points (unescaped) from /proc/self/mountinfo.
pub fn mount_points() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo (octal)
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len() + 1
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    v.dedup();
    v
}

/// Unmount everything at or below `dir`, deepest first; lazily when a plain unmount fails.
/// Returns the mounts still present afterwards.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    for _ in 0..5 {
        let ms = mounts_under(dir);
        if ms.is_empty() {
            return ms;
        }
        for m in ms {
            let p = m.to_string_lossy().into_owned();
            if !run_quiet("umount", &[&p]) {
                run_quiet("umount", &["-l", &p]);
            }
        }
    }
    mounts_under(dir)
}

/// Mount points of every cgroup hierarchy (v1 controllers and the unified v2 tree).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mp = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| PathBuf::from(unescape_mountinfo(mp)))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Directories of cgroup `/name` (e.g. `k8slite-<node>`) in every hierarchy where it exists.
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    cgroup_mounts()
        .into_iter()
        .map(|m| m.join(name.trim_start_matches('/')))
        .filter(|d| d.is_dir())
        .collect()
}

/// Every directory below and including `root`, deepest first.
fn dirs_deepest_first(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// PIDs in cgroup `/name` or below, in any hierarchy.
pub fn cgroup_pids(name: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for root in cgroup_dirs(name) {
        for d in dirs_deepest_first(&root) {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILL every process in cgroup `/name` (containers, pause, leftovers), then remove the
/// cgroup directories deepest first in every hierarchy. Returns the directories left.
pub fn remove_cgroup_tree(name: &str) -> Vec<PathBuf> {
    for _ in 0..50 {
        let pids = cgroup_pids(name);
        if pids.is_empty() {
            break;
        }
        for p in &pids {
            signal(*p, "KILL");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        let roots = cgroup_dirs(name);
        if roots.is_empty() {
            return roots;
        }
        for root in roots {
            for d in dirs_deepest_first(&root) {
                let _ = std::fs::remove_dir(&d);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cgroup_dirs(name)
}

/// Run `args` inside network namespace `netns` (a path like `/run/netns/x`) with nsenter (the
/// root mount namespace stays: cgroups, overlay and nsfs mounts remain visible to the host,
/// unlike `ip netns exec`, which remounts /sys).
pub fn nsenter_cmd(netns: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns.display())).arg("--");
    c.args(args);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
