//! Chain names: fixed top chains per table and hashed per-service/per-endpoint chains
//! (`<prefix>-<kind>-<base32 of sha256 of the identity>`, at most 28 characters, the kernel's
//! limit for a chain name).

use sha2::{Digest, Sha256};

/// Longest chain name iptables accepts.
pub(crate) const MAX_CHAIN: usize = 28;
/// Longest prefix [`crate::proxy::ProxyConfig::validate`] accepts.
pub(crate) const MAX_PREFIX: usize = 12;

/// Kinds of per-service chains (all in the nat table).
pub(crate) const KINDS: [&str; 5] = ["SVC", "SVL", "EXT", "FW", "SEP"];

/// Top chains per table (suffixes after `<prefix>-`).
pub(crate) const NAT_TOP: [&str; 4] = ["SERVICES", "NODEPORTS", "POSTROUTING", "MARK-MASQ"];
/// Filter table chains.
pub(crate) const FILTER_TOP: [&str; 6] = [
    "INPUT", "FORWARD", "OUTPUT", "SERVICES", "EXTERNAL", "FIREWALL",
];
/// Raw table chains.
pub(crate) const RAW_TOP: [&str; 2] = ["PREROUTING", "OUTPUT"];

/// One jump from a built-in chain to a top chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Jump {
    pub table: &'static str,
    pub builtin: &'static str,
    pub target: &'static str,
    pub comment: &'static str,
}

/// The jumps [`crate::proxy::RuleBackend::ensure_jumps`] ensures, in this order.
pub(crate) const JUMPS: [Jump; 8] = [
    Jump {
        table: "nat",
        builtin: "PREROUTING",
        target: "SERVICES",
        comment: "k8slite service portals",
    },
    Jump {
        table: "nat",
        builtin: "OUTPUT",
        target: "SERVICES",
        comment: "k8slite service portals",
    },
    Jump {
        table: "nat",
        builtin: "POSTROUTING",
        target: "POSTROUTING",
        comment: "k8slite postrouting rules",
    },
    Jump {
        table: "filter",
        builtin: "INPUT",
        target: "INPUT",
        comment: "k8slite service input",
    },
    Jump {
        table: "filter",
        builtin: "FORWARD",
        target: "FORWARD",
        comment: "k8slite forwarding rules",
    },
    Jump {
        table: "filter",
        builtin: "OUTPUT",
        target: "OUTPUT",
        comment: "k8slite service output",
    },
    Jump {
        table: "raw",
        builtin: "PREROUTING",
        target: "PREROUTING",
        comment: "k8slite node-local dns notrack",
    },
    Jump {
        table: "raw",
        builtin: "OUTPUT",
        target: "OUTPUT",
        comment: "k8slite node-local dns notrack",
    },
];

/// Whether `chain` (in `table`) is one of ours under `prefix`.
pub(crate) fn is_ours(prefix: &str, table: &str, chain: &str) -> bool {
    let Some(rest) = chain.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let top: &[&str] = match table {
        "nat" => &NAT_TOP,
        "filter" => &FILTER_TOP,
        "raw" => &RAW_TOP,
        _ => &[],
    };
    top.contains(&rest) || (table == "nat" && is_kind(rest))
}

/// Whether `rest` (a chain name after `<prefix>-`) is a per-service chain.
pub(crate) fn is_kind(rest: &str) -> bool {
    KINDS.iter().any(|k| {
        rest.strip_prefix(k)
            .is_some_and(|h| h.len() > 1 && h.starts_with('-'))
    })
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The hash of an identity: the first 80 bits of the sha256 of `parts` joined with NUL.
pub(crate) type Digest80 = [u8; 10];

/// [`Digest80`] of `parts`.
pub(crate) fn digest(parts: &[&[u8]]) -> Digest80 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    let full = h.finalize();
    let mut out = [0u8; 10];
    out.copy_from_slice(&full[..10]);
    out
}

/// `<prefix>-<kind>-<base32 of d>`, truncated to 28 characters.
pub(crate) fn name(prefix: &str, kind: &str, d: &Digest80) -> String {
    let hash_len = MAX_CHAIN
        .saturating_sub(prefix.len() + kind.len() + 2)
        .clamp(4, 16);
    let mut s = String::with_capacity(prefix.len() + kind.len() + 2 + hash_len);
    s.push_str(prefix);
    s.push('-');
    s.push_str(kind);
    s.push('-');
    let mut acc: u128 = 0;
    for b in d {
        acc = (acc << 8) | u128::from(*b);
    }
    for i in 0..hash_len {
        let shift = 75 - 5 * i;
        let idx = ((acc >> shift) & 31) as usize;
        s.push(char::from(B32[idx]));
    }
    s
}

/// `<prefix>-<kind>-<hash>` for the identity `parts`.
pub(crate) fn hashed(prefix: &str, kind: &str, parts: &[&[u8]]) -> String {
    name(prefix, kind, &digest(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_fit_and_differ() {
        let a = hashed("K8SLITE", "SVC", &[b"default/web:http/tcp"]);
        let b = hashed(
            "K8SLITE",
            "SEP",
            &[b"default/web:http/tcp", b"10.42.0.2:80"],
        );
        assert!(a.starts_with("K8SLITE-SVC-") && a.len() == 28, "{a}");
        assert!(b.starts_with("K8SLITE-SEP-") && b.len() == 28, "{b}");
        assert_ne!(a[12..], b[12..]);
        let long = hashed("ABCDEFGHIJKL", "SVC", &[b"x"]);
        assert!(long.len() <= MAX_CHAIN, "{long}");
        assert!(is_ours("K8SLITE", "nat", &a));
        assert!(is_ours("K8SLITE", "filter", "K8SLITE-FORWARD"));
        assert!(!is_ours("K8SLITE", "nat", "K8SLITE2-SVC-ABC"));
        assert!(!is_ours("K8SLITE", "filter", &a));
    }
}
