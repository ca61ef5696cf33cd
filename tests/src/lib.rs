//! Test harness: the real `k8slite` binary on a temporary data dir and a free port, driven by
//! the real kubectl. A missing prerequisite fails the test with a message naming it.
#![allow(clippy::print_stderr)] // the harness prints the server log when a test fails

pub mod bench;
pub mod cluster;
pub mod e2e;
pub mod objects;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the `k8slite` binary: `$K8SLITE_BIN`, else next to the test executable's `deps/`.
pub fn k8slite_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("K8SLITE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("k8slite");
    assert!(
        bin.exists(),
        "prerequisite missing: the k8slite binary at {} (run `cargo build -p k8slite` first, or set K8SLITE_BIN)",
        bin.display()
    );
    bin
}

/// Fail (naming the prerequisite) unless the test runs as root; `why` says what needs root.
pub fn require_root(why: &str) {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_default();
    assert_eq!(uid, "0", "prerequisite missing: root ({why})");
}

/// A kubectl binary: `kubectl` (1.32) or a versioned one like `kubectl.1.27` from the Google
/// Cloud SDK's bin folder next to it.
pub fn kubectl_bin(version: Option<&str>) -> PathBuf {
    let base =
        which("kubectl").unwrap_or_else(|| panic!("prerequisite missing: kubectl is not on PATH"));
    let Some(v) = version else { return base };
    let real = std::fs::canonicalize(&base).unwrap_or(base);
    let dir = real.parent().map(Path::to_path_buf).unwrap_or_default();
    let p = dir.join(format!("kubectl.{v}"));
    assert!(
        p.exists(),
        "prerequisite missing: {} (versioned kubectl {v})",
        p.display()
    );
    p
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A running `k8slite server` for one test.
pub struct Server {
    child: Option<Child>,
    /// Temporary directory holding the data dir and kubeconfig.
    pub dir: tempfile::TempDir,
    /// API port.
    pub port: u16,
    /// Extra flags it was started with.
    pub extra: Vec<String>,
    /// Which kubectl `kubectl()` runs (`None`: the default 1.32).
    pub kubectl_version: Option<String>,
}

impl Server {
    /// Start a server on a fresh data dir and wait for `/readyz`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start with extra flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("k8slite-test-")
            .tempdir()
            .expect("temp dir");
        let mut s = Self {
            child: None,
            dir,
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            kubectl_version: std::env::var("K8SLITE_TEST_KUBECTL")
                .ok()
                .filter(|v| !v.is_empty()),
        };
        s.spawn();
        s
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// Start the process (again) on the same data dir and port.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log file");
        let mut cmd = Command::new(k8slite_bin());
        cmd.arg("server")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--https-listen-port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!(
                "--write-kubeconfig={}",
                self.kubeconfig().display()
            ))
            .arg("--config=/dev/null")
            .arg("--disable-agent")
            .args(&self.extra)
            .env(
                "K8SLITE_LOG",
                std::env::var("K8SLITE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn k8slite server"));
        self.wait_ready(Duration::from_secs(30));
    }

    /// Wait until `/readyz` answers ok through kubectl.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "k8slite server exited early with {status}; log:\n{}",
                    self.log()
                );
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server not ready within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// PID of the server process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("server running")
    }

    /// SIGKILL the server.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the server and wait for it to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
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

    /// Run kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Run kubectl with `stdin` piped in.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl_bin(self.kubectl_version.as_deref()));
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(if stdin.is_some() {
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
            si.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Run kubectl, assert success and an empty stderr (kubectl warnings are bugs), return stdout.
    pub fn k(&self, args: &[&str]) -> String {
        self.k_stdin(args, None)
    }

    /// [`Server::k`] with stdin.
    pub fn k_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}): {stderr}\nserver log tail:\n{}",
            out.status,
            tail(&self.log(), 30)
        );
        // The one accepted line: kubectl's own skew policy when an older kubectl (1.27) talks
        // to this 1.33 API. Anything else on stderr is a bug.
        let unexpected: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("WARNING: version difference between client"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            unexpected.is_empty(),
            "kubectl {args:?} printed to stderr: {stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run kubectl expecting failure; returns stderr.
    pub fn k_err(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            eprintln!(
                "--- k8slite server log (last 60 lines) ---\n{}",
                tail(&log, 60)
            );
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
