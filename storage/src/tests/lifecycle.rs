//! emptyDir, hostPath, claims, container mounts and teardown.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use k8s_openapi::api::core::v1::*;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::*;

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

#[tokio::test]
async fn sub_paths_are_not_created_in_config_volumes() {
    let e = env();
    e.source.set_cm("cfg", &[("a", "1")]);
    let p = pod(vec![cm_vol("cfg", "cfg")]);
    e.manager.setup(&p, &e.source).await.unwrap();
    let c = Container {
        name: "c".into(),
        volume_mounts: Some(vec![VolumeMount {
            sub_path: Some("missing".into()),
            ..vm("cfg", "/m")
        }]),
        ..Default::default()
    };
    let err = e.manager.mounts_for(&p, &c, &BTreeMap::new()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to prepare subPath for volumeMount \"cfg\" of container \"c\""),
        "{err}"
    );
    let dir = e
        .root
        .join("agent/pods/uid-1/volumes/kubernetes.io~configmap/cfg");
    assert!(fs::symlink_metadata(dir.join("missing")).is_err());
}
