//! Sweeping garbage without ever leaving a stored node with a missing descendant.
//!
//! Readers of a store rely on one rule: **a stored node's whole subtree is stored**. A client told
//! that the server has a directory node asks nothing about what lies under it, and a commit's
//! verification stops at nodes its folder committed before. Deleting unreferenced objects in any
//! order breaks that rule for a while: a collection cut short after a child but before its parent,
//! or a parent refreshed (a deduplicating upload, a "stored" answer to a client) after its children
//! went, leaves a node whose subtree has holes, and a commit naming it would be accepted.
//!
//! So a sweep deletes parents before what they reference ([`Garbage::order`]), and a node it
//! keeps (young, or refreshed while the sweep runs) keeps everything under it. The rule then holds
//! after every single deletion, whenever the sweep stops.
//!
//! Which unreferenced objects are nodes is found by [`garbage_nodes`]: every one is peeked at
//! ([`BlockStore::peek`], two bytes), and only those that could start a node are read and
//! decoded. The planning and the sweep are pure: deletion is a closure, so the rule is checked by
//! a property test over random graphs, refreshes and interruptions.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::node::Node;
use crate::{BlockId, BlockStore, Error, Result};

/// Unreferenced objects in the order a sweep deletes them.
#[derive(Debug, Default)]
pub struct Garbage {
    /// Nodes parents first, then every other object.
    order: Vec<BlockId>,
    /// What each unreferenced node references.
    references: HashMap<BlockId, Vec<BlockId>>,
    /// Objects never to delete in this sweep: nodes the order could not place (a reference
    /// cycle, which hashing rules out) and what they reference.
    held: HashSet<BlockId>,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Objects deleted.
    pub deleted: u64,
    /// Objects kept because they were too young.
    pub young: u64,
    /// Objects kept because a node kept in this sweep references them, directly or below.
    pub sheltered: u64,
}

impl Garbage {
    /// Orders `candidates` (the unreferenced objects) for a sweep. `nodes` holds those of them
    /// that are nodes, with what each references; references outside `candidates` are live and
    /// play no part.
    pub fn plan(candidates: Vec<BlockId>, mut nodes: HashMap<BlockId, Vec<BlockId>>) -> Garbage {
        let unreferenced: HashSet<BlockId> = candidates.iter().copied().collect();
        nodes.retain(|id, _| unreferenced.contains(id));
        let (waves, mut unplaced) = waves(&nodes);
        let mut order: Vec<BlockId> = Vec::with_capacity(candidates.len());
        order.extend(waves.into_iter().flatten());
        // Unplaced nodes (a reference cycle, which hashing rules out) are never deleted, nor is
        // anything under them.
        unplaced.sort_unstable();
        order.extend_from_slice(&unplaced);
        let mut garbage = Garbage {
            order,
            references: nodes,
            held: HashSet::new(),
        };
        let mut held: HashSet<BlockId> = unplaced.iter().copied().collect();
        for id in &unplaced {
            garbage.shelter_under(id, &mut held);
        }
        garbage.held = held;
        garbage.order.extend(
            candidates
                .into_iter()
                .filter(|id| !garbage.references.contains_key(id)),
        );
        garbage
    }

    /// The deletion order: every unreferenced node before anything it references.
    pub fn order(&self) -> &[BlockId] {
        &self.order
    }

    /// Deletes in order through `delete`, which answers as `BlockStore` collectors do: `Some(true)`
    /// deleted, `Some(false)` kept as too young, `None` not stored. Whatever a kept node
    /// references is kept too, all the way down.
    ///
    /// # Errors
    /// The first error of `delete`; what was deleted before it stays deleted, and the rule holds.
    pub fn sweep<E>(
        &self,
        delete: impl FnMut(&BlockId) -> std::result::Result<Option<bool>, E>,
    ) -> std::result::Result<Swept, E> {
        self.sweep_keeping(delete).map(|(swept, _)| swept)
    }

    /// [`Garbage::sweep`], also returning everything under the nodes it kept (a node kept is
    /// still stored, so its subtree must stay stored: a bucket's trash puts back what of it was
    /// trashed before).
    ///
    /// # Errors
    /// As [`Garbage::sweep`].
    pub fn sweep_keeping<E>(
        &self,
        mut delete: impl FnMut(&BlockId) -> std::result::Result<Option<bool>, E>,
    ) -> std::result::Result<(Swept, HashSet<BlockId>), E> {
        let mut swept = Swept::default();
        let mut kept = self.held.clone();
        for id in &self.order {
            if kept.contains(id) {
                swept.sheltered += 1;
                continue;
            }
            match delete(id)? {
                Some(true) => swept.deleted += 1,
                Some(false) => {
                    swept.young += 1;
                    self.shelter_under(id, &mut kept);
                }
                None => {}
            }
        }
        // Everything under a node kept young, all the way down through the unreferenced nodes
        // (which is what `kept` gathered), whether or not the store still lists it.
        Ok((swept, kept))
    }

    /// Adds everything under `id` (through unreferenced nodes) to `kept`.
    fn shelter_under(&self, id: &BlockId, kept: &mut HashSet<BlockId>) {
        let mut stack = vec![*id];
        while let Some(node) = stack.pop() {
            for child in self.references.get(&node).into_iter().flatten() {
                if kept.insert(*child) {
                    stack.push(*child);
                }
            }
        }
    }
}

/// The nodes `nodes` (each with what it references) in waves: each node after every node of
/// `nodes` that references it, so deleting wave by wave deletes parents first. Nodes no wave can
/// take (a reference cycle, which hashing rules out) are returned apart. References outside
/// `nodes` play no part.
#[must_use]
pub fn waves(nodes: &HashMap<BlockId, Vec<BlockId>>) -> (Vec<Vec<BlockId>>, Vec<BlockId>) {
    let mut parents: HashMap<BlockId, usize> = nodes.keys().map(|id| (*id, 0)).collect();
    for children in nodes.values() {
        for child in children {
            if let Some(count) = parents.get_mut(child) {
                *count += 1;
            }
        }
    }
    let mut wave: Vec<BlockId> = parents
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut waves = Vec::new();
    let mut placed = 0;
    while !wave.is_empty() {
        wave.sort_unstable();
        let mut next = Vec::new();
        for id in &wave {
            for child in &nodes[id] {
                if let Some(count) = parents.get_mut(child) {
                    *count -= 1;
                    if *count == 0 {
                        next.push(*child);
                    }
                }
            }
        }
        placed += wave.len();
        waves.push(std::mem::replace(&mut wave, next));
    }
    let unplaced = if placed == nodes.len() {
        Vec::new()
    } else {
        let done: HashSet<&BlockId> = waves.iter().flatten().collect();
        nodes
            .keys()
            .filter(|id| !done.contains(id))
            .copied()
            .collect()
    };
    (waves, unplaced)
}

/// Which of `candidates` are nodes, with what each references. Each candidate is peeked at;
/// one that could start a node is read (hash-checked) and decoded. A candidate gone meanwhile,
/// or one whose bytes do not verify or decode, is no node.
///
/// # Errors
/// Store errors other than a missing or corrupt block: a collector that cannot tell nodes from
/// data must not delete.
pub fn garbage_nodes(
    store: &(impl BlockStore + ?Sized),
    candidates: &[BlockId],
) -> Result<HashMap<BlockId, Vec<BlockId>>> {
    let found: Vec<Option<(BlockId, Vec<BlockId>)>> = candidates
        .par_iter()
        .map(|id| {
            let prefix = match store.peek(id, 2) {
                Ok(prefix) => prefix,
                Err(Error::BlockMissing(_) | Error::BlockCorrupt { .. }) => return Ok(None),
                Err(err) => return Err(err),
            };
            if !Node::may_start(&prefix) {
                return Ok(None);
            }
            let bytes = match store.get(id) {
                Ok(bytes) => bytes,
                Err(Error::BlockMissing(_) | Error::BlockCorrupt { .. }) => return Ok(None),
                Err(err) => return Err(err),
            };
            Ok(Node::decode(&bytes)
                .ok()
                .map(|node| (*id, node.references())))
        })
        .collect::<Result<_>>()?;
    Ok(found.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeStore;
    use crate::mem::MemBlockStore;
    use crate::node::{DirEntry, DirLeaf, EntryKind, FileNode, Name};
    use proptest::prelude::*;

    fn id(n: u32) -> BlockId {
        BlockId::of(&n.to_le_bytes())
    }

    /// A random DAG: object `i` may reference only objects above it, so ids follow a
    /// topological order the plan must not rely on (they are hashed).
    fn graph() -> impl Strategy<Value = (usize, Vec<(usize, Vec<usize>)>)> {
        (2usize..40).prop_flat_map(|n| {
            let nodes =
                proptest::collection::vec((0..n, proptest::collection::vec(0..n, 0..6)), 0..n);
            (Just(n), nodes)
        })
    }

    // `PROPTEST_CASES` cases (256 by default); a longer run: `PROPTEST_CASES=20000 cargo test
    // -p cairn-store gc`.
    proptest! {
        /// After every deletion of a sweep (so wherever it is cut short), every stored node's
        /// references are stored; young objects and refreshes mid-sweep included. And a sweep
        /// with nothing young deletes every candidate.
        #[test]
        fn a_stored_node_never_loses_a_descendant(
            (n, raw) in graph(),
            young in proptest::collection::hash_set(0usize..40, 0..8),
            refreshes in proptest::collection::vec((0usize..80, 0usize..40), 0..6),
            stop_after in 0usize..80,
        ) {
            // Node i references only j > i: acyclic, as hashes make real trees.
            let mut nodes: HashMap<BlockId, Vec<BlockId>> = HashMap::new();
            for (i, children) in raw {
                let children: Vec<BlockId> =
                    children.into_iter().filter(|c| *c > i).map(|c| id(c as u32)).collect();
                nodes.entry(id(i as u32)).or_default().extend(children);
            }
            let candidates: Vec<BlockId> = (0..n).map(|i| id(i as u32)).collect();
            let mut stored: HashSet<BlockId> = candidates.iter().copied().collect();
            let mut young: HashSet<BlockId> =
                young.into_iter().filter(|i| *i < n).map(|i| id(i as u32)).collect();
            let garbage = Garbage::plan(candidates.clone(), nodes.clone());
            prop_assert_eq!(garbage.order().len(), n);

            let holds = |stored: &HashSet<BlockId>| {
                nodes.iter().all(|(node, children)| {
                    !stored.contains(node) || children.iter().all(|c| stored.contains(c))
                })
            };
            let mut step = 0usize;
            let result = garbage.sweep_keeping(|victim| {
                // A refresh (an upload deduplicating, a "stored" answer) between two deletions.
                for (at, target) in &refreshes {
                    if *at == step && *target < n && stored.contains(&id(*target as u32)) {
                        young.insert(id(*target as u32));
                    }
                }
                step += 1;
                if step > stop_after {
                    return Err("cut short");
                }
                if !stored.contains(victim) {
                    return Ok(None);
                }
                if young.contains(victim) {
                    return Ok(Some(false));
                }
                stored.remove(victim);
                assert!(holds(&stored), "a stored node lost a descendant at step {step}");
                Ok(Some(true))
            });
            prop_assert!(holds(&stored));
            if result.is_ok() && young.is_empty() && refreshes.is_empty() {
                prop_assert!(stored.is_empty(), "{} left", stored.len());
            }
            if let Ok((swept, under_kept)) = result {
                prop_assert_eq!(swept.deleted as usize, n - stored.len());
                // What every node still stored references is reported, all the way down: a
                // bucket's trash must keep (or put back) all of it.
                for (node, children) in &nodes {
                    if stored.contains(node) && young.contains(node) {
                        let mut stack = children.clone();
                        while let Some(child) = stack.pop() {
                            prop_assert!(under_kept.contains(&child), "{child} not reported");
                            stack.extend(nodes.get(&child).into_iter().flatten().copied());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_young_directory_keeps_its_old_subtree_and_old_garbage_goes() {
        let store = MemBlockStore::new();
        let data = store.put(b"file contents").expect("put").id;
        let file = Node::File(
            FileNode::new(0o644, 1, vec![crate::node::BlockRef { id: data, len: 13 }])
                .expect("file"),
        );
        let (file_id, _) = store.put_node(&file).expect("put");
        let entry = |name: &str| DirEntry {
            name: Name::new(name.as_bytes().to_vec()).expect("name"),
            kind: EntryKind::File,
            size: 13,
            mtime_ns: 1,
            mode: 0o644,
            child: file_id,
        };
        let (dir, _) = store
            .put_node(&Node::DirLeaf(DirLeaf::new(vec![entry("a")]).expect("dir")))
            .expect("put");
        let lone = store.put(b"nobody names me").expect("put").id;
        let candidates = store.list().expect("list");
        let nodes = garbage_nodes(&store, &candidates).expect("nodes");
        assert_eq!(nodes.len(), 2, "the directory and the file node: {nodes:?}");
        assert_eq!(nodes[&BlockId::from(dir)], vec![BlockId::from(file_id)]);
        assert_eq!(nodes[&BlockId::from(file_id)], vec![data]);

        let garbage = Garbage::plan(candidates, nodes);
        let position = |id: BlockId| garbage.order().iter().position(|o| *o == id);
        assert!(position(dir.into()) < position(file_id.into()));
        assert!(position(file_id.into()) < position(data));
        // The directory is young: it, its file node and its block stay; the lone block goes.
        let swept = garbage
            .sweep(|victim| {
                if *victim == BlockId::from(dir) {
                    return Ok::<_, Error>(Some(false));
                }
                store.delete(victim).map(Some)
            })
            .expect("sweep");
        assert_eq!(
            swept,
            Swept {
                deleted: 1,
                young: 1,
                sheltered: 2,
            }
        );
        assert!(!store.has(&lone).expect("has"));
        for kept in [BlockId::from(dir), BlockId::from(file_id), data] {
            assert!(store.has(&kept).expect("has"));
        }
    }
}
