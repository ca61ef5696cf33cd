//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: proxied to the node's kubelet
//! API (and `pods/proxy`, `services/proxy`, `nodes/proxy`: see `proxy`), with WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`) towards kubectl ≥ 1.30,
//! plain SPDY/3.1 towards older kubectl, and for port-forward SPDY, plain or tunnelled in a
//! WebSocket (kubectl ≥ 1.31).
//!
//! The API server dials the kubelet of the pod's node (InternalIP and the node's reported
//! kubelet port) over TLS, verifying the kubelet's serving certificate against the server CA
//! and presenting its kubelet-client certificate ([`KUBELET_CLIENT_CN`] in `system:masters`,
//! see [`load_or_issue_kubelet_client`]); the server passes it with
//! [`crate::ApiServer::set_kubelet_client`].

mod channel;
mod dial;
mod exec;
mod exec_spdy;
mod logs;
mod portforward;
mod proxy;
mod spdy_upgrade;
mod target;
mod ws;

pub(crate) use dial::KubeletDialer;
pub(crate) use k8slite_api::spdy;

use std::path::Path;
use std::sync::Arc;

use http::{Request, Response};
use k8slite_api::ApiError;

use crate::ApiServer;
use crate::body::Body;
use crate::handler::ResourceRequest;

/// Common name of the API server's client certificate towards kubelets.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";
/// File names (in the server's TLS directory) of that certificate and key.
pub const KUBELET_CLIENT_CERT_FILE: &str = "kubelet-client.crt";
/// See [`KUBELET_CLIENT_CERT_FILE`].
pub const KUBELET_CLIENT_KEY_FILE: &str = "kubelet-client.key";

/// What the API server needs to reach kubelets.
#[derive(Clone)]
pub struct KubeletClientConfig {
    /// CA (PEM) that issued the kubelets' serving certificates (the cluster's server CA).
    pub server_ca_pem: String,
    /// The API server's client certificate chain (PEM).
    pub client_cert_pem: String,
    /// Its key (PEM).
    pub client_key_pem: String,
}

impl std::fmt::Debug for KubeletClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClientConfig")
            .finish_non_exhaustive()
    }
}

/// What failed setting up the kubelet client.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The TLS configuration could not be built.
    #[error("kubelet client TLS configuration: {0}")]
    Tls(#[source] k8slite_pki::PkiError),
    /// Issuing the client certificate failed.
    #[error("issuing the kubelet client certificate: {0}")]
    Issue(#[source] k8slite_pki::PkiError),
    /// Reading or writing the certificate files failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// File.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Set twice.
    #[error("the kubelet client is already configured")]
    AlreadySet,
}

/// The API server's kubelet-client certificate from `dir` (`kubelet-client.crt/.key`), issued
/// from the cluster's client CA (`kube-apiserver-kubelet-client` in `system:masters`) and
/// written there (key 0600) when absent. Returns the config for
/// [`crate::ApiServer::set_kubelet_client`].
pub fn load_or_issue_kubelet_client(
    pki: &k8slite_pki::ClusterPki,
    dir: &Path,
) -> Result<KubeletClientConfig, StreamingError> {
    let cert_path = dir.join(KUBELET_CLIENT_CERT_FILE);
    let key_path = dir.join(KUBELET_CLIENT_KEY_FILE);
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| StreamingError::Io { what, path, source }
    };
    let pair = match (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        (Ok(cert_pem), Ok(key_pem)) => k8slite_pki::CertAndKey { cert_pem, key_pem },
        _ => {
            let pair = pki
                .issue_client_cert(KUBELET_CLIENT_CN, &["system:masters".to_string()])
                .map_err(StreamingError::Issue)?;
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
            write_private(&key_path, &pair.key_pem).map_err(io("writing", &key_path))?;
            std::fs::write(&cert_path, &pair.cert_pem).map_err(io("writing", &cert_path))?;
            pair
        }
    };
    Ok(KubeletClientConfig {
        server_ca_pem: pki.server_ca_pem().to_string(),
        client_cert_pem: pair.cert_pem,
        client_key_pem: pair.key_pem,
    })
}

fn write_private(path: &Path, data: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl ApiServer {
    /// Let the server reach kubelets (pods/log, exec, attach, portforward). Without it those
    /// requests answer 503.
    pub fn set_kubelet_client(&self, cfg: KubeletClientConfig) -> Result<(), StreamingError> {
        let dialer = dial::KubeletDialer::new(&cfg)?;
        self.kubelet_dialer
            .set(Arc::new(dialer))
            .map_err(|_| StreamingError::AlreadySet)
    }
}

fn dialer(server: &ApiServer) -> Result<Arc<dial::KubeletDialer>, ApiError> {
    server.kubelet_dialer.get().cloned().ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "this API server has no kubelet client configured",
        )
    })
}

/// A kubelet's error answer as a Status (its text as the message, its code kept).
pub(crate) fn kubelet_error(code: u16, body: String) -> ApiError {
    let msg = if body.is_empty() {
        format!("kubelet answered {code}")
    } else {
        body
    };
    match code {
        400 => ApiError::bad_request(msg),
        404 => ApiError::new(404, "NotFound", msg),
        403 => ApiError::forbidden_msg(msg),
        _ => ApiError::internal(msg),
    }
}

/// The answer to an upgrade this server does not speak.
pub(crate) fn upgrade_unsupported<B>(req: &Request<B>) -> ApiError {
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    ApiError::bad_request(format!(
        "upgrade {upgrade:?} is not supported: k8slite streams exec/attach over WebSocket \
         (v5.channel.k8s.io/v4.channel.k8s.io) or SPDY/3.1 (v4.channel.k8s.io), and \
         port-forward over SPDY/3.1 (portforward.k8s.io), plain or tunnelled in a WebSocket"
    ))
}

/// Whether `sub` of `plural` is served here.
pub(crate) fn is_streaming(plural: &str, sub: Option<&str>) -> bool {
    (plural == "pods" && matches!(sub, Some("log" | "exec" | "attach" | "portforward")))
        || (sub == Some("proxy") && proxy::serves(plural))
}

/// Serve a streaming subresource (authorization already done by the caller).
pub(crate) async fn handle<B>(
    server: &Arc<ApiServer>,
    r: ResourceRequest,
    req: Request<B>,
) -> Response<Body>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let res = match (req.method().as_str(), r.sub()) {
        (_, Some("proxy")) => proxy::serve(server, &r, req).await,
        ("GET", Some("log")) => logs::log(server, &r).await,
        ("GET" | "POST", Some("exec")) => exec::exec(server, &r, req, false).await,
        ("GET" | "POST", Some("attach")) => exec::exec(server, &r, req, true).await,
        ("GET" | "POST", Some("portforward")) => portforward::serve(server, &r, req).await,
        (m, s) => Err(ApiError::method_not_allowed(
            m,
            &format!("pods/{}", s.unwrap_or_default()),
        )),
    };
    res.unwrap_or_else(|e| crate::body::error_response(&e))
}
