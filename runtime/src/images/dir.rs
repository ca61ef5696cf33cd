//! The airgap images directory (`<data-dir>/agent/images/`): every tarball in it is imported
//! at start and whenever one appears or changes.
//!
//! The directory is polled (every 3 s by default) instead of watched with inotify: it changes
//! rarely and holds a handful of files, so a `readdir` + `stat` per tick costs nothing; polling
//! sees renames, `rsync` temp files, copies over NFS or bind mounts and directories created
//! later alike; and "has the file stopped growing?" needs a timed second look anyway, which
//! inotify would not spare. A file is imported once its size and mtime are unchanged since the
//! previous tick and its mtime is at least 2 s old (at start the second condition suffices).
//!
//! What was imported (file name, size, mtime, image names) is kept in a small JSON state file,
//! so a restart skips unchanged files whose images containerd still has. A file that fails is
//! logged and not retried until it changes; other files go on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backend::ImageBackend;
use super::containerd::{ContainerdImages, connect};
use super::import::import_file;
use super::{CRI_NAMESPACE, ImageError, Result};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);
const SETTLE: Duration = Duration::from_secs(2);
const STATE_FILE: &str = "images-imported.json";

/// Is `name` a file name the images directory imports (`.tar`, `.tar.gz`, `.tgz`, `.tar.zst`,
/// `.tzst`; hidden files are skipped: they are usually partial copies)?
pub fn is_image_tarball(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.')
        && [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd", ".tzst"]
            .iter()
            .any(|ext| lower.ends_with(ext))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Imported {
    size: u64,
    mtime_ns: u128,
    images: Vec<String>,
}

impl Imported {
    fn stamp(&self) -> Stamp {
        Stamp {
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateDoc {
    files: BTreeMap<String, Imported>,
}

/// Imports the tarballs of one directory into containerd, now and whenever they appear.
#[derive(Debug)]
pub struct ImportDir {
    socket: PathBuf,
    dir: PathBuf,
    state_file: PathBuf,
    interval: Duration,
    namespace: String,
    seen: HashMap<String, Stamp>,
    failed: HashMap<String, Stamp>,
    imported: BTreeMap<String, Imported>,
    loaded: bool,
    verified: bool,
}

impl ImportDir {
    /// Import from `dir` into the containerd at `socket` (namespace `k8s.io`). The state file
    /// defaults to `images-imported.json` next to `dir` (`<data-dir>/agent/`).
    pub fn new(socket: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let state_file = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.join(STATE_FILE),
            _ => dir.join(format!(".{STATE_FILE}")),
        };
        ImportDir {
            socket: socket.into(),
            dir,
            state_file,
            interval: DEFAULT_INTERVAL,
            namespace: CRI_NAMESPACE.to_string(),
            seen: HashMap::new(),
            failed: HashMap::new(),
            imported: BTreeMap::new(),
            loaded: false,
            verified: false,
        }
    }

    /// Where to remember what was imported.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = path.into();
        self
    }

    /// How often to look at the directory (default 3 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// containerd namespace (default `k8s.io`, the one CRI reads).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    /// Import what is there, then keep polling until `shutdown`. containerd not being up yet
    /// (or restarting) is logged and retried on the next tick.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot create the images directory");
        }
        tracing::info!(dir = %self.dir.display(), interval_ms = self.interval.as_millis() as u64, "watching images directory");
        let mut backend: Option<ContainerdImages> = None;
        let mut last_connect_error = String::new();
        loop {
            if self.has_work(SystemTime::now()) {
                if backend.is_none() {
                    match connect(&self.socket)
                        .await
                        .and_then(|b| b.with_namespace(&self.namespace))
                    {
                        Ok(b) => {
                            last_connect_error.clear();
                            self.verified = false;
                            backend = Some(b);
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            if msg != last_connect_error {
                                tracing::warn!(error = %msg, "images directory: containerd not reachable, retrying");
                                last_connect_error = msg;
                            }
                        }
                    }
                }
                if let Some(b) = &backend
                    && let Err(e) = self.scan(b).await
                {
                    tracing::warn!(error = %e, "images directory: containerd failed, reconnecting");
                    backend = None;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        tracing::debug!(dir = %self.dir.display(), "images directory importer stopped");
    }

    fn load_state(&mut self) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        match std::fs::read(&self.state_file) {
            Ok(data) => match serde_json::from_slice::<StateDoc>(&data) {
                Ok(doc) => self.imported = doc.files,
                Err(e) => {
                    tracing::warn!(file = %self.state_file.display(), error = %e, "ignoring unreadable image import state")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.state_file.display(), error = %e, "cannot read image import state")
            }
        }
    }

    fn save_state(&self) {
        let doc = StateDoc {
            files: self.imported.clone(),
        };
        let result = serde_json::to_vec_pretty(&doc)
            .map_err(std::io::Error::other)
            .and_then(|data| {
                if let Some(parent) = self.state_file.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let tmp = self.state_file.with_extension("json.tmp");
                std::fs::write(&tmp, data)?;
                std::fs::rename(&tmp, &self.state_file)
            });
        if let Err(e) = result {
            tracing::warn!(file = %self.state_file.display(), error = %e, "cannot write image import state");
        }
    }

    /// Current tarballs in the directory with their stamps.
    fn list(&self) -> Vec<(String, Stamp, SystemTime)> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read images directory");
                }
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !is_image_tarball(&name) {
                continue;
            }
            // `metadata` follows symlinks: a link to a tarball elsewhere counts.
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let mtime_ns = mtime
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            out.push((
                name,
                Stamp {
                    size: meta.len(),
                    mtime_ns,
                },
                mtime,
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Files ready to import now; updates what was seen.
    fn ready(&mut self, now: SystemTime) -> Vec<(String, Stamp)> {
        self.load_state();
        let listed = self.list();
        let mut ready = Vec::new();
        let mut seen = HashMap::new();
        for (name, stamp, mtime) in listed {
            let previous = self.seen.get(&name).copied();
            seen.insert(name.clone(), stamp);
            if self.imported.get(&name).is_some_and(|i| i.stamp() == stamp)
                || self.failed.get(&name) == Some(&stamp)
            {
                continue;
            }
            let quiet = now
                .duration_since(mtime)
                .map(|d| d >= SETTLE)
                .unwrap_or(false);
            let unchanged = previous.is_none_or(|p| p == stamp);
            if quiet && unchanged {
                ready.push((name, stamp));
            } else {
                tracing::debug!(file = %name, size = stamp.size, "image tarball still being written, waiting");
            }
        }
        self.seen = seen;
        // Files that went away are forgotten.
        let before = self.imported.len();
        let present = &self.seen;
        self.imported.retain(|name, _| present.contains_key(name));
        self.failed.retain(|name, _| present.contains_key(name));
        if self.imported.len() != before {
            self.save_state();
        }
        ready
    }

    fn has_work(&mut self, now: SystemTime) -> bool {
        self.load_state();
        !self.verified
            || self.list().iter().any(|(name, stamp, mtime)| {
                let done = self.imported.get(name).is_some_and(|i| i.stamp() == *stamp)
                    || self.failed.get(name) == Some(stamp);
                let quiet = now
                    .duration_since(*mtime)
                    .map(|d| d >= SETTLE)
                    .unwrap_or(false);
                !done && (quiet || self.seen.get(name) != Some(stamp))
            })
    }

    /// One look at the directory with this backend: import every ready tarball. Returns the
    /// file names imported. Errors only when containerd itself fails (the caller reconnects);
    /// a bad tarball is logged and skipped until it changes.
    pub async fn scan(&mut self, backend: &dyn ImageBackend) -> Result<Vec<String>> {
        self.load_state();
        if !self.verified {
            // After a restart (or a new containerd), trust the state only for images still there.
            let mut stale = Vec::new();
            for (name, done) in &self.imported {
                for image in &done.images {
                    if backend.image_get(image).await?.is_none() {
                        tracing::info!(file = %name, image, "image from an earlier import is gone, importing again");
                        stale.push(name.clone());
                        break;
                    }
                }
            }
            for name in &stale {
                self.imported.remove(name);
            }
            if !stale.is_empty() {
                self.save_state();
            }
            self.verified = true;
        }
        let mut done = Vec::new();
        for (name, stamp) in self.ready(SystemTime::now()) {
            let path = self.dir.join(&name);
            match import_file(backend, &path).await {
                Ok(summary) => {
                    self.imported.insert(
                        name.clone(),
                        Imported {
                            size: stamp.size,
                            mtime_ns: stamp.mtime_ns,
                            images: summary.images,
                        },
                    );
                    self.save_state();
                    done.push(name);
                }
                Err(e) if is_transient(&e) => return Err(e),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "importing image tarball failed; retrying when the file changes");
                    self.failed.insert(name, stamp);
                }
            }
        }
        Ok(done)
    }

    /// The directory imported from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// containerd unreachable (rather than the file being bad): retry later.
fn is_transient(e: &ImageError) -> bool {
    use containerd_client::tonic::Code;
    match e {
        ImageError::Connect { .. } | ImageError::ConnectTimeout { .. } => true,
        ImageError::Containerd { source, .. } => {
            matches!(
                source.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
            )
        }
        _ => false,
    }
}
