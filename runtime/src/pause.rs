//! k8slite's own pause program (`runtime/pause/pause.c`), compiled statically for the target
//! by the build script and carried inside the binary. The image importer wraps it into the
//! sandbox image [`PAUSE_IMAGE`].

/// The sandbox ("pause") image every pod's sandbox runs: built locally from
/// [`pause_binary`], never pulled. The registry part has a dot so runtimes keep the name as is.
pub const PAUSE_IMAGE: &str = concat!("k8slite.local/pause:", env!("CARGO_PKG_VERSION"));

static PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The static pause executable for this build's target: holds the pod's namespaces, reaps
/// re-parented children, exits 0 on SIGINT/SIGTERM.
pub fn pause_binary() -> &'static [u8] {
    PAUSE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_is_a_static_executable() {
        let bin = pause_binary();
        assert!(bin.len() > 1024);
        assert_eq!(&bin[..4], b"\x7fELF");
        assert!(PAUSE_IMAGE.starts_with("k8slite.local/pause:"));
    }

    #[test]
    fn pause_prints_its_name_and_exits_zero_on_sigterm() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pause");
        std::fs::write(&path, pause_binary()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let out = std::process::Command::new(&path)
            .arg("-v")
            .output()
            .expect("run -v");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "k8slite-pause\n");
        let mut child = std::process::Command::new(&path).spawn().expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0));
    }
}
