//! `POST /v1-k8slite/node-certs`: a joining agent trades the join token and two certificate
//! signing requests for its node client certificate and kubelet serving certificate.
//!
//! The endpoint sits outside the Kubernetes API (no object, no RBAC): it is authenticated by
//! the join token alone, which the agent sends only after it has pinned the server CA by the
//! token's hash. What is signed (and whether a token is valid) is decided by the
//! [`NodeCertSigner`] the server installs; without one the path is an ordinary 404.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Body as HttpBody;
use k8slite_api::ApiError;
use k8slite_pki::{NodeCertRequest, NodeCertResponse};

use crate::body::{Body, error_response, json_response};
use crate::codec::read_body;

/// Largest accepted request (two CSRs and a few addresses fit in a few KiB).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What the join endpoint needs from the server: the token check and the signing.
pub trait NodeCertSigner: Send + Sync + 'static {
    /// Whether `token` (the bearer token sent: the full `K10…` form or the bare secret) is
    /// the cluster's join token.
    fn token_valid(&self, token: &str) -> bool;
    /// Sign the node certificates `req` asks for; the error is a message about the request.
    fn sign(&self, req: &NodeCertRequest) -> Result<NodeCertResponse, String>;
}

/// Serve one request to [`k8slite_pki::NODE_CERTS_PATH`].
pub(crate) async fn serve<B>(signer: &dyn NodeCertSigner, req: Request<B>) -> Response<Body>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if req.method() != Method::POST {
        return error_response(&ApiError::method_not_allowed(
            req.method().as_str(),
            k8slite_pki::NODE_CERTS_PATH,
        ));
    }
    let valid = crate::authn::bearer_token(req.headers()).is_some_and(|t| signer.token_valid(t));
    if !valid {
        tracing::warn!("node certificate request without a valid join token refused");
        return error_response(&ApiError::unauthorized());
    }
    let bytes = match read_body(req.into_body(), MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let parsed: NodeCertRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "node certificate request: {e}"
            )));
        }
    };
    match signer.sign(&parsed) {
        Ok(resp) => match serde_json::to_value(&resp) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => error_response(&ApiError::internal(format!(
                "encoding node certificates: {e}"
            ))),
        },
        Err(msg) => error_response(&ApiError::bad_request(format!(
            "node certificate request: {msg}"
        ))),
    }
}
