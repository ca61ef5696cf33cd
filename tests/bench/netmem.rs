//! `k8slite-bench-netmem`: a joined agent's idle memory with no Services, then with N Services
//! of 2 endpoints each (EndpointSlices written through the API), in the same run. Writes (or
//! replaces) the `## Agent memory with many Services` section of `tests/bench/RESULTS.md`.
//! No figure is asserted.
//!
//! Usage (root, like the e2e tests): `cargo build --release -p k8slite -p k8slite-tests &&
//! K8SLITE_BIN=$CARGO_TARGET_DIR/release/k8slite $CARGO_TARGET_DIR/release/k8slite-bench-netmem
//! [--services N] [--idle SECS] [--quick] [--concurrency N] [--hold SECS] [--out FILE]`
//! (`--concurrency`: creates in flight, default 8; `--hold`: keep the cluster that long after
//! the last reading, to inspect the agent, e.g. its heap with `gdb -p`).

#![allow(clippy::print_stdout)] // a command-line tool reporting figures

use std::collections::HashSet;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8slite_tests::bench::{replace_section, utc_now};
use k8slite_tests::e2e::{E2eCluster, E2eOptions};

const NAMESPACES: usize = 10;
/// One create gets this long (a hang fails the run instead of stalling it).
const CREATE_LIMIT: Duration = Duration::from_secs(120);

/// `/proc/<pid>/status` fields in KiB: VmRSS, RssAnon, RssFile.
fn rss(pid: u32) -> [u64; 3] {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(':')))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    [field("VmRSS"), field("RssAnon"), field("RssFile")]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Median of `samples` readings one second apart (a reading is taken while idle).
fn idle_rss(pid: u32, samples: usize) -> [u64; 3] {
    let mut v: Vec<[u64; 3]> = Vec::new();
    for i in 0..samples {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        v.push(rss(pid));
    }
    v.sort_by_key(|r| r[0]);
    v[v.len() / 2]
}

/// Distinct `bench` Services named in the nat table of `netns`.
fn programmed(netns: &str) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-save", "-t", "nat"])
        .output();
    let Ok(out) = out else { return 0 };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.split("--comment \"").nth(1)
            && rest.starts_with("netmem-")
            && let Some(svc) = rest.split([':', ' ', '"']).next()
        {
            seen.insert(svc.to_string());
        }
    }
    seen.len()
}

/// Create the namespaces, `n` selector-less Services and their EndpointSlices (2 ready
/// endpoints each, addresses inside the run's cluster CIDR) through `kube::Client`.
fn create_services(c: &E2eCluster, n: usize, concurrency: usize) -> anyhow::Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, PostParams};
    let cidr = c.slot().cluster_cidr();
    let second: u8 = cidr
        .split('.')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("cluster cidr")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).context("kubeconfig")?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .context("kube config")?;
        let client = kube::Client::try_from(cfg).context("kube client")?;
        let pp = PostParams::default();
        let nss: Api<Namespace> = Api::all(client.clone());
        for i in 0..NAMESPACES {
            let ns: Namespace = serde_json::from_value(
                serde_json::json!({"metadata": {"name": format!("netmem-{i}")}}),
            )?;
            nss.create(&pp, &ns).await.context("creating a namespace")?;
        }
        let results = futures::stream::iter(0..n)
            .map(|i| {
                let client = client.clone();
                let pp = pp.clone();
                async move {
                    let ns = format!("netmem-{}", i % NAMESPACES);
                    let name = format!("svc-{i}");
                    let svc: Service = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": name},
                        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
                    }))?;
                    let svcs = Api::<Service>::namespaced(client.clone(), &ns);
                    tokio::time::timeout(CREATE_LIMIT, svcs.create(&pp, &svc))
                        .await
                        .with_context(|| format!("creating service {ns}/{name}: no answer"))?
                        .with_context(|| format!("creating service {ns}/{name}"))?;
                    let ep = |k: usize| {
                        let j = 2 * i + k;
                        serde_json::json!({
                            "addresses": [format!("10.{second}.{}.{}", 100 + j / 250, 1 + j % 250)],
                            "conditions": {"ready": true}
                        })
                    };
                    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("{name}-bench"),
                                     "labels": {"kubernetes.io/service-name": name}},
                        "addressType": "IPv4",
                        "endpoints": [ep(0), ep(1)],
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
                    }))?;
                    let slices = Api::<EndpointSlice>::namespaced(client, &ns);
                    tokio::time::timeout(CREATE_LIMIT, slices.create(&pp, &slice))
                        .await
                        .with_context(|| format!("creating slice of {ns}/{name}: no answer"))?
                        .with_context(|| format!("creating slice of {ns}/{name}"))?;
                    if i % 100 == 99 {
                        println!("created {} services", i + 1);
                    }
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        anyhow::Ok(())
    })
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
    let n: usize = arg("--services")
        .map(|s| s.parse())
        .transpose()
        .context("--services N")?
        .unwrap_or(1000);
    let idle_secs: u64 = arg("--idle")
        .map(|s| s.parse())
        .transpose()
        .context("--idle SECS")?
        .unwrap_or(if quick { 10 } else { 60 });
    let concurrency: usize = arg("--concurrency")
        .map(|s| s.parse())
        .transpose()
        .context("--concurrency N")?
        .unwrap_or(8)
        .max(1);
    let hold: u64 = arg("--hold")
        .map(|s| s.parse())
        .transpose()
        .context("--hold SECS")?
        .unwrap_or(0);
    let out =
        arg("--out").unwrap_or_else(|| format!("{}/bench/RESULTS.md", env!("CARGO_MANIFEST_DIR")));
    std::env::var("K8SLITE_BIN").context("set K8SLITE_BIN to a release build of k8slite")?;

    let c = E2eCluster::start_with(E2eOptions {
        embedded_agent: false,
        agents: vec!["agent1".into()],
        images: false,
        ..E2eOptions::default()
    });
    let agent = c.node("agent1");
    let pid = agent.pid().context("agent pid")?;
    let netns = agent.netns.clone();

    std::thread::sleep(Duration::from_secs(idle_secs));
    let before = idle_rss(pid, 5);
    println!(
        "idle, no services: {:.1} MiB (anon {:.1}, file {:.1})",
        mib(before[0]),
        mib(before[1]),
        mib(before[2])
    );

    let t0 = Instant::now();
    create_services(&c, n, concurrency)?;
    let created = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = 0;
    while seen < n {
        if Instant::now() > deadline {
            bail!("agent programmed {seen} of {n} services within 300 s");
        }
        std::thread::sleep(Duration::from_millis(500));
        seen = programmed(&netns);
    }
    let synced = t0.elapsed();
    println!(
        "{n} services created in {:.1} s, all in the agent's nat table after {:.1} s",
        created.as_secs_f64(),
        synced.as_secs_f64()
    );
    let peak = rss(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let after = idle_rss(pid, 5);
    println!(
        "idle, {n} services: {:.1} MiB (anon {:.1}, file {:.1})",
        mib(after[0]),
        mib(after[1]),
        mib(after[2])
    );
    let d = |i: usize| mib(after[i]) - mib(before[i]);

    let mut body = String::new();
    writeln!(
        body,
        "## Agent memory with many Services\n\nRun {} UTC, release binary, `k8slite-bench-netmem`. `k8slite server --disable-agent` plus one joined `k8slite agent` (e2e harness, network namespaces, default `vxlan` backend, proxy and DNS on). The agent's VmRSS (`/proc/<pid>/status`, median of 5 readings 1 s apart) {idle_secs} s after it was Ready with no Services but `kubernetes` and `kube-dns`; then {n} selector-less Services (ClusterIP allocated, one named port) in {NAMESPACES} namespaces and one EndpointSlice each with 2 ready endpoints, created through `kube::Client` ({concurrency} at a time, {:.1} s); all {n} were in the agent's nat table (`iptables-save` in its netns) {:.1} s after the first create; read again {idle_secs} s later.\n",
        utc_now(),
        created.as_secs_f64(),
        synced.as_secs_f64()
    )?;
    writeln!(
        body,
        "| agent | VmRSS MiB | anonymous MiB | file-backed MiB |\n|---|---|---|---|\n| idle, no Services | {:.1} | {:.1} | {:.1} |\n| idle, {n} Services / {} endpoints | {:.1} | {:.1} | {:.1} |\n| right after the sync | {:.1} | {:.1} | {:.1} |\n| **difference (idle)** | **{:+.1}** (target ≤ +5) | {:+.1} | {:+.1} |\n",
        mib(before[0]),
        mib(before[1]),
        mib(before[2]),
        2 * n,
        mib(after[0]),
        mib(after[1]),
        mib(after[2]),
        mib(peak[0]),
        mib(peak[1]),
        mib(peak[2]),
        d(0),
        d(1),
        d(2)
    )?;
    writeln!(
        body,
        "Reproduce (root): `cargo build --release -p k8slite -p k8slite-tests && K8SLITE_BIN=$CARGO_TARGET_DIR/release/k8slite $CARGO_TARGET_DIR/release/k8slite-bench-netmem` (`--services N --idle SECS`).\n"
    )?;
    print!("{body}");
    let doc = std::fs::read_to_string(&out).unwrap_or_default();
    let doc = replace_section(&doc, "Agent memory with many Services", &body);
    std::fs::write(&out, doc).with_context(|| format!("writing {out}"))?;
    println!("wrote {out}");
    if hold > 0 {
        println!("holding the cluster {hold} s (agent pid {pid})");
        std::thread::sleep(Duration::from_secs(hold));
    }
    let left = c.teardown();
    if !left.is_empty() {
        bail!("cleanup left: {left:?}");
    }
    Ok(())
}
