//! End-to-end harness: the real `k8slite server` and `k8slite agent --runtime containerd`, each
//! node in its own network namespace on a private bridge, driven by the real kubectl from the
//! root namespace. Needs root, containerd, runc, the CNI plugins, iptables, busybox-static,
//! nsenter and kubectl; a missing one fails the test naming it.
//!
//! Layout of one run (slot `n`, see [`net`]): `/tmp/k8e<nn>-<pid>/` holds per node
//! `<node>/data` (`--data-dir`), `<node>/run` (`--run-dir`), `<node>/<node>.log`; plus
//! `kubeconfig.yaml` for kubectl (server URL = the server's netns address).
//!
//! Everything is removed when the [`E2eCluster`] drops, also after a failed test (see
//! [`cleanup`]).
#![allow(clippy::print_stderr)] // logs of a failed run go to the test output

pub mod cleanup;
pub mod containerd;
pub mod images;
pub mod kube;
pub mod net;
pub mod prereq;
pub mod sys;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{kubectl_bin, tail};
use net::Slot;

pub use images::{BUSYBOX_IMAGE, NGINX_IMAGE};

// ---- paths and flags the agent must agree on (one place to align) ----------------------------

/// containerd's PID file, relative to the node's run dir (`--run-dir`, default `/run/k8slite`).
/// The agent writes it when it starts containerd; cleanup stops containerd by it.
pub const CONTAINERD_PID_FILE: &str = "containerd/containerd.pid";
/// containerd's socket, relative to the run dir.
pub const CONTAINERD_SOCKET: &str = "containerd/containerd.sock";
/// Airgap images dir, relative to the data dir.
pub const IMAGES_DIR: &str = "agent/images";
/// Prefix of a node's cgroup root in every hierarchy (`/k8slite-<node-name>`).
pub const CGROUP_ROOT_PREFIX: &str = "k8slite-";
/// API port of the server inside its netns (each netns has its own port space).
pub const API_PORT: u16 = 6443;
/// Flag naming the run dir (agent, and server with its embedded agent).
pub const RUN_DIR_FLAG: &str = "--run-dir";
/// Flag naming the node (agent, and server with its embedded agent).
pub const NODE_NAME_FLAG: &str = "--node-name";

/// Flags every e2e agent gets before the test's own (short back-off and status periods keep
/// tests quick; the last occurrence of a flag wins).
pub const E2E_AGENT_DEFAULTS: &[&str] = &[
    "--restart-backoff-initial=1",
    "--restart-backoff-max=8",
    "--node-lease-renew-interval=2",
    "--node-status-update-frequency=2",
];

/// Default wait for pods/nodes.
pub const WAIT: Duration = Duration::from_secs(90);

/// Wall-clock limit of one (non-streaming) kubectl call.
pub const KUBECTL_LIMIT: Duration = Duration::from_secs(180);

/// `PATH` for node processes: the CNI plugins exec `iptables` from containerd's PATH.
pub fn node_path_env() -> String {
    let p = std::env::var("PATH").unwrap_or_default();
    format!("{p}:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin")
}

/// One node of a run: its netns, address, directories, and the k8slite process running there.
#[derive(Debug)]
pub struct Node {
    /// Logical name the test uses (`server`, `agent1`, …).
    pub name: String,
    /// Kubernetes Node name: `<prefix>-<name>` (unique per run, so cgroup roots never meet).
    pub node_name: String,
    /// Network namespace name.
    pub netns: String,
    /// `/run/netns/<netns>`.
    pub netns_path: PathBuf,
    /// Host-side veth.
    pub veth: String,
    /// eth0 address inside the netns.
    pub ip: Ipv4Addr,
    /// `<run base>/<name>`.
    pub dir: PathBuf,
    child: Option<Child>,
    /// Extra flags the process was started with (kept for restarts).
    extra: Vec<String>,
}

impl Node {
    /// `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    /// `--run-dir`.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// Airgap images dir the agent watches.
    pub fn images_dir(&self) -> PathBuf {
        self.data_dir().join(IMAGES_DIR)
    }
    /// containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.run_dir().join(CONTAINERD_SOCKET)
    }
    /// containerd's PID file.
    pub fn containerd_pid_file(&self) -> PathBuf {
        self.run_dir().join(CONTAINERD_PID_FILE)
    }
    /// Log of the k8slite process on this node.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }
    /// That log's text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    /// PID of the k8slite process, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    /// PID of the node's containerd from its PID file.
    pub fn containerd_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.containerd_pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|p| sys::alive(*p))
    }
    /// Cgroup root of the node in every hierarchy (`/k8slite-<node_name>`).
    pub fn cgroup_root(&self) -> String {
        format!("/{}", cleanup::cgroup_name(&self.node_name))
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct E2eOptions {
    /// Run `k8slite server` on node `server`.
    pub server: bool,
    /// The server runs its embedded agent (else `--disable-agent`).
    pub embedded_agent: bool,
    /// Logical names of extra nodes running `k8slite agent` (`agent1`, …).
    pub agents: Vec<String>,
    /// Extra server flags.
    pub server_flags: Vec<String>,
    /// Extra flags for every agent.
    pub agent_flags: Vec<String>,
    /// Copy the test images into every node's images dir before start.
    pub images: bool,
    /// Wait until every node is Ready.
    pub wait_ready: bool,
}

impl Default for E2eOptions {
    fn default() -> Self {
        Self {
            server: true,
            embedded_agent: true,
            agents: Vec::new(),
            server_flags: Vec::new(),
            agent_flags: Vec::new(),
            images: true,
            wait_ready: true,
        }
    }
}

/// A running e2e cluster. Dropping it removes everything it created.
pub struct E2eCluster {
    slot: Slot,
    /// Held while the cluster has processes (see [`net::RunPermit`]); dropped after teardown.
    _permit: Option<net::RunPermit>,
    /// Base directory of the run.
    pub base: PathBuf,
    nodes: Vec<Node>,
    opts: E2eOptions,
    cleaned: bool,
}

impl E2eCluster {
    /// A server (with its embedded agent) plus `agents` agents `agent1`…, all Ready, test images
    /// in every node's images dir.
    pub fn start(agents: usize) -> Self {
        Self::start_with(E2eOptions {
            agents: (1..=agents).map(|i| format!("agent{i}")).collect(),
            ..E2eOptions::default()
        })
    }

    /// Start with explicit options.
    pub fn start_with(opts: E2eOptions) -> Self {
        prereq::check(opts.server || !opts.agents.is_empty());
        let mut names: Vec<String> = Vec::new();
        if opts.server {
            names.push("server".into());
        }
        names.extend(opts.agents.iter().cloned());
        let permit = net::RunPermit::acquire().unwrap_or_else(|e| panic!("e2e run permit: {e:#}"));
        let mut c = Self::network(&names, opts);
        c._permit = Some(permit);
        if c.opts.images {
            c.copy_test_images();
        }
        if c.opts.server {
            c.spawn_server();
            c.wait_api(Duration::from_secs(60));
        }
        for a in c.opts.agents.clone() {
            c.spawn_agent(&a);
        }
        if c.opts.wait_ready {
            let mut wait: Vec<String> = c.opts.agents.clone();
            if c.opts.server && c.opts.embedded_agent {
                wait.insert(0, "server".into());
            }
            for n in wait {
                c.wait_node_ready(&n, WAIT);
            }
        }
        c
    }

    /// Only the network and directories for `nodes` (no k8slite process): for the harness
    /// self-test and benchmarks that start containerd themselves.
    pub fn network_only(nodes: &[&str]) -> Self {
        prereq::check(false);
        let names: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
        Self::network(
            &names,
            E2eOptions {
                server: false,
                embedded_agent: false,
                agents: Vec::new(),
                images: false,
                wait_ready: false,
                server_flags: Vec::new(),
                agent_flags: Vec::new(),
            },
        )
    }

    fn network(names: &[String], opts: E2eOptions) -> Self {
        let slot = Slot::acquire().unwrap_or_else(|e| panic!("e2e network slot: {e:#}"));
        let base = PathBuf::from(format!("/tmp/{}-{}", slot.prefix, std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base)
            .unwrap_or_else(|e| panic!("creating {}: {e}", base.display()));
        let mut c = Self {
            slot,
            _permit: None,
            base,
            nodes: Vec::new(),
            opts,
            cleaned: false,
        };
        // From here on a panic drops `c`, which removes what was made so far.
        net::create_bridge(&c.slot).unwrap_or_else(|e| panic!("creating the test bridge: {e:#}"));
        for (i, name) in names.iter().enumerate() {
            let netns = format!("{}-{name}", c.slot.prefix);
            let veth = format!("{}-v{i}", c.slot.prefix);
            let node = Node {
                name: name.clone(),
                node_name: format!("{}-{name}", c.slot.prefix),
                netns_path: net::netns_path(&netns),
                netns: netns.clone(),
                veth: veth.clone(),
                ip: c.slot.node_ip(i),
                dir: c.base.join(name),
                child: None,
                extra: Vec::new(),
            };
            c.nodes.push(node);
            net::create_node_netns(&c.slot, &netns, &veth, c.slot.node_ip(i))
                .unwrap_or_else(|e| panic!("creating netns for node {name}: {e:#}"));
            let n = c.nodes.last().expect("just pushed");
            for d in [n.data_dir(), n.run_dir()] {
                std::fs::create_dir_all(&d)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
            }
        }
        c
    }

    /// The run's name prefix (`k8e<nn>`).
    pub fn prefix(&self) -> &str {
        &self.slot.prefix
    }

    /// The run's network slot (ranges, bridge name).
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// Node by logical name; panics if unknown.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no e2e node {name}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no e2e node {name}"))
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Kubernetes Node name of logical node `name` (`<prefix>-<name>`).
    pub fn node_name(&self, name: &str) -> String {
        self.node(name).node_name.clone()
    }

    /// The API URL as seen from the root netns and from the other nodes.
    pub fn server_url(&self) -> String {
        format!("https://{}:{API_PORT}", self.node("server").ip)
    }

    /// Kubeconfig for kubectl in the root netns.
    pub fn kubeconfig(&self) -> PathBuf {
        self.base.join("kubeconfig.yaml")
    }

    /// The join token file the server wrote.
    pub fn token_file(&self) -> PathBuf {
        self.node("server").data_dir().join("server/token")
    }

    /// Copy the test images (built once per process) into every node's images dir.
    pub fn copy_test_images(&self) {
        let src = images::test_images();
        for n in &self.nodes {
            for f in images::IMAGE_FILES {
                images::place_image(&src.join(f), &n.images_dir(), f)
                    .unwrap_or_else(|e| panic!("copying {f} to node {}: {e:#}", n.name));
            }
        }
    }

    /// Drop an image tarball into node `name`'s images dir while it runs (atomic rename).
    pub fn drop_image(&self, name: &str, src: &Path, file_name: &str) -> PathBuf {
        images::place_image(src, &self.node(name).images_dir(), file_name)
            .unwrap_or_else(|e| panic!("dropping {file_name} on {name}: {e:#}"))
    }

    fn spawn_in(&self, node: &Node, args: &[String]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .unwrap_or_else(|e| panic!("log of {}: {e}", node.name));
        let bin = crate::k8slite_bin().to_string_lossy().into_owned();
        let mut full: Vec<&str> = vec![bin.as_str()];
        full.extend(args.iter().map(String::as_str));
        sys::nsenter_cmd(&node.netns_path, &full)
            .env("PATH", node_path_env())
            .env(
                "K8SLITE_LOG",
                std::env::var("K8SLITE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning k8slite on {} under nsenter: {e}", node.name))
    }

    /// The flags `k8slite server` gets on node `server`.
    pub fn server_args(&self) -> Vec<String> {
        let n = self.node("server");
        let mut a = vec![
            "server".to_string(),
            "--config=/dev/null".into(),
            format!("--data-dir={}", n.data_dir().display()),
            "--bind-address=0.0.0.0".into(),
            format!("--advertise-address={}", n.ip),
            format!("--https-listen-port={API_PORT}"),
            format!("--write-kubeconfig={}", n.dir.join("admin.yaml").display()),
            format!("--cluster-cidr={}", self.slot.cluster_cidr()),
            format!("--service-cidr={}", self.slot.service_cidr()),
            format!("--cluster-dns={}", self.slot.cluster_dns()),
        ];
        if self.opts.embedded_agent {
            a.extend(embedded_agent_flags(n));
        } else {
            a.push("--disable-agent".into());
        }
        a.extend(n.extra.iter().cloned());
        a.extend(self.opts.server_flags.iter().cloned());
        a
    }

    /// The flags `k8slite agent` gets on node `name`.
    pub fn agent_args(&self, name: &str) -> Vec<String> {
        let n = self.node(name);
        let mut a = vec![
            "agent".to_string(),
            "--config=/dev/null".into(),
            "--runtime=containerd".into(),
            format!("--join={}", self.server_url()),
            format!("--token-file={}", self.token_file().display()),
            format!("--data-dir={}", n.data_dir().display()),
            format!("{RUN_DIR_FLAG}={}", n.run_dir().display()),
            format!("{NODE_NAME_FLAG}={}", n.node_name),
            format!("--node-ip={}", n.ip),
            format!("--pod-log-dir={}", n.data_dir().join("pod-logs").display()),
            format!("--cluster-dns={}", self.slot.cluster_dns()),
        ];
        a.extend(E2E_AGENT_DEFAULTS.iter().map(|s| s.to_string()));
        a.extend(self.opts.agent_flags.iter().cloned());
        a.extend(n.extra.iter().cloned());
        a
    }

    /// Start (or restart) `k8slite server` on node `server`.
    pub fn spawn_server(&mut self) {
        assert!(
            self.node("server").child.is_none(),
            "server already running"
        );
        let args = self.server_args();
        let child = self.spawn_in(self.node("server"), &args);
        self.node_mut("server").child = Some(child);
    }

    /// Wait until the API answers `/readyz` through kubectl from the root netns (writes the
    /// root-netns kubeconfig first, once the server wrote its admin kubeconfig).
    pub fn wait_api(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive("server");
            let admin = self.node("server").dir.join("admin.yaml");
            if let Ok(text) = std::fs::read_to_string(&admin) {
                // The server writes https://127.0.0.1:<port> when bound to 0.0.0.0; kubectl in
                // the root netns reaches it at the server's netns address over the bridge.
                let url = self.server_url();
                let fixed = text.replace(&format!("https://127.0.0.1:{API_PORT}"), &url);
                let _ = std::fs::write(self.kubeconfig(), fixed);
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server API not ready within {timeout:?}; server log:\n{}",
                tail(&self.node("server").log(), 60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start (or restart) the agent on node `name` with its extra flags.
    pub fn spawn_agent(&mut self, name: &str) {
        assert!(
            self.node(name).child.is_none(),
            "agent {name} already running"
        );
        let args = self.agent_args(name);
        let child = self.spawn_in(self.node(name), &args);
        self.node_mut(name).child = Some(child);
    }

    /// Set extra flags for node `name`'s next (re)start.
    pub fn set_node_flags(&mut self, name: &str, flags: &[&str]) {
        self.node_mut(name).extra = flags.iter().map(|s| s.to_string()).collect();
    }

    fn check_alive(&mut self, name: &str) {
        let n = self.node_mut(name);
        if let Some(c) = n.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            n.child = None;
            panic!(
                "k8slite on node {name} exited early with {st}; log:\n{}",
                tail(&self.node(name).log(), 60)
            );
        }
    }

    /// SIGKILL the k8slite process on node `name` (stops renewing its Lease at once; its
    /// containerd and containers keep running).
    pub fn kill_node_process(&mut self, name: &str) {
        if let Some(mut c) = self.node_mut(name).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the k8slite process on node `name` and wait up to `timeout`; whether it exited
    /// with status 0.
    pub fn terminate_node_process(&mut self, name: &str, timeout: Duration) -> bool {
        let Some(mut c) = self.node_mut(name).child.take() else {
            return true;
        };
        sys::signal(c.id(), "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restart node `name`'s k8slite process (SIGTERM, then start again on the same dirs).
    pub fn restart_node_process(&mut self, name: &str) {
        self.terminate_node_process(name, Duration::from_secs(30));
        if name == "server" {
            self.spawn_server();
            self.wait_api(Duration::from_secs(60));
        } else {
            self.spawn_agent(name);
        }
    }

    /// SIGKILL node `name`'s containerd (the agent is expected to restart it). Returns the old
    /// PID.
    pub fn kill_containerd(&self, name: &str) -> u32 {
        let pid = self
            .node(name)
            .containerd_pid()
            .unwrap_or_else(|| panic!("no running containerd on node {name}"));
        sys::signal(pid, "KILL");
        sys::wait_gone(pid, Duration::from_secs(10));
        pid
    }

    // ---- kubectl -------------------------------------------------------------------------

    /// Run kubectl against the cluster (root netns).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// The kubectl command, ready to run (for `logs -f`, `port-forward`, `attach`: spawn it).
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_bin(None));
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", &self.base)
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        cmd
    }

    /// kubectl with `stdin` piped in; killed after [`KUBECTL_LIMIT`] so a hung stream fails
    /// the test instead of the whole run.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_version_stdin(None, args, stdin)
    }

    /// [`E2eCluster::kubectl_stdin`] with a versioned kubectl (`Some("1.29")` runs
    /// `kubectl.1.29`).
    pub fn kubectl_version_stdin(
        &self,
        version: Option<&str>,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("--kill-after=5")
            .arg(KUBECTL_LIMIT.as_secs().to_string())
            .arg(kubectl_bin(version))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", &self.base)
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut si = child.stdin.take().expect("stdin");
            si.write_all(input.as_bytes()).expect("write kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl, asserting success and an empty stderr; returns stdout.
    pub fn k(&self, args: &[&str]) -> String {
        self.k_stdin(args, None)
    }

    /// [`E2eCluster::k`] with stdin.
    pub fn k_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}): {stderr}\n{}",
            out.status,
            self.log_tails(20)
        );
        assert!(
            stderr.trim().is_empty(),
            "kubectl {args:?} printed to stderr: {stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl <args> -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.k(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {a:?}: not JSON ({e})"))
    }

    /// A jsonpath field of an object (`""` when the object is missing).
    pub fn field(&self, args: &[&str], jsonpath: &str) -> String {
        let mut a = args.to_vec();
        let jp = format!("jsonpath={jsonpath}");
        a.extend(["-o", &jp]);
        let out = self.kubectl(&a);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Wait until node `name` (logical) is Ready.
    pub fn wait_node_ready(&mut self, name: &str, timeout: Duration) {
        let node_name = self.node_name(name);
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive(name);
            let st = self.field(
                &["get", "node", &node_name],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            );
            if st == "True" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {node_name} not Ready within {timeout:?}; its log:\n{}",
                tail(&self.node(name).log(), 60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Poll `f` until it returns `Some`; panics naming `what` (with log tails) after `timeout`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n{}\n{}",
                self.cluster_state(),
                self.log_tails(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until pod `name` in the default namespace has `phase`.
    pub fn wait_pod_phase(&self, name: &str, phase: &str) {
        self.wait_for(&format!("pod {name} phase {phase}"), WAIT, || {
            (self.field(&["get", "pod", name], "{.status.phase}") == phase).then_some(())
        });
    }

    /// Wait until pod `name` is Ready; returns its pod IP.
    pub fn wait_pod_ready(&self, name: &str) -> String {
        self.wait_for(&format!("pod {name} Ready"), WAIT, || {
            let ready = self.field(
                &["get", "pod", name],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            );
            let ip = self.field(&["get", "pod", name], "{.status.podIP}");
            (ready == "True" && !ip.is_empty()).then_some(ip)
        })
    }

    // ---- inside the nodes -----------------------------------------------------------------

    /// Run `cmd` inside node `name`'s network namespace (root mount namespace).
    pub fn exec_in(&self, name: &str, cmd: &[&str]) -> Output {
        sys::nsenter_cmd(&self.node(name).netns_path, cmd)
            .env("PATH", node_path_env())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter into {name}: {e}"))
    }

    /// `sh -c script` inside node `name`'s netns; returns stdout when it succeeds.
    pub fn sh_in(&self, name: &str, script: &str) -> Option<String> {
        let out = self.exec_in(name, &["sh", "-c", script]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Fetch `url` from inside node `name` (busybox wget, 5 s limit); body when it succeeds.
    pub fn fetch_in(&self, name: &str, url: &str) -> Option<String> {
        let out = self.exec_in(name, &["timeout", "5", "busybox", "wget", "-qO-", url]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Pods and events as kubectl shows them, for failure messages.
    pub fn cluster_state(&self) -> String {
        let show = |args: &[&str]| {
            let o = self.kubectl(args);
            format!(
                "--- kubectl {} ---\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        show(&["get", "pods", "-A", "-o", "wide"])
            + &show(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
    }

    /// The last `n` lines of every node's log.
    pub fn log_tails(&self, n: usize) -> String {
        self.nodes
            .iter()
            .map(|node| {
                let ctrd =
                    std::fs::read_to_string(node.run_dir().join("containerd/containerd.log"))
                        .unwrap_or_default();
                format!(
                    "--- {} log ---\n{}\n--- {} containerd log ---\n{}",
                    node.name,
                    tail(&node.log(), n),
                    node.name,
                    tail(&ctrd, n / 2)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    // ---- teardown ---------------------------------------------------------------------------

    /// Remove everything now and report what could not be removed (empty = clean). Drop does
    /// the same and prints the report.
    pub fn teardown(mut self) -> Vec<String> {
        self.cleanup()
    }

    /// What of this run exists right now (see [`cleanup::leftovers`]).
    pub fn leftovers(&self) -> Vec<String> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.node_name.clone()).collect();
        cleanup::leftovers(&self.slot, &self.base, &names)
    }

    fn cleanup(&mut self) -> Vec<String> {
        if self.cleaned {
            return Vec::new();
        }
        self.cleaned = true;
        let mut problems = Vec::new();
        // 1. k8slite processes (agents first, the server last).
        for n in self.nodes.iter_mut().rev() {
            if let Some(mut c) = n.child.take() {
                if !sys::stop_pid(c.id(), Duration::from_secs(10)) {
                    problems.push(format!("k8slite on {} did not stop", n.name));
                }
                let _ = c.wait();
            }
        }
        // 2. containerd by PID file, then shims and anything else naming the run dir.
        for n in &self.nodes {
            cleanup::stop_containerd(n);
        }
        cleanup::kill_processes_naming(&self.base);
        // 3. containers and cgroups.
        for n in &self.nodes {
            problems.extend(cleanup::remove_node_cgroups(n));
        }
        // 4. mounts (rootfs overlays, netns pins, shared bind mounts, tmpfs volumes).
        problems.extend(cleanup::unmount_run(&self.base));
        // 5. libcni result cache.
        cleanup::remove_cni_results(&self.base, &self.slot);
        // 6. network.
        for n in &self.nodes {
            net::delete_node_netns(&n.netns, &n.veth);
        }
        net::delete_bridge(&self.slot);
        // 7. files (only when nothing is mounted there any more).
        if sys::mounts_under(&self.base).is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.base) {
                problems.push(format!("removing {}: {e}", self.base.display()));
            }
        } else {
            problems.push(format!(
                "{} kept: mounts remain below it",
                self.base.display()
            ));
        }
        problems.extend(self.leftovers());
        problems.sort();
        problems.dedup();
        problems
    }
}

/// Flags for the server's embedded agent on node `n` (the lead aligns these with the server's
/// flags once the embedded agent lands).
pub fn embedded_agent_flags(n: &Node) -> Vec<String> {
    let mut a = vec![
        format!("{RUN_DIR_FLAG}={}", n.run_dir().display()),
        format!("{NODE_NAME_FLAG}={}", n.node_name),
        format!("--node-ip={}", n.ip),
        format!("--pod-log-dir={}", n.data_dir().join("pod-logs").display()),
    ];
    a.extend(E2E_AGENT_DEFAULTS.iter().map(|s| s.to_string()));
    a
}

impl Drop for E2eCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(60));
        }
        let problems = self.cleanup();
        if !problems.is_empty() {
            eprintln!(
                "e2e cleanup of {} left: {}",
                self.slot.prefix,
                problems.join("; ")
            );
        }
    }
}
