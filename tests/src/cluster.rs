//! A server plus simulated nodes: `k8slite agent --runtime fake` processes joined with the
//! server's token. `Cluster::start(3)` gives nodes `node-1`..`node-3`, all Ready.
//!
//! Agents run with a short CrashLoopBackOff (`--restart-backoff-initial=1
//! --restart-backoff-max=8`) and a 2 s lease renewal so tests stay quick; pass other values
//! through [`Cluster::start_with`] (the last occurrence of a flag wins).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Server, eventually, k8slite_bin, tail};

/// Flags every agent of a [`Cluster`] gets before the test's own.
pub const AGENT_DEFAULTS: &[&str] = &[
    "--restart-backoff-initial=1",
    "--restart-backoff-max=8",
    "--node-lease-renew-interval=2",
    "--node-status-update-frequency=2",
];

/// A running server and its simulated nodes. Agents are killed on drop.
pub struct Cluster {
    /// The server.
    pub server: Server,
    nodes: BTreeMap<String, Child>,
    agent_flags: Vec<String>,
    next_ip: u8,
}

impl Cluster {
    /// A server and `n` fake nodes `node-1`..`node-n`, waiting until all are Ready.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &[], &[])
    }

    /// [`Cluster::start`] with extra server flags and extra flags for every agent.
    pub fn start_with(n: usize, server_flags: &[&str], agent_flags: &[&str]) -> Self {
        let server = Server::start_with(server_flags);
        let mut c = Self {
            server,
            nodes: BTreeMap::new(),
            agent_flags: agent_flags.iter().map(|s| s.to_string()).collect(),
            next_ip: 1,
        };
        let names: Vec<String> = (1..=n).map(|i| format!("node-{i}")).collect();
        for name in &names {
            c.spawn_node(name, &[]);
        }
        for name in &names {
            c.wait_node_ready(name, Duration::from_secs(60));
        }
        c
    }

    /// The join token from the server's data dir.
    pub fn token(&self) -> String {
        let p = self.server.data_dir().join("server").join("token");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("reading the join token {}: {e}", p.display()))
            .trim()
            .to_string()
    }

    /// The server URL agents join.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.server.port)
    }

    fn node_log_path(&self, name: &str) -> PathBuf {
        self.server.dir.path().join(format!("agent-{name}.log"))
    }

    /// The log of node `name`'s agent.
    pub fn node_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.node_log_path(name)).unwrap_or_default()
    }

    /// Start an agent for node `name` (with extra flags) without waiting for it.
    pub fn spawn_node(&mut self, name: &str, extra: &[&str]) {
        assert!(
            !self.nodes.contains_key(name),
            "node {name} is already running"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.node_log_path(name))
            .expect("agent log file");
        let ip = format!("10.0.0.{}", self.next_ip);
        self.next_ip = self.next_ip.wrapping_add(1).max(1);
        let mut cmd = Command::new(k8slite_bin());
        cmd.arg("agent")
            .arg("--config=/dev/null")
            .arg("--runtime=fake")
            .arg(format!("--node-name={name}"))
            .arg(format!("--node-ip={ip}"))
            .arg(format!("--join={}", self.url()))
            .arg(format!("--token={}", self.token()))
            .args(AGENT_DEFAULTS)
            .args(&self.agent_flags)
            .args(extra)
            .env(
                "K8SLITE_LOG",
                std::env::var("K8SLITE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn k8slite agent");
        self.nodes.insert(name.to_string(), child);
    }

    /// Start node `name` and wait until it is Ready.
    pub fn add_node(&mut self, name: &str) {
        self.add_node_with(name, &[]);
    }

    /// Start node `name` with extra agent flags and wait until it is Ready.
    pub fn add_node_with(&mut self, name: &str, extra: &[&str]) {
        self.spawn_node(name, extra);
        self.wait_node_ready(name, Duration::from_secs(60));
    }

    /// Kill node `name`'s agent (SIGKILL: it stops renewing its Lease at once).
    pub fn stop_node(&mut self, name: &str) {
        let mut child = self
            .nodes
            .remove(name)
            .unwrap_or_else(|| panic!("no running node {name}"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM node `name`'s agent and wait up to `timeout` for it to exit; returns whether it
    /// exited cleanly (status 0).
    pub fn terminate_node(&mut self, name: &str, timeout: Duration) -> bool {
        let mut child = self
            .nodes
            .remove(name)
            .unwrap_or_else(|| panic!("no running node {name}"));
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let done = eventually(timeout, || child.try_wait().ok().flatten());
        match done {
            Some(status) => status.success(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                false
            }
        }
    }

    /// Names of the nodes whose agents run.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The Ready condition's status of node `name` (`None` if the node does not exist).
    pub fn node_ready_status(&self, name: &str) -> Option<String> {
        let out = self.server.kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Wait until node `name` is Ready; panics with the agent's log otherwise.
    pub fn wait_node_ready(&mut self, name: &str, timeout: Duration) {
        let ok = eventually(timeout, || {
            if let Some(child) = self.nodes.get_mut(name)
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "agent of {name} exited early with {status}; log:\n{}",
                    tail(&self.node_log(name), 40)
                );
            }
            (self.node_ready_status(name).as_deref() == Some("True")).then_some(())
        });
        assert!(
            ok.is_some(),
            "node {name} not Ready within {timeout:?}; agent log:\n{}",
            tail(&self.node_log(name), 40)
        );
    }
}

impl Drop for Cluster {
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for (_, mut c) in std::mem::take(&mut self.nodes) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for n in names {
                eprintln!(
                    "--- agent {n} log (last 30 lines) ---\n{}",
                    tail(&self.node_log(&n), 30)
                );
            }
        }
    }
}
