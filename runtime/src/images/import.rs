//! One archive into containerd: catalogue, plan, store blobs under a lease, name the images.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::archive::{self, ArchiveFormat, CHUNK, Catalog, Source};
use super::backend::{BlobWrite, ImageBackend, WriteOutcome};
use super::plan::{BlobSource, Plan, PlannedBlob, plan};
use super::{ImageError, Result};

/// What one import did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    /// The file (or the label of an in-memory archive).
    pub source: PathBuf,
    /// Its layout.
    pub format: ArchiveFormat,
    /// Image names created or updated (normalised), in archive order.
    pub images: Vec<String>,
    /// Image records that already pointed at the same content (left alone).
    pub images_unchanged: usize,
    /// Blobs written to the content store.
    pub blobs_written: usize,
    /// Blobs the store already had.
    pub blobs_present: usize,
    /// Bytes written to the content store.
    pub bytes_written: u64,
    /// Wall-clock time of the whole import.
    pub elapsed: Duration,
}

/// Import an image tarball (docker-archive or OCI layout; plain, gzip or zstd) into the
/// backend's namespace.
pub async fn import_file(
    backend: &dyn ImageBackend,
    path: impl AsRef<Path>,
) -> Result<ImportSummary> {
    import_source(backend, Source::File(path.as_ref().to_path_buf())).await
}

/// Import an image tarball held in memory; `label` names it in logs and errors.
pub async fn import_bytes(
    backend: &dyn ImageBackend,
    label: &str,
    bytes: impl Into<Bytes>,
) -> Result<ImportSummary> {
    import_source(
        backend,
        Source::Memory {
            label: PathBuf::from(label),
            bytes: bytes.into(),
        },
    )
    .await
}

fn reader_failed(source: &Source, e: tokio::task::JoinError) -> ImageError {
    ImageError::Reader {
        path: source.label().to_path_buf(),
        reason: e.to_string(),
    }
}

async fn import_source(backend: &dyn ImageBackend, source: Source) -> Result<ImportSummary> {
    let started = Instant::now();
    let label = source.label().to_path_buf();
    tracing::info!(file = %label.display(), "importing image archive");
    let scan_source = source.clone();
    let plan = tokio::task::spawn_blocking(move || {
        let catalog = Catalog::scan(&scan_source)?;
        plan(&catalog, scan_source.label())
    })
    .await
    .map_err(|e| reader_failed(&source, e))??;
    if plan.images.is_empty() {
        return Err(ImageError::InvalidArchive {
            path: label,
            reason: "no image in it has a name (docker RepoTags, or in an OCI layout an io.containerd.image.name \
                     annotation or a full org.opencontainers.image.ref.name)"
                .into(),
        });
    }
    if plan.unnamed > 0 {
        tracing::warn!(file = %label.display(), count = plan.unnamed, "images without a name in the archive are skipped");
    }
    let lease = backend.lease_create().await?;
    let stored = store(backend, &lease, &source, &plan).await;
    let released = backend.lease_delete(&lease).await;
    let mut summary = stored?;
    released?;
    summary.elapsed = started.elapsed();
    tracing::info!(
        file = %label.display(),
        format = ?summary.format,
        images = ?summary.images,
        unchanged = summary.images_unchanged,
        blobs_written = summary.blobs_written,
        blobs_present = summary.blobs_present,
        bytes = summary.bytes_written,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "imported image archive"
    );
    Ok(summary)
}

async fn store(
    backend: &dyn ImageBackend,
    lease: &str,
    source: &Source,
    plan: &Plan,
) -> Result<ImportSummary> {
    let mut summary = ImportSummary {
        source: source.label().to_path_buf(),
        format: plan.format,
        images: Vec::new(),
        images_unchanged: 0,
        blobs_written: 0,
        blobs_present: 0,
        bytes_written: 0,
        elapsed: Duration::ZERO,
    };
    let mut missing: Vec<&PlannedBlob> = Vec::new();
    for blob in &plan.blobs {
        match backend.content_size(&blob.digest).await? {
            Some(size) if size == blob.size => {
                backend.lease_add_content(lease, &blob.digest).await?;
                backend
                    .content_set_labels(&blob.digest, &blob.labels)
                    .await?;
                summary.blobs_present += 1;
            }
            _ => missing.push(blob),
        }
    }
    // Big entries first, in archive order (one more pass over the archive), then the blobs
    // held in memory in plan order (children before the manifests naming them).
    let by_path: HashMap<&str, &PlannedBlob> = missing
        .iter()
        .filter_map(|b| match &b.source {
            BlobSource::Entry(p) => Some((p.as_str(), *b)),
            BlobSource::Memory(_) => None,
        })
        .collect();
    if !by_path.is_empty() {
        stream_from_archive(backend, lease, source, &by_path, &mut summary).await?;
    }
    for blob in missing {
        if let BlobSource::Memory(data) = &blob.source {
            let (tx, rx) = mpsc::channel(4);
            let data = data.clone();
            let feeder = tokio::spawn(async move {
                for chunk in data.chunks(CHUNK) {
                    if tx.send(Ok(chunk.to_vec())).await.is_err() {
                        break;
                    }
                }
            });
            let outcome = write(backend, lease, blob, rx).await;
            feeder.abort();
            count(&mut summary, blob, outcome?);
        }
    }
    for image in &plan.images {
        let existing = backend.image_get(&image.name).await?;
        let unchanged = existing.is_some_and(|e| {
            e.digest == image.digest
                && e.media_type == image.media_type
                && image.labels.iter().all(|(k, v)| e.labels.get(k) == Some(v))
        });
        if unchanged {
            summary.images_unchanged += 1;
        } else {
            backend.image_put(lease, image).await?;
        }
        summary.images.push(image.name.clone());
    }
    Ok(summary)
}

async fn write(
    backend: &dyn ImageBackend,
    lease: &str,
    blob: &PlannedBlob,
    chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
) -> Result<WriteOutcome> {
    let write = BlobWrite {
        digest: blob.digest.clone(),
        size: blob.size,
        labels: blob.labels.clone(),
        chunks,
    };
    let outcome = backend.content_write(lease, write).await?;
    if outcome == WriteOutcome::AlreadyPresent {
        // Written by someone else meanwhile: still keep it under our lease and labelled.
        backend.lease_add_content(lease, &blob.digest).await?;
        backend
            .content_set_labels(&blob.digest, &blob.labels)
            .await?;
    }
    tracing::debug!(digest = %blob.digest, media_type = %blob.media_type, size = blob.size, ?outcome, "blob");
    Ok(outcome)
}

fn count(summary: &mut ImportSummary, blob: &PlannedBlob, outcome: WriteOutcome) {
    match outcome {
        WriteOutcome::Written => {
            summary.blobs_written += 1;
            summary.bytes_written += blob.size;
        }
        WriteOutcome::AlreadyPresent => summary.blobs_present += 1,
    }
}

async fn stream_from_archive(
    backend: &dyn ImageBackend,
    lease: &str,
    source: &Source,
    by_path: &HashMap<&str, &PlannedBlob>,
    summary: &mut ImportSummary,
) -> Result<()> {
    let wanted: HashSet<String> = by_path.keys().map(|p| p.to_string()).collect();
    let (tx, mut rx) = mpsc::channel::<archive::StreamedEntry>(1);
    let reader_source = source.clone();
    let reader_wanted = wanted.clone();
    let reader = tokio::task::spawn_blocking(move || {
        archive::stream_entries(&reader_source, &reader_wanted, &tx)
    });
    let mut done = HashSet::new();
    let mut failure = None;
    while let Some((path, chunks)) = rx.recv().await {
        let Some(blob) = by_path.get(path.as_str()) else {
            continue;
        };
        let started = Instant::now();
        match write(backend, lease, blob, chunks).await {
            Ok(outcome) => {
                count(summary, blob, outcome);
                if blob.size >= 16 << 20 {
                    tracing::info!(
                        file = %source.label().display(),
                        digest = %blob.digest,
                        bytes = blob.size,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "stored layer"
                    );
                }
                done.insert(path);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(rx);
    let read = reader.await.map_err(|e| reader_failed(source, e))?;
    if let Some(e) = failure {
        return Err(e);
    }
    read?;
    if let Some(lost) = wanted.iter().find(|p| !done.contains(*p)) {
        return Err(ImageError::InvalidArchive {
            path: source.label().to_path_buf(),
            reason: format!("entry {lost} disappeared while importing (was the file replaced?)"),
        });
    }
    Ok(())
}
