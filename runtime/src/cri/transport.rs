//! The gRPC channel to a CRI runtime's unix socket.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::RuntimeError;

/// The socket path named by a CRI endpoint: `unix:///run/k8slite/containerd/containerd.sock`
/// or the bare absolute path. A relative path is refused: a `unix://` URL with a relative path
/// parses as a host name and the connection silently hangs.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, RuntimeError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(RuntimeError::Unavailable(format!(
            "container runtime endpoint {endpoint:?}: not an absolute unix socket path"
        )));
    }
    Ok(path.to_path_buf())
}

/// A lazily connecting channel over the unix socket at `socket`. Every new HTTP/2 connection
/// (the first call, and after the runtime restarted) dials the socket again.
pub fn channel(socket: &Path) -> Result<Channel, RuntimeError> {
    let socket = socket.to_path_buf();
    // The authority is not used to route anything; it only has to be a valid URI.
    let endpoint = Endpoint::try_from("http://localhost")
        .map_err(|e| RuntimeError::Unavailable(format!("CRI endpoint: {e}")))?;
    let connector = tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(&socket).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
