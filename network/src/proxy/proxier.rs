//! The proxier: render, apply once per sync (skipped when unchanged), ensure the jumps, delete
//! stale UDP conntrack entries against the previous model.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::render::{UdpKey, UdpState, render_with};
use super::{Conntrack, ConntrackFilter, ProxyConfig, Result, RuleBackend, SyncReport};

/// How long ensured jumps are trusted before a sync checks them again (a firewall reload may
/// have removed them).
const JUMP_RECHECK: Duration = Duration::from_secs(30);

/// The service proxy of one node. See the module documentation.
pub struct Proxier<B: RuleBackend, C: Conntrack> {
    cfg: ProxyConfig,
    backend: B,
    conntrack: C,
    /// The text of the last successful restore.
    applied: Option<String>,
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

    /// Replace the configuration (node IPs, pod CIDR); the next sync applies it. A changed
    /// chain prefix starts over (the old prefix's chains are not removed: call
    /// [`Proxier::cleanup`] first).
    pub fn set_config(&mut self, cfg: ProxyConfig) {
        if cfg.chain_prefix != self.cfg.chain_prefix {
            self.applied = None;
            self.chains.clear();
            self.listed = false;
            self.jumps_at = None;
        }
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
        self.cfg.validate()?;
        let prefix = self.cfg.chain_prefix.clone();
        if !self.listed {
            self.chains = self.backend.list_chains(&prefix)?;
            self.listed = true;
        }
        let started = Instant::now();
        let mut r = render_with(&self.cfg, services, slices, &self.chains, self.sctp);
        let rendered_in = started.elapsed();
        let changed = self.applied.as_deref() != Some(r.text.as_str());
        if changed {
            if let Err(e) = self.backend.restore(&r.text) {
                if !(r.uses_sctp && self.sctp) {
                    return Err(e);
                }
                // Perhaps the host cannot match SCTP: try without the SCTP services.
                let without = render_with(&self.cfg, services, slices, &self.chains, false);
                if self.backend.restore(&without.text).is_err() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "iptables refused the SCTP services; they are reported and skipped");
                self.sctp = false;
                r = without;
            }
            tracing::debug!(
                lines = r.rules,
                services = r.services,
                render_ms = rendered_in.as_secs_f64() * 1e3,
                total_ms = started.elapsed().as_secs_f64() * 1e3,
                "applied service rules"
            );
            self.chains = std::mem::take(&mut r.chains);
            self.applied = Some(std::mem::take(&mut r.text));
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
        })
    }

    /// Remove the jumps and all chains of ours (uninstall, tests).
    pub fn cleanup(&mut self) -> Result<()> {
        self.backend.cleanup(&self.cfg.chain_prefix)?;
        self.applied = None;
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
