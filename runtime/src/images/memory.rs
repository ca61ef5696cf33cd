//! An in-memory [`ImageBackend`]: a content store, image records and leases in maps, for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use containerd_client::tonic::Status;

use super::backend::{BlobWrite, ImageBackend, ImageRecord, WriteOutcome};
use super::media::sha256_digest;
use super::{ImageError, Result};

/// A blob in the [`MemoryBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBlob {
    /// Content.
    pub data: Vec<u8>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct State {
    blobs: BTreeMap<String, MemoryBlob>,
    images: BTreeMap<String, ImageRecord>,
    leases: BTreeMap<String, BTreeSet<String>>,
    next_lease: u64,
    writes: usize,
}

/// In-memory content store + image records + leases; verifies digests and sizes like
/// containerd and counts writes.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The blob with this digest.
    pub fn blob(&self, digest: &str) -> Option<MemoryBlob> {
        self.lock().blobs.get(digest).cloned()
    }

    /// Number of blobs stored.
    pub fn blob_count(&self) -> usize {
        self.lock().blobs.len()
    }

    /// Number of blob writes that stored something.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// All image records by name.
    pub fn images(&self) -> BTreeMap<String, ImageRecord> {
        self.lock().images.clone()
    }

    /// Ids of leases not deleted yet.
    pub fn open_leases(&self) -> Vec<String> {
        self.lock().leases.keys().cloned().collect()
    }

    /// Remove an image record (to simulate a wiped containerd).
    pub fn remove_image(&self, name: &str) {
        self.lock().images.remove(name);
    }
}

fn status(call: &str, s: Status) -> ImageError {
    ImageError::containerd(call, s)
}

#[async_trait]
impl ImageBackend for MemoryBackend {
    async fn lease_create(&self) -> Result<String> {
        let mut st = self.lock();
        st.next_lease += 1;
        let id = format!("lease-{}", st.next_lease);
        st.leases.insert(id.clone(), BTreeSet::new());
        Ok(id)
    }

    async fn lease_delete(&self, lease: &str) -> Result<()> {
        self.lock().leases.remove(lease);
        Ok(())
    }

    async fn lease_add_content(&self, lease: &str, digest: &str) -> Result<()> {
        let mut st = self.lock();
        match st.leases.get_mut(lease) {
            Some(l) => {
                l.insert(digest.to_string());
                Ok(())
            }
            None => Err(status(
                "leases.AddResource",
                Status::not_found(lease.to_string()),
            )),
        }
    }

    async fn content_size(&self, digest: &str) -> Result<Option<u64>> {
        Ok(self.lock().blobs.get(digest).map(|b| b.data.len() as u64))
    }

    async fn content_set_labels(
        &self,
        digest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut st = self.lock();
        match st.blobs.get_mut(digest) {
            Some(b) => {
                b.labels.extend(labels.clone());
                Ok(())
            }
            None => Err(status(
                "content.Update",
                Status::not_found(digest.to_string()),
            )),
        }
    }

    async fn content_write(&self, lease: &str, mut blob: BlobWrite) -> Result<WriteOutcome> {
        if !self.lock().leases.contains_key(lease) {
            return Err(status(
                "content.Write",
                Status::not_found(format!("lease {lease}")),
            ));
        }
        if self.lock().blobs.contains_key(&blob.digest) {
            return Ok(WriteOutcome::AlreadyPresent);
        }
        let mut data = Vec::new();
        while let Some(chunk) = blob.chunks.recv().await {
            match chunk {
                Ok(c) => data.extend_from_slice(&c),
                Err(e) => return Err(status("content.Write", Status::data_loss(e.to_string()))),
            }
        }
        let call = format!("content.Write {}", blob.digest);
        if data.len() as u64 != blob.size {
            let msg = format!(
                "unexpected commit size {}, expected {}",
                data.len(),
                blob.size
            );
            return Err(status(&call, Status::failed_precondition(msg)));
        }
        let actual = sha256_digest(&data);
        if actual != blob.digest {
            return Err(status(
                &call,
                Status::failed_precondition(format!("unexpected commit digest {actual}")),
            ));
        }
        let mut st = self.lock();
        st.writes += 1;
        st.blobs.insert(
            blob.digest.clone(),
            MemoryBlob {
                data,
                labels: blob.labels,
            },
        );
        if let Some(l) = st.leases.get_mut(lease) {
            l.insert(blob.digest);
        }
        Ok(WriteOutcome::Written)
    }

    async fn image_get(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self.lock().images.get(name).cloned())
    }

    async fn image_put(&self, _lease: &str, image: &ImageRecord) -> Result<()> {
        let mut st = self.lock();
        if !st.blobs.contains_key(&image.digest) {
            return Err(status(
                "images.Create",
                Status::not_found(format!("content {}", image.digest)),
            ));
        }
        let entry = st
            .images
            .entry(image.name.clone())
            .or_insert_with(|| image.clone());
        entry.media_type = image.media_type.clone();
        entry.digest = image.digest.clone();
        entry.size = image.size;
        entry.labels.extend(image.labels.clone());
        Ok(())
    }
}
