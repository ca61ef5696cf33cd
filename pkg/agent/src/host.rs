//! What the node reports about its host: capacity (CPU, memory, ephemeral storage, pods),
//! kernel/OS facts for nodeInfo, and the pressure conditions.
//!
//! Everything is read through a [`HostReader`] (files under /proc, /sys, /etc and `statvfs`),
//! so unit tests use fixed contents ([`FakeHost`]). Thresholds follow the kubelet's defaults:
//! memory pressure when `MemAvailable` < 100Mi (also the reserve subtracted from allocatable
//! memory, k3s' and the kubelet's hard eviction threshold), disk pressure when less than 10 %
//! of the data dir's filesystem is free (allocatable ephemeral storage is capacity minus 10 %),
//! PID pressure when more than 90 % of `kernel.pid_max` is in use.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Memory kept out of allocatable and the memory-pressure threshold: 100Mi.
pub const MEMORY_RESERVE_BYTES: u64 = 100 * 1024 * 1024;
/// Disk pressure below this share of free space on the data dir's filesystem (percent).
pub const DISK_FREE_MIN_PERCENT: u64 = 10;
/// PID pressure above this share of `kernel.pid_max` in use (percent).
pub const PID_USED_MAX_PERCENT: u64 = 90;

/// Size and free space of a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    /// Total bytes.
    pub total_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
}

/// Reads the host: files (whole, as text) and filesystem statistics. `None` when unavailable.
pub trait HostReader: Send + Sync + std::fmt::Debug {
    /// The contents of `path`.
    fn read(&self, path: &str) -> Option<String>;
    /// `statvfs(path)`.
    fn statvfs(&self, path: &Path) -> Option<FsStats>;
}

/// The real host.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealHost;

impl HostReader for RealHost {
    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    // c_ulong and fsblkcnt_t are u32 on 32-bit targets (armv7 boards).
    #[allow(clippy::useless_conversion)]
    fn statvfs(&self, path: &Path) -> Option<FsStats> {
        let s = nix::sys::statvfs::statvfs(path).ok()?;
        let unit = u64::from(s.fragment_size()).max(1);
        Some(FsStats {
            total_bytes: u64::from(s.blocks()).saturating_mul(unit),
            available_bytes: u64::from(s.blocks_available()).saturating_mul(unit),
        })
    }
}

/// A host with fixed file contents and filesystem statistics, for tests.
#[derive(Clone, Debug, Default)]
pub struct FakeHost {
    /// File contents by path.
    pub files: HashMap<String, String>,
    /// What `statvfs` answers (for every path).
    pub fs: Option<FsStats>,
}

impl FakeHost {
    /// Set the contents of `path`.
    pub fn with(mut self, path: &str, contents: &str) -> Self {
        self.files.insert(path.to_string(), contents.to_string());
        self
    }
}

impl HostReader for FakeHost {
    fn read(&self, path: &str) -> Option<String> {
        self.files.get(path).cloned()
    }

    fn statvfs(&self, _path: &Path) -> Option<FsStats> {
        self.fs
    }
}

/// Where node status comes from when it is the real host (not a simulated node), and which
/// values flags override.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The host.
    pub reader: Arc<dyn HostReader>,
    /// The data dir: its filesystem is the node's ephemeral storage.
    pub data_dir: PathBuf,
    /// CPU capacity instead of the online CPUs (`--node-cpu`).
    pub cpu: Option<String>,
    /// Memory capacity instead of MemTotal (`--node-memory`).
    pub memory: Option<String>,
    /// Ephemeral-storage capacity instead of the data dir's filesystem size.
    pub ephemeral_storage: Option<String>,
}

impl HostConfig {
    /// The real host with `data_dir`, no overrides.
    pub fn real(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            reader: Arc::new(RealHost),
            data_dir: data_dir.into(),
            cpu: None,
            memory: None,
            ephemeral_storage: None,
        }
    }
}

/// Facts about the host that do not change while the agent runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel_version: String,
    /// PRETTY_NAME of os-release.
    pub os_image: String,
    /// /etc/machine-id.
    pub machine_id: String,
    /// DMI product UUID (empty when unreadable).
    pub system_uuid: String,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
}

fn trimmed(r: &dyn HostReader, paths: &[&str]) -> String {
    paths
        .iter()
        .find_map(|p| {
            r.read(p)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_default()
}

/// PRETTY_NAME from os-release contents (quotes removed), if present.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.trim().strip_prefix("PRETTY_NAME=")?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        Some(v.to_string())
    })
}

/// Read the [`HostFacts`].
pub fn facts(r: &dyn HostReader) -> HostFacts {
    let os_image = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| r.read(p).as_deref().and_then(pretty_name))
        .unwrap_or_else(|| "Linux".into());
    HostFacts {
        kernel_version: trimmed(r, &["/proc/sys/kernel/osrelease"]),
        os_image,
        machine_id: trimmed(r, &["/etc/machine-id", "/var/lib/dbus/machine-id"]),
        system_uuid: trimmed(r, &["/sys/class/dmi/id/product_uuid"]).to_ascii_lowercase(),
        boot_id: trimmed(r, &["/proc/sys/kernel/random/boot_id"]),
    }
}

/// Number of CPUs in a list like `0-3,6,8-9` (/sys/devices/system/cpu/online).
pub fn count_cpu_list(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                n = n.checked_add(1)?;
            }
        }
    }
    (n > 0).then_some(n)
}

/// Online CPUs: /sys/devices/system/cpu/online, else `processor` lines of /proc/cpuinfo.
pub fn online_cpus(r: &dyn HostReader) -> Option<u32> {
    r.read("/sys/devices/system/cpu/online")
        .as_deref()
        .and_then(count_cpu_list)
        .or_else(|| {
            let n = r
                .read("/proc/cpuinfo")?
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count();
            u32::try_from(n).ok().filter(|n| *n > 0)
        })
}

/// A `/proc/meminfo` field in bytes (`MemTotal`, `MemAvailable`).
pub fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        Some(match it.next() {
            Some("kB") => n.saturating_mul(1024),
            _ => n,
        })
    })
}

/// Processes/threads in use (the total of /proc/loadavg's `running/total` field).
fn pids_in_use(r: &dyn HostReader) -> Option<u64> {
    let s = r.read("/proc/loadavg")?;
    let field = s.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

/// One reading of the host: capacity, allocatable and pressure.
#[derive(Clone, Debug, PartialEq)]
pub struct HostSample {
    /// `status.capacity`.
    pub capacity: BTreeMap<String, Quantity>,
    /// `status.allocatable`.
    pub allocatable: BTreeMap<String, Quantity>,
    /// MemAvailable below [`MEMORY_RESERVE_BYTES`].
    pub memory_pressure: bool,
    /// Less than [`DISK_FREE_MIN_PERCENT`] free on the data dir's filesystem.
    pub disk_pressure: bool,
    /// More than [`PID_USED_MAX_PERCENT`] of pid_max in use.
    pub pid_pressure: bool,
}

/// Read capacity, allocatable and pressure from the host (`max_pods` is the pods capacity).
pub fn sample(cfg: &HostConfig, max_pods: u32) -> HostSample {
    let r = cfg.reader.as_ref();
    let q = |s: String| Quantity(s);
    let meminfo = r.read("/proc/meminfo").unwrap_or_default();
    let fs = r.statvfs(&cfg.data_dir);

    let cpu = match &cfg.cpu {
        Some(c) => c.clone(),
        None => online_cpus(r).unwrap_or(1).to_string(),
    };
    let (memory, memory_alloc) = match &cfg.memory {
        Some(m) => (m.clone(), m.clone()),
        None => {
            let total = meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0);
            let alloc = total.saturating_sub(MEMORY_RESERVE_BYTES);
            (format!("{}Ki", total / 1024), format!("{}Ki", alloc / 1024))
        }
    };
    let (storage, storage_alloc) = match (&cfg.ephemeral_storage, fs) {
        (Some(s), _) => (s.clone(), s.clone()),
        (None, Some(fs)) => {
            let reserve = fs.total_bytes / 100 * DISK_FREE_MIN_PERCENT;
            (
                format!("{}Ki", fs.total_bytes / 1024),
                fs.total_bytes.saturating_sub(reserve).to_string(),
            )
        }
        (None, None) => ("0".into(), "0".into()),
    };
    let capacity = BTreeMap::from([
        ("cpu".to_string(), q(cpu)),
        ("ephemeral-storage".to_string(), q(storage)),
        ("hugepages-1Gi".to_string(), q("0".into())),
        ("hugepages-2Mi".to_string(), q("0".into())),
        ("memory".to_string(), q(memory)),
        ("pods".to_string(), q(max_pods.to_string())),
    ]);
    let mut allocatable = capacity.clone();
    allocatable.insert("memory".into(), q(memory_alloc));
    allocatable.insert("ephemeral-storage".into(), q(storage_alloc));

    let memory_pressure =
        meminfo_bytes(&meminfo, "MemAvailable").is_some_and(|avail| avail < MEMORY_RESERVE_BYTES);
    let disk_pressure = fs.is_some_and(|fs| {
        fs.total_bytes > 0
            && fs.available_bytes.saturating_mul(100) < fs.total_bytes * DISK_FREE_MIN_PERCENT
    });
    let pid_max = r
        .read("/proc/sys/kernel/pid_max")
        .and_then(|s| s.trim().parse::<u64>().ok());
    let pid_pressure = match (pids_in_use(r), pid_max) {
        (Some(used), Some(max)) if max > 0 => {
            used.saturating_mul(100) > max.saturating_mul(PID_USED_MAX_PERCENT)
        }
        _ => false,
    };
    HostSample {
        capacity,
        allocatable,
        memory_pressure,
        disk_pressure,
        pid_pressure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str =
        "MemTotal:        8141348 kB\nMemFree:          123456 kB\nMemAvailable:    4000000 kB\n";

    fn host() -> FakeHost {
        FakeHost::default()
            .with("/sys/devices/system/cpu/online", "0-3\n")
            .with("/proc/meminfo", MEMINFO)
            .with("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")
            .with(
                "/etc/os-release",
                "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
            )
            .with("/etc/machine-id", "0123456789abcdef0123456789abcdef\n")
            .with(
                "/sys/class/dmi/id/product_uuid",
                "EC2A0B1C-1111-2222-3333-444455556666\n",
            )
            .with(
                "/proc/sys/kernel/random/boot_id",
                "d3a8f8e2-5f0a-4c3b-9d7e-0123456789ab\n",
            )
            .with("/proc/loadavg", "0.10 0.20 0.30 2/345 6789\n")
            .with("/proc/sys/kernel/pid_max", "4194304\n")
    }

    fn cfg(h: FakeHost) -> HostConfig {
        HostConfig {
            reader: Arc::new(h),
            data_dir: "/var/lib/k8slite".into(),
            cpu: None,
            memory: None,
            ephemeral_storage: None,
        }
    }

    const GI: u64 = 1024 * 1024 * 1024;

    #[test]
    fn capacity_and_allocatable_from_the_host() {
        let mut h = host();
        h.fs = Some(FsStats {
            total_bytes: 100 * GI,
            available_bytes: 50 * GI,
        });
        let s = sample(&cfg(h), 110);
        let get = |m: &BTreeMap<String, Quantity>, k: &str| m[k].0.clone();
        assert_eq!(get(&s.capacity, "cpu"), "4");
        assert_eq!(get(&s.capacity, "memory"), "8141348Ki");
        assert_eq!(get(&s.allocatable, "memory"), "8038948Ki");
        assert_eq!(get(&s.capacity, "ephemeral-storage"), "104857600Ki");
        assert_eq!(get(&s.allocatable, "ephemeral-storage"), "96636764160");
        assert_eq!(get(&s.capacity, "pods"), "110");
        assert_eq!(get(&s.capacity, "hugepages-2Mi"), "0");
        assert_eq!(get(&s.allocatable, "cpu"), "4");
        assert!(!s.memory_pressure && !s.disk_pressure && !s.pid_pressure);
    }

    #[test]
    fn flags_override_the_host() {
        let mut c = cfg(host());
        c.cpu = Some("2".into());
        c.memory = Some("1Gi".into());
        c.ephemeral_storage = Some("20Gi".into());
        let s = sample(&c, 50);
        assert_eq!(s.capacity["cpu"].0, "2");
        assert_eq!(s.capacity["memory"].0, "1Gi");
        assert_eq!(s.allocatable["memory"].0, "1Gi");
        assert_eq!(s.allocatable["ephemeral-storage"].0, "20Gi");
        assert_eq!(s.capacity["pods"].0, "50");
    }

    #[test]
    fn pressure_conditions() {
        let mut h = host()
            .with(
                "/proc/meminfo",
                "MemTotal: 1000000 kB\nMemAvailable: 90000 kB\n",
            )
            .with("/proc/loadavg", "0 0 0 1/950 1\n")
            .with("/proc/sys/kernel/pid_max", "1000\n");
        h.fs = Some(FsStats {
            total_bytes: 100 * GI,
            available_bytes: 9 * GI,
        });
        let s = sample(&cfg(h.clone()), 110);
        assert!(s.memory_pressure && s.disk_pressure && s.pid_pressure);
        h.fs = Some(FsStats {
            total_bytes: 100 * GI,
            available_bytes: 11 * GI,
        });
        let h = h.with("/proc/sys/kernel/pid_max", "32768\n");
        let s = sample(&cfg(h), 110);
        assert!(s.memory_pressure && !s.disk_pressure && !s.pid_pressure);
    }

    #[test]
    fn facts_from_files() {
        let f = facts(&host());
        assert_eq!(f.kernel_version, "6.1.0-18-amd64");
        assert_eq!(f.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f.machine_id, "0123456789abcdef0123456789abcdef");
        assert_eq!(f.system_uuid, "ec2a0b1c-1111-2222-3333-444455556666");
        assert_eq!(f.boot_id, "d3a8f8e2-5f0a-4c3b-9d7e-0123456789ab");
        let bare = facts(&FakeHost::default());
        assert_eq!(bare.os_image, "Linux");
        assert_eq!(bare.machine_id, "");
    }

    #[test]
    fn cpu_lists_and_meminfo() {
        assert_eq!(count_cpu_list("0-3,6,8-9\n"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        let h = FakeHost::default().with("/proc/cpuinfo", "processor\t: 0\nx\nprocessor\t: 1\n");
        assert_eq!(online_cpus(&h), Some(2));
        assert_eq!(meminfo_bytes(MEMINFO, "MemTotal"), Some(8_141_348 * 1024));
        assert_eq!(meminfo_bytes(MEMINFO, "Mem"), None);
        assert_eq!(
            pretty_name("PRETTY_NAME='Alpine Linux v3.19'"),
            Some("Alpine Linux v3.19".into())
        );
    }

    #[test]
    fn the_real_host_answers() {
        let f = facts(&RealHost);
        assert!(!f.kernel_version.is_empty());
        let s = sample(&HostConfig::real(std::env::temp_dir()), 110);
        assert_ne!(s.capacity["memory"].0, "0Ki");
        assert_ne!(s.capacity["ephemeral-storage"].0, "0");
    }
}
