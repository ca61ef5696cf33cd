//! Netlink messages to and from the plain values of the [`Netlink`](super::Netlink) seam.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteType,
    RouteVia,
};
use rtnetlink::RouteMessageBuilder;

use super::nl::{Address, Link, LinkKind, MacAddr, Route, VxlanAttrs};
use super::{Result, RoutesError};

pub(super) fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        up: m.header.flags.contains(LinkFlags::Up),
        kind: LinkKind::Other(String::new()),
    };
    let mut vx: Option<VxlanAttrs> = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(b) => l.mac = MacAddr::from_bytes(b),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(InfoKind::Dummy) => l.kind = LinkKind::Dummy,
                        LinkInfo::Kind(InfoKind::Vxlan) => {
                            vx.get_or_insert(VxlanAttrs {
                                vni: 0,
                                port: 0,
                                local: None,
                                learning: true,
                                parent: None,
                            });
                        }
                        LinkInfo::Kind(k) => l.kind = LinkKind::Other(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            let v = vx.get_or_insert(VxlanAttrs {
                                vni: 0,
                                port: 0,
                                local: None,
                                learning: true,
                                parent: None,
                            });
                            for d in data {
                                match d {
                                    InfoVxlan::Id(id) => v.vni = *id,
                                    InfoVxlan::Port(p) => v.port = *p,
                                    InfoVxlan::Local(ip) => v.local = Some(IpAddr::V4(*ip)),
                                    InfoVxlan::Local6(ip) => v.local = Some(IpAddr::V6(*ip)),
                                    InfoVxlan::Learning(b) => v.learning = *b,
                                    InfoVxlan::Link(i) => v.parent = Some(*i),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(v) = vx {
        l.kind = LinkKind::Vxlan(v);
    }
    l
}

pub(super) fn name_of(m: &LinkMessage) -> String {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

pub(super) fn parse_address(m: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    IpNet::new(ip, m.header.prefix_len)
        .ok()
        .map(|addr| Address {
            index: m.header.index,
            addr,
        })
}

pub(super) fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub(super) fn parse_route(m: &RouteMessage) -> Option<Route> {
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = match dst {
        Some(ip) => ip,
        None if m.header.address_family == AddressFamily::Inet6 => {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        }
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    Some(Route {
        dst: IpNet::new(dst, m.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        protocol: u8::from(m.header.protocol),
    })
}

pub(super) fn route_message(r: &Route) -> Result<RouteMessage> {
    fn invalid<E: std::fmt::Display>(dst: IpNet) -> impl Fn(E) -> RoutesError {
        move |e| RoutesError::Invalid {
            what: format!("route {dst}"),
            reason: e.to_string(),
        }
    }
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.dst.addr(), r.dst.prefix_len())
        .map_err(invalid(r.dst))?
        .protocol(RouteProtocol::from(r.protocol));
    if let Some(gw) = r.gateway {
        b = b.gateway(gw).map_err(invalid(r.dst))?;
    }
    if let Some(oif) = r.oif {
        b = b.output_interface(oif);
    }
    if r.onlink {
        b = b.onlink();
    }
    Ok(b.build())
}

pub(super) fn neighbour_message(family: AddressFamily, index: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m
}

pub(super) fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

pub(super) fn neigh_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        // In AF_BRIDGE (FDB) messages the crate cannot tell the family: raw bytes.
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn neigh_parts(m: &NeighbourMessage) -> (Option<IpAddr>, Option<MacAddr>) {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(d) => ip = neigh_ip(d),
            NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_bytes(b),
            _ => {}
        }
    }
    (ip, mac)
}
