//! Applying rendered rules: the [`RuleBackend`] seam, the real [`IptablesBackend`] and the
//! [`RecordingBackend`] fake.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::chains::{self, JUMPS};
use super::{ProxyError, Result};

/// Applies the proxy's rules to the host.
pub trait RuleBackend: Send + Sync {
    /// Apply `rules` (an `iptables-restore --noflush` text) in one transaction.
    fn restore(&self, rules: &str) -> Result<()>;
    /// Ensure the jumps from the built-in chains (nat PREROUTING/OUTPUT/POSTROUTING, filter
    /// INPUT/FORWARD/OUTPUT, raw PREROUTING/OUTPUT) to our top chains, once each, first in
    /// their chain (check, then insert). The chains must exist (restore first).
    fn ensure_jumps(&self, prefix: &str) -> Result<()>;
    /// Remove the jumps and every chain of ours under `prefix`.
    fn cleanup(&self, prefix: &str) -> Result<()>;
    /// The per-service nat chains of ours present on the host (to delete leftovers of a
    /// previous run in the first sync). The default lists none.
    fn list_chains(&self, prefix: &str) -> Result<BTreeSet<String>> {
        let _ = prefix;
        Ok(BTreeSet::new())
    }
}

impl<T: RuleBackend + ?Sized> RuleBackend for Arc<T> {
    fn restore(&self, rules: &str) -> Result<()> {
        (**self).restore(rules)
    }
    fn ensure_jumps(&self, prefix: &str) -> Result<()> {
        (**self).ensure_jumps(prefix)
    }
    fn cleanup(&self, prefix: &str) -> Result<()> {
        (**self).cleanup(prefix)
    }
    fn list_chains(&self, prefix: &str) -> Result<BTreeSet<String>> {
        (**self).list_chains(prefix)
    }
}

/// `iptables`, `iptables-restore` and `iptables-save` (siblings of the given `iptables`: the
/// agent's host preparation may have made a symlink dir, see [`crate::host`]).
#[derive(Clone, Debug)]
pub struct IptablesBackend {
    iptables: PathBuf,
    restore: PathBuf,
    save: PathBuf,
    netns: Option<PathBuf>,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl IptablesBackend {
    /// The backend of `iptables` (e.g. `/usr/sbin/iptables`, `/run/k8slite/bin/iptables`,
    /// `ip6tables`); `<name>-restore`/`<name>-save` next to it are used.
    pub fn new(iptables: PathBuf) -> Self {
        let sibling = |suffix: &str| {
            let name = iptables
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "iptables".into());
            iptables.with_file_name(format!("{name}-{suffix}"))
        };
        Self {
            restore: sibling("restore"),
            save: sibling("save"),
            iptables,
            netns: None,
        }
    }

    /// Run every command in the network namespace `netns` (a `/run/netns/<name>` path) through
    /// `nsenter --net=` (tests).
    pub fn in_netns(mut self, netns: impl Into<PathBuf>) -> Self {
        self.netns = Some(netns.into());
        self
    }

    fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn run(&self, program: &Path, args: &[&str], stdin: Option<&str>) -> Result<Out> {
        let what = || format!("{} {}", program.display(), args.join(" "));
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| ProxyError::Spawn {
            what: what(),
            source,
        })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error (the program exited early) shows in its status and stderr.
            let _ = pipe.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ProxyError::Spawn {
                what: what(),
                source,
            })?;
        Ok(Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn restore_text(&self, rules: &str) -> Result<()> {
        let out = self.run(&self.restore, &["-w", "--noflush"], Some(rules))?;
        if out.ok {
            return Ok(());
        }
        let mut stderr = out.stderr.trim().to_string();
        // "line N failed": show that line.
        if let Some(n) = failed_line(&stderr)
            && let Some(line) = rules.lines().nth(n.saturating_sub(1))
        {
            stderr.push_str(&format!(" (line {n}: {line})"));
        }
        Err(ProxyError::Command {
            what: format!("{} -w --noflush", self.restore.display()),
            stderr,
        })
    }

    fn jump_args<'a>(j: &'a chains::Jump, target: &'a str) -> [&'a str; 9] {
        [
            "-w",
            "-t",
            j.table,
            "-m",
            "comment",
            "--comment",
            j.comment,
            "-j",
            target,
        ]
    }

    fn jump(&self, op: &str, j: &chains::Jump, target: &str, insert: bool) -> Result<Out> {
        let base = Self::jump_args(j, target);
        let mut args: Vec<&str> = Vec::with_capacity(12);
        args.extend_from_slice(&base[..3]);
        args.push(op);
        args.push(j.builtin);
        if insert {
            args.push("1");
        }
        args.extend_from_slice(&base[3..]);
        self.run(&self.iptables, &args, None)
    }

    fn chains_of(&self, table: &str, prefix: &str) -> Result<Vec<String>> {
        let out = self.run(&self.save, &["-t", table], None)?;
        if !out.ok {
            return Err(ProxyError::Command {
                what: format!("{} -t {table}", self.save.display()),
                stderr: out.stderr.trim().into(),
            });
        }
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| chains::is_ours(prefix, table, c))
            .map(str::to_string)
            .collect())
    }
}

impl RuleBackend for IptablesBackend {
    fn restore(&self, rules: &str) -> Result<()> {
        self.restore_text(rules)
    }

    fn ensure_jumps(&self, prefix: &str) -> Result<()> {
        for j in &JUMPS {
            let target = format!("{prefix}-{}", j.target);
            let check = self.jump("-C", j, &target, false)?;
            if check.ok {
                continue;
            }
            let ins = self.jump("-I", j, &target, true)?;
            if !ins.ok {
                return Err(ProxyError::Command {
                    what: format!(
                        "{} -t {} -I {} 1 -j {target}",
                        self.iptables.display(),
                        j.table,
                        j.builtin
                    ),
                    stderr: ins.stderr.trim().into(),
                });
            }
            tracing::debug!(table = j.table, chain = j.builtin, %target, "inserted jump");
        }
        Ok(())
    }

    fn cleanup(&self, prefix: &str) -> Result<()> {
        for j in &JUMPS {
            let target = format!("{prefix}-{}", j.target);
            // Delete every copy; stop at the first failure (none left or no chain).
            for _ in 0..16 {
                let out = self.jump("-D", j, &target, false)?;
                if !out.ok {
                    break;
                }
            }
        }
        let mut text = String::new();
        for table in ["raw", "filter", "nat"] {
            let found = self.chains_of(table, prefix)?;
            if found.is_empty() {
                continue;
            }
            text.push('*');
            text.push_str(table);
            text.push('\n');
            for c in &found {
                text.push_str(&format!(":{c} - [0:0]\n"));
            }
            for c in &found {
                text.push_str(&format!("-X {c}\n"));
            }
            text.push_str("COMMIT\n");
        }
        if text.is_empty() {
            return Ok(());
        }
        self.restore_text(&text)
    }

    fn list_chains(&self, prefix: &str) -> Result<BTreeSet<String>> {
        let top: BTreeSet<String> = chains::NAT_TOP
            .iter()
            .map(|c| format!("{prefix}-{c}"))
            .collect();
        Ok(self
            .chains_of("nat", prefix)?
            .into_iter()
            .filter(|c| !top.contains(c))
            .collect())
    }
}

/// The line number in iptables-restore's "Error occurred at line: N" / "line N failed".
fn failed_line(stderr: &str) -> Option<usize> {
    let rest = &stderr[stderr.find("line")? + 4..];
    let digits: String = rest
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What [`RecordingBackend`] saw.
#[derive(Debug, Default)]
struct Recorded {
    restores: Vec<String>,
    jumps: Vec<String>,
    cleanups: Vec<String>,
    fail_containing: Option<String>,
    host_chains: BTreeSet<String>,
}

/// A backend for unit tests: records restores, jump ensures and cleanups (clones share the
/// record).
#[derive(Clone, Debug, Default)]
pub struct RecordingBackend {
    inner: Arc<Mutex<Recorded>>,
}

impl RecordingBackend {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The texts restored so far.
    pub fn restores(&self) -> Vec<String> {
        self.lock().restores.clone()
    }

    /// The prefixes `ensure_jumps` was called with, in order.
    pub fn jumps(&self) -> Vec<String> {
        self.lock().jumps.clone()
    }

    /// The prefixes `cleanup` was called with.
    pub fn cleanups(&self) -> Vec<String> {
        self.lock().cleanups.clone()
    }

    /// Make restores whose text contains `needle` fail (None: succeed again).
    pub fn fail_restores_containing(&self, needle: Option<&str>) {
        self.lock().fail_containing = needle.map(str::to_string);
    }

    /// Chains `list_chains` reports (leftovers of a previous run).
    pub fn set_host_chains(&self, chains: BTreeSet<String>) {
        self.lock().host_chains = chains;
    }
}

impl RuleBackend for RecordingBackend {
    fn restore(&self, rules: &str) -> Result<()> {
        let mut r = self.lock();
        if let Some(n) = &r.fail_containing
            && rules.contains(n.as_str())
        {
            return Err(ProxyError::Command {
                what: "iptables-restore -w --noflush".into(),
                stderr: format!("refused (text contains {n:?})"),
            });
        }
        r.restores.push(rules.to_string());
        Ok(())
    }

    fn ensure_jumps(&self, prefix: &str) -> Result<()> {
        self.lock().jumps.push(prefix.into());
        Ok(())
    }

    fn cleanup(&self, prefix: &str) -> Result<()> {
        self.lock().cleanups.push(prefix.into());
        Ok(())
    }

    fn list_chains(&self, _prefix: &str) -> Result<BTreeSet<String>> {
        Ok(self.lock().host_chains.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_siblings_of_the_given_iptables() {
        let b = IptablesBackend::new("/run/k8slite/bin/iptables".into());
        assert_eq!(b.restore, Path::new("/run/k8slite/bin/iptables-restore"));
        assert_eq!(b.save, Path::new("/run/k8slite/bin/iptables-save"));
        let b = IptablesBackend::new("/usr/sbin/ip6tables".into()).in_netns("/run/netns/x");
        assert_eq!(b.restore, Path::new("/usr/sbin/ip6tables-restore"));
        let c = b.command(&b.restore);
        assert_eq!(c.get_program(), "nsenter");
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(
            args,
            ["--net=/run/netns/x", "--", "/usr/sbin/ip6tables-restore"]
        );
    }

    #[test]
    fn failed_line_is_found() {
        assert_eq!(
            super::failed_line("x\nError occurred at line: 66\nTry"),
            Some(66)
        );
        assert_eq!(
            super::failed_line("iptables-restore: line 7 failed"),
            Some(7)
        );
        assert_eq!(super::failed_line("nothing"), None);
    }
}
