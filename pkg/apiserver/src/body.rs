//! Response bodies and helpers to build JSON/Status responses.

use std::convert::Infallible;

use bytes::Bytes;
use futures::Stream;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use k8slite_api::ApiError;
use serde_json::Value;

/// The body type of every response: a full buffer or a stream (watches).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A full body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

/// A streaming body from a stream of chunks.
pub fn streaming<S>(s: S) -> Body
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    use futures::StreamExt;
    StreamBody::new(s.map(|b| Ok::<_, Infallible>(Frame::data(b)))).boxed_unsync()
}

/// A JSON response with `code`, written as upstream's Go encoder writes it
/// ([`k8slite_api::gojson`]: HTML characters escaped, trailing newline).
pub fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let bytes = k8slite_api::gojson::to_vec(v).unwrap_or_default();
    let mut r = Response::new(full(bytes));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON response from already-serialised bytes.
pub fn json_bytes(code: StatusCode, bytes: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(full(bytes));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A `Status` error response.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(code, &e.to_status());
    if let Some(secs) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// A plain-text response (health endpoints, metrics).
pub fn text_response(
    code: StatusCode,
    text: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let mut r = Response::new(full(text.into()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
