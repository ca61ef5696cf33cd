//! The mount seam: tmpfs for memory-backed volumes, unmount at teardown, and the list of mount
//! points below a directory. [`HostMounter`] does it for real (root); [`FakeMounter`] records.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Mount operations the volume manager needs.
pub trait Mounter: Send + Sync {
    /// Mount a fresh tmpfs on `target` (an existing directory), `size=<bytes>` when given.
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> io::Result<()>;
    /// Unmount `target` (lazily if it is busy).
    fn unmount(&self, target: &Path) -> io::Result<()>;
    /// The mount points at or below `dir` (absolute paths as the kernel shows them).
    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Make `dir` a shared mount (bind-mounting it on itself first when it is no mount point),
    /// as the kubelet does with its root directory so that `HostToContainer` and
    /// `Bidirectional` propagation work on hosts whose `/` is private.
    fn make_rshared(&self, dir: &Path) -> io::Result<()>;

    /// Whether `path` is a mount point.
    fn is_mount_point(&self, path: &Path) -> io::Result<bool> {
        Ok(self.mounts_under(path)?.iter().any(|m| m == path))
    }
}

/// The host's mounts, through `mount(2)`/`umount2(2)` and `/proc/self/mountinfo`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostMounter;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Mounter for HostMounter {
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> io::Result<()> {
        use nix::mount::{MsFlags, mount};
        let data = size_bytes.map(|s| format!("size={s}"));
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            data.as_deref(),
        )
        .map_err(errno)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        use nix::mount::{MntFlags, umount2};
        match umount2(target, MntFlags::empty()) {
            Err(nix::Error::EBUSY) => umount2(target, MntFlags::MNT_DETACH).map_err(errno),
            other => other.map_err(errno),
        }
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(mount_points_under(&info, dir))
    }

    fn make_rshared(&self, dir: &Path) -> io::Result<()> {
        use nix::mount::{MsFlags, mount};
        if !self.is_mount_point(dir)? {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(errno)?;
        }
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(errno)
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of a `/proc/self/mountinfo` text at or below `dir`, each once, in order.
pub fn mount_points_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some(field) = line.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(unescape(field));
        if point.starts_with(dir) && seen.insert(point.clone()) {
            out.push(point);
        }
    }
    out
}

/// One recorded call of a [`FakeMounter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    /// `mount_tmpfs(target, size)`.
    Tmpfs(PathBuf, Option<u64>),
    /// `unmount(target)`.
    Unmount(PathBuf),
    /// `make_rshared(dir)`.
    MakeRshared(PathBuf),
}

/// A mounter that only records: mount points are remembered, nothing is mounted.
#[derive(Debug, Default)]
pub struct FakeMounter {
    calls: Mutex<Vec<MountCall>>,
    mounted: Mutex<BTreeSet<PathBuf>>,
}

impl FakeMounter {
    /// A fake with no mounts.
    pub fn new() -> Self {
        Self::default()
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<MountCall> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The paths currently "mounted".
    pub fn mounted(&self) -> Vec<PathBuf> {
        let m = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().cloned().collect()
    }

    fn record(&self, call: MountCall) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
}

impl Mounter for FakeMounter {
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> io::Result<()> {
        if !target.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        self.record(MountCall::Tmpfs(target.to_path_buf(), size_bytes));
        self.mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target.to_path_buf());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        self.record(MountCall::Unmount(target.to_path_buf()));
        let removed = self
            .mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(target);
        if removed {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(22)) // EINVAL: not a mount point
        }
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let m = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
        Ok(m.iter().filter(|p| p.starts_with(dir)).cloned().collect())
    }

    fn make_rshared(&self, dir: &Path) -> io::Result<()> {
        self.record(MountCall::MakeRshared(dir.to_path_buf()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing_unescapes_and_filters() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /var/lib/k8slite/agent/pods/u1/volumes/kubernetes.io~empty-dir/a\\040b rw - tmpfs tmpfs rw
91 22 0:51 / /var/lib/k8slite/agent/pods/u2/x rw - tmpfs tmpfs rw
92 22 0:51 / /var/lib/k8slite/agent/pods/u10/x rw - tmpfs tmpfs rw
";
        let got = mount_points_under(info, Path::new("/var/lib/k8slite/agent/pods/u1"));
        assert_eq!(
            got,
            vec![PathBuf::from(
                "/var/lib/k8slite/agent/pods/u1/volumes/kubernetes.io~empty-dir/a b"
            )]
        );
    }
}
