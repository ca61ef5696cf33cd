//! Files holding key material: written atomically (temp file + fsync + rename) with an
//! explicit mode, read back tolerating absence.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{PkiError, Result};

fn io(op: &'static str, path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// A temp file name next to `path`, unique within this process.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// Write `data` to `path` atomically with permission bits `mode` (applied whatever the umask,
/// and whatever the mode of a file being replaced), creating parent directories.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| io("creating directory", parent, e))?;
    let tmp = temp_path(path);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io("creating", &tmp, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("setting permissions of", &tmp, e))?;
        f.write_all(data).map_err(|e| io("writing", &tmp, e))?;
        f.sync_all().map_err(|e| io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("renaming into place", path, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // Make the rename durable; a failure here is not worth failing the write for.
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Read a file to a string, `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| PkiError::parse(path.display().to_string(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path, e)),
    }
}

/// Restrict an existing file's permission bits to `mode` if they differ (keys stay 0600 even
/// when someone loosened them).
pub(crate) fn ensure_mode(path: &Path, mode: u32) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| io("reading metadata of", path, e))?;
    if meta.permissions().mode() & 0o7777 != mode {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o7777), "restoring mode {mode:o}");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("setting permissions of", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_even_over_an_existing_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("a/b/secret");
        write_atomic(&p, b"one", 0o644).expect("first");
        write_atomic(&p, b"two", 0o600).expect("second");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(p.parent().expect("parent"))
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("secret")],
            "no temp files"
        );

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        ensure_mode(&p, 0o600).expect("ensure");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_optional(&dir.path().join("none")).expect("read"), None);
    }
}
