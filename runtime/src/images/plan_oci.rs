//! Planning an OCI image layout: walk `index.json` down to configs and layers.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::Result;
use super::archive::ArchiveFormat;
use super::media;
use super::plan::{BlobSource, Ctx, GC_CONFIG, GC_LAYER, GC_MANIFEST, Plan, PlannedBlob};
use super::reference::normalize_reference;

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

pub(super) fn plan_oci(ctx: &Ctx) -> Result<Plan> {
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
