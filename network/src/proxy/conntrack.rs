//! Deleting stale UDP conntrack entries: the [`Conntrack`] seam, [`ConntrackTool`] (the
//! `conntrack` program of the conntrack package) and [`RecordingConntrack`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{ProxyError, Result};

/// Which conntrack entries to delete (all given fields must match; protocol UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConntrackFilter {
    /// Original destination address (`--orig-dst`).
    pub orig_dst: Option<IpAddr>,
    /// Original destination port (`--dport`).
    pub orig_dport: Option<u16>,
    /// The address the entry was DNATed to (`--dst-nat`).
    pub dst_nat: Option<IpAddr>,
}

impl ConntrackFilter {
    /// The `conntrack -D` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["-D".to_string(), "-p".into(), "udp".into()];
        if let Some(ip) = self.orig_dst {
            a.push("--orig-dst".into());
            a.push(ip.to_string());
        }
        if let Some(p) = self.orig_dport {
            a.push("--dport".into());
            a.push(p.to_string());
        }
        if let Some(ip) = self.dst_nat {
            a.push("--dst-nat".into());
            a.push(ip.to_string());
        }
        if self.orig_dst.is_some_and(|ip| ip.is_ipv6())
            || self.dst_nat.is_some_and(|ip| ip.is_ipv6())
        {
            a.push("-f".into());
            a.push("ipv6".into());
        }
        a
    }
}

/// Deletes conntrack entries.
pub trait Conntrack: Send + Sync {
    /// Delete the UDP entries matching `filter` (none matching is not an error).
    fn delete(&self, filter: &ConntrackFilter) -> Result<()>;
}

impl<T: Conntrack + ?Sized> Conntrack for Arc<T> {
    fn delete(&self, filter: &ConntrackFilter) -> Result<()> {
        (**self).delete(filter)
    }
}

/// The `conntrack` program (found on PATH, /usr/sbin or /sbin).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConntrackTool;

impl ConntrackTool {
    fn find() -> Option<PathBuf> {
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join("conntrack"))
            .find(|p| p.is_file())
    }
}

impl Conntrack for ConntrackTool {
    fn delete(&self, filter: &ConntrackFilter) -> Result<()> {
        let Some(bin) = Self::find() else {
            return Err(ProxyError::Prerequisite(
                "conntrack: not on PATH, /usr/sbin or /sbin; install the conntrack package (stale UDP service entries cannot be deleted)".into(),
            ));
        };
        let args = filter.args();
        let out = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ProxyError::Spawn {
                what: format!("{} {}", bin.display(), args.join(" ")),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // conntrack exits 1 when nothing matched ("0 flow entries have been deleted").
        if out.status.success() || stderr.contains("0 flow entries") {
            return Ok(());
        }
        Err(ProxyError::Command {
            what: format!("{} {}", bin.display(), args.join(" ")),
            stderr: stderr.trim().into(),
        })
    }
}

/// Records deletions (clones share the record).
#[derive(Clone, Debug, Default)]
pub struct RecordingConntrack {
    inner: Arc<Mutex<Vec<ConntrackFilter>>>,
}

impl RecordingConntrack {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The deletions so far.
    pub fn deleted(&self) -> Vec<ConntrackFilter> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forget the deletions so far.
    pub fn clear(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Conntrack for RecordingConntrack {
    fn delete(&self, filter: &ConntrackFilter) -> Result<()> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(*filter);
        Ok(())
    }
}
