//! File-system helpers: permission setting, fsGroup ownership, path validation, and a removal
//! that never follows symlinks nor crosses mount points.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::VolumeError;

/// `chmod path mode` (not subject to the umask, unlike creation modes).
pub(crate) fn chmod(path: &Path, mode: u32) -> Result<(), VolumeError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(VolumeError::io("chmod", path))
}

/// `mkdir -p path` then `chmod mode` on the last component.
pub(crate) fn mkdir_mode(path: &Path, mode: u32) -> Result<(), VolumeError> {
    fs::create_dir_all(path).map_err(VolumeError::io("create directory", path))?;
    chmod(path, mode)
}

/// The kubelet's `SetVolumeOwnership` for a volume tree: group `fs_group` on every file and
/// directory (symlinks skipped, never followed); files gain group read (and write unless
/// `read_only`), directories additionally group execute and setgid.
pub(crate) fn set_ownership(
    root: &Path,
    fs_group: u32,
    read_only: bool,
) -> Result<(), VolumeError> {
    let meta = fs::symlink_metadata(root).map_err(VolumeError::io("stat", root))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(root, None, Some(fs_group))
        .map_err(VolumeError::io("chown", root))?;
    let mut mask = if read_only { 0o440 } else { 0o660 };
    if meta.is_dir() {
        mask |= 0o2000 | 0o110;
    }
    let mode = meta.mode() & 0o7777;
    if mode | mask != mode {
        chmod(root, mode | mask)?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(root).map_err(VolumeError::io("read directory", root))? {
            let entry = entry.map_err(VolumeError::io("read directory", root))?;
            set_ownership(&entry.path(), fs_group, read_only)?;
        }
    }
    Ok(())
}

/// Check a relative file path inside a volume (item paths, subPaths): not empty, not absolute,
/// no `..` element, not starting with `..` (reserved for the atomic writer), sane lengths.
pub(crate) fn validate_relative(path: &str, allow_dotdot_prefix: bool) -> Result<(), VolumeError> {
    let bad = |reason| {
        Err(VolumeError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.len() > 4096 {
        return bad("must be less than or equal to 4096 characters");
    }
    if Path::new(path).is_absolute() {
        return bad("must be a relative path");
    }
    if !allow_dotdot_prefix && path.starts_with("..") {
        return bad("must not start with '..'");
    }
    for c in Path::new(path).components() {
        match c {
            Component::ParentDir => return bad("must not contain '..'"),
            Component::Normal(n) if n.len() > 255 => {
                return bad("each element must be at most 255 characters");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Remove `path` and everything below it without following symlinks (a symlink is removed, not
/// its target) and without descending into another file system (a mount point left below
/// `path` is an error: what is on it is not ours). A missing `path` is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), VolumeError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VolumeError::io("stat", path)(e)),
    };
    remove_below(path, &meta, meta.dev())
}

fn remove_below(path: &Path, meta: &fs::Metadata, dev: u64) -> Result<(), VolumeError> {
    if !meta.is_dir() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(VolumeError::io("remove", path)(e))
            }
            _ => Ok(()),
        };
    }
    if meta.dev() != dev {
        return Err(VolumeError::StillMounted(path.to_path_buf()));
    }
    for entry in fs::read_dir(path).map_err(VolumeError::io("read directory", path))? {
        let entry = entry.map_err(VolumeError::io("read directory", path))?;
        let child = entry.path();
        let child_meta = fs::symlink_metadata(&child).map_err(VolumeError::io("stat", &child))?;
        remove_below(&child, &child_meta, dev)?;
    }
    match fs::remove_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(VolumeError::io("remove directory", path)(e))
        }
        _ => Ok(()),
    }
}

/// `YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` in UTC, the shape of the kubelet's atomic-writer data dirs.
pub(crate) fn timestamp_name(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}_{m:02}_{day:02}_{:02}_{:02}_{:02}.{:09}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_look_like_the_kubelets() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(timestamp_name(t), "2023_11_14_22_13_20.000000005");
        assert_eq!(timestamp_name(UNIX_EPOCH), "1970_01_01_00_00_00.000000000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(timestamp_name(leap).starts_with("2000_02_29_"));
    }

    #[test]
    fn relative_paths_are_checked() {
        assert!(validate_relative("a/b", false).is_ok());
        assert!(validate_relative("..data", false).is_err());
        assert!(validate_relative("a/../b", false).is_err());
        assert!(validate_relative("/etc/passwd", false).is_err());
        assert!(validate_relative("", false).is_err());
        assert!(validate_relative("..x", true).is_ok());
    }

    #[test]
    fn remove_tree_does_not_follow_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("v");
        std::fs::create_dir_all(victim.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), victim.join("sub/link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("keep"), victim.join("f")).unwrap();
        remove_tree(&victim).unwrap();
        assert!(!victim.exists());
        assert_eq!(std::fs::read(outside.path().join("keep")).unwrap(), b"x");
        remove_tree(&victim).unwrap(); // missing is fine
    }
}
