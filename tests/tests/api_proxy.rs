//! The proxy subresources against the real API server and the real kubelet API, in-process,
//! over a fake runtime (no containers, loopback only): `nodes/proxy` reaches the kubelet API
//! (plain requests and a WebSocket upgrade relayed through to the runtime's streaming server),
//! and the kubelet's pod tunnel refuses an address that is no pod of its node, so the API
//! server answers 503 without any traffic leaving loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use k8slite_runtime::{
    ContainerConfig, ContainerMetadata, ContainerRuntime, FakeRuntime, PodSandboxConfig,
    PodSandboxMetadata,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

struct Env {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    shutdown: tokio_util::sync::CancellationToken,
    runtime: Arc<FakeRuntime>,
    api: SocketAddr,
    ca_pem: String,
    admin: k8slite_pki::CertAndKey,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A streaming server like containerd's: greets on channel 1 with the request path's first
/// segment, then closes with a Success status on channel 3.
async fn fake_streaming_server() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut path = String::new();
                let cb = |req: &Request, mut resp: Response| {
                    path = req.uri().to_string();
                    resp.headers_mut().insert(
                        "sec-websocket-protocol",
                        "v4.channel.k8s.io".parse().expect("hv"),
                    );
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    return;
                };
                let greeting = format!("hello from {}\n", path.split('/').nth(1).unwrap_or(""));
                let mut out = vec![1u8];
                out.extend(greeting.as_bytes());
                let _ = ws.send(Message::Binary(out.into())).await;
                let mut status = vec![3u8];
                status.extend(br#"{"metadata":{},"status":"Success"}"#);
                let _ = ws.send(Message::Binary(status.into())).await;
                let _ = ws.close(None).await;
            });
        }
    });
    format!("http://{addr}")
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

async fn start() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_dir = dir.path().join("tls");
    let pki = k8slite_pki::ClusterPki::load_or_create(
        &tls_dir,
        &k8slite_pki::PkiOptions {
            cluster_domain: "cluster.local".into(),
            service_ip: "10.43.0.1".parse().expect("ip"),
            sans: vec!["127.0.0.1".into()],
            hostname: "localhost".into(),
        },
    )
    .expect("pki");
    let store = k8slite_datastore::sqlite::SqliteStore::open(
        &dir.path().join("db/state.db"),
        Default::default(),
    )
    .expect("store");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let api = k8slite_apiserver::ApiServer::new(store, Default::default(), shutdown.clone());
    api.bootstrap().await.expect("bootstrap");
    let kc = k8slite_apiserver::streaming::load_or_issue_kubelet_client(&pki, &tls_dir)
        .expect("kubelet client cert");
    api.set_kubelet_client(kc).expect("kubelet client");
    let api_addr = free_addr();
    let listener = tokio::net::TcpListener::bind(api_addr).await.expect("bind");
    let identify: k8slite_apiserver::serve::CertIdentity = Arc::new(|der: &[u8]| {
        k8slite_pki::identity_from_cert(der)
            .ok()
            .map(|id| k8slite_apiserver::Identity::new(id.user, id.groups))
    });
    tokio::spawn(k8slite_apiserver::serve_tls(
        api,
        listener,
        pki.server_tls_config().expect("tls"),
        identify,
        shutdown.clone(),
        tokio_util::task::TaskTracker::new(),
    ));
    let kubeconfig = dir.path().join("kubeconfig");
    let admin = pki.admin();
    k8slite_pki::write_kubeconfig(
        &kubeconfig,
        0o600,
        &format!("https://{api_addr}"),
        pki.server_ca_pem(),
        &admin.cert_pem,
        &admin.key_pem,
    )
    .expect("kubeconfig");

    let runtime = Arc::new(FakeRuntime::new());
    runtime.set_streaming_url(Some(fake_streaming_server().await));
    let serving = pki
        .issue_serving_cert("node-1", &["127.0.0.1".into()])
        .expect("serving cert");
    let kubelet_addr = free_addr();
    let cfg = k8slite_agent::kubelet::KubeletServerConfig {
        addr: kubelet_addr,
        serving_cert_pem: serving.cert_pem,
        serving_key_pem: serving.key_pem,
        client_ca_pem: pki.client_ca_pem().to_string(),
        log_root: dir.path().join("pods"),
    };
    let rt: Arc<dyn ContainerRuntime> = runtime.clone();
    tokio::spawn(k8slite_agent::kubelet::serve(cfg, rt, shutdown.clone()));
    let env = Env {
        dir,
        kubeconfig,
        shutdown,
        runtime,
        api: api_addr,
        ca_pem: pki.server_ca_pem().to_string(),
        admin: admin.clone(),
    };
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_addr.port()}}}
    });
    create(&env, &node).await;
    let patch = serde_json::json!({"status": node["status"]}).to_string();
    k_ok(
        &env,
        &[
            "patch",
            "node",
            "node-1",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    )
    .await;
    env
}

/// Run a blocking kubectl off the runtime's threads.
async fn k(env: &Env, args: &[&str]) -> std::process::Output {
    let bin = k8slite_tests::kubectl_bin(None);
    let kc = format!("--kubeconfig={}", env.kubeconfig.display());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .arg(kc)
            .args(args)
            .output()
            .expect("run kubectl")
    })
    .await
    .expect("join")
}

async fn k_ok(env: &Env, args: &[&str]) -> String {
    let out = k(env, args).await;
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn create(env: &Env, obj: &serde_json::Value) {
    let path = env.dir.path().join("obj.json");
    std::fs::write(&path, obj.to_string()).expect("write");
    k_ok(env, &["create", "-f", &path.display().to_string()]).await;
}

/// Pod `web` with container `app` on node-1, its sandbox and container in the fake runtime;
/// `pod_ip` reported in its status.
async fn pod(env: &Env, pod_ip: &str) {
    create(
        env,
        &serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "busybox"}]}}),
    )
    .await;
    let uid = k_ok(
        env,
        &["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"],
    )
    .await;
    let status = serde_json::json!({"status": {"phase": "Running", "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}]}})
    .to_string();
    k_ok(
        env,
        &[
            "patch",
            "pod",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ],
    )
    .await;
    let sandbox_cfg = PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid,
            attempt: 0,
        },
        ..Default::default()
    };
    let rt = &env.runtime;
    let sb = rt.run_pod_sandbox(&sandbox_cfg).await.expect("sandbox");
    let cfg = ContainerConfig {
        metadata: ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        },
        image: "busybox".into(),
        labels: BTreeMap::from([("io.kubernetes.container.name".into(), "app".into())]),
        ..Default::default()
    };
    rt.pull_image("busybox").await.expect("pull");
    let id = rt
        .create_container(&sb, &cfg, &sandbox_cfg)
        .await
        .expect("create");
    rt.start_container(&id).await.expect("start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_proxy_reaches_the_kubelet_and_relays_upgrades() {
    let env = start().await;
    pod(&env, "10.255.0.7").await;
    assert_eq!(
        k_ok(
            &env,
            &["get", "--raw", "/api/v1/nodes/node-1/proxy/healthz"]
        )
        .await,
        "ok"
    );
    // A kubelet 404 comes back as the kubelet's.
    let out = k(
        &env,
        &["get", "--raw", "/api/v1/nodes/node-1/proxy/nothing"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{out:?}"
    );

    // A WebSocket exec on the kubelet, through nodes/proxy: the upgrade passes both ways.
    let tls = k8slite_pki::client_tls_config(&env.ca_pem, Some(&env.admin)).expect("client tls");
    let tcp = tokio::net::TcpStream::connect(env.api)
        .await
        .expect("connect");
    let conn = tokio_rustls::TlsConnector::from(tls)
        .connect(
            rustls::pki_types::ServerName::IpAddress(env.api.ip().into()),
            tcp,
        )
        .await
        .expect("TLS to the API server");
    let url = format!(
        "wss://{}/api/v1/nodes/node-1/proxy/exec/default/web/app?command=true&output=1&stdout=1",
        env.api
    );
    let req = tokio_tungstenite::tungstenite::ClientRequestBuilder::new(url.parse().expect("url"))
        .with_sub_protocol("v4.channel.k8s.io");
    let (mut ws, resp) = tokio_tungstenite::client_async(req, conn)
        .await
        .expect("WebSocket through nodes/proxy");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v4.channel.k8s.io")
    );
    let mut got = Vec::new();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Binary(b) = m {
            got.push(String::from_utf8_lossy(&b).into_owned());
        }
    }
    assert!(
        got.iter().any(|m| m == "\u{1}hello from exec\n"),
        "frames: {got:?}"
    );
    assert!(
        got.iter()
            .any(|m| m.starts_with('\u{3}') && m.contains("Success")),
        "frames: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kubelet_tunnel_refuses_addresses_of_no_local_pod() {
    let env = start().await;
    // The fake runtime's sandbox has another IP than the one the pod reports: the kubelet
    // must refuse to dial 10.255.0.7 (nothing is sent there).
    pod(&env, "10.255.0.7").await;
    let out = k(
        &env,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/web:80/proxy/",
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ServiceUnavailable")
            && err.contains("while dialing 10.255.0.7:80, code 403")
            && err.contains("is not the address of a pod running on this node"),
        "{err}"
    );
    // A pod without an IP yet: upstream's "address not allowed".
    k_ok(
        &env,
        &[
            "patch",
            "pod",
            "web",
            "--subresource=status",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/status/podIP"},{"op":"remove","path":"/status/podIPs"}]"#,
        ],
    )
    .await;
    let out = k(
        &env,
        &["get", "--raw", "/api/v1/namespaces/default/pods/web/proxy/"],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("address not allowed"), "{err}");
}
