//! `GET pods/{name}/log`: the container's log from its node's kubelet, streamed through
//! (`follow` keeps the chunked response open as the kubelet's does).

use std::sync::Arc;

use futures::StreamExt;
use http::{Response, StatusCode, header};
use http_body_util::BodyExt;
use k8slite_api::ApiError;

use crate::ApiServer;
use crate::body::{Body, streaming};
use crate::handler::ResourceRequest;

/// Options passed on to the kubelet, validated as upstream does.
const PASSED: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

fn validate(r: &ResourceRequest) -> Result<(), ApiError> {
    for (k, min) in [("tailLines", 0i64), ("sinceSeconds", 1), ("limitBytes", 1)] {
        if let Some(v) = r.query.get(k).filter(|v| !v.is_empty()) {
            let n: i64 = v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{k}: invalid value {v:?}")))?;
            if n < min {
                let what = if min == 0 { "non-negative" } else { "positive" };
                return Err(ApiError::bad_request(format!(
                    "{k}: Invalid value: {n}: must be {what}"
                )));
            }
        }
    }
    if r.query.get("sinceSeconds").is_some_and(|v| !v.is_empty())
        && r.query.get("sinceTime").is_some_and(|v| !v.is_empty())
    {
        return Err(ApiError::bad_request(
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    Ok(())
}

pub(crate) async fn log(
    server: &Arc<ApiServer>,
    r: &ResourceRequest,
) -> Result<Response<Body>, ApiError> {
    validate(r)?;
    let ns = r.ns().unwrap_or_default();
    let t = super::target::resolve(server, ns, r.name()).await?;
    let container = super::target::container(&t.pod, r.query.get("container"))?;
    let query = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for k in PASSED {
            if let Some(v) = r.query.get(k) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    };
    let path = format!("/containerLogs/{ns}/{}/{container}?{query}", r.name());
    let dialer = super::dialer(server)?;
    let resp = dialer.get(t.node, &path).await?;
    let status = resp.status();
    if status != StatusCode::OK {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        return Err(super::kubelet_error(status.as_u16(), body));
    }
    let stream = resp
        .into_body()
        .into_data_stream()
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(|r| futures::future::ready(r.ok()));
    let mut out = Response::new(streaming(stream));
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(out)
}
