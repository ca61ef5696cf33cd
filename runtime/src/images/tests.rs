//! Import pipeline against the in-memory backend: formats, compression variants, manifest
//! synthesis, GC labels, idempotence.

use serde_json::Value;

use super::media::{self, Compression, compress};
use super::*;

fn busybox_like() -> ImageBuilder {
    ImageBuilder::new()
        .tag("busybox:latest")
        .tag("k8slite.local/busybox:1")
        .file("bin/busybox", b"\x7fELF not really".to_vec(), 0o755)
        .symlink("bin/sh", "busybox")
        .dir("tmp", 0o1777)
        .entrypoint(["/bin/sh"])
        .cmd(["-c", "echo ok"])
        .env("A", "b")
        .workdir("/tmp")
}

fn json_of(b: &MemoryBackend, digest: &str) -> Value {
    serde_json::from_slice(&b.blob(digest).expect("blob").data).expect("json")
}

/// A tar from (path, bytes) pairs; a `->` in the path makes a symlink.
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        if let Some((p, target)) = path.split_once(" -> ") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            t.append_link(&mut h, p, target).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            t.append_data(&mut h, path, *data).unwrap();
        }
    }
    t.into_inner().unwrap()
}

#[tokio::test]
async fn docker_archive_gets_a_schema2_manifest_and_gc_labels() {
    let b = MemoryBackend::new();
    let archive = busybox_like().docker_archive().unwrap();
    let s = import_bytes(&b, "t.tar", archive).await.unwrap();
    assert_eq!(s.format, ArchiveFormat::DockerArchive);
    assert_eq!(
        s.images,
        vec![
            "docker.io/library/busybox:latest",
            "k8slite.local/busybox:1"
        ]
    );
    assert_eq!((s.blobs_written, s.blobs_present), (3, 0));
    let images = b.images();
    let img = &images["docker.io/library/busybox:latest"];
    assert_eq!(img.media_type, media::DOCKER_MANIFEST);
    assert_eq!(
        img.labels
            .get("io.cri-containerd.image")
            .map(String::as_str),
        Some("managed")
    );
    assert_eq!(images["k8slite.local/busybox:1"].digest, img.digest);
    let manifest = json_of(&b, &img.digest);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], media::DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], media::DOCKER_CONFIG);
    assert_eq!(manifest["layers"][0]["mediaType"], media::DOCKER_LAYER);
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let labels = b.blob(&img.digest).unwrap().labels;
    assert_eq!(labels["containerd.io/gc.ref.content.config"], config_digest);
    assert_eq!(labels["containerd.io/gc.ref.content.l.0"], layer_digest);
    let config = json_of(&b, config_digest);
    assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest);
    assert_eq!(config["config"]["Entrypoint"][0], "/bin/sh");
    assert_eq!(config["config"]["WorkingDir"], "/tmp");
    assert_eq!(config["os"], "linux");
    assert!(b.open_leases().is_empty(), "lease released");
}

#[tokio::test]
async fn compression_variants_give_the_same_content() {
    let plain = busybox_like().docker_archive().unwrap();
    let mut digests = Vec::new();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let b = MemoryBackend::new();
        let s = import_bytes(&b, "t", compress(&plain, c).unwrap())
            .await
            .unwrap();
        assert_eq!(s.blobs_written, 3, "{c:?}");
        digests.push(
            b.images()["docker.io/library/busybox:latest"]
                .digest
                .clone(),
        );
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

#[tokio::test]
async fn reimport_writes_nothing() {
    let b = MemoryBackend::new();
    let archive = busybox_like().docker_archive().unwrap();
    import_bytes(&b, "a", archive.clone()).await.unwrap();
    let writes = b.writes();
    let s = import_bytes(&b, "a", archive).await.unwrap();
    assert_eq!(b.writes(), writes);
    assert_eq!(
        (s.blobs_written, s.blobs_present, s.images_unchanged),
        (0, 3, 2)
    );
}

#[tokio::test]
async fn oci_layout_with_gzip_layer_in_zstd_tarball() {
    let b = MemoryBackend::new();
    let oci = busybox_like().oci_archive(Compression::Gzip).unwrap();
    let s = import_bytes(&b, "t.tar.zst", compress(&oci, Compression::Zstd).unwrap())
        .await
        .unwrap();
    assert_eq!(s.format, ArchiveFormat::OciLayout);
    assert_eq!(
        s.images,
        vec![
            "docker.io/library/busybox:latest",
            "k8slite.local/busybox:1"
        ]
    );
    let img = &b.images()["docker.io/library/busybox:latest"];
    assert_eq!(img.media_type, media::OCI_MANIFEST);
    let manifest = json_of(&b, &img.digest);
    assert_eq!(manifest["layers"][0]["mediaType"], media::OCI_LAYER_GZIP);
    let labels = b.blob(&img.digest).unwrap().labels;
    assert_eq!(
        labels["containerd.io/gc.ref.content.l.0"],
        manifest["layers"][0]["digest"].as_str().unwrap()
    );
    assert_eq!(b.blob_count(), 3);
}

#[tokio::test]
async fn large_layers_are_streamed_in_a_second_pass() {
    // 6 MiB of poorly compressible data: above the in-memory limit.
    let mut big = Vec::with_capacity(6 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while big.len() < 6 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    let builder = ImageBuilder::new().tag("big:1").file("data", big, 0o644);
    for (oci, c) in [
        (false, Compression::None),
        (false, Compression::Gzip),
        (true, Compression::Zstd),
    ] {
        let b = MemoryBackend::new();
        let archive = if oci {
            builder.oci_archive(Compression::None).unwrap()
        } else {
            builder.docker_archive().unwrap()
        };
        let s = import_bytes(&b, "big", compress(&archive, c).unwrap())
            .await
            .unwrap();
        assert_eq!(s.blobs_written, 3, "oci={oci} {c:?}");
        assert!(s.bytes_written > 6 << 20);
    }
}

#[tokio::test]
async fn zstd_layers_in_a_docker_archive_switch_to_oci_media_types() {
    let layer = tar_of(&[("hello", b"hi")]);
    let diff_id = media::sha256_digest(&layer);
    let zlayer = compress(&layer, Compression::Zstd).unwrap();
    let manifest =
        br#"[{"Config":"c.json","RepoTags":["z:1"],"Layers":["l/layer.tar","dup/layer.tar"]}]"#;
    let config2 = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id, diff_id]}
    }))
    .unwrap();
    let archive = tar_of(&[
        ("c.json", &config2),
        ("l/layer.tar", &zlayer),
        ("dup/layer.tar -> ../l/layer.tar", b""),
        ("manifest.json", manifest),
    ]);
    let b = MemoryBackend::new();
    import_bytes(&b, "z", archive).await.unwrap();
    let img = &b.images()["docker.io/library/z:1"];
    assert_eq!(img.media_type, media::OCI_MANIFEST);
    let m = json_of(&b, &img.digest);
    assert_eq!(m["config"]["mediaType"], media::OCI_CONFIG);
    assert_eq!(m["layers"][0]["mediaType"], media::OCI_LAYER_ZSTD);
    assert_eq!(
        m["layers"][1]["digest"], m["layers"][0]["digest"],
        "symlinked layer resolved"
    );
}

#[tokio::test]
async fn inconsistent_or_unknown_archives_fail_clearly() {
    let b = MemoryBackend::new();
    let err = import_bytes(&b, "junk", tar_of(&[("hello.txt", b"hi")]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("neither a docker archive"),
        "{err}"
    );

    let layer = tar_of(&[("a", b"1")]);
    let config = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
    let archive = tar_of(&[
        ("c.json", config),
        ("l.tar", &layer),
        (
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l.tar"]}]"#,
        ),
    ]);
    let err = import_bytes(&b, "bad-diffid", archive).await.unwrap_err();
    assert!(err.to_string().contains("the config says"), "{err}");

    let archive = tar_of(&[(
        "manifest.json",
        br#"[{"Config":"missing.json","RepoTags":["x:1"],"Layers":[]}]"#,
    )]);
    let err = import_bytes(&b, "missing", archive).await.unwrap_err();
    assert!(err.to_string().contains("missing.json is missing"), "{err}");

    let err = import_bytes(&b, "nojson", tar_of(&[("manifest.json", b"{nope")]))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Json { .. }), "{err}");

    // An OCI layout naming its image only by a bare tag cannot be named.
    let oci = ImageBuilder::new()
        .tag("x:1")
        .file("f", b"1".to_vec(), 0o644)
        .oci_archive(Compression::None)
        .unwrap();
    let mut t = tar::Archive::new(&oci[..]);
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for e in t.entries().unwrap() {
        let mut e = e.unwrap();
        let mut d = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut d).unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p == "index.json" {
            let mut v: Value = serde_json::from_slice(&d).unwrap();
            v["manifests"][0]["annotations"] =
                serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
            d = serde_json::to_vec(&v).unwrap();
        }
        if !p.ends_with('/') {
            entries.push((p, d));
        }
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let err = import_bytes(&b, "bare-tag", tar_of(&refs))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no image in it has a name"),
        "{err}"
    );
    assert!(b.images().is_empty());
}

#[tokio::test]
async fn pause_image_is_deterministic() {
    let b = MemoryBackend::new();
    let s = import_pause_image(&b, "k8slite.local/pause:3.10", b"\x7fELF pause")
        .await
        .unwrap();
    assert_eq!(s.images, vec!["k8slite.local/pause:3.10"]);
    let img = &b.images()["k8slite.local/pause:3.10"];
    let m = json_of(&b, &img.digest);
    let config = json_of(&b, m["config"]["digest"].as_str().unwrap());
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/pause"])
    );
    let layer = b
        .blob(m["layers"][0]["digest"].as_str().unwrap())
        .unwrap()
        .data;
    let mut t = tar::Archive::new(&layer[..]);
    let e = t.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.path().unwrap().to_str(), Some("pause"));
    assert_eq!(e.header().mode().unwrap(), 0o755);
    let s = import_pause_image(&b, "k8slite.local/pause:3.10", b"\x7fELF pause")
        .await
        .unwrap();
    assert_eq!((s.blobs_written, s.images_unchanged), (0, 1));
}
