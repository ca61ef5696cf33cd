//! Errors of the storage crate.
//!
//! [`StorageError`] is what callers see; its messages follow the kubelet's events
//! (`MountVolume.SetUp failed for volume "cfg" : configmap "x" not found`) so the agent can
//! record them as `FailedMount` events verbatim. [`VolumeError`] is why one volume failed.

use std::io;
use std::path::PathBuf;

/// An error of a [`crate::VolumeSource`] (the agent's API client), boxed.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Why setting up, refreshing or tearing down one volume failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A referenced, non-optional config map does not exist.
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    /// A referenced, non-optional secret does not exist.
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// An item names a key the config map does not have.
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKey(String),
    /// An item names a key the secret does not have.
    #[error("references non-existent secret key: {0}")]
    SecretKey(String),
    /// The claim does not exist.
    #[error("persistentvolumeclaim {0:?} not found")]
    ClaimNotFound(String),
    /// The claim is not bound to a volume yet.
    #[error("persistentvolumeclaim {0:?} is not bound")]
    ClaimNotBound(String),
    /// The volume a claim is bound to does not exist.
    #[error("persistentvolume {0:?} not found")]
    VolumeNotFound(String),
    /// The persistent volume is bound to another claim.
    #[error("persistentvolume {pv:?} is bound to another claim than {claim:?}")]
    VolumeBoundElsewhere {
        /// The persistent volume.
        pv: String,
        /// The claim the pod names.
        claim: String,
    },
    /// The persistent volume is of a kind this node cannot mount.
    #[error("persistentvolume {0:?}: only hostPath and local volumes are supported")]
    VolumeKind(String),
    /// The API (through the agent's source) failed.
    #[error("{what}: {source}")]
    Source {
        /// What was fetched (`get configmap "x"`).
        what: String,
        /// The client's error.
        #[source]
        source: SourceError,
    },
    /// A hostPath type check failed (`hostPath type check failed: /x is not a directory`).
    #[error("hostPath type check failed: {path} is not a {expected}")]
    HostPathType {
        /// The host path.
        path: String,
        /// What it should be (`directory`, `file`, `socket file`, `character device`, …).
        expected: &'static str,
    },
    /// A hostPath volume names an unknown type.
    #[error("invalid hostPath type {0:?}")]
    HostPathTypeName(String),
    /// A file path in a volume (item path, subPath) is not acceptable.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file mode is outside 0..=0777.
    #[error("invalid file mode {0:#o} (must be within 0 and 0777)")]
    InvalidMode(i32),
    /// A downward API field path is not supported.
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    /// A downward API resource field is not supported, or names a missing container.
    #[error("resourceFieldRef: {0}")]
    ResourceField(String),
    /// A quantity could not be parsed.
    #[error("invalid quantity {0:?}")]
    Quantity(String),
    /// A volume type this node does not implement.
    #[error("unsupported volume type ({0})")]
    Unsupported(String),
    /// A service account token could not be obtained.
    #[error("failed to fetch token: {0}")]
    Token(#[source] SourceError),
    /// A mount or unmount failed.
    #[error("{op} {}: {source}", path.display())]
    Mount {
        /// `mount tmpfs on` or `unmount`.
        op: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done (`create directory`, `write`, `remove`, …).
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// Teardown found a mount point it could not remove (it refuses to cross it).
    #[error("{} is still a mount point; refusing to remove what is below it", .0.display())]
    StillMounted(PathBuf),
    /// A path would leave the directory it must stay in.
    #[error("{} is outside {}", path.display(), root.display())]
    Escapes {
        /// The offending path (resolved).
        path: PathBuf,
        /// Where it must stay.
        root: PathBuf,
    },
}

impl VolumeError {
    /// An [`VolumeError::Io`] builder for `map_err`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}

/// What failed in the storage crate, worded like the kubelet's events.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Setting up a volume failed (a `FailedMount` event).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    SetUp {
        /// The pod's volume name.
        volume: String,
        /// Why.
        #[source]
        source: VolumeError,
    },
    /// A container names a volume the pod does not have (or that was not set up).
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    UnknownVolume {
        /// The volume name of the volumeMount.
        volume: String,
        /// The container.
        container: String,
    },
    /// A volumeMount's subPath could not be prepared.
    #[error(
        "failed to prepare subPath for volumeMount {volume:?} of container {container:?}: {source}"
    )]
    SubPath {
        /// The volume name of the volumeMount.
        volume: String,
        /// The container.
        container: String,
        /// Why.
        #[source]
        source: VolumeError,
    },
    /// The pod has no uid (it never came from the API).
    #[error("pod {0:?} has no uid")]
    NoUid(String),
    /// The pods directory could not be prepared.
    #[error("pods directory: {0}")]
    PodsDir(#[source] VolumeError),
    /// Tearing down a pod's volumes failed.
    #[error("UnmountVolume.TearDown failed for pod {pod_uid:?} : {source}")]
    TearDown {
        /// The pod uid.
        pod_uid: String,
        /// Why.
        #[source]
        source: VolumeError,
    },
    /// Deleting a released local persistent volume failed or was refused.
    #[error("delete persistentvolume {pv:?}: {source}")]
    DeleteVolume {
        /// The persistent volume.
        pv: String,
        /// Why.
        #[source]
        source: VolumeError,
    },
}

impl StorageError {
    /// The event reason the kubelet records for this error (`FailedMount`, `FailedUnMount`, …).
    pub fn event_reason(&self) -> &'static str {
        match self {
            Self::SetUp { .. } | Self::UnknownVolume { .. } | Self::NoUid(_) => "FailedMount",
            Self::SubPath { .. } => "Failed",
            Self::TearDown { .. } => "FailedUnMount",
            Self::DeleteVolume { .. } => "VolumeFailedDelete",
            Self::PodsDir(_) => "FailedMount",
        }
    }
}
