//! The proxier: render, apply once per sync (only the chains that changed, see
//! [`super::partial`]; skipped when nothing changed), ensure the jumps, delete stale UDP
//! conntrack entries against the previous model.
//!
//! A sync is full (every chain of ours declared and refilled) the first time, after a failed
//! restore, after a configuration change, and at least every [`FULL_SYNC_EVERY`] (repairs
//! chains someone else changed); otherwise it is partial.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::objects::{ServiceInfo, SliceInfo, compact};

use super::partial::{Parsed, Snapshot};
use super::render::{UdpKey, UdpState, render_with};
use super::{Conntrack, ConntrackFilter, ProxyConfig, Result, RuleBackend, SyncReport};

/// How long ensured jumps are trusted before a sync checks them again (a firewall reload may
/// have removed them).
const JUMP_RECHECK: Duration = Duration::from_secs(30);

/// Longest time between two full syncs (kube-proxy uses an hour; our rule sets are smaller).
pub const FULL_SYNC_EVERY: Duration = Duration::from_secs(600);

/// The service proxy of one node. See the module documentation.
pub struct Proxier<B: RuleBackend, C: Conntrack> {
    cfg: ProxyConfig,
    backend: B,
    conntrack: C,
    /// What the host holds after the last successful restore (None: the next sync is full).
    applied: Option<Snapshot>,
    /// When the last full restore succeeded.
    full_at: Option<Instant>,
    /// Longest time between full syncs.
    full_every: Duration,
    /// Per-service nat chains the host has (after the last restore).
    chains: BTreeSet<String>,
    /// Whether leftovers of a previous run were listed.
    listed: bool,
    /// UDP destinations and their endpoints after the last restore.
    udp: Option<UdpState>,
    jumps_at: Option<Instant>,
    /// Whether SCTP services are rendered (false once the host's iptables refused them).
    sctp: bool,
}

impl<B: RuleBackend, C: Conntrack> Proxier<B, C> {
    /// A proxier that has applied nothing yet.
    pub fn new(cfg: ProxyConfig, backend: B, conntrack: C) -> Self {
        Self {
            cfg,
            backend,
            conntrack,
            applied: None,
            full_at: None,
            full_every: FULL_SYNC_EVERY,
            chains: BTreeSet::new(),
            listed: false,
            udp: None,
            jumps_at: None,
            sctp: true,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The conntrack seam.
    pub fn conntrack(&self) -> &C {
        &self.conntrack
    }

    /// Longest time between two full syncs (default [`FULL_SYNC_EVERY`]; zero: every sync is
    /// full, as before partial restores).
    pub fn set_full_sync_every(&mut self, every: Duration) {
        self.full_every = every;
    }

    /// Make the next sync a full one.
    pub fn force_full_sync(&mut self) {
        self.applied = None;
    }

    /// Replace the configuration (node IPs, pod CIDR); the next sync applies it in full. A changed
    /// chain prefix starts over (the old prefix's chains are not removed: call
    /// [`Proxier::cleanup`] first).
    pub fn set_config(&mut self, cfg: ProxyConfig) {
        if cfg.chain_prefix != self.cfg.chain_prefix {
            self.applied = None;
            self.chains.clear();
            self.listed = false;
            self.jumps_at = None;
        }
        self.applied = None;
        self.cfg = cfg;
    }

    /// A full sync (blocking: run it from `spawn_blocking`). Problems of single services are
    /// in the report; an error means nothing was applied (or the jumps could not be ensured)
    /// and the next sync tries again.
    pub fn sync(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> Result<SyncReport> {
        self.sync_compact(&compact(services), &compact(slices))
    }

    /// [`Proxier::sync`] over the compact copies a watch cache keeps.
    pub fn sync_compact(
        &mut self,
        services: &[Arc<ServiceInfo>],
        slices: &[Arc<SliceInfo>],
    ) -> Result<SyncReport> {
        self.cfg.validate()?;
        let prefix = self.cfg.chain_prefix.clone();
        if !self.listed {
            self.chains = self.backend.list_chains(&prefix)?;
            self.listed = true;
        }
        let started = Instant::now();
        let mut r = render_with(&self.cfg, services, slices, &self.chains, self.sctp);
        let rendered_in = started.elapsed();
        let due = self.full_at.is_none_or(|t| t.elapsed() >= self.full_every);
        // The text to restore: the full one, or what changed since the last restore.
        let parsed = Parsed::new(&r.text);
        let (text, full) = match &self.applied {
            Some(prev) if !due => (Some(prev.diff(&parsed)), false),
            _ => (None, true),
        };
        let snap = parsed.snapshot();
        let changed = text.as_ref().is_none_or(|t| !t.is_empty());
        if changed {
            let input = text.as_deref().unwrap_or(&r.text);
            if let Err(e) = self.backend.restore(input) {
                // Whatever the host holds now, the next sync writes everything.
                self.applied = None;
                if !(r.uses_sctp && self.sctp) {
                    return Err(e);
                }
                // Perhaps the host cannot match SCTP: try without the SCTP services (full).
                let without = render_with(&self.cfg, services, slices, &self.chains, false);
                if self.backend.restore(&without.text).is_err() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "iptables refused the SCTP services; they are reported and skipped");
                self.sctp = false;
                r = without;
                self.applied = Some(Parsed::new(&r.text).snapshot());
                self.full_at = Some(Instant::now());
            } else {
                self.applied = Some(snap);
                if full {
                    self.full_at = Some(Instant::now());
                }
            }
            tracing::debug!(
                lines = r.rules,
                restored_bytes = text.as_ref().map_or(r.text.len(), String::len),
                full,
                services = r.services,
                render_ms = rendered_in.as_secs_f64() * 1e3,
                total_ms = started.elapsed().as_secs_f64() * 1e3,
                "applied service rules"
            );
            self.chains = std::mem::take(&mut r.chains);
        }
        // The restore never touches the built-in chains: the jumps are ensured at the first
        // sync (after the restore created the chains) and re-checked every 30 s.
        if self.jumps_at.is_none_or(|t| t.elapsed() >= JUMP_RECHECK) {
            self.jumps_at = None;
            self.backend.ensure_jumps(&prefix)?;
            self.jumps_at = Some(Instant::now());
        }
        if let Some(prev) = &self.udp {
            for f in stale_udp(prev, &r.udp) {
                if let Err(e) = self.conntrack.delete(&f) {
                    tracing::warn!(error = %e, filter = ?f, "deleting stale UDP conntrack entries");
                }
            }
        }
        self.udp = Some(std::mem::take(&mut r.udp));
        for p in &r.problems {
            tracing::debug!(namespace = %p.namespace, name = %p.name, reason = %p.reason, message = %p.message, "service problem");
        }
        Ok(SyncReport {
            problems: r.problems,
            services: r.services,
            rules: r.rules,
            health_checks: r.health_checks,
            applied: changed,
            full: changed && full,
        })
    }

    /// Remove the jumps and all chains of ours (uninstall, tests).
    pub fn cleanup(&mut self) -> Result<()> {
        self.backend.cleanup(&self.cfg.chain_prefix)?;
        self.applied = None;
        self.full_at = None;
        self.chains.clear();
        self.udp = None;
        self.jumps_at = None;
        Ok(())
    }
}

/// Conntrack deletions between two models: entries DNATed to endpoints that went away, and
/// entries to destinations that had no endpoints and now have some (they were created while
/// the traffic was not DNATed).
pub(crate) fn stale_udp(prev: &UdpState, now: &UdpState) -> BTreeSet<ConntrackFilter> {
    let mut out = BTreeSet::new();
    let by_key = |k: &UdpKey, ep: Option<std::net::IpAddr>| match *k {
        UdpKey::Ip(ip, port) => ConntrackFilter {
            orig_dst: Some(ip),
            orig_dport: Some(port),
            dst_nat: ep,
        },
        UdpKey::NodePort(port) => ConntrackFilter {
            orig_dst: None,
            orig_dport: Some(port),
            dst_nat: ep,
        },
    };
    for (k, old) in prev {
        let new = now.get(k);
        for ep in old {
            if !new.is_some_and(|n| n.contains(ep)) {
                out.insert(by_key(k, Some(*ep)));
            }
        }
    }
    for (k, new) in now {
        if !new.is_empty() && prev.get(k).is_none_or(|o| o.is_empty()) {
            out.insert(by_key(k, None));
        }
    }
    out
}
