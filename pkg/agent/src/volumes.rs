//! Pod volumes: the agent's side of `k8slite-storage` (API objects fetched with the agent's
//! client, mounts handed to the runtime).
//!
//! The pod worker drives one [`PodVolumes`] per node:
//! - [`PodVolumes::setup`] before `RunPodSandbox` (and again on every sync: it is idempotent);
//!   a failure is a `FailedMount` event ([`PodVolumeError::event_reason`]) with the error's text
//!   as message, and the pod waits;
//! - [`PodVolumes::mounts_for`] for each container's `ContainerConfig::mounts`;
//! - [`PodVolumes::refresh`] every [`REFRESH_PERIOD`] while the pod runs (configMap / secret
//!   updates, token renewal);
//! - [`PodVolumes::teardown`] after `RemovePodSandbox`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use k8slite_runtime::{Mount, MountPropagation};
use k8slite_storage::{
    HostMounter, Mounter, Options, Propagation, ServiceAccountToken, SourceError, StorageError,
    SystemClock, VolumeManager, VolumeSource,
};
use kube::Api;
use kube::api::PostParams;

/// How often the worker should call [`PodVolumes::refresh`] for a running pod (the kubelet
/// resyncs every minute with jitter; token renewal needs no finer grain).
pub const REFRESH_PERIOD: Duration = Duration::from_secs(30);

/// What failed with a pod's volumes. The message is the kubelet's event text
/// (`MountVolume.SetUp failed for volume "cfg" : configmap "x" not found`).
#[derive(Debug, thiserror::Error)]
pub enum PodVolumeError {
    /// Setting up, mounting, refreshing or tearing down failed.
    #[error("{0}")]
    Storage(#[from] StorageError),
}

impl PodVolumeError {
    /// The event reason to record (`FailedMount`, `FailedUnMount`, …).
    pub fn event_reason(&self) -> &'static str {
        match self {
            Self::Storage(e) => e.event_reason(),
        }
    }
}

/// The API objects of volumes, fetched with the agent's client.
#[derive(Clone)]
pub struct ApiVolumeSource {
    client: kube::Client,
}

impl ApiVolumeSource {
    /// A source over `client` (the node's credentials).
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl std::fmt::Debug for ApiVolumeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiVolumeSource").finish_non_exhaustive()
    }
}

#[async_trait]
impl VolumeSource for ApiVolumeSource {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, SourceError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?)
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SourceError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?)
    }

    async fn service_account_token(
        &self,
        pod: &Pod,
        service_account: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<ServiceAccountToken, SourceError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let got = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await?;
        let status = got
            .status
            .ok_or("the TokenRequest response has no status")?;
        Ok(ServiceAccountToken {
            token: status.token,
            expiration: SystemTime::from(status.expiration_timestamp.0),
        })
    }

    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, SourceError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?)
    }

    async fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, SourceError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        Ok(api.get_opt(name).await?)
    }
}

/// The volumes of the pods on this node: the storage crate's manager plus the API source.
pub struct PodVolumes {
    manager: VolumeManager,
    source: Arc<dyn VolumeSource>,
    storage_root: PathBuf,
}

impl std::fmt::Debug for PodVolumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodVolumes")
            .field("manager", &self.manager)
            .field("storage_root", &self.storage_root)
            .finish_non_exhaustive()
    }
}

fn propagation(p: Propagation) -> MountPropagation {
    match p {
        Propagation::Private => MountPropagation::Private,
        Propagation::HostToContainer => MountPropagation::HostToContainer,
        Propagation::Bidirectional => MountPropagation::Bidirectional,
    }
}

impl PodVolumes {
    /// The real thing: volumes under `<data_dir>/agent/pods`, local-path volumes under
    /// `<data_dir>/storage`, mounts on the host (root), objects through `client`.
    /// `options.node_allocatable` should carry the node's allocatable cpu/memory.
    pub fn new(data_dir: &Path, client: kube::Client, options: Options) -> Self {
        Self::with(
            data_dir,
            Arc::new(HostMounter),
            Arc::new(ApiVolumeSource::new(client)),
            options,
        )
    }

    /// With another mounter and source (tests: `FakeMounter`, a fake source).
    pub fn with(
        data_dir: &Path,
        mounter: Arc<dyn Mounter>,
        source: Arc<dyn VolumeSource>,
        options: Options,
    ) -> Self {
        let manager = VolumeManager::new(
            data_dir.join("agent").join("pods"),
            mounter,
            Arc::new(SystemClock),
            options,
        );
        Self {
            manager,
            source,
            storage_root: data_dir.join("storage"),
        }
    }

    /// The storage crate's manager (volume paths, orphan cleanup).
    pub fn manager(&self) -> &VolumeManager {
        &self.manager
    }

    /// Make `<data_dir>/agent/pods` a shared mount so `HostToContainer`/`Bidirectional`
    /// propagation works on hosts with a private `/` (once at start, as root).
    pub fn share_pods_dir(&self) -> Result<(), PodVolumeError> {
        Ok(self.manager.share_pods_dir()?)
    }

    /// Set up every volume of `pod`; before `RunPodSandbox`, idempotent.
    pub async fn setup(&self, pod: &Pod) -> Result<(), PodVolumeError> {
        Ok(self.manager.setup(pod, self.source.as_ref()).await?)
    }

    /// The CRI mounts of `container` of `pod` (after [`Self::setup`]); `env` is the
    /// container's resolved environment (for `subPathExpr`).
    pub fn mounts_for(
        &self,
        pod: &Pod,
        container: &Container,
        env: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, PodVolumeError> {
        let mounts = self.manager.mounts_for(pod, container, env)?;
        Ok(mounts
            .into_iter()
            .map(|m| Mount {
                container_path: m.container_path,
                host_path: m.host_path.to_string_lossy().into_owned(),
                readonly: m.read_only,
                propagation: propagation(m.propagation),
            })
            .collect())
    }

    /// Propagate configMap/secret/downwardAPI changes and renew tokens of a running pod;
    /// returns the names of the volumes rewritten.
    pub async fn refresh(&self, pod: &Pod) -> Result<Vec<String>, PodVolumeError> {
        Ok(self.manager.refresh(pod, self.source.as_ref()).await?)
    }

    /// Unmount and remove `<data_dir>/agent/pods/<uid>` (after `RemovePodSandbox`).
    pub fn teardown(&self, pod_uid: &str) -> Result<(), PodVolumeError> {
        Ok(self.manager.teardown(pod_uid)?)
    }

    /// Tear down the directories of pods not in `live` (at start, after adoption).
    pub fn cleanup_orphans(&self, live: &HashSet<String>) -> Vec<PodVolumeError> {
        self.manager
            .cleanup_orphans(live)
            .into_iter()
            .map(PodVolumeError::from)
            .collect()
    }

    /// Delete the directory of a released persistent volume with reclaim policy `Delete`
    /// when it lies under `<data_dir>/storage` (the local-path provisioner's root). `Ok(false)`:
    /// not such a volume.
    pub fn delete_released_volume(&self, pv: &PersistentVolume) -> Result<bool, PodVolumeError> {
        Ok(k8slite_storage::delete_volume_dir(pv, &self.storage_root)?)
    }
}

#[async_trait::async_trait]
impl crate::pods::VolumeHooks for PodVolumes {
    async fn setup(&self, pod: &Pod) -> Result<(), String> {
        PodVolumes::setup(self, pod)
            .await
            .map_err(|e| e.to_string())
    }

    fn mounts_for(
        &self,
        pod: &Pod,
        c: &Container,
        env: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, String> {
        PodVolumes::mounts_for(self, pod, c, env).map_err(|e| e.to_string())
    }

    async fn refresh(&self, pod: &Pod) {
        if let Err(e) = PodVolumes::refresh(self, pod).await {
            tracing::warn!("refreshing volumes: {e}");
        }
    }

    async fn teardown(&self, pod: &Pod) {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        if !uid.is_empty()
            && let Err(e) = PodVolumes::teardown(self, uid)
        {
            tracing::warn!("tearing down volumes: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, EmptyDirVolumeSource, PodSpec, Volume, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8slite_storage::FakeMounter;

    struct NoObjects;

    #[async_trait]
    impl VolumeSource for NoObjects {
        async fn config_map(&self, _: &str, _: &str) -> Result<Option<ConfigMap>, SourceError> {
            Ok(None)
        }
        async fn secret(&self, _: &str, _: &str) -> Result<Option<Secret>, SourceError> {
            Ok(None)
        }
        async fn service_account_token(
            &self,
            _: &Pod,
            _: &str,
            _: Option<&str>,
            _: i64,
        ) -> Result<ServiceAccountToken, SourceError> {
            Err("no tokens here".into())
        }
        async fn persistent_volume_claim(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<PersistentVolumeClaim>, SourceError> {
            Ok(None)
        }
        async fn persistent_volume(
            &self,
            _: &str,
        ) -> Result<Option<PersistentVolume>, SourceError> {
            Ok(None)
        }
    }

    fn pod(volumes: Vec<Volume>, mounts: Vec<VolumeMount>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("uid-9".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                containers: vec![Container {
                    name: "c".into(),
                    volume_mounts: Some(mounts),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn facade_converts_mounts_and_words_errors_like_the_kubelet() {
        let dir = std::env::temp_dir().join(format!("k8slite-volumes-test-{}", std::process::id()));
        let volumes = PodVolumes::with(
            &dir,
            Arc::new(FakeMounter::new()),
            Arc::new(NoObjects),
            Options::default(),
        );
        let scratch = Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        };
        let mount = VolumeMount {
            name: "scratch".into(),
            mount_path: "/data".into(),
            mount_propagation: Some("HostToContainer".into()),
            ..Default::default()
        };
        let p = pod(vec![scratch], vec![mount]);
        volumes.setup(&p).await.expect("setup");
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let m = volumes.mounts_for(&p, c, &BTreeMap::new()).expect("mounts");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].container_path, "/data");
        assert!(
            m[0].host_path
                .ends_with("agent/pods/uid-9/volumes/kubernetes.io~empty-dir/scratch")
        );
        assert_eq!(m[0].propagation, MountPropagation::HostToContainer);
        assert!(!m[0].readonly);

        let cfg = Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = volumes
            .setup(&pod(vec![cfg], vec![]))
            .await
            .expect_err("missing configmap");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"x\" not found"
        );
        assert_eq!(err.event_reason(), "FailedMount");

        volumes.teardown("uid-9").expect("teardown");
        assert!(!dir.join("agent/pods/uid-9").exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
