//! The in-process client: a `kube::Client` whose transport is the API server's own request
//! handler (a tower `Service`), with a fixed identity. Controllers, the scheduler and the
//! embedded agent use it: no TCP, no TLS, the same semantics as a remote client.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use k8slite_apiserver::body::Body;
use k8slite_apiserver::{ApiServer, Identity};

/// A tower service handing requests straight to [`ApiServer::handle`] as `identity`.
#[derive(Clone)]
pub struct InProcess {
    server: Arc<ApiServer>,
    identity: Identity,
}

impl InProcess {
    /// A transport to `server` acting as `identity`.
    pub fn new(server: Arc<ApiServer>, identity: Identity) -> Self {
        Self { server, identity }
    }

    /// A `kube::Client` over this transport (default namespace `default`).
    pub fn client(server: Arc<ApiServer>, identity: Identity) -> kube::Client {
        kube::Client::new(Self::new(server, identity), "default")
    }
}

impl tower::Service<Request<kube::client::Body>> for InProcess {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let server = self.server.clone();
        let identity = self.identity.clone();
        Box::pin(async move { Ok(server.handle(req, Some(identity)).await) })
    }
}
