//! A container's mounts from the pod's set-up volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::VolumeManager;
use crate::StorageError;
use crate::mounts::{HostMount, Propagation, expand, sub_path};

impl VolumeManager {
    /// The bind mounts of `container` (its volumeMounts), after [`Self::setup`] of `pod`. `env`
    /// is the container's resolved environment, for `subPathExpr`. subPath directories are
    /// created when missing.
    pub fn mounts_for(
        &self,
        pod: &Pod,
        container: &Container,
        env: &BTreeMap<String, String>,
    ) -> Result<Vec<HostMount>, StorageError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let volumes = pods.get(uid);
        let mut out = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let Some(state) = volumes.and_then(|v| v.get(&vm.name)) else {
                return Err(StorageError::UnknownVolume {
                    volume: vm.name.clone(),
                    container: container.name.clone(),
                });
            };
            let sub = match (&vm.sub_path, &vm.sub_path_expr) {
                (Some(s), _) if !s.is_empty() => Some(s.clone()),
                (_, Some(e)) if !e.is_empty() => Some(expand(e, env)),
                _ => None,
            };
            let host_path = match sub {
                Some(s) => sub_path(&state.host_path, &s, !state.atomic).map_err(|source| {
                    StorageError::SubPath {
                        volume: vm.name.clone(),
                        container: container.name.clone(),
                        source,
                    }
                })?,
                None => state.host_path.clone(),
            };
            out.push(HostMount {
                volume: vm.name.clone(),
                container_path: vm.mount_path.clone(),
                host_path,
                read_only: state.read_only || vm.read_only.unwrap_or(false),
                propagation: Propagation::from_api(vm.mount_propagation.as_deref()),
            });
        }
        Ok(out)
    }
}
