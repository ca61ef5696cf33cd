//! The ownership graph and the garbage collector's decisions, without I/O.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Finalizer of an owner deleted with `propagationPolicy=Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an owner deleted with `propagationPolicy=Orphan`.
pub const ORPHAN: &str = "orphan";

/// One object of the graph (what the GC knows from its metadata).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Index of its resource in the GC's resource table.
    pub resource: usize,
    /// Namespace (None: cluster-scoped).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Its owner references.
    pub owners: Vec<OwnerReference>,
    /// Whether `deletionTimestamp` is set.
    pub deleting: bool,
    /// Its finalizers.
    pub finalizers: Vec<String>,
}

impl Node {
    /// A node from an object's metadata (None without a uid or name).
    pub fn from_meta(resource: usize, meta: &ObjectMeta) -> Option<Self> {
        Some(Self {
            resource,
            namespace: meta.namespace.clone(),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
        })
    }

    /// Whether the node waits for its dependents (foreground deletion in progress).
    pub fn waiting_for_dependents(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == FOREGROUND)
    }

    /// Whether the node orphans its dependents before it goes.
    pub fn orphaning(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == ORPHAN)
    }
}

/// The graph of owner references: objects by uid and, per owner uid, its dependents.
#[derive(Default, Debug)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    /// The node with `uid`.
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The uids of the objects of `resource`.
    pub fn uids_of(&self, resource: usize) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.resource == resource)
            .map(|n| n.uid.clone())
            .collect()
    }

    /// The dependents of the owner with `uid` (that are in the graph).
    pub fn dependents_of(&self, uid: &str) -> Vec<&Node> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .collect()
    }

    /// Add or update a node; returns the uids to (re)check.
    pub fn upsert(&mut self, node: Node) -> BTreeSet<String> {
        let mut dirty = BTreeSet::new();
        let old = self.nodes.get(&node.uid).cloned();
        if let Some(old) = &old {
            if old == &node {
                return dirty;
            }
            for o in &old.owners {
                if let Some(set) = self.dependents.get_mut(&o.uid) {
                    set.remove(&node.uid);
                }
                dirty.insert(o.uid.clone());
            }
        }
        let state_changed = old
            .as_ref()
            .is_none_or(|o| o.deleting != node.deleting || o.finalizers != node.finalizers);
        if state_changed {
            dirty.extend(
                self.dependents
                    .get(&node.uid)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(node.uid.clone());
            dirty.insert(o.uid.clone());
        }
        dirty.insert(node.uid.clone());
        self.nodes.insert(node.uid.clone(), node);
        dirty.retain(|u| self.nodes.contains_key(u));
        dirty
    }

    /// Remove a node (it was deleted); returns the uids to recheck (its dependents and owners).
    pub fn remove(&mut self, uid: &str) -> BTreeSet<String> {
        let mut dirty = BTreeSet::new();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(set) = self.dependents.get_mut(&o.uid) {
                    set.remove(uid);
                    if set.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
                dirty.insert(o.uid.clone());
            }
        }
        dirty.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        dirty.retain(|u| self.nodes.contains_key(u));
        dirty
    }
}

/// What the GC knows about one owner of a dependent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists with the referenced uid.
    Present,
    /// The owner exists and is being deleted in the foreground (waits for its dependents).
    Waiting,
    /// No object with that uid exists (404 or another uid under that name).
    Absent,
}

/// What to do with a dependent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DependentAction {
    /// Nothing.
    Keep,
    /// Delete it; in the foreground when an owner waits for it.
    Delete {
        /// Foreground propagation.
        foreground: bool,
    },
    /// Some owners remain: drop the references to absent owners, and stop blocking owners that
    /// wait in the foreground (this dependent will not be deleted for them).
    Patch {
        /// Owner uids whose references go.
        remove: Vec<String>,
        /// Owner uids whose references get `blockOwnerDeletion: false`.
        unblock: Vec<String>,
    },
}

/// Decide about a dependent given the state of each of its owners (same order as its refs).
pub fn decide_dependent(node: &Node, owners: &[OwnerState]) -> DependentAction {
    if node.deleting || node.owners.is_empty() {
        return DependentAction::Keep;
    }
    let refs = node.owners.iter().zip(owners.iter().copied());
    let solid = refs.clone().any(|(_, s)| s == OwnerState::Present);
    let waiting: Vec<&OwnerReference> = refs
        .clone()
        .filter(|(_, s)| *s == OwnerState::Waiting)
        .map(|(r, _)| r)
        .collect();
    let absent: Vec<String> = refs
        .filter(|(_, s)| *s == OwnerState::Absent)
        .map(|(r, _)| r.uid.clone())
        .collect();
    if solid {
        let unblock: Vec<String> = waiting
            .iter()
            .filter(|r| r.block_owner_deletion == Some(true))
            .map(|r| r.uid.clone())
            .collect();
        if absent.is_empty() && unblock.is_empty() {
            DependentAction::Keep
        } else {
            DependentAction::Patch {
                remove: absent,
                unblock,
            }
        }
    } else {
        DependentAction::Delete {
            foreground: !waiting.is_empty(),
        }
    }
}

/// What to do with an owner being deleted with one of the GC's finalizers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerAction {
    /// Nothing (yet).
    Wait,
    /// Remove the references to the owner from these dependents (uids), then the `orphan`
    /// finalizer.
    Orphan(Vec<String>),
    /// All blocking dependents are gone: remove this finalizer.
    RemoveFinalizer(&'static str),
}

/// Decide about an owner from its dependents in the graph.
pub fn decide_owner(node: &Node, dependents: &[&Node]) -> OwnerAction {
    if node.orphaning() {
        return OwnerAction::Orphan(dependents.iter().map(|d| d.uid.clone()).collect());
    }
    if node.waiting_for_dependents() {
        let blocking = dependents.iter().any(|d| {
            d.owners
                .iter()
                .any(|r| r.uid == node.uid && r.block_owner_deletion == Some(true))
        });
        if !blocking {
            return OwnerAction::RemoveFinalizer(FOREGROUND);
        }
    }
    OwnerAction::Wait
}

/// A dependent's owner references after dropping `remove` and unblocking `unblock`.
pub fn patched_owner_refs(
    refs: &[OwnerReference],
    remove: &[String],
    unblock: &[String],
) -> Vec<OwnerReference> {
    refs.iter()
        .filter(|r| !remove.contains(&r.uid))
        .cloned()
        .map(|mut r| {
            if unblock.contains(&r.uid) {
                r.block_owner_deletion = Some(false);
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("n-{uid}"),
            uid: uid.into(),
            block_owner_deletion: block.then_some(true),
            controller: None,
        }
    }

    fn node(uid: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            resource: 0,
            namespace: Some("default".into()),
            name: format!("n-{uid}"),
            uid: uid.into(),
            owners,
            deleting: false,
            finalizers: vec![],
        }
    }

    #[test]
    fn graph_tracks_dependents_and_dirties() {
        let mut g = Graph::default();
        g.upsert(node("a", vec![]));
        let dirty = g.upsert(node("b", vec![oref("a", false)]));
        assert!(dirty.contains("a") && dirty.contains("b"));
        assert_eq!(g.dependents_of("a").len(), 1);
        // an unchanged update dirties nothing
        assert!(g.upsert(node("b", vec![oref("a", false)])).is_empty());
        // the owner starts a foreground deletion: its dependents are rechecked
        let mut a = node("a", vec![]);
        a.deleting = true;
        a.finalizers = vec![FOREGROUND.into()];
        let dirty = g.upsert(a);
        assert!(dirty.contains("b"));
        // the owner goes: the dependent is rechecked
        let dirty = g.remove("a");
        assert_eq!(dirty, BTreeSet::from(["b".to_string()]));
        // the dependent goes: nothing left to check, index cleaned
        g.remove("b");
        assert!(g.dependents_of("a").is_empty() && g.is_empty());
    }

    #[test]
    fn dependent_decisions() {
        let n = node("d", vec![oref("a", true), oref("b", false)]);
        use OwnerState::*;
        assert_eq!(
            decide_dependent(&n, &[Present, Present]),
            DependentAction::Keep
        );
        assert_eq!(
            decide_dependent(&n, &[Absent, Absent]),
            DependentAction::Delete { foreground: false }
        );
        assert_eq!(
            decide_dependent(&n, &[Waiting, Absent]),
            DependentAction::Delete { foreground: true }
        );
        assert_eq!(
            decide_dependent(&n, &[Absent, Present]),
            DependentAction::Patch {
                remove: vec!["a".into()],
                unblock: vec![]
            }
        );
        assert_eq!(
            decide_dependent(&n, &[Waiting, Present]),
            DependentAction::Patch {
                remove: vec![],
                unblock: vec!["a".into()]
            }
        );
        let mut gone = n.clone();
        gone.deleting = true;
        assert_eq!(
            decide_dependent(&gone, &[Absent, Absent]),
            DependentAction::Keep
        );
        let refs = patched_owner_refs(&n.owners, &["b".into()], &["a".into()]);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].block_owner_deletion, Some(false));
    }

    #[test]
    fn owner_decisions() {
        let mut owner = node("a", vec![]);
        owner.deleting = true;
        owner.finalizers = vec![FOREGROUND.into()];
        let blocking = node("b", vec![oref("a", true)]);
        let loose = node("c", vec![oref("a", false)]);
        assert_eq!(
            decide_owner(&owner, &[&blocking, &loose]),
            OwnerAction::Wait
        );
        assert_eq!(
            decide_owner(&owner, &[&loose]),
            OwnerAction::RemoveFinalizer(FOREGROUND)
        );
        owner.finalizers = vec![ORPHAN.into()];
        assert_eq!(
            decide_owner(&owner, &[&blocking, &loose]),
            OwnerAction::Orphan(vec!["b".into(), "c".into()])
        );
        owner.deleting = false;
        assert_eq!(decide_owner(&owner, &[&blocking]), OwnerAction::Wait);
    }
}
