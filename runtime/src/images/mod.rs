//! Image import with containerd-client: docker-archive and OCI-layout tarballs (`.tar`,
//! `.tar.gz`, `.tar.zst`) from the images directory, at start and when files appear; k8slite's
//! own pause image.
