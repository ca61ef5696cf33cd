//! k8slite's datastore: a revisioned key–value store with watch.
//!
//! The [`Store`] trait is shaped so that both the embedded SQLite backend ([`sqlite::SqliteStore`])
//! and a later etcd backend fit. Every write gets the next value of one global, monotonically
//! increasing *revision*; the API server uses an object's `mod_revision` as its
//! `resourceVersion`. Watches resume from a revision as long as the event log still holds it;
//! older revisions answer [`StoreError::Expired`] (HTTP 410 at the API).

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod sqlite;

/// A store revision. Revision 0 means "no revision" / "current" depending on context.
pub type Revision = i64;

/// One stored key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// Full key, e.g. `/registry/pods/default/web-0`.
    pub key: String,
    /// Stored bytes (JSON for Kubernetes objects).
    pub value: Bytes,
    /// Revision of the write that created this key (the current incarnation of it).
    pub create_revision: Revision,
    /// Revision of the last write to this key. For a [`EventKind::Deleted`] event it is the
    /// revision of the delete.
    pub mod_revision: Revision,
}

/// What a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created.
    Created,
    /// The key was updated.
    Updated,
    /// The key was deleted; `kv.value` holds the last value, `kv.mod_revision` the delete's revision.
    Deleted,
}

/// One change, as delivered to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Kind of change.
    pub kind: EventKind,
    /// The key after the change (for deletes: the last value, with the delete's revision).
    pub kv: KeyValue,
    /// The key before the change (`None` for creates).
    pub prev: Option<KeyValue>,
}

impl Event {
    /// Revision at which this event happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Options of a [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// List the state as of this revision; `None` lists the current state. A revision older than
    /// the compacted revision answers [`StoreError::Expired`]; one newer than the current
    /// revision answers [`StoreError::FutureRevision`].
    pub revision: Option<Revision>,
    /// Return at most this many items (`None`: all).
    pub limit: Option<usize>,
    /// Start strictly after this key (for `continue` tokens).
    pub start_after: Option<String>,
    /// Only say whether more items follow (`remaining` is then 0 or 1), instead of counting
    /// them: cheaper for callers that page through everything.
    pub skip_count: bool,
}

/// Result of a [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// Items in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list reflects (the current revision unless one was requested).
    pub revision: Revision,
    /// Number of further items after the last returned one (0 when the list is complete; with
    /// [`ListOptions::skip_count`], 1 when any follow).
    pub remaining: u64,
}

/// Size figures for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    /// Current revision.
    pub revision: Revision,
    /// Compacted revision (watches/lists older than this are expired).
    pub compact_revision: Revision,
    /// Number of live keys.
    pub keys: u64,
    /// Size of the database on disk in bytes (including the WAL).
    pub size_bytes: u64,
}

/// A watch: a stream of event batches in revision order. A live batch holds the events of one
/// commit that match the watched prefix; history replayed from the log arrives one event per
/// batch (the log does not record which writes were committed together). The stream ends with an `Err` when the watcher is cut off
/// (too slow, store shut down) — the caller restarts from the last revision it saw.
pub type WatchStream = BoxStream<'static, Result<Vec<Event>, StoreError>>;

/// Errors of the datastore.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Create of a key that exists.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// Update/delete of a key that does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// Update/delete whose expected revision did not match; carries the current value.
    #[error("key {key} was modified: expected revision {expected}, found {}", current.mod_revision)]
    Conflict {
        /// The key.
        key: String,
        /// Revision the caller expected.
        expected: Revision,
        /// What is stored now.
        current: Box<KeyValue>,
    },
    /// The requested revision has been compacted away.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Expired {
        /// Revision asked for.
        requested: Revision,
        /// Compacted revision.
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        /// Revision asked for.
        requested: Revision,
        /// Current revision.
        current: Revision,
    },
    /// A watcher fell too far behind and was cut off.
    #[error("watcher fell behind and was closed")]
    WatcherLagged,
    /// The store is shutting down or its writer has stopped.
    #[error("datastore is closed")]
    Closed,
    /// A write transaction failed as a whole (nothing of it was applied).
    #[error("datastore write failed: {0}")]
    WriteFailed(String),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// File-system failure (creating the data directory, backups).
    #[error("datastore i/o on {path}: {source}")]
    Io {
        /// Path involved.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of the datastore.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A revisioned key–value store with watch. Keys are UTF-8 strings; prefixes select by plain
/// string prefix (callers end prefixes with `/`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Current value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, in key order.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Number of keys starting with `prefix` (current state).
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Create `key`; fails with [`StoreError::AlreadyExists`]. Returns the stored key.
    /// Durable when it returns.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replace `key` if its `mod_revision` equals `expected` ([`StoreError::Conflict`] otherwise,
    /// [`StoreError::NotFound`] if absent). Returns the stored key.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Delete `key`, if `expected` is given only when its `mod_revision` matches. Returns the
    /// deleted value with `mod_revision` set to the delete's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Events for keys under `prefix` with revision > `after`. `after` older than the compacted
    /// revision answers [`StoreError::Expired`].
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The current revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// Drop history at and below `revision` (bounded by the current revision).
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Size figures.
    async fn stats(&self) -> Result<StoreStats>;
}
