//! `k8slite-bench`: measures the server against baselines taken in the same run and writes the
//! figures with their method to `tests/bench/RESULTS.md`. No timing is asserted anywhere.
//!
//! Usage: `cargo run -p k8slite-tests --bin k8slite-bench -- [--quick] [--out FILE]` with
//! `K8SLITE_BIN` pointing at a release build (`cargo build --release -p k8slite`).

#![allow(clippy::print_stdout)] // a command-line tool reporting figures

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};

struct Running {
    child: Child,
    dir: Option<tempfile::TempDir>,
    client: reqwest::Client,
    base: String,
}

impl Running {
    fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// SIGTERM, wait, and keep the data dir for a restart.
    fn stop(mut self) -> Option<tempfile::TempDir> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        self.dir.take()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(bin: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
    Command::new(bin)
        .arg("server")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--https-listen-port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!(
            "--write-kubeconfig={}",
            dir.join("kubeconfig.yaml").display()
        ))
        .arg("--config=/dev/null")
        .arg("--disable-agent")
        .env("K8SLITE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("server.log"))?))
        .spawn()
        .context("spawning k8slite")
}

fn client_from(kubeconfig: &Path) -> anyhow::Result<(reqwest::Client, String)> {
    let kc: Value = serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    let b64 = |v: &Value| -> anyhow::Result<Vec<u8>> {
        Ok(base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("kubeconfig field")?)?)
    };
    let ca = b64(&kc["clusters"][0]["cluster"]["certificate-authority-data"])?;
    let mut ident = b64(&kc["users"][0]["user"]["client-certificate-data"])?;
    ident.extend(b64(&kc["users"][0]["user"]["client-key-data"])?);
    let base = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .context("server")?
        .to_string();
    let c = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .identity(reqwest::Identity::from_pem(&ident)?)
        .http1_only()
        .pool_max_idle_per_host(256)
        .build()?;
    Ok((c, base))
}

/// Start on a fresh or existing dir and wait for /readyz; returns the time to ready.
async fn start(
    bin: &Path,
    dir: tempfile::TempDir,
    port: u16,
) -> anyhow::Result<(Running, Duration)> {
    let t0 = Instant::now();
    let child = spawn(bin, dir.path(), port)?;
    let kc = dir.path().join("kubeconfig.yaml");
    loop {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("server not ready in 30 s");
        }
        if kc.exists()
            && let Ok((c, base)) = client_from(&kc)
            && let Ok(r) = c.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            let took = t0.elapsed();
            return Ok((
                Running {
                    child,
                    dir: Some(dir),
                    client: c,
                    base,
                },
                took,
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Durable creates/s through the API with `conc` clients each on its own connection.
async fn creates_per_sec(
    r: &Running,
    conc: usize,
    dur: Duration,
    tag: &str,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let kc = r.path().join("kubeconfig.yaml");
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (c, base) = client_from(&kc)?;
        let done = done.clone();
        let failed = failed.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{tag}-{w}-{i}")}, "data": {"k": "v"}});
                match c.post(format!("{base}/api/v1/namespaces/default/configmaps")).json(&body).send().await {
                    Ok(resp) if resp.status().as_u16() == 201 => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }
    let t0 = Instant::now();
    for t in tasks {
        t.await?;
    }
    let n = done.load(Ordering::Relaxed);
    if failed.load(Ordering::Relaxed) > 0 {
        println!(
            "  ({} failed creates at concurrency {conc})",
            failed.load(Ordering::Relaxed)
        );
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Raw SQLite baseline: the same durability (WAL, synchronous=FULL), `conc` threads each doing
/// one insert per transaction on its own connection, and one thread batching 64 per commit.
fn sqlite_baseline(dir: &Path, conc: usize, dur: Duration) -> anyhow::Result<(f64, f64)> {
    let path = dir.join(format!("baseline-{conc}.db"));
    {
        let c = rusqlite::Connection::open(&path)?;
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE kv (key TEXT PRIMARY KEY, rev INTEGER, value BLOB);")?;
    }
    let value = serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default", "uid": "00000000-0000-0000-0000-000000000000", "creationTimestamp": "2026-01-01T00:00:00Z"}, "data": {"k": "v"}}),
    )?;
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let t0 = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut hs = Vec::new();
        for w in 0..conc {
            let path = path.clone();
            let value = value.clone();
            let count = count.clone();
            hs.push(s.spawn(move || -> anyhow::Result<()> {
                let c = rusqlite::Connection::open(&path)?;
                c.execute_batch("PRAGMA synchronous=FULL;")?;
                c.busy_timeout(Duration::from_secs(10))?;
                let mut i = 0u64;
                while Instant::now() < deadline {
                    c.execute(
                        "INSERT INTO kv (key, rev, value) VALUES (?1, ?2, ?3)",
                        rusqlite::params![
                            format!("/registry/configmaps/default/{w}-{i}"),
                            i as i64,
                            value
                        ],
                    )?;
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            }));
        }
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("baseline thread panicked"))??;
        }
        Ok(())
    })?;
    let single = count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    // Batched: 64 inserts per transaction (what group commit can reach at best).
    let c = rusqlite::Connection::open(&path)?;
    c.execute_batch("PRAGMA synchronous=FULL;")?;
    let t1 = Instant::now();
    let mut n = 0u64;
    let deadline = Instant::now() + dur;
    while Instant::now() < deadline {
        let tx = c.unchecked_transaction()?;
        for _ in 0..64 {
            tx.execute(
                "INSERT INTO kv (key, rev, value) VALUES (?1, ?2, ?3)",
                rusqlite::params![format!("/registry/configmaps/batch/{n}"), n as i64, value],
            )?;
            n += 1;
        }
        tx.commit()?;
    }
    let batched = n as f64 / t1.elapsed().as_secs_f64();
    Ok((single, batched))
}

/// JSON and Table list medians (ms), items listed, and the server's RSS (KiB) right after the
/// pods were created (before any list).
async fn list_latency(r: &Running, n: usize) -> anyhow::Result<(f64, f64, usize, u64)> {
    let ns = format!("list{n}");
    r.client
        .post(format!("{}/api/v1/namespaces", r.base))
        .json(&json!({"metadata": {"name": ns}}))
        .send()
        .await?;
    let have = Arc::new(AtomicU64::new(0));
    let kc = r.path().join("kubeconfig.yaml");
    let mut tasks = Vec::new();
    for w in 0..32usize {
        let (c, base) = client_from(&kc)?;
        let ns = ns.clone();
        let have = have.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{i}"), "labels": {"app": "bench", "i": (i % 10).to_string()}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"], "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
                if let Ok(r) = c.post(format!("{base}/api/v1/namespaces/{ns}/pods")).json(&pod).send().await
                    && r.status().as_u16() == 201
                {
                    have.fetch_add(1, Ordering::Relaxed);
                }
                i += 32;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let rss_created = rss_kib(r.child.id());
    let mut json_ms = Vec::new();
    let mut table_ms = Vec::new();
    let mut items = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let v: Value = r
            .client
            .get(format!("{}/api/v1/namespaces/{ns}/pods", r.base))
            .send()
            .await?
            .json()
            .await?;
        json_ms.push(t.elapsed().as_secs_f64() * 1e3);
        items = v["items"].as_array().map_or(0, Vec::len);
        let t = Instant::now();
        let _ = r
            .client
            .get(format!("{}/api/v1/namespaces/{ns}/pods", r.base))
            .header(
                "accept",
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            )
            .send()
            .await?
            .bytes()
            .await?;
        table_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((
        median(&mut json_ms),
        median(&mut table_ms),
        items,
        rss_created,
    ))
}

/// Per create: (request sent → event line read) and (request sent → 201 received), in ms.
async fn watch_latency(r: &Running, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let resp = r
        .client
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true&labelSelector=bench%3Dwatch",
            r.base
        ))
        .send()
        .await?;
    let mut stream = resp.bytes_stream();
    let mut lat = Vec::new();
    let mut acks = Vec::new();
    let mut buf = Vec::new();
    for i in 0..n {
        let body =
            json!({"metadata": {"name": format!("watch-{i}"), "labels": {"bench": "watch"}}});
        let t = Instant::now();
        r.client
            .post(format!("{}/api/v1/namespaces/default/configmaps", r.base))
            .json(&body)
            .send()
            .await?;
        acks.push(t.elapsed().as_secs_f64() * 1e3);
        let want = format!("watch-{i}\"");
        'outer: loop {
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await?
                .context("watch ended")??;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if String::from_utf8_lossy(&line).contains(&want) {
                    break 'outer;
                }
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((lat, acks))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| {
            let dir = std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
            format!("{dir}/bench/RESULTS.md")
        });
    let bin = std::path::PathBuf::from(
        std::env::var("K8SLITE_BIN").context("set K8SLITE_BIN to a release build of k8slite")?,
    );
    let runs = if quick { 3 } else { 10 };
    let phase = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let mut report = String::new();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    writeln!(
        report,
        "# k8slite benchmark results\n\nRun {date} on {cores} cores ({host}), binary `{}`{}.\n",
        bin.display(),
        if quick { ", --quick" } else { "" }
    )?;

    // 1. cold start
    let mut fresh = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let (r, t) = start(&bin, dir, port).await?;
        fresh.push(t.as_secs_f64() * 1e3);
        let dir = r.stop().context("data dir kept")?;
        let (r2, t2) = start(&bin, dir, port).await?;
        warm.push(t2.as_secs_f64() * 1e3);
        drop(r2);
    }
    writeln!(
        report,
        "## Cold start to `/readyz`\n\nProcess spawn until `GET /readyz` (polled every 2 ms over HTTPS with the admin certificate) answers 200, median of {runs}.\n"
    )?;
    writeln!(
        report,
        "| data dir | median ms | max ms | target |\n|---|---|---|---|"
    )?;
    writeln!(
        report,
        "| fresh (generates CAs, certificates, token, database) | {:.0} | {:.0} | ≤ 300 |",
        median(&mut fresh.clone()),
        pct(&mut fresh, 1.0)
    )?;
    writeln!(
        report,
        "| existing (restart) | {:.0} | {:.0} | ≤ 300 |\n",
        median(&mut warm.clone()),
        pct(&mut warm, 1.0)
    )?;
    println!(
        "start: fresh {:.0} ms, warm {:.0} ms",
        median(&mut fresh),
        median(&mut warm)
    );

    // 2. idle RSS
    let dir = tempfile::tempdir()?;
    let (r, _) = start(&bin, dir, free_port()?).await?;
    let idle = if quick {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(60)
    };
    tokio::time::sleep(idle).await;
    let rss = rss_kib(r.child.id());
    writeln!(
        report,
        "## Idle memory\n\nVmRSS of `k8slite server --disable-agent` {} s after ready, no clients: **{:.1} MiB** (target ≤ 40 MB for server + embedded agent).\n",
        idle.as_secs(),
        rss as f64 / 1024.0
    )?;
    println!("idle rss: {:.1} MiB", rss as f64 / 1024.0);

    // 3. durable creates/s vs raw SQLite
    writeln!(
        report,
        "## Durable creates per second\n\nConfigMap creates through HTTPS (HTTP/1.1, one connection per client) for {} s each; a create is counted when the 201 arrives (the write is committed with fsync before that). Baseline in the same run: raw SQLite (rusqlite, WAL, synchronous=FULL, same JSON value) with the same number of threads each inserting one row per transaction, and one thread committing 64 rows per transaction.\n",
        phase.as_secs()
    )?;
    writeln!(
        report,
        "| concurrent clients | k8slite creates/s | raw SQLite, 1 row/txn | raw SQLite, 64 rows/txn | target |\n|---|---|---|---|---|"
    )?;
    for conc in [1usize, 16, 64] {
        let api = creates_per_sec(&r, conc, phase, &format!("c{conc}")).await?;
        let (single, batched) = sqlite_baseline(r.path(), conc, phase)?;
        writeln!(
            report,
            "| {conc} | {api:.0} | {single:.0} | {batched:.0} | ≥ 3000 |"
        )?;
        println!("creates/s at {conc}: {api:.0} (sqlite {single:.0} / batched {batched:.0})");
    }
    writeln!(report)?;

    // 4. list latency
    writeln!(
        report,
        "## List latency\n\nPods (one container, requests, labels) created through the API in their own namespace, then `GET .../pods` as JSON and as a Table (kubectl's Accept header), median of 10.\n"
    )?;
    writeln!(
        report,
        "| pods | JSON ms | Table ms | VmRSS after creating them |\n|---|---|---|---|"
    )?;
    for n in [1000usize, if quick { 2000 } else { 10000 }] {
        let (j, t, items, rss) = list_latency(&r, n).await?;
        writeln!(
            report,
            "| {items} | {j:.1} | {t:.1} | {:.1} MiB |",
            rss as f64 / 1024.0
        )?;
        println!("list {items}: json {j:.1} ms, table {t:.1} ms");
    }
    let rss_loaded = rss_kib(r.child.id());
    writeln!(
        report,
        "\nVmRSS after the list runs: {:.1} MiB.\n",
        rss_loaded as f64 / 1024.0
    )?;

    // 5. watch latency
    let n = if quick { 50 } else { 200 };
    let (mut ev, mut ack) = watch_latency(&r, n).await?;
    let (e50, e99) = (median(&mut ev.clone()), pct(&mut ev, 0.99));
    let (a50, a99) = (median(&mut ack.clone()), pct(&mut ack, 0.99));
    writeln!(
        report,
        "## Watch event latency\n\nA watch on ConfigMaps with a label selector is open; {n} creates one after another. For each: time from sending the create to reading the matching event line on the watch, beside the time to the create's 201 (events are published right after the commit, before or while the 201 travels back).\n\n| | p50 ms | p99 ms |\n|---|---|---|\n| create sent → watch event read | {e50:.2} | {e99:.2} |\n| create sent → 201 received | {a50:.2} | {a99:.2} |\n"
    )?;
    println!("watch: event p50 {e50:.2} ms p99 {e99:.2} ms; ack p50 {a50:.2} ms");
    std::fs::write(&out, report).with_context(|| format!("writing {out}"))?;
    println!("wrote {out}");
    Ok(())
}
