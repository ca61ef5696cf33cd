//! Self-tests of the e2e harness that need no agent: network namespaces on the test bridge, the
//! test images in a standalone containerd inside a node's netns, the server in its netns
//! reached by kubectl from the root netns, and a teardown that leaves nothing behind.
//! Root, containerd, runc, the CNI plugins, iptables, busybox-static and nsenter are required;
//! a missing one fails the test naming it.

use std::time::Duration;

use k8slite_tests::e2e::{
    BUSYBOX_IMAGE, E2eCluster, E2eOptions, NGINX_IMAGE, containerd, images, sys,
};

fn root_iptables() -> String {
    let out = std::process::Command::new("iptables-save")
        .output()
        .expect("iptables-save in the root netns");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn network_images_containerd_and_complete_cleanup() {
    let c = E2eCluster::network_only(&["server", "node1"]);
    let prefix = c.prefix().to_string();
    let base = c.base.clone();
    let server_ip = c.node("server").ip.to_string();
    let node_ip = c.node("node1").ip.to_string();

    // Network: each netns has its address, forwarding on, and reaches the other node and the
    // bridge; the root netns reaches the nodes.
    for n in ["server", "node1"] {
        let fwd = c
            .sh_in(n, "cat /proc/sys/net/ipv4/ip_forward")
            .expect("read ip_forward");
        assert_eq!(fwd.trim(), "1", "ip_forward in {n}");
        let addrs = c.sh_in(n, "ip -4 -o addr show dev eth0").expect("ip addr");
        assert!(addrs.contains(&c.node(n).ip.to_string()), "{addrs}");
        let lo = c.sh_in(n, "ip -o link show lo").expect("ip link lo");
        assert!(lo.contains("UP"), "loopback down in {n}: {lo}");
    }
    assert!(
        c.sh_in("server", &format!("busybox ping -c1 -W2 {node_ip}"))
            .is_some(),
        "server netns cannot reach node1"
    );
    assert!(
        sys::run("busybox", &["ping", "-c1", "-W2", &server_ip]).is_ok(),
        "root netns cannot reach the server netns"
    );

    // Images: built by the shell script, imported by a containerd started in node1's netns
    // through nsenter, with the agent's socket and PID-file paths.
    let img = images::test_images();
    let node = c.node("node1");
    let pid = containerd::start(node).expect("standalone containerd in node1");
    assert_eq!(node.containerd_pid(), Some(pid));
    c.copy_test_images();
    let refs = containerd::import_dir(node, &node.images_dir()).expect("import test images");
    assert!(refs.iter().any(|r| r == BUSYBOX_IMAGE), "{refs:?}");
    assert!(refs.iter().any(|r| r == NGINX_IMAGE), "{refs:?}");
    assert!(img.join("busybox.tar").is_file());

    let runc_root = node.run_dir().join("containerd/runc").display().to_string();
    let fifo = node.run_dir().join("fifo").display().to_string();
    let cg = |id: &str| format!("{}/e2e/{id}", node.cgroup_root());
    let out = containerd::ctr(
        node,
        &[
            "run",
            "--rm",
            "--runc-root",
            &runc_root,
            "--fifo-dir",
            &fifo,
            "--cgroup",
            &cg("echo"),
            BUSYBOX_IMAGE,
            "echo1",
            "sh",
            "-c",
            "echo ok; id -u nobody; id -u user; stat -c %a /tmp",
        ],
    )
    .expect("ctr run busybox");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["ok", "65534", "1000", "1777"]
    );

    // nginx stand-in on node1's network (its netns is the container's host network), fetched
    // from the server's netns; left running so the teardown has a shim, a rootfs mount and a
    // cgroup to remove.
    containerd::ctr(
        node,
        &[
            "run",
            "-d",
            "--net-host",
            "--runc-root",
            &runc_root,
            "--fifo-dir",
            &fifo,
            "--cgroup",
            &cg("web"),
            NGINX_IMAGE,
            "web",
        ],
    )
    .expect("ctr run nginx");
    let page = c.wait_for("the nginx page from node1", Duration::from_secs(20), || {
        c.fetch_in("server", &format!("http://{node_ip}/"))
    });
    assert!(page.contains("<h1>Welcome to nginx!</h1>"), "{page}");
    // SIGTERM stops it promptly (the shell wrapper traps TERM).
    containerd::ctr(
        node,
        &[
            "run",
            "-d",
            "--net-host",
            "--runc-root",
            &runc_root,
            "--fifo-dir",
            &fifo,
            "--cgroup",
            &cg("web2"),
            NGINX_IMAGE,
            "web2",
            "sh",
            "-c",
            "trap 'exit 0' TERM; httpd -f -p 8081 -h /usr/share/nginx/html & wait",
        ],
    )
    .expect("ctr run web2");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    containerd::ctr(node, &["task", "kill", "-s", "TERM", "web2"]).expect("kill web2");
    c.wait_for("web2 to stop on SIGTERM", Duration::from_secs(3), || {
        let ls = containerd::ctr(node, &["task", "ls"]).ok()?;
        let s = String::from_utf8_lossy(&ls.stdout).into_owned();
        s.lines()
            .find(|l| l.starts_with("web2 "))
            .is_some_and(|l| l.contains("STOPPED"))
            .then_some(())
    });
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    // iptables rules made inside a node's netns stay there and vanish with it.
    let chain = format!("{}-CNI", prefix.to_uppercase());
    c.sh_in("node1", &format!("iptables -t nat -N {chain} && iptables -t nat -A POSTROUTING -s 10.99.0.0/24 -j {chain}"))
        .expect("iptables in node1's netns");
    assert!(
        c.sh_in("node1", "iptables-save -t nat")
            .unwrap_or_default()
            .contains(&chain)
    );
    assert!(
        !root_iptables().contains(&chain),
        "chain leaked into the root netns"
    );

    let shims: Vec<(u32, String)> = sys::pids_mentioning(&base.to_string_lossy())
        .into_iter()
        .filter(|(_, c)| c.contains("containerd-shim"))
        .collect();
    assert!(!shims.is_empty(), "expected a running shim for web");
    assert!(
        !sys::mounts_under(&base).is_empty(),
        "expected rootfs mounts"
    );
    let cgroup_name = node.cgroup_root().trim_start_matches('/').to_string();
    assert!(
        !sys::cgroup_pids(&cgroup_name).is_empty(),
        "expected processes in the node cgroup"
    );

    let left = c.teardown();
    assert!(left.is_empty(), "teardown left: {left:?}");
    assert!(!sys::alive(pid), "containerd {pid} still running");
    for (p, cl) in shims {
        assert!(!sys::alive(p), "shim {p} still running: {cl}");
    }
    assert!(sys::cgroup_dirs(&cgroup_name).is_empty());
    assert!(!root_iptables().contains(&chain));
    assert!(
        !std::path::Path::new(&format!("/run/netns/{prefix}-node1")).exists(),
        "netns pin left"
    );
}

#[test]
fn server_in_its_netns_answers_kubectl_from_the_root_netns() {
    let c = E2eCluster::start_with(E2eOptions {
        embedded_agent: false,
        images: false,
        wait_ready: false,
        ..E2eOptions::default()
    });
    let ns = c.k(&["get", "namespaces", "-o", "name"]);
    assert!(ns.contains("namespace/default"), "{ns}");
    // The API listens inside the server's netns only.
    let url = c.server_url();
    assert!(url.contains(&c.node("server").ip.to_string()));
    let token = std::fs::read_to_string(c.token_file()).expect("token");
    assert!(token.starts_with("K10"), "{token}");
    let pid = c.node("server").pid().expect("server pid");
    let base = c.base.clone();
    let left = c.teardown();
    assert!(left.is_empty(), "teardown left: {left:?}");
    assert!(!sys::alive(pid));
    assert!(!base.exists());
}
