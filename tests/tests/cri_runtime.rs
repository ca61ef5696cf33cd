//! The CRI client and the containerd supervisor against the real containerd (root).
//!
//! One test walks the whole path on a private containerd under `/tmp/cri-<pid>-<n>`: start the
//! supervisor, import a busybox and k8slite's pause image built here (`ctr images import` of
//! docker-archives), a CNI sandbox on a test-only bridge and subnet, a container through
//! create/start/status/exec/streaming URLs/probes/stop/logs/remove, an OOM kill, containerd
//! killed by PID and restarted with the container still running, adoption of a running
//! containerd by a new supervisor, and a host-network sandbox serving HTTP for the probes.
//! [`Lab`]'s Drop removes everything even when a step fails.
//!
//! A second test drives the kubelet API's exec (a WebSocket `v5.channel.k8s.io` client, as the
//! API server) against the same kind of private containerd: the kubelet talks SPDY/3.1 to
//! containerd's streaming server, so closing stdin reaches the process and the exit status
//! comes back.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8slite_runtime::containerd::{ContainerdConfig, Supervisor};
use k8slite_runtime::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerRuntime, ContainerState,
    CriRuntime, LinuxResources, PAUSE_IMAGE, PodSandboxConfig, PodSandboxMetadata, ProbeAction,
    ProbeKind, ProbeResult, RuntimeError, SandboxState, StreamRequest, pause_binary,
};
use tokio_util::sync::CancellationToken;

const BUSYBOX: &str = "k8slite.test/busybox:cri";

/// Everything the test creates, removed on drop.
struct Lab {
    base: PathBuf,
    cfg: ContainerdConfig,
    cgroup_root: String,
    bridge: String,
    net_name: String,
}

impl Lab {
    /// `tag` (a few letters) keeps the names of tests in this binary apart.
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let base = PathBuf::from(format!("/tmp/{tag}-{pid}-{nanos}"));
        std::fs::create_dir_all(&base).unwrap();
        let cfg = ContainerdConfig::new(&base.join("data"), &base.join("run"));
        Self {
            cgroup_root: format!("k8slite-{tag}{pid}"),
            bridge: format!("{tag}{}", pid % 100_000),
            net_name: format!("{tag}{pid}"),
            base,
            cfg,
        }
    }

    /// The test-only CNI network: bridge without gateway or masquerade (so no iptables rules
    /// and no ip_forward change), host-local with its own dataDir.
    fn write_cni(&self) -> String {
        let n = std::process::id() % 250;
        let subnet = format!("10.199.{n}.0/24");
        std::fs::create_dir_all(&self.cfg.cni_conf_dir).unwrap();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.net_name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": false,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "dataDir": self.base.join("cni-ipam").display().to_string(),
                    }
                },
                {"type": "loopback"}
            ]
        });
        std::fs::write(
            self.cfg.cni_conf_dir.join("10-crit.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
        format!("10.199.{n}.")
    }

    fn cgroup_parent(&self, uid: &str) -> String {
        format!("/{}/pod{uid}", self.cgroup_root)
    }
}

fn kill_wait(pid: u32) {
    let p = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        if nix::sys::signal::kill(p, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
}

/// PIDs whose command line contains `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&c).contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Pods through CRI (CNI DEL, shims exit), on a runtime of its own: we may be panicking
        // inside the test's runtime.
        let sock = self.cfg.socket();
        if self.cfg.running_pid().is_some() {
            let sock = sock.clone();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Runtime::new() else {
                    return;
                };
                rt.block_on(async {
                    let Ok(cri) = CriRuntime::connect(&sock.display().to_string()) else {
                        return;
                    };
                    if let Ok(list) = cri.list_pod_sandboxes().await {
                        for s in list {
                            let _ = cri.stop_pod_sandbox(&s.id).await;
                            let _ = cri.remove_pod_sandbox(&s.id).await;
                        }
                    }
                });
            })
            .join();
        }
        if let Some(pid) = self.cfg.running_pid() {
            kill_wait(pid);
        }
        // Shims (their -address is our socket) and anything runc still runs in our runc root.
        for pid in pids_mentioning(&sock.display().to_string()) {
            kill_wait(pid);
        }
        let runc_root = self.cfg.runc_root();
        if let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(runc_root.join("k8s.io"))
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(runc_root.join("k8s.io"))
                    .args(["delete", "--force", id])
                    .status();
            }
        }
        // Mounts below the base dir, deepest first.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let base = self.base.display().to_string();
        let mut mounts: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&base))
            .map(str::to_string)
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // cgroups of our root in every hierarchy, deepest first.
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                let root = c.path().join(&self.cgroup_root);
                if root.exists() {
                    let mut dirs = Vec::new();
                    collect_dirs(&root, &mut dirs);
                    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                    for d in dirs {
                        let _ = std::fs::remove_dir(&d);
                    }
                }
            }
        }
        // The bridge and libcni's cached results.
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}-", self.net_name))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

fn prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "prerequisite missing: this test needs root (containerd, runc, CNI)"
    );
    for bin in [
        "/usr/bin/containerd",
        "/usr/bin/ctr",
        "/bin/busybox",
        "/usr/lib/cni/bridge",
    ] {
        assert!(
            Path::new(bin).exists(),
            "prerequisite missing: {bin} (install containerd, busybox-static, containernetworking-plugins)"
        );
    }
    let runc = Command::new("runc").arg("--version").output();
    assert!(
        runc.is_ok_and(|o| o.status.success()),
        "prerequisite missing: runc on PATH"
    );
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A one-layer docker-archive of `rootfs`, tagged `tag`, with `cmd` as its command.
fn docker_archive(work: &Path, rootfs: &Path, tag: &str, cmd: &[&str]) -> PathBuf {
    let dir = work.join(format!("img-{}", tag.replace(['/', ':'], "_")));
    std::fs::create_dir_all(&dir).unwrap();
    let layer = dir.join("layer.tar");
    sh(Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&layer)
        .arg("."));
    let diff_id = format!("sha256:{}", sha256_file(&layer));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let manifest = serde_json::json!([
        {"Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar"]}
    ]);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let archive = work.join(format!("{}.tar", tag.replace(['/', ':'], "_")));
    sh(Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&archive)
        .args(["manifest.json", "config.json", "layer.tar"]));
    archive
}

fn import_images(lab: &Lab) {
    let work = lab.base.join("images");
    // busybox: the binary and a link per applet.
    let bb = work.join("busybox-rootfs");
    std::fs::create_dir_all(bb.join("bin")).unwrap();
    for d in ["tmp", "etc", "proc", "sys", "dev", "www"] {
        std::fs::create_dir_all(bb.join(d)).unwrap();
    }
    std::fs::write(bb.join("www/index.html"), "hello\n").unwrap();
    std::fs::copy("/bin/busybox", bb.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') {
            let _ = std::os::unix::fs::symlink("busybox", bb.join("bin").join(applet));
        }
    }
    // pause: k8slite's own program.
    let pause = work.join("pause-rootfs");
    std::fs::create_dir_all(&pause).unwrap();
    std::fs::write(pause.join("pause"), pause_binary()).unwrap();
    std::fs::set_permissions(pause.join("pause"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (rootfs, tag, cmd) in [
        (&bb, BUSYBOX, vec!["sh"]),
        (&pause, PAUSE_IMAGE, vec!["/pause"]),
    ] {
        let archive = docker_archive(&work, rootfs, tag, &cmd);
        sh(Command::new("ctr")
            .arg("-n")
            .arg("k8s.io")
            .arg("-a")
            .arg(lab.cfg.socket())
            .args(["images", "import"])
            .arg(&archive));
    }
}

fn sandbox_config(lab: &Lab, name: &str, uid: &str, host_network: bool) -> PodSandboxConfig {
    let log_directory = lab.base.join("logs").join(format!("default_{name}_{uid}"));
    std::fs::create_dir_all(&log_directory).unwrap();
    PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: uid.into(),
            attempt: 0,
        },
        hostname: name.into(),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        host_network,
        log_directory: log_directory.display().to_string(),
        cgroup_parent: lab.cgroup_parent(uid),
        ..Default::default()
    }
}

fn container(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: ContainerMetadata {
            name: name.into(),
            attempt: 0,
        },
        image: BUSYBOX.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        envs: vec![("GREETING".into(), "hi".into())],
        labels: BTreeMap::from([("io.kubernetes.container.name".to_string(), name.to_string())]),
        annotations: BTreeMap::from([("k8slite.test/a".to_string(), "b".to_string())]),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

async fn wait_state(cri: &CriRuntime, id: &str, want: ContainerState, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let s = cri.container_status(id).await.unwrap();
        if s.state == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "container {id} not {want:?} within {limit:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_runtime_on_real_containerd() {
    prerequisites();
    let lab = Lab::new("crit");
    let subnet_prefix = lab.write_cni();
    let shutdown = CancellationToken::new();
    let sup = Supervisor::start(lab.cfg.clone(), shutdown.clone())
        .await
        .expect("containerd starts");
    let first_pid = sup.pid().expect("pid");
    assert_eq!(
        std::fs::read_to_string(lab.cfg.pid_path()).unwrap().trim(),
        first_pid.to_string()
    );
    let cri = sup.runtime().unwrap();
    let v = cri.version().await.unwrap();
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");
    import_images(&lab);
    let img = cri
        .image_status(BUSYBOX)
        .await
        .unwrap()
        .expect("busybox imported");
    assert!(img.id.starts_with("sha256:"), "{img:?}");
    assert!(
        cri.image_status("k8slite.test/none:1")
            .await
            .unwrap()
            .is_none()
    );
    let images = cri.list_images().await.unwrap();
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == PAUSE_IMAGE))
    );
    // PullImage of a present image resolves without a registry? No: CRI always contacts the
    // registry; a missing registry must be an ImagePull error naming the call.
    let e = cri.pull_image("k8slite.invalid/none:1").await.unwrap_err();
    assert!(
        matches!(&e, RuntimeError::ImagePull { reason, .. } if reason.starts_with("PullImage:")),
        "{e}"
    );

    // A CNI sandbox and a container walking through its life.
    let sc = sandbox_config(&lab, "web", "uid-web", false);
    let sb = cri.run_pod_sandbox(&sc).await.expect("RunPodSandbox");
    let st = cri.pod_sandbox_status(&sb).await.unwrap();
    assert_eq!(st.state, SandboxState::Ready);
    assert!(st.ip.starts_with(&subnet_prefix), "pod IP {:?}", st.ip);
    assert_eq!(st.metadata.uid, "uid-web");
    let cc = container("main", "echo $GREETING; sleep 1000");
    let c = cri
        .create_container(&sb, &cc, &sc)
        .await
        .expect("CreateContainer");
    cri.start_container(&c).await.expect("StartContainer");
    wait_state(&cri, &c, ContainerState::Running, Duration::from_secs(30)).await;
    let s = cri.container_status(&c).await.unwrap();
    assert_eq!(s.pod_sandbox_id, sb);
    assert_eq!(s.metadata.name, "main");
    assert_eq!(s.image, BUSYBOX);
    assert!(s.image_ref.starts_with("sha256:"), "{s:?}");
    assert_eq!(
        s.annotations.get("k8slite.test/a").map(String::as_str),
        Some("b")
    );
    let log_path = PathBuf::from(&s.log_path);
    assert_eq!(log_path, Path::new(&sc.log_directory).join("main/0.log"));
    let cgroup = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/{}/pod{}/{c}/cgroup.procs",
        lab.cgroup_root, "uid-web"
    ));
    assert!(
        cgroup.is_ok(),
        "container cgroup under our parent: {cgroup:?}"
    );

    let r = cri
        .exec_sync(&c, &["cat".into(), "/etc/hostname".into()], 10)
        .await
        .unwrap();
    assert_eq!((r.exit_code, r.stdout.as_slice()), (0, b"web\n".as_slice()));
    let r = cri
        .exec_sync(
            &c,
            &["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.exit_code, r.stderr.as_slice()),
        (3, b"oops\n".as_slice())
    );
    let req = StreamRequest {
        container_id: c.clone(),
        cmd: vec!["sh".into()],
        tty: false,
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let url = cri.exec(&req).await.unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/exec/"),
        "{url}"
    );
    let url = cri
        .attach(&StreamRequest {
            cmd: Vec::new(),
            ..req
        })
        .await
        .unwrap();
    assert!(url.contains("/attach/"), "{url}");
    let url = cri.port_forward(&sb, &[80]).await.unwrap();
    assert!(url.contains("/portforward/"), "{url}");
    cri.reopen_container_log(&c)
        .await
        .expect("ReopenContainerLog");

    // Exec probes.
    let ok = ProbeAction::Exec(vec!["true".into()]);
    assert_eq!(
        cri.probe(&c, ProbeKind::Liveness, &ok).await.unwrap(),
        ProbeResult::Success
    );
    let bad = ProbeAction::Exec(vec!["cat".into(), "/tmp/healthy".into()]);
    assert_eq!(
        cri.probe(&c, ProbeKind::Liveness, &bad).await.unwrap(),
        ProbeResult::Failure("cat: can't open '/tmp/healthy': No such file or directory".into())
    );
    let slow = ProbeAction::Exec(vec!["sleep".into(), "5".into()]);
    let r = cri
        .probe_with_timeout(&c, ProbeKind::Liveness, &slow, Duration::from_secs(1))
        .await;
    assert!(
        matches!(&r, Ok(ProbeResult::Failure(m)) if m.contains("timed out")),
        "{r:?}"
    );

    // Lists.
    let listed = cri
        .list_containers(&ContainerFilter {
            pod_sandbox_id: Some(sb.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|x| x.id == c && x.pod_sandbox_id == sb && x.started_at > 0)
    );
    let sandboxes = cri.list_pod_sandboxes().await.unwrap();
    assert!(sandboxes.iter().any(|x| x.id == sb && x.ip == st.ip));

    // containerd killed by its PID: the supervisor restarts it, the container keeps running.
    let started_at = s.started_at;
    let shim_pids = pids_mentioning(&lab.cfg.socket().display().to_string());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sup.restarts() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "containerd not restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second_pid = sup.pid().expect("restarted pid");
    assert_ne!(second_pid, first_pid);
    let s = cri
        .container_status(&c)
        .await
        .expect("status after restart");
    assert_eq!(s.state, ContainerState::Running);
    assert_eq!(s.started_at, started_at);
    let r = cri
        .exec_sync(&c, &["echo".into(), "still".into()], 10)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"still\n");
    assert!(!shim_pids.is_empty());

    // Agent shutdown leaves containerd running; a new supervisor adopts it.
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lab.cfg.running_pid(), Some(second_pid));
    let shutdown = CancellationToken::new();
    let sup = Supervisor::start(lab.cfg.clone(), shutdown.clone())
        .await
        .expect("adopt");
    assert_eq!(sup.pid(), Some(second_pid), "adopted, not started anew");
    let cri = sup.runtime().unwrap();
    assert_eq!(
        cri.container_status(&c).await.unwrap().state,
        ContainerState::Running
    );

    // Stop: sh as PID 1 ignores SIGTERM, so SIGKILL after the timeout.
    cri.stop_container(&c, 1).await.expect("StopContainer");
    let s = cri.container_status(&c).await.unwrap();
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!(s.exit_code, 137);
    assert!(s.finished_at >= s.started_at);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let first = log.lines().next().unwrap_or_default();
    let fields: Vec<&str> = first.splitn(4, ' ').collect();
    assert_eq!(
        fields.get(1..),
        Some(&["stdout", "F", "hi"][..]),
        "log: {log:?}"
    );
    assert!(
        fields[0].ends_with('Z') && fields[0].contains('T'),
        "{first}"
    );
    cri.remove_container(&c).await.expect("RemoveContainer");
    assert!(matches!(
        cri.container_status(&c).await,
        Err(RuntimeError::ContainerNotFound(id)) if id == c
    ));
    cri.remove_container(&c)
        .await
        .expect("remove is idempotent");

    // OOM: 16 MiB limit, tail buffers an endless line.
    let mut oom = container("oom", "tail /dev/zero");
    oom.resources = Some(LinuxResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let o = cri.create_container(&sb, &oom, &sc).await.unwrap();
    cri.start_container(&o).await.unwrap();
    wait_state(&cri, &o, ContainerState::Exited, Duration::from_secs(60)).await;
    let s = cri.container_status(&o).await.unwrap();
    assert_eq!(
        (s.reason.as_str(), s.exit_code),
        ("OOMKilled", 137),
        "{s:?}"
    );
    cri.remove_container(&o).await.unwrap();

    // A bad command is the container's error.
    let badcmd = ContainerConfig {
        command: vec!["/no/such/binary".into()],
        ..container("bad", "")
    };
    let b = cri.create_container(&sb, &badcmd, &sc).await.unwrap();
    let e = cri.start_container(&b).await.unwrap_err();
    assert!(
        matches!(&e, RuntimeError::Container { reason, .. } if reason.starts_with("StartContainer:")),
        "{e}"
    );
    cri.remove_container(&b).await.unwrap();

    cri.stop_pod_sandbox(&sb).await.expect("StopPodSandbox");
    assert_eq!(
        cri.pod_sandbox_status(&sb).await.unwrap().state,
        SandboxState::NotReady
    );
    cri.remove_pod_sandbox(&sb).await.expect("RemovePodSandbox");
    assert!(matches!(
        cri.pod_sandbox_status(&sb).await,
        Err(RuntimeError::SandboxNotFound(_))
    ));
    cri.remove_pod_sandbox(&sb).await.expect("idempotent");

    // Host network: HTTP and TCP probes from the node.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hc = sandbox_config(&lab, "hostweb", "uid-hostweb", true);
    let hsb = cri
        .run_pod_sandbox(&hc)
        .await
        .expect("host-network sandbox");
    let web = container(
        "httpd",
        &format!("exec httpd -f -p 127.0.0.1:{port} -h /www"),
    );
    let w = cri.create_container(&hsb, &web, &hc).await.unwrap();
    cri.start_container(&w).await.unwrap();
    wait_state(&cri, &w, ContainerState::Running, Duration::from_secs(30)).await;
    let get = |path: &str| ProbeAction::HttpGet {
        host: String::new(),
        port,
        path: path.into(),
        scheme: "HTTP".into(),
    };
    let mut ok = false;
    for _ in 0..50 {
        if cri
            .probe(&w, ProbeKind::Readiness, &get("/index.html"))
            .await
            .unwrap()
            == ProbeResult::Success
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "HTTP probe of the host-network pod never succeeded");
    assert_eq!(
        cri.probe(&w, ProbeKind::Readiness, &get("/missing"))
            .await
            .unwrap(),
        ProbeResult::Failure("HTTP probe failed with statuscode: 404".into())
    );
    let tcp = ProbeAction::TcpSocket {
        host: String::new(),
        port,
    };
    assert_eq!(
        cri.probe(&w, ProbeKind::Liveness, &tcp).await.unwrap(),
        ProbeResult::Success
    );
    cri.stop_pod_sandbox(&hsb).await.unwrap();
    cri.remove_pod_sandbox(&hsb).await.unwrap();

    // Explicit stop terminates containerd.
    sup.stop().await.expect("stop");
    assert_eq!(lab.cfg.running_pid(), None);
    assert!(!lab.cfg.pid_path().exists());
    drop(lab);
}

mod kubelet_spdy {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use std::sync::Arc;
    use tokio_tungstenite::tungstenite::ClientRequestBuilder;
    use tokio_tungstenite::tungstenite::Message;

    struct Kubelet {
        addr: std::net::SocketAddr,
        tls: tokio_rustls::TlsConnector,
    }

    /// What a session produced: stdout, stderr, the status (channel 3), the close code.
    #[derive(Debug, Default)]
    struct Outcome {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        status: String,
        close: Option<u16>,
    }

    impl Kubelet {
        async fn exec(&self, cmd: &[&str], stdin: Option<&[u8]>) -> Outcome {
            self.exec_with(cmd, stdin, None).await
        }

        /// With `resize` (width, height): a tty session that sends one resize first.
        async fn exec_with(
            &self,
            cmd: &[&str],
            stdin: Option<&[u8]>,
            resize: Option<(u16, u16)>,
        ) -> Outcome {
            let mut q: Vec<String> = cmd
                .iter()
                .map(|c| {
                    let enc: String = url_encode(c);
                    format!("command={enc}")
                })
                .collect();
            q.push("stdout=1".into());
            q.push("stderr=1".into());
            if stdin.is_some() {
                q.push("stdin=1".into());
            }
            if resize.is_some() {
                q.push("tty=1".into());
            }
            let uri: tokio_tungstenite::tungstenite::http::Uri = format!(
                "wss://127.0.0.1:{}/exec/default/spdy/main?{}",
                self.addr.port(),
                q.join("&")
            )
            .parse()
            .unwrap();
            let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let tls = self.tls.connect(name, tcp).await.unwrap();
            let req = ClientRequestBuilder::new(uri).with_sub_protocol("v5.channel.k8s.io");
            let (ws, resp) = tokio_tungstenite::client_async(req, tls)
                .await
                .expect("WebSocket upgrade of the kubelet API");
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some("v5.channel.k8s.io")
            );
            let (mut tx, mut rx) = ws.split();
            let writer = {
                let data = stdin.map(<[u8]>::to_vec);
                tokio::spawn(async move {
                    if let Some((w, h)) = resize {
                        let mut m = vec![4u8];
                        m.extend(format!(r#"{{"Width":{w},"Height":{h}}}"#).bytes());
                        tx.send(Message::Binary(m.into())).await.unwrap();
                    }
                    if let Some(data) = data {
                        for c in data.chunks(10_000) {
                            let mut m = vec![0u8];
                            m.extend_from_slice(c);
                            tx.send(Message::Binary(m.into())).await.unwrap();
                        }
                        tx.send(Message::Binary(vec![255, 0].into())).await.unwrap();
                    }
                    tx
                })
            };
            let mut out = Outcome::default();
            let read = async {
                while let Some(m) = rx.next().await {
                    match m.unwrap() {
                        Message::Binary(b) => match b[0] {
                            1 => out.stdout.extend_from_slice(&b[1..]),
                            2 => out.stderr.extend_from_slice(&b[1..]),
                            3 => out.status.push_str(&String::from_utf8_lossy(&b[1..])),
                            c => panic!("unexpected channel {c}"),
                        },
                        Message::Close(c) => {
                            out.close = c.map(|c| u16::from(c.code));
                            break;
                        }
                        _ => {}
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(60), read)
                .await
                .unwrap_or_else(|_| panic!("exec {cmd:?} did not end within 60s"));
            drop(writer.await.unwrap());
            out
        }
    }

    fn url_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubelet_exec_over_spdy_on_real_containerd() {
        prerequisites();
        let lab = Lab::new("spdyexec");
        let shutdown = CancellationToken::new();
        let sup = Supervisor::start(lab.cfg.clone(), shutdown.clone())
            .await
            .expect("containerd starts");
        let cri = sup.runtime().unwrap();
        import_images(&lab);
        let sc = sandbox_config(&lab, "spdy", "uid-spdy", true);
        let sb = cri.run_pod_sandbox(&sc).await.expect("RunPodSandbox");
        let c = cri
            .create_container(&sb, &container("main", "sleep 1000"), &sc)
            .await
            .expect("CreateContainer");
        cri.start_container(&c).await.expect("StartContainer");
        wait_state(&cri, &c, ContainerState::Running, Duration::from_secs(30)).await;

        // The kubelet API on our containerd, with the API server's kind of client certificate.
        let pki = k8slite_pki::ClusterPki::load_or_create(
            &lab.base.join("tls"),
            &k8slite_pki::PkiOptions {
                cluster_domain: "cluster.local".into(),
                service_ip: "10.43.0.1".parse().unwrap(),
                sans: vec!["127.0.0.1".into()],
                hostname: "localhost".into(),
            },
        )
        .unwrap();
        let serving = pki
            .issue_serving_cert("node-1", &["127.0.0.1".into()])
            .unwrap();
        let client = pki
            .issue_client_cert(
                "kube-apiserver-kubelet-client",
                &["system:masters".to_string()],
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = k8slite_agent::kubelet::KubeletServerConfig {
            addr,
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
            client_ca_pem: pki.client_ca_pem().to_string(),
            log_root: lab.base.join("logs"),
        };
        let rt: Arc<dyn ContainerRuntime> = Arc::new(sup.runtime().unwrap());
        tokio::spawn(k8slite_agent::kubelet::serve_on(
            listener,
            cfg,
            rt,
            shutdown.clone(),
        ));
        let tls = k8slite_pki::client_tls_config(pki.server_ca_pem(), Some(&client)).unwrap();
        let k = Kubelet {
            addr,
            tls: tokio_rustls::TlsConnector::from(tls),
        };

        // stdin closed → cat ends, its output and a Success status come back, close 1000.
        let o = k.exec(&["cat"], Some(b"hello")).await;
        assert_eq!(o.stdout, b"hello", "{o:?}");
        assert!(o.status.contains(r#""status":"Success""#), "{o:?}");
        assert_eq!(o.close, Some(1000), "{o:?}");

        // Exit code through the status; stderr on its channel.
        let o = k.exec(&["sh", "-c", "echo oops >&2; exit 7"], None).await;
        assert_eq!(o.stderr, b"oops\n", "{o:?}");
        let status: serde_json::Value = serde_json::from_str(&o.status).unwrap();
        assert_eq!(status["status"], "Failure", "{o:?}");
        let causes = status["details"]["causes"].as_array().unwrap();
        assert!(
            causes
                .iter()
                .any(|c| c["reason"] == "ExitCode" && c["message"] == "7"),
            "{o:?}"
        );
        assert_eq!(o.close, Some(1000));

        // Large transfers both ways (kubectl cp runs tar like this).
        let o = k.exec(&["head", "-c", "300000", "/dev/zero"], None).await;
        assert_eq!(o.stdout.len(), 300_000, "{:?}", o.status);
        let big = vec![b'x'; 300_000];
        let o = k.exec(&["wc", "-c"], Some(&big)).await;
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "300000", "{o:?}");
        assert!(o.status.contains("Success"), "{o:?}");

        // A tty: no stderr stream, the resize stream reaches the terminal.
        let o = k
            .exec_with(&["sh", "-c", "sleep 1; stty size"], None, Some((100, 30)))
            .await;
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "30 100", "{o:?}");
        assert!(o.status.contains("Success"), "{o:?}");

        cri.stop_pod_sandbox(&sb).await.unwrap();
        cri.remove_pod_sandbox(&sb).await.unwrap();
        shutdown.cancel();
        sup.stop().await.expect("stop");
        drop(lab);
    }
}
