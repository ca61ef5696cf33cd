//! Image import with containerd-client: docker-archive and OCI-layout tarballs (`.tar`,
//! `.tar.gz`, `.tar.zst`) from the images directory, at start and when files appear; k8slite's
//! own pause image.
//!
//! How an import works ([`import_file`], [`import_bytes`]):
//! 1. the outer compression is recognised by its magic bytes (gzip, zstd, none), not by the
//!    file name;
//! 2. a first pass over the tar keeps the small entries (JSON, configs, manifests) in memory and
//!    records size, first bytes and digest of the others;
//! 3. the format is decided (OCI layout when `oci-layout` + `index.json` are present, else
//!    docker-archive with `manifest.json`) and a plan is made: for docker-archive a docker v2
//!    schema2 manifest is synthesised (OCI media types when a layer is zstd), for OCI layout the
//!    index is walked; every manifest/index blob carries containerd's
//!    `containerd.io/gc.ref.content.*` labels so the garbage collector keeps its children;
//! 4. under a containerd lease (gRPC header `containerd-lease`) blobs that containerd does not
//!    have yet are written to the content store (a second pass streams the big ones), then the
//!    image records are created or updated with the label `io.cri-containerd.image=managed`;
//!    the lease is deleted at the end (the image records now hold the content).
//!
//! Unpacking into snapshots is left to containerd: CRI (1.6) unpacks a not-yet-unpacked image
//! when the first sandbox or container is created from it (checked on containerd 1.6.20 here:
//! no snapshots after import; RunPodSandbox with the imported pause image and CreateContainer
//! with an imported busybox unpacked both and ran; `ctr images rm --sync` of another image ran
//! the GC and every imported blob stayed).
//!
//! containerd is reached through the [`ImageBackend`] trait: [`ContainerdImages`] is the real
//! one, [`MemoryBackend`] an in-memory recording fake for unit tests.

mod archive;
mod backend;
mod builder;
mod containerd;
mod dir;
mod import;
mod media;
mod memory;
mod pause;
mod plan;
mod plan_oci;
mod reference;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_dir;
mod write;

use std::path::PathBuf;

pub use archive::ArchiveFormat;
pub use backend::{BlobWrite, ImageBackend, ImageRecord, WriteOutcome};
pub use builder::ImageBuilder;
pub use containerd::{ContainerdImages, connect};
pub use dir::{ImportDir, is_image_tarball};
pub use import::{ImportSummary, import_bytes, import_file};
pub use media::{Compression, compress};
pub use memory::MemoryBackend;
pub use pause::import_pause_image;
pub use reference::normalize_reference;

/// containerd namespace that CRI reads: images must be imported there to be usable by pods.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Label CRI puts on the images it manages; imported images carry it too.
pub const CRI_MANAGED_LABEL: (&str, &str) = ("io.cri-containerd.image", "managed");

/// What failed while importing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading an image tarball (or a file in the images directory) failed.
    #[error("reading {path}: {source}")]
    Io {
        /// File (or in-memory archive label).
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The tarball is not a docker-archive or OCI layout, or its content is inconsistent.
    #[error("invalid image archive {path}: {reason}")]
    InvalidArchive {
        /// File (or in-memory archive label).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A JSON document in the archive could not be parsed.
    #[error("invalid {what} in {path}: {source}")]
    Json {
        /// Which document (`manifest.json`, `index.json`, an image config, ...).
        what: String,
        /// File (or in-memory archive label).
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// An image name is not a valid reference.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The name as found.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// Connecting to containerd failed.
    #[error("connecting to containerd at {socket}: {source}")]
    Connect {
        /// Socket path.
        socket: PathBuf,
        /// Cause.
        #[source]
        source: containerd_client::tonic::transport::Error,
    },
    /// Connecting to containerd took too long.
    #[error("connecting to containerd at {socket}: timed out")]
    ConnectTimeout {
        /// Socket path.
        socket: PathBuf,
    },
    /// A containerd call failed.
    #[error("containerd {call}: {source}")]
    Containerd {
        /// The gRPC call, e.g. `content.Write sha256:…`.
        call: String,
        /// Cause.
        #[source]
        source: Box<containerd_client::tonic::Status>,
    },
    /// Building an image in memory failed.
    #[error("building image: {0}")]
    Build(String),
    /// The background reader of an archive stopped unexpectedly.
    #[error("archive reader for {path} failed: {reason}")]
    Reader {
        /// File (or in-memory archive label).
        path: PathBuf,
        /// What happened.
        reason: String,
    },
}

impl ImageError {
    pub(crate) fn containerd(
        call: impl Into<String>,
        status: containerd_client::tonic::Status,
    ) -> Self {
        ImageError::Containerd {
            call: call.into(),
            source: Box::new(status),
        }
    }
}

/// Result of image operations.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
