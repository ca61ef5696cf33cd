//! Test images: built once per test process by `packaging/images/build-test-images.sh` (POSIX
//! shell, no Rust needed, so users build the same airgap images) into a cache directory next to
//! the test executables, then copied into each node's images directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// Reference of the busybox test image.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";
/// Reference of the nginx stand-in (busybox httpd on :80).
pub const NGINX_IMAGE: &str = "docker.io/library/nginx:latest";
/// File names of the built archives in the cache dir (and in each node's images dir).
pub const IMAGE_FILES: &[&str] = &["busybox.tar", "nginx.tar"];

/// The image build script in this repository.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/images/build-test-images.sh")
}

/// Cache dir: `$K8SLITE_E2E_IMAGES`, else `e2e-images/` in the target profile dir (next to the
/// `k8slite` binary of the build under test).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("K8SLITE_E2E_IMAGES") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("e2e-images"))
        .unwrap_or_else(|| std::env::temp_dir().join("k8slite-e2e-images"))
}

/// Build the test images once per process (the script writes atomically and reproducibly, so
/// concurrent test processes agree) and return the directory holding them.
pub fn test_images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = cache_dir();
        build_into(&dir).unwrap_or_else(|e| panic!("building the e2e test images: {e:#}"));
        dir
    })
}

/// Run the build script into `dir`.
pub fn build_into(dir: &Path) -> anyhow::Result<()> {
    let script = build_script();
    let out = Command::new("sh")
        .arg(&script)
        .arg(dir)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for f in IMAGE_FILES {
        if !dir.join(f).is_file() {
            bail!("{} did not produce {f}", script.display());
        }
    }
    Ok(())
}

/// Copy `src` into `images_dir` as `name` atomically: written as `.<name>.partial` first, then
/// renamed, so a watching agent never sees half a tarball under a `.tar` name.
pub fn place_image(src: &Path, images_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(images_dir)
        .with_context(|| format!("creating {}", images_dir.display()))?;
    let tmp = images_dir.join(format!(".{name}.partial"));
    let dst = images_dir.join(name);
    std::fs::copy(src, &tmp).with_context(|| format!("copying {}", src.display()))?;
    std::fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
    Ok(dst)
}

/// Write a copy of docker-archive `src` whose manifest tags it `tag` instead (same layers and
/// config, so the same image ID) to `dst`. For "a new image appears" tests.
pub fn retag_archive(src: &Path, dst: &Path, tag: &str) -> anyhow::Result<()> {
    let work = tempfile::Builder::new()
        .prefix("k8slite-retag-")
        .tempdir()?;
    let w = work.path();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(src)
        .arg("-C")
        .arg(w)
        .status()
        .context("running tar -x")?;
    if !st.success() {
        bail!("extracting {} failed ({st})", src.display());
    }
    let mpath = w.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&mpath).with_context(|| format!("reading {}", mpath.display()))?,
    )?;
    let entries = manifest
        .as_array_mut()
        .context("manifest.json is not an array")?;
    for e in entries.iter_mut() {
        e["RepoTags"] = serde_json::json!([tag]);
    }
    std::fs::write(&mpath, serde_json::to_vec(&manifest)?)?;
    let mut names: Vec<String> = std::fs::read_dir(w)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let st = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
        ])
        .arg("-C")
        .arg(w)
        .arg("-cf")
        .arg(dst)
        .args(&names)
        .status()
        .context("running tar -c")?;
    if !st.success() {
        bail!("writing {} failed ({st})", dst.display());
    }
    Ok(())
}
