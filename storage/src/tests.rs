//! Volume manager tests over temporary directories, a fake API source and the fake mounter.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::*;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::*;

#[derive(Default)]
struct FakeSource {
    config_maps: Mutex<BTreeMap<String, ConfigMap>>,
    secrets: Mutex<BTreeMap<String, Secret>>,
    claims: Mutex<BTreeMap<String, PersistentVolumeClaim>>,
    volumes: Mutex<BTreeMap<String, PersistentVolume>>,
    token_calls: AtomicUsize,
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

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    host: PathBuf,
    mounter: Arc<FakeMounter>,
    clock: Arc<ManualClock>,
    manager: VolumeManager,
    source: FakeSource,
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn env() -> Env {
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

fn pod(volumes: Vec<Volume>) -> Pod {
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

fn vol(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

fn cm_vol(name: &str, cm: &str) -> Volume {
    Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: cm.into(),
            ..Default::default()
        }),
        ..vol(name)
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

fn vm(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn empty_dirs_on_disk_and_in_memory() {
    let e = env();
    let mem = Volume {
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Q("64Mi".into())),
        }),
        ..vol("mem")
    };
    let disk = Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..vol("scratch")
    };
    let p = pod(vec![disk, mem]);
    e.manager.setup(&p, &e.source).await.unwrap();
    let base = e
        .root
        .join("agent/pods/uid-1/volumes/kubernetes.io~empty-dir");
    assert_eq!(mode_of(&base.join("scratch")), 0o777);
    assert_eq!(
        e.mounter.calls(),
        vec![MountCall::Tmpfs(base.join("mem"), Some(64 << 20))]
    );
    // setup again: no second mount
    e.manager.setup(&p, &e.source).await.unwrap();
    assert_eq!(e.mounter.calls().len(), 1);
    assert_eq!(
        e.manager.volume_path("uid-1", "scratch"),
        Some(base.join("scratch"))
    );
}

#[tokio::test]
async fn memory_empty_dir_without_limit_is_bounded_by_pod_then_node() {
    let e = env();
    let mem = Volume {
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: None,
        }),
        ..vol("mem")
    };
    let mut p = pod(vec![mem]);
    e.manager.setup(&p, &e.source).await.unwrap();
    assert!(matches!(&e.mounter.calls()[0], MountCall::Tmpfs(_, Some(s)) if *s == 1 << 30));
    e.manager.teardown("uid-1").unwrap();
    p.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([("memory".into(), Q("128Mi".into()))])),
        ..Default::default()
    });
    e.manager.setup(&p, &e.source).await.unwrap();
    let calls = e.mounter.calls();
    assert!(matches!(calls.last().unwrap(), MountCall::Tmpfs(_, Some(s)) if *s == 128 << 20));
}

#[tokio::test]
async fn host_path_types_and_messages() {
    let e = env();
    let dir = e.host.join("made");
    let hp = |name: &str, path: &Path, t: Option<&str>| Volume {
        host_path: Some(HostPathVolumeSource {
            path: path.display().to_string(),
            type_: t.map(str::to_string),
        }),
        ..vol(name)
    };
    let p = pod(vec![
        hp("a", &dir, Some("DirectoryOrCreate")),
        hp("b", &e.host.join("f"), Some("FileOrCreate")),
    ]);
    e.manager.setup(&p, &e.source).await.unwrap();
    assert!(dir.is_dir());
    assert!(e.host.join("f").is_file());
    let p = pod(vec![hp("bad", &e.host.join("missing"), Some("Directory"))]);
    let err = e.manager.setup(&p, &e.source).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "MountVolume.SetUp failed for volume \"bad\" : hostPath type check failed: {}/missing is not a directory",
            e.host.display()
        )
    );
    assert_eq!(err.event_reason(), "FailedMount");
}

#[tokio::test]
async fn config_map_items_modes_and_errors() {
    let e = env();
    e.source
        .set_cm("cfg", &[("a", "1"), ("b", "2"), ("c", "3")]);
    let v = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            default_mode: Some(0o600),
            items: Some(vec![
                KeyToPath {
                    key: "a".into(),
                    path: "dir/a.txt".into(),
                    mode: Some(0o400),
                },
                KeyToPath {
                    key: "b".into(),
                    path: "b".into(),
                    mode: None,
                },
            ]),
            ..Default::default()
        }),
        ..vol("cfg")
    };
    e.manager
        .setup(&pod(vec![v.clone()]), &e.source)
        .await
        .unwrap();
    let dir = e
        .root
        .join("agent/pods/uid-1/volumes/kubernetes.io~configmap/cfg");
    assert_eq!(fs::read_to_string(dir.join("dir/a.txt")).unwrap(), "1");
    assert_eq!(mode_of(&dir.join("dir/a.txt")), 0o400);
    assert_eq!(mode_of(&dir.join("b")), 0o600);
    assert!(fs::symlink_metadata(dir.join("c")).is_err());
    assert_eq!(
        fs::read_link(dir.join("dir")).unwrap(),
        Path::new("..data/dir")
    );
    // configMap volumes are not on tmpfs
    assert!(e.mounter.calls().is_empty());

    // a missing key
    let mut missing = v.clone();
    missing.config_map.as_mut().unwrap().items.as_mut().unwrap()[0].key = "zz".into();
    let err = e
        .manager
        .setup(&pod(vec![missing.clone()]), &e.source)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"cfg\" : configmap references non-existent config key: zz"
    );
    // ... is skipped when optional
    missing.config_map.as_mut().unwrap().optional = Some(true);
    e.manager
        .setup(&pod(vec![missing]), &e.source)
        .await
        .unwrap();
    assert!(fs::symlink_metadata(dir.join("dir")).is_err());
    assert_eq!(fs::read_to_string(dir.join("b")).unwrap(), "2");

    // a missing config map
    let err = e
        .manager
        .setup(&pod(vec![cm_vol("x", "nope")]), &e.source)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"x\" : configmap \"nope\" not found"
    );
    let mut opt = cm_vol("x", "nope");
    opt.config_map.as_mut().unwrap().optional = Some(true);
    e.manager.setup(&pod(vec![opt]), &e.source).await.unwrap();
    let x = e
        .root
        .join("agent/pods/uid-1/volumes/kubernetes.io~configmap/x");
    assert!(fs::symlink_metadata(x.join("..data")).is_ok());
}

#[tokio::test]
async fn secrets_on_tmpfs_with_binary_data_and_fs_group() {
    let e = env();
    e.source
        .set_secret("s", &[("key", &[0, 159, 146, 150]), ("other", b"x")]);
    let gid = fs::metadata(&e.root).unwrap().gid();
    let v = Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some("s".into()),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..vol("sec")
    };
    let mut p = pod(vec![v]);
    p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        fs_group: Some(i64::from(gid)),
        ..Default::default()
    });
    e.manager.setup(&p, &e.source).await.unwrap();
    let dir = e
        .root
        .join("agent/pods/uid-1/volumes/kubernetes.io~secret/sec");
    assert_eq!(e.mounter.calls(), vec![MountCall::Tmpfs(dir.clone(), None)]);
    assert_eq!(fs::read(dir.join("key")).unwrap(), vec![0, 159, 146, 150]);
    let meta = fs::metadata(dir.join("key")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o440, "fsGroup adds group read");
    assert_eq!(meta.gid(), gid);
    let err = e
        .manager
        .setup(
            &pod(vec![Volume {
                secret: Some(SecretVolumeSource {
                    secret_name: Some("gone".into()),
                    ..Default::default()
                }),
                ..vol("s2")
            }]),
            &e.source,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"s2\" : secret \"gone\" not found"
    );
}

#[tokio::test]
async fn downward_api_volume() {
    let e = env();
    let item = |path: &str, field: &str| DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field.into(),
            api_version: None,
        }),
        ..Default::default()
    };
    let v = Volume {
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![
                item("name", "metadata.name"),
                item("labels", "metadata.labels"),
                DownwardAPIVolumeFile {
                    path: "mem".into(),
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: Some("c".into()),
                        resource: "limits.memory".into(),
                        divisor: Some(Q("1Mi".into())),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..vol("info")
    };
    let mut p = pod(vec![v]);
    e.manager.setup(&p, &e.source).await.unwrap();
    let dir = e
        .root
        .join("agent/pods/uid-1/volumes/kubernetes.io~downward-api/info");
    assert_eq!(fs::read_to_string(dir.join("name")).unwrap(), "web");
    assert_eq!(
        fs::read_to_string(dir.join("labels")).unwrap(),
        "app=\"web\""
    );
    assert_eq!(
        fs::read_to_string(dir.join("mem")).unwrap(),
        "1024",
        "unset limit: node allocatable"
    );
    // a label change propagates on refresh
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "front".into());
    assert_eq!(
        e.manager.refresh(&p, &e.source).await.unwrap(),
        vec!["info".to_string()]
    );
    assert_eq!(
        fs::read_to_string(dir.join("labels")).unwrap(),
        "app=\"web\"\ntier=\"front\""
    );
}

fn projected_vol() -> Volume {
    Volume {
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        audience: Some("vault".into()),
                        expiration_seconds: Some(3600),
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                api_version: None,
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: "s".into(),
                        optional: Some(true),
                        items: None,
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..vol("kube-api-access")
    }
}

#[tokio::test]
async fn projected_volume_and_token_refresh_timing() {
    let e = env();
    e.source.set_cm("kube-root-ca.crt", &[("ca.crt", "CA")]);
    let p = pod(vec![projected_vol()]);
    e.manager.setup(&p, &e.source).await.unwrap();
    let dir = e
        .root
        .join("agent/pods/uid-1/volumes/kubernetes.io~projected/kube-api-access");
    assert_eq!(e.mounter.calls(), vec![MountCall::Tmpfs(dir.clone(), None)]);
    assert_eq!(fs::read_to_string(dir.join("token")).unwrap(), "token-1");
    assert_eq!(fs::read_to_string(dir.join("ca.crt")).unwrap(), "CA");
    assert_eq!(fs::read_to_string(dir.join("namespace")).unwrap(), "ns");
    assert_eq!(
        e.source.token_requests.lock().unwrap()[0],
        ("builder".to_string(), Some("vault".to_string()), 3600)
    );

    // before 80 % of the lifetime: nothing changes, nothing is requested
    e.clock.advance(Duration::from_secs(2879));
    assert!(e.manager.refresh(&p, &e.source).await.unwrap().is_empty());
    assert_eq!(e.source.token_calls.load(Ordering::SeqCst), 1);
    let data_before = fs::read_link(dir.join("..data")).unwrap();
    // at 80 %: renewed, written with the swap
    e.clock.advance(Duration::from_secs(1));
    assert_eq!(
        e.manager.refresh(&p, &e.source).await.unwrap(),
        vec!["kube-api-access".to_string()]
    );
    assert_eq!(e.source.token_calls.load(Ordering::SeqCst), 2);
    assert_eq!(fs::read_to_string(dir.join("token")).unwrap(), "token-2");
    assert_ne!(fs::read_link(dir.join("..data")).unwrap(), data_before);
    assert!(!dir.join(&data_before).exists());

    // a secret appearing later joins the volume
    e.source.set_secret("s", &[("extra", b"e")]);
    assert_eq!(e.manager.refresh(&p, &e.source).await.unwrap().len(), 1);
    assert_eq!(fs::read_to_string(dir.join("extra")).unwrap(), "e");
    assert_eq!(e.source.token_calls.load(Ordering::SeqCst), 2);

    // a second setup (the worker re-syncing) reuses the cached token
    e.manager.setup(&p, &e.source).await.unwrap();
    assert_eq!(e.source.token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn long_lived_tokens_are_renewed_after_a_day() {
    let e = env();
    e.source.set_cm("kube-root-ca.crt", &[("ca.crt", "CA")]);
    let mut v = projected_vol();
    let proj = v.projected.as_mut().unwrap().sources.as_mut().unwrap();
    proj[0]
        .service_account_token
        .as_mut()
        .unwrap()
        .expiration_seconds = Some(7 * 86_400);
    let p = pod(vec![v]);
    e.manager.setup(&p, &e.source).await.unwrap();
    e.clock.advance(Duration::from_secs(86_400));
    e.manager.refresh(&p, &e.source).await.unwrap();
    assert_eq!(e.source.token_calls.load(Ordering::SeqCst), 1);
    e.clock.advance(Duration::from_secs(2));
    e.manager.refresh(&p, &e.source).await.unwrap();
    assert_eq!(e.source.token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn config_map_updates_propagate_atomically() {
    let e = env();
    e.source.set_cm("cfg", &[("a", "1"), ("b", "2")]);
    let p = pod(vec![cm_vol("cfg", "cfg")]);
    e.manager.setup(&p, &e.source).await.unwrap();
    let dir = e
        .root
        .join("agent/pods/uid-1/volumes/kubernetes.io~configmap/cfg");
    let old = fs::read_link(dir.join("..data")).unwrap();
    assert!(e.manager.refresh(&p, &e.source).await.unwrap().is_empty());
    assert_eq!(fs::read_link(dir.join("..data")).unwrap(), old);

    e.clock.advance(Duration::from_secs(30));
    e.source.set_cm("cfg", &[("a", "changed"), ("c", "3")]);
    assert_eq!(
        e.manager.refresh(&p, &e.source).await.unwrap(),
        vec!["cfg".to_string()]
    );
    assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "changed");
    assert_eq!(fs::read_to_string(dir.join("c")).unwrap(), "3");
    assert!(fs::symlink_metadata(dir.join("b")).is_err());
    assert_ne!(fs::read_link(dir.join("..data")).unwrap(), old);

    // deleted: the old content stays, the error is reported
    e.source.config_maps.lock().unwrap().clear();
    let err = e.manager.refresh(&p, &e.source).await.unwrap_err();
    assert!(
        err.to_string().contains("configmap \"cfg\" not found"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "changed");
}

#[tokio::test]
async fn mounts_for_containers() {
    let e = env();
    e.source.set_cm("cfg", &[("app.conf", "x")]);
    let hp = Volume {
        host_path: Some(HostPathVolumeSource {
            path: e.host.display().to_string(),
            type_: None,
        }),
        ..vol("host")
    };
    let scratch = Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..vol("scratch")
    };
    let p = pod(vec![cm_vol("cfg", "cfg"), hp, scratch]);
    e.manager.setup(&p, &e.source).await.unwrap();
    let c = Container {
        name: "c".into(),
        volume_mounts: Some(vec![
            vm("cfg", "/etc/app"),
            VolumeMount {
                read_only: Some(true),
                mount_propagation: Some("HostToContainer".into()),
                ..vm("host", "/host")
            },
            VolumeMount {
                sub_path: Some("app.conf".into()),
                ..vm("cfg", "/etc/app.conf")
            },
            VolumeMount {
                sub_path_expr: Some("logs/$(POD_NAME)".into()),
                ..vm("scratch", "/logs")
            },
            VolumeMount {
                mount_propagation: Some("Bidirectional".into()),
                ..vm("scratch", "/shared")
            },
        ]),
        ..Default::default()
    };
    let env_vars = BTreeMap::from([("POD_NAME".to_string(), "web".to_string())]);
    let m = e.manager.mounts_for(&p, &c, &env_vars).unwrap();
    let vols = e.root.join("agent/pods/uid-1/volumes");
    assert_eq!(m.len(), 5);
    assert_eq!(m[0].host_path, vols.join("kubernetes.io~configmap/cfg"));
    assert!(m[0].read_only, "configMap volumes are read-only");
    assert_eq!(
        (m[1].read_only, m[1].propagation),
        (true, Propagation::HostToContainer)
    );
    assert_eq!(m[1].host_path, e.host);
    let data = fs::read_link(vols.join("kubernetes.io~configmap/cfg/..data")).unwrap();
    assert_eq!(
        m[2].host_path,
        vols.join("kubernetes.io~configmap/cfg")
            .join(data)
            .join("app.conf")
    );
    assert_eq!(m[2].container_path, "/etc/app.conf");
    assert_eq!(
        m[3].host_path,
        vols.join("kubernetes.io~empty-dir/scratch/logs/web")
    );
    assert!(m[3].host_path.is_dir() && !m[3].read_only);
    assert_eq!(m[4].propagation, Propagation::Bidirectional);

    let bad = Container {
        name: "c".into(),
        volume_mounts: Some(vec![vm("nope", "/x")]),
        ..Default::default()
    };
    let err = e.manager.mounts_for(&p, &bad, &env_vars).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot find volume \"nope\" to mount into container \"c\""
    );
    let escape = Container {
        name: "c".into(),
        volume_mounts: Some(vec![VolumeMount {
            sub_path: Some("../../x".into()),
            ..vm("scratch", "/x")
        }]),
        ..Default::default()
    };
    assert!(matches!(
        e.manager.mounts_for(&p, &escape, &env_vars),
        Err(StorageError::SubPath { .. })
    ));
}

fn claim(name: &str, pv: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("{name}-uid")),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            volume_name: pv.map(str::to_string),
            ..Default::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            phase: Some(if pv.is_some() { "Bound" } else { "Pending" }.into()),
            ..Default::default()
        }),
    }
}

fn host_pv(name: &str, path: &Path, policy: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            host_path: Some(HostPathVolumeSource {
                path: path.display().to_string(),
                type_: None,
            }),
            persistent_volume_reclaim_policy: Some(policy.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn claims_resolve_to_host_directories() {
    let e = env();
    let storage = e.root.join("storage");
    let pv_dir = storage.join("pvc-1_ns_data");
    e.source
        .claims
        .lock()
        .unwrap()
        .insert("data".into(), claim("data", Some("pvc-1")));
    e.source
        .claims
        .lock()
        .unwrap()
        .insert("pending".into(), claim("pending", None));
    e.source
        .volumes
        .lock()
        .unwrap()
        .insert("pvc-1".into(), host_pv("pvc-1", &pv_dir, "Delete"));
    let v = |name: &str, c: &str, ro| Volume {
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: c.into(),
            read_only: Some(ro),
        }),
        ..vol(name)
    };
    let p = pod(vec![v("data", "data", true)]);
    e.manager.setup(&p, &e.source).await.unwrap();
    assert!(pv_dir.is_dir());
    assert_eq!(mode_of(&pv_dir), 0o777);
    let c = Container {
        name: "c".into(),
        volume_mounts: Some(vec![vm("data", "/data")]),
        ..Default::default()
    };
    let m = e.manager.mounts_for(&p, &c, &BTreeMap::new()).unwrap();
    assert_eq!(m[0].host_path, pv_dir);
    assert!(m[0].read_only);

    let err = e
        .manager
        .setup(&pod(vec![v("x", "pending", false)]), &e.source)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"x\" : persistentvolumeclaim \"pending\" is not bound"
    );
    let err = e
        .manager
        .setup(&pod(vec![v("x", "nope", false)]), &e.source)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("persistentvolumeclaim \"nope\" not found"),
        "{err}"
    );

    // teardown keeps the volume's data; delete_volume_dir removes it only for Delete
    fs::write(pv_dir.join("db"), "keep").unwrap();
    e.manager.teardown("uid-1").unwrap();
    assert_eq!(fs::read_to_string(pv_dir.join("db")).unwrap(), "keep");
    let retain = host_pv("pvc-1", &pv_dir, "Retain");
    assert!(!delete_volume_dir(&retain, &storage).unwrap());
    assert!(pv_dir.exists());
    let outside = host_pv("evil", &e.host, "Delete");
    assert!(delete_volume_dir(&outside, &storage).is_err());
    assert!(e.host.exists());
    let dotdot = host_pv("evil", &storage.join("../host"), "Delete");
    assert!(delete_volume_dir(&dotdot, &storage).is_err());
    // a volume directory that is a symlink out of the storage root: the link goes, not the target
    fs::write(e.host.join("precious"), "p").unwrap();
    std::os::unix::fs::symlink(&e.host, storage.join("linked")).unwrap();
    assert!(delete_volume_dir(&host_pv("l", &storage.join("linked"), "Delete"), &storage).unwrap());
    assert_eq!(fs::read_to_string(e.host.join("precious")).unwrap(), "p");
    assert!(delete_volume_dir(&host_pv("pvc-1", &pv_dir, "Delete"), &storage).unwrap());
    assert!(!pv_dir.exists());
    assert!(storage.exists());
}

#[tokio::test]
async fn teardown_unmounts_and_never_leaves_the_pod_dir() {
    let e = env();
    e.source.set_secret("s", &[("k", b"v")]);
    fs::write(e.host.join("precious"), "data").unwrap();
    let vols = vec![
        Volume {
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: None,
            }),
            ..vol("mem")
        },
        Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..vol("scratch")
        },
        Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some("s".into()),
                ..Default::default()
            }),
            ..vol("sec")
        },
        Volume {
            host_path: Some(HostPathVolumeSource {
                path: e.host.display().to_string(),
                type_: None,
            }),
            ..vol("host")
        },
    ];
    let p = pod(vols);
    e.manager.setup(&p, &e.source).await.unwrap();
    let pod_dir = e.root.join("agent/pods/uid-1");
    // a container left symlinks to the host in its emptyDir
    let scratch = pod_dir.join("volumes/kubernetes.io~empty-dir/scratch");
    std::os::unix::fs::symlink(&e.host, scratch.join("to-host")).unwrap();
    std::os::unix::fs::symlink(e.host.join("precious"), scratch.join("file-link")).unwrap();
    fs::write(pod_dir.join("etc-hosts"), "127.0.0.1 localhost").unwrap();
    assert_eq!(e.mounter.mounted().len(), 2);

    e.manager.teardown("uid-1").unwrap();
    assert!(!pod_dir.exists());
    assert!(e.mounter.mounted().is_empty());
    let unmounts: Vec<_> = e
        .mounter
        .calls()
        .into_iter()
        .filter(|c| matches!(c, MountCall::Unmount(_)))
        .collect();
    assert_eq!(unmounts.len(), 2);
    assert_eq!(fs::read_to_string(e.host.join("precious")).unwrap(), "data");
    assert!(
        e.manager
            .mounts_for(
                &p,
                &Container {
                    volume_mounts: Some(vec![vm("host", "/h")]),
                    ..Default::default()
                },
                &BTreeMap::new()
            )
            .is_err()
    );
    // again: nothing to do
    e.manager.teardown("uid-1").unwrap();
    assert!(e.manager.teardown("../x").is_err());
    assert!(e.manager.teardown("a/b").is_err());
}

#[tokio::test]
async fn orphans_are_cleaned_up() {
    let e = env();
    let v = Volume {
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..vol("scratch")
    };
    let mut a = pod(vec![v.clone()]);
    e.manager.setup(&a, &e.source).await.unwrap();
    a.metadata.uid = Some("uid-2".into());
    e.manager.setup(&a, &e.source).await.unwrap();
    let errors = e
        .manager
        .cleanup_orphans(&HashSet::from(["uid-2".to_string()]));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!e.root.join("agent/pods/uid-1").exists());
    assert!(e.root.join("agent/pods/uid-2").exists());
}

#[tokio::test]
async fn unsupported_volume_types_fail_clearly() {
    let e = env();
    let v = Volume {
        nfs: Some(NFSVolumeSource {
            path: "/x".into(),
            server: "s".into(),
            read_only: None,
        }),
        ..vol("n")
    };
    let err = e.manager.setup(&pod(vec![v]), &e.source).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"n\" : unsupported volume type (nfs)"
    );
    let mut nouid = pod(vec![]);
    nouid.metadata.uid = None;
    assert!(matches!(
        e.manager.setup(&nouid, &e.source).await,
        Err(StorageError::NoUid(_))
    ));
}

#[tokio::test]
async fn share_pods_dir_uses_the_mounter() {
    let e = env();
    e.manager.share_pods_dir().unwrap();
    assert_eq!(
        e.mounter.calls(),
        vec![MountCall::MakeRshared(e.root.join("agent/pods"))]
    );
}
