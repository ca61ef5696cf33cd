//! hostPath volumes: the type checks (and creations) of the kubelet.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::VolumeError;
use crate::fsutil::{chmod, mkdir_mode};

/// Check (and for the `…OrCreate` types create) `path` according to a hostPath `type`.
/// `""`/`None` checks nothing; `DirectoryOrCreate` creates the directory (and its parents) with
/// mode 0755; `FileOrCreate` creates an empty file with mode 0644 (its parent must exist, as
/// with the kubelet).
pub fn check_type(path: &Path, kind: Option<&str>) -> Result<(), VolumeError> {
    let display = path.display().to_string();
    let fail = |expected| {
        Err(VolumeError::HostPathType {
            path: display.clone(),
            expected,
        })
    };
    let meta = fs::metadata(path).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    match kind.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_none() => mkdir_mode(path, 0o755),
        "DirectoryOrCreate" | "Directory" => match ft {
            Some(t) if t.is_dir() => Ok(()),
            _ => fail("directory"),
        },
        "FileOrCreate" if meta.is_none() => {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(VolumeError::io("create file", path))?;
            chmod(path, 0o644)
        }
        "FileOrCreate" | "File" => match ft {
            Some(t) if t.is_file() => Ok(()),
            _ => fail("file"),
        },
        "Socket" => match ft {
            Some(t) if t.is_socket() => Ok(()),
            _ => fail("socket file"),
        },
        "CharDevice" => match ft {
            Some(t) if t.is_char_device() => Ok(()),
            _ => fail("character device"),
        },
        "BlockDevice" => match ft {
            Some(t) if t.is_block_device() => Ok(()),
            _ => fail("block device"),
        },
        other => Err(VolumeError::HostPathTypeName(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn types_are_checked_and_created() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        check_type(&dir, Some("DirectoryOrCreate")).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o755);
        check_type(&dir, Some("Directory")).unwrap();
        let err = check_type(&d.path().join("nope"), Some("Directory")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "hostPath type check failed: {}/nope is not a directory",
                d.path().display()
            )
        );

        let file = d.path().join("f");
        check_type(&file, Some("FileOrCreate")).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o644);
        check_type(&file, Some("File")).unwrap();
        assert!(check_type(&file, Some("Directory")).is_err());
        assert!(check_type(&dir, Some("File")).is_err());
        assert!(check_type(&dir, Some("FileOrCreate")).is_err());
        assert!(check_type(&file, Some("DirectoryOrCreate")).is_err());
        // FileOrCreate does not create parents
        assert!(check_type(&d.path().join("x/y"), Some("FileOrCreate")).is_err());

        assert!(check_type(&d.path().join("nope"), None).is_ok());
        assert!(check_type(&d.path().join("nope"), Some("")).is_ok());

        let err = check_type(&file, Some("Socket")).unwrap_err().to_string();
        assert!(err.ends_with("is not a socket file"), "{err}");
        let sock = d.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        check_type(&sock, Some("Socket")).unwrap();

        check_type(Path::new("/dev/null"), Some("CharDevice")).unwrap();
        let err = check_type(&file, Some("CharDevice"))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("is not a character device"), "{err}");
        let err = check_type(Path::new("/dev/null"), Some("BlockDevice"))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("is not a block device"), "{err}");
        assert!(matches!(
            check_type(&file, Some("Bogus")),
            Err(VolumeError::HostPathTypeName(_))
        ));
    }
}
