//! [`Overlay`]: the VXLAN device / host-gw routes of one node, kept in step with the peers, and
//! the node-local dummy device of the cluster DNS address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::nl::{Address, FdbEntry, Link, LinkKind, MacAddr, Neighbour, Netlink, Route, VxlanSpec};
use super::{
    Backend, LocalOverlay, OverlayConfig, Peer, RTPROT_K8SLITE, Result, RoutesError,
    VXLAN_OVERHEAD_V4, VXLAN_OVERHEAD_V6,
};

/// MTU used for `none` when the node IP's link is not found.
const FALLBACK_MTU: u32 = 1500;

/// What one [`Overlay::sync`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Routes, neighbours and FDB entries written (new or changed).
    pub added: usize,
    /// Routes, neighbours and FDB entries deleted (stale).
    pub removed: usize,
    /// Peers left out: no VTEP MAC published yet (vxlan), or unusable (address family).
    pub skipped: Vec<String>,
    /// Entries the kernel refused (e.g. a host-gw gateway on no connected subnet), with the
    /// error; the other entries are still programmed, and the next sync tries again.
    pub failed: Vec<String>,
    /// Set when the sync had to (re)create the VXLAN device: the new local state, whose VTEP
    /// MAC must be published again.
    pub recreated: Option<LocalOverlay>,
}

impl SyncReport {
    /// Count one write (`added`) or deletion, or note its failure.
    fn count(&mut self, r: Result<()>, add: bool, what: impl FnOnce() -> String) {
        match r {
            Ok(()) if add => self.added += 1,
            Ok(()) => self.removed += 1,
            Err(e) => {
                let what = what();
                tracing::warn!(error = %e, "{what} not programmed");
                self.failed.push(format!("{what}: {e}"));
            }
        }
    }

    /// Nothing was changed.
    pub fn is_noop(&self) -> bool {
        self.added == 0 && self.removed == 0 && self.recreated.is_none()
    }
}

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
                self.sync_routes(&want, &mut report).await?;
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
                self.sync_fdb(dev.index, &fdb, &mut report).await?;
                self.sync_neighbours(dev.index, &neighs, &mut report)
                    .await?;
                self.sync_routes(&routes, &mut report).await?;
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

    async fn sync_routes(&self, want: &[Route], report: &mut SyncReport) -> Result<()> {
        let have = self.nl.routes().await?;
        let wanted: BTreeSet<IpNet> = want.iter().map(|r| r.dst).collect();
        for w in want {
            let same_dst: Vec<&Route> = have.iter().filter(|r| r.dst == w.dst).collect();
            if same_dst.iter().any(|r| route_matches(r, w)) {
                continue;
            }
            tracing::debug!(route = ?w, "route add/replace");
            let r = self.nl.replace_route(w).await;
            report.count(r, true, || format!("route {} via {:?}", w.dst, w.gateway));
        }
        for r in &have {
            if r.protocol == RTPROT_K8SLITE && !wanted.contains(&r.dst) {
                tracing::debug!(route = ?r, "stale route delete");
                let res = self.nl.del_route(r).await;
                report.count(res, false, || format!("stale route {}", r.dst));
            }
        }
        Ok(())
    }

    async fn sync_neighbours(
        &self,
        index: u32,
        want: &[Neighbour],
        report: &mut SyncReport,
    ) -> Result<()> {
        let have = self.nl.neighbours(index).await?;
        let wanted: BTreeMap<IpAddr, &Neighbour> = want.iter().map(|n| (n.ip, n)).collect();
        for w in want {
            if have
                .iter()
                .any(|h| h.ip == w.ip && h.mac == w.mac && h.permanent)
            {
                continue;
            }
            let r = self.nl.replace_neighbour(w).await;
            report.count(r, true, || format!("neighbour {} lladdr {}", w.ip, w.mac));
        }
        for h in &have {
            // Only entries like ours: the kernel keeps NOARP entries of its own on the device
            // (IPv6 multicast).
            let ours = h.permanent || self.cfg.cluster_cidr.contains(&h.ip);
            if ours && !h.ip.is_multicast() && !wanted.contains_key(&h.ip) {
                let r = self.nl.del_neighbour(h).await;
                report.count(r, false, || format!("stale neighbour {}", h.ip));
            }
        }
        Ok(())
    }

    async fn sync_fdb(&self, index: u32, want: &[FdbEntry], report: &mut SyncReport) -> Result<()> {
        let have = self.nl.fdb(index).await?;
        let wanted: BTreeMap<MacAddr, &FdbEntry> = want.iter().map(|f| (f.mac, f)).collect();
        for w in want {
            let for_mac: Vec<&FdbEntry> = have.iter().filter(|h| h.mac == w.mac).collect();
            if for_mac.len() == 1 && for_mac[0].dst == w.dst {
                continue;
            }
            if for_mac.iter().any(|h| h.dst == w.dst) {
                // Right destination plus others (someone appended): drop the others.
                for other in for_mac.iter().filter(|h| h.dst != w.dst) {
                    let r = self.nl.del_fdb(other).await;
                    report.count(r, false, || {
                        format!("extra FDB {} dst {}", other.mac, other.dst)
                    });
                }
                continue;
            }
            // Replace the first destination in place (no gap), drop any others.
            for other in for_mac.iter().skip(1) {
                let r = self.nl.del_fdb(other).await;
                report.count(r, false, || {
                    format!("extra FDB {} dst {}", other.mac, other.dst)
                });
            }
            let r = self.nl.replace_fdb(w).await;
            report.count(r, true, || format!("FDB {} dst {}", w.mac, w.dst));
        }
        for h in &have {
            if !wanted.contains_key(&h.mac) {
                let r = self.nl.del_fdb(h).await;
                report.count(r, false, || format!("stale FDB {} dst {}", h.mac, h.dst));
            }
        }
        Ok(())
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

/// `ip` as a host prefix (/32 or /128).
fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Whether an existing route `have` does what `want` asks (the kernel fills in the output
/// link of a gateway route given without one).
fn route_matches(have: &Route, want: &Route) -> bool {
    have.dst == want.dst
        && have.gateway == want.gateway
        && have.protocol == want.protocol
        && have.onlink == want.onlink
        && (want.oif.is_none() || have.oif == want.oif)
}

/// Make `want` the only address of its family on link `index` (IPv6 link-local addresses are
/// left alone).
async fn sync_addresses<N: Netlink>(nl: &N, index: u32, want: IpNet) -> Result<()> {
    let have: Vec<Address> = nl
        .addresses()
        .await?
        .into_iter()
        .filter(|a| a.index == index)
        .collect();
    for a in &have {
        let same_family = a.addr.addr().is_ipv4() == want.addr().is_ipv4();
        let link_local =
            matches!(a.addr.addr(), IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if same_family && !link_local && a.addr != want {
            nl.del_address(a).await?;
        }
    }
    if !have.iter().any(|a| a.addr == want) {
        nl.add_address(&Address { index, addr: want }).await?;
    }
    Ok(())
}

/// Make `device` a dummy link, up, whose only address (of that family) is `ip` as a host
/// prefix: where the cluster DNS address is served on each node. Idempotent; a link of that
/// name that is not a dummy is replaced.
pub async fn ensure_dummy_address<N: Netlink>(nl: &N, device: &str, ip: IpAddr) -> Result<()> {
    let find =
        || async { Ok::<_, RoutesError>(nl.links().await?.into_iter().find(|l| l.name == device)) };
    let mut link = find().await?;
    if let Some(l) = &link
        && !l.kind.is_address_holder()
    {
        tracing::info!(device, kind = ?l.kind, "replacing a link that is not a dummy");
        nl.del_link(l.index).await?;
        link = None;
    }
    if link.is_none() {
        nl.add_dummy(device).await?;
        link = find().await?;
    }
    let link = link.ok_or_else(|| RoutesError::Unexpected {
        what: format!("link {device}"),
        reason: "not found after creating it".into(),
    })?;
    if !link.up {
        nl.set_link_up(link.index, None).await?;
    }
    sync_addresses(nl, link.index, host_net(ip)).await
}

/// Delete the dummy link `device` (nothing when absent).
pub async fn remove_dummy<N: Netlink>(nl: &N, device: &str) -> Result<()> {
    if let Some(l) = nl.links().await?.into_iter().find(|l| l.name == device)
        && l.kind.is_address_holder()
    {
        nl.del_link(l.index).await?;
    }
    Ok(())
}
