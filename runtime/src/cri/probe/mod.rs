//! HTTP(S) GET and TCP probes, run from the node with the kubelet's semantics: one deadline for the
//! whole probe, HTTP 200–399 succeeds, redirects to the same host are followed (up to 10), a
//! redirect elsewhere counts as success, and failure messages read like the kubelet's.

mod tls;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{ExecSyncResponse, ProbeResult};

/// `User-Agent` of probe requests, as the kubelet (`kube-probe/<major>.<minor>`).
const USER_AGENT: &str = "kube-probe/1.33";
/// Redirects followed within the same host.
const MAX_REDIRECTS: usize = 10;

/// The outcome of an exec probe's `ExecSync`: exit 0 succeeds; otherwise the command's output
/// (what the kubelet reports), or the exit code when it printed nothing.
pub(crate) fn exec_result(cmd: &[String], r: &ExecSyncResponse) -> ProbeResult {
    if r.exit_code == 0 {
        return ProbeResult::Success;
    }
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    let out = out.trim_end();
    if out.is_empty() {
        tracing::debug!(?cmd, code = r.exit_code, "exec probe failed");
        ProbeResult::Failure(format!(
            "command terminated with non-zero exit code: {}",
            r.exit_code
        ))
    } else {
        ProbeResult::Failure(out.to_string())
    }
}

/// Whether an `ExecSync` error message reports the command's deadline passing.
pub(crate) fn is_exec_timeout(msg: &str) -> bool {
    msg.contains("timeout") || msg.contains("deadline exceeded") || msg.contains("no answer")
}

/// `host:port` as Go prints it (IPv6 in brackets).
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An I/O error as Go's net package words it (`connect: connection refused`).
fn dial_error(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    };
    let mut chars = text.chars();
    let lower = match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    };
    format!("connect: {lower}")
}

async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    let addr = host_port(host, port);
    let target = host.trim_start_matches('[').trim_end_matches(']');
    TcpStream::connect((target, port))
        .await
        .map_err(|e| format!("dial tcp {addr}: {}", dial_error(&e)))
}

/// TCP probe: a connection opens within `timeout`.
pub(crate) async fn tcp(host: &str, port: u16, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, dial(host, port)).await {
        Ok(Ok(_stream)) => ProbeResult::Success,
        Ok(Err(msg)) => ProbeResult::Failure(msg),
        Err(_) => ProbeResult::Failure(format!("dial tcp {}: i/o timeout", host_port(host, port))),
    }
}

/// HTTP GET probe of `scheme://host:port/path`, all of it within `timeout`.
pub(crate) async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    scheme: &str,
    timeout: Duration,
) -> ProbeResult {
    let scheme = if scheme.is_empty() {
        "http".to_string()
    } else {
        scheme.to_ascii_lowercase()
    };
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = format!("{scheme}://{}{path}", host_port(host, port));
    let tls = match scheme.as_str() {
        "http" => false,
        "https" => true,
        other => {
            return ProbeResult::Failure(format!(
                "Get \"{url}\": unsupported protocol scheme \"{other}\""
            ));
        }
    };
    match tokio::time::timeout(timeout, follow(host, port, path, tls)).await {
        Ok(Ok(code)) if (200..400).contains(&code) => ProbeResult::Success,
        Ok(Ok(code)) => ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Ok(Err(msg)) => ProbeResult::Failure(format!("Get \"{url}\": {msg}")),
        Err(_) => ProbeResult::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// GET `path`, following same-host redirects; the final status code. A redirect to another
/// host is reported as 200 (the kubelet treats it as success with a warning).
async fn follow(host: &str, port: u16, mut path: String, tls: bool) -> Result<u16, String> {
    for _ in 0..=MAX_REDIRECTS {
        let (code, location) = if tls {
            let stream = dial(host, port).await?;
            let stream = tls::connector()?
                .connect(tls::server_name(host)?, stream)
                .await
                .map_err(|e| e.to_string())?;
            get_once(stream, host, port, &path).await?
        } else {
            get_once(dial(host, port).await?, host, port, &path).await?
        };
        let Some(location) = location.filter(|_| (300..400).contains(&code)) else {
            return Ok(code);
        };
        match same_host_path(&location, host, port, tls) {
            Some(next) => path = next,
            None => {
                tracing::debug!(%location, "probe redirected to another host: success");
                return Ok(200);
            }
        }
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// The path of `location` if it stays on `host:port` (relative, or absolute to the same host).
fn same_host_path(location: &str, host: &str, port: u16, tls: bool) -> Option<String> {
    if location.starts_with('/') {
        return Some(location.to_string());
    }
    let rest = location.strip_prefix(if tls { "https://" } else { "http://" })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let same = authority == host_port(host, port) || (port == default_port && authority == host);
    same.then(|| path.to_string())
}

async fn get_once<S>(
    stream: S,
    host: &str,
    port: u16,
    path: &str,
) -> Result<(u16, Option<String>), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "probe connection ended");
        }
    });
    let req = http::Request::get(path)
        .header(http::header::HOST, host_port(host, port))
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(http::header::ACCEPT, "*/*")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    driver.abort();
    let resp = resp?;
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((resp.status().as_u16(), location))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-connection-at-a-time HTTP server answering each path from `routes`.
    async fn serve(routes: Vec<(&'static str, &'static str)>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let resp = routes
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, r)| (*r).to_string())
                    .unwrap_or_else(|| "404 Not Found\r\n".to_string());
                let out =
                    format!("HTTP/1.1 {resp}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(out.as_bytes()).await;
            }
        });
        port
    }

    const T: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn http_status_codes_decide() {
        let port = serve(vec![
            ("/ok", "200 OK"),
            ("/bad", "500 Internal Server Error"),
            ("/moved", "302 Found\r\nLocation: /ok"),
            ("/away", "301 Moved\r\nLocation: http://example.invalid/"),
            ("/loop", "302 Found\r\nLocation: /loop"),
        ])
        .await;
        assert_eq!(
            http_get("127.0.0.1", port, "/ok", "HTTP", T).await,
            ProbeResult::Success
        );
        assert_eq!(
            http_get("127.0.0.1", port, "/bad", "HTTP", T).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            http_get("127.0.0.1", port, "/moved", "HTTP", T).await,
            ProbeResult::Success
        );
        assert_eq!(
            http_get("127.0.0.1", port, "/away", "HTTP", T).await,
            ProbeResult::Success
        );
        assert_eq!(
            http_get("127.0.0.1", port, "/nothing", "", T).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 404".into())
        );
        let ProbeResult::Failure(msg) = http_get("127.0.0.1", port, "/loop", "HTTP", T).await
        else {
            panic!("a redirect loop must fail");
        };
        assert!(msg.contains("redirects"), "{msg}");
    }

    #[tokio::test]
    async fn refused_connections_read_like_the_kubelet() {
        // Bind and drop to find a port nobody listens on.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").port()
        };
        assert_eq!(
            tcp("127.0.0.1", port, T).await,
            ProbeResult::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
        assert_eq!(
            http_get("127.0.0.1", port, "healthz", "HTTP", T).await,
            ProbeResult::Failure(format!(
                "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn slow_servers_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let r = http_get("127.0.0.1", port, "/", "HTTP", Duration::from_millis(200)).await;
        assert_eq!(
            r,
            ProbeResult::Failure(format!(
                "Get \"http://127.0.0.1:{port}/\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        assert_eq!(tcp("127.0.0.1", port, T).await, ProbeResult::Success);
    }

    #[tokio::test]
    async fn https_probes_accept_any_certificate() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
        let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .expect("key");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = if req.starts_with("GET /healthz ") {
                    "200 OK"
                } else {
                    "503 Unavailable"
                };
                let out =
                    format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(out.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        assert_eq!(
            http_get("127.0.0.1", port, "/healthz", "HTTPS", T).await,
            ProbeResult::Success
        );
        assert_eq!(
            http_get("127.0.0.1", port, "/other", "HTTPS", T).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 503".into())
        );
    }

    #[test]
    fn exec_results() {
        let cmd = vec!["cat".to_string(), "/tmp/healthy".to_string()];
        let ok = ExecSyncResponse {
            exit_code: 0,
            ..Default::default()
        };
        assert_eq!(exec_result(&cmd, &ok), ProbeResult::Success);
        let failed = ExecSyncResponse {
            stdout: Vec::new(),
            stderr: b"cat: can't open '/tmp/healthy': No such file or directory\n".to_vec(),
            exit_code: 1,
        };
        assert_eq!(
            exec_result(&cmd, &failed),
            ProbeResult::Failure(
                "cat: can't open '/tmp/healthy': No such file or directory".into()
            )
        );
        let silent = ExecSyncResponse {
            exit_code: 3,
            ..Default::default()
        };
        assert_eq!(
            exec_result(&cmd, &silent),
            ProbeResult::Failure("command terminated with non-zero exit code: 3".into())
        );
    }

    #[test]
    fn addresses_print_like_go() {
        assert_eq!(host_port("10.42.0.5", 80), "10.42.0.5:80");
        assert_eq!(host_port("fd00::5", 80), "[fd00::5]:80");
        assert_eq!(same_host_path("/x", "h", 8080, false), Some("/x".into()));
        assert_eq!(
            same_host_path("http://h:8080/y", "h", 8080, false),
            Some("/y".into())
        );
        assert_eq!(same_host_path("http://other/", "h", 8080, false), None);
    }
}
