//! k8slite-apiserver: the Kubernetes REST API over a [`Store`].
//!
//! Request pipeline: TLS → authentication (client certificate, or a bearer token: join token,
//! service-account JWT ([`tokens`]) → [`Identity`]) → authorization ([`authz::Authorizer`]) →
//! routing by the resource [`Registry`] → decode → defaulting → admission (ServiceAccount,
//! DefaultTolerationSeconds, Priority, LimitRanger, ResourceQuota, namespace lifecycle) →
//! validation → store. Only this crate touches the store.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use k8slite_api::Registry;
use k8slite_datastore::Store;

mod admission;
pub mod allocator;
pub mod authn;
pub mod authz;
pub mod body;
mod bootstrap;
mod codec;
mod components;
mod crd;
mod discovery;
mod eviction;
mod handler;
pub mod join;
mod list;
pub mod metrics;
mod namespaces;
mod objects;
mod openapi;
mod query;
mod review;
pub mod route;
mod scale;
pub mod serve;
mod strategy;
pub mod streaming;
pub mod tokens;
mod typed;
mod watch;

pub use authn::{AuthFuture, TokenAuthenticator};
pub use authz::{Authorizer, Identity};
pub use components::ComponentProbe;
pub use join::NodeCertSigner;
pub use serve::{ServeError, serve_tls};
pub use tokens::TokenSigner;

/// Settings of the API server.
#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    /// Service CIDR (ClusterIPs are allocated from it; its first address is `kubernetes`).
    pub service_cidr: IpNet,
    /// NodePort range, inclusive.
    pub node_port_range: (u16, u16),
    /// Address clients reach the API at (the `kubernetes` endpoints).
    pub advertise_address: IpAddr,
    /// Port of the API (the `kubernetes` endpoints).
    pub secure_port: u16,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most concurrently open watches.
    pub max_watches: usize,
    /// Interval of BOOKMARK events on watches that ask for them.
    pub bookmark_interval: Duration,
    /// PEM of the cluster CA bundle served unauthenticated at `/cacerts` (agents pin it by the
    /// hash in their join token before sending any secret).
    pub cacerts: Option<std::sync::Arc<str>>,
    /// tolerationSeconds of the `node.kubernetes.io/not-ready` NoExecute toleration added to
    /// pods that have none (upstream's DefaultTolerationSeconds admission).
    pub default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the `node.kubernetes.io/unreachable` NoExecute toleration.
    pub default_unreachable_toleration_seconds: i64,
    /// The cluster DNS address (`--cluster-dns`): never handed out as a dynamic ClusterIP, only
    /// to a Service asking for it (the `kube-dns` Service, or a user's CoreDNS).
    pub cluster_dns: Option<IpAddr>,
    /// Whether bootstrap creates the `kube-dns` Service of `kube-system` with ClusterIP
    /// [`Self::cluster_dns`] (not overwritten once it exists).
    pub cluster_dns_service: bool,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            service_cidr: IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 43, 0, 0),
                16,
            )),
            node_port_range: (30000, 32767),
            advertise_address: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            secure_port: 6443,
            max_body_bytes: 3 * 1024 * 1024,
            max_watches: 4096,
            bookmark_interval: Duration::from_secs(60),
            cacerts: None,
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
            cluster_dns: Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 43, 0, 10))),
            cluster_dns_service: true,
        }
    }
}

/// The API server: shared state of all requests.
pub struct ApiServer {
    store: Arc<dyn Store>,
    registry: RwLock<Arc<Registry>>,
    config: ApiServerConfig,
    authorizer: Box<dyn Authorizer>,
    tokens: RwLock<Vec<Arc<dyn TokenAuthenticator>>>,
    sa_signer: std::sync::OnceLock<Arc<tokens::TokenSigner>>,
    node_certs: std::sync::OnceLock<Arc<dyn NodeCertSigner>>,
    metrics: metrics::Metrics,
    allocator: allocator::Allocators,
    watches: Arc<tokio::sync::Semaphore>,
    shutdown: tokio_util::sync::CancellationToken,
    kubelet_dialer: std::sync::OnceLock<Arc<streaming::KubeletDialer>>,
    /// In-process components reported by `componentstatuses`.
    components: RwLock<Vec<(String, ComponentProbe)>>,
}

impl ApiServer {
    /// A server over `store` with the built-in resources.
    pub fn new(
        store: Arc<dyn Store>,
        config: ApiServerConfig,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Arc<Self> {
        let watches = Arc::new(tokio::sync::Semaphore::new(config.max_watches));
        Arc::new(Self {
            store,
            registry: RwLock::new(Arc::new(Registry::builtin())),
            authorizer: Box::new(authz::MastersOnly),
            tokens: RwLock::new(Vec::new()),
            sa_signer: std::sync::OnceLock::new(),
            node_certs: std::sync::OnceLock::new(),
            metrics: metrics::Metrics::new(),
            allocator: allocator::Allocators::default(),
            watches,
            config,
            shutdown,
            kubelet_dialer: std::sync::OnceLock::new(),
            components: RwLock::new(Vec::new()),
        })
    }

    /// Create the namespaces and objects every cluster has (idempotent).
    pub async fn bootstrap(&self) -> Result<(), k8slite_api::ApiError> {
        bootstrap::ensure_defaults(self).await
    }

    /// Start background work: namespace finalization, the root-CA publisher.
    pub fn spawn_background(self: &Arc<Self>, tracker: &tokio_util::task::TaskTracker) {
        let me = self.clone();
        tracker.spawn(async move { namespaces::run_finalizer(me).await });
        let me = self.clone();
        tracker.spawn(async move { me.run_root_ca_publisher().await });
    }

    /// Accept bearer tokens that `authn` knows (asked after the ones added before it).
    pub fn add_token_authenticator(&self, authn: Arc<dyn TokenAuthenticator>) {
        match self.tokens.write() {
            Ok(mut t) => t.push(authn),
            Err(p) => p.into_inner().push(authn),
        }
    }

    /// Serve `POST /v1-k8slite/node-certs` (agents trade the join token and CSRs for their node
    /// certificates) with `signer`. Only the first call takes effect.
    pub fn enable_node_certs(&self, signer: Arc<dyn NodeCertSigner>) {
        if self.node_certs.set(signer).is_err() {
            tracing::warn!("node certificate signer already installed; ignoring another");
        }
    }

    /// The identity of a bearer token, from the registered authenticators.
    pub(crate) async fn authenticate_token(&self, token: &str) -> Option<Identity> {
        let list = match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for a in &list {
            if let Some(id) = a.authenticate(token).await {
                return Some(id);
            }
        }
        None
    }

    /// A snapshot of the registry.
    pub fn registry(&self) -> Arc<Registry> {
        match self.registry.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &ApiServerConfig {
        &self.config
    }
}
