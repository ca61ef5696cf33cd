//! Finding "our" containerd among the host's processes: a process whose executable is the
//! configured binary and whose command line has `--config <our config.toml>`.

use std::path::Path;

use super::ContainerdConfig;

/// Whether `/proc/<pid>` is a live (not zombie) containerd started with `cfg`'s config file.
pub(crate) fn is_ours(pid: u32, cfg: &ContainerdConfig) -> bool {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // The state follows the command name in parentheses, which may itself contain spaces.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, Some("Z" | "X")) {
        return false;
    }
    let Ok(exe) = std::fs::read_link(proc_dir.join("exe")) else {
        return false;
    };
    let want = std::fs::canonicalize(&cfg.containerd).unwrap_or_else(|_| cfg.containerd.clone());
    // An upgraded binary shows as "<path> (deleted)".
    let exe = exe.to_string_lossy();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
    if Path::new(exe) != want && Path::new(exe) != cfg.containerd {
        return false;
    }
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    has_config_arg(&cmdline, &cfg.config_path().to_string_lossy())
}

/// Whether a NUL-separated command line passes `--config <path>` (or `-c`, or `--config=`).
pub(crate) fn has_config_arg(cmdline: &[u8], path: &str) -> bool {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.iter().enumerate().any(|(i, a)| {
        ((a == "--config" || a == "-c") && args.get(i + 1).is_some_and(|n| n == path))
            || a.strip_prefix("--config=") == Some(path)
    })
}

/// The PID recorded in the pid file, if it is still our containerd.
pub(crate) fn from_pid_file(cfg: &ContainerdConfig) -> Option<u32> {
    let text = std::fs::read_to_string(cfg.pid_path()).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    is_ours(pid, cfg).then_some(pid)
}

/// Our containerd, from the pid file or else by scanning `/proc` (a crash between starting it
/// and writing the pid file must not lead to a second one, which would block on the DB lock).
pub(crate) fn find(cfg: &ContainerdConfig) -> Option<u32> {
    if let Some(pid) = from_pid_file(cfg) {
        return Some(pid);
    }
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| is_ours(*pid, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_argument_forms() {
        let p = "/run/k8slite/containerd/config.toml";
        assert!(has_config_arg(
            b"/usr/bin/containerd\0--config\0/run/k8slite/containerd/config.toml\0",
            p
        ));
        assert!(has_config_arg(
            b"containerd\0--config=/run/k8slite/containerd/config.toml\0",
            p
        ));
        assert!(has_config_arg(
            b"containerd\0-c\0/run/k8slite/containerd/config.toml\0",
            p
        ));
        assert!(!has_config_arg(
            b"containerd\0--config\0/etc/containerd/config.toml\0",
            p
        ));
        assert!(!has_config_arg(b"containerd\0", p));
    }

    #[test]
    fn this_test_process_is_not_a_containerd() {
        let cfg = ContainerdConfig::new(Path::new("/nonexistent"), Path::new("/nonexistent"));
        assert!(!is_ours(std::process::id(), &cfg));
        assert!(!is_ours(u32::MAX, &cfg));
        assert_eq!(from_pid_file(&cfg), None);
    }
}
