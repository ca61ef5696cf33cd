//! Volume manager tests over temporary directories, a fake API source and the fake mounter.

mod content;
mod lifecycle;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::*;

#[derive(Default)]
pub(crate) struct FakeSource {
    config_maps: Mutex<BTreeMap<String, ConfigMap>>,
    secrets: Mutex<BTreeMap<String, Secret>>,
    claims: Mutex<BTreeMap<String, PersistentVolumeClaim>>,
    volumes: Mutex<BTreeMap<String, PersistentVolume>>,
    token_calls: AtomicUsize,
    token_fails: std::sync::atomic::AtomicBool,
    token_requests: Mutex<Vec<(String, Option<String>, i64)>>,
    now: Option<Arc<ManualClock>>,
}

impl FakeSource {
    fn set_cm(&self, name: &str, data: &[(&str, &str)]) {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.config_maps.lock().unwrap().insert(name.into(), cm);
    }
    fn set_secret(&self, name: &str, data: &[(&str, &[u8])]) {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        self.secrets.lock().unwrap().insert(name.into(), s);
    }
}

#[async_trait]
impl VolumeSource for FakeSource {
    async fn config_map(&self, _ns: &str, name: &str) -> Result<Option<ConfigMap>, SourceError> {
        Ok(self.config_maps.lock().unwrap().get(name).cloned())
    }
    async fn secret(&self, _ns: &str, name: &str) -> Result<Option<Secret>, SourceError> {
        Ok(self.secrets.lock().unwrap().get(name).cloned())
    }
    async fn service_account_token(
        &self,
        _pod: &Pod,
        sa: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<ServiceAccountToken, SourceError> {
        if self.token_fails.load(Ordering::SeqCst) {
            return Err("apiserver unreachable".into());
        }
        let n = self.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.token_requests.lock().unwrap().push((
            sa.to_string(),
            audience.map(str::to_string),
            expiration_seconds,
        ));
        let now = self.now.as_ref().map_or_else(SystemTime::now, |c| c.now());
        Ok(ServiceAccountToken {
            token: format!("token-{n}"),
            expiration: now + Duration::from_secs(u64::try_from(expiration_seconds).unwrap()),
        })
    }
    async fn persistent_volume_claim(
        &self,
        _ns: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, SourceError> {
        Ok(self.claims.lock().unwrap().get(name).cloned())
    }
    async fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, SourceError> {
        Ok(self.volumes.lock().unwrap().get(name).cloned())
    }
}

pub(crate) struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    host: PathBuf,
    mounter: Arc<FakeMounter>,
    clock: Arc<ManualClock>,
    manager: VolumeManager,
    source: FakeSource,
}

pub(crate) fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub(crate) fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let host = root.join("host");
    fs::create_dir_all(&host).unwrap();
    let mounter = Arc::new(FakeMounter::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let options = Options {
        memory_backed_secrets: true,
        node_allocatable: BTreeMap::from([(
            "memory".to_string(),
            k8slite_api::quantity::Quantity::parse("1Gi").unwrap(),
        )]),
    };
    let manager = VolumeManager::new(
        root.join("agent/pods"),
        mounter.clone(),
        clock.clone(),
        options,
    );
    let source = FakeSource {
        now: Some(clock.clone()),
        ..Default::default()
    };
    Env {
        _tmp: tmp,
        root,
        host,
        mounter,
        clock,
        manager,
        source,
    }
}

pub(crate) fn pod(volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            volumes: Some(volumes),
            service_account_name: Some("builder".into()),
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn vol(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

pub(crate) fn cm_vol(name: &str, cm: &str) -> Volume {
    Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: cm.into(),
            ..Default::default()
        }),
        ..vol(name)
    }
}

pub(crate) fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

pub(crate) fn vm(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}
