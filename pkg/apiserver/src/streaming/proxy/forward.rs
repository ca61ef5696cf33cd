//! One HTTP/1.1 exchange with the proxy target over an already open connection: the client's
//! method, path, query, headers (hop-by-hop ones, `Authorization` and impersonation dropped)
//! and streamed body go out; the target's status, headers and streamed body come back. An
//! `Upgrade` request (WebSocket, SPDY) that the target accepts with `101` becomes a byte relay
//! between the client and the target.

use bytes::{Buf, Bytes};
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::rt::TokioIo;
use k8slite_api::ApiError;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{Body, full, streaming};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Headers that describe one connection, never passed on (RFC 9110 7.6.1, as Go's
/// `ReverseProxy` drops them).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The 503 of a target that could not be reached (upstream's proxy transport words it so).
pub(crate) fn unreachable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        format!("error trying to reach service: {e}"),
    )
}

fn connection_listed(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `h` without hop-by-hop headers and those its `Connection` names.
pub(crate) fn end_to_end(h: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(h);
    let mut out = HeaderMap::with_capacity(h.len());
    for (name, value) in h {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The protocol a request asks to upgrade to, when it does (`Connection: upgrade` and an
/// `Upgrade` value).
pub(crate) fn upgrade_of(h: &HeaderMap) -> Option<HeaderValue> {
    connection_listed(h)
        .iter()
        .any(|c| c == "upgrade")
        .then(|| h.get(header::UPGRADE).cloned())
        .flatten()
}

/// What the target gets from the client's headers: the end-to-end ones minus the client's
/// credentials and impersonation, `Host` set to the target, the upgrade kept, and the
/// `X-Forwarded-*` headers upstream's proxy adds.
pub(crate) fn request_headers(
    client: &HeaderMap,
    authority: &str,
    forwarded_uri: &str,
) -> HeaderMap {
    let mut h = end_to_end(client);
    h.remove(header::AUTHORIZATION);
    let impersonation: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for k in impersonation {
        h.remove(k);
    }
    if let Some(host) = client.get(header::HOST) {
        h.insert("x-forwarded-host", host.clone());
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    if let Ok(v) = HeaderValue::from_str(forwarded_uri) {
        h.insert("x-forwarded-uri", v);
    }
    if let Ok(v) = HeaderValue::from_str(authority) {
        h.insert(header::HOST, v);
    }
    if let Some(up) = upgrade_of(client) {
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, up);
    }
    h
}

/// Send `req` (its URI replaced by `target_uri`, origin-form) over `io` and answer with the
/// target's response.
pub(crate) async fn forward<B, IO>(
    io: IO,
    authority: &str,
    target_uri: &str,
    forwarded_uri: &str,
    mut req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let upgrade = upgrade_of(req.headers()).is_some();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(unreachable)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "proxy target connection ended");
        }
    });
    let headers = request_headers(req.headers(), authority, forwarded_uri);
    let (parts, body) = req.into_parts();
    let body: UnsyncBoxBody<Bytes, BoxError> = body
        .map_frame(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
        .map_err(Into::into)
        .boxed_unsync();
    let mut out = Request::builder()
        .method(parts.method)
        .uri(target_uri)
        .body(body)
        .map_err(|e| ApiError::bad_request(format!("proxy request: {e}")))?;
    *out.headers_mut() = headers;
    let mut resp = send.send_request(out).await.map_err(unreachable)?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(unreachable("the target switched protocols unasked"));
        };
        let target_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, target_upgrade) {
                Ok((client, target)) => {
                    let mut client = TokioIo::new(client);
                    let mut target = TokioIo::new(target);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut target).await {
                        tracing::debug!(error = %e, "proxied upgraded connection ended");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "proxied upgrade failed"),
            }
        });
        let mut answer = Response::new(full(Bytes::new()));
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *answer.headers_mut() = resp.headers().clone();
        return Ok(answer);
    }
    let status = resp.status();
    let headers = end_to_end(resp.headers());
    let stream = resp
        .into_body()
        .into_data_stream()
        .take_while(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "proxy target's body ended with an error");
            }
            futures::future::ready(r.is_ok())
        })
        .filter_map(|r| futures::future::ready(r.ok()));
    let mut answer = Response::new(streaming(stream));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_credentials_stay_behind() {
        let client = map(&[
            ("host", "127.0.0.1:6443"),
            ("authorization", "Bearer secret"),
            ("impersonate-user", "alice"),
            ("impersonate-group", "admins"),
            ("connection", "keep-alive, x-trace"),
            ("keep-alive", "timeout=5"),
            ("x-trace", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("accept", "text/html"),
            ("cookie", "a=b"),
        ]);
        let h = request_headers(&client, "10.42.0.5:80", "/api/v1/x/proxy/");
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "accept",
                "cookie",
                "host",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-forwarded-uri"
            ]
        );
        assert_eq!(h[header::HOST], "10.42.0.5:80");
        assert_eq!(h["x-forwarded-host"], "127.0.0.1:6443");
        assert_eq!(h["x-forwarded-uri"], "/api/v1/x/proxy/");
    }

    #[test]
    fn upgrades_are_passed_on() {
        let client = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
        ]);
        let h = request_headers(&client, "10.42.0.5:80", "/");
        assert_eq!(h[header::CONNECTION], "Upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h["sec-websocket-key"], "abc");
        // An Upgrade header without Connection: upgrade is no upgrade request.
        let stray = map(&[("upgrade", "websocket")]);
        assert!(upgrade_of(&stray).is_none());
        assert!(
            request_headers(&stray, "a:1", "/")
                .get(header::UPGRADE)
                .is_none()
        );
        let resp = map(&[
            ("content-type", "text/html"),
            ("content-length", "5"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
        ]);
        let e2e = end_to_end(&resp);
        let mut names: Vec<&str> = e2e.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["content-length", "content-type"]);
    }
}
