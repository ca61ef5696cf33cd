//! Health-check node ports of `externalTrafficPolicy: Local` services: an HTTP server per
//! port answering 200 with kube-proxy's JSON when the service has endpoints on this node, 503
//! otherwise (load balancers send traffic only to nodes answering 200).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{HealthCheck, Problem};

#[derive(Clone, Debug)]
struct Entry {
    namespace: String,
    name: String,
    local_endpoints: usize,
}

struct Server {
    entry: Arc<RwLock<Entry>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The health-check servers (one per port), updated after each sync.
#[derive(Default)]
pub struct HealthChecks {
    servers: tokio::sync::Mutex<HashMap<u16, Server>>,
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecks").finish_non_exhaustive()
    }
}

fn response(e: &Entry) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "service": {"namespace": e.namespace, "name": e.name},
        "localEndpoints": e.local_endpoints,
        "serviceProxyHealthy": true,
    });
    let status = if e.local_endpoints > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "X-Content-Type-Options",
        http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "X-Load-Balancing-Endpoint-Weight",
        http::HeaderValue::from(e.local_endpoints),
    );
    r
}

async fn bind(port: u16) -> std::io::Result<TcpListener> {
    // `[::]` takes IPv4 too (dual stack) where IPv6 exists; else IPv4 only.
    match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
        Ok(l) => Ok(l),
        Err(e6) => TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
            .await
            .map_err(|e4| if e4.kind() == e6.kind() { e6 } else { e4 }),
    }
}

async fn serve(listener: TcpListener, entry: Arc<RwLock<Entry>>, cancel: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "health check accept");
                    continue;
                }
            },
        };
        let entry = entry.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let e = entry.read().unwrap_or_else(|p| p.into_inner()).clone();
                async move { Ok::<_, Infallible>(response(&e)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "health check connection");
                },
            }
        });
    }
}

impl HealthChecks {
    /// No servers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve exactly `checks` (from [`super::SyncReport::health_checks`]): new ports are bound
    /// on all addresses, gone ones closed, counts updated. A port that cannot be bound (or is
    /// claimed twice) is a problem of its service; the others are served.
    pub async fn update(&self, checks: &[HealthCheck]) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut wanted: BTreeMap<u16, &HealthCheck> = BTreeMap::new();
        for c in checks {
            if let Some(first) = wanted.get(&c.port) {
                problems.push(Problem::new(
                    &c.namespace,
                    &c.name,
                    "HealthCheckNodePortInUse",
                    format!(
                        "healthCheckNodePort {} is also used by {}/{}",
                        c.port, first.namespace, first.name
                    ),
                ));
                continue;
            }
            wanted.insert(c.port, c);
        }
        let mut servers = self.servers.lock().await;
        let gone: Vec<u16> = servers
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for port in gone {
            if let Some(s) = servers.remove(&port) {
                s.cancel.cancel();
                let _ = s.task.await;
                tracing::debug!(port, "health check node port closed");
            }
        }
        for (port, c) in wanted {
            let entry = Entry {
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                local_endpoints: c.local_endpoints,
            };
            if let Some(s) = servers.get(&port) {
                *s.entry.write().unwrap_or_else(|p| p.into_inner()) = entry;
                continue;
            }
            match bind(port).await {
                Ok(listener) => {
                    let entry = Arc::new(RwLock::new(entry));
                    let cancel = CancellationToken::new();
                    let task = tokio::spawn(serve(listener, entry.clone(), cancel.clone()));
                    tracing::debug!(port, namespace = %c.namespace, name = %c.name, "health check node port serving");
                    servers.insert(
                        port,
                        Server {
                            entry,
                            cancel,
                            task,
                        },
                    );
                }
                Err(e) => problems.push(Problem::new(
                    &c.namespace,
                    &c.name,
                    "HealthCheckNodePortUnavailable",
                    format!("cannot listen on healthCheckNodePort {port}: {e}"),
                )),
            }
        }
        problems
    }

    /// The ports being served.
    pub async fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.servers.lock().await.keys().copied().collect();
        p.sort_unstable();
        p
    }

    /// Close every server.
    pub async fn shutdown(&self) {
        let mut servers = self.servers.lock().await;
        for (_, s) in servers.drain() {
            s.cancel.cancel();
            let _ = s.task.await;
        }
    }
}
