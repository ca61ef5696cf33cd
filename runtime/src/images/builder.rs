//! Single-layer images built in memory, written as docker-archive or OCI-layout tarballs:
//! k8slite's pause image and the test images of the e2e harness.

use std::collections::BTreeSet;

use serde_json::json;

use super::media::{self, Compression};
use super::reference::normalize_reference;
use super::{ImageError, Result};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
enum Node {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// A one-layer image: files, directories and symlinks (owned by root, mtime 0, so the same
/// input always gives the same digests) plus the runtime config.
///
/// ```
/// # use k8slite_runtime::images::ImageBuilder;
/// let tar = ImageBuilder::new()
///     .tag("k8slite.local/hello:1")
///     .file("bin/hello", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
///     .symlink("bin/hi", "hello")
///     .entrypoint(["/bin/hello"])
///     .docker_archive()
///     .unwrap();
/// assert!(!tar.is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct ImageBuilder {
    tags: Vec<String>,
    nodes: Vec<(String, Node)>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    workdir: Option<String>,
    user: Option<String>,
    architecture: Option<String>,
}

/// The OCI/Go name of this machine's architecture.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn clean(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl ImageBuilder {
    /// An empty image for this machine's architecture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a name (normalised when written: `busybox` → `docker.io/library/busybox:latest`).
    pub fn tag(mut self, name: impl Into<String>) -> Self {
        self.tags.push(name.into());
        self
    }

    /// Add a regular file (parent directories are created with mode 0755).
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.nodes.push((
            clean(path),
            Node::File {
                data: data.into(),
                mode,
            },
        ));
        self
    }

    /// Add a directory.
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.nodes.push((clean(path), Node::Dir { mode }));
        self
    }

    /// Add a symlink `path` → `target` (target taken verbatim).
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.nodes.push((
            clean(path),
            Node::Symlink {
                target: target.to_string(),
            },
        ));
        self
    }

    /// Config `Entrypoint`.
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Config `Cmd`.
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Add `NAME=value` to the config `Env` (a default `PATH` is added unless one is set).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push(format!("{name}={value}"));
        self
    }

    /// Config `WorkingDir`.
    pub fn workdir(mut self, dir: &str) -> Self {
        self.workdir = Some(dir.to_string());
        self
    }

    /// Config `User`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    /// Override the architecture (default: this machine's, e.g. `amd64`).
    pub fn architecture(mut self, arch: &str) -> Self {
        self.architecture = Some(arch.to_string());
        self
    }

    fn normalized_tags(&self) -> Result<Vec<String>> {
        self.tags.iter().map(|t| normalize_reference(t)).collect()
    }

    /// The layer: an uncompressed tar of the files, parents before children.
    pub fn layer_tar(&self) -> Result<Vec<u8>> {
        let io = |e: std::io::Error| ImageError::Build(format!("writing layer: {e}"));
        let mut builder = tar::Builder::new(Vec::new());
        let mut written: BTreeSet<String> = BTreeSet::new();
        for (path, node) in &self.nodes {
            if path.is_empty() {
                return Err(ImageError::Build("empty path in image".into()));
            }
            // Implicit parents.
            let parts: Vec<&str> = path.split('/').collect();
            for i in 1..parts.len() {
                let parent = parts[..i].join("/");
                if !self.nodes.iter().any(|(p, _)| *p == parent) && written.insert(parent.clone()) {
                    append(&mut builder, &parent, &Node::Dir { mode: 0o755 }).map_err(io)?;
                }
            }
            written.insert(path.clone());
            append(&mut builder, path, node).map_err(io)?;
        }
        builder.into_inner().map_err(io)
    }

    fn config(&self, diff_id: &str) -> serde_json::Value {
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_string());
        }
        let mut config = serde_json::Map::new();
        config.insert("Env".into(), json!(env));
        if let Some(e) = &self.entrypoint {
            config.insert("Entrypoint".into(), json!(e));
        }
        if let Some(c) = &self.cmd {
            config.insert("Cmd".into(), json!(c));
        }
        if let Some(w) = &self.workdir {
            config.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &self.user {
            config.insert("User".into(), json!(u));
        }
        json!({
            "architecture": self.architecture.as_deref().unwrap_or(host_architecture()),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "k8slite image builder"}],
        })
    }

    /// A `docker save`-style tarball: `manifest.json`, `<config-hex>.json`,
    /// `<layer-hex>/layer.tar`. Not compressed (see [`super::compress`]).
    pub fn docker_archive(&self) -> Result<Vec<u8>> {
        let layer = self.layer_tar()?;
        let diff_id = media::sha256_digest(&layer);
        let config = to_vec(&self.config(&diff_id))?;
        let config_hex = hex_of(&media::sha256_digest(&config));
        let layer_hex = hex_of(&diff_id);
        let manifest = json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": self.tags,
            "Layers": [format!("{layer_hex}/layer.tar")],
        }]);
        let mut out = tar::Builder::new(Vec::new());
        let io = |e: std::io::Error| ImageError::Build(format!("writing archive: {e}"));
        append_bytes(&mut out, &format!("{config_hex}.json"), &config).map_err(io)?;
        append(&mut out, &layer_hex, &Node::Dir { mode: 0o755 }).map_err(io)?;
        append_bytes(&mut out, &format!("{layer_hex}/layer.tar"), &layer).map_err(io)?;
        append_bytes(&mut out, "manifest.json", &to_vec(&manifest)?).map_err(io)?;
        out.into_inner().map_err(io)
    }

    /// An OCI image layout tarball (`oci-layout`, `index.json` with one entry per tag carrying
    /// `io.containerd.image.name` and `org.opencontainers.image.ref.name`, `blobs/sha256/…`),
    /// with the layer compressed as asked. Not compressed itself (see [`super::compress`]).
    pub fn oci_archive(&self, layer_compression: Compression) -> Result<Vec<u8>> {
        let layer = self.layer_tar()?;
        let diff_id = media::sha256_digest(&layer);
        let layer_blob = media::compress(&layer, layer_compression)
            .map_err(|e| ImageError::Build(format!("compressing layer: {e}")))?;
        let config = to_vec(&self.config(&diff_id))?;
        let manifest = to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "size": config.len(), "digest": media::sha256_digest(&config)},
            "layers": [{
                "mediaType": layer_compression.layer_media_type(true),
                "size": layer_blob.len(),
                "digest": media::sha256_digest(&layer_blob),
            }],
        }))?;
        let manifest_digest = media::sha256_digest(&manifest);
        let mut manifests = Vec::new();
        for name in self.normalized_tags()? {
            let tag = name
                .rsplit_once(':')
                .map(|(_, t)| t.to_string())
                .unwrap_or_default();
            manifests.push(json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {
                    media::ANNOTATION_IMAGE_NAME: name,
                    media::ANNOTATION_REF_NAME: tag,
                },
            }));
        }
        let index = to_vec(
            &json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests}),
        )?;
        let mut out = tar::Builder::new(Vec::new());
        let io = |e: std::io::Error| ImageError::Build(format!("writing archive: {e}"));
        append_bytes(&mut out, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
        for dir in ["blobs", "blobs/sha256"] {
            append(&mut out, dir, &Node::Dir { mode: 0o755 }).map_err(io)?;
        }
        for blob in [&layer_blob, &config, &manifest] {
            let path = format!("blobs/sha256/{}", hex_of(&media::sha256_digest(blob)));
            append_bytes(&mut out, &path, blob).map_err(io)?;
        }
        append_bytes(&mut out, "index.json", &index).map_err(io)?;
        out.into_inner().map_err(io)
    }
}

fn hex_of(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

fn to_vec(v: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ImageError::Build(format!("encoding JSON: {e}")))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn append_bytes(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
    b.append_data(&mut h, path, data)
}

fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, node: &Node) -> std::io::Result<()> {
    match node {
        Node::Dir { mode } => {
            let mut h = header(tar::EntryType::Directory, *mode, 0);
            b.append_data(&mut h, format!("{path}/"), std::io::empty())
        }
        Node::File { data, mode } => {
            let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
            b.append_data(&mut h, path, &data[..])
        }
        Node::Symlink { target } => {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, path, target)
        }
    }
}
