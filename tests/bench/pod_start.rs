//! `k8slite-bench-pods`: pod start latency on real containerd and the agent's idle memory,
//! beside the raw CRI floor measured in the same run. Writes (or replaces) the
//! `## Pod start on containerd` and `## Agent idle memory` sections of `tests/bench/RESULTS.md`.
//! No timing is asserted.
//!
//! Usage (root, like the e2e tests): `cargo build --release -p k8slite -p k8slite-tests &&
//! K8SLITE_BIN=$CARGO_TARGET_DIR/release/k8slite $CARGO_TARGET_DIR/release/k8slite-bench-pods
//! [--pods N] [--quick] [--out FILE]`.

#![allow(clippy::print_stdout)] // a command-line tool reporting figures

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8slite_tests::bench::{replace_section, utc_now};
use k8slite_tests::e2e::{E2eCluster, Node};

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `RssAnon`, `RssFile`), 0 when unreadable.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// "X MiB (anon A, file F)" for `pid`.
fn rss_detail(pid: u32) -> String {
    let mib = |f| status_kib(pid, f) as f64 / 1024.0;
    format!(
        "{:.1} MiB (anonymous {:.1}, file-backed {:.1})",
        mib("VmRSS"),
        mib("RssAnon"),
        mib("RssFile")
    )
}

/// Pod create sent through `kube::Client` → the watch reports phase Running, one pod at a
/// time, `n` pods pinned to node `node_name`. Milliseconds per pod. One watch stays open for
/// the whole loop, so neither client start-up nor a new watch is inside the figure.
fn pod_start(c: &E2eCluster, node_name: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let out = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).context("kubeconfig")?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .context("kube config")?;
        let client = kube::Client::try_from(cfg).context("kube client")?;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let rv = pods
            .list_metadata(&ListParams::default())
            .await
            .context("listing pods")?
            .metadata
            .resource_version
            .unwrap_or_default();
        let mut watch = pods
            .watch(&WatchParams::default().timeout(290), &rv)
            .await
            .context("watching pods")?
            .boxed();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("bench-{i}");
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "nodeName": node_name,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "busybox",
                        "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]
                }
            }))?;
            let t0 = Instant::now();
            pods.create(&PostParams::default(), &pod)
                .await
                .with_context(|| format!("creating {name}"))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let ev = tokio::time::timeout_at(deadline, watch.next())
                    .await
                    .with_context(|| format!("{name} not Running within 120 s"))?
                    .with_context(|| format!("watch ended waiting for {name}"))?
                    .context("watch event")?;
                if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev
                    && p.metadata.name.as_deref() == Some(name.as_str())
                    && p.status.and_then(|s| s.phase).as_deref() == Some("Running")
                {
                    break;
                }
            }
            out.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        anyhow::Ok(out)
    })?;
    c.k(&["delete", "pods", "--all", "--wait=true", "--timeout=180s"]);
    Ok(out)
}

/// Milliseconds of RunPodSandbox, CreateContainer, StartContainer and their sum, per repetition.
struct CriTimes {
    run_sandbox: Vec<f64>,
    create: Vec<f64>,
    start: Vec<f64>,
    total: Vec<f64>,
}

/// The raw CRI sequence against node `node`'s containerd (socket
/// [`Node::containerd_socket`]), `n` times, cleaning each pod up afterwards (not timed): the
/// floor the agent's pod start is compared with. The sandbox is configured like the agent's
/// (CNI network, log directory, cgroup parent under the node's root), the container is busybox
/// `sleep 3600` as in [`pod_start`].
fn raw_cri_sequence(node: &Node, n: usize) -> anyhow::Result<CriTimes> {
    use k8slite_runtime::{
        ContainerConfig, ContainerMetadata, ContainerRuntime, CriRuntime, PodSandboxConfig,
        PodSandboxMetadata,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let logs = node.data_dir().join("bench-cri-logs");
    let mut t = CriTimes {
        run_sandbox: Vec::new(),
        create: Vec::new(),
        start: Vec::new(),
        total: Vec::new(),
    };
    rt.block_on(async {
        // tonic's lazy channel needs the runtime's context to be built.
        let cri = CriRuntime::connect(&node.containerd_socket().to_string_lossy())
            .context("connecting to the node's containerd")?;
        for i in 0..n {
            let uid = format!("bench-cri-{}-{i}", std::process::id());
            let log_dir = logs.join(&uid);
            std::fs::create_dir_all(log_dir.join("c"))?;
            let sc = PodSandboxConfig {
                metadata: PodSandboxMetadata {
                    name: format!("cri-{i}"),
                    namespace: "bench".into(),
                    uid: uid.clone(),
                    attempt: 0,
                },
                hostname: format!("cri-{i}"),
                log_directory: log_dir.to_string_lossy().into_owned(),
                cgroup_parent: format!("{}/pod{uid}", node.cgroup_root()),
                ..PodSandboxConfig::default()
            };
            let cc = ContainerConfig {
                metadata: ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                },
                image: "docker.io/library/busybox:latest".into(),
                command: vec!["sleep".into(), "3600".into()],
                log_path: "c/0.log".into(),
                ..ContainerConfig::default()
            };
            let t0 = Instant::now();
            let sandbox = cri.run_pod_sandbox(&sc).await?;
            let t1 = Instant::now();
            let id = cri.create_container(&sandbox, &cc, &sc).await?;
            let t2 = Instant::now();
            cri.start_container(&id).await?;
            let t3 = Instant::now();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            t.run_sandbox.push(ms(t1 - t0));
            t.create.push(ms(t2 - t1));
            t.start.push(ms(t3 - t2));
            t.total.push(ms(t3 - t0));
            cri.stop_container(&id, 0).await?;
            cri.remove_container(&id).await?;
            cri.stop_pod_sandbox(&sandbox).await?;
            cri.remove_pod_sandbox(&sandbox).await?;
            for ctl in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
                let _ =
                    std::fs::remove_dir(ctl.path().join(sc.cgroup_parent.trim_start_matches('/')));
            }
        }
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&logs);
    Ok(t)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let pods: usize = arg("--pods")
        .map(|s| s.parse())
        .transpose()
        .context("--pods N")?
        .unwrap_or(if quick { 10 } else { 30 });
    let out =
        arg("--out").unwrap_or_else(|| format!("{}/bench/RESULTS.md", env!("CARGO_MANIFEST_DIR")));
    std::env::var("K8SLITE_BIN").context("set K8SLITE_BIN to a release build of k8slite")?;
    let idle = Duration::from_secs(if quick { 10 } else { 60 });

    let c = E2eCluster::start(1);
    let server_node = c.node_name("server");

    // Idle memory first, before any pod ran.
    std::thread::sleep(idle);
    let server_pid = c.node("server").pid().context("server pid")?;
    let agent_pid = c.node("agent1").pid().context("agent pid")?;
    let rss_server = rss_kib(server_pid) as f64 / 1024.0;
    let rss_agent = rss_kib(agent_pid) as f64 / 1024.0;
    let (detail_server, detail_agent) = (rss_detail(server_pid), rss_detail(agent_pid));
    let rss_ctrd = c
        .node("agent1")
        .containerd_pid()
        .map(|p| rss_kib(p) as f64 / 1024.0);
    println!("idle rss: server+agent {rss_server:.1} MiB, agent {rss_agent:.1} MiB");

    let mut api = pod_start(&c, &server_node, pods)?;
    let (a50, a95) = (pct(&mut api.clone(), 0.5), pct(&mut api, 0.95));
    println!("pod start via API: p50 {a50:.0} ms p95 {a95:.0} ms");
    let cri = raw_cri_sequence(c.node("server"), pods);

    let mut body = String::new();
    writeln!(
        body,
        "## Pod start on containerd\n\nRun {} UTC, release binary. {pods} pods (busybox `sleep`, image present, pinned to the server's node), created one at a time through `kube::Client`; time from sending the create until an open watch reports phase Running. Beside it, in the same run against the same containerd, the raw CRI sequence RunPodSandbox + CreateContainer + StartContainer issued directly.\n",
        utc_now()
    )?;
    writeln!(body, "| | p50 ms | p95 ms |\n|---|---|---|")?;
    writeln!(body, "| create → Running (API) | {a50:.0} | {a95:.0} |")?;
    match cri {
        Ok(mut t) => {
            let raw50 = pct(&mut t.total.clone(), 0.5);
            writeln!(
                body,
                "| **agent + API overhead: create → Running minus raw CRI sum** | **{:.0}** (target ≤ 100) | |",
                a50 - raw50
            )?;
            for (label, v) in [
                ("RunPodSandbox", &mut t.run_sandbox),
                ("CreateContainer", &mut t.create),
                ("StartContainer", &mut t.start),
                ("raw CRI sequence (sum)", &mut t.total),
            ] {
                writeln!(
                    body,
                    "| {label} | {:.0} | {:.0} |",
                    pct(&mut v.clone(), 0.5),
                    pct(v, 0.95)
                )?;
            }
        }
        Err(e) => {
            println!("raw CRI: {e:#}");
            writeln!(body, "| raw CRI sequence | not measured: {e} | |")?;
        }
    }
    writeln!(body)?;
    let mut mem = String::new();
    writeln!(
        mem,
        "## Agent idle memory\n\nRun {} UTC, release binary. VmRSS {} s after all nodes were Ready, no pods: `k8slite server` with its embedded agent **{rss_server:.1} MiB** (target ≤ 40 MB); `k8slite agent` **{rss_agent:.1} MiB** (target ≤ 15 MB); the agent's containerd {} (not counted).\n\n| process | VmRSS |\n|---|---|\n| server + embedded agent | {detail_server} |\n| agent | {detail_agent} |\n\nFile-backed pages are the binary's own code (one binary for server and agent), shared and reclaimable; anonymous pages are the process's heap and stacks.\n",
        utc_now(),
        idle.as_secs(),
        rss_ctrd.map_or("n/a".to_string(), |r| format!("{r:.1} MiB"))
    )?;
    let doc = std::fs::read_to_string(&out).unwrap_or_default();
    let doc = replace_section(&doc, "Pod start on containerd", &body);
    let doc = replace_section(&doc, "Agent idle memory", &mem);
    std::fs::write(&out, doc).with_context(|| format!("writing {out}"))?;
    println!("wrote {out}");
    let left = c.teardown();
    if !left.is_empty() {
        bail!("cleanup left: {left:?}");
    }
    Ok(())
}
