//! `GET /containerLogs/{ns}/{pod}/{container}`: the CRI log file of the container read as
//! `kubectl logs` asks (see `k8slite_runtime::logs`), streamed as plain text.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use k8slite_runtime::ContainerState;
use k8slite_runtime::logs::{self, ExitedCheck, LogOptions};

use super::Kubelet;
use super::routes::{Body, HttpError, Query};

fn int(q: &Query, k: &str) -> Result<Option<i64>, HttpError> {
    q.get(k)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| HttpError::bad_request(format!("{k}: invalid value {v:?}")))
        })
        .transpose()
}

/// Log options from the query (`sinceSeconds` and `sinceTime` are exclusive upstream; the
/// later bound wins here).
pub(crate) fn options(q: &Query) -> Result<LogOptions, HttpError> {
    let mut since = None;
    if let Some(s) = int(q, "sinceSeconds")? {
        since = Some(k8slite_runtime::now_nanos().saturating_sub(s.saturating_mul(1_000_000_000)));
    }
    if let Some(t) = q.get("sinceTime").filter(|v| !v.is_empty()) {
        let ns = logs::parse_rfc3339(t)
            .ok_or_else(|| HttpError::bad_request(format!("sinceTime: invalid time {t:?}")))?;
        since = Some(since.map_or(ns, |s: i64| s.max(ns)));
    }
    let nonneg = |k: &str| -> Result<Option<u64>, HttpError> {
        int(q, k)?
            .map(|v| {
                u64::try_from(v)
                    .map_err(|_| HttpError::bad_request(format!("{k}: must be non-negative")))
            })
            .transpose()
    };
    Ok(LogOptions {
        follow: q.flag("follow"),
        tail_lines: nonneg("tailLines")?,
        since_nanos: since,
        timestamps: q.flag("timestamps"),
        limit_bytes: nonneg("limitBytes")?,
    })
}

pub(crate) async fn container_logs(
    kubelet: &Arc<Kubelet>,
    ns: &str,
    pod: &str,
    container: &str,
    q: &Query,
) -> Result<Response<Body>, HttpError> {
    let opts = options(q)?;
    let rt = kubelet.runtime.as_ref();
    let found = super::resolve::container(rt, ns, pod, None, container, q.flag("previous")).await?;
    let path = if found.container.log_path.is_empty() {
        logs::container_log_path(
            &logs::pod_log_dir(&kubelet.log_root, ns, pod, &found.sandbox.metadata.uid),
            container,
            found.container.metadata.attempt,
        )
    } else {
        PathBuf::from(&found.container.log_path)
    };
    if !path.exists() {
        // Nothing written yet (or the runtime keeps no file): an empty log, as the kubelet.
        tracing::debug!(path = %path.display(), "container log file not found");
        return Ok(plain(
            http_body_util::Full::new(Bytes::new()).boxed_unsync(),
        ));
    }
    let runtime = kubelet.runtime.clone();
    let id = found.container.id.clone();
    let exited: ExitedCheck = Box::new(move || {
        let runtime = runtime.clone();
        let id = id.clone();
        Box::pin(async move {
            match runtime.container_status(&id).await {
                Ok(s) => matches!(s.state, ContainerState::Exited | ContainerState::Unknown),
                Err(_) => true,
            }
        })
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let shutdown = kubelet.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            r = logs::read_log(&path, &opts, Some(exited), tx) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "reading container log");
                }
            }
            _ = shutdown.cancelled() => {}
        }
    });
    let stream = tokio_stream_from(rx).map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
    Ok(plain(StreamBody::new(stream).boxed_unsync()))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn plain(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}
