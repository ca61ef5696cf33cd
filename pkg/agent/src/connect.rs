//! Joining: fetch the server's CA bundle from `/cacerts` (without trusting it yet), check it
//! against the join token's `K10<sha256>` hash, and only then build a `kube::Client` that trusts
//! that CA and sends the token as a bearer token.

use std::time::Duration;

use k8slite_pki::JoinToken;
use kube::config::AuthInfo;
use tokio_util::sync::CancellationToken;

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
