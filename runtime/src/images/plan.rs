//! From a catalogued archive to what must be stored: blobs (children before parents, with
//! containerd's garbage-collection labels) and image records.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::archive::{ArchiveFormat, Catalog};
use super::backend::ImageRecord;
use super::media::{self, Compression};
use super::reference::normalize_reference;
use super::{CRI_MANAGED_LABEL, ImageError, Result};

pub(super) const GC_CONFIG: &str = "containerd.io/gc.ref.content.config";
pub(super) const GC_LAYER: &str = "containerd.io/gc.ref.content.l";
pub(super) const GC_MANIFEST: &str = "containerd.io/gc.ref.content.m";

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BlobSource {
    /// In memory (small entries, synthesised manifests).
    Memory(Bytes),
    /// A regular entry of the archive, streamed by the second pass.
    Entry(String),
}

/// One blob to store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedBlob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub labels: BTreeMap<String, String>,
    pub source: BlobSource,
}

/// Everything one archive stores.
#[derive(Debug)]
pub(crate) struct Plan {
    pub format: ArchiveFormat,
    /// Children before parents, each digest once.
    pub blobs: Vec<PlannedBlob>,
    /// Image records to create or update.
    pub images: Vec<ImageRecord>,
    /// Images in the archive that could not be named (skipped), for the log.
    pub unnamed: usize,
}

impl Plan {
    pub(super) fn add_blob(&mut self, blob: PlannedBlob) {
        match self.blobs.iter_mut().find(|b| b.digest == blob.digest) {
            Some(existing) => existing.labels.extend(blob.labels),
            None => self.blobs.push(blob),
        }
    }

    pub(super) fn add_image(&mut self, name: String, media_type: &str, digest: &str, size: u64) {
        self.images.retain(|i| i.name != name);
        let labels = BTreeMap::from([(
            CRI_MANAGED_LABEL.0.to_string(),
            CRI_MANAGED_LABEL.1.to_string(),
        )]);
        self.images.push(ImageRecord {
            name,
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            labels,
        });
    }
}

pub(super) struct Ctx<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) label: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn invalid(&self, reason: impl Into<String>) -> ImageError {
        ImageError::InvalidArchive {
            path: self.label.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(super) fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        data: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(data).map_err(|source| ImageError::Json {
            what: what.to_string(),
            path: self.label.to_path_buf(),
            source,
        })
    }

    /// The small entry at `path`, which must be in memory.
    pub(super) fn small(&self, path: &str, what: &str) -> Result<Bytes> {
        match self.catalog.get(path) {
            None => Err(self.invalid(format!("{what} {path} is missing"))),
            Some((_, info)) => info.data.clone().ok_or_else(|| {
                self.invalid(format!("{what} {path} is too large ({} bytes)", info.size))
            }),
        }
    }
}

/// Make the plan for a catalogued archive.
pub(crate) fn plan(catalog: &Catalog, label: &Path) -> Result<Plan> {
    let ctx = Ctx { catalog, label };
    match catalog.format() {
        Some(ArchiveFormat::DockerArchive) => plan_docker(&ctx),
        Some(ArchiveFormat::OciLayout) => super::plan_oci::plan_oci(&ctx),
        None => Err(ctx.invalid(
            "neither a docker archive (manifest.json) nor an OCI layout (oci-layout, index.json)",
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ConfigRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfigDoc {
    #[serde(default)]
    rootfs: ConfigRootfs,
}

fn plan_docker(ctx: &Ctx) -> Result<Plan> {
    let items: Vec<DockerItem> =
        ctx.json("manifest.json", &ctx.small("manifest.json", "manifest")?)?;
    let mut plan = Plan {
        format: ArchiveFormat::DockerArchive,
        blobs: Vec::new(),
        images: Vec::new(),
        unnamed: 0,
    };
    for item in items {
        let config = ctx.small(&item.config, "image config")?;
        let doc: ImageConfigDoc = ctx.json(&format!("image config {}", item.config), &config)?;
        if !doc.rootfs.diff_ids.is_empty() && doc.rootfs.diff_ids.len() != item.layers.len() {
            return Err(ctx.invalid(format!(
                "image config {} lists {} layers, manifest.json {}",
                item.config,
                doc.rootfs.diff_ids.len(),
                item.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (i, layer_path) in item.layers.iter().enumerate() {
            let (path, info) = ctx
                .catalog
                .get(layer_path)
                .ok_or_else(|| ctx.invalid(format!("layer {layer_path} is missing")))?;
            let digest = info
                .digest
                .clone()
                .ok_or_else(|| ctx.invalid(format!("layer {layer_path} has no digest")))?;
            let compression = Compression::detect(&info.head);
            if compression == Compression::None
                && let Some(diff_id) = doc.rootfs.diff_ids.get(i)
                && *diff_id != digest
            {
                return Err(ctx.invalid(format!(
                    "layer {layer_path} has digest {digest}, the config says {diff_id}"
                )));
            }
            let source = match &info.data {
                Some(d) => BlobSource::Memory(d.clone()),
                None => BlobSource::Entry(path.to_string()),
            };
            layers.push((digest, info.size, compression, source));
        }
        // Docker has no zstd layer media type: such images get OCI media types throughout.
        let oci = layers.iter().any(|(_, _, c, _)| *c == Compression::Zstd);
        let (manifest_type, config_type) = if oci {
            (media::OCI_MANIFEST, media::OCI_CONFIG)
        } else {
            (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
        };
        let config_digest = media::sha256_digest(&config);
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|(d, size, c, _)| json!({"mediaType": c.layer_media_type(oci), "size": size, "digest": d}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "size": config.len(), "digest": config_digest},
            "layers": layer_descs,
        });
        let manifest =
            Bytes::from(serde_json::to_vec(&manifest).map_err(|e| ctx.invalid(e.to_string()))?);
        let manifest_digest = media::sha256_digest(&manifest);
        let mut labels = BTreeMap::from([(GC_CONFIG.to_string(), config_digest.clone())]);
        for (i, (digest, size, c, source)) in layers.into_iter().enumerate() {
            labels.insert(format!("{GC_LAYER}.{i}"), digest.clone());
            let media_type = c.layer_media_type(oci).to_string();
            plan.add_blob(PlannedBlob {
                digest,
                size,
                media_type,
                labels: BTreeMap::new(),
                source,
            });
        }
        plan.add_blob(PlannedBlob {
            digest: config_digest,
            size: config.len() as u64,
            media_type: config_type.to_string(),
            labels: BTreeMap::new(),
            source: BlobSource::Memory(config),
        });
        let manifest_size = manifest.len() as u64;
        plan.add_blob(PlannedBlob {
            digest: manifest_digest.clone(),
            size: manifest_size,
            media_type: manifest_type.to_string(),
            labels,
            source: BlobSource::Memory(manifest),
        });
        let tags = item.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            plan.unnamed += 1;
        }
        for tag in tags {
            plan.add_image(
                normalize_reference(&tag)?,
                manifest_type,
                &manifest_digest,
                manifest_size,
            );
        }
    }
    Ok(plan)
}
