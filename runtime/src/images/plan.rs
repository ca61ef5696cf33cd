//! From a catalogued archive to what must be stored: blobs (children before parents, with
//! containerd's garbage-collection labels) and image records.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::archive::{ArchiveFormat, Catalog};
use super::backend::ImageRecord;
use super::media::{self, Compression};
use super::reference::normalize_reference;
use super::{CRI_MANAGED_LABEL, ImageError, Result};

const GC_CONFIG: &str = "containerd.io/gc.ref.content.config";
const GC_LAYER: &str = "containerd.io/gc.ref.content.l";
const GC_MANIFEST: &str = "containerd.io/gc.ref.content.m";

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
    fn add_blob(&mut self, blob: PlannedBlob) {
        match self.blobs.iter_mut().find(|b| b.digest == blob.digest) {
            Some(existing) => existing.labels.extend(blob.labels),
            None => self.blobs.push(blob),
        }
    }

    fn add_image(&mut self, name: String, media_type: &str, digest: &str, size: u64) {
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

struct Ctx<'a> {
    catalog: &'a Catalog,
    label: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, reason: impl Into<String>) -> ImageError {
        ImageError::InvalidArchive {
            path: self.label.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, what: &str, data: &[u8]) -> Result<T> {
        serde_json::from_slice(data).map_err(|source| ImageError::Json {
            what: what.to_string(),
            path: self.label.to_path_buf(),
            source,
        })
    }

    /// The small entry at `path`, which must be in memory.
    fn small(&self, path: &str, what: &str) -> Result<Bytes> {
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
        Some(ArchiveFormat::OciLayout) => plan_oci(&ctx),
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

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexDoc {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

fn blob_path(digest: &str) -> Option<String> {
    let (alg, hex) = digest.split_once(':')?;
    Some(format!("blobs/{alg}/{hex}"))
}

/// The image name an OCI layout gives a top-level descriptor, if any.
fn oci_image_name(desc: &Descriptor) -> Option<&str> {
    if let Some(n) = desc.annotations.get(media::ANNOTATION_IMAGE_NAME) {
        return Some(n);
    }
    // `ref.name` is often a bare tag ("latest"), which names nothing without a repository.
    desc.annotations
        .get(media::ANNOTATION_REF_NAME)
        .map(String::as_str)
        .filter(|n| n.contains('/') || n.contains(':') || n.contains('@'))
}

fn plan_oci(ctx: &Ctx) -> Result<Plan> {
    let index: IndexDoc = ctx.json("index.json", &ctx.small("index.json", "index")?)?;
    let mut plan = Plan {
        format: ArchiveFormat::OciLayout,
        blobs: Vec::new(),
        images: Vec::new(),
        unnamed: 0,
    };
    let mut visiting = HashSet::new();
    for desc in &index.manifests {
        let Some(media_type) = visit_oci(ctx, &mut plan, desc, &mut visiting, 0)? else {
            return Err(ctx.invalid(format!(
                "index.json names {} which is not in the archive",
                desc.digest
            )));
        };
        match oci_image_name(desc) {
            Some(name) => plan.add_image(
                normalize_reference(name)?,
                &media_type,
                &desc.digest,
                desc.size,
            ),
            None => plan.unnamed += 1,
        }
    }
    Ok(plan)
}

/// Plan `desc` and everything below it that the archive holds; `None` when the blob itself is
/// not in the archive (other platforms are often left out). Returns the media type.
fn visit_oci(
    ctx: &Ctx,
    plan: &mut Plan,
    desc: &Descriptor,
    visiting: &mut HashSet<String>,
    depth: usize,
) -> Result<Option<String>> {
    // `visiting` holds the digests on the path from the top: a repeat there is a loop.
    if depth > 8 || !visiting.insert(desc.digest.clone()) {
        return Err(ctx.invalid(format!(
            "descriptors nest too deep or loop at {}",
            desc.digest
        )));
    }
    let planned = visit_oci_inner(ctx, plan, desc, visiting, depth);
    visiting.remove(&desc.digest);
    planned
}

fn visit_oci_inner(
    ctx: &Ctx,
    plan: &mut Plan,
    desc: &Descriptor,
    visiting: &mut HashSet<String>,
    depth: usize,
) -> Result<Option<String>> {
    let path = blob_path(&desc.digest)
        .ok_or_else(|| ctx.invalid(format!("malformed digest {}", desc.digest)))?;
    let Some((entry_path, info)) = ctx.catalog.get(&path) else {
        return Ok(None);
    };
    if info.size != desc.size {
        return Err(ctx.invalid(format!(
            "{} has {} bytes, its descriptor says {}",
            desc.digest, info.size, desc.size
        )));
    }
    let source = match &info.data {
        Some(d) => BlobSource::Memory(d.clone()),
        None => BlobSource::Entry(entry_path.to_string()),
    };
    let mut media_type = desc.media_type.clone();
    let mut labels = BTreeMap::new();
    let sniffed: Option<serde_json::Value> = info
        .data
        .as_ref()
        .and_then(|d| serde_json::from_slice(d).ok());
    if media_type.is_empty() {
        media_type = match &sniffed {
            Some(v) if v.get("mediaType").and_then(|m| m.as_str()).is_some() => {
                v["mediaType"].as_str().unwrap_or_default().to_string()
            }
            Some(v) if v.get("manifests").is_some() => media::OCI_INDEX.to_string(),
            Some(v) if v.get("config").is_some() => media::OCI_MANIFEST.to_string(),
            _ => return Err(ctx.invalid(format!("{} has no media type", desc.digest))),
        };
    }
    if media::is_index(&media_type) {
        let data = ctx.small(&path, "image index")?;
        let doc: IndexDoc = ctx.json(&format!("image index {}", desc.digest), &data)?;
        if let Some(mt) = &doc.media_type
            && mt != &media_type
        {
            return Err(ctx.invalid(format!(
                "{} is a {mt}, its descriptor says {media_type}",
                desc.digest
            )));
        }
        for (i, child) in doc.manifests.iter().enumerate() {
            if visit_oci(ctx, plan, child, visiting, depth + 1)?.is_some() {
                labels.insert(format!("{GC_MANIFEST}.{i}"), child.digest.clone());
            }
        }
    } else if media::is_manifest(&media_type) {
        let data = ctx.small(&path, "image manifest")?;
        let doc: ManifestDoc = ctx.json(&format!("image manifest {}", desc.digest), &data)?;
        let _ = doc.media_type;
        if visit_oci(ctx, plan, &doc.config, visiting, depth + 1)?.is_some() {
            labels.insert(GC_CONFIG.to_string(), doc.config.digest.clone());
        }
        for (i, layer) in doc.layers.iter().enumerate() {
            if visit_oci(ctx, plan, layer, visiting, depth + 1)?.is_some() {
                labels.insert(format!("{GC_LAYER}.{i}"), layer.digest.clone());
            }
        }
    }
    plan.add_blob(PlannedBlob {
        digest: desc.digest.clone(),
        size: info.size,
        media_type: media_type.clone(),
        labels,
        source,
    });
    Ok(Some(media_type))
}
