//! Teardown of a pod's volumes and of orphaned pod directories.

use std::collections::HashSet;
use std::fs;

use super::{VolumeManager, check_uid};
use crate::fsutil::remove_tree;
use crate::{StorageError, VolumeError};

impl VolumeManager {
    /// Tear down the volumes of pod `pod_uid` (after its sandbox is removed): unmount every
    /// mount below `<pods_dir>/<uid>` (tmpfs), then remove that directory without following
    /// symlinks or crossing a mount point (hostPath and persistent volume contents live
    /// elsewhere and are never touched). Idempotent.
    pub fn teardown(&self, pod_uid: &str) -> Result<(), StorageError> {
        let err = |source| StorageError::TearDown {
            pod_uid: pod_uid.to_string(),
            source,
        };
        check_uid(pod_uid).map_err(err)?;
        let dir = self.pods_dir.join(pod_uid);
        let dir = match fs::canonicalize(&dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(pod_uid);
                return Ok(());
            }
            Err(e) => return Err(err(VolumeError::io("resolve", &dir)(e))),
        };
        let mut mounts = self.mounter.mounts_under(&dir).map_err(|source| {
            err(VolumeError::Mount {
                op: "inspect mounts of",
                path: dir.clone(),
                source,
            })
        })?;
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in &mounts {
            self.mounter.unmount(m).map_err(|source| {
                err(VolumeError::Mount {
                    op: "unmount",
                    path: m.clone(),
                    source,
                })
            })?;
        }
        remove_tree(&dir).map_err(err)?;
        self.forget(pod_uid);
        tracing::debug!(pod = %pod_uid, unmounted = mounts.len(), "pod volumes torn down");
        Ok(())
    }

    fn forget(&self, uid: &str) {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// Tear down every pod directory under the pods directory whose uid is not in `live`
    /// (after an agent restart). Returns the failures; the others are removed.
    pub fn cleanup_orphans(&self, live: &HashSet<String>) -> Vec<StorageError> {
        let Ok(entries) = fs::read_dir(&self.pods_dir) else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&uid)
                && let Err(e) = self.teardown(&uid)
            {
                errors.push(e);
            }
        }
        errors
    }
}
