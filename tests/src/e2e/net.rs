//! The test "LAN": one bridge in the root network namespace with a /24 from 10.250.0.0/16 and
//! one network namespace per node, attached by a veth pair. Each run takes a free slot `n`
//! (a lock file under [`LOCK_DIR`]); the slot decides every name and range of the run so that
//! concurrent runs never meet:
//!
//! | what | value |
//! |---|---|
//! | run prefix | `k8e<nn>` (`nn` = slot, two digits) |
//! | bridge (root netns) | `k8e<nn>-lan`, 10.250.`n`.1/24 |
//! | node netns | `k8e<nn>-<node>` (`/run/netns/…`), eth0 10.250.`n`.(10+i)/24, default route via .1 |
//! | host veth | `k8e<nn>-v<i>` |
//! | cluster CIDR | 10.(200+`n`).0.0/16 |
//! | service CIDR | 10.(150+`n`).0.0/16, cluster DNS 10.(150+`n`).0.10 |

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::sys::{nsenter_cmd, run, run_quiet};

/// Where slot lock files live (`lan-<n>.lock`, flocked by the holder, holding its PID).
pub const LOCK_DIR: &str = "/run/k8slite-e2e";
/// Number of slots (n = 0..SLOTS): keeps 200+n and 150+n inside an octet.
pub const SLOTS: u8 = 50;

/// One run's slot: names and address ranges, held until dropped.
///
/// The slot is held by an exclusive `flock` on `lan-<n>.lock`. A flock belongs to the open
/// file, so two tests in one process cannot both take a slot, and a crashed run releases it
/// without anyone having to judge whether a PID is still alive. The lock file is never
/// removed (removing it would let a second opener lock a different inode).
#[derive(Debug)]
pub struct Slot {
    /// Slot number.
    pub n: u8,
    /// Prefix of every name the run creates (`k8e<nn>`).
    pub prefix: String,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Slot {
    /// Take the first free slot whose ranges the root netns does not use. What a crashed
    /// earlier holder of the slot left behind (netns, links) is removed first.
    pub fn acquire() -> anyhow::Result<Self> {
        use std::io::Write;
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let used = String::from_utf8_lossy(&run("ip", &["-4", "-o", "addr"])?.stdout).to_string()
            + &String::from_utf8_lossy(&run("ip", &["-4", "route"])?.stdout);
        for n in 0..SLOTS {
            let prefix = format!("k8e{n:02}");
            let path = PathBuf::from(format!("{LOCK_DIR}/lan-{n}.lock"));
            let Some(mut lock) = try_flock(&path)? else {
                continue;
            };
            // Held by nobody alive: whatever carries the prefix is a crashed run's.
            reclaim(&prefix);
            if used.contains(&format!("10.250.{n}."))
                || used.contains(&format!("10.{}.", 200 + u16::from(n)))
                || used.contains(&format!("10.{}.", 150 + u16::from(n)))
            {
                continue;
            }
            // The owner's PID, for people looking at the directory.
            lock.set_len(0)
                .and_then(|()| write!(lock, "{}", std::process::id()))
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(Self {
                n,
                prefix,
                _lock: lock,
            });
        }
        bail!("no free e2e network slot (all {SLOTS} locks under {LOCK_DIR} are held)")
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        format!("{}-lan", self.prefix)
    }

    /// The bridge's address (the nodes' default gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.n, 1)
    }

    /// Address of the `i`-th node (0-based).
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.n, 10 + i as u8)
    }

    /// The run's pod network (`--cluster-cidr`).
    pub fn cluster_cidr(&self) -> String {
        format!("10.{}.0.0/16", 200 + u16::from(self.n))
    }

    /// The run's service range (`--service-cidr`).
    pub fn service_cidr(&self) -> String {
        format!("10.{}.0.0/16", 150 + u16::from(self.n))
    }

    /// The run's cluster DNS address (`--cluster-dns`).
    pub fn cluster_dns(&self) -> String {
        format!("10.{}.0.10", 150 + u16::from(self.n))
    }
}

/// Remove network leftovers of a crashed run with `prefix` (its netns and links).
fn reclaim(prefix: &str) {
    for ns in netns_with_prefix(prefix) {
        run_quiet("ip", &["netns", "del", &ns]);
    }
    for l in links_with_prefix(prefix) {
        run_quiet("ip", &["link", "del", &l]);
    }
}

/// Named network namespaces starting with `prefix-`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let out = run("ip", &["netns", "list"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

/// Links in the root netns whose name starts with `prefix-`.
pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    let out = run("ip", &["-o", "link"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect()
}

/// Create the bridge (idempotent only in the sense that a failure names the step).
pub fn create_bridge(slot: &Slot) -> anyhow::Result<()> {
    let br = slot.bridge();
    run("ip", &["link", "add", &br, "type", "bridge"])?;
    run(
        "ip",
        &["addr", "add", &format!("{}/24", slot.gateway()), "dev", &br],
    )?;
    run("ip", &["link", "set", &br, "up"])?;
    Ok(())
}

/// Create netns `ns` with eth0 = `ip`/24 attached to the bridge through host veth `veth`,
/// loopback up, default route via the bridge, ip_forward=1 inside.
pub fn create_node_netns(slot: &Slot, ns: &str, veth: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
    run("ip", &["netns", "add", ns])?;
    run(
        "ip",
        &[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    run("ip", &["link", "set", veth, "master", &slot.bridge(), "up"])?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    run(
        "ip",
        &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
    )?;
    run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
    run(
        "ip",
        &[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &slot.gateway().to_string(),
        ],
    )?;
    // A new netns copies the root netns' current ip_forward; set it explicitly. /proc/sys/net
    // follows the writer's netns, hence nsenter.
    let st = nsenter_cmd(
        &netns_path(ns),
        &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
    )
    .status()
    .context("nsenter to set ip_forward")?;
    if !st.success() {
        bail!("setting ip_forward=1 in netns {ns} failed ({st})");
    }
    Ok(())
}

/// `/run/netns/<ns>`.
pub fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Delete a node's veth (both ends) and netns; errors are ignored (cleanup).
pub fn delete_node_netns(ns: &str, veth: &str) {
    run_quiet("ip", &["link", "del", veth]);
    run_quiet("ip", &["netns", "del", ns]);
}

/// Delete the bridge; errors are ignored (cleanup).
pub fn delete_bridge(slot: &Slot) {
    run_quiet("ip", &["link", "del", &slot.bridge()]);
}

/// Default number of e2e clusters with running processes at once on one machine.
pub const DEFAULT_PARALLEL: usize = 3;

/// Permission to run one cluster's processes: an exclusive `flock` on one of
/// `run-<i>.lock` under [`LOCK_DIR`], `i < K8SLITE_E2E_PARALLEL` (default
/// [`DEFAULT_PARALLEL`]). Tests of one binary run in parallel threads, and every cluster starts a
/// server, containerd and agents: on a 2-core machine a dozen at once starve each other until
/// waits time out. Held until dropped; a crashed holder releases it.
#[derive(Debug)]
pub struct RunPermit {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl RunPermit {
    /// Wait for a free permit.
    pub fn acquire() -> anyhow::Result<Self> {
        let limit = std::env::var("K8SLITE_E2E_PARALLEL")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_PARALLEL);
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        loop {
            for i in 0..limit {
                let path = PathBuf::from(format!("{LOCK_DIR}/run-{i}.lock"));
                if let Some(lock) = try_flock(&path)? {
                    return Ok(Self { _lock: lock });
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
}

/// An exclusive `flock` on `path` (created if missing), or None while someone else holds it.
fn try_flock(path: &Path) -> anyhow::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    use nix::fcntl::{Flock, FlockArg};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(Flock::lock(file, FlockArg::LockExclusiveNonblock).ok())
}
