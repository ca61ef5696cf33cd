//! The dummy device that holds the cluster DNS address on each node (NodeLocal DNSCache
//! style).

use std::net::IpAddr;

use super::diff::{host_net, sync_addresses};
use super::nl::Netlink;
use super::{Result, RoutesError};

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
