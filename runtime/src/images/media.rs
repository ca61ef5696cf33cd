//! Media types, digests and compression (recognised by magic bytes).

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub(crate) const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub(crate) const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// OCI annotation naming an image in an OCI layout's `index.json` (a tag or a full reference).
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation with the full image name (written by `ctr export`, docker ≥ 25).
pub(crate) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// Is this media type an image index / manifest list?
pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Is this media type a single-platform manifest?
pub(crate) fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Compression of a tarball or a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (`.tar.gz`, `.tgz`).
    Gzip,
    /// zstd (`.tar.zst`).
    Zstd,
}

impl Compression {
    /// Recognise the compression from the first bytes of a stream (at least 4 are needed).
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Wrap `reader` in the matching decompressor.
    pub(crate) fn reader<'a, R: Read + Send + 'a>(
        self,
        reader: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(
                reader,
            ))),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
        })
    }

    /// Media type of a layer with this compression, in the docker or the OCI family. Docker has
    /// no zstd layer type: callers switch to OCI media types when a layer is zstd.
    pub(crate) fn layer_media_type(self, oci: bool) -> &'static str {
        match (self, oci) {
            (Compression::None, false) => DOCKER_LAYER,
            (Compression::Gzip, false) => DOCKER_LAYER_GZIP,
            (Compression::None, true) => OCI_LAYER,
            (Compression::Gzip, true) => OCI_LAYER_GZIP,
            (Compression::Zstd, _) => OCI_LAYER_ZSTD,
        }
    }
}

/// Compress `data` (level: gzip default, zstd 3).
pub fn compress(data: &[u8], compression: Compression) -> io::Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data)?;
            enc.finish()
        }
        Compression::Zstd => zstd::stream::encode_all(data, 3),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn detects_compression_by_magic() {
        let data = b"hello world, hello world".repeat(10);
        assert_eq!(Compression::detect(&data), Compression::None);
        for c in [Compression::Gzip, Compression::Zstd] {
            let z = compress(&data, c).unwrap();
            assert_eq!(Compression::detect(&z), c);
            let mut back = Vec::new();
            c.reader(&z[..]).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
        assert_eq!(Compression::detect(&[]), Compression::None);
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(Compression::None.layer_media_type(false), DOCKER_LAYER);
        assert_eq!(Compression::Gzip.layer_media_type(false), DOCKER_LAYER_GZIP);
        assert_eq!(Compression::Zstd.layer_media_type(false), OCI_LAYER_ZSTD);
        assert_eq!(Compression::Gzip.layer_media_type(true), OCI_LAYER_GZIP);
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
