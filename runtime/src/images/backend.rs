//! The seam to containerd's content, images and leases services.

use std::collections::BTreeMap;
use std::io;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::Result;

/// One blob to store in the content store.
#[derive(Debug)]
pub struct BlobWrite {
    /// Expected digest (`sha256:<hex>`); the store verifies it.
    pub digest: String,
    /// Exact size in bytes; the store verifies it.
    pub size: u64,
    /// Labels to set on the blob (`containerd.io/gc.ref.content.*` for manifests and indexes).
    pub labels: BTreeMap<String, String>,
    /// The data in order; a closed channel ends the blob, an `Err` aborts the write.
    pub chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
}

/// What a blob write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The blob was stored.
    Written,
    /// The store already had it (nothing written).
    AlreadyPresent,
}

/// An image record: a name pointing at a manifest or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Fully qualified reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Target media type (manifest or index).
    pub media_type: String,
    /// Target digest.
    pub digest: String,
    /// Target size.
    pub size: u64,
    /// Record labels (`io.cri-containerd.image=managed`).
    pub labels: BTreeMap<String, String>,
}

/// containerd's content, images and leases services, as the importer uses them. All calls act
/// in one containerd namespace chosen by the implementation.
#[async_trait]
pub trait ImageBackend: Send + Sync {
    /// Create a lease that protects content written under it from garbage collection; it
    /// expires by itself after an hour in case the importer dies.
    async fn lease_create(&self) -> Result<String>;
    /// Delete the lease (content stays when an image references it).
    async fn lease_delete(&self, lease: &str) -> Result<()>;
    /// Put existing content under the lease too.
    async fn lease_add_content(&self, lease: &str, digest: &str) -> Result<()>;
    /// Size of the blob when the store has it.
    async fn content_size(&self, digest: &str) -> Result<Option<u64>>;
    /// Add (or overwrite) these labels on an existing blob, keeping its other labels.
    async fn content_set_labels(
        &self,
        digest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<()>;
    /// Store a blob under the lease.
    async fn content_write(&self, lease: &str, blob: BlobWrite) -> Result<WriteOutcome>;
    /// The image record with this name, if any.
    async fn image_get(&self, name: &str) -> Result<Option<ImageRecord>>;
    /// Create the image record, or point an existing one at the new target and add the labels
    /// (its other labels are kept).
    async fn image_put(&self, lease: &str, image: &ImageRecord) -> Result<()>;
}
