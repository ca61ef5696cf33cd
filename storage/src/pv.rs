//! persistentVolumeClaim volumes bound to hostPath or local persistent volumes (the local-path
//! provisioner's kind), and the deletion of a released `Delete` volume's directory.

use std::fs;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use crate::fsutil::{chmod, remove_tree};
use crate::hostpath::check_type;
use crate::{StorageError, VolumeError, VolumeSource};

/// A claim resolved to its directory on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedClaim {
    /// The persistent volume's name.
    pub volume_name: String,
    /// Its directory on the host.
    pub path: PathBuf,
}

/// The host path of a hostPath or local persistent volume, and its hostPath type.
pub fn volume_path(pv: &PersistentVolume) -> Option<(PathBuf, Option<String>)> {
    let spec = pv.spec.as_ref()?;
    if let Some(h) = &spec.host_path {
        return Some((PathBuf::from(&h.path), h.type_.clone()));
    }
    spec.local.as_ref().map(|l| (PathBuf::from(&l.path), None))
}

/// Resolve claim `namespace/claim` to its bound volume's directory, creating the directory when
/// missing (mode 0777, as the local-path provisioner does; a hostPath PV of a non-directory
/// type is type-checked instead).
pub(crate) async fn resolve_claim(
    source: &dyn VolumeSource,
    namespace: &str,
    claim: &str,
) -> Result<ResolvedClaim, VolumeError> {
    let pvc: PersistentVolumeClaim = source
        .persistent_volume_claim(namespace, claim)
        .await
        .map_err(|source| VolumeError::Source {
            what: format!("get persistentvolumeclaim {claim:?}"),
            source,
        })?
        .ok_or_else(|| VolumeError::ClaimNotFound(claim.to_string()))?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    let Some(volume_name) = volume_name.filter(|_| bound) else {
        return Err(VolumeError::ClaimNotBound(claim.to_string()));
    };
    let pv = source
        .persistent_volume(&volume_name)
        .await
        .map_err(|source| VolumeError::Source {
            what: format!("get persistentvolume {volume_name:?}"),
            source,
        })?
        .ok_or_else(|| VolumeError::VolumeNotFound(volume_name.clone()))?;
    if let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
        let uid_differs = matches!((&r.uid, &pvc.metadata.uid), (Some(a), Some(b)) if a != b);
        let name_differs = r.name.as_deref().is_some_and(|n| n != claim)
            || r.namespace.as_deref().is_some_and(|n| n != namespace);
        if uid_differs || name_differs {
            return Err(VolumeError::VolumeBoundElsewhere {
                pv: volume_name,
                claim: claim.to_string(),
            });
        }
    }
    let (path, kind) =
        volume_path(&pv).ok_or_else(|| VolumeError::VolumeKind(volume_name.clone()))?;
    match kind.as_deref() {
        None | Some("" | "Directory" | "DirectoryOrCreate") => match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&path).map_err(VolumeError::io("create directory", &path))?;
                chmod(&path, 0o777)?;
            }
            Err(e) => return Err(VolumeError::io("stat", &path)(e)),
            Ok(_) => check_type(&path, Some("Directory"))?,
        },
        other => check_type(&path, other)?,
    }
    Ok(ResolvedClaim { volume_name, path })
}

/// Delete the directory of a released persistent volume whose reclaim policy is `Delete`
/// (what the local-path provisioner's helper pod would do). Only hostPath and local volumes
/// whose path lies strictly below `allowed_root` (normally `<data-dir>/storage`) are touched;
/// symlinks are removed, never followed, and mount points are not crossed.
///
/// Returns `Ok(true)` when the directory was removed (or was already gone), `Ok(false)` when
/// the volume is not one to delete (another reclaim policy, another volume kind).
pub fn delete_volume_dir(pv: &PersistentVolume, allowed_root: &Path) -> Result<bool, StorageError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let err = |source| StorageError::DeleteVolume {
        pv: name.clone(),
        source,
    };
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    if policy != Some("Delete") {
        return Ok(false);
    }
    let Some((path, _)) = volume_path(pv) else {
        return Ok(false);
    };
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(err(VolumeError::Escapes {
            path,
            root: allowed_root.to_path_buf(),
        }));
    }
    let root = fs::canonicalize(allowed_root)
        .map_err(|e| err(VolumeError::io("resolve", allowed_root)(e)))?;
    // resolve the parent (the volume's own directory may itself be a symlink: it is removed,
    // not followed)
    let parent = path.parent().unwrap_or(Path::new("/"));
    let Some(file_name) = path.file_name() else {
        return Err(err(VolumeError::Escapes { path, root }));
    };
    let parent = match fs::canonicalize(parent) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(err(VolumeError::io("resolve", parent)(e))),
    };
    if !parent.starts_with(&root) {
        return Err(err(VolumeError::Escapes {
            path: parent.join(file_name),
            root,
        }));
    }
    remove_tree(&parent.join(file_name)).map_err(err)?;
    Ok(true)
}
