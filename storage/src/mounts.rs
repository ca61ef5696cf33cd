//! A container's mounts: volumeMounts resolved to host paths (readOnly, subPath,
//! subPathExpr, mountPropagation).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::VolumeError;
use crate::fsutil::validate_relative;

/// Mount propagation of one mount (CRI's values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// `None`: private.
    #[default]
    Private,
    /// `HostToContainer`: rslave.
    HostToContainer,
    /// `Bidirectional`: rshared (privileged containers).
    Bidirectional,
}

impl Propagation {
    /// From a volumeMount's `mountPropagation` (`None`, unset and unknown values: private).
    pub fn from_api(v: Option<&str>) -> Self {
        match v {
            Some("HostToContainer") => Self::HostToContainer,
            Some("Bidirectional") => Self::Bidirectional,
            _ => Self::Private,
        }
    }
}

/// One bind mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    /// The volume it comes from.
    pub volume: String,
    /// Where it appears in the container.
    pub container_path: String,
    /// The host path to bind.
    pub host_path: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
    /// Propagation.
    pub propagation: Propagation,
}

/// Kubernetes' `$(VAR)` expansion against `env` (see [`k8slite_api::expand::expand`]).
pub fn expand(input: &str, env: &BTreeMap<String, String>) -> String {
    k8slite_api::expand::expand(input, |n| env.get(n).map(String::as_str))
}

/// The host path of `sub` inside the volume at `root`: validated, created as a directory when
/// missing and `create` (with the volume root's permissions, like the kubelet), and resolved so
/// that no symlink leads outside the volume.
pub(crate) fn sub_path(root: &Path, sub: &str, create: bool) -> Result<PathBuf, VolumeError> {
    validate_relative(sub, true)?;
    let real_root = fs::canonicalize(root).map_err(VolumeError::io("resolve", root))?;
    let target = root.join(sub);
    if create && fs::symlink_metadata(&target).is_err() {
        // the deepest existing ancestor must be inside the volume before anything is created
        let mut existing = target.as_path();
        while fs::symlink_metadata(existing).is_err() {
            existing = existing.parent().unwrap_or(root);
        }
        let real = fs::canonicalize(existing).map_err(VolumeError::io("resolve", existing))?;
        if !real.starts_with(&real_root) {
            return Err(VolumeError::Escapes {
                path: real,
                root: real_root,
            });
        }
        let mode = fs::metadata(root)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o755);
        fs::create_dir_all(&target).map_err(VolumeError::io("create directory", &target))?;
        crate::fsutil::chmod(&target, mode)?;
    }
    let real = fs::canonicalize(&target).map_err(VolumeError::io("resolve", &target))?;
    if !real.starts_with(&real_root) {
        return Err(VolumeError::Escapes {
            path: real,
            root: real_root,
        });
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let env = BTreeMap::from([("POD".to_string(), "web-0".to_string())]);
        assert_eq!(expand("logs/$(POD)", &env), "logs/web-0");
        assert_eq!(expand("$(MISSING)/x", &env), "$(MISSING)/x");
        assert_eq!(expand("$$(POD)", &env), "$(POD)");
        assert_eq!(expand("a$b", &env), "a$b");
        assert_eq!(expand("$(POD", &env), "$(POD");
        assert_eq!(expand("$()", &env), "$()");
    }

    #[test]
    fn sub_paths_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("vol");
        fs::create_dir(&root).unwrap();
        crate::fsutil::chmod(&root, 0o777).unwrap();
        let p = sub_path(&root, "a/b", true).unwrap();
        assert!(p.is_dir());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o777
        );
        std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();
        assert!(matches!(
            sub_path(&root, "evil", true),
            Err(VolumeError::Escapes { .. })
        ));
        assert!(matches!(
            sub_path(&root, "evil/newdir", true),
            Err(VolumeError::Escapes { .. })
        ));
        assert!(!Path::new("/etc/newdir").exists());
        assert!(sub_path(&root, "../x", true).is_err());
        assert!(sub_path(&root, "/abs", true).is_err());
        // an inner symlink is fine and resolved
        std::os::unix::fs::symlink("a", root.join("inner")).unwrap();
        assert_eq!(sub_path(&root, "inner/b", true).unwrap(), p);
    }
}
