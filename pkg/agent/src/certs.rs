//! The node's own certificates: its client certificate (`system:node:<name>`, group
//! `system:nodes`) and kubelet serving certificate, obtained from the server at join and kept
//! in `<data-dir>/agent/certs/` for restarts:
//!
//! | file | what |
//! |---|---|
//! | `client-kubelet.crt` / `.key` | client certificate chain (leaf, client CA) and key (0600) |
//! | `serving-kubelet.crt` / `.key` | kubelet API serving certificate chain (leaf, server CA) and key (0600) |
//! | `server-ca.crt` | the server CA the API is verified with |
//! | `client-ca.crt` | the client CA the kubelet API verifies the API server's client certificate with |
//!
//! The agent generates the keys and sends only CSRs ([`k8slite_pki::node_cert_request`]).
//! Stored files are reused when they still fit ([`load_reusable`]): issued for this node name
//! by the expected server CA (and the client certificate by the stored client CA), keys
//! matching, the serving certificate covering the node's addresses, and more than 30 days of
//! validity left. Otherwise new ones are issued by a [`CertIssuer`]: over HTTPS with the join
//! token ([`crate::connect`]) or, for the agent embedded in the server, straight from the
//! cluster PKI ([`LocalIssuer`], [`ensure_local`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8slite_pki::{ClusterPki, NODES_GROUP, NodeCertRequest, NodeCertResponse, inspect_leaf};

use crate::{Error, Result};

/// Certificates with less validity left than this are renewed at start.
pub const RENEW_WITHIN: Duration = Duration::from_secs(30 * 86_400);

/// File names under the certificate directory.
pub const CLIENT_CERT: &str = "client-kubelet.crt";
/// Key of [`CLIENT_CERT`].
pub const CLIENT_KEY: &str = "client-kubelet.key";
/// Kubelet serving certificate.
pub const SERVING_CERT: &str = "serving-kubelet.crt";
/// Key of [`SERVING_CERT`].
pub const SERVING_KEY: &str = "serving-kubelet.key";
/// Server CA.
pub const SERVER_CA: &str = "server-ca.crt";
/// Client CA.
pub const CLIENT_CA: &str = "client-ca.crt";

/// The certificate directory of an agent data dir: `<data-dir>/agent/certs`.
pub fn certs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("certs")
}

/// What the node's certificates must cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCertSpec {
    /// Node name (the client certificate is `system:node:<name>`).
    pub node_name: String,
    /// Addresses (IPs or DNS names) the serving certificate must cover besides the node name,
    /// `localhost` and 127.0.0.1.
    pub addresses: Vec<String>,
}

/// A node's certificates as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeCerts {
    /// Directory holding the files.
    pub dir: PathBuf,
    /// Client certificate chain, PEM.
    pub client_cert_pem: String,
    /// Client key, PEM.
    pub client_key_pem: String,
    /// Serving certificate chain, PEM.
    pub serving_cert_pem: String,
    /// Serving key, PEM.
    pub serving_key_pem: String,
    /// Server CA, PEM.
    pub server_ca_pem: String,
    /// Client CA, PEM.
    pub client_ca_pem: String,
    /// Serial number of the client certificate (colon-separated hex).
    pub client_serial: String,
    /// Serial number of the serving certificate.
    pub serving_serial: String,
    /// Whether they were issued just now (false: reused from disk).
    pub fresh: bool,
}

impl std::fmt::Debug for NodeCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCerts")
            .field("dir", &self.dir)
            .field("client_serial", &self.client_serial)
            .field("serving_serial", &self.serving_serial)
            .field("fresh", &self.fresh)
            .finish_non_exhaustive()
    }
}

impl NodeCerts {
    /// Path of one of the files ([`CLIENT_CERT`], …).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A `kube::Config` for `server` (`https://host:port`) that verifies the API with the
    /// stored server CA and authenticates with the node client certificate.
    pub fn kube_config(&self, server: &http::Uri) -> Result<kube::Config> {
        let der =
            k8slite_pki::first_cert_der(&self.server_ca_pem).map_err(|source| Error::Pki {
                what: format!("reading {}", self.path(SERVER_CA).display()),
                source,
            })?;
        let mut cfg = kube::Config::new(server.clone());
        cfg.root_cert = Some(vec![der]);
        cfg.auth_info = kube::config::AuthInfo {
            client_certificate: Some(self.path(CLIENT_CERT).display().to_string()),
            client_key: Some(self.path(CLIENT_KEY).display().to_string()),
            ..kube::config::AuthInfo::default()
        };
        cfg.connect_timeout = Some(Duration::from_secs(10));
        Ok(cfg)
    }
}

/// Issues node certificates for a request.
#[async_trait::async_trait]
pub trait CertIssuer: Send + Sync {
    /// Sign the certificates `req` asks for.
    async fn issue(&self, req: &NodeCertRequest) -> Result<NodeCertResponse>;
}

/// Issues from the cluster PKI in this process (the agent embedded in the server).
pub struct LocalIssuer<'a>(pub &'a ClusterPki);

#[async_trait::async_trait]
impl CertIssuer for LocalIssuer<'_> {
    async fn issue(&self, req: &NodeCertRequest) -> Result<NodeCertResponse> {
        self.0.sign_node_certs(req).map_err(|source| Error::Pki {
            what: format!("signing node certificates for {}", req.node_name),
            source,
        })
    }
}

fn read(dir: &Path, file: &str) -> std::result::Result<String, String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
}

fn expires_soon(not_after: i64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let limit = now.saturating_add(RENEW_WITHIN.as_secs());
    i64::try_from(limit).map_or(true, |l| not_after <= l)
}

/// The stored certificates in `dir` if they still fit `spec` and the server CA
/// `expected_server_ca` (byte-equal PEM); otherwise the reason they do not.
pub fn load_reusable(
    dir: &Path,
    spec: &NodeCertSpec,
    expected_server_ca: &str,
) -> std::result::Result<NodeCerts, String> {
    let server_ca_pem = read(dir, SERVER_CA)?;
    if server_ca_pem != expected_server_ca {
        return Err("the server CA changed".into());
    }
    let client_ca_pem = read(dir, CLIENT_CA)?;
    let client_cert_pem = read(dir, CLIENT_CERT)?;
    let client_key_pem = read(dir, CLIENT_KEY)?;
    let serving_cert_pem = read(dir, SERVING_CERT)?;
    let serving_key_pem = read(dir, SERVING_KEY)?;
    let client = inspect_leaf(&client_cert_pem, &client_key_pem, &client_ca_pem)
        .map_err(|e| format!("{CLIENT_CERT}: {e}"))?;
    let user = k8slite_pki::node_user(&spec.node_name);
    if client.identity.user != user || !client.identity.groups.iter().any(|g| g == NODES_GROUP) {
        return Err(format!(
            "{CLIENT_CERT} is for {:?} in {:?}, not {user:?} in {NODES_GROUP}",
            client.identity.user, client.identity.groups
        ));
    }
    let serving = inspect_leaf(&serving_cert_pem, &serving_key_pem, &server_ca_pem)
        .map_err(|e| format!("{SERVING_CERT}: {e}"))?;
    let wanted = std::iter::once(spec.node_name.as_str())
        .chain(spec.addresses.iter().map(String::as_str))
        .filter_map(k8slite_pki::normalize_san);
    for w in wanted {
        if !serving.sans.contains(&w) {
            return Err(format!("{SERVING_CERT} does not cover {w}"));
        }
    }
    for (file, not_after) in [
        (CLIENT_CERT, client.not_after),
        (SERVING_CERT, serving.not_after),
    ] {
        if expires_soon(not_after) {
            return Err(format!("{file} expires within 30 days"));
        }
    }
    Ok(NodeCerts {
        dir: dir.to_path_buf(),
        client_cert_pem,
        client_key_pem,
        serving_cert_pem,
        serving_key_pem,
        server_ca_pem,
        client_ca_pem,
        client_serial: client.serial,
        serving_serial: serving.serial,
        fresh: false,
    })
}

fn write(dir: &Path, file: &str, data: &str, mode: u32) -> Result<()> {
    k8slite_pki::write_atomic(&dir.join(file), data.as_bytes(), mode).map_err(|source| Error::Pki {
        what: format!("storing node certificate {file}"),
        source,
    })
}

/// Ask `issuer` for new certificates for `spec` and store them in `dir` (keys 0600, first).
pub async fn issue_and_store(
    dir: &Path,
    spec: &NodeCertSpec,
    issuer: &dyn CertIssuer,
) -> Result<NodeCerts> {
    let pki_err = |what: String| move |source| Error::Pki { what, source };
    let (req, keys) =
        k8slite_pki::node_cert_request(&spec.node_name, &spec.addresses).map_err(pki_err(
            format!("preparing certificate requests for {}", spec.node_name),
        ))?;
    let resp = issuer.issue(&req).await?;
    // Check what came back before storing it.
    let client = inspect_leaf(&resp.client_cert, &keys.client_key_pem, &resp.client_ca)
        .map_err(|reason| Error::Join(format!("issued client certificate: {reason}")))?;
    let serving = inspect_leaf(&resp.serving_cert, &keys.serving_key_pem, &resp.server_ca)
        .map_err(|reason| Error::Join(format!("issued serving certificate: {reason}")))?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: "creating the certificate directory".into(),
        path: dir.to_path_buf(),
        source,
    })?;
    write(dir, CLIENT_KEY, &keys.client_key_pem, 0o600)?;
    write(dir, SERVING_KEY, &keys.serving_key_pem, 0o600)?;
    write(dir, CLIENT_CERT, &resp.client_cert, 0o644)?;
    write(dir, SERVING_CERT, &resp.serving_cert, 0o644)?;
    write(dir, CLIENT_CA, &resp.client_ca, 0o644)?;
    write(dir, SERVER_CA, &resp.server_ca, 0o644)?;
    tracing::info!(
        node = %spec.node_name,
        dir = %dir.display(),
        client_serial = %client.serial,
        "stored new node certificates"
    );
    Ok(NodeCerts {
        dir: dir.to_path_buf(),
        client_cert_pem: resp.client_cert,
        client_key_pem: keys.client_key_pem,
        serving_cert_pem: resp.serving_cert,
        serving_key_pem: keys.serving_key_pem,
        server_ca_pem: resp.server_ca,
        client_ca_pem: resp.client_ca,
        client_serial: client.serial,
        serving_serial: serving.serial,
        fresh: true,
    })
}

/// The stored certificates if they fit (see [`load_reusable`]), else new ones from `issuer`.
pub async fn ensure(
    dir: &Path,
    spec: &NodeCertSpec,
    expected_server_ca: &str,
    issuer: &dyn CertIssuer,
) -> Result<NodeCerts> {
    match load_reusable(dir, spec, expected_server_ca) {
        Ok(c) => {
            tracing::info!(node = %spec.node_name, serial = %c.client_serial, "reusing stored node certificates");
            Ok(c)
        }
        Err(reason) => {
            tracing::info!(node = %spec.node_name, %reason, "requesting node certificates");
            issue_and_store(dir, spec, issuer).await
        }
    }
}

/// For the agent embedded in the server: the same files as a joining agent gets, issued
/// straight from `pki` (no HTTP, no token). Reuses stored ones that still fit.
pub async fn ensure_local(dir: &Path, spec: &NodeCertSpec, pki: &ClusterPki) -> Result<NodeCerts> {
    ensure(dir, spec, pki.server_ca_pem(), &LocalIssuer(pki)).await
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn pki(dir: &Path) -> ClusterPki {
        ClusterPki::load_or_create(
            dir,
            &k8slite_pki::PkiOptions {
                cluster_domain: "cluster.local".into(),
                service_ip: "10.43.0.1".parse().expect("ip"),
                sans: vec![],
                hostname: "server".into(),
            },
        )
        .expect("pki")
    }

    fn spec(name: &str, addrs: &[&str]) -> NodeCertSpec {
        NodeCertSpec {
            node_name: name.into(),
            addresses: addrs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn issued_once_reused_then_reissued_when_unfit() {
        let tmp = tempfile::tempdir().expect("tmp");
        let pki = pki(&tmp.path().join("tls"));
        let dir = certs_dir(&tmp.path().join("data"));
        let s = spec("n1", &["192.0.2.1"]);
        let a = ensure_local(&dir, &s, &pki).await.expect("issue");
        assert!(a.fresh);
        for f in [CLIENT_KEY, SERVING_KEY] {
            let mode = std::fs::metadata(dir.join(f))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        for f in [CLIENT_CERT, SERVING_CERT, SERVER_CA, CLIENT_CA] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.join(SERVER_CA)).expect("ca"),
            pki.server_ca_pem()
        );

        let b = ensure_local(&dir, &s, &pki).await.expect("reuse");
        assert!(!b.fresh);
        assert_eq!(a.client_serial, b.client_serial);
        assert_eq!(a.serving_serial, b.serving_serial);

        // Another node name, a new address, another server CA, a damaged key: re-issued.
        let c = ensure_local(&dir, &spec("n2", &["192.0.2.1"]), &pki)
            .await
            .expect("other name");
        assert!(c.fresh);
        let d = ensure_local(&dir, &spec("n2", &["192.0.2.1", "192.0.2.9"]), &pki)
            .await
            .expect("new address");
        assert!(d.fresh);
        let reason = load_reusable(&dir, &spec("n2", &[]), "other CA").expect_err("ca changed");
        assert!(reason.contains("server CA changed"), "{reason}");
        let other = pki_in(&tmp.path().join("tls2"));
        let e = ensure_local(&dir, &spec("n2", &[]), &other)
            .await
            .expect("new CA");
        assert!(e.fresh);
        std::fs::write(dir.join(CLIENT_KEY), "junk").expect("damage");
        let reason =
            load_reusable(&dir, &spec("n2", &[]), other.server_ca_pem()).expect_err("bad key");
        assert!(reason.contains(CLIENT_CERT), "{reason}");
        std::fs::remove_file(dir.join(SERVING_CERT)).expect("rm");
        let reason =
            load_reusable(&dir, &spec("n2", &[]), other.server_ca_pem()).expect_err("missing");
        assert!(reason.contains(SERVING_CERT), "{reason}");
    }

    fn pki_in(dir: &Path) -> ClusterPki {
        pki(dir)
    }

    #[test]
    fn thirty_days_is_too_close() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        assert!(expires_soon(now + 29 * 86_400));
        assert!(!expires_soon(now + 31 * 86_400));
    }

    #[tokio::test]
    async fn kube_config_uses_the_client_certificate_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        let pki = pki(&tmp.path().join("tls"));
        let dir = tmp.path().join("certs");
        let c = ensure_local(&dir, &spec("n1", &[]), &pki)
            .await
            .expect("issue");
        let uri: http::Uri = "https://127.0.0.1:6443".parse().expect("uri");
        let cfg = c.kube_config(&uri).expect("config");
        assert_eq!(
            cfg.auth_info.client_certificate.as_deref(),
            Some(dir.join(CLIENT_CERT).to_str().expect("utf8"))
        );
        assert!(cfg.auth_info.token.is_none());
        assert_eq!(cfg.root_cert.map(|r| r.len()), Some(1));
        kube::Client::try_from(c.kube_config(&uri).expect("config")).expect("client builds");
    }
}
