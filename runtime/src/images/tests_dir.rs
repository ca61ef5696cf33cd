//! The images directory against the in-memory backend: readiness, state across restarts,
//! failures that do not stop other files.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;

fn write_old(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

fn image(tag: &str) -> Vec<u8> {
    ImageBuilder::new()
        .tag(tag)
        .file("f", tag.as_bytes().to_vec(), 0o644)
        .docker_archive()
        .unwrap()
}

#[test]
fn tarball_names() {
    for ok in ["a.tar", "b.tar.gz", "c.TGZ", "d.tar.zst", "e.tzst"] {
        assert!(is_image_tarball(ok), "{ok}");
    }
    for no in [".a.tar", "a.tar.part", "readme.txt", "a.zip", "a.gz"] {
        assert!(!is_image_tarball(no), "{no}");
    }
}

#[tokio::test]
async fn imports_ready_files_once_and_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    std::fs::create_dir_all(&dir).unwrap();
    write_old(&dir.join("a.tar"), &image("a:1"));
    write_old(
        &dir.join("b.tar.gz"),
        &compress(&image("b:1"), Compression::Gzip).unwrap(),
    );
    write_old(&dir.join("broken.tar"), b"not a tarball at all");
    std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
    let b = MemoryBackend::new();

    let mut d = ImportDir::new("/nonexistent.sock", &dir);
    let done = d.scan(&b).await.unwrap();
    assert_eq!(done, vec!["a.tar", "b.tar.gz"]);
    assert!(b.images().contains_key("docker.io/library/a:1"));
    assert!(b.images().contains_key("docker.io/library/b:1"));
    // The broken file is not retried while unchanged; nothing is imported twice.
    assert!(d.scan(&b).await.unwrap().is_empty());
    let state = std::fs::read_to_string(tmp.path().join("images-imported.json")).unwrap();
    assert!(state.contains("docker.io/library/a:1"), "{state}");

    // A restart trusts the state while containerd still has the images...
    let writes = b.writes();
    let mut d = ImportDir::new("/nonexistent.sock", &dir);
    assert!(d.scan(&b).await.unwrap().is_empty());
    assert_eq!(b.writes(), writes);
    // ...and imports again what containerd lost.
    b.remove_image("docker.io/library/a:1");
    let mut d = ImportDir::new("/nonexistent.sock", &dir);
    assert_eq!(d.scan(&b).await.unwrap(), vec!["a.tar"]);

    // The broken file, once fixed, is imported.
    write_old(&dir.join("broken.tar"), &image("c:1"));
    assert!(
        d.scan(&b).await.unwrap().is_empty(),
        "changed since the previous look"
    );
    assert_eq!(d.scan(&b).await.unwrap(), vec!["broken.tar"]);
}

#[tokio::test]
async fn waits_until_a_file_stops_changing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let b = MemoryBackend::new();
    let mut d = ImportDir::new("/nonexistent.sock", &dir).state_file(tmp.path().join("state.json"));
    assert!(d.scan(&b).await.unwrap().is_empty());
    // Fresh mtime: still being written.
    let data = image("fresh:1");
    std::fs::write(dir.join("fresh.tar"), &data[..100]).unwrap();
    assert!(d.scan(&b).await.unwrap().is_empty());
    // Grows, then goes quiet: imported on the first look after it settled.
    write_old(&dir.join("fresh.tar"), &data);
    assert!(
        d.scan(&b).await.unwrap().is_empty(),
        "changed since the previous look"
    );
    assert_eq!(d.scan(&b).await.unwrap(), vec!["fresh.tar"]);
    assert!(tmp.path().join("state.json").exists());
}
