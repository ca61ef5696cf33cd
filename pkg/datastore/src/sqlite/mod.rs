//! The SQLite backend.
//!
//! Two tables: `kv` (current objects, for fast prefix lists) and `log` (one row per revision,
//! for watch resumption and lists at a past revision). Compaction deletes log rows at or below
//! the compacted revision *except the newest row of each live key* (like etcd), so the state at
//! any revision ≥ the compacted one can always be rebuilt from the log alone.
//!
//! One writer thread applies all writes: it takes every pending request, applies them in one
//! transaction (each write its own revision), commits with `synchronous=FULL` (WAL), answers
//! the callers, then publishes the batch to the watch broadcast. Readers use their own
//! connections.

mod read;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, StoreStats,
    WatchStream,
};

pub(crate) use writer::{Op, WriteReq};

/// Tuning of the SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// Revisions of history kept for watch resumption (older ones compact away).
    pub retain_revisions: i64,
    /// How often automatic compaction and WAL checkpoints run (`None`: never).
    pub compact_interval: Option<Duration>,
    /// Batches buffered per watcher before it counts as too slow and is cut off.
    pub watch_buffer: usize,
    /// Largest number of writes committed in one transaction.
    pub max_batch: usize,
    /// Reader connections.
    pub readers: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            retain_revisions: 1000,
            compact_interval: Some(Duration::from_secs(60)),
            watch_buffer: 256,
            max_batch: 512,
            readers: 2,
        }
    }
}

/// One committed batch as watchers see it.
pub(crate) type Batch = Arc<Vec<Event>>;

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writes: mpsc::Sender<WriteReq>,
    readers: Arc<Readers>,
    events: broadcast::Sender<Batch>,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
    batches: Arc<AtomicU64>,
    config: SqliteConfig,
    stop: CancellationToken,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let c = Connection::open_with_flags(path, flags)?;
    c.busy_timeout(Duration::from_secs(30))?;
    Ok(c)
}

/// The reader connections (shared with blocking tasks).
pub(crate) struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    /// Run `f` on one of the connections (blocking).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let conn = self.conns[i].lock().map_err(|_| StoreError::Closed)?;
        f(&conn)
    }
}

/// Upper bound of a key prefix range (`key >= prefix AND key < upper`).
pub(crate) fn upper(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

impl SqliteStore {
    /// Open (or create) the database at `path` and start the writer and the compactor.
    pub fn open(path: &Path, config: SqliteConfig) -> Result<Arc<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = open_conn(path, false)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS log (rev INTEGER PRIMARY KEY, key TEXT NOT NULL, kind INTEGER NOT NULL, create_rev INTEGER NOT NULL, prev_rev INTEGER, value BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS log_key_rev ON log(key, rev);
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (name, value) VALUES ('rev', 0), ('compact', 0);",
        )?;
        let meta = |name: &str| -> Result<i64> {
            Ok(
                conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                    r.get(0)
                })?,
            )
        };
        let revision = Arc::new(AtomicI64::new(meta("rev")?));
        let compacted = Arc::new(AtomicI64::new(meta("compact")?));
        let conns = (0..config.readers.max(1))
            .map(|_| open_conn(path, true).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        let readers = Arc::new(Readers {
            conns,
            next: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::channel(8192);
        let (events, _) = broadcast::channel(config.watch_buffer.max(16));
        let batches = Arc::new(AtomicU64::new(0));
        let w = writer::Writer {
            conn,
            rx,
            events: events.clone(),
            revision: revision.clone(),
            compacted: compacted.clone(),
            batches: batches.clone(),
            max_batch: config.max_batch.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("k8slite-sqlite-writer".into())
            .spawn(move || w.run())
            .map_err(|source| StoreError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let store = Arc::new(Self {
            path: path.to_path_buf(),
            writes: tx,
            readers,
            events,
            revision,
            compacted,
            batches,
            config,
            stop: CancellationToken::new(),
            writer: Mutex::new(Some(handle)),
        });
        if let Some(every) = store.config.compact_interval {
            let s = store.clone();
            tokio::spawn(async move { s.auto_compact(every).await });
        }
        tracing::debug!(path = %path.display(), revision = store.revision.load(Ordering::SeqCst), "sqlite store open");
        Ok(store)
    }

    /// Number of committed write transactions (group commit makes this smaller than writes).
    pub fn committed_batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Stop background work and the writer; pending writes are answered first.
    pub async fn close(&self) {
        self.stop.cancel();
        let (tx, rx) = oneshot::channel();
        if self
            .writes
            .send(WriteReq {
                op: Op::Shutdown,
                reply: tx,
            })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    async fn auto_compact(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let target = self.revision.load(Ordering::SeqCst) - self.config.retain_revisions;
            if target > self.compacted.load(Ordering::SeqCst)
                && let Err(e) = self.compact(target).await
            {
                tracing::warn!(error = %e, "automatic compaction failed");
            }
            if let Err(e) = self.write(Op::Checkpoint).await {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    }

    async fn write(&self, op: Op) -> Result<Option<KeyValue>> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(WriteReq { op, reply: tx })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `f` on a reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    fn file_size(&self) -> u64 {
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        size(self.path.clone()) + size(wal)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |c| read::get(c, &key)).await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_string();
        self.read(move |c| read::list(c, &prefix, &opts)).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_string();
        self.read(move |c| read::count(c, &prefix)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.write(Op::Create {
            key: key.to_string(),
            value,
        })
        .await?
        .ok_or(StoreError::Closed)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        self.write(Op::Update {
            key: key.to_string(),
            value,
            expected,
        })
        .await?
        .ok_or(StoreError::Closed)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.write(Op::Delete {
            key: key.to_string(),
            expected,
        })
        .await?
        .ok_or(StoreError::Closed)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        read::watch(
            self.readers.clone(),
            self.events.subscribe(),
            self.compacted.load(Ordering::SeqCst),
            self.config.watch_buffer,
            prefix,
            after,
        )
        .await
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.revision.load(Ordering::SeqCst))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.write(Op::Compact { revision }).await.map(|_| ())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let keys = self
            .read(|c| {
                Ok(c.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get::<_, i64>(0))? as u64)
            })
            .await?;
        Ok(StoreStats {
            revision: self.revision.load(Ordering::SeqCst),
            compact_revision: self.compacted.load(Ordering::SeqCst),
            keys,
            size_bytes: self.file_size(),
        })
    }
}

#[cfg(test)]
mod tests;
