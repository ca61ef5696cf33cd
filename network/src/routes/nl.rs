//! The kernel seam of the overlay: links, addresses, routes (main table), neighbours and FDB
//! entries, as plain values.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use async_trait::async_trait;
use ipnet::IpNet;

use super::{Result, RoutesError};

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// From netlink bytes (must be 6 long).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(b).ok().map(MacAddr)
    }

    /// All zero (the VXLAN default destination), or a multicast address.
    pub fn is_zero_or_multicast(&self) -> bool {
        self.0 == [0; 6] || self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = RoutesError;

    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(RoutesError::InvalidMac(s.into()));
        }
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(RoutesError::InvalidMac(s.into()));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| RoutesError::InvalidMac(s.into()))?;
        }
        Ok(MacAddr(out))
    }
}

/// VXLAN settings of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanAttrs {
    /// VNI.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Local (source) address.
    pub local: Option<IpAddr>,
    /// Source-address learning.
    pub learning: bool,
    /// Index of the parent (underlay) link.
    pub parent: Option<u32>,
}

/// What kind of link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// VXLAN.
    Vxlan(VxlanAttrs),
    /// dummy.
    Dummy,
    /// Anything else (the kernel's kind name; empty for a physical device).
    Other(String),
}

impl LinkKind {
    /// A device that only holds addresses: dummy, or the bridge [`Netlink::add_dummy`] makes
    /// where there is no dummy driver.
    pub fn is_address_holder(&self) -> bool {
        match self {
            LinkKind::Dummy => true,
            LinkKind::Other(k) => k == "bridge",
            LinkKind::Vxlan(_) => false,
        }
    }
}

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Hardware address.
    pub mac: Option<MacAddr>,
    /// Administratively up.
    pub up: bool,
    /// Kind.
    pub kind: LinkKind,
}

/// What a new VXLAN device is made of (learning is always off; created down).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Name.
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// Local address (the node IP).
    pub local: IpAddr,
    /// Index of the link that holds the local address.
    pub parent: u32,
    /// MTU.
    pub mtu: u32,
}

/// An address on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// Link index.
    pub index: u32,
    /// Address and prefix length.
    pub addr: IpNet,
}

/// A unicast route of the main table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Output link (the kernel fills it in for a gateway route without one).
    pub oif: Option<u32>,
    /// The gateway is on the link whatever its addresses say.
    pub onlink: bool,
    /// Route protocol (who installed it).
    pub protocol: u8,
}

/// An IP neighbour (ARP/NDP) entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Neighbour {
    /// Link index.
    pub index: u32,
    /// IP address.
    pub ip: IpAddr,
    /// Its link-layer address.
    pub mac: MacAddr,
    /// NUD_PERMANENT (the ones written here are).
    pub permanent: bool,
}

/// A forwarding-database entry of a VXLAN device: frames to `mac` go to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdbEntry {
    /// Link index.
    pub index: u32,
    /// Destination MAC.
    pub mac: MacAddr,
    /// Remote tunnel endpoint.
    pub dst: IpAddr,
}

/// The kernel effects of the overlay. Deleting something absent is not an error.
#[async_trait]
pub trait Netlink: Send + Sync {
    /// Every link.
    async fn links(&self) -> Result<Vec<Link>>;
    /// Create a VXLAN device (learning off, down).
    async fn add_vxlan(&self, spec: &VxlanSpec) -> Result<()>;
    /// Create a dummy device (down); on a kernel without the dummy driver, a bridge without
    /// ports (it holds a local address just as well).
    async fn add_dummy(&self, name: &str) -> Result<()>;
    /// Set a link's MTU (when given) and bring it up.
    async fn set_link_up(&self, index: u32, mtu: Option<u32>) -> Result<()>;
    /// Delete a link (with its addresses, routes, neighbours and FDB entries).
    async fn del_link(&self, index: u32) -> Result<()>;
    /// Every address of every link.
    async fn addresses(&self) -> Result<Vec<Address>>;
    /// Add an address.
    async fn add_address(&self, addr: &Address) -> Result<()>;
    /// Delete an address.
    async fn del_address(&self, addr: &Address) -> Result<()>;
    /// The unicast routes of the main table (IPv4 and IPv6).
    async fn routes(&self) -> Result<Vec<Route>>;
    /// Add a route to the main table, replacing one with the same destination.
    async fn replace_route(&self, route: &Route) -> Result<()>;
    /// Delete a route from the main table.
    async fn del_route(&self, route: &Route) -> Result<()>;
    /// The IP neighbours of link `index`.
    async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>>;
    /// Add a permanent neighbour, replacing one with the same IP on that link.
    async fn replace_neighbour(&self, n: &Neighbour) -> Result<()>;
    /// Delete a neighbour.
    async fn del_neighbour(&self, n: &Neighbour) -> Result<()>;
    /// The FDB entries of link `index` that have a remote destination.
    async fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>>;
    /// Add a permanent FDB entry, replacing the destination of one with the same MAC.
    async fn replace_fdb(&self, f: &FdbEntry) -> Result<()>;
    /// Delete an FDB entry.
    async fn del_fdb(&self, f: &FdbEntry) -> Result<()>;
    /// Turn tx checksum offload of `device` on or off (`ethtool -K <dev>
    /// tx-checksum-ip-generic on|off`, run in the calling thread's network namespace).
    async fn set_tx_checksum_offload(&self, device: &str, on: bool) -> Result<()>;
}
