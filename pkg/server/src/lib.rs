//! k8slite-server: wires the datastore, PKI and API server into `k8slite server`.
//!
//! Start-up order: data directories → PKI (CAs, serving and admin certificates) → join token →
//! SQLite store → API server bootstrap (namespaces, `kubernetes` and `kube-dns` Services) →
//! HTTPS listener →
//! admin kubeconfig. Shutdown: one cancellation token stops the listener, open connections
//! drain within a deadline, then the store closes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use k8slite_apiserver::{ApiServer, ApiServerConfig, Identity};
use k8slite_datastore::sqlite::{SqliteConfig, SqliteStore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use k8slite_controllers::Config as ControllersConfig;

mod components;
pub mod inproc;
pub mod leader;
pub mod network;
mod roles;

/// How long open connections get to finish after shutdown starts.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Settings of `k8slite server`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Data directory (`server/` below it holds the database, certificates and token).
    pub data_dir: PathBuf,
    /// Listen address of the API.
    pub bind_address: IpAddr,
    /// API port.
    pub https_listen_port: u16,
    /// Address advertised to clients and nodes; detected when `None`.
    pub advertise_address: Option<IpAddr>,
    /// Extra SANs for the serving certificate.
    pub tls_san: Vec<String>,
    /// Admin kubeconfig path.
    pub write_kubeconfig: PathBuf,
    /// Admin kubeconfig file mode.
    pub write_kubeconfig_mode: u32,
    /// Pod CIDR of the cluster.
    pub cluster_cidr: IpNet,
    /// Service CIDR.
    pub service_cidr: IpNet,
    /// Cluster DNS service IP.
    pub cluster_dns: IpAddr,
    /// Whether the embedded cluster DNS runs on the nodes and the `kube-dns` Service of
    /// `kube-system` (ClusterIP [`Self::cluster_dns`]) is created at start (`--disable dns`
    /// turns both off, for users who bring CoreDNS).
    pub cluster_dns_service: bool,
    /// Whether the ServiceLB controller runs (`--disable servicelb`: LoadBalancer Services are
    /// left to another controller, e.g. MetalLB). Overrides `controllers.servicelb`.
    pub servicelb: bool,
    /// Cluster domain.
    pub cluster_domain: String,
    /// Pod network backend of the nodes: `vxlan`, `host-gw` or `none` (published to agents).
    pub network_backend: String,
    /// MTU of the pod network (detected by each node when `None`).
    pub network_mtu: Option<u32>,
    /// How often the datastore compacts.
    pub compact_interval: Duration,
    /// Revisions of history kept for watch resumption.
    pub compact_retention: i64,
    /// Settings of the controllers.
    pub controllers: ControllersConfig,
    /// tolerationSeconds of the default `not-ready` NoExecute toleration of pods.
    pub default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the default `unreachable` NoExecute toleration of pods.
    pub default_unreachable_toleration_seconds: i64,
    /// Name of this server's own node (its embedded agent's), labelled `control-plane,master`.
    pub own_node: Option<String>,
}

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file or directory could not be created.
    #[error("creating {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificates or token.
    #[error("pki: {0}")]
    Pki(#[from] k8slite_pki::PkiError),
    /// The API server's client certificate for kubelets.
    #[error("kubelet client certificate: {0}")]
    KubeletClient(#[source] k8slite_apiserver::streaming::StreamingError),
    /// Datastore.
    #[error("datastore: {0}")]
    Store(#[from] k8slite_datastore::StoreError),
    /// Bootstrap objects.
    #[error("bootstrapping cluster objects: {0}")]
    Bootstrap(#[source] k8slite_api::ApiError),
    /// Listening.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving.
    #[error(transparent)]
    Serve(#[from] k8slite_apiserver::ServeError),
    /// The cluster network settings could not be published for agents.
    #[error("publishing the cluster network settings: {0}")]
    NetworkConfig(#[source] kube::Error),
    /// The service CIDR has no usable address.
    #[error("service CIDR {0} has no host addresses")]
    ServiceCidr(IpNet),
}

/// Bearer tokens equal to the join token (or its secret) authenticate agents, in the
/// `system:nodes` group. Joined agents use their node client certificates instead
/// (`POST /v1-k8slite/node-certs`); this remains for `k8slite agent --fake-nodes N`, where one
/// client serves many simulated nodes. Remove it once that mode issues per-node certificates.
struct JoinTokenAuth(k8slite_pki::JoinToken);

impl k8slite_apiserver::TokenAuthenticator for JoinTokenAuth {
    fn authenticate<'a>(&'a self, token: &'a str) -> k8slite_apiserver::AuthFuture<'a> {
        let secret = match k8slite_pki::JoinToken::parse(token) {
            Ok(t) => t.password,
            Err(_) => token.to_string(),
        };
        let id = self
            .0
            .secret_matches(&secret)
            .then(|| Identity::new("system:k8slite-agent", vec!["system:nodes".to_string()]));
        Box::pin(std::future::ready(id))
    }
}

/// The join endpoint's signer: the join token (full form or bare secret) authorizes signing
/// node certificates from the cluster PKI.
pub struct JoinSigner {
    pki: Arc<k8slite_pki::ClusterPki>,
    token: k8slite_pki::JoinToken,
}

impl JoinSigner {
    /// A signer over `pki` accepting `token`.
    pub fn new(pki: Arc<k8slite_pki::ClusterPki>, token: k8slite_pki::JoinToken) -> Self {
        Self { pki, token }
    }
}

impl k8slite_apiserver::NodeCertSigner for JoinSigner {
    fn token_valid(&self, token: &str) -> bool {
        let secret = match k8slite_pki::JoinToken::parse(token) {
            Ok(t) => t.password,
            Err(_) => token.to_string(),
        };
        self.token.secret_matches(&secret)
    }

    fn sign(
        &self,
        req: &k8slite_pki::NodeCertRequest,
    ) -> Result<k8slite_pki::NodeCertResponse, String> {
        self.pki.sign_node_certs(req).map_err(|e| e.to_string())
    }
}

/// A process-unique suffix for the leader identity (pid + start time).
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

fn mkdir(path: &std::path::Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(path).map_err(|source| ServerError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The address other machines reach this one at: the source address of the default route
/// (found with an unconnected UDP socket; nothing is sent), else 127.0.0.1.
pub fn detect_node_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
        Ok(s.local_addr()?.ip())
    };
    probe().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Run the server until `shutdown` is cancelled.
pub async fn run(cfg: ServerConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    let started = std::time::Instant::now();
    let server_dir = cfg.data_dir.join("server");
    let tls_dir = server_dir.join("tls");
    let db_dir = server_dir.join("db");
    for d in [&server_dir, &tls_dir, &db_dir] {
        mkdir(d)?;
    }
    let advertise = cfg.advertise_address.unwrap_or_else(detect_node_ip);
    let service_ip = cfg
        .service_cidr
        .hosts()
        .next()
        .ok_or(ServerError::ServiceCidr(cfg.service_cidr))?;
    let mut sans: Vec<String> = cfg.tls_san.clone();
    sans.push(advertise.to_string());
    if !cfg.bind_address.is_unspecified() {
        sans.push(cfg.bind_address.to_string());
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let pki = Arc::new(k8slite_pki::ClusterPki::load_or_create(
        &tls_dir,
        &k8slite_pki::PkiOptions {
            cluster_domain: cfg.cluster_domain.clone(),
            service_ip,
            sans,
            hostname,
        },
    )?);
    let token_path = server_dir.join("token");
    let token = k8slite_pki::JoinToken::load_or_create(&token_path, pki.server_ca_pem())?;

    let store = SqliteStore::open(
        &db_dir.join("state.db"),
        SqliteConfig {
            compact_interval: Some(cfg.compact_interval),
            retain_revisions: cfg.compact_retention,
            ..SqliteConfig::default()
        },
    )?;
    let api_cfg = ApiServerConfig {
        service_cidr: cfg.service_cidr,
        advertise_address: advertise,
        secure_port: cfg.https_listen_port,
        cacerts: Some(Arc::from(pki.server_ca_pem())),
        default_not_ready_toleration_seconds: cfg.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds: cfg.default_unreachable_toleration_seconds,
        cluster_dns: Some(cfg.cluster_dns),
        cluster_dns_service: cfg.cluster_dns_service,
        ..ApiServerConfig::default()
    };
    let api = ApiServer::new(store.clone(), api_cfg, shutdown.clone());
    api.add_token_authenticator(Arc::new(JoinTokenAuth(token.clone())));
    api.enable_node_certs(Arc::new(JoinSigner::new(pki.clone(), token.clone())));
    // pods/log, exec, attach, portforward: the API server dials kubelets with its own client cert.
    let kubelet_client = k8slite_apiserver::streaming::load_or_issue_kubelet_client(&pki, &tls_dir)
        .map_err(ServerError::KubeletClient)?;
    api.set_kubelet_client(kubelet_client)
        .map_err(ServerError::KubeletClient)?;
    let sa_key = k8slite_pki::ServiceAccountKey::load_or_create(
        &tls_dir.join(k8slite_pki::SERVICE_ACCOUNT_KEY_FILE),
    )?;
    api.enable_service_account_tokens(Arc::new(k8slite_apiserver::TokenSigner::new(
        &sa_key,
        &format!("https://kubernetes.default.svc.{}", cfg.cluster_domain),
    )));
    api.bootstrap().await.map_err(ServerError::Bootstrap)?;
    let tracker = TaskTracker::new();
    api.spawn_background(&tracker);
    let settings = k8slite_api::cluster_network::ClusterNetwork {
        cluster_cidr: cfg.cluster_cidr,
        service_cidr: cfg.service_cidr,
        cluster_dns: cfg.cluster_dns,
        cluster_domain: cfg.cluster_domain.clone(),
        backend: cfg.network_backend.clone(),
        mtu: cfg.network_mtu,
        servicelb: cfg.servicelb,
        dns: cfg.cluster_dns_service,
    };
    let admin_client = inproc::InProcess::client(
        api.clone(),
        Identity::new("system:k8slite-server", vec!["system:masters".to_string()]),
    );
    network::publish(admin_client.clone(), &settings)
        .await
        .map_err(ServerError::NetworkConfig)?;
    if let Some(name) = cfg.own_node.clone() {
        tracker.spawn(roles::run(admin_client, name, shutdown.clone()));
    }

    // Controllers and scheduler: over the in-process client, behind the leader Lease.
    let loops_client = inproc::InProcess::client(
        api.clone(),
        Identity::new(
            "system:kube-controller-manager",
            vec!["system:masters".to_string()],
        ),
    );
    let controllers = k8slite_controllers::Config {
        servicelb: cfg.servicelb,
        ..cfg.controllers.clone()
    };
    let ctx = k8slite_controllers::Ctx::new(loops_client.clone(), controllers);
    let controllers_up = components::Running::default();
    let scheduler_up = components::Running::default();
    controllers_up.register(&api, "controller-manager");
    scheduler_up.register(&api, "scheduler");
    let holder = format!("{}_{}", advertise, uuid_like());
    tracker.spawn(leader::run(
        loops_client,
        holder,
        shutdown.clone(),
        move |token| {
            let ctx = ctx.clone();
            let controllers_up = controllers_up.clone();
            let scheduler_up = scheduler_up.clone();
            async move {
                let _up = controllers_up.up();
                let loops = TaskTracker::new();
                k8slite_controllers::run_all(ctx.clone(), token.clone(), &loops);
                let client = ctx.client.clone();
                let sched_token = token.clone();
                loops.spawn(async move {
                    let _up = scheduler_up.up();
                    if let Err(e) = k8slite_scheduler::run(client, sched_token).await {
                        tracing::error!(error = %e, "scheduler stopped");
                    }
                });
                loops.close();
                loops.wait().await;
            }
        },
    ));

    let addr = SocketAddr::new(cfg.bind_address, cfg.https_listen_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let tls = pki.server_tls_config()?;
    let identify: k8slite_apiserver::serve::CertIdentity = Arc::new(|der: &[u8]| {
        k8slite_pki::identity_from_cert(der)
            .ok()
            .map(|id| Identity::new(id.user, id.groups))
    });
    let serve = tokio::spawn(k8slite_apiserver::serve_tls(
        api.clone(),
        listener,
        tls,
        identify,
        shutdown.clone(),
        tracker.clone(),
    ));

    let url_host = if cfg.bind_address.is_unspecified() || cfg.bind_address.is_loopback() {
        "127.0.0.1".to_string()
    } else {
        cfg.bind_address.to_string()
    };
    let admin = pki.admin();
    k8slite_pki::write_kubeconfig(
        &cfg.write_kubeconfig,
        cfg.write_kubeconfig_mode,
        &format!("https://{url_host}:{}", cfg.https_listen_port),
        pki.server_ca_pem(),
        &admin.cert_pem,
        &admin.key_pem,
    )?;
    tracing::info!(kubeconfig = %cfg.write_kubeconfig.display(), "wrote admin kubeconfig");
    tracing::info!(token = %token_path.display(), "join token written (agents join with --token)");
    tracing::info!(%addr, advertise = %advertise, elapsed_ms = started.elapsed().as_millis() as u64, "k8slite server ready");

    shutdown.cancelled().await;
    tracing::info!("draining connections");
    tracker.close();
    if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            deadline_s = DRAIN_DEADLINE.as_secs(),
            "connections still open at the drain deadline; closing"
        );
    }
    match serve.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => tracing::warn!(error = %e, "listener task ended abnormally"),
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
