//! The CRI v1 client: `RuntimeService` and `ImageService` over containerd's unix socket (tonic),
//! implementing [`crate::ContainerRuntime`].
