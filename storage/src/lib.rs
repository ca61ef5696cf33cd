//! k8slite-storage: the volumes of pods on one node — emptyDir (disk or tmpfs), hostPath,
//! configMap and secret (atomic symlink swap on update), downwardAPI, projected, and PVCs bound
//! to hostPath PVs. The agent supplies the API objects through a trait; mounts sit behind a
//! trait with a recording fake.
//!
//! Layout, as the kubelet's: `<data-dir>/agent/pods/<uid>/volumes/<plugin>/<name>` with plugin
//! directories `kubernetes.io~empty-dir`, `kubernetes.io~configmap`, `kubernetes.io~secret`,
//! `kubernetes.io~downward-api`, `kubernetes.io~projected`. hostPath and persistent volumes are
//! bound from where they are.
//!
//! Use: one [`VolumeManager`] per node; [`VolumeManager::setup`] before the pod sandbox,
//! [`VolumeManager::mounts_for`] per container, [`VolumeManager::refresh`] periodically,
//! [`VolumeManager::teardown`] after the sandbox is removed; [`delete_volume_dir`] for released
//! `Delete` local-path volumes.

// Tests unwrap freely; library code never does (the workspace lint warns).
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod atomic;
pub mod downward;
mod error;
mod fsutil;
pub mod hostpath;
mod manager;
mod mounter;
mod mounts;
mod payload;
mod pv;
mod source;
pub mod token;

#[cfg(test)]
mod tests;

pub use atomic::{DATA_DIR, FileProjection, Payload, write as write_atomic};
pub use error::{SourceError, StorageError, VolumeError};
pub use manager::{CONFIG_MAP, DOWNWARD_API, EMPTY_DIR, Options, PROJECTED, SECRET, VolumeManager};
pub use mounter::{FakeMounter, HostMounter, MountCall, Mounter, mount_points_under};
pub use mounts::{HostMount, Propagation, expand};
pub use payload::DEFAULT_MODE;
pub use pv::{ResolvedClaim, delete_volume_dir, volume_path};
pub use source::{Clock, ManualClock, ServiceAccountToken, SystemClock, VolumeSource};
