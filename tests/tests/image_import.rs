//! Image import into a real containerd (root): docker-archive `.tar` and `.tar.gz` and an
//! OCI-layout `.tar.zst` built from /bin/busybox, checked with `ctr images ls/check` and by
//! running the images with `ctr run`; then a tarball dropped into a watched images directory
//! while the importer runs. Starts its own containerd on a temp socket and stops it by PID.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8slite_runtime::images::{
    Compression, ImageBuilder, ImportDir, compress, connect, import_file,
};
use tokio_util::sync::CancellationToken;

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";
const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";

fn prerequisites() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        });
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "prerequisite missing: this test needs root (containerd, overlayfs, runc)"
    );
    for bin in [CONTAINERD, CTR, RUNC, BUSYBOX] {
        assert!(
            Path::new(bin).exists(),
            "prerequisite missing: {bin} (Debian packages containerd, runc, busybox-static)"
        );
    }
}

/// Our containerd: temp root/state/socket, killed by PID and cleaned up on drop.
struct Containerd {
    child: Child,
    base: PathBuf,
    socket: PathBuf,
    cgroup: String,
}

impl Containerd {
    fn start() -> Containerd {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let base = PathBuf::from(format!("/tmp/images-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let b = base.display();
        let config = format!(
            r#"version = 2
root = "{b}/root"
state = "{b}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{b}/containerd.sock"
[ttrpc]
  address = "{b}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{b}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8slite.local/pause:test"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{b}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{b}/runc"
        SystemdCgroup = false
"#
        );
        std::fs::write(base.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(base.join("containerd.log")).unwrap();
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(base.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let socket = base.join("containerd.sock");
        let cgroup = format!("images-test-{}-{nanos}", std::process::id());
        let c = Containerd {
            child,
            base,
            socket,
            cgroup,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not create {} (log: {})",
                c.socket.display(),
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.base.join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(CTR)
            .args(["-a", self.socket.to_str().unwrap(), "-n", "k8s.io"])
            .args(args)
            .output()
            .expect("running ctr");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn run(&self, image: &str, id: &str) -> String {
        let fifo = self.base.join("fifo");
        let cgroup = format!("/{}/{id}", self.cgroup);
        let (ok, out) = self.ctr(&[
            "run",
            "--rm",
            "--fifo-dir",
            fifo.to_str().unwrap(),
            "--cgroup",
            &cgroup,
            image,
            id,
            "/bin/busybox",
            "echo",
            "ok",
        ]);
        assert!(ok, "ctr run {image}: {out}");
        out
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        // Leftover mounts below our base (none expected after `ctr run --rm`), our cgroups.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let base = self.base.to_string_lossy().into_owned();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| m.starts_with(&base))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for m in points {
                let _ = Command::new("umount").arg(m).status();
            }
        }
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for ctl in rd.flatten() {
                let _ = std::fs::remove_dir(ctl.path().join(&self.cgroup));
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn busybox_image(tag: &str) -> ImageBuilder {
    let busybox = std::fs::read(BUSYBOX).expect("reading /bin/busybox");
    ImageBuilder::new()
        .tag(tag)
        .file("bin/busybox", busybox, 0o755)
        .symlink("bin/sh", "busybox")
        .dir("tmp", 0o1777)
        .cmd(["/bin/sh"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_tarballs_into_real_containerd() {
    prerequisites();
    let cd = Containerd::start();
    let files = cd.base.join("files");
    std::fs::create_dir_all(&files).unwrap();

    let docker_tar = files.join("docker.tar");
    std::fs::write(
        &docker_tar,
        busybox_image("busybox-docker:latest")
            .docker_archive()
            .unwrap(),
    )
    .unwrap();
    let docker_gz = files.join("docker.tar.gz");
    let gz = compress(
        &busybox_image("test/gz:1").docker_archive().unwrap(),
        Compression::Gzip,
    )
    .unwrap();
    std::fs::write(&docker_gz, gz).unwrap();
    let oci_zst = files.join("oci.tar.zst");
    let oci = busybox_image("k8slite.local/oci:1")
        .oci_archive(Compression::Gzip)
        .unwrap();
    std::fs::write(&oci_zst, compress(&oci, Compression::Zstd).unwrap()).unwrap();

    let backend = connect(&cd.socket)
        .await
        .expect("connecting to our containerd");
    let mut names = Vec::new();
    for (file, want) in [
        (&docker_tar, "docker.io/library/busybox-docker:latest"),
        (&docker_gz, "docker.io/test/gz:1"),
        (&oci_zst, "k8slite.local/oci:1"),
    ] {
        let s = import_file(&backend, file)
            .await
            .unwrap_or_else(|e| panic!("importing {}: {e}\n{}", file.display(), cd.log()));
        assert_eq!(s.images, vec![want.to_string()]);
        names.push(want);
    }
    // The same busybox layer is shared: the gzip docker archive wrote only config + manifest.
    let again = import_file(&backend, &docker_tar).await.unwrap();
    assert_eq!((again.blobs_written, again.images_unchanged), (0, 1));

    let (ok, ls) = cd.ctr(&["images", "ls"]);
    assert!(ok, "ctr images ls: {ls}");
    for name in &names {
        let line = ls
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in ctr images ls:\n{ls}"));
        assert!(line.contains("io.cri-containerd.image=managed"), "{line}");
        assert!(
            line.contains("linux/"),
            "platform read from the config: {line}"
        );
    }
    let (ok, check) = cd.ctr(&["images", "check"]);
    assert!(ok, "ctr images check: {check}");
    for name in &names {
        let line = check
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not checked:\n{check}"));
        assert!(line.contains("complete"), "{line}");
    }
    for (i, name) in names.iter().enumerate() {
        let out = cd.run(name, &format!("images-test-{i}"));
        assert_eq!(out.trim(), "ok", "{name}");
    }

    // The images directory: a tarball dropped while the importer runs gets imported.
    let images_dir = cd.base.join("agent/images");
    let shutdown = CancellationToken::new();
    let importer = ImportDir::new(&cd.socket, &images_dir).interval(Duration::from_millis(300));
    let task = tokio::spawn(importer.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dropped = compress(
        &busybox_image("dropped:1").docker_archive().unwrap(),
        Compression::Gzip,
    )
    .unwrap();
    std::fs::write(images_dir.join("dropped.tar.gz"), dropped).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, ls) = cd.ctr(&["images", "ls", "-q"]);
        if ls.lines().any(|l| l == "docker.io/library/dropped:1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dropped tarball not imported within 30 s:\n{ls}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    task.await.unwrap();
    assert!(cd.base.join("agent/images-imported.json").exists());
    let out = cd.run("docker.io/library/dropped:1", "images-test-dropped");
    assert_eq!(out.trim(), "ok");
}
