//! The `kube-dns` Service of `kube-system`: created at start at the cluster DNS address with
//! k3s's ports and labels, left as the user changed it across restarts, and its address never
//! handed to another Service. With the switches off (`cluster_dns_service: false`,
//! `servicelb: false`, what `--disable dns,servicelb` maps to) an in-process server has no
//! `kube-dns` Service, still keeps the address for a Service asking for it, and leaves
//! LoadBalancer Services to another controller.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use k8slite_tests::{Server, eventually, free_port, k8slite_bin, kubectl_bin};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn jsonpath(s: &Server, args: &[&str], path: &str) -> String {
    let p = format!("jsonpath={path}");
    let mut a = args.to_vec();
    a.extend(["-o", p.as_str()]);
    s.k(&a).trim().to_string()
}

#[test]
fn kube_dns_service_is_created_at_the_cluster_dns_address_and_kept_as_changed() {
    let mut s = Server::start();
    let get = ["get", "svc", "-n", "kube-system", "kube-dns"];
    let out = s.k(&get);
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        [
            "kube-dns",
            "ClusterIP",
            "10.43.0.10",
            "<none>",
            "53/UDP,53/TCP,9153/TCP"
        ],
        "{out}"
    );
    assert_eq!(
        jsonpath(&s, &get, "{.spec.ports[*].name}"),
        "dns dns-tcp metrics"
    );
    assert_eq!(jsonpath(&s, &get, "{.spec.selector.k8s-app}"), "kube-dns");
    for (k, v) in [
        ("k8s-app", "kube-dns"),
        ("kubernetes\\.io/cluster-service", "true"),
        ("kubernetes\\.io/name", "CoreDNS"),
    ] {
        assert_eq!(
            jsonpath(&s, &get, &format!("{{.metadata.labels.{k}}}")),
            v,
            "label {k}"
        );
    }

    // The address is not handed out to others; asking for it explicitly is refused.
    let err = s.k_err(
        &[
            "create",
            "service",
            "clusterip",
            "grab",
            "--tcp=80",
            "--clusterip=10.43.0.10",
        ],
        None,
    );
    assert!(err.contains("already allocated"), "{err}");

    // A user's change survives a restart.
    s.k(&[
        "patch",
        "svc",
        "-n",
        "kube-system",
        "kube-dns",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/ports/2"}]"#,
    ]);
    s.k(&["label", "svc", "-n", "kube-system", "kube-dns", "mine=yes"]);
    s.kill9();
    s.spawn();
    assert_eq!(jsonpath(&s, &get, "{.spec.ports[*].port}"), "53 53");
    assert_eq!(jsonpath(&s, &get, "{.metadata.labels.mine}"), "yes");
    assert_eq!(jsonpath(&s, &get, "{.spec.clusterIP}"), "10.43.0.10");
}

/// An in-process `k8slite server` (for settings the CLI does not expose yet).
struct InProcess {
    dir: tempfile::TempDir,
    port: u16,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    agents: Vec<Child>,
}

impl InProcess {
    fn start(cluster_dns_service: bool, servicelb: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("k8slite-test-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
        let cfg = k8slite_server::ServerConfig {
            data_dir: dir.path().join("data"),
            bind_address: loopback,
            https_listen_port: port,
            advertise_address: Some(loopback),
            tls_san: vec![],
            write_kubeconfig: dir.path().join("kubeconfig.yaml"),
            write_kubeconfig_mode: 0o600,
            cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
            service_cidr: "10.43.0.0/16".parse().expect("cidr"),
            cluster_dns: "10.43.0.10".parse().expect("ip"),
            cluster_dns_service,
            servicelb,
            cluster_domain: "cluster.local".into(),
            network_backend: "host-gw".into(),
            network_mtu: Some(1400),
            compact_interval: Duration::from_secs(60),
            compact_retention: 1000,
            controllers: k8slite_server::ControllersConfig::default(),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
            own_node: None,
        };
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            if let Err(e) = rt.block_on(k8slite_server::run(cfg, token)) {
                panic!("in-process server failed: {e}");
            }
        });
        let s = Self {
            dir,
            port,
            shutdown,
            thread: Some(thread),
            agents: vec![],
        };
        let ready = eventually(Duration::from_secs(30), || {
            let out = s.kubectl(&["get", "--raw", "/readyz"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok")
                .then_some(())
        });
        assert!(ready.is_some(), "in-process server not ready within 30 s");
        s
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(kubectl_bin(None))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut si = child.stdin.take().expect("stdin");
            si.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// kubectl, asserting success; stdout.
    fn k(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A simulated node (`k8slite agent --runtime=fake`) joined to this server.
    fn add_node(&mut self, name: &str, ip: &str) {
        let token =
            std::fs::read_to_string(self.dir.path().join("data/server/token")).expect("join token");
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{name}.log")))
            .expect("agent log");
        let child = Command::new(k8slite_bin())
            .arg("agent")
            .arg("--config=/dev/null")
            .arg("--runtime=fake")
            .arg(format!("--node-name={name}"))
            .arg(format!("--node-ip={ip}"))
            .arg(format!("--join=https://127.0.0.1:{}", self.port))
            .arg(format!("--token={}", token.trim()))
            .args(k8slite_tests::cluster::AGENT_DEFAULTS)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn k8slite agent");
        self.agents.push(child);
        let path = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
        let ready = eventually(WAIT, || {
            let out = self.kubectl(&["get", "node", name, "-o", path]);
            (String::from_utf8_lossy(&out.stdout).trim() == "True").then_some(())
        });
        assert!(
            ready.is_some(),
            "node {name} not Ready; agent log:\n{}",
            log_of(&self.dir.path().join(format!("agent-{name}.log")))
        );
    }
}

fn log_of(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

impl Drop for InProcess {
    fn drop(&mut self) {
        for mut a in self.agents.drain(..) {
            let _ = a.kill();
            let _ = a.wait();
        }
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn switched_off_there_is_no_kube_dns_service_and_no_servicelb() {
    let mut s = InProcess::start(false, false);
    // The switches reach the agents through the published cluster network settings.
    let data = s.k(
        &[
            "get",
            "configmap",
            "-n",
            "kube-system",
            "k8slite-network",
            "-o",
            "jsonpath={.data}",
        ],
        None,
    );
    let data: serde_json::Value = serde_json::from_str(&data).expect("configmap data");
    assert_eq!(data["dns"], "false", "{data}");
    assert_eq!(data["servicelb"], "false", "{data}");
    assert_eq!(data["network-backend"], "host-gw", "{data}");
    assert_eq!(data["network-mtu"], "1400", "{data}");
    assert_eq!(data["service-cidr"], "10.43.0.0/16", "{data}");
    let out = s.kubectl(&["get", "svc", "-n", "kube-system", "kube-dns"]);
    assert!(!out.status.success(), "kube-dns exists with the switch off");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Dynamic ClusterIPs skip the cluster DNS address; a user's CoreDNS Service may take it.
    for i in 0..12 {
        s.k(
            &[
                "create",
                "service",
                "clusterip",
                &format!("s{i}"),
                "--tcp=80",
            ],
            None,
        );
    }
    let ips = s.k(
        &["get", "svc", "-o", "jsonpath={.items[*].spec.clusterIP}"],
        None,
    );
    assert!(
        ips.split_whitespace().count() == 13
            && !ips.split_whitespace().any(|ip| ip == "10.43.0.10"),
        "{ips}"
    );
    let coredns = "apiVersion: v1\nkind: Service\nmetadata: {name: kube-dns, namespace: kube-system}\nspec:\n  clusterIP: 10.43.0.10\n  selector: {k8s-app: kube-dns}\n  ports: [{name: dns, port: 53, protocol: UDP}]\n";
    s.k(&["create", "-f", "-"], Some(coredns));
    assert_eq!(
        s.k(
            &[
                "get",
                "svc",
                "-n",
                "kube-system",
                "kube-dns",
                "-o",
                "jsonpath={.spec.clusterIP}"
            ],
            None
        ),
        "10.43.0.10"
    );

    // ServiceLB off: a LoadBalancer Service on a Ready node stays pending (its EndpointSlice,
    // written by a controller that does run, shows the controllers have seen it).
    s.add_node("node-1", "10.0.0.1");
    let lb = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports: [{port: 80}]\n";
    s.k(&["create", "-f", "-"], Some(lb));
    let slice = eventually(WAIT, || {
        let out = s.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "name",
        ]);
        (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(())
    });
    assert!(slice.is_some(), "no EndpointSlice for web");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        s.k(
            &[
                "get",
                "svc",
                "web",
                "-o",
                "jsonpath={.status.loadBalancer.ingress}"
            ],
            None
        ),
        "",
        "ServiceLB is off: nobody sets the ingress"
    );
}
