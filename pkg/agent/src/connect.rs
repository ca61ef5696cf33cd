//! Joining: fetch the server's CA bundle from `/cacerts` (without trusting it yet), check it
//! against the join token's `K10<sha256>` hash, and only then send the token — to
//! `POST /v1-k8slite/node-certs` with two CSRs ([`join`]): the answer is the node's client
//! and serving certificates, stored under `<data-dir>/agent/certs/` ([`crate::certs`]); the
//! API client then authenticates with the client certificate (`system:node:<name>`).
//!
//! [`connect`] (the join token itself as bearer token, group `system:nodes`) remains for
//! `--fake-nodes N`, where one client serves many simulated nodes.

use std::path::PathBuf;
use std::time::Duration;

use k8slite_pki::{JoinToken, NodeCertRequest, NodeCertResponse};
use kube::config::AuthInfo;
use tokio_util::sync::CancellationToken;

use crate::certs::{self, CertIssuer, NodeCertSpec, NodeCerts};
use crate::{Error, Result};

fn server_uri(server: &str) -> Result<http::Uri> {
    let uri: http::Uri = server
        .trim_end_matches('/')
        .parse()
        .map_err(|e| Error::ServerUrl {
            url: server.to_string(),
            reason: format!("{e}"),
        })?;
    if uri.scheme_str() != Some("https") {
        return Err(Error::ServerUrl {
            url: server.to_string(),
            reason: "the scheme must be https".into(),
        });
    }
    Ok(uri)
}

/// Fetch the PEM CA bundle the server serves at `/cacerts`, over TLS that does not verify the
/// server (the caller checks the bundle against the token before trusting it).
pub async fn fetch_cacerts(server: &str) -> Result<String> {
    let uri = server_uri(server)?;
    let mut cfg = kube::Config::new(uri);
    cfg.accept_invalid_certs = true;
    cfg.connect_timeout = Some(Duration::from_secs(10));
    cfg.read_timeout = Some(Duration::from_secs(10));
    let client =
        kube::Client::try_from(cfg).map_err(Error::kube("building the bootstrap client"))?;
    let req = http::Request::get("/cacerts")
        .body(Vec::new())
        .map_err(|e| Error::ServerUrl {
            url: server.to_string(),
            reason: e.to_string(),
        })?;
    client
        .request_text(req)
        .await
        .map_err(Error::kube(format!("fetching {server}/cacerts")))
}

/// A client for `server` authenticated by `token`, after checking the served CA against the
/// token's CA hash. A token without a hash (the bare secret) trusts the served CA as it is,
/// with a warning, as k3s does.
pub async fn connect(server: &str, token: &str) -> Result<kube::Client> {
    let parsed = JoinToken::parse(token).map_err(Error::Token)?;
    let pem = fetch_cacerts(server).await?;
    if !parsed.verify_ca(pem.as_bytes()) {
        return Err(Error::CaMismatch(server.to_string()));
    }
    if parsed.ca_hash.is_none() {
        tracing::warn!(
            "the join token does not pin the server CA (K10<hash>::server:<secret>); trusting the CA the server presented"
        );
    }
    let der = k8slite_pki::first_cert_der(&pem).map_err(|source| Error::CaUnusable {
        url: server.to_string(),
        source,
    })?;
    let mut cfg = kube::Config::new(server_uri(server)?);
    cfg.root_cert = Some(vec![der]);
    cfg.auth_info = AuthInfo {
        token: Some(token.trim().to_string().into()),
        ..AuthInfo::default()
    };
    cfg.connect_timeout = Some(Duration::from_secs(10));
    // Watches stay open; kube's default read timeout (295 s) is kept for them.
    kube::Client::try_from(cfg).map_err(Error::kube("building the API client"))
}

/// A client that trusts exactly `ca_pem` (already checked against the token) and sends no
/// credentials.
fn pinned_client(server: &str, ca_pem: &str) -> Result<kube::Client> {
    let der = k8slite_pki::first_cert_der(ca_pem).map_err(|source| Error::CaUnusable {
        url: server.to_string(),
        source,
    })?;
    let mut cfg = kube::Config::new(server_uri(server)?);
    cfg.root_cert = Some(vec![der]);
    cfg.connect_timeout = Some(Duration::from_secs(10));
    cfg.read_timeout = Some(Duration::from_secs(30));
    kube::Client::try_from(cfg).map_err(Error::kube("building the join client"))
}

/// Fetch `/cacerts` and check it against the token's pin (warning when the token pins
/// nothing). Nothing secret is sent.
async fn fetch_pinned_ca(server: &str, token: &JoinToken) -> Result<String> {
    let pem = fetch_cacerts(server).await?;
    if !token.verify_ca(pem.as_bytes()) {
        return Err(Error::CaMismatch(server.to_string()));
    }
    if token.ca_hash.is_none() {
        tracing::warn!(
            "the join token does not pin the server CA (K10<hash>::server:<secret>); trusting the CA the server presented"
        );
    }
    Ok(pem)
}

/// Issues node certificates over HTTPS: `POST /v1-k8slite/node-certs` with the join token as
/// bearer token, to a server verified with the CA pinned by that token.
pub struct JoinIssuer {
    server: String,
    client: kube::Client,
    token: String,
}

impl JoinIssuer {
    /// An issuer for `server`, whose CA `ca_pem` the caller has checked against `token`.
    pub fn new(server: &str, ca_pem: &str, token: &str) -> Result<Self> {
        Ok(Self {
            server: server.to_string(),
            client: pinned_client(server, ca_pem)?,
            token: token.trim().to_string(),
        })
    }
}

#[async_trait::async_trait]
impl CertIssuer for JoinIssuer {
    async fn issue(&self, req: &NodeCertRequest) -> Result<NodeCertResponse> {
        let body = serde_json::to_vec(req)
            .map_err(|e| Error::Join(format!("encoding the certificate request: {e}")))?;
        let http_req = http::Request::post(k8slite_pki::NODE_CERTS_PATH)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| Error::Join(format!("building the certificate request: {e}")))?;
        self.client
            .request::<NodeCertResponse>(http_req)
            .await
            .map_err(Error::kube(format!(
                "requesting node certificates from {}{}",
                self.server,
                k8slite_pki::NODE_CERTS_PATH
            )))
    }
}

/// How an agent joins with its own certificates.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// Server URL (`https://host:6443`).
    pub server: String,
    /// Join token (`K10<ca hash>::server:<secret>`, or the bare secret).
    pub token: String,
    /// Node name and addresses the certificates are for.
    pub spec: NodeCertSpec,
    /// Where the certificates live: [`certs::certs_dir`] of the data dir.
    pub certs_dir: PathBuf,
}

/// A joined agent: an API client authenticated as `system:node:<name>`, and its certificates.
#[derive(Clone)]
pub struct Joined {
    /// The API client (server CA pinned, node client certificate).
    pub client: kube::Client,
    /// The node's certificates (for the kubelet API: serving certificate and client CA).
    pub certs: NodeCerts,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

/// Join once: reuse stored certificates when the token pins their server CA and they still fit
/// (no network needed), else fetch and pin the CA, then request new certificates with the
/// token. `renew` skips the reuse (the server refused the stored certificate).
pub async fn join(opts: &JoinOptions, renew: bool) -> Result<Joined> {
    let token = JoinToken::parse(&opts.token).map_err(Error::Token)?;
    let uri = server_uri(&opts.server)?;
    if !renew
        && token.ca_hash.is_some()
        && let Ok(stored) = std::fs::read_to_string(opts.certs_dir.join(certs::SERVER_CA))
        && token.verify_ca(stored.as_bytes())
    {
        match certs::load_reusable(&opts.certs_dir, &opts.spec, &stored) {
            Ok(c) => {
                tracing::info!(node = %opts.spec.node_name, serial = %c.client_serial, "reusing stored node certificates");
                let client = kube::Client::try_from(c.kube_config(&uri)?)
                    .map_err(Error::kube("building the API client"))?;
                return Ok(Joined { client, certs: c });
            }
            Err(reason) => {
                tracing::info!(node = %opts.spec.node_name, %reason, "stored node certificates unusable")
            }
        }
    }
    let ca = fetch_pinned_ca(&opts.server, &token).await?;
    let issuer = JoinIssuer::new(&opts.server, &ca, &opts.token)?;
    let c = if renew {
        certs::issue_and_store(&opts.certs_dir, &opts.spec, &issuer).await?
    } else {
        certs::ensure(&opts.certs_dir, &opts.spec, &ca, &issuer).await?
    };
    let client = kube::Client::try_from(c.kube_config(&uri)?)
        .map_err(Error::kube("building the API client"))?;
    Ok(Joined { client, certs: c })
}

fn is_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::Token(_)
            | Error::CaMismatch(_)
            | Error::ServerUrl { .. }
            | Error::Pki { .. }
            | Error::Io { .. }
            | Error::Join(_)
    ) || matches!(e, Error::Kube { source: kube::Error::Api(s), .. } if matches!(s.code, 400 | 401 | 403))
}

/// [`join`], retried with back-off (1 s doubling to 30 s) while the server is unreachable, and
/// checked with a request as the node. A CA mismatch, a malformed or refused token, or a bad
/// request fails at once. Stored certificates the server refuses (401) are replaced once.
/// When stored certificates were reused and the server does not answer, the client is handed
/// out anyway (the agent keeps running its pods while the server is away). `None` when
/// `shutdown` fires first.
pub async fn join_with_retry(
    opts: &JoinOptions,
    shutdown: &CancellationToken,
) -> Result<Option<Joined>> {
    let mut delay = Duration::from_secs(1);
    let mut renew = false;
    loop {
        match join(opts, renew).await {
            Ok(j) => match j.client.apiserver_version().await {
                Ok(v) => {
                    tracing::info!(server = %opts.server, version = %v.git_version, user = %k8slite_pki::node_user(&opts.spec.node_name), "connected to the API server");
                    return Ok(Some(j));
                }
                Err(kube::Error::Api(s)) if s.code == 401 && !j.certs.fresh && !renew => {
                    tracing::warn!(server = %opts.server, "the server refused the stored node certificate; requesting a new one");
                    renew = true;
                    continue;
                }
                Err(kube::Error::Api(s)) if s.code == 401 => {
                    return Err(Error::Kube {
                        what: format!(
                            "authenticating to {} with the new node certificate",
                            opts.server
                        ),
                        source: kube::Error::Api(s),
                    });
                }
                Err(e) if !j.certs.fresh => {
                    tracing::warn!(server = %opts.server, "API server not answering ({e}); continuing with the stored node certificates");
                    return Ok(Some(j));
                }
                Err(e) => {
                    tracing::warn!(server = %opts.server, "API server not answering yet: {e}")
                }
            },
            Err(e) if is_refusal(&e) => return Err(e),
            Err(e) => tracing::warn!(server = %opts.server, "joining: {e}; retrying in {delay:?}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// [`connect`], retried with back-off (1 s doubling to 30 s) while the server is unreachable.
/// A CA mismatch or a malformed token fails at once. `None` when `shutdown` fires first.
pub async fn connect_with_retry(
    server: &str,
    token: &str,
    shutdown: &CancellationToken,
) -> Result<Option<kube::Client>> {
    let mut delay = Duration::from_secs(1);
    loop {
        match connect(server, token).await {
            Ok(c) => {
                // Check that the token is accepted before handing the client out.
                match c.apiserver_version().await {
                    Ok(v) => {
                        tracing::info!(server, version = %v.git_version, "connected to the API server");
                        return Ok(Some(c));
                    }
                    Err(kube::Error::Api(s)) if s.code == 401 => {
                        return Err(Error::Kube {
                            what: format!("authenticating to {server} with the join token"),
                            source: kube::Error::Api(s),
                        });
                    }
                    Err(e) => tracing::warn!(server, "API server not answering yet: {e}"),
                }
            }
            Err(e @ (Error::Token(_) | Error::CaMismatch(_) | Error::ServerUrl { .. })) => {
                return Err(e);
            }
            Err(e) => tracing::warn!(server, "joining: {e}; retrying in {delay:?}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_must_be_https() {
        assert!(server_uri("https://127.0.0.1:6443").is_ok());
        assert!(server_uri("https://127.0.0.1:6443/").is_ok());
        assert!(matches!(
            server_uri("http://127.0.0.1:6443"),
            Err(Error::ServerUrl { .. })
        ));
        assert!(server_uri("not a url").is_err());
    }
}
