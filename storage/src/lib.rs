//! k8slite-storage: the volumes of pods on one node — emptyDir (disk or tmpfs), hostPath,
//! configMap and secret (atomic symlink swap on update), downwardAPI, projected, and PVCs bound
//! to hostPath PVs. The agent supplies the API objects through a trait; mounts sit behind a
//! trait with a recording fake.
