//! Partial restores (kube-proxy's "minimize iptables-restore", our own take): the full text
//! is parsed into per-table, per-chain rule blocks; the next sync writes only the chains whose
//! block changed or that are new, plus the deletions, and skips tables where nothing changed.
//!
//! Why this is correct with `iptables-restore --noflush`: chains the input does not mention
//! are kept as they are; a chain that is declared is flushed and refilled with exactly its new
//! block. A chain whose block is unchanged holds, on the host, what the last successful restore
//! wrote (the snapshot is only advanced after a successful restore; after a failure the next
//! sync is full). A chain that stops being referenced or starts referencing another changes its
//! own block, so it is rewritten in the same transaction as the chains it points to are
//! created or deleted (chain names are hashes of identities: the same name always means the
//! same service port / endpoint). Something else flushing our chains is repaired by the
//! periodic full sync of the proxier.
//!
//! Memory: the applied [`Snapshot`] keeps no rule text, only per table a map from a 64-bit
//! hash of each chain's name to a 64-bit hash of its block (std's `DefaultHasher`, SipHash-1-3
//! with fixed keys: the input is our own text, not an adversary's; two different blocks of one
//! chain hashing alike has probability 2⁻⁶⁴ per changed chain). The text of the changed chains
//! is taken from the new full text, which each sync renders anyway.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

/// The 64-bit hash of a chain name.
fn name_hash(chain: &str) -> u64 {
    let mut h = DefaultHasher::new();
    chain.hash(&mut h);
    h.finish()
}

/// The chain of a `-A <chain> …` line (after `-A `).
fn chain_of(rule: &str) -> &str {
    rule.split(' ').next().unwrap_or(rule)
}

/// One table of a parsed text (borrowing the text).
#[derive(Debug)]
struct ParsedTable<'t> {
    name: &'t str,
    /// Byte range of the table's lines in the text (after `*name`, before `COMMIT`).
    body: (usize, usize),
    /// Declared (or appended-to) chains in order, with the running hash of their `-A` lines.
    chains: Vec<(&'t str, DefaultHasher)>,
    index: HashMap<&'t str, usize>,
    /// Chains deleted (`-X`) by the text.
    deletes: Vec<&'t str>,
}

/// A full text of [`crate::proxy::render`], split into tables and per-chain block hashes.
#[derive(Debug)]
pub(crate) struct Parsed<'t> {
    text: &'t str,
    tables: Vec<ParsedTable<'t>>,
}

impl<'t> Parsed<'t> {
    /// Parse a text (declarations, `-A`, `-X`, `COMMIT`).
    pub(crate) fn new(text: &'t str) -> Self {
        let mut tables: Vec<ParsedTable<'t>> = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            offset += line.len();
            let line = line.strip_suffix('\n').unwrap_or(line);
            if let Some(name) = line.strip_prefix('*') {
                tables.push(ParsedTable {
                    name,
                    body: (offset, offset),
                    chains: Vec::new(),
                    index: HashMap::new(),
                    deletes: Vec::new(),
                });
                continue;
            }
            let Some(t) = tables.last_mut() else {
                continue;
            };
            if line == "COMMIT" {
                continue;
            }
            t.body.1 = offset;
            if let Some(decl) = line.strip_prefix(':') {
                let chain = decl.split(' ').next().unwrap_or(decl);
                if !t.index.contains_key(chain) {
                    t.index.insert(chain, t.chains.len());
                    t.chains.push((chain, DefaultHasher::new()));
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let chain = chain_of(rule);
                let i = match t.index.get(chain) {
                    Some(i) => *i,
                    None => {
                        // Not declared (never in our texts): keep it anyway.
                        t.index.insert(chain, t.chains.len());
                        t.chains.push((chain, DefaultHasher::new()));
                        t.chains.len() - 1
                    }
                };
                t.chains[i].1.write(line.as_bytes());
                t.chains[i].1.write_u8(b'\n');
            } else if let Some(c) = line.strip_prefix("-X ") {
                t.deletes.push(c.trim());
            }
        }
        Self { text, tables }
    }

    /// What the host holds once this text is restored (chains deleted by it left out).
    pub(crate) fn snapshot(&self) -> Snapshot {
        let tables = self
            .tables
            .iter()
            .map(|t| {
                let gone: HashSet<&str> = t.deletes.iter().copied().collect();
                let chains = t
                    .chains
                    .iter()
                    .filter(|(c, _)| !gone.contains(c))
                    .map(|(c, h)| (name_hash(c), h.finish()))
                    .collect();
                (t.name.to_string(), chains)
            })
            .collect();
        Snapshot { tables }
    }
}

/// The per-chain block hashes of what the host holds after a restore: per table, chain name
/// hash → block hash.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    tables: Vec<(String, HashMap<u64, u64>)>,
}

impl Snapshot {
    /// The snapshot of a full text.
    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Self {
        Parsed::new(text).snapshot()
    }

    /// Chains remembered (all tables).
    #[cfg(test)]
    pub(crate) fn chains(&self) -> usize {
        self.tables.iter().map(|(_, c)| c.len()).sum()
    }

    /// The restore text that turns the host from `self` (the last applied snapshot) into
    /// `new` (a parsed full text, with its `-X` lines): changed and new chains declared and
    /// refilled, deletions, untouched tables left out. Empty when nothing changed.
    pub(crate) fn diff(&self, new: &Parsed<'_>) -> String {
        let mut out = String::new();
        for t in &new.tables {
            let old = self
                .tables
                .iter()
                .find(|(name, _)| name == t.name)
                .map(|(_, c)| c);
            // Chains the text deletes are only declared and deleted.
            let gone: HashSet<&str> = t.deletes.iter().copied().collect();
            let changed: HashSet<&str> = t
                .chains
                .iter()
                .filter(|(c, _)| !gone.contains(c))
                .filter(|(c, h)| old.and_then(|o| o.get(&name_hash(c))) != Some(&h.finish()))
                .map(|(c, _)| *c)
                .collect();
            if changed.is_empty() && t.deletes.is_empty() {
                continue;
            }
            out.push('*');
            out.push_str(t.name);
            out.push('\n');
            // Declarations in the text's order.
            for (c, _) in t.chains.iter().filter(|(c, _)| changed.contains(c)) {
                out.push(':');
                out.push_str(c);
                out.push_str(" - [0:0]\n");
            }
            for c in &t.deletes {
                out.push(':');
                out.push_str(c);
                out.push_str(" - [0:0]\n");
            }
            // The changed chains' rules, in the text's order.
            let body = new.text.get(t.body.0..t.body.1).unwrap_or_default();
            for line in body.lines() {
                if let Some(rule) = line.strip_prefix("-A ")
                    && changed.contains(chain_of(rule))
                {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            for c in &t.deletes {
                out.push_str("-X ");
                out.push_str(c);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "*filter\n:P-A - [0:0]\n:P-B - [0:0]\n-A P-A -j ACCEPT\n-A P-B -j DROP\n-A P-A -j RETURN\nCOMMIT\n*nat\n:P-S - [0:0]\n:P-SVC-X - [0:0]\n-A P-S -j P-SVC-X\n-A P-SVC-X -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n";

    #[test]
    fn unchanged_text_diffs_to_nothing_and_the_snapshot_keeps_hashes_only() {
        let s = Snapshot::parse(V1);
        assert_eq!(s.chains(), 4);
        assert_eq!(s.diff(&Parsed::new(V1)), "");
        // Two u64 per chain: no rule text is kept.
        assert!(s.tables.iter().all(|(_, c)| c.len() == 2));
    }

    #[test]
    fn only_changed_chains_are_written_with_their_rules_in_order() {
        let s = Snapshot::parse(V1);
        let v2 = V1.replace("-A P-A -j RETURN", "-A P-A -j DROP");
        let d = s.diff(&Parsed::new(&v2));
        assert_eq!(
            d,
            "*filter\n:P-A - [0:0]\n-A P-A -j ACCEPT\n-A P-A -j DROP\nCOMMIT\n"
        );
        // A chain's rules moving between chains changes both (same lines, other owners).
        let v3 = V1.replace(
            "-A P-B -j DROP\n-A P-A -j RETURN",
            "-A P-B -j DROP\n-A P-B -j RETURN",
        );
        let d = s.diff(&Parsed::new(&v3));
        assert!(
            d.contains(":P-A - [0:0]") && d.contains(":P-B - [0:0]"),
            "{d}"
        );
        assert!(!d.contains("*nat"), "{d}");
    }

    #[test]
    fn deleted_chains_are_declared_deleted_and_forgotten() {
        let s = Snapshot::parse(V1);
        let v2 = "*nat\n:P-S - [0:0]\n:P-SVC-X - [0:0]\n-A P-S -j RETURN\n-X P-SVC-X\nCOMMIT\n";
        let p = Parsed::new(v2);
        let d = s.diff(&p);
        assert_eq!(
            d,
            "*nat\n:P-S - [0:0]\n:P-SVC-X - [0:0]\n-A P-S -j RETURN\n-X P-SVC-X\nCOMMIT\n"
        );
        let after = p.snapshot();
        assert_eq!(after.chains(), 1);
        // Declaring it again later is a change (it is not on the host).
        let d = after.diff(&Parsed::new(V1));
        assert!(d.contains(":P-SVC-X - [0:0]") && d.contains("DNAT"), "{d}");
    }

    #[test]
    fn an_empty_chain_that_gets_rules_is_written() {
        let empty = "*raw\n:P-PREROUTING - [0:0]\nCOMMIT\n";
        let s = Snapshot::parse(empty);
        assert_eq!(s.diff(&Parsed::new(empty)), "");
        let full = "*raw\n:P-PREROUTING - [0:0]\n-A P-PREROUTING -j NOTRACK\nCOMMIT\n";
        assert_eq!(s.diff(&Parsed::new(full)), full);
        assert_eq!(Snapshot::parse(full).diff(&Parsed::new(empty)), empty);
    }
}
