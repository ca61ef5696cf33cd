//! [`RecordingNetlink`]: an in-memory kernel that records every change made through it.

use std::sync::Mutex;

use async_trait::async_trait;
use ipnet::IpNet;

use super::nl::{
    Address, FdbEntry, Link, LinkKind, MacAddr, Neighbour, Netlink, Route, VxlanAttrs, VxlanSpec,
};
use super::{Result, RoutesError};

/// One change [`RecordingNetlink`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NlEffect {
    /// A VXLAN device was created.
    AddVxlan(VxlanSpec),
    /// A dummy device was created.
    AddDummy(String),
    /// A link was brought up (MTU set when given).
    SetLinkUp {
        /// Link name.
        name: String,
        /// MTU.
        mtu: Option<u32>,
    },
    /// A link was deleted (its name).
    DelLink(String),
    /// An address was added.
    AddAddress(Address),
    /// An address was deleted.
    DelAddress(Address),
    /// A route was added or replaced.
    ReplaceRoute(Route),
    /// A route was deleted.
    DelRoute(Route),
    /// A neighbour was added or replaced.
    ReplaceNeighbour(Neighbour),
    /// A neighbour was deleted.
    DelNeighbour(Neighbour),
    /// An FDB entry was added or replaced.
    ReplaceFdb(FdbEntry),
    /// An FDB entry was deleted.
    DelFdb(FdbEntry),
    /// Tx checksum offload was switched.
    TxChecksum {
        /// Device.
        device: String,
        /// On or off.
        on: bool,
    },
}

/// What the fake kernel holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetState {
    /// Links.
    pub links: Vec<Link>,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Main-table routes.
    pub routes: Vec<Route>,
    /// IP neighbours.
    pub neighbours: Vec<Neighbour>,
    /// FDB entries.
    pub fdb: Vec<FdbEntry>,
}

#[derive(Debug, Default)]
struct Inner {
    state: NetState,
    effects: Vec<NlEffect>,
    next_index: u32,
    next_mac: u8,
}

/// An in-memory kernel for unit tests: links get increasing indexes and distinct MACs, deleting
/// a link drops what hangs off it, and [`RecordingNetlink::effects`] lists every change.
#[derive(Debug, Default)]
pub struct RecordingNetlink {
    inner: Mutex<Inner>,
}

impl RecordingNetlink {
    /// A kernel with only `lo`.
    pub fn new() -> Self {
        let nl = Self::default();
        nl.with(|i| {
            i.next_index = 1;
            let index = i.alloc_index();
            i.state.links.push(Link {
                index,
                name: "lo".into(),
                mtu: 65536,
                mac: None,
                up: true,
                kind: LinkKind::Other(String::new()),
            });
        });
        nl
    }

    /// Add a physical-like link `name` with `mtu` holding `addr` (e.g. the node's `eth0`).
    pub fn with_uplink(self, name: &str, mtu: u32, addr: IpNet) -> Self {
        self.with(|i| {
            let index = i.alloc_index();
            let mac = i.alloc_mac();
            i.state.links.push(Link {
                index,
                name: name.into(),
                mtu,
                mac: Some(mac),
                up: true,
                kind: LinkKind::Other(String::new()),
            });
            i.state.addresses.push(Address { index, addr });
        });
        self
    }

    /// Put `route` into the table without recording an effect (someone else's route).
    pub fn with_route(self, route: Route) -> Self {
        self.with(|i| i.state.routes.push(route));
        self
    }

    /// What the kernel holds now.
    pub fn state(&self) -> NetState {
        self.with(|i| i.state.clone())
    }

    /// Every change so far.
    pub fn effects(&self) -> Vec<NlEffect> {
        self.with(|i| i.effects.clone())
    }

    /// Every change so far, forgetting them.
    pub fn take_effects(&self) -> Vec<NlEffect> {
        self.with(|i| std::mem::take(&mut i.effects))
    }

    /// The link called `name`.
    pub fn link(&self, name: &str) -> Option<Link> {
        self.with(|i| i.state.links.iter().find(|l| l.name == name).cloned())
    }

    /// Change a link behind the overlay's back (tests of repair).
    pub fn edit_link(&self, name: &str, f: impl FnOnce(&mut Link)) {
        self.with(|i| {
            if let Some(l) = i.state.links.iter_mut().find(|l| l.name == name) {
                f(l);
            }
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

impl Inner {
    fn alloc_index(&mut self) -> u32 {
        let i = self.next_index.max(1);
        self.next_index = i + 1;
        i
    }

    fn alloc_mac(&mut self) -> MacAddr {
        self.next_mac = self.next_mac.wrapping_add(1);
        MacAddr([0x02, 0x6b, 0x38, 0x00, 0x00, self.next_mac])
    }

    fn name_of(&self, index: u32) -> String {
        self.state
            .links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| format!("#{index}"))
    }

    fn add_link(&mut self, name: &str, mtu: u32, kind: LinkKind) {
        let index = self.alloc_index();
        let mac = self.alloc_mac();
        self.state.links.retain(|l| l.name != name);
        self.state.links.push(Link {
            index,
            name: name.into(),
            mtu,
            mac: Some(mac),
            up: false,
            kind,
        });
    }
}

#[async_trait]
impl Netlink for RecordingNetlink {
    async fn links(&self) -> Result<Vec<Link>> {
        Ok(self.with(|i| i.state.links.clone()))
    }

    async fn add_vxlan(&self, spec: &VxlanSpec) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::AddVxlan(spec.clone()));
            let kind = LinkKind::Vxlan(VxlanAttrs {
                vni: spec.vni,
                port: spec.port,
                local: Some(spec.local),
                learning: false,
                parent: Some(spec.parent),
            });
            i.add_link(&spec.name, spec.mtu, kind);
        });
        Ok(())
    }

    async fn add_dummy(&self, name: &str) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::AddDummy(name.into()));
            i.add_link(name, 1500, LinkKind::Dummy);
        });
        Ok(())
    }

    async fn set_link_up(&self, index: u32, mtu: Option<u32>) -> Result<()> {
        self.with(|i| {
            let name = i.name_of(index);
            i.effects.push(NlEffect::SetLinkUp { name, mtu });
            if let Some(l) = i.state.links.iter_mut().find(|l| l.index == index) {
                l.up = true;
                if let Some(m) = mtu {
                    l.mtu = m;
                }
            }
        });
        Ok(())
    }

    async fn del_link(&self, index: u32) -> Result<()> {
        self.with(|i| {
            let name = i.name_of(index);
            i.effects.push(NlEffect::DelLink(name));
            let s = &mut i.state;
            s.links.retain(|l| l.index != index);
            s.addresses.retain(|a| a.index != index);
            s.routes.retain(|r| r.oif != Some(index));
            s.neighbours.retain(|n| n.index != index);
            s.fdb.retain(|f| f.index != index);
        });
        Ok(())
    }

    async fn addresses(&self) -> Result<Vec<Address>> {
        Ok(self.with(|i| i.state.addresses.clone()))
    }

    async fn add_address(&self, addr: &Address) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::AddAddress(*addr));
            if !i.state.addresses.contains(addr) {
                i.state.addresses.push(*addr);
            }
        });
        Ok(())
    }

    async fn del_address(&self, addr: &Address) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::DelAddress(*addr));
            i.state.addresses.retain(|a| a != addr);
        });
        Ok(())
    }

    async fn routes(&self) -> Result<Vec<Route>> {
        Ok(self.with(|i| i.state.routes.clone()))
    }

    async fn replace_route(&self, route: &Route) -> Result<()> {
        self.with(|i| {
            // As the kernel: a gateway must be on a connected subnet unless onlink.
            if let Some(gw) = route.gateway
                && !route.onlink
                && !i.state.addresses.iter().any(|a| a.addr.contains(&gw))
            {
                return Err(RoutesError::Unexpected {
                    what: format!("replace route {} via {gw}", route.dst),
                    reason: "Network is unreachable".into(),
                });
            }
            i.effects.push(NlEffect::ReplaceRoute(*route));
            let mut r = *route;
            // As the kernel: a gateway route gets the link whose subnet holds the gateway.
            if let (None, Some(gw)) = (r.oif, r.gateway) {
                r.oif = i
                    .state
                    .addresses
                    .iter()
                    .find(|a| a.addr.contains(&gw))
                    .map(|a| a.index);
            }
            i.state.routes.retain(|o| o.dst != r.dst);
            i.state.routes.push(r);
            Ok(())
        })
    }

    async fn del_route(&self, route: &Route) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::DelRoute(*route));
            i.state
                .routes
                .retain(|r| !(r.dst == route.dst && r.protocol == route.protocol));
        });
        Ok(())
    }

    async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        Ok(self.with(|i| {
            i.state
                .neighbours
                .iter()
                .filter(|n| n.index == index)
                .copied()
                .collect()
        }))
    }

    async fn replace_neighbour(&self, n: &Neighbour) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::ReplaceNeighbour(*n));
            i.state
                .neighbours
                .retain(|o| !(o.index == n.index && o.ip == n.ip));
            i.state.neighbours.push(*n);
        });
        Ok(())
    }

    async fn del_neighbour(&self, n: &Neighbour) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::DelNeighbour(*n));
            i.state
                .neighbours
                .retain(|o| !(o.index == n.index && o.ip == n.ip));
        });
        Ok(())
    }

    async fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        Ok(self.with(|i| {
            i.state
                .fdb
                .iter()
                .filter(|f| f.index == index)
                .copied()
                .collect()
        }))
    }

    async fn replace_fdb(&self, f: &FdbEntry) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::ReplaceFdb(*f));
            i.state
                .fdb
                .retain(|o| !(o.index == f.index && o.mac == f.mac));
            i.state.fdb.push(*f);
        });
        Ok(())
    }

    async fn del_fdb(&self, f: &FdbEntry) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::DelFdb(*f));
            i.state.fdb.retain(|o| o != f);
        });
        Ok(())
    }

    async fn set_tx_checksum_offload(&self, device: &str, on: bool) -> Result<()> {
        self.with(|i| {
            i.effects.push(NlEffect::TxChecksum {
                device: device.into(),
                on,
            })
        });
        Ok(())
    }
}
