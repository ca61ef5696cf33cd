//! Real mounts of the storage crate (root): memory-backed emptyDir with its sizeLimit,
//! secrets on tmpfs, teardown unmounting everything, and the shared pods directory.
//! Fails (never skips) without root, naming the prerequisite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, EmptyDirVolumeSource, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec, Secret,
    SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8slite_storage::{
    HostMounter, Mounter, Options, ServiceAccountToken, SourceError, SystemClock, VolumeManager,
    VolumeSource,
};

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "storage_mounts needs root (it mounts tmpfs with mount(2)); run these tests as root"
    );
}

/// A scratch directory whose mounts are undone and content removed on drop, even on failure.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/storage-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(std::fs::canonicalize(&dir).expect("canonicalize"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut mounts) = HostMounter.mounts_under(&self.0) {
            mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
            for m in mounts {
                let _ = HostMounter.unmount(&m);
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct OneSecret;

#[async_trait]
impl VolumeSource for OneSecret {
    async fn config_map(&self, _: &str, _: &str) -> Result<Option<ConfigMap>, SourceError> {
        Ok(None)
    }
    async fn secret(&self, _: &str, name: &str) -> Result<Option<Secret>, SourceError> {
        Ok((name == "s").then(|| Secret {
            data: Some(BTreeMap::from([(
                "password".to_string(),
                ByteString(b"hunter2".to_vec()),
            )])),
            ..Default::default()
        }))
    }
    async fn service_account_token(
        &self,
        _: &Pod,
        _: &str,
        _: Option<&str>,
        _: i64,
    ) -> Result<ServiceAccountToken, SourceError> {
        Err("no tokens in this test".into())
    }
    async fn persistent_volume_claim(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<PersistentVolumeClaim>, SourceError> {
        Ok(None)
    }
    async fn persistent_volume(&self, _: &str) -> Result<Option<PersistentVolume>, SourceError> {
        Ok(None)
    }
}

fn mount_line(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let p = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(p.as_str()))
        .map(str::to_string)
}

#[tokio::test]
async fn tmpfs_volumes_are_mounted_sized_and_torn_down() {
    require_root();
    let scratch = Scratch::new("tmpfs");
    let pods_dir = scratch.0.join("agent/pods");
    let manager = VolumeManager::new(
        &pods_dir,
        Arc::new(HostMounter),
        Arc::new(SystemClock),
        Options::default(),
    );
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            uid: Some("uid-tmpfs".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            volumes: Some(vec![
                Volume {
                    name: "mem".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(Quantity("1Mi".into())),
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "sec".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("s".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    manager.setup(&pod, &OneSecret).await.expect("setup");
    manager.setup(&pod, &OneSecret).await.expect("setup again");
    let vols = pods_dir.join("uid-tmpfs/volumes");
    let mem = vols.join("kubernetes.io~empty-dir/mem");
    let sec = vols.join("kubernetes.io~secret/sec");
    let line = mount_line(&mem).expect("the memory emptyDir is a mount point");
    assert!(line.contains(" - tmpfs "), "{line}");
    assert!(
        line.contains("size=1024k"),
        "sizeLimit 1Mi reaches the mount: {line}"
    );
    let mounts = HostMounter.mounts_under(&mem).expect("mounts");
    assert_eq!(mounts, vec![mem.clone()], "mounted once, not stacked");
    assert!(
        mount_line(&sec)
            .expect("secret on tmpfs")
            .contains(" - tmpfs ")
    );
    assert_eq!(
        std::fs::read_to_string(sec.join("password")).expect("secret file"),
        "hunter2"
    );
    // the size limit holds
    let big = vec![0u8; 2 << 20];
    let err = std::fs::write(mem.join("big"), &big).expect_err("2 MiB does not fit in 1 MiB");
    assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");

    manager.teardown("uid-tmpfs").expect("teardown");
    assert!(mount_line(&mem).is_none() && mount_line(&sec).is_none());
    assert!(!pods_dir.join("uid-tmpfs").exists());
}

#[tokio::test]
async fn pods_dir_becomes_a_shared_mount() {
    require_root();
    let scratch = Scratch::new("shared");
    let pods_dir = scratch.0.join("agent/pods");
    let manager = VolumeManager::new(
        &pods_dir,
        Arc::new(HostMounter),
        Arc::new(SystemClock),
        Options::default(),
    );
    manager.share_pods_dir().expect("share pods dir");
    manager.share_pods_dir().expect("idempotent");
    let line = mount_line(&pods_dir).expect("pods dir is a mount point");
    assert!(line.contains("shared:"), "{line}");
    assert_eq!(
        HostMounter.mounts_under(&pods_dir).expect("mounts").len(),
        1
    );
}
