//! [`RtNetlink`]: the [`Netlink`] seam over the kernel's rtnetlink (crate `rtnetlink`).
//!
//! Every call opens its own netlink socket in the calling thread's network namespace and drives
//! the connection on the calling task (no spawned task), so it works on any tokio runtime and in
//! a thread that entered another namespace with `setns` (as tests do; the agent under
//! `nsenter --net` is in its namespace as a whole process). `ethtool` is run the same way: a
//! child forked from the calling thread inherits its network namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use async_trait::async_trait;
use futures::TryStreamExt;
use futures::future::{Either, select};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourState};
use rtnetlink::{
    Handle, LinkBridge, LinkDummy, LinkMessageBuilder, LinkUnspec, LinkVxlan, RouteMessageBuilder,
    new_connection,
};

use super::msg::{
    name_of, neigh_addr, neigh_parts, neighbour_message, parse_address, parse_link, parse_route,
    route_message,
};
use super::nl::{Address, FdbEntry, Link, MacAddr, Neighbour, Netlink, Route, VxlanSpec};
use super::{Result, RoutesError};

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const EOPNOTSUPP: i32 = 95;

/// The real kernel, over rtnetlink.
#[derive(Clone, Copy, Debug, Default)]
pub struct RtNetlink;

/// Open a socket, run `f` with its handle while driving the connection.
async fn with_handle<T, F, Fut>(what: String, f: F) -> Result<T>
where
    F: FnOnce(Handle, String) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let (conn, handle, _) = new_connection().map_err(|source| RoutesError::Spawn {
        what: format!("netlink socket for {what}"),
        source,
    })?;
    let work = std::pin::pin!(f(handle, what.clone()));
    let conn = std::pin::pin!(conn);
    match select(work, conn).await {
        Either::Left((r, _)) => r,
        Either::Right(((), _)) => Err(RoutesError::Unexpected {
            what,
            reason: "netlink connection closed".into(),
        }),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RoutesError {
    let what = what.into();
    move |source| RoutesError::Netlink { what, source }
}

/// A deletion whose target is already gone succeeded.
fn absent_ok(r: std::result::Result<(), rtnetlink::Error>, what: String) -> Result<()> {
    match r {
        Err(e) if matches!(errno(&e), Some(ENOENT | ESRCH | ENODEV | EADDRNOTAVAIL)) => Ok(()),
        other => other.map_err(nl_err(what)),
    }
}

/// `ethtool` on PATH, or in the sbin directories.
fn find_ethtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join("ethtool"))
        .find(|p| p.is_file())
}

#[async_trait]
impl Netlink for RtNetlink {
    async fn links(&self) -> Result<Vec<Link>> {
        with_handle("list links".into(), |h, _| async move {
            let mut out = Vec::new();
            let mut s = h.link().get().execute();
            while let Some(m) = s.try_next().await.map_err(nl_err("list links"))? {
                out.push(parse_link(&m));
            }
            Ok(out)
        })
        .await
    }

    async fn add_vxlan(&self, spec: &VxlanSpec) -> Result<()> {
        let what = format!("create VXLAN device {}", spec.name);
        let mut b = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.parent)
            .port(spec.port)
            .learning(false);
        b = match spec.local {
            IpAddr::V4(v4) => b.local(v4),
            IpAddr::V6(v6) => b.local6(v6),
        };
        let msg = b.mtu(spec.mtu).build();
        with_handle(what, |h, what| async move {
            h.link().add(msg).execute().await.map_err(nl_err(what))
        })
        .await
    }

    async fn add_dummy(&self, name: &str) -> Result<()> {
        let what = format!("create dummy device {name}");
        let msg = LinkDummy::new(name).build();
        let fallback = LinkBridge::new(name).build();
        with_handle(what, |h, what| async move {
            match h.link().add(msg).execute().await {
                // A kernel without the dummy driver (seen on these VMs): a bridge without
                // ports holds a local address just as well.
                Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
                    tracing::warn!(device = %name_of(&fallback), "no dummy driver in this kernel; using a bridge without ports");
                    h.link().add(fallback).execute().await.map_err(nl_err(what))
                }
                other => other.map_err(nl_err(what)),
            }
        })
        .await
    }

    async fn set_link_up(&self, index: u32, mtu: Option<u32>) -> Result<()> {
        let what = format!("set link #{index} up (mtu {mtu:?})");
        let mut b: LinkMessageBuilder<LinkUnspec> = LinkUnspec::new_with_index(index);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        let msg = b.up().build();
        with_handle(what, |h, what| async move {
            h.link().set(msg).execute().await.map_err(nl_err(what))
        })
        .await
    }

    async fn del_link(&self, index: u32) -> Result<()> {
        let what = format!("delete link #{index}");
        with_handle(what, |h, what| async move {
            absent_ok(h.link().del(index).execute().await, what)
        })
        .await
    }

    async fn addresses(&self) -> Result<Vec<Address>> {
        with_handle("list addresses".into(), |h, _| async move {
            let mut out = Vec::new();
            let mut s = h.address().get().execute();
            while let Some(m) = s.try_next().await.map_err(nl_err("list addresses"))? {
                out.extend(parse_address(&m));
            }
            Ok(out)
        })
        .await
    }

    async fn add_address(&self, a: &Address) -> Result<()> {
        let what = format!("add address {} to link #{}", a.addr, a.index);
        let a = *a;
        with_handle(what, |h, what| async move {
            match h
                .address()
                .add(a.index, a.addr.addr(), a.addr.prefix_len())
                .execute()
                .await
            {
                Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
                other => other.map_err(nl_err(what)),
            }
        })
        .await
    }

    async fn del_address(&self, a: &Address) -> Result<()> {
        let what = format!("delete address {} from link #{}", a.addr, a.index);
        let mut m = AddressMessage::default();
        m.header.family = if a.addr.addr().is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.prefix_len = a.addr.prefix_len();
        m.header.index = a.index;
        m.attributes.push(AddressAttribute::Local(a.addr.addr()));
        m.attributes.push(AddressAttribute::Address(a.addr.addr()));
        with_handle(what, |h, what| async move {
            absent_ok(h.address().del(m).execute().await, what)
        })
        .await
    }

    async fn routes(&self) -> Result<Vec<Route>> {
        with_handle("list routes".into(), |h, _| async move {
            let mut out = Vec::new();
            let queries = [
                RouteMessageBuilder::<Ipv4Addr>::new().build(),
                RouteMessageBuilder::<Ipv6Addr>::new().build(),
            ];
            for q in queries {
                let mut s = h.route().get(q).execute();
                while let Some(m) = s.try_next().await.map_err(nl_err("list routes"))? {
                    out.extend(parse_route(&m));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn replace_route(&self, r: &Route) -> Result<()> {
        let what = format!("replace route {} via {:?}", r.dst, r.gateway);
        let msg = route_message(r)?;
        with_handle(what, |h, what| async move {
            h.route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(nl_err(what))
        })
        .await
    }

    async fn del_route(&self, r: &Route) -> Result<()> {
        let what = format!("delete route {} via {:?}", r.dst, r.gateway);
        let msg = route_message(r)?;
        with_handle(what, |h, what| async move {
            absent_ok(h.route().del(msg).execute().await, what)
        })
        .await
    }

    async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        with_handle("list neighbours".into(), |h, _| async move {
            let mut out = Vec::new();
            for family in [AddressFamily::Inet, AddressFamily::Inet6] {
                let mut s = h.neighbours().get().set_address_family(family).execute();
                while let Some(m) = s.try_next().await.map_err(nl_err("list neighbours"))? {
                    if m.header.ifindex != index || m.header.family != family {
                        continue;
                    }
                    let (ip, mac) = neigh_parts(&m);
                    if let Some(ip) = ip {
                        out.push(Neighbour {
                            index,
                            ip,
                            mac: mac.unwrap_or(MacAddr([0; 6])),
                            permanent: m.header.state == NeighbourState::Permanent,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn replace_neighbour(&self, n: &Neighbour) -> Result<()> {
        let what = format!(
            "replace neighbour {} lladdr {} on link #{}",
            n.ip, n.mac, n.index
        );
        let n = *n;
        with_handle(what, |h, what| async move {
            h.neighbours()
                .add(n.index, n.ip)
                .link_layer_address(&n.mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl_err(what))
        })
        .await
    }

    async fn del_neighbour(&self, n: &Neighbour) -> Result<()> {
        let what = format!("delete neighbour {} on link #{}", n.ip, n.index);
        let family = if n.ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let mut m = neighbour_message(family, n.index);
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(n.ip)));
        with_handle(what, |h, what| async move {
            absent_ok(h.neighbours().del(m).execute().await, what)
        })
        .await
    }

    async fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        with_handle("list FDB".into(), |h, _| async move {
            let mut out = Vec::new();
            let mut s = h
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Bridge)
                .execute();
            while let Some(m) = s.try_next().await.map_err(nl_err("list FDB"))? {
                if m.header.ifindex != index {
                    continue;
                }
                if let (Some(dst), Some(mac)) = neigh_parts(&m) {
                    out.push(FdbEntry { index, mac, dst });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn replace_fdb(&self, f: &FdbEntry) -> Result<()> {
        let what = format!("replace FDB {} dst {} on link #{}", f.mac, f.dst, f.index);
        let f = *f;
        with_handle(what, |h, what| async move {
            h.neighbours()
                .add_bridge(f.index, &f.mac.0)
                .destination(f.dst)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl_err(what))
        })
        .await
    }

    async fn del_fdb(&self, f: &FdbEntry) -> Result<()> {
        let what = format!("delete FDB {} dst {} on link #{}", f.mac, f.dst, f.index);
        let mut m = neighbour_message(AddressFamily::Bridge, f.index);
        m.header.flags = NeighbourFlags::Own;
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(f.dst)));
        with_handle(what, |h, what| async move {
            absent_ok(h.neighbours().del(m).execute().await, what)
        })
        .await
    }

    async fn set_tx_checksum_offload(&self, device: &str, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        let Some(ethtool) = find_ethtool() else {
            return Err(RoutesError::Prerequisite(format!(
                "ethtool (Debian package ethtool), needed to turn tx checksum offload {state} on {device}"
            )));
        };
        let what = format!("ethtool -K {device} tx-checksum-ip-generic {state}");
        // Run from this thread (not a blocking pool): the child inherits its network namespace.
        let out = std::process::Command::new(&ethtool)
            .args(["-K", device, "tx-checksum-ip-generic", state])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| RoutesError::Spawn {
                what: what.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(RoutesError::Command {
                what,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}
