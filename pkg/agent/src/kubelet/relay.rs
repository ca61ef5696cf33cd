//! exec, attach and portForward: a one-shot URL from the runtime, then the API server's
//! WebSocket relayed to the runtime's streaming server.

use std::sync::Arc;

use http::{Request, Response};
use k8slite_runtime::{ContainerState, StreamRequest};

use super::Kubelet;
use super::routes::{Body, HttpError, Query, Target};
use super::{bridge, spdy, ws};

fn runtime_err(what: &str) -> impl FnOnce(k8slite_runtime::RuntimeError) -> HttpError + '_ {
    move |e| HttpError::internal(format!("{what}: {e}"))
}

/// `/exec/…` (`attach` false) or `/attach/…`.
pub(crate) async fn exec<B>(
    kubelet: &Arc<Kubelet>,
    req: Request<B>,
    t: Target,
    q: &Query,
    attach: bool,
) -> Result<Response<Body>, HttpError>
where
    B: Send + 'static,
{
    let protocol = ws::pick_protocol(&req, &[ws::V5, ws::V4]).ok_or_else(|| {
        HttpError::bad_request(format!(
            "no supported stream protocol requested (supported: {}, {})",
            ws::V5,
            ws::V4
        ))
    })?;
    let cmd = q.all("command");
    if !attach && cmd.is_empty() {
        return Err(HttpError::bad_request(
            "you must specify at least 1 command",
        ));
    }
    let rt = kubelet.runtime.as_ref();
    let found =
        super::resolve::container(rt, &t.ns, &t.pod, t.uid.as_deref(), &t.container, false).await?;
    if found.container.state != ContainerState::Running {
        // A client error, as upstream answers it (clients retry a 5xx).
        return Err(HttpError::bad_request(format!(
            "container \"{}\" in pod \"{}\" is not running",
            t.container, t.pod
        )));
    }
    let tty = q.flag("tty");
    let sreq = StreamRequest {
        container_id: found.container.id.clone(),
        cmd: if attach { Vec::new() } else { cmd },
        tty,
        stdin: q.flag("stdin"),
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr") && !tty,
    };
    if !(sreq.stdin || sreq.stdout || sreq.stderr) {
        return Err(HttpError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let url = if attach {
        rt.attach(&sreq).await.map_err(runtime_err("attach"))?
    } else {
        rt.exec(&sreq).await.map_err(runtime_err("exec"))?
    };
    // Dial the runtime first so a failure is an HTTP error, not a dead WebSocket. SPDY first:
    // it can close stdin (containerd's WebSocket v4 cannot); WebSocket v4 for a streaming
    // server that refuses the SPDY upgrade.
    let streams = spdy::Streams {
        stdin: sreq.stdin,
        stdout: sreq.stdout,
        stderr: sreq.stderr,
        tty,
    };
    match spdy::dial(&url).await {
        Ok(up) => ws::accept(req, &protocol, move |client| async move {
            bridge::run(client, up.tcp, up.leftover, streams).await;
        }),
        Err(spdy::DialError::Refused(why)) => {
            tracing::debug!(%why, "streaming server refused SPDY, using WebSocket v4");
            let url = if attach {
                rt.attach(&sreq).await.map_err(runtime_err("attach"))?
            } else {
                rt.exec(&sreq).await.map_err(runtime_err("exec"))?
            };
            let backend = ws::connect(&url, ws::V4)
                .await
                .map_err(HttpError::internal)?;
            ws::accept(req, &protocol, move |client| async move {
                ws::relay(client, backend, false).await;
            })
        }
        Err(e) => Err(HttpError::internal(e.to_string())),
    }
}

/// `/portForward/{ns}/{pod}?port=…` (WebSocket port-forward protocol: per port a data and an
/// error channel, each starting with the port as 2 little-endian bytes).
pub(crate) async fn port_forward<B>(
    kubelet: &Arc<Kubelet>,
    req: Request<B>,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
    q: &Query,
) -> Result<Response<Body>, HttpError>
where
    B: Send + 'static,
{
    let protocol = ws::pick_protocol(&req, &[ws::V4, "portforward.k8s.io"]).ok_or_else(|| {
        HttpError::bad_request(format!(
            "no supported port-forward protocol requested (supported: {})",
            ws::V4
        ))
    })?;
    let mut ports = Vec::new();
    for p in q.all("port") {
        let n: u16 = p
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| HttpError::bad_request(format!("invalid port {p:?}")))?;
        ports.push(n);
    }
    if ports.is_empty() {
        return Err(HttpError::bad_request(
            "query parameter \"port\" is required",
        ));
    }
    let rt = kubelet.runtime.as_ref();
    let sandbox = super::resolve::sandbox(rt, ns, pod, uid).await?;
    let ports_i32: Vec<i32> = ports.iter().map(|p| i32::from(*p)).collect();
    let url = rt
        .port_forward(&sandbox.id, &ports_i32)
        .await
        .map_err(runtime_err("port-forward"))?;
    let query: String = ports
        .iter()
        .map(|p| format!("port={p}"))
        .collect::<Vec<_>>()
        .join("&");
    let sep = if url.contains('?') { '&' } else { '?' };
    let backend = ws::connect(&format!("{url}{sep}{query}"), ws::V4)
        .await
        .map_err(HttpError::internal)?;
    ws::accept(req, &protocol, move |client| async move {
        ws::relay(client, backend, true).await;
    })
}
