//! `k8slite-bench-proxy`: service proxy sync time (an EndpointSlice change → its rules live in
//! the kernel), beside the bare `iptables-restore --noflush` of the same full rule text, in a
//! private network namespace. Writes (or replaces) the `## Service proxy sync` section of
//! `tests/bench/RESULTS.md`. No timing is asserted.
//!
//! Usage (root): `cargo build --release -p k8slite-tests &&
//! $CARGO_TARGET_DIR/release/k8slite-bench-proxy [--changes N] [--sizes 10,1000,5000]
//! [--bare N] [--full N] [--out FILE]`. Defaults are CI-sized (`--sizes 10,1000 --changes
//! 20`); the bare restore of the full text (seconds at 5,000 Services with iptables-nft) runs
//! beside the first `--bare` changes only (default 10) and `--full` full syncs (default 5)
//! follow the changes, so `--sizes 5000` finishes in a few minutes.

#![allow(clippy::print_stdout)] // a command-line tool reporting figures

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8slite_network::proxy::{IptablesBackend, Proxier, ProxyConfig, RecordingConntrack, render};
use k8slite_tests::bench::{replace_section, utc_now};
use serde_json::json;

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Removes the namespace even when the run fails.
struct Netns(String);

impl Netns {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("k8slbench-px-{}-{nanos:x}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .context("running ip netns add (prerequisite: iproute2)")?;
        if !out.status.success() {
            bail!(
                "ip netns add {name} (run as root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self(name))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn find_tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
        .with_context(|| format!("prerequisite missing: {name}"))
}

fn service(i: usize) -> anyhow::Result<Arc<Service>> {
    Ok(Arc::new(serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("s{i}"), "uid": format!("uid-{i}"),
            "resourceVersion": "1"},
        "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    }))?))
}

/// The slice of service `i`, version `v`: its second endpoint's address and its first
/// endpoint's readiness follow `v` (every change alternates between the two kinds).
fn slice(i: usize, v: u32) -> anyhow::Result<Arc<EndpointSlice>> {
    let ep = |ip: String, node: &str, ready: bool| {
        json!({"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": ready, "terminating": false}})
    };
    let second = 100 + (v.div_ceil(2) % 100) as usize;
    Ok(Arc::new(serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("s{i}-a"),
            "resourceVersion": format!("{}", v + 1),
            "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            ep(format!("10.244.{}.{}", i / 250, i % 250 + 1), "node", (v / 2).is_multiple_of(2)),
            ep(format!("10.244.{}.{}", second + i / 250, i % 250 + 1), "other", true),
        ],
    }))?))
}

/// `iptables-restore -w --noflush` of `text` in `ns`; milliseconds.
fn bare_restore(restore: &std::path::Path, ns: &Netns, text: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .arg(restore)
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning nsenter iptables-restore")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let took = ms(t);
    if !out.status.success() {
        bail!(
            "bare iptables-restore: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

struct Figures {
    n: usize,
    lines: usize,
    bytes: usize,
    initial: f64,
    sync: Vec<f64>,
    render: Vec<f64>,
    bare: Vec<f64>,
    full: Vec<f64>,
}

/// How many of each measurement one size runs.
#[derive(Clone, Copy)]
struct Counts {
    changes: usize,
    bare: usize,
    full: usize,
}

fn run_size(iptables: &std::path::Path, n: usize, counts: Counts) -> anyhow::Result<Figures> {
    let Counts {
        changes,
        bare: bare_runs,
        full: full_runs,
    } = counts;
    let ns = Netns::new()?;
    let restore = iptables.with_file_name(format!(
        "{}-restore",
        iptables
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "iptables".into())
    ));
    let mut cfg = ProxyConfig::new(
        "node",
        vec!["192.168.77.2".parse()?],
        "10.244.0.0/16".parse()?,
        "10.96.0.0/12".parse()?,
    );
    cfg.chain_prefix = "KBENCH".into();
    cfg.pod_cidr = Some("10.244.0.0/24".parse()?);
    let backend = IptablesBackend::new(iptables.to_path_buf()).in_netns(ns.path());
    let mut proxier = Proxier::new(cfg.clone(), backend, RecordingConntrack::new());
    let services: Vec<Arc<Service>> = (0..n).map(service).collect::<anyhow::Result<_>>()?;
    let mut versions = vec![0u32; n];
    let mut slices: Vec<Arc<EndpointSlice>> =
        (0..n).map(|i| slice(i, 0)).collect::<anyhow::Result<_>>()?;

    let t = Instant::now();
    let rep = proxier.sync(&services, &slices).context("initial sync")?;
    let initial = ms(t);
    if !rep.problems.is_empty() || rep.services != n {
        bail!(
            "initial sync: {} services, {:?}",
            rep.services,
            rep.problems
        );
    }
    let (mut sync, mut rend, mut bare, mut full) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut lines, mut bytes) = (0, 0);
    let none = std::collections::BTreeSet::new();
    for c in 0..changes {
        let k = (c * 7919) % n;
        versions[k] += 1;
        slices[k] = slice(k, versions[k])?;
        // (a) the proxier: render + diff + iptables-restore of what changed.
        let t = Instant::now();
        let rep = proxier.sync(&services, &slices).context("sync")?;
        sync.push(ms(t));
        if !rep.applied {
            bail!("change {c} applied nothing");
        }
        // (b) the same full rule text, bare (beside the first changes only: seconds each at
        // 5,000 Services).
        let t = Instant::now();
        let r = render(&cfg, &services, &slices, &none);
        rend.push(ms(t));
        lines = r.rules;
        bytes = r.text.len();
        if c < bare_runs {
            bare.push(bare_restore(&restore, &ns, &r.text)?);
        }
    }
    // (c) full syncs (as at start-up, after a failure, every 10 min), a few.
    proxier.set_full_sync_every(std::time::Duration::ZERO);
    for _ in 0..full_runs {
        let t = Instant::now();
        proxier.sync(&services, &slices).context("full sync")?;
        full.push(ms(t));
    }
    proxier.cleanup().context("cleanup")?;
    println!(
        "N={n}: initial {initial:.1} ms; sync p50 {:.1} p99 {:.1}; bare p50 {:.1} p99 {:.1}; full sync p50 {:.1}; render p50 {:.1}",
        pct(&sync, 0.5),
        pct(&sync, 0.99),
        pct(&bare, 0.5),
        pct(&bare, 0.99),
        pct(&full, 0.5),
        pct(&rend, 0.5)
    );
    Ok(Figures {
        n,
        lines,
        bytes,
        initial,
        sync,
        render: rend,
        bare,
        full,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let changes: usize = arg("--changes")
        .map(|s| s.parse())
        .transpose()
        .context("--changes N")?
        .unwrap_or(20);
    let count = |name: &str, default: usize| -> anyhow::Result<usize> {
        Ok(arg(name)
            .map(|s| s.parse())
            .transpose()
            .with_context(|| format!("{name} N"))?
            .unwrap_or(default))
    };
    let counts = Counts {
        changes,
        bare: count("--bare", 10)?.min(changes),
        full: count("--full", 5)?,
    };
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "10,1000".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("--sizes N,M,..")?;
    let out =
        arg("--out").unwrap_or_else(|| format!("{}/bench/RESULTS.md", env!("CARGO_MANIFEST_DIR")));
    let iptables = find_tool("iptables")?;
    find_tool("nsenter")?;
    let version = Command::new(&iptables)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut figs = Vec::new();
    for n in sizes {
        figs.push(run_size(&iptables, n, counts)?);
    }
    let mut body = String::new();
    writeln!(
        body,
        "## Service proxy sync\n\nRun {} UTC by `k8slite-bench-proxy`, {version}, in a private network namespace (`nsenter --net`). N Services of one TCP port with an EndpointSlice of 2 endpoints each; one initial `Proxier::sync`, then {changes} changes, each to one EndpointSlice (alternately the second endpoint's address and the first endpoint's readiness), and per change:\n\n- **sync**: `Proxier::sync` end to end: render of all Services, per-chain hashes of the text compared with the last applied ones (64-bit hashes, no rule text kept between syncs), one `iptables-restore -w --noflush` (through `nsenter`) of the changed chains only. This is the agent's \"EndpointSlice change → rule live\" time without its 5 ms settle delay and the watch delivery.\n- **bare restore**: beside the first {} changes, the bare `iptables-restore -w --noflush` (through `nsenter`) of the same state's full rule text (rendered beforehand, not timed) into the same namespace.\n- **full sync**: `Proxier::sync` writing every chain (start-up, after a failed restore, every 10 min), {} runs after the changes.\n",
        utc_now(),
        counts.bare,
        counts.full
    )?;
    writeln!(
        body,
        "| Services | rule lines | text KiB | initial sync ms | **sync p50 / p99 ms** | bare restore p50 / p99 ms | sync p99 / bare p99 | full sync p50 ms | render alone p50 ms |\n|---|---|---|---|---|---|---|---|---|"
    )?;
    for f in &figs {
        writeln!(
            body,
            "| {} | {} | {:.0} | {:.1} | **{:.1} / {:.1}** | {:.1} / {:.1} | {:.2} | {:.1} | {:.1} |",
            f.n,
            f.lines,
            f.bytes as f64 / 1024.0,
            f.initial,
            pct(&f.sync, 0.5),
            pct(&f.sync, 0.99),
            pct(&f.bare, 0.5),
            pct(&f.bare, 0.99),
            pct(&f.sync, 0.99) / pct(&f.bare, 0.99),
            pct(&f.full, 0.5),
            pct(&f.render, 0.5),
        )?;
    }
    writeln!(
        body,
        "\nTarget (issue 10): sync p99 ≤ 100 ms at 1,000 Services, within 2× of the bare restore.\n"
    )?;
    let doc = std::fs::read_to_string(&out).unwrap_or_default();
    std::fs::write(&out, replace_section(&doc, "Service proxy sync", &body))
        .with_context(|| format!("writing {out}"))?;
    println!("wrote {out}");
    Ok(())
}
