//! The kubelet's atomic-writer scheme for configMap, secret, downwardAPI and projected volumes.
//!
//! ```text
//! <volume>/..2024_05_01_10_00_00.123456789/   the current data (files and subdirectories)
//! <volume>/..data -> ..2024_05_01_10_00_00.123456789
//! <volume>/key    -> ..data/key               one symlink per top-level entry
//! ```
//!
//! An update writes a new timestamped directory, points `..data_tmp` at it and renames that over
//! `..data` (an atomic swap), adds or removes the user-visible symlinks, and only then removes
//! the old directory: a reader sees the old or the new set, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::SystemTime;

use crate::VolumeError;
use crate::fsutil::{
    chmod, mkdir_mode, remove_tree, set_ownership, timestamp_name, validate_relative,
};

/// The symlink naming the current data directory.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileProjection {
    /// The content.
    pub data: Vec<u8>,
    /// The permission bits (`0o644`).
    pub mode: u32,
}

/// The files of an atomic-writer volume: relative path → content and mode.
pub type Payload = BTreeMap<String, FileProjection>;

/// The first path element of a payload path.
fn top(path: &str) -> &str {
    path.split('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// The payload currently in `dir/..data`, or `None` without one.
fn current(dir: &Path) -> Result<Option<(String, Payload)>, VolumeError> {
    let link = dir.join(DATA_DIR);
    let target = match fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(VolumeError::io("read link", &link)(e)),
    };
    let name = target.to_string_lossy().into_owned();
    if !name.starts_with("..") || name.contains('/') {
        return Ok(None);
    }
    let mut payload = Payload::new();
    read_tree(&dir.join(&name), "", &mut payload)?;
    Ok(Some((name, payload)))
}

fn read_tree(dir: &Path, prefix: &str, out: &mut Payload) -> Result<(), VolumeError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VolumeError::io("read directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(VolumeError::io("read directory", dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(VolumeError::io("stat", &path))?;
        let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if meta.is_dir() {
            read_tree(&path, &format!("{rel}/"), out)?;
        } else if meta.is_file() {
            let data = fs::read(&path).map_err(VolumeError::io("read", &path))?;
            let mode = meta.permissions().mode() & 0o7777;
            out.insert(rel, FileProjection { data, mode });
        }
    }
    Ok(())
}

/// Whether every top-level entry of `payload` is visible in `dir` as a symlink.
fn visible(dir: &Path, payload: &Payload) -> bool {
    payload.keys().map(|p| top(p)).all(|t| {
        fs::symlink_metadata(dir.join(t))
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    })
}

/// Write `payload` into the volume directory `dir` (which must exist) with the atomic swap,
/// applying `fs_group` ownership (group read) to the new data. Returns whether anything changed
/// (`false`: the same content was already there and visible).
pub fn write(
    dir: &Path,
    payload: &Payload,
    fs_group: Option<u32>,
    now: SystemTime,
) -> Result<bool, VolumeError> {
    for path in payload.keys() {
        validate_relative(path, false)?;
    }
    // With an fsGroup, ownership adds group read to every file: compare what will be on disk.
    let effective: Payload = payload
        .iter()
        .map(|(p, f)| {
            let mode = if fs_group.is_some() {
                f.mode | 0o440
            } else {
                f.mode
            };
            (
                p.clone(),
                FileProjection {
                    data: f.data.clone(),
                    mode,
                },
            )
        })
        .collect();
    let old = current(dir)?;
    if let Some((_, old_payload)) = &old
        && *old_payload == effective
        && visible(dir, payload)
    {
        return Ok(false);
    }

    // 1. the new timestamped data directory
    let mut name = format!("..{}", timestamp_name(now));
    let mut n = 0;
    while fs::symlink_metadata(dir.join(&name)).is_ok() {
        n += 1;
        name = format!("..{}{n}", timestamp_name(now));
    }
    let data_dir = dir.join(&name);
    mkdir_mode(&data_dir, 0o755)?;
    for (path, file) in &effective {
        let target = data_dir.join(path);
        if let Some(parent) = target.parent()
            && parent != data_dir
        {
            fs::create_dir_all(parent).map_err(VolumeError::io("create directory", parent))?;
        }
        fs::write(&target, &file.data).map_err(VolumeError::io("write", &target))?;
        chmod(&target, file.mode)?;
    }
    if let Some(gid) = fs_group {
        set_ownership(&data_dir, gid, true)?;
    }

    // 2. swap ..data atomically
    let tmp = dir.join(DATA_DIR_TMP);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(VolumeError::io("remove", &tmp)(e));
        }
        _ => {}
    }
    symlink(&name, &tmp).map_err(VolumeError::io("symlink", &tmp))?;
    let link = dir.join(DATA_DIR);
    fs::rename(&tmp, &link).map_err(VolumeError::io("rename", &link))?;

    // 3. user-visible symlinks: add the new ones, drop those no longer in the payload
    let wanted: BTreeSet<&str> = payload.keys().map(|p| top(p)).collect();
    for t in &wanted {
        let visible = dir.join(t);
        if fs::symlink_metadata(&visible).is_err() {
            symlink(Path::new(DATA_DIR).join(t), &visible)
                .map_err(VolumeError::io("symlink", &visible))?;
        }
    }
    for entry in fs::read_dir(dir).map_err(VolumeError::io("read directory", dir))? {
        let entry = entry.map_err(VolumeError::io("read directory", dir))?;
        let fname = entry.file_name().to_string_lossy().into_owned();
        if fname.starts_with("..") || wanted.contains(fname.as_str()) {
            continue;
        }
        let path = entry.path();
        let is_link = fs::symlink_metadata(&path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link {
            fs::remove_file(&path).map_err(VolumeError::io("remove", &path))?;
        }
    }

    // 4. the old data directory (and any left by an interrupted update) goes last
    drop(old);
    for entry in fs::read_dir(dir).map_err(VolumeError::io("read directory", dir))? {
        let entry = entry.map_err(VolumeError::io("read directory", dir))?;
        let fname = entry.file_name().to_string_lossy().into_owned();
        if fname.starts_with("..") && fname != name && fname != DATA_DIR {
            remove_tree(&entry.path())?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, UNIX_EPOCH};

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn first_write_builds_the_layout() {
        let d = tempfile::tempdir().unwrap();
        let p = Payload::from([
            ("a".to_string(), file("1", 0o644)),
            ("sub/b".to_string(), file("2", 0o400)),
        ]);
        assert!(write(d.path(), &p, None, t(0)).unwrap());
        let data = fs::read_link(d.path().join("..data")).unwrap();
        assert_eq!(data.to_str().unwrap(), "..2023_11_14_22_13_20.000000000");
        assert_eq!(
            fs::read_link(d.path().join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(
            fs::read_link(d.path().join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(d.path().join("sub/b")).unwrap(), "2");
        let m = fs::metadata(d.path().join("sub/b")).unwrap().mode() & 0o777;
        assert_eq!(m, 0o400);
        // same payload again: nothing happens
        assert!(!write(d.path(), &p, None, t(5)).unwrap());
        assert_eq!(fs::read_link(d.path().join("..data")).unwrap(), data);
    }

    #[test]
    fn update_swaps_and_removes_old_entries() {
        let d = tempfile::tempdir().unwrap();
        let p1 = Payload::from([
            ("a".to_string(), file("1", 0o644)),
            ("gone".to_string(), file("x", 0o644)),
        ]);
        write(d.path(), &p1, None, t(0)).unwrap();
        let old = fs::read_link(d.path().join("..data")).unwrap();
        // a reader holding the old file keeps reading the old content across the swap
        let mut held = fs::File::open(d.path().join("a")).unwrap();
        let p2 = Payload::from([
            ("a".to_string(), file("2", 0o644)),
            ("new".to_string(), file("n", 0o600)),
        ]);
        assert!(write(d.path(), &p2, None, t(1)).unwrap());
        let new = fs::read_link(d.path().join("..data")).unwrap();
        assert_ne!(old, new);
        assert!(
            !d.path().join(&old).exists(),
            "old data dir removed after the swap"
        );
        assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "2");
        assert_eq!(fs::read_to_string(d.path().join("new")).unwrap(), "n");
        assert!(fs::symlink_metadata(d.path().join("gone")).is_err());
        let mut s = String::new();
        std::io::Read::read_to_string(&mut held, &mut s).unwrap();
        assert_eq!(s, "1");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("..2"))
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn old_files_stay_until_the_symlink_flips() {
        // Simulate a crash between writing the new dir and the swap: the old data is intact.
        let d = tempfile::tempdir().unwrap();
        let p1 = Payload::from([("a".to_string(), file("1", 0o644))]);
        write(d.path(), &p1, None, t(0)).unwrap();
        // a half-done update left behind: a new data dir and a dangling ..data_tmp
        fs::create_dir(d.path().join("..2030_01_01_00_00_00.000000000")).unwrap();
        symlink(
            "..2030_01_01_00_00_00.000000000",
            d.path().join("..data_tmp"),
        )
        .unwrap();
        assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "1");
        // the next write recovers
        let p2 = Payload::from([("a".to_string(), file("2", 0o644))]);
        assert!(write(d.path(), &p2, None, t(1)).unwrap());
        assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "2");
        assert!(fs::symlink_metadata(d.path().join("..data_tmp")).is_err());
        assert!(!d.path().join("..2030_01_01_00_00_00.000000000").exists());
    }

    #[test]
    fn mode_change_alone_is_an_update() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            &Payload::from([("a".into(), file("1", 0o644))]),
            None,
            t(0),
        )
        .unwrap();
        assert!(
            write(
                d.path(),
                &Payload::from([("a".into(), file("1", 0o600))]),
                None,
                t(1)
            )
            .unwrap()
        );
        let m = fs::metadata(d.path().join("a")).unwrap().mode() & 0o777;
        assert_eq!(m, 0o600);
    }

    #[test]
    fn fs_group_adds_group_read_and_setgid() {
        let d = tempfile::tempdir().unwrap();
        let gid = fs::metadata(d.path()).unwrap().gid();
        let p = Payload::from([("s/k".into(), file("1", 0o400))]);
        write(d.path(), &p, Some(gid), t(0)).unwrap();
        let meta = fs::metadata(d.path().join("s/k")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o440);
        assert_eq!(meta.gid(), gid);
        let dir = fs::metadata(d.path().join("..data/s")).unwrap();
        assert_eq!(dir.mode() & 0o2000, 0o2000);
        // unchanged on a second write
        assert!(!write(d.path(), &p, Some(gid), t(1)).unwrap());
    }

    #[test]
    fn bad_paths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../x", "/abs", "..data", "a/../../b"] {
            let p = Payload::from([(bad.to_string(), file("1", 0o644))]);
            assert!(write(d.path(), &p, None, t(0)).is_err(), "{bad}");
        }
    }
}
