//! [`Overlay`]: the VXLAN device / host-gw routes of one node, kept in step with the peers.

use std::collections::BTreeSet;

use super::diff::{SyncReport, host_net, sync_addresses, sync_fdb, sync_neighbours, sync_routes};
use super::nl::{FdbEntry, Link, LinkKind, MacAddr, Neighbour, Netlink, Route, VxlanSpec};
use super::{
    Backend, LocalOverlay, OverlayConfig, Peer, RTPROT_K8SLITE, Result, RoutesError,
    VXLAN_OVERHEAD_V4, VXLAN_OVERHEAD_V6,
};

/// MTU used for `none` when the node IP's link is not found.
const FALLBACK_MTU: u32 = 1500;

/// The cross-node pod network of this node.
pub struct Overlay<N: Netlink> {
    cfg: OverlayConfig,
    nl: N,
}

impl<N: Netlink> Overlay<N> {
    /// An overlay for `cfg` over `netlink`; nothing happens before [`Overlay::setup`].
    pub fn new(cfg: OverlayConfig, netlink: N) -> Self {
        Self { cfg, nl: netlink }
    }

    /// The configuration.
    pub fn config(&self) -> &OverlayConfig {
        &self.cfg
    }

    /// The netlink seam (tests look at the recording one).
    pub fn netlink(&self) -> &N {
        &self.nl
    }

    /// Prepare this node: for vxlan the device (kept when its VNI, port and local address are
    /// right, recreated otherwise), its MTU, up, its `<pod-cidr>.0` address and (when asked)
    /// checksum offload off; for host-gw the removal of a leftover VXLAN device. Returns the
    /// pod MTU and, for vxlan, the VTEP MAC and IP to publish. Idempotent.
    pub async fn setup(&mut self) -> Result<LocalOverlay> {
        match self.cfg.backend {
            Backend::None => {
                let mtu = match self.cfg.mtu {
                    Some(m) => m,
                    None => match self.parent_link().await {
                        Ok(l) => l.mtu,
                        Err(e) => {
                            tracing::warn!(error = %e, "MTU not detected, using {FALLBACK_MTU}");
                            FALLBACK_MTU
                        }
                    },
                };
                Ok(LocalOverlay {
                    mtu,
                    vtep_mac: None,
                    vtep_ip: None,
                })
            }
            Backend::HostGw => {
                let mtu = match self.cfg.mtu {
                    Some(m) => m,
                    None => self.parent_link().await?.mtu,
                };
                if let Some(l) = self.find_link(&self.cfg.vxlan_device).await?
                    && matches!(l.kind, LinkKind::Vxlan(_))
                {
                    tracing::info!(device = %l.name, "removing the VXLAN device (backend host-gw)");
                    self.nl.del_link(l.index).await?;
                }
                Ok(LocalOverlay {
                    mtu,
                    vtep_mac: None,
                    vtep_ip: None,
                })
            }
            Backend::Vxlan => self.setup_vxlan().await.map(|(local, _)| local),
        }
    }

    async fn setup_vxlan(&mut self) -> Result<(LocalOverlay, Link)> {
        let cfg = &self.cfg;
        let parent = self.parent_link().await?;
        let overhead = if cfg.node_ip.is_ipv4() {
            VXLAN_OVERHEAD_V4
        } else {
            VXLAN_OVERHEAD_V6
        };
        let mtu = match cfg.mtu {
            Some(m) => m,
            None => parent
                .mtu
                .checked_sub(overhead)
                .ok_or_else(|| RoutesError::Invalid {
                    what: format!("MTU {} of {}", parent.mtu, parent.name),
                    reason: format!("too small for VXLAN (overhead {overhead})"),
                })?,
        };
        let existing = self.find_link(&cfg.vxlan_device).await?;
        let keep = existing.as_ref().is_some_and(|l| match &l.kind {
            LinkKind::Vxlan(v) => {
                v.vni == cfg.vni
                    && v.port == cfg.vxlan_port
                    && v.local == Some(cfg.node_ip)
                    && !v.learning
            }
            _ => false,
        });
        if let Some(l) = &existing
            && !keep
        {
            tracing::info!(device = %l.name, kind = ?l.kind, "recreating the VXLAN device: wrong settings");
            self.nl.del_link(l.index).await?;
        }
        if !keep {
            self.nl
                .add_vxlan(&VxlanSpec {
                    name: cfg.vxlan_device.clone(),
                    vni: cfg.vni,
                    port: cfg.vxlan_port,
                    local: cfg.node_ip,
                    parent: parent.index,
                    mtu,
                })
                .await?;
        }
        let dev = self.require_link(&cfg.vxlan_device).await?;
        if !dev.up || dev.mtu != mtu {
            let set_mtu = (dev.mtu != mtu).then_some(mtu);
            self.nl.set_link_up(dev.index, set_mtu).await?;
        }
        if !cfg.tx_checksum_offload {
            self.nl
                .set_tx_checksum_offload(&cfg.vxlan_device, false)
                .await?;
        }
        let own = host_net(cfg.pod_cidr.network());
        sync_addresses(&self.nl, dev.index, own).await?;
        let dev = self.require_link(&cfg.vxlan_device).await?;
        let local = LocalOverlay {
            mtu,
            vtep_mac: dev.mac.map(|m| m.to_string()),
            vtep_ip: Some(cfg.node_ip),
        };
        tracing::info!(device = %dev.name, mtu, vtep_mac = ?local.vtep_mac, "VXLAN device ready");
        Ok((local, dev))
    }

    /// Bring routes (and for vxlan neighbours and FDB entries) in step with `peers`: what is
    /// missing or different is written, what belongs to no peer is deleted; what is right is
    /// left alone. A vxlan peer without a VTEP MAC is skipped (listed in the report).
    pub async fn sync(&mut self, peers: &[Peer]) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let peers = self.usable_peers(peers, &mut report);
        match self.cfg.backend {
            Backend::None => {}
            Backend::HostGw => {
                let want: Vec<Route> = peers
                    .iter()
                    .map(|(p, _)| Route {
                        dst: p.pod_cidr,
                        gateway: Some(p.node_ip),
                        oif: None,
                        onlink: false,
                        protocol: RTPROT_K8SLITE,
                    })
                    .collect();
                sync_routes(&self.nl, &want, &mut report).await?;
            }
            Backend::Vxlan => {
                let dev = match self.find_link(&self.cfg.vxlan_device).await? {
                    Some(l) if matches!(l.kind, LinkKind::Vxlan(_)) => l,
                    _ => {
                        tracing::warn!(device = %self.cfg.vxlan_device, "VXLAN device missing; creating it again");
                        let (local, dev) = self.setup_vxlan().await?;
                        report.recreated = Some(local);
                        dev
                    }
                };
                let mut routes = Vec::new();
                let mut neighs = Vec::new();
                let mut fdb = Vec::new();
                for (p, mac) in &peers {
                    let Some(mac) = mac else { continue };
                    let gw = p.pod_cidr.network();
                    routes.push(Route {
                        dst: p.pod_cidr,
                        gateway: Some(gw),
                        oif: Some(dev.index),
                        onlink: true,
                        protocol: RTPROT_K8SLITE,
                    });
                    neighs.push(Neighbour {
                        index: dev.index,
                        ip: gw,
                        mac: *mac,
                        permanent: true,
                    });
                    fdb.push(FdbEntry {
                        index: dev.index,
                        mac: *mac,
                        dst: p.node_ip,
                    });
                }
                // FDB and neighbour before the route: the first packet finds its way.
                sync_fdb(&self.nl, dev.index, &fdb, &mut report).await?;
                sync_neighbours(
                    &self.nl,
                    self.cfg.cluster_cidr,
                    dev.index,
                    &neighs,
                    &mut report,
                )
                .await?;
                sync_routes(&self.nl, &routes, &mut report).await?;
            }
        }
        if !report.is_noop() || !report.skipped.is_empty() || !report.failed.is_empty() {
            tracing::info!(
                backend = %self.cfg.backend,
                added = report.added,
                removed = report.removed,
                skipped = ?report.skipped,
                failed = report.failed.len(),
                "pod network routes synced"
            );
        }
        Ok(report)
    }

    /// Remove what k8slite installed: the VXLAN device (with its neighbours, FDB entries and
    /// routes) and every route of protocol [`RTPROT_K8SLITE`].
    pub async fn teardown(&mut self) -> Result<()> {
        if let Some(l) = self.find_link(&self.cfg.vxlan_device).await?
            && matches!(l.kind, LinkKind::Vxlan(_))
        {
            self.nl.del_link(l.index).await?;
        }
        for r in self.nl.routes().await? {
            if r.protocol == RTPROT_K8SLITE {
                self.nl.del_route(&r).await?;
            }
        }
        Ok(())
    }

    /// The peers that can be programmed, deduplicated by pod CIDR, with their parsed MAC.
    fn usable_peers<'a>(
        &self,
        peers: &'a [Peer],
        report: &mut SyncReport,
    ) -> Vec<(&'a Peer, Option<MacAddr>)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for p in peers {
            let cidr = p.pod_cidr.trunc();
            if cidr != p.pod_cidr {
                tracing::warn!(peer = %p.name, cidr = %p.pod_cidr, "pod CIDR with host bits");
            }
            if cidr.addr().is_ipv4() != p.node_ip.is_ipv4()
                || cidr.addr().is_ipv4() != self.cfg.pod_cidr.addr().is_ipv4()
                || cidr == self.cfg.pod_cidr
                || !seen.insert(cidr)
            {
                tracing::warn!(peer = %p.name, cidr = %p.pod_cidr, ip = %p.node_ip, "peer left out: address family, own or duplicate pod CIDR");
                report.skipped.push(p.name.clone());
                continue;
            }
            let mac = match (&self.cfg.backend, &p.vtep_mac) {
                (Backend::Vxlan, None) => {
                    tracing::debug!(peer = %p.name, "no VTEP MAC published yet");
                    report.skipped.push(p.name.clone());
                    continue;
                }
                (Backend::Vxlan, Some(m)) => match m.parse::<MacAddr>() {
                    Ok(m) if !m.is_zero_or_multicast() => Some(m),
                    _ => {
                        tracing::warn!(peer = %p.name, mac = %m, "peer's VTEP MAC is unusable");
                        report.skipped.push(p.name.clone());
                        continue;
                    }
                },
                _ => None,
            };
            out.push((p, mac));
        }
        out
    }

    async fn find_link(&self, name: &str) -> Result<Option<Link>> {
        Ok(self.nl.links().await?.into_iter().find(|l| l.name == name))
    }

    async fn require_link(&self, name: &str) -> Result<Link> {
        self.find_link(name)
            .await?
            .ok_or_else(|| RoutesError::Unexpected {
                what: format!("link {name}"),
                reason: "not found after creating it".into(),
            })
    }

    /// The link that holds the node IP.
    async fn parent_link(&self) -> Result<Link> {
        let ip = self.cfg.node_ip;
        let index = self
            .nl
            .addresses()
            .await?
            .into_iter()
            .find(|a| a.addr.addr() == ip)
            .map(|a| a.index)
            .ok_or(RoutesError::NodeIpNotFound(ip))?;
        self.nl
            .links()
            .await?
            .into_iter()
            .find(|l| l.index == index)
            .ok_or(RoutesError::NodeIpNotFound(ip))
    }
}
