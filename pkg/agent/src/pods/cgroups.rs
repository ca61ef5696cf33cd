//! Pod cgroups: the runtime removes its containers' leaf cgroups, the agent owns the pod's
//! parent (`<cgroup-root>/pod<uid>`) and removes it in every hierarchy once the sandbox is gone.

use std::path::Path;

/// Remove the cgroup `path` (e.g. `/k8slite-n1/pod<uid>`) from every mounted hierarchy under
/// `/sys/fs/cgroup` (v1 controllers and the unified one); missing directories are fine.
pub fn remove(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.contains("..") {
        return;
    }
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(rel)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            dirs.push(e.path().join(rel));
        }
    }
    for d in dirs {
        match std::fs::remove_dir(&d) {
            Ok(()) => tracing::debug!(cgroup = %d.display(), "removed pod cgroup"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!(cgroup = %d.display(), "removing pod cgroup: {e}"),
        }
    }
}
