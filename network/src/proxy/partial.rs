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

use std::collections::HashMap;

/// One table of a rendered text.
#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    name: String,
    /// Declared chains in order, with their `-A` lines (order within a chain kept).
    chains: Vec<(String, String)>,
    /// Index into `chains` by name.
    index: HashMap<String, usize>,
    /// Chains deleted (`-X`) by the text.
    deletes: Vec<String>,
}

/// The per-chain blocks of a full text (what the host holds after it was restored).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    tables: Vec<Table>,
}

impl Snapshot {
    /// Parse a text of [`crate::proxy::render`] (declarations, `-A`, `-X`, `COMMIT`).
    pub(crate) fn parse(text: &str) -> Self {
        let mut tables: Vec<Table> = Vec::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix('*') {
                tables.push(Table {
                    name: name.to_string(),
                    ..Table::default()
                });
                continue;
            }
            let Some(t) = tables.last_mut() else {
                continue;
            };
            if let Some(decl) = line.strip_prefix(':') {
                let chain = decl.split(' ').next().unwrap_or(decl);
                if !t.index.contains_key(chain) {
                    t.index.insert(chain.to_string(), t.chains.len());
                    t.chains.push((chain.to_string(), String::new()));
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let chain = rule.split(' ').next().unwrap_or(rule);
                let i = match t.index.get(chain) {
                    Some(i) => *i,
                    None => {
                        // Not declared (never in our texts): keep it anyway.
                        t.index.insert(chain.to_string(), t.chains.len());
                        t.chains.push((chain.to_string(), String::new()));
                        t.chains.len() - 1
                    }
                };
                let block = &mut t.chains[i].1;
                block.push_str(line);
                block.push('\n');
            } else if let Some(c) = line.strip_prefix("-X ") {
                t.deletes.push(c.trim().to_string());
            }
        }
        // Chains deleted by the text are not on the host afterwards.
        for t in &mut tables {
            if t.deletes.is_empty() {
                continue;
            }
            let gone: std::collections::HashSet<&str> =
                t.deletes.iter().map(String::as_str).collect();
            t.chains.retain(|(c, _)| !gone.contains(c.as_str()));
            t.index = t
                .chains
                .iter()
                .enumerate()
                .map(|(i, (c, _))| (c.clone(), i))
                .collect();
        }
        Self { tables }
    }

    /// The restore text that turns the host from `self` (the last applied snapshot) into
    /// `new` (parsed from a full text, with its `-X` lines): changed
    /// and new chains declared and refilled, deletions, untouched tables left out. Empty when
    /// nothing changed.
    pub(crate) fn diff(&self, new: &Snapshot) -> String {
        let mut out = String::new();
        for t in &new.tables {
            let old = self.tables.iter().find(|o| o.name == t.name);
            let deletes = &t.deletes;
            let changed: Vec<&(String, String)> = t
                .chains
                .iter()
                .filter(|(c, block)| {
                    old.and_then(|o| o.index.get(c).map(|i| &o.chains[*i].1)) != Some(block)
                })
                .collect();
            if changed.is_empty() && deletes.is_empty() {
                continue;
            }
            out.push('*');
            out.push_str(&t.name);
            out.push('\n');
            for (c, _) in &changed {
                out.push(':');
                out.push_str(c);
                out.push_str(" - [0:0]\n");
            }
            for c in deletes {
                out.push(':');
                out.push_str(c);
                out.push_str(" - [0:0]\n");
            }
            for (_, block) in &changed {
                out.push_str(block);
            }
            for c in deletes {
                out.push_str("-X ");
                out.push_str(c);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}
