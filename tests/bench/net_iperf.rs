//! iperf3 between two network namespaces, and small `ip`/`nsenter` helpers for the data-path
//! benchmark. A namespace is named by a path nsenter accepts: `/run/netns/<name>` or
//! `/proc/<pid>/ns/net`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8slite_tests::e2e::sys;

/// One iperf3 result.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// `end.sum_received.bits_per_second` in Gbit/s.
    pub gbit: f64,
    /// `end.sum_sent.retransmits`.
    pub retransmits: u64,
}

/// `args` run inside netns `ns` (root mount namespace), output captured; error with stderr when
/// it fails.
pub fn ns_run(ns: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = sys::nsenter_cmd(ns, args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("nsenter {} {args:?}", ns.display()))?;
    if !out.status.success() {
        bail!(
            "{args:?} in {} failed ({}): {}",
            ns.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip args…` in the root namespace.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    sys::run("ip", args).map(|_| ())
}

/// MTU of link `dev` in netns `ns`.
pub fn link_mtu(ns: &Path, dev: &str) -> anyhow::Result<u32> {
    let out = ns_run(ns, &["ip", "-o", "link", "show", "dev", dev])?;
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mtu" {
            return words
                .next()
                .and_then(|m| m.parse().ok())
                .with_context(|| format!("mtu of {dev} in {out:?}"));
        }
    }
    bail!("no mtu for {dev} in {out:?}")
}

/// `tx-checksum-ip-generic` state of `dev` in `ns` per `ethtool -k` ("on", "off", or why not
/// known).
pub fn tx_csum(ns: &Path, dev: &str) -> String {
    match ns_run(ns, &["ethtool", "-k", dev]) {
        Ok(out) => out
            .lines()
            .find_map(|l| l.trim().strip_prefix("tx-checksum-ip-generic:"))
            .map_or("unknown".into(), |v| v.trim().to_string()),
        Err(_) => "not checked: ethtool failed or is not installed".into(),
    }
}

/// An iperf3 server process; killed by PID when dropped if still running.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Whether something listens on TCP `port` in `ns` (`ss -Hltn`).
fn listening(ns: &Path, port: u16) -> bool {
    ns_run(ns, &["ss", "-Hltn", &format!("sport = :{port}")])
        .is_ok_and(|out| !out.trim().is_empty())
}

/// `iperf3 -s -1` in `server_ns`, `iperf3 -c <server_ip> -t <secs> -J` in `client_ns`.
pub fn iperf(
    server_ns: &Path,
    client_ns: &Path,
    server_ip: &str,
    port: u16,
    secs: u32,
) -> anyhow::Result<Sample> {
    let port_s = port.to_string();
    let mut server = Server(
        sys::nsenter_cmd(server_ns, &["iperf3", "-s", "-1", "-p", &port_s])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning iperf3 -s (package iperf3)")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(server_ns, port) {
        if let Ok(Some(st)) = server.0.try_wait() {
            bail!("iperf3 -s in {} exited at once ({st})", server_ns.display());
        }
        if Instant::now() > deadline {
            bail!(
                "iperf3 -s in {} not listening after 10 s",
                server_ns.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let limit = (secs + 25).to_string();
    let secs_s = secs.to_string();
    let mut client: Vec<&str> = vec!["timeout", &limit, "nsenter"];
    let net = format!("--net={}", client_ns.display());
    client.extend([
        net.as_str(),
        "--",
        "iperf3",
        "-c",
        server_ip,
        "-p",
        &port_s,
        "-t",
        &secs_s,
        "-J",
    ]);
    let out = Command::new(client[0])
        .args(&client[1..])
        .stdin(Stdio::null())
        .output()
        .context("running iperf3 -c")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "iperf3 -c {server_ip} ({}): no JSON; stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 -c {server_ip}: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received.bits_per_second")?;
    // The one-off server ends by itself; give it a moment, Drop kills it otherwise.
    let end = Instant::now() + Duration::from_secs(3);
    while matches!(server.0.try_wait(), Ok(None)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Sample {
        gbit: bps / 1e9,
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

/// `/run/netns/<name>`.
pub fn netns(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Median, min, max of `v` (NaN when empty).
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (med, s[0], s[n - 1])
}
