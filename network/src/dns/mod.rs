//! Node-local cluster DNS: an embedded DNS server (wire format from `hickory-proto`, our own
//! UDP thread and TCP loops) that answers the cluster domain as CoreDNS's `kubernetes` plugin does with
//! k3s's Corefile (`pods insecure`, `fallthrough in-addr.arpa ip6.arpa`, TTL 5) and forwards
//! every other name to the node's resolvers through a bounded cache.
//!
//! The agent builds [`Records`] from its watch cache (Services and EndpointSlices as plain
//! values) and hands them to the running server through a [`RecordsHandle`]; nothing here talks
//! to the API server, so the last records keep being served while it is unreachable.
//!
//! - [`records`]: the index of one snapshot and the lookup of a cluster name.
//! - [`forward`]: upstream queries (UDP, TCP, failover) and the answer cache.
//! - [`server`]: sockets, request parsing, answers, truncation.

mod forward;
mod records;
mod server;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::print_stderr)]
// tests: a panic is the failure report; rough figures printed
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use records::{Records, SnapshotError};
pub use server::{DnsServer, RecordsHandle};

/// Errors of the cluster DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listen socket could not be bound.
    #[error("binding {proto} {addr}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The thread serving a UDP socket could not be started.
    #[error("starting the dns udp thread")]
    Thread {
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("dns configuration: {0}")]
    Config(String),
}

/// Result of the DNS server.
pub type Result<T, E = DnsError> = std::result::Result<T, E>;

/// Settings of the DNS server.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Addresses to serve on, UDP and TCP each (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Resolvers for every other name, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// Entries of the forwarding cache (0 disables it).
    pub cache_entries: usize,
    /// TTL of the cluster records (CoreDNS's default: 5 s).
    pub ttl: u32,
    /// How long one upstream gets to answer before the next is tried.
    pub upstream_timeout: Duration,
}

impl DnsConfig {
    /// Settings with a 10,000-entry cache, TTL 5 and a 2 s upstream timeout.
    pub fn new(
        listen: Vec<SocketAddr>,
        cluster_domain: impl Into<String>,
        upstreams: Vec<SocketAddr>,
    ) -> Self {
        Self {
            listen,
            cluster_domain: cluster_domain.into(),
            upstreams,
            cache_entries: 10_000,
            ttl: 5,
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

/// The `nameserver` lines of a resolv.conf as port-53 addresses, in order (an IPv6 zone such
/// as `%eth0` is dropped; malformed lines are skipped).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let addr = addr.split('%').next().unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let sa = SocketAddr::new(ip, 53);
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod conf_tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver  fd00::1%eth0\n\
                    nameserver bogus\noptions edns0\n nameserver 10.0.0.2 # trailing\nnameserver 127.0.0.53\n";
        let got = upstreams_from_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fd00::1]:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap(),
            ]
        );
        let cfg = DnsConfig::new(vec![], "cluster.local", got);
        assert_eq!((cfg.cache_entries, cfg.ttl), (10_000, 5));
    }
}
