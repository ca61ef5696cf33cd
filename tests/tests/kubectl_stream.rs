//! kubectl logs/exec/attach/port-forward through the real API server and the real kubelet API
//! server, in-process, over a fake runtime whose streaming server is a small WebSocket server
//! in this test speaking `v4.channel.k8s.io` like containerd's.
//!
//! The fake streaming server: exec/attach echo stdin (channel 0) on stdout (channel 1) after a
//! greeting, and end with a Success status on channel 3 after 700 ms without input;
//! port-forward sends the port prefix on channels 0 and 1 and answers data upper-cased.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

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
    log_root: PathBuf,
    runtime: Arc<FakeRuntime>,
}

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
                    let offered = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    assert!(offered.contains("v4.channel.k8s.io"), "offered {offered}");
                    resp.headers_mut().insert(
                        "sec-websocket-protocol",
                        "v4.channel.k8s.io".parse().expect("hv"),
                    );
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    return;
                };
                if path.starts_with("/portforward/") {
                    let port: u16 = path
                        .split("port=")
                        .nth(1)
                        .and_then(|p| p.parse().ok())
                        .expect("port in query");
                    let [lo, hi] = port.to_le_bytes();
                    let _ = ws.send(Message::Binary(vec![0, lo, hi].into())).await;
                    let _ = ws.send(Message::Binary(vec![1, lo, hi].into())).await;
                    while let Some(Ok(Message::Binary(b))) = ws.next().await {
                        if b.first() == Some(&0) {
                            let mut out = vec![0u8];
                            out.extend(b[1..].to_ascii_uppercase());
                            let _ = ws.send(Message::Binary(out.into())).await;
                        }
                    }
                    return;
                }
                let greeting = format!("hello from {}\n", path.split('/').nth(1).unwrap_or(""));
                let mut out = vec![1u8];
                out.extend(greeting.as_bytes());
                let _ = ws.send(Message::Binary(out.into())).await;
                loop {
                    match tokio::time::timeout(Duration::from_millis(700), ws.next()).await {
                        Ok(Some(Ok(Message::Binary(b)))) if b.first() == Some(&0) => {
                            let mut out = vec![1u8];
                            out.extend(&b[1..]);
                            let _ = ws.send(Message::Binary(out.into())).await;
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
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

    // The node's kubelet API.
    let runtime = Arc::new(FakeRuntime::new());
    runtime.set_streaming_url(Some(fake_streaming_server().await));
    let serving = pki
        .issue_serving_cert("node-1", &["127.0.0.1".into()])
        .expect("serving cert");
    let kubelet_addr = free_addr();
    let log_root = dir.path().join("pods");
    let cfg = k8slite_agent::kubelet::KubeletServerConfig {
        addr: kubelet_addr,
        serving_cert_pem: serving.cert_pem,
        serving_key_pem: serving.key_pem,
        client_ca_pem: pki.client_ca_pem().to_string(),
        log_root: log_root.clone(),
    };
    let rt: Arc<dyn ContainerRuntime> = runtime.clone();
    tokio::spawn(k8slite_agent::kubelet::serve(cfg, rt, shutdown.clone()));
    let env = Env {
        dir,
        kubeconfig,
        shutdown,
        log_root,
        runtime,
    };
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_addr.port()}}}
    });
    apply(&env, &node);
    // kubectl create ignores status: set it through the status subresource.
    let patch = serde_json::json!({"status": node["status"]}).to_string();
    kubectl_ok(
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
    );
    env
}

fn kubectl(env: &Env, args: &[&str]) -> std::process::Output {
    Command::new(k8slite_tests::kubectl_bin(None))
        .arg(format!("--kubeconfig={}", env.kubeconfig.display()))
        .args(args)
        .output()
        .expect("run kubectl")
}

fn kubectl_ok(env: &Env, args: &[&str]) -> String {
    let out = kubectl(env, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(env: &Env, obj: &serde_json::Value) {
    let path = env.dir.path().join("obj.json");
    std::fs::write(&path, obj.to_string()).expect("write");
    kubectl_ok(env, &["create", "-f", &path.display().to_string()]);
}

/// A pod bound to node-1 with `containers`, running in the fake runtime; returns its UID.
async fn pod(env: &Env, name: &str, containers: &[&str]) -> String {
    let cs: Vec<_> = containers
        .iter()
        .map(|c| serde_json::json!({"name": c, "image": "busybox"}))
        .collect();
    apply(
        env,
        &serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "node-1", "containers": cs}}),
    );
    let uid = kubectl_ok(env, &["get", "pod", name, "-o", "jsonpath={.metadata.uid}"]);
    // No agent runs here: report the pod Running (kubectl port-forward checks the phase).
    kubectl_ok(
        env,
        &[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ],
    );
    let sandbox_cfg = PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: uid.clone(),
            attempt: 0,
        },
        ..Default::default()
    };
    let rt = &env.runtime;
    let sb = rt.run_pod_sandbox(&sandbox_cfg).await.expect("sandbox");
    for c in containers {
        let cfg = ContainerConfig {
            metadata: ContainerMetadata {
                name: (*c).into(),
                attempt: 0,
            },
            image: "busybox".into(),
            labels: BTreeMap::from([("io.kubernetes.container.name".into(), (*c).into())]),
            ..Default::default()
        };
        rt.pull_image("busybox").await.expect("pull");
        let id = rt
            .create_container(&sb, &cfg, &sandbox_cfg)
            .await
            .expect("create");
        rt.start_container(&id).await.expect("start");
    }
    uid
}

fn write_log(root: &Path, pod: &str, uid: &str, container: &str, attempt: u32, body: &str) {
    let dir = root.join(format!("default_{pod}_{uid}")).join(container);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(format!("{attempt}.log")), body).expect("write log");
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

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs_exec_attach_port_forward() {
    let env = start().await;
    let uid = pod(&env, "web", &["app"]).await;
    write_log(
        &env.log_root,
        "web",
        &uid,
        "app",
        0,
        "2026-01-01T00:00:01.5Z stdout F first\n\
         2026-01-01T00:00:02Z stderr P sec\n\
         2026-01-01T00:00:02.1Z stderr F ond\n\
         2026-01-01T00:00:03Z stdout F third\n",
    );

    // logs and its options
    let o = k(&env, &["logs", "web"]).await;
    assert_eq!(stdout(&o), "first\nsecond\nthird\n", "{}", stderr(&o));
    let o = k(&env, &["logs", "web", "--tail=1", "--timestamps"]).await;
    assert_eq!(
        stdout(&o),
        "2026-01-01T00:00:03.000000000Z third\n",
        "{}",
        stderr(&o)
    );
    let o = k(
        &env,
        &[
            "logs",
            "web",
            "--since-time=2026-01-01T00:00:02Z",
            "--limit-bytes=8",
        ],
    )
    .await;
    assert_eq!(stdout(&o), "second\nt", "{}", stderr(&o));
    let o = k(&env, &["logs", "web", "--previous"]).await;
    assert!(
        stderr(&o).contains("previous terminated container \"app\" in pod \"web\" not found"),
        "{}",
        stderr(&o)
    );

    // follow: new lines arrive, the stream ends when the container exits
    let bin = k8slite_tests::kubectl_bin(None);
    let follow = Command::new(bin)
        .arg(format!("--kubeconfig={}", env.kubeconfig.display()))
        .args(["logs", "-f", "web", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log_file = env.log_root.join(format!("default_web_{uid}/app/0.log"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log_file)
        .expect("open")
        .write_all(b"2026-01-01T00:00:04Z stdout F fourth\n")
        .expect("append");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let id = env
        .runtime
        .find_container("default", "web", "app")
        .expect("container");
    assert!(env.runtime.exit_container(&id, 0));
    let out = tokio::task::spawn_blocking(move || follow.wait_with_output())
        .await
        .expect("join")
        .expect("kubectl logs -f");
    assert_eq!(stdout(&out), "third\nfourth\n", "{}", stderr(&out));

    // exec, attach and port-forward on a running pod
    pod(&env, "two", &["a", "b"]).await;
    // kubectl picks the first container itself; the server's own check shows on the raw API.
    let o = k(
        &env,
        &["get", "--raw", "/api/v1/namespaces/default/pods/two/log"],
    )
    .await;
    assert!(
        stderr(&o).contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{}",
        stderr(&o)
    );
    let o = k(&env, &["exec", "two", "-c", "b", "--", "echo", "hi"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from exec\n");

    let bin = k8slite_tests::kubectl_bin(None);
    let kc = format!("--kubeconfig={}", env.kubeconfig.display());
    let o = tokio::task::spawn_blocking(move || {
        let mut c = Command::new(bin)
            .arg(kc)
            .args(["attach", "-i", "two", "-c", "a"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl attach");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(b"ping\n")
            .expect("write");
        c.wait_with_output().expect("wait")
    })
    .await
    .expect("join");
    let out = stdout(&o);
    assert!(
        out.contains("hello from attach") && out.contains("ping"),
        "{out} / {}",
        stderr(&o)
    );

    // kubectl 1.32 tunnels SPDY in a WebSocket; 1.27-1.30 upgrade to plain SPDY.
    for version in [None, Some("1.27"), Some("1.30")] {
        port_forward(&env, version).await;
    }
    // kubectl <= 1.29 execs over plain SPDY.
    for version in ["1.27", "1.29"] {
        let bin = k8slite_tests::kubectl_bin(Some(version));
        let kc = format!("--kubeconfig={}", env.kubeconfig.display());
        let o = tokio::task::spawn_blocking(move || {
            let mut c = Command::new(bin)
                .arg(kc)
                .args(["exec", "-i", "two", "-c", "a", "--", "cat"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kubectl exec");
            c.stdin
                .take()
                .expect("stdin")
                .write_all(b"spdy ping\n")
                .expect("write");
            c.wait_with_output().expect("wait")
        })
        .await
        .expect("join");
        assert!(o.status.success(), "kubectl {version}: {}", stderr(&o));
        assert_eq!(
            stdout(&o),
            "hello from exec\nspdy ping\n",
            "kubectl {version}: {}",
            stderr(&o)
        );
        assert_eq!(stderr(&o), "", "kubectl {version}");
    }
    env.shutdown.cancel();
}

async fn port_forward(env: &Env, version: Option<&str>) {
    let local = free_addr().port();
    let bin = k8slite_tests::kubectl_bin(version);
    let mut pf = Command::new(bin)
        .arg(format!("--kubeconfig={}", env.kubeconfig.display()))
        .args(["port-forward", "pod/two", &format!("{local}:8080")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let answer = tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", local)) {
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                s.write_all(b"ping").expect("write");
                let mut buf = [0u8; 4];
                let r = s.read_exact(&mut buf);
                return r.map(|_| String::from_utf8_lossy(&buf).into_owned());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(std::io::Error::other("port-forward never listened"))
    })
    .await
    .expect("join");
    let _ = pf.kill();
    let pf_out = pf.wait_with_output().expect("wait");
    assert_eq!(
        answer.as_deref().ok(),
        Some("PING"),
        "kubectl {version:?}: {answer:?}; kubectl: {}",
        stderr(&pf_out)
    );
}
