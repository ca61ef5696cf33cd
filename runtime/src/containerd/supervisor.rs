//! Starting, adopting, watching and (on request) stopping the agent's containerd.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ContainerdConfig, ContainerdError, process};
use crate::CriRuntime;

/// How long a (re)started containerd may take to answer CRI `Version`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// First restart delay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A containerd that ran this long resets the back-off.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// The log is moved aside to `containerd.log.1` at start when larger than this.
const MAX_LOG: u64 = 16 * 1024 * 1024;

/// A containerd process: our child, or one an earlier agent run started and we adopted.
enum Proc {
    Child(Child),
    Adopted(u32),
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Adopted(pid) => Some(*pid),
        }
    }
}

/// Runs the agent's own containerd: starts it (or adopts the one still running from an earlier
/// agent run), restarts it with back-off when it dies, and leaves it running when the agent
/// shuts down so pods keep running; [`Supervisor::stop`] terminates it explicitly.
pub struct Supervisor {
    cfg: Arc<ContainerdConfig>,
    socket: PathBuf,
    pid: Arc<StdMutex<Option<u32>>>,
    restarts: Arc<AtomicU64>,
    stop_monitor: CancellationToken,
    monitor: Mutex<Option<JoinHandle<Option<Proc>>>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("socket", &self.socket)
            .field("pid", &self.pid())
            .field("restarts", &self.restarts())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Write the config, start containerd (or adopt a running one started with the same
    /// config file; one with a different config is restarted), wait until its CRI answers, and
    /// watch it until `shutdown`, restarting it when it dies.
    pub async fn start(
        cfg: ContainerdConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, ContainerdError> {
        for dir in [
            &cfg.root,
            &cfg.run_dir,
            &cfg.state_dir(),
            &cfg.cni_conf_dir,
            &cfg.opt_dir(),
        ] {
            std::fs::create_dir_all(dir).map_err(|source| ContainerdError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
        }
        let rendered = cfg.render();
        let current = std::fs::read_to_string(cfg.config_path()).ok();
        let running = process::find(&cfg);
        let proc = match running {
            Some(pid) if current.as_deref() == Some(rendered.as_str()) => {
                tracing::info!(pid, socket = %cfg.socket().display(), "adopting running containerd");
                write_pid(&cfg, pid)?;
                let proc = Proc::Adopted(pid);
                wait_ready(&cfg, Some(pid), None).await?;
                proc
            }
            Some(pid) => {
                tracing::info!(
                    pid,
                    "containerd runs with an outdated config: restarting it (containers keep running)"
                );
                terminate(Proc::Adopted(pid)).await;
                write_config(&cfg, &rendered)?;
                spawn_ready(&cfg).await?
            }
            None => {
                write_config(&cfg, &rendered)?;
                spawn_ready(&cfg).await?
            }
        };
        let cfg = Arc::new(cfg);
        let pid = Arc::new(StdMutex::new(proc.pid()));
        let restarts = Arc::new(AtomicU64::new(0));
        let stop_monitor = CancellationToken::new();
        let monitor = tokio::spawn(watch(
            cfg.clone(),
            proc,
            pid.clone(),
            restarts.clone(),
            shutdown,
            stop_monitor.clone(),
        ));
        Ok(Self {
            socket: cfg.socket(),
            cfg,
            pid,
            restarts,
            stop_monitor,
            monitor: Mutex::new(Some(monitor)),
        })
    }

    /// The CRI socket (`<run_dir>/containerd.sock`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ContainerdConfig {
        &self.cfg
    }

    /// PID of the current containerd (`None` while it is being restarted).
    pub fn pid(&self) -> Option<u32> {
        self.pid.lock().ok().and_then(|p| *p)
    }

    /// How often containerd was restarted after dying.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// A CRI client for this containerd.
    pub fn runtime(&self) -> crate::Result<CriRuntime> {
        CriRuntime::connect(&self.socket.to_string_lossy())
    }

    /// Stop watching and terminate containerd (SIGTERM, SIGKILL after 10 s), by PID. Running
    /// containers' shims survive; remove pods through CRI first for a full cleanup.
    pub async fn stop(&self) -> Result<(), ContainerdError> {
        self.stop_monitor.cancel();
        let handle = self.monitor.lock().await.take();
        let proc = match handle {
            Some(h) => h.await.ok().flatten(),
            None => None,
        };
        let proc = proc.or_else(|| process::find(&self.cfg).map(Proc::Adopted));
        if let Some(proc) = proc {
            terminate(proc).await;
        }
        if let Ok(mut p) = self.pid.lock() {
            *p = None;
        }
        match std::fs::remove_file(self.cfg.pid_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ContainerdError::Io {
                what: format!("removing {}", self.cfg.pid_path().display()),
                source,
            }),
        }
    }
}

impl ContainerdConfig {
    /// PID of a containerd running with this config (pid file, else a `/proc` scan).
    pub fn running_pid(&self) -> Option<u32> {
        process::find(self)
    }
}

fn write_config(cfg: &ContainerdConfig, text: &str) -> Result<(), ContainerdError> {
    let path = cfg.config_path();
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| ContainerdError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
}

fn write_pid(cfg: &ContainerdConfig, pid: u32) -> Result<(), ContainerdError> {
    let path = cfg.pid_path();
    std::fs::write(&path, format!("{pid}\n")).map_err(|source| ContainerdError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// The last lines of containerd's log, for error messages.
fn log_tail(cfg: &ContainerdConfig) -> String {
    let text = std::fs::read_to_string(cfg.log_path()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Start containerd and wait until its CRI answers; record its PID.
async fn spawn_ready(cfg: &ContainerdConfig) -> Result<Proc, ContainerdError> {
    let log_path = cfg.log_path();
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > MAX_LOG) {
        let _ = std::fs::rename(&log_path, log_path.with_extension("log.1"));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| ContainerdError::Io {
            what: format!("opening {}", log_path.display()),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| ContainerdError::Io {
        what: format!("opening {}", log_path.display()),
        source,
    })?;
    let mut child = Command::new(&cfg.containerd)
        .arg("--config")
        .arg(cfg.config_path())
        .env("PATH", cfg.path_env())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C meant for the agent must not stop containerd.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| ContainerdError::Io {
            what: format!("starting {}", cfg.containerd.display()),
            source,
        })?;
    let pid = child.id();
    tracing::info!(?pid, config = %cfg.config_path().display(), "started containerd");
    if let Err(e) = wait_ready(cfg, pid, Some(&mut child)).await {
        terminate(Proc::Child(child)).await;
        return Err(e);
    }
    if let Some(pid) = pid {
        write_pid(cfg, pid)?;
    }
    Ok(Proc::Child(child))
}

/// Wait until the socket answers CRI `Version`, failing early if the child exits.
async fn wait_ready(
    cfg: &ContainerdConfig,
    pid: Option<u32>,
    mut child: Option<&mut Child>,
) -> Result<(), ContainerdError> {
    let rt = CriRuntime::connect(&cfg.socket().to_string_lossy()).map_err(|e| {
        ContainerdError::NotReady {
            socket: cfg.socket(),
            reason: e.to_string(),
        }
    })?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(c) = child.as_deref_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(ContainerdError::Exited {
                status: status.to_string(),
                log: log_tail(cfg),
            });
        }
        if child.is_none() && pid.is_some_and(|p| !process::is_ours(p, cfg)) {
            return Err(ContainerdError::Exited {
                status: "gone".to_string(),
                log: log_tail(cfg),
            });
        }
        match rt.wait_ready(Duration::from_millis(500)).await {
            Ok(v) => {
                tracing::info!(
                    version = v.runtime_version,
                    api = v.runtime_api_version,
                    socket = %cfg.socket().display(),
                    "containerd ready"
                );
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ContainerdError::NotReady {
                    socket: cfg.socket(),
                    reason: format!("{e}; log: {}", log_tail(cfg)),
                });
            }
            Err(_) => {}
        }
    }
}

/// Until `proc` exits: its exit status as text.
async fn exited(proc: &mut Proc, cfg: &ContainerdConfig) -> String {
    match proc {
        Proc::Child(c) => match c.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        },
        Proc::Adopted(pid) => {
            while process::is_ours(*pid, cfg) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            "exited (adopted process)".to_string()
        }
    }
}

/// Watch containerd; restart it with back-off when it dies. Returns the process when told to
/// stop (or at agent shutdown, leaving it running).
async fn watch(
    cfg: Arc<ContainerdConfig>,
    proc: Proc,
    pid: Arc<StdMutex<Option<u32>>>,
    restarts: Arc<AtomicU64>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) -> Option<Proc> {
    let set_pid = |p: Option<u32>| {
        if let Ok(mut g) = pid.lock() {
            *g = p;
        }
    };
    let mut current = Some(proc);
    let mut backoff = FIRST_BACKOFF;
    let mut since = tokio::time::Instant::now();
    loop {
        if let Some(p) = current.as_mut() {
            tokio::select! {
                _ = shutdown.cancelled() => return current,
                _ = stop.cancelled() => return current,
                status = exited(p, &cfg) => {
                    if since.elapsed() >= STABLE_AFTER {
                        backoff = FIRST_BACKOFF;
                    }
                    tracing::warn!(%status, log = %log_tail(&cfg), "containerd exited; restarting in {backoff:?}");
                    current = None;
                    set_pid(None);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        // Someone (an operator, a racing start) may have started it meanwhile: adopt it.
        let next = match process::find(&cfg) {
            Some(p) => wait_ready(&cfg, Some(p), None)
                .await
                .map(|()| Proc::Adopted(p)),
            None => spawn_ready(&cfg).await,
        };
        match next {
            Ok(p) => {
                restarts.fetch_add(1, Ordering::Relaxed);
                set_pid(p.pid());
                tracing::info!(pid = ?p.pid(), "containerd restarted");
                current = Some(p);
                since = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::error!(error = %e, "restarting containerd failed");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; waits for the process to go.
async fn terminate(proc: Proc) {
    let Some(raw) = proc.pid().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let pid = Pid::from_raw(raw);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    match proc {
        Proc::Child(mut c) => {
            if tokio::time::timeout(STOP_GRACE, c.wait()).await.is_err() {
                tracing::warn!(%pid, "containerd ignored SIGTERM: killing it");
                let _ = c.kill().await;
            }
        }
        Proc::Adopted(p) => {
            let gone = async {
                while Path::new("/proc").join(p.to_string()).exists()
                    && kill(pid, None).is_ok()
                    && !is_zombie(p)
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            if tokio::time::timeout(STOP_GRACE, gone).await.is_err() {
                tracing::warn!(%pid, "containerd ignored SIGTERM: killing it");
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let i = s.rfind(')')?;
            s[i + 1..].split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}
