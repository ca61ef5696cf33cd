//! Bringing the kernel's routes, neighbours, FDB entries and addresses in step with what is
//! wanted: write what is missing or different, delete what is stale, leave the rest alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::nl::{Address, FdbEntry, MacAddr, Neighbour, Netlink, Route};
use super::{LocalOverlay, RTPROT_K8SLITE, Result};

/// What one [`super::Overlay::sync`] changed.
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

pub(super) async fn sync_routes<N: Netlink>(
    nl: &N,
    want: &[Route],
    report: &mut SyncReport,
) -> Result<()> {
    let have = nl.routes().await?;
    let wanted: BTreeSet<IpNet> = want.iter().map(|r| r.dst).collect();
    for w in want {
        let same_dst: Vec<&Route> = have.iter().filter(|r| r.dst == w.dst).collect();
        if same_dst.iter().any(|r| route_matches(r, w)) {
            continue;
        }
        tracing::debug!(route = ?w, "route add/replace");
        let r = nl.replace_route(w).await;
        report.count(r, true, || format!("route {} via {:?}", w.dst, w.gateway));
    }
    for r in &have {
        if r.protocol == RTPROT_K8SLITE && !wanted.contains(&r.dst) {
            tracing::debug!(route = ?r, "stale route delete");
            let res = nl.del_route(r).await;
            report.count(res, false, || format!("stale route {}", r.dst));
        }
    }
    Ok(())
}

pub(super) async fn sync_neighbours<N: Netlink>(
    nl: &N,
    cluster: IpNet,
    index: u32,
    want: &[Neighbour],
    report: &mut SyncReport,
) -> Result<()> {
    let have = nl.neighbours(index).await?;
    let wanted: BTreeMap<IpAddr, &Neighbour> = want.iter().map(|n| (n.ip, n)).collect();
    for w in want {
        if have
            .iter()
            .any(|h| h.ip == w.ip && h.mac == w.mac && h.permanent)
        {
            continue;
        }
        let r = nl.replace_neighbour(w).await;
        report.count(r, true, || format!("neighbour {} lladdr {}", w.ip, w.mac));
    }
    for h in &have {
        // Only entries like ours: the kernel keeps NOARP entries of its own on the device
        // (IPv6 multicast).
        let ours = h.permanent || cluster.contains(&h.ip);
        if ours && !h.ip.is_multicast() && !wanted.contains_key(&h.ip) {
            let r = nl.del_neighbour(h).await;
            report.count(r, false, || format!("stale neighbour {}", h.ip));
        }
    }
    Ok(())
}

pub(super) async fn sync_fdb<N: Netlink>(
    nl: &N,
    index: u32,
    want: &[FdbEntry],
    report: &mut SyncReport,
) -> Result<()> {
    let have = nl.fdb(index).await?;
    let wanted: BTreeMap<MacAddr, &FdbEntry> = want.iter().map(|f| (f.mac, f)).collect();
    for w in want {
        let for_mac: Vec<&FdbEntry> = have.iter().filter(|h| h.mac == w.mac).collect();
        if for_mac.len() == 1 && for_mac[0].dst == w.dst {
            continue;
        }
        if for_mac.iter().any(|h| h.dst == w.dst) {
            // Right destination plus others (someone appended): drop the others.
            for other in for_mac.iter().filter(|h| h.dst != w.dst) {
                let r = nl.del_fdb(other).await;
                report.count(r, false, || {
                    format!("extra FDB {} dst {}", other.mac, other.dst)
                });
            }
            continue;
        }
        // Replace the first destination in place (no gap), drop any others.
        for other in for_mac.iter().skip(1) {
            let r = nl.del_fdb(other).await;
            report.count(r, false, || {
                format!("extra FDB {} dst {}", other.mac, other.dst)
            });
        }
        let r = nl.replace_fdb(w).await;
        report.count(r, true, || format!("FDB {} dst {}", w.mac, w.dst));
    }
    for h in &have {
        if !wanted.contains_key(&h.mac) {
            let r = nl.del_fdb(h).await;
            report.count(r, false, || format!("stale FDB {} dst {}", h.mac, h.dst));
        }
    }
    Ok(())
}

/// `ip` as a host prefix (/32 or /128).
pub(super) fn host_net(ip: IpAddr) -> IpNet {
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
pub(super) async fn sync_addresses<N: Netlink>(nl: &N, index: u32, want: IpNet) -> Result<()> {
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
