//! The volume manager: set up, refresh, mount and tear down the volumes of the pods on a node.

mod mounting;
mod projected;
mod teardown;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, Volume};
use k8slite_api::quantity::Quantity;

use crate::atomic::{self, DATA_DIR, Payload};
use crate::fsutil::{chmod, set_ownership};
use crate::hostpath::check_type;
use crate::payload::{self, DEFAULT_MODE, mode};
use crate::pv::resolve_claim;
use crate::token::CachedToken;
use crate::{Clock, Mounter, StorageError, VolumeError, VolumeSource};

/// Plugin directory of emptyDir volumes.
pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
/// Plugin directory of configMap volumes.
pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
/// Plugin directory of secret volumes.
pub const SECRET: &str = "kubernetes.io~secret";
/// Plugin directory of downwardAPI volumes.
pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";
/// Plugin directory of projected volumes.
pub const PROJECTED: &str = "kubernetes.io~projected";

/// Settings of a [`VolumeManager`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Put secret and projected volumes on tmpfs, as the kubelet does (needs root).
    pub memory_backed_secrets: bool,
    /// The node's allocatable resources (`cpu`, `memory`, `ephemeral-storage`): the value of
    /// an unset limit in the downward API, and the upper bound of a memory emptyDir.
    pub node_allocatable: BTreeMap<String, Quantity>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            memory_backed_secrets: true,
            node_allocatable: BTreeMap::new(),
        }
    }
}

/// What is known about one set-up volume.
#[derive(Debug, Clone, Default)]
struct VolumeState {
    /// Where its content is on the host.
    host_path: PathBuf,
    /// Always mounted read-only (configMap, secret, downwardAPI, projected, read-only claims).
    read_only: bool,
    /// Content written by the atomic writer (no subPath directories are created in it).
    atomic: bool,
    /// Hash of the last payload written (atomic-writer volumes).
    payload_hash: Option<u64>,
    /// Tokens of serviceAccountToken projections, by file path.
    tokens: BTreeMap<String, CachedToken>,
}

/// The volumes of the pods on one node, under `<data-dir>/agent/pods/<uid>/volumes/`.
pub struct VolumeManager {
    pods_dir: PathBuf,
    mounter: Arc<dyn Mounter>,
    clock: Arc<dyn Clock>,
    options: Options,
    pods: Mutex<HashMap<String, BTreeMap<String, VolumeState>>>,
    /// Serialises the (synchronous, short) atomic writes and tmpfs mounts, so a refresh and a
    /// setup of the same pod running at once cannot interleave their swaps.
    writing: Mutex<()>,
}

impl std::fmt::Debug for VolumeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("pods_dir", &self.pods_dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Whether a volume's content comes from the atomic writer (and so is refreshed).
fn is_dynamic(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

fn kind_name(v: &Volume) -> &'static str {
    let kinds: [(&'static str, bool); 12] = [
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("csi", v.csi.is_some()),
        ("rbd", v.rbd.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("fc", v.fc.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("image", v.image.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
    ];
    kinds
        .iter()
        .find(|(_, set)| *set)
        .map_or("unknown", |(n, _)| n)
}

fn hash_payload(p: &Payload, fs_group: Option<u32>) -> u64 {
    let mut h = DefaultHasher::new();
    p.hash(&mut h);
    fs_group.hash(&mut h);
    h.finish()
}

/// The pod's fsGroup, when it has a usable one.
fn fs_group(pod: &Pod) -> Option<u32> {
    let g = pod.spec.as_ref()?.security_context.as_ref()?.fs_group?;
    u32::try_from(g).ok()
}

/// A pod uid usable as one path element.
fn check_uid(uid: &str) -> Result<(), VolumeError> {
    let mut comps = Path::new(uid).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) if !uid.contains('/') => Ok(()),
        _ => Err(VolumeError::InvalidPath {
            path: uid.to_string(),
            reason: "a pod uid must be one path element",
        }),
    }
}

/// The size of a memory-backed emptyDir: the smallest of its sizeLimit, the pod's memory limit
/// (when every container has one) and the node's allocatable memory.
fn tmpfs_size(
    pod: &Pod,
    size_limit: Option<&Quantity>,
    allocatable: Option<&Quantity>,
) -> Option<u64> {
    let mut candidates: Vec<i64> = Vec::new();
    if let Some(q) = size_limit {
        candidates.push(q.value());
    }
    if let Some(q) = allocatable {
        candidates.push(q.value());
    }
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let limits: Option<Vec<i64>> = containers
        .iter()
        .map(|c| {
            let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
            Quantity::from_k8s(q).map(|q| q.value())
        })
        .collect();
    if let Some(l) = limits.filter(|l| !l.is_empty()) {
        candidates.push(l.iter().sum());
    }
    candidates
        .into_iter()
        .filter(|v| *v > 0)
        .min()
        .and_then(|v| u64::try_from(v).ok())
}

impl VolumeManager {
    /// A manager keeping pod volumes under `pods_dir` (`<data-dir>/agent/pods`).
    pub fn new(
        pods_dir: impl Into<PathBuf>,
        mounter: Arc<dyn Mounter>,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Self {
        Self {
            pods_dir: pods_dir.into(),
            mounter,
            clock,
            options,
            pods: Mutex::new(HashMap::new()),
            writing: Mutex::new(()),
        }
    }

    /// The directory of all pods (`<data-dir>/agent/pods`).
    pub fn pods_dir(&self) -> &Path {
        &self.pods_dir
    }

    /// Make the pods directory a shared mount so that `HostToContainer` and `Bidirectional`
    /// propagation work for volumes below it on hosts whose `/` is private. Call once at start
    /// (root); idempotent.
    pub fn share_pods_dir(&self) -> Result<(), StorageError> {
        let err = |source| StorageError::PodsDir(source);
        fs::create_dir_all(&self.pods_dir)
            .map_err(|e| err(VolumeError::io("create directory", &self.pods_dir)(e)))?;
        let dir = fs::canonicalize(&self.pods_dir)
            .map_err(|e| err(VolumeError::io("resolve", &self.pods_dir)(e)))?;
        self.mounter.make_rshared(&dir).map_err(|source| {
            err(VolumeError::Mount {
                op: "make shared",
                path: dir,
                source,
            })
        })
    }

    /// Ensure `<pods_dir>/<uid>/volumes` exists; the pod directory, resolved.
    fn pod_dir(&self, uid: &str) -> Result<PathBuf, VolumeError> {
        check_uid(uid)?;
        let volumes = self.pods_dir.join(uid).join("volumes");
        fs::create_dir_all(&volumes).map_err(VolumeError::io("create directory", &volumes))?;
        let dir = self.pods_dir.join(uid);
        fs::canonicalize(&dir).map_err(VolumeError::io("resolve", &dir))
    }

    fn state(&self, uid: &str, volume: &str) -> Option<VolumeState> {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.get(uid).and_then(|p| p.get(volume)).cloned()
    }

    fn store(&self, uid: &str, volume: &str, state: VolumeState) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.entry(uid.to_string())
            .or_default()
            .insert(volume.to_string(), state);
    }

    /// Set up every volume of `pod` (idempotent; call before the pod sandbox is created, and
    /// again after an agent restart). Stops at the first volume that fails.
    pub async fn setup(&self, pod: &Pod, source: &dyn VolumeSource) -> Result<(), StorageError> {
        let uid =
            pod.metadata.uid.clone().ok_or_else(|| {
                StorageError::NoUid(pod.metadata.name.clone().unwrap_or_default())
            })?;
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for v in &volumes {
            let prev = self.state(&uid, &v.name);
            let state = self
                .sync_volume(&uid, pod, v, source, prev)
                .await
                .map_err(|source| StorageError::SetUp {
                    volume: v.name.clone(),
                    source,
                })?;
            self.store(&uid, &v.name, state);
        }
        Ok(())
    }

    /// Rewrite the configMap, secret, downwardAPI and projected volumes of an already set-up
    /// pod whose content changed (atomic swap), renewing service-account tokens that are due.
    /// Cheap when nothing changed (the API objects are still fetched). Returns the names of the
    /// volumes rewritten; on failures the other volumes are still refreshed and the first
    /// error is returned (old content stays in place).
    pub async fn refresh(
        &self,
        pod: &Pod,
        source: &dyn VolumeSource,
    ) -> Result<Vec<String>, StorageError> {
        let Some(uid) = pod.metadata.uid.clone() else {
            return Ok(Vec::new());
        };
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let mut updated = Vec::new();
        let mut first_err = None;
        for v in volumes.iter().filter(|v| is_dynamic(v)) {
            let Some(prev) = self.state(&uid, &v.name) else {
                continue; // not set up (yet)
            };
            let before = prev.payload_hash;
            match self.sync_volume(&uid, pod, v, source, Some(prev)).await {
                Ok(state) => {
                    if state.payload_hash != before {
                        updated.push(v.name.clone());
                    }
                    self.store(&uid, &v.name, state);
                }
                Err(source) => {
                    tracing::warn!(pod = %uid, volume = %v.name, error = %source, "refreshing volume");
                    first_err.get_or_insert(StorageError::SetUp {
                        volume: v.name.clone(),
                        source,
                    });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(updated),
        }
    }

    /// Prepare one volume; `prev` is its state from an earlier setup.
    async fn sync_volume(
        &self,
        uid: &str,
        pod: &Pod,
        v: &Volume,
        source: &dyn VolumeSource,
        prev: Option<VolumeState>,
    ) -> Result<VolumeState, VolumeError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let fs_group = fs_group(pod);
        let first_time = prev.is_none();
        let mut state = prev.unwrap_or_default();
        let plugin_dir = |plugin: &str| -> Result<PathBuf, VolumeError> {
            Ok(self
                .pod_dir(uid)?
                .join("volumes")
                .join(plugin)
                .join(&v.name))
        };

        if let Some(e) = &v.empty_dir {
            let dir = plugin_dir(EMPTY_DIR)?;
            if first_time || !dir.is_dir() {
                fs::create_dir_all(&dir).map_err(VolumeError::io("create directory", &dir))?;
                if e.medium.as_deref() == Some("Memory") {
                    let limit = e.size_limit.as_ref().and_then(Quantity::from_k8s);
                    let size = tmpfs_size(
                        pod,
                        limit.as_ref(),
                        self.options.node_allocatable.get("memory"),
                    );
                    self.ensure_tmpfs(&dir, size)?;
                }
                chmod(&dir, 0o777)?;
                if let Some(gid) = fs_group {
                    set_ownership(&dir, gid, false)?;
                }
            }
            state.host_path = dir;
            return Ok(state);
        }
        if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            check_type(&path, h.type_.as_deref())?;
            state.host_path = path;
            return Ok(state);
        }
        if let Some(c) = &v.persistent_volume_claim {
            let resolved = resolve_claim(source, namespace, &c.claim_name).await?;
            state.host_path = resolved.path;
            state.read_only = c.read_only.unwrap_or(false);
            return Ok(state);
        }
        if v.ephemeral.is_some() {
            let claim = format!(
                "{}-{}",
                pod.metadata.name.as_deref().unwrap_or_default(),
                v.name
            );
            state.host_path = resolve_claim(source, namespace, &claim).await?.path;
            return Ok(state);
        }

        let allocatable = &self.options.node_allocatable;
        let (plugin, memory, payload) = if let Some(c) = &v.config_map {
            let dm = mode(c.default_mode, DEFAULT_MODE)?;
            let optional = c.optional.unwrap_or(false);
            let p =
                payload::config_map(source, namespace, &c.name, c.items.as_deref(), dm, optional)
                    .await?;
            (CONFIG_MAP, false, p)
        } else if let Some(s) = &v.secret {
            let dm = mode(s.default_mode, DEFAULT_MODE)?;
            let name = s.secret_name.clone().unwrap_or_default();
            let optional = s.optional.unwrap_or(false);
            let p =
                payload::secret(source, namespace, &name, s.items.as_deref(), dm, optional).await?;
            (SECRET, self.options.memory_backed_secrets, p)
        } else if let Some(d) = &v.downward_api {
            let dm = mode(d.default_mode, DEFAULT_MODE)?;
            let items = d.items.as_deref().unwrap_or_default();
            (
                DOWNWARD_API,
                false,
                payload::downward_api(pod, items, dm, allocatable)?,
            )
        } else if let Some(p) = &v.projected {
            let payload = self.projected(pod, p, source, &mut state.tokens).await?;
            (PROJECTED, self.options.memory_backed_secrets, payload)
        } else {
            return Err(VolumeError::Unsupported(kind_name(v).to_string()));
        };

        let dir = plugin_dir(plugin)?;
        if first_time || !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(VolumeError::io("create directory", &dir))?;
            if memory {
                self.ensure_tmpfs(&dir, None)?;
            }
            chmod(&dir, 0o777)?;
        }
        state.host_path = dir.clone();
        state.read_only = true;
        state.atomic = true;
        let hash = hash_payload(&payload, fs_group);
        if state.payload_hash == Some(hash) && fs::symlink_metadata(dir.join(DATA_DIR)).is_ok() {
            return Ok(state);
        }
        let changed = {
            let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
            atomic::write(&dir, &payload, fs_group, self.clock.now())?
        };
        if changed {
            tracing::debug!(pod = %uid, volume = %v.name, files = payload.len(), "volume content written");
        }
        state.payload_hash = Some(hash);
        Ok(state)
    }

    /// Mount a tmpfs on `dir` unless one is there already.
    fn ensure_tmpfs(&self, dir: &Path, size: Option<u64>) -> Result<(), VolumeError> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mounted = self
            .mounter
            .is_mount_point(dir)
            .map_err(|source| VolumeError::Mount {
                op: "inspect mounts of",
                path: dir.to_path_buf(),
                source,
            })?;
        if !mounted {
            self.mounter
                .mount_tmpfs(dir, size)
                .map_err(|source| VolumeError::Mount {
                    op: "mount tmpfs on",
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Where a set-up volume of a pod is on the host.
    pub fn volume_path(&self, pod_uid: &str, volume: &str) -> Option<PathBuf> {
        self.state(pod_uid, volume).map(|s| s.host_path)
    }
}
