//! configMap, secret, downwardAPI and projected volumes: items, modes, updates, tokens.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::*;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

use super::*;
use crate::*;

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
async fn failed_renewal_keeps_a_valid_token_until_it_expires() {
    let e = env();
    e.source.set_cm("kube-root-ca.crt", &[("ca.crt", "CA")]);
    let p = pod(vec![projected_vol()]);
    e.manager.setup(&p, &e.source).await.unwrap();
    let dir = e
        .root
        .join("agent/pods/uid-1/volumes/kubernetes.io~projected/kube-api-access");
    e.source.token_fails.store(true, Ordering::SeqCst);
    e.clock.advance(Duration::from_secs(3000)); // due, still valid
    assert!(e.manager.refresh(&p, &e.source).await.unwrap().is_empty());
    assert_eq!(fs::read_to_string(dir.join("token")).unwrap(), "token-1");
    e.clock.advance(Duration::from_secs(600)); // expired
    let err = e.manager.refresh(&p, &e.source).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("failed to fetch token: apiserver unreachable"),
        "{err}"
    );
    e.source.token_fails.store(false, Ordering::SeqCst);
    e.manager.refresh(&p, &e.source).await.unwrap();
    assert_eq!(fs::read_to_string(dir.join("token")).unwrap(), "token-2");
}
