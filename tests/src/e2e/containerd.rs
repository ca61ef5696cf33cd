//! A standalone containerd in a node's network namespace, started by the harness itself (for
//! the harness self-test and the raw-CRI benchmark; the agent starts its own). It uses the same
//! socket and PID-file paths the agent uses, so the cluster cleanup handles both alike.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::sys::{alive, nsenter_cmd};
use super::{CONTAINERD_PID_FILE, Node};

/// The pause image reference the standalone containerd's CRI plugin is configured with. The
/// self-test does not create sandboxes, so it need not exist.
pub const STANDALONE_SANDBOX_IMAGE: &str = "k8slite.local/pause:e2e";

/// containerd 1.6 config for `node` (cri-lab settings: own root/state/socket, cgroupfs, runc
/// root, restricted oom_score_adj, netns pins under the state dir, Debian's CNI plugin dir).
pub fn render_config(node: &Node) -> String {
    let root = node.data_dir().join("agent/containerd");
    let run = node.run_dir().join("containerd");
    let sock = node.containerd_socket();
    let cni = node.data_dir().join("agent/cni/net.d");
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{runc}"
        SystemdCgroup = false
"#,
        root = root.display(),
        state = run.join("state").display(),
        sock = sock.display(),
        sandbox = STANDALONE_SANDBOX_IMAGE,
        cni = cni.display(),
        runc = run.join("runc").display(),
    )
}

/// Start containerd for `node` inside its netns (nsenter, network namespace only), write its
/// PID to [`CONTAINERD_PID_FILE`] and wait until `ctr version` answers. Returns the PID.
pub fn start(node: &Node) -> anyhow::Result<u32> {
    let cfg_path = node.run_dir().join("containerd/config.toml");
    std::fs::create_dir_all(cfg_path.parent().context("config dir")?)?;
    std::fs::create_dir_all(node.data_dir().join("agent/cni/net.d"))?;
    std::fs::write(&cfg_path, render_config(node))?;
    let log = std::fs::File::create(node.dir.join("containerd.log"))?;
    let cfg = cfg_path.to_string_lossy().into_owned();
    let mut cmd = nsenter_cmd(&node.netns_path, &["/usr/bin/containerd", "--config", &cfg]);
    cmd.env("PATH", super::node_path_env())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Not a `Child` we keep: containerd is stopped by its PID file like the agent's.
    let child = cmd.spawn().context("spawning containerd under nsenter")?;
    let pid = child.id();
    std::fs::write(node.run_dir().join(CONTAINERD_PID_FILE), pid.to_string())?;
    // Reap it in the background when it exits, so it never lingers as a zombie.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ctr(node, &["version"]).is_ok() {
            return Ok(pid);
        }
        if !alive(pid) {
            bail!(
                "containerd for {} exited; log:\n{}",
                node.name,
                std::fs::read_to_string(node.dir.join("containerd.log")).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("containerd for {} did not answer within 20 s", node.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ctr --address <node socket> -n k8s.io args…` (the CRI namespace), run in the node's netns.
pub fn ctr(node: &Node, args: &[&str]) -> anyhow::Result<Output> {
    let sock = node.containerd_socket().to_string_lossy().into_owned();
    let mut full = vec!["ctr", "--address", &sock, "-n", "k8s.io"];
    full.extend_from_slice(args);
    let out = nsenter_cmd(&node.netns_path, &full)
        .stdin(Stdio::null())
        .output()
        .context("running ctr")?;
    if !out.status.success() {
        bail!(
            "ctr {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Import every `*.tar` of `dir` with `ctr images import` (what the agent does through
/// containerd-client); returns the image references `ctr images ls -q` lists afterwards.
pub fn import_dir(node: &Node, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut tars: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    tars.sort();
    for t in tars {
        ctr(node, &["images", "import", &t.to_string_lossy()])?;
    }
    let out = ctr(node, &["images", "ls", "-q"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}
