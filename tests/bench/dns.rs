//! `k8slite-bench-dns`: queries/s and latency of k8slite's cluster DNS server beside Debian's
//! `dnsmasq` serving the same records on the same machine, in the same run. Writes (or
//! replaces) the `## Cluster DNS` section of `tests/bench/RESULTS.md`. No timing is asserted.
//!
//! Both servers run as their own processes on loopback ports: k8slite's `DnsServer` (this
//! binary re-executed with `--serve`, on a multi-threaded tokio runtime as in the agent; the
//! server answers UDP on a thread of its own per socket and uses the runtime for upstream
//! queries and TCP) with
//! `Records::build` over N Services of 2 endpoints, and `dnsmasq` with the same names in an
//! addn-hosts file, `--no-resolv --no-hosts`, cache on. A fake upstream (a thread of this
//! process, answering one name) serves the forwarded name to both. The load generator keeps a
//! fixed number of queries in flight over UDP, one socket per slot.
//!
//! Usage (no root needed): `cargo build --release -p k8slite-tests --bin k8slite-bench-dns &&
//! $CARGO_TARGET_DIR/release/k8slite-bench-dns [--services N] [--rounds R] [--secs S]
//! [--inflight Q] [--quick] [--out FILE]`.

#![allow(clippy::print_stdout)] // a command-line tool reporting figures

mod dns_load;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8slite_tests::bench::{replace_section, utc_now};

use dns_load::{Phase, check_answer, load, query_wire};

/// The forwarded name (answered by the fake upstream only).
const FORWARD_NAME: &str = "cached.example.org.";
/// Its address.
const FORWARD_IP: [u8; 4] = [192, 0, 2, 1];
const DOMAIN: &str = "cluster.local";

/// Service `i`: name, namespace, ClusterIP.
fn service_ident(i: usize) -> (String, String, String) {
    (
        format!("svc-{i}"),
        format!("ns-{}", i % 10),
        format!("10.43.{}.{}", 1 + i / 250, 1 + i % 250),
    )
}

/// `n` ClusterIP Services (port 80 "http") each with one EndpointSlice of 2 ready endpoints.
/// Services and their EndpointSlices.
type Cluster = (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>);

fn cluster(n: usize) -> anyhow::Result<Cluster> {
    let mut svcs = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let (name, ns, ip) = service_ident(i);
        svcs.push(Arc::new(serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }))?));
        let ep = |k: usize| {
            serde_json::json!({
                "addresses": [format!("10.42.{}.{}", (2 * i + k) / 250, 1 + (2 * i + k) % 250)],
                "conditions": {"ready": true}
            })
        };
        slices.push(Arc::new(serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{name}-abcde"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [ep(0), ep(1)],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))?));
    }
    Ok((svcs, slices))
}

/// `--serve LISTEN UPSTREAM N`: run k8slite's DNS server with N Services until stdin closes.
fn serve(listen: &str, upstream: &str, n: usize) -> anyhow::Result<()> {
    use k8slite_network::dns::{DnsConfig, DnsServer, Records};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let (svcs, slices) = cluster(n)?;
        let cfg = DnsConfig::new(
            vec![listen.parse().context("listen address")?],
            DOMAIN,
            vec![upstream.parse().context("upstream address")?],
        );
        let server = DnsServer::bind(cfg).await?;
        server
            .records()
            .replace(Records::build(DOMAIN, &svcs, &slices));
        drop((svcs, slices));
        let addr = server
            .local_addrs()
            .first()
            .copied()
            .context("no address")?;
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        std::thread::spawn(move || {
            // The parent holds our stdin: EOF means it is gone.
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            s.cancel();
        });
        println!("READY {addr}");
        std::io::stdout().flush()?;
        server.run(stop).await?;
        anyhow::Ok(())
    })
}

/// A child process killed on drop.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let u = UdpSocket::bind("127.0.0.1:0")?;
        let port = u.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port for UDP and TCP")
}

fn start_k8slite(upstream: SocketAddr, n: usize) -> anyhow::Result<(Proc, SocketAddr)> {
    let exe = std::env::current_exe().context("own executable")?;
    let mut child = Command::new(exe)
        .args([
            "--serve",
            "127.0.0.1:0",
            &upstream.to_string(),
            &n.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the k8slite dns child")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let proc = Proc {
        child,
        name: "k8slite",
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("READY ")
        .with_context(|| format!("k8slite dns child said {line:?}"))?
        .parse()?;
    Ok((proc, addr))
}

fn dnsmasq_path() -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join("dnsmasq");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "dnsmasq not found (install Debian's dnsmasq-base: apt-get install dnsmasq-base); the DNS benchmark compares against it"
    )
}

fn start_dnsmasq(
    bin: &PathBuf,
    dir: &std::path::Path,
    upstream: SocketAddr,
    n: usize,
) -> anyhow::Result<(Proc, SocketAddr, String)> {
    let hosts = dir.join("hosts");
    let mut text = String::new();
    for i in 0..n {
        let (name, ns, ip) = service_ident(i);
        writeln!(text, "{ip} {name}.{ns}.svc.{DOMAIN}")?;
    }
    std::fs::write(&hosts, text)?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("dnsmasq.log"))?;
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .split("  Copyright")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    let child = Command::new(bin)
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--cache-size=10000",
            "--local-ttl=5",
            "--pid-file=",
            "--log-facility=-",
            "--user=root",
            "--group=root",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--server=127.0.0.1#{}", upstream.port()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dnsmasq")?;
    Ok((
        Proc {
            child,
            name: "dnsmasq",
        },
        SocketAddr::from(([127, 0, 0, 1], port)),
        version,
    ))
}

/// The fake upstream: a thread answering A for [`FORWARD_NAME`] (TTL 3600), NXDOMAIN otherwise.
fn fake_upstream(count: Arc<AtomicU64>) -> anyhow::Result<SocketAddr> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let addr = sock.local_addr()?;
    let want = query_wire(FORWARD_NAME)?;
    let qname_end = 12 + want[12..].iter().position(|&b| b == 0).unwrap_or(0) + 1;
    let want_name = want[12..qname_end].to_ascii_lowercase();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            count.fetch_add(1, Ordering::Relaxed);
            let q = &buf[..n];
            let Some(len) = q.get(12..).and_then(|r| r.iter().position(|&b| b == 0)) else {
                continue;
            };
            let end = 12 + len + 1 + 4;
            if q.len() < end {
                continue;
            }
            let mut out = q[..end].to_vec();
            out[2] = 0x80 | (q[2] & 0x01); // QR, RD copied
            out[3] = 0x80; // RA
            out[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
            let is_a = q[end - 4..end] == [0, 1, 0, 1];
            if is_a && q[12..end - 4].to_ascii_lowercase() == want_name {
                out[7] = 1;
                out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
                out.extend_from_slice(&FORWARD_IP);
            } else {
                out[3] |= 3; // NXDOMAIN
            }
            let _ = sock.send_to(&out, peer);
        }
    });
    Ok(addr)
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            // Fields after the comm: state is index 0, utime 11, stime 12.
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn vm_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// The 1-minute load average (`/proc/loadavg`), or "?".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Opts {
    services: usize,
    rounds: usize,
    secs: f64,
    warm: f64,
    inflight: usize,
    out: String,
}

fn opts(args: &[String]) -> anyhow::Result<Opts> {
    let quick = args.iter().any(|a| a == "--quick");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: f64| -> anyhow::Result<f64> {
        arg(name)
            .map(|s| s.parse::<f64>())
            .transpose()
            .with_context(|| format!("{name} N"))
            .map(|v| v.unwrap_or(default))
    };
    Ok(Opts {
        services: num("--services", 1000.0)? as usize,
        rounds: num("--rounds", if quick { 2.0 } else { 5.0 })? as usize,
        secs: num("--secs", if quick { 1.0 } else { 3.0 })?,
        warm: if quick { 0.3 } else { 0.5 },
        inflight: num("--inflight", 64.0)? as usize,
        out: arg("--out")
            .unwrap_or_else(|| format!("{}/bench/RESULTS.md", env!("CARGO_MANIFEST_DIR"))),
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let (Some(l), Some(u), Some(n)) = (args.get(2), args.get(3), args.get(4)) else {
            bail!("--serve LISTEN UPSTREAM SERVICES");
        };
        return serve(l, u, n.parse()?);
    }
    let o = opts(&args)?;
    let dnsmasq = dnsmasq_path()?;
    let dir = tempfile::tempdir()?;
    let upstream_queries = Arc::new(AtomicU64::new(0));
    let upstream = fake_upstream(upstream_queries.clone())?;
    let (k8s, k8s_addr) = start_k8slite(upstream, o.services)?;
    let (dm, dm_addr, dm_version) = start_dnsmasq(&dnsmasq, dir.path(), upstream, o.services)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    // Each server answers both kinds correctly before anything is timed.
    let svc_names: Vec<(String, [u8; 4])> = (0..o.services)
        .map(|i| {
            let (name, ns, ip) = service_ident(i);
            let ip: std::net::Ipv4Addr = ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            (format!("{name}.{ns}.svc.{DOMAIN}."), ip.octets())
        })
        .collect();
    for (proc, addr) in [(&k8s, k8s_addr), (&dm, dm_addr)] {
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let r = check_answer(addr, &svc_names[0].0, svc_names[0].1).await;
                match r {
                    Ok(()) => break,
                    Err(e) if tokio::time::Instant::now() > deadline => {
                        return Err(e.context(format!("{} never answered", proc.name)));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let last = &svc_names[svc_names.len() - 1];
            check_answer(addr, &last.0, last.1).await?;
            check_answer(addr, FORWARD_NAME, FORWARD_IP).await
        })
        .with_context(|| format!("{} answers", proc.name))?;
    }
    println!(
        "servers ready: k8slite {k8s_addr}, {dm_version} {dm_addr}, upstream {upstream}; {} services; load average {}",
        o.services,
        load_average()
    );
    let svc_wire: Vec<Vec<u8>> = svc_names
        .iter()
        .map(|(n, _)| query_wire(n))
        .collect::<anyhow::Result<_>>()?;
    let fwd_wire = vec![query_wire(FORWARD_NAME)?];
    let kinds: [(&str, &Vec<Vec<u8>>); 2] = [
        ("Service name (rotating over all)", &svc_wire),
        ("cached forwarded name", &fwd_wire),
    ];
    let servers = [("k8slite", &k8s, k8s_addr), ("dnsmasq", &dm, dm_addr)];
    // [server][kind] → per-round phases
    let mut res: Vec<Vec<Vec<(Phase, f64)>>> = vec![vec![Vec::new(); 2]; 2];
    let up_before = upstream_queries.load(Ordering::Relaxed);
    let load_before = load_average();
    for round in 0..o.rounds {
        for s in 0..2 {
            let s = if round % 2 == 0 { s } else { 1 - s };
            let (sname, proc, addr) = servers[s];
            for (k, (kname, wire)) in kinds.iter().enumerate() {
                let t0 = cpu_ticks(proc.pid());
                let p = rt.block_on(load(addr, wire, o.inflight, o.warm, o.secs))?;
                let ticks = cpu_ticks(proc.pid()) - t0;
                // Ticks are 1/100 s; spread over every answered query including the warm-up.
                let cpu_us = ticks as f64 * 1e4 / p.total_answered.max(1) as f64;
                println!(
                    "round {round} {sname:8} {kname:34} {:8.0} q/s p50 {:6.0} µs p99 {:6.0} µs cpu {cpu_us:5.1} µs/q lost {}",
                    p.qps, p.p50_us, p.p99_us, p.lost
                );
                res[s][k].push((p, cpu_us));
            }
        }
    }
    let up_during = upstream_queries.load(Ordering::Relaxed) - up_before;
    let load_after = load_average();
    let rss = [vm_rss_mib(k8s.pid()), vm_rss_mib(dm.pid())];

    let mut body = String::new();
    writeln!(
        body,
        "## Cluster DNS\n\nRun {} UTC, release build, `k8slite-bench-dns`. Both servers run on this machine as their own processes on loopback ports, in the same run: k8slite's `DnsServer` (the `network` crate's server as the agent runs it: a dedicated thread per UDP socket receives and answers in `recvmmsg`/`sendmmsg` batches, local names and cache hits from an answer cache of encoded responses, while upstream queries and TCP run on a multi-threaded tokio runtime) with `Records::build` over {} ClusterIP Services of 2 endpoints each (ports named), and {dm_version} with the same {} names in an addn-hosts file (`--no-resolv --no-hosts --cache-size=10000 --local-ttl=5`). Both forward other names to a fake upstream on another loopback port that answers one name (`{FORWARD_NAME}` A, TTL 3600); it got {up_during} queries during the timed rounds (the forwarded name is served from each server's cache). The load generator (one thread, tokio UDP sockets, queries built and answers checked with hickory-proto) keeps {} queries in flight (one socket each, no EDNS, RD set), warms up {:.1} s, then counts answers for {:.0} s and takes latency send → answer per query. Service queries rotate over all {} names. {} rounds, servers alternating first; medians over rounds. CPU is the server process's utime+stime per answered query. The machine has {} cores shared by the load generator and the server under test; load average (1 min) {load_before} before the rounds, {load_after} after (other work on the machine shows here: compare the two servers within a run).\n",
        utc_now(),
        o.services,
        o.services,
        o.inflight,
        o.warm,
        o.secs,
        o.services,
        o.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )?;
    writeln!(
        body,
        "| server | name | queries/s | p50 µs | p99 µs | server CPU µs/query | lost |\n|---|---|---|---|---|---|---|"
    )?;
    for (k, (kname, _)) in kinds.iter().enumerate() {
        for (s, (sname, _, _)) in servers.iter().enumerate() {
            let r = &res[s][k];
            let med = |f: &dyn Fn(&(Phase, f64)) -> f64| median(r.iter().map(f).collect());
            writeln!(
                body,
                "| {sname} | {kname} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} |",
                med(&|x| x.0.qps),
                med(&|x| x.0.p50_us),
                med(&|x| x.0.p99_us),
                med(&|x| x.1),
                r.iter().map(|x| x.0.lost as f64).sum::<f64>(),
            )?;
        }
    }
    writeln!(
        body,
        "\nVmRSS after the rounds: k8slite DNS process {:.1} MiB, dnsmasq {:.1} MiB. Target: k8slite at least dnsmasq's throughput at no worse p99.\n\nReproduce: `cargo build --release -p k8slite-tests --bin k8slite-bench-dns && $CARGO_TARGET_DIR/release/k8slite-bench-dns` (`--services N --rounds R --secs S --inflight Q`; dnsmasq from Debian's `dnsmasq-base`; no root needed).\n",
        rss[0], rss[1]
    )?;
    print!("{body}");
    let doc = std::fs::read_to_string(&o.out).unwrap_or_default();
    let doc = replace_section(&doc, "Cluster DNS", &body);
    std::fs::write(&o.out, doc).with_context(|| format!("writing {}", o.out))?;
    println!("wrote {}", o.out);
    drop(k8s);
    drop(dm);
    Ok(())
}
