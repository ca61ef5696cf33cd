//! Small state files a node agent keeps across restarts (the cluster network settings and the
//! cluster DNS records, so the DNS answers before the agent reaches the API server).
//!
//! - A file is a header line `k8slite-state 1 <kind> <length> <sha256 hex>` and the body. A
//!   torn, truncated or otherwise corrupt file fails the check and is ignored (with a warning
//!   by [`StateFile::load`]), never fatal.
//! - Writes are atomic (temporary file in the same directory, fsync, rename) and bounded
//!   ([`MAX_STATE_BYTES`]).
//! - Writes are costly on SD cards: [`StateFile::save`] skips content equal to what the file
//!   holds, and [`spawn_writer`] writes at most once per interval ([`Debounce`]) plus once at
//!   the end for changes still pending.
//!
//! The file system sits behind [`StateStore`] ([`FileStore`]; [`MemoryStore`] records writes
//! for tests).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

/// Largest state file written or read (bigger content is not written; a bigger file is
/// ignored).
pub const MAX_STATE_BYTES: usize = 8 << 20;
/// First word of the header line.
const MAGIC: &str = "k8slite-state";
/// Format version in the header line.
const VERSION: &str = "1";

/// Errors of the state files.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading the file failed.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing (or renaming, removing) the file failed.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The content is larger than [`MAX_STATE_BYTES`].
    #[error("{what}: {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The file or content.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The file is not a valid state file of the expected kind.
    #[error("{what}: corrupt state file: {reason}")]
    Corrupt {
        /// The file.
        what: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The SHA-256 of a body.
pub type Digest = [u8; 32];

fn digest(body: &[u8]) -> Digest {
    Sha256::digest(body).into()
}

fn hex(d: &Digest) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(64);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `body` framed with the header line of `kind`.
pub fn frame(kind: &str, body: &[u8]) -> Vec<u8> {
    let header = format!(
        "{MAGIC} {VERSION} {kind} {} {}\n",
        body.len(),
        hex(&digest(body))
    );
    let mut out = Vec::with_capacity(header.len() + body.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a framed file of `kind`, checked against its header's length and digest.
pub fn unframe<'a>(kind: &str, bytes: &'a [u8]) -> Result<&'a [u8], &'static str> {
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header not UTF-8")?;
    let body = &bytes[nl + 1..];
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err("not a k8slite state file");
    }
    if words.next() != Some(VERSION) {
        return Err("unknown format version");
    }
    if words.next() != Some(kind) {
        return Err("state of another kind");
    }
    let len: usize = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or("no length")?;
    if len != body.len() {
        return Err("length does not match (truncated file?)");
    }
    if words.next() != Some(hex(&digest(body)).as_str()) {
        return Err("checksum does not match");
    }
    Ok(body)
}

/// Where a state file lives (the seam for tests).
pub trait StateStore: Send + Sync + 'static {
    /// The stored bytes; `None` when there is no file.
    fn read(&self) -> Result<Option<Vec<u8>>, PersistError>;
    /// Replace the stored bytes atomically.
    fn write(&self, bytes: &[u8]) -> Result<(), PersistError>;
    /// Remove the stored bytes (no error when there are none).
    fn remove(&self) -> Result<(), PersistError>;
    /// Name for messages (the path).
    fn describe(&self) -> String;
}

/// A state file on disk.
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// The file at `path` (its directory is created on the first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl StateStore for FileStore {
    fn read(&self) -> Result<Option<Vec<u8>>, PersistError> {
        use std::io::Read as _;
        let err = |source| PersistError::Read {
            path: self.path.clone(),
            source,
        };
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let mut buf = Vec::new();
        f.take(MAX_STATE_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(err)?;
        if buf.len() > MAX_STATE_BYTES {
            return Err(PersistError::TooLarge {
                what: self.describe(),
                size: buf.len() as u64,
                limit: MAX_STATE_BYTES,
            });
        }
        Ok(Some(buf))
    }

    fn write(&self, bytes: &[u8]) -> Result<(), PersistError> {
        let err = |source| PersistError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let tmp = dir.join(name);
        let result = write_synced(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }

    fn remove(&self) -> Result<(), PersistError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(PersistError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Write `bytes` to a new file at `path` and fsync it.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// An in-memory store that counts writes (for tests).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryState>>,
}

/// What a [`MemoryStore`] holds.
#[derive(Clone, Debug, Default)]
pub struct MemoryState {
    /// The stored bytes.
    pub bytes: Option<Vec<u8>>,
    /// Writes so far.
    pub writes: usize,
    /// Bytes written so far.
    pub bytes_written: usize,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the state.
    pub fn state(&self) -> MemoryState {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace the stored bytes (not counted as a write).
    pub fn set(&self, bytes: Option<Vec<u8>>) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes = bytes;
    }
}

impl StateStore for MemoryStore {
    fn read(&self) -> Result<Option<Vec<u8>>, PersistError> {
        Ok(self.state().bytes)
    }

    fn write(&self, bytes: &[u8]) -> Result<(), PersistError> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.bytes = Some(bytes.to_vec());
        s.writes += 1;
        s.bytes_written += bytes.len();
        Ok(())
    }

    fn remove(&self) -> Result<(), PersistError> {
        self.set(None);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

/// One kind of state in a store, remembering the digest of what the store holds.
pub struct StateFile<S> {
    store: S,
    kind: &'static str,
    held: Option<Digest>,
}

impl<S: StateStore> StateFile<S> {
    /// State `kind` (a word: it is in the header) in `store`.
    pub fn new(store: S, kind: &'static str) -> Self {
        Self {
            store,
            kind,
            held: None,
        }
    }

    /// The body stored, `None` (with a warning) when the file is missing, unreadable, too
    /// large or corrupt.
    pub fn load(&mut self) -> Option<Vec<u8>> {
        let bytes = match self.store.read() {
            Ok(Some(b)) => b,
            Ok(None) => {
                tracing::info!(file = %self.store.describe(), "no saved {} state", self.kind);
                return None;
            }
            Err(e) => {
                tracing::warn!("ignoring saved {} state: {e}", self.kind);
                return None;
            }
        };
        match unframe(self.kind, &bytes) {
            Ok(body) => {
                self.held = Some(digest(body));
                Some(body.to_vec())
            }
            Err(reason) => {
                let e = PersistError::Corrupt {
                    what: self.store.describe(),
                    reason,
                };
                tracing::warn!("ignoring saved {} state: {e}", self.kind);
                None
            }
        }
    }

    /// Store `body` unless the store already holds it; whether it was written. Content larger
    /// than [`MAX_STATE_BYTES`] is not written, and the stale file is removed.
    pub fn save(&mut self, body: &[u8]) -> Result<bool, PersistError> {
        let d = digest(body);
        if self.held == Some(d) {
            return Ok(false);
        }
        let framed = frame(self.kind, body);
        if framed.len() > MAX_STATE_BYTES {
            self.held = None;
            self.store.remove()?;
            return Err(PersistError::TooLarge {
                what: format!("{} state", self.kind),
                size: framed.len() as u64,
                limit: MAX_STATE_BYTES,
            });
        }
        self.store.write(&framed)?;
        self.held = Some(d);
        Ok(true)
    }
}

/// When to write: not before `settle` after the first unsaved change (a burst becomes one
/// write), and not sooner than `interval` after the previous write.
#[derive(Clone, Debug)]
pub struct Debounce {
    interval: Duration,
    settle: Duration,
    last_write: Option<Instant>,
    dirty_since: Option<Instant>,
}

impl Debounce {
    /// At most one write per `interval`, `settle` after a change.
    pub fn new(interval: Duration, settle: Duration) -> Self {
        Self {
            interval,
            settle,
            last_write: None,
            dirty_since: None,
        }
    }

    /// The content changed at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
    }

    /// Whether a change is not saved yet.
    pub fn dirty(&self) -> bool {
        self.dirty_since.is_some()
    }

    /// When the pending change is to be written (`None`: nothing pending).
    pub fn due(&self) -> Option<Instant> {
        let at = self.dirty_since? + self.settle;
        Some(match self.last_write {
            Some(w) => at.max(w + self.interval),
            None => at,
        })
    }

    /// The pending change was handled at `now`; `wrote`: the store was written (an unchanged
    /// content is not a write and does not delay the next one).
    pub fn done(&mut self, now: Instant, wrote: bool) {
        self.dirty_since = None;
        if wrote {
            self.last_write = Some(now);
        }
    }
}

/// Save `encode()` into `file` after changes announced on `changes` (any new value), as
/// `debounce` allows, and once more for a pending change when the sender is dropped; then the
/// task ends. Errors are logged. The writes run on the blocking pool.
pub fn spawn_writer<S, T, F>(
    file: StateFile<S>,
    mut debounce: Debounce,
    mut changes: watch::Receiver<T>,
    encode: F,
) -> tokio::task::JoinHandle<()>
where
    S: StateStore,
    T: Send + Sync + 'static,
    F: Fn() -> Vec<u8> + Send + 'static,
{
    tokio::spawn(async move {
        let mut file = Some(file);
        loop {
            let due = debounce.due();
            let write = tokio::select! {
                r = changes.changed() => match r {
                    Ok(()) => {
                        debounce.changed(Instant::now());
                        false
                    }
                    Err(_) => break,
                },
                _ = sleep_until(due), if due.is_some() => true,
            };
            if write {
                let wrote = save(&mut file, encode()).await;
                debounce.done(Instant::now(), wrote);
            }
        }
        if debounce.dirty() {
            save(&mut file, encode()).await;
        }
    })
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

async fn save<S: StateStore>(slot: &mut Option<StateFile<S>>, body: Vec<u8>) -> bool {
    let Some(mut file) = slot.take() else {
        return false;
    };
    let joined = tokio::task::spawn_blocking(move || {
        let r = file.save(&body);
        (file, r)
    })
    .await;
    match joined {
        Ok((file, r)) => {
            *slot = Some(file);
            match r {
                Ok(wrote) => {
                    if wrote && let Some(f) = slot.as_ref() {
                        tracing::debug!(kind = f.kind, "state saved");
                    }
                    wrote
                }
                Err(e) => {
                    tracing::warn!("saving state: {e}");
                    false
                }
            }
        }
        Err(e) => {
            tracing::warn!("saving state: {e}");
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
