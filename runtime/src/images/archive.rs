//! Reading image tarballs: the outer compression by magic bytes, a first pass that catalogues the
//! entries (small ones kept in memory), and a second pass that streams chosen entries out.
//! Both passes are blocking code (run them on a blocking thread).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::media::Compression;
use super::{ImageError, Result};

/// Entries up to this size are kept in memory by the first pass (configs, manifests, small layers).
const MEMORY_ENTRY_LIMIT: u64 = 4 << 20;
/// Upper bound for everything kept in memory by the first pass, JSON files aside.
const MEMORY_TOTAL_LIMIT: u64 = 128 << 20;
/// Chunk size for streaming blobs to containerd (its gRPC limit is 16 MiB per message).
pub(crate) const CHUNK: usize = 1 << 20;

/// Layout of an image tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`: `manifest.json` + config + layer tars.
    DockerArchive,
    /// OCI image layout: `oci-layout` + `index.json` + `blobs/<alg>/<hex>`.
    OciLayout,
}

/// Where an archive's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A file on disk.
    File(PathBuf),
    /// An archive built in memory, with a label for logs and errors.
    Memory { label: PathBuf, bytes: Bytes },
}

trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

impl Source {
    /// Path (or label) for messages.
    pub(crate) fn label(&self) -> &Path {
        match self {
            Source::File(p) => p,
            Source::Memory { label, .. } => label,
        }
    }

    fn io_err(&self, source: io::Error) -> ImageError {
        ImageError::Io {
            path: self.label().to_path_buf(),
            source,
        }
    }

    fn raw(&self) -> io::Result<Box<dyn ReadSeek>> {
        Ok(match self {
            Source::File(p) => Box::new(File::open(p)?),
            Source::Memory { bytes, .. } => Box::new(Cursor::new(bytes.clone())),
        })
    }

    /// The outer compression of the archive.
    pub(crate) fn compression(&self) -> Result<Compression> {
        let mut r = self.raw().map_err(|e| self.io_err(e))?;
        let mut head = [0u8; 4];
        let n = read_up_to(&mut r, &mut head).map_err(|e| self.io_err(e))?;
        Ok(Compression::detect(&head[..n]))
    }

    /// Visit every tar entry in order. Plain tars are read with seeking, so skipped entry data
    /// is not read at all.
    fn visit(&self, f: &mut dyn FnMut(&mut dyn EntryLike) -> Result<()>) -> Result<()> {
        let compression = self.compression()?;
        let mut raw = self.raw().map_err(|e| self.io_err(e))?;
        raw.seek(SeekFrom::Start(0)).map_err(|e| self.io_err(e))?;
        if compression == Compression::None {
            let mut archive = tar::Archive::new(raw);
            let entries = archive.entries_with_seek().map_err(|e| self.io_err(e))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| self.io_err(e))?;
                f(&mut entry)?;
            }
        } else {
            let reader = compression.reader(raw).map_err(|e| self.io_err(e))?;
            let mut archive = tar::Archive::new(reader);
            let entries = archive.entries().map_err(|e| self.io_err(e))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| self.io_err(e))?;
                f(&mut entry)?;
            }
        }
        Ok(())
    }
}

/// The parts of `tar::Entry` the passes use, object-safe over the reader type.
trait EntryLike: Read {
    fn path_string(&self) -> io::Result<String>;
    fn kind(&self) -> tar::EntryType;
    fn size(&self) -> u64;
    fn link(&self) -> io::Result<Option<String>>;
}

impl<R: Read> EntryLike for tar::Entry<'_, R> {
    fn path_string(&self) -> io::Result<String> {
        Ok(self.path()?.to_string_lossy().into_owned())
    }
    fn kind(&self) -> tar::EntryType {
        self.header().entry_type()
    }
    fn size(&self) -> u64 {
        self.header().size().unwrap_or(0)
    }
    fn link(&self) -> io::Result<Option<String>> {
        Ok(self.link_name()?.map(|p| p.to_string_lossy().into_owned()))
    }
}

/// One regular file (or link) of the archive, as seen by the first pass.
#[derive(Debug, Clone)]
pub(crate) struct EntryInfo {
    /// Size in bytes.
    pub size: u64,
    /// First bytes (compression magic).
    pub head: Vec<u8>,
    /// Whole content, when small enough.
    pub data: Option<Bytes>,
    /// `sha256:<hex>`, computed while reading, or taken from a `blobs/<alg>/<hex>` path.
    pub digest: Option<String>,
    /// Link target (already resolved to an archive path) for symlinks and hard links.
    pub link: Option<String>,
}

/// Every entry of an archive by normalised path.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub entries: BTreeMap<String, EntryInfo>,
}

/// `./a/b` and `a/b/` → `a/b`; `..` components are resolved (never above the root).
pub(crate) fn normalize_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// The digest named by an OCI blob path `blobs/<alg>/<hex>`.
pub(crate) fn digest_from_blob_path(path: &str) -> Option<String> {
    let mut it = path.split('/');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("blobs"), Some(alg), Some(hex), None)
            if !alg.is_empty() && !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Some(format!("{alg}:{hex}"))
        }
        _ => None,
    }
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Catalog {
    /// First pass over `source`.
    pub(crate) fn scan(source: &Source) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        let mut in_memory: u64 = 0;
        source.visit(&mut |entry| {
            let io_err = |e| source.io_err(e);
            let path = normalize_path(&entry.path_string().map_err(io_err)?);
            if path.is_empty() {
                return Ok(());
            }
            let kind = entry.kind();
            if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link().map_err(io_err)? else {
                    return Ok(());
                };
                // Symlinks are relative to the entry's directory, hard links to the root.
                let resolved = if kind.is_symlink() && !target.starts_with('/') {
                    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    normalize_path(&format!("{dir}/{target}"))
                } else {
                    normalize_path(&target)
                };
                let info = EntryInfo {
                    size: 0,
                    head: Vec::new(),
                    data: None,
                    digest: None,
                    link: Some(resolved),
                };
                catalog.entries.insert(path, info);
                return Ok(());
            }
            if !kind.is_file() {
                return Ok(());
            }
            let size = entry.size();
            let is_json = path.ends_with(".json") || path == "oci-layout" || path == "repositories";
            let keep =
                size <= MEMORY_ENTRY_LIMIT && (is_json || in_memory + size <= MEMORY_TOTAL_LIMIT);
            let info = if keep {
                let mut data = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut data).map_err(io_err)?;
                if !is_json {
                    in_memory += size;
                }
                let head = data.iter().take(8).copied().collect();
                let digest = Some(super::media::sha256_digest(&data));
                EntryInfo {
                    size: data.len() as u64,
                    head,
                    data: Some(Bytes::from(data)),
                    digest,
                    link: None,
                }
            } else {
                let mut head = [0u8; 8];
                let n = read_up_to(entry, &mut head).map_err(io_err)?;
                let digest = match digest_from_blob_path(&path) {
                    Some(d) => Some(d),
                    None => {
                        // Not named by its digest (docker's `<id>/layer.tar`): hash it now.
                        let mut hasher = Sha256::new();
                        hasher.update(&head[..n]);
                        let mut buf = vec![0u8; 256 << 10];
                        loop {
                            let k = entry.read(&mut buf).map_err(io_err)?;
                            if k == 0 {
                                break;
                            }
                            hasher.update(&buf[..k]);
                        }
                        Some(format!("sha256:{}", hex::encode(hasher.finalize())))
                    }
                };
                EntryInfo {
                    size,
                    head: head[..n].to_vec(),
                    data: None,
                    digest,
                    link: None,
                }
            };
            catalog.entries.insert(path, info);
            Ok(())
        })?;
        Ok(catalog)
    }

    /// The entry at `path`, following links; returns the path of the regular entry too.
    pub(crate) fn get(&self, path: &str) -> Option<(&str, &EntryInfo)> {
        let mut p = normalize_path(path);
        for _ in 0..16 {
            let (key, info) = self.entries.get_key_value(&p)?;
            match &info.link {
                Some(target) => p = target.clone(),
                None => return Some((key.as_str(), info)),
            }
        }
        None
    }

    /// Which layout the archive has.
    pub(crate) fn format(&self) -> Option<ArchiveFormat> {
        if self.get("oci-layout").is_some() && self.get("index.json").is_some() {
            Some(ArchiveFormat::OciLayout)
        } else if self.get("manifest.json").is_some() {
            Some(ArchiveFormat::DockerArchive)
        } else {
            None
        }
    }
}

/// One entry streamed by the second pass: its path, then its data in chunks through `chunks`.
pub(crate) type StreamedEntry = (String, mpsc::Receiver<io::Result<Vec<u8>>>);

/// Second pass: send every entry in `wanted` (regular-entry paths) through `out`, in archive
/// order. Stops early when the receiver is gone. Returns the paths it sent.
pub(crate) fn stream_entries(
    source: &Source,
    wanted: &HashSet<String>,
    out: &mpsc::Sender<StreamedEntry>,
) -> Result<HashSet<String>> {
    let mut sent = HashSet::new();
    let gone = || ImageError::Reader {
        path: source.label().to_path_buf(),
        reason: "importer stopped".into(),
    };
    source.visit(&mut |entry| {
        let path = normalize_path(&entry.path_string().map_err(|e| source.io_err(e))?);
        if !entry.kind().is_file() || !wanted.contains(&path) || sent.contains(&path) {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel(4);
        out.blocking_send((path.clone(), rx)).map_err(|_| gone())?;
        sent.insert(path);
        loop {
            let mut buf = vec![0u8; CHUNK];
            match read_up_to(entry, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf)).is_err() {
                        // The writer does not want the rest (blob already present, or it failed).
                        break;
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    let _ = tx.blocking_send(Err(e));
                    return Err(ImageError::Reader {
                        path: source.label().to_path_buf(),
                        reason: msg,
                    });
                }
            }
        }
        Ok(())
    })?;
    Ok(sent)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_blob_digests() {
        assert_eq!(normalize_path("./a//b/"), "a/b");
        assert_eq!(normalize_path("a/b/../../../c"), "c");
        assert_eq!(
            digest_from_blob_path("blobs/sha256/abcd"),
            Some("sha256:abcd".into())
        );
        assert_eq!(digest_from_blob_path("blobs/sha256/xyz"), None);
        assert_eq!(digest_from_blob_path("blobs/sha256/ab/cd"), None);
    }
}
