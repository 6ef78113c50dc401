//! The tree diff: which paths differ between two Merkle trees.
//!
//! [`diff`] descends only where hashes differ. Inside a directory it compares the directory's
//! *leaf chunks* first (a large directory is a prolly tree of entry chunks, see
//! `cairn_store::dir`): a chunk that both sides share holds the same entries on both sides, so
//! only the entries of chunks that differ are read and merge-joined by name. Changing one entry
//! of a 100,000-entry directory therefore reads a few chunks, not the whole directory.
//!
//! A subtree that appears or disappears as a whole is reported entry by entry (the directory
//! itself and everything under it), because both users of the diff need every path: the server
//! indexes every file of a commit, the client's planner merges per path.
//!
//! Pure except for reading nodes through the [`NodeStore`] trait.

use std::collections::HashMap;

use cairn_store::node::{DirEntry, EntryKind, Name, Node};
use cairn_store::{NodeId, NodeStore};

use crate::path::RelPath;

/// One path whose entry differs between the trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The path.
    pub path: RelPath,
    /// The entry in the old tree, if any.
    pub old: Option<DirEntry>,
    /// The entry in the new tree, if any.
    pub new: Option<DirEntry>,
}

/// Why a diff failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A node could not be read or decoded.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// A name or path the sync protocol cannot carry (not UTF-8, too long, too deep).
    #[error("invalid path in tree: {0}")]
    Path(String),
    /// A node of the wrong kind where a directory was expected.
    #[error("node {0} is not a directory")]
    NotADirectory(NodeId),
}

/// Every path whose entry differs between the trees rooted at `old` and `new` (directory
/// nodes; `None` is the empty tree), in depth-first name order (a directory before its
/// contents).
///
/// Entries that differ only in metadata (mtime, mode) are changes too.
///
/// # Errors
/// [`DiffError`] for unreadable nodes or paths that are not valid [`RelPath`]s.
pub fn diff(
    store: &(impl NodeStore + ?Sized),
    old: Option<&NodeId>,
    new: Option<&NodeId>,
) -> Result<Vec<Change>, DiffError> {
    let mut out = Vec::new();
    diff_dir(store, "", old, new, 0, &mut out)?;
    Ok(out)
}

fn diff_dir(
    store: &(impl NodeStore + ?Sized),
    prefix: &str,
    old: Option<&NodeId>,
    new: Option<&NodeId>,
    depth: usize,
    out: &mut Vec<Change>,
) -> Result<(), DiffError> {
    if old == new {
        return Ok(());
    }
    if depth > crate::limits::PATH_DEPTH_MAX {
        return Err(DiffError::Path(format!(
            "{prefix}: tree deeper than the path limit"
        )));
    }
    let old_leaves = match old {
        Some(id) => leaves(store, id)?,
        None => Vec::new(),
    };
    let new_leaves = match new {
        Some(id) => leaves(store, id)?,
        None => Vec::new(),
    };
    // Leaves both sides share hold equal entries: drop them pairwise (as multisets).
    let mut shared: HashMap<NodeId, usize> = HashMap::new();
    for id in &old_leaves {
        *shared.entry(*id).or_default() += 1;
    }
    let mut new_only = Vec::new();
    for id in new_leaves {
        match shared.get_mut(&id) {
            Some(n) if *n > 0 => *n -= 1,
            _ => new_only.push(id),
        }
    }
    let mut old_only = Vec::new();
    for id in old_leaves {
        if let Some(n) = shared.get_mut(&id)
            && *n > 0
        {
            *n -= 1;
            old_only.push(id);
        }
    }
    let old_entries = leaf_entries(store, &old_only)?;
    let new_entries = leaf_entries(store, &new_only)?;
    let (mut i, mut j) = (0, 0);
    while i < old_entries.len() || j < new_entries.len() {
        let order = match (old_entries.get(i), new_entries.get(j)) {
            (Some(a), Some(b)) => a.name.cmp(&b.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (a, b) = match order {
            std::cmp::Ordering::Less => {
                i += 1;
                (old_entries.get(i - 1), None)
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (None, new_entries.get(j - 1))
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
                (old_entries.get(i - 1), new_entries.get(j - 1))
            }
        };
        if a == b {
            continue;
        }
        let name = a
            .or(b)
            .map(|e| &e.name)
            .ok_or_else(|| DiffError::Path(format!("{prefix}: merge-join lost an entry")))?;
        let path = join(prefix, name)?;
        let dir_of = |e: Option<&DirEntry>| e.filter(|e| e.kind == EntryKind::Dir).map(|e| e.child);
        let (old_dir, new_dir) = (dir_of(a), dir_of(b));
        let both_dirs = old_dir.is_some() && new_dir.is_some();
        // A directory whose entry differs only in its child hash is not itself a change (its
        // metadata is derived); its contents are.
        let dir_meta_same = both_dirs
            && a.zip(b)
                .is_some_and(|(x, y)| x.mode == y.mode && x.mtime_ns == y.mtime_ns);
        if !dir_meta_same {
            out.push(Change {
                path: path.clone(),
                old: a.cloned(),
                new: b.cloned(),
            });
        }
        if old_dir.is_some() || new_dir.is_some() {
            diff_dir(
                store,
                path.as_str(),
                old_dir.as_ref(),
                new_dir.as_ref(),
                depth + 1,
                out,
            )?;
        }
    }
    Ok(())
}

/// The leaf chunks of a directory, in name order (reading only the index nodes above them).
fn leaves(store: &(impl NodeStore + ?Sized), root: &NodeId) -> Result<Vec<NodeId>, DiffError> {
    let mut out = Vec::new();
    let mut stack = vec![(*root, 0u32)];
    while let Some((id, depth)) = stack.pop() {
        if depth > u32::from(cairn_store::limits::DIR_INDEX_LEVEL_MAX) + 1 {
            return Err(DiffError::NotADirectory(id));
        }
        match store.get_node(&id)? {
            Node::DirLeaf(_) => out.push(id),
            // The children of a level-1 index are leaves: no need to read them to know.
            Node::DirIndex(index) if index.level() == 1 => {
                out.extend(index.children().iter().map(|c| c.child));
            }
            Node::DirIndex(index) => {
                for child in index.children().iter().rev() {
                    stack.push((child.child, depth + 1));
                }
            }
            Node::File(_) | Node::Symlink(_) => return Err(DiffError::NotADirectory(id)),
        }
    }
    Ok(out)
}

/// The entries of these leaves, sorted by name.
fn leaf_entries(
    store: &(impl NodeStore + ?Sized),
    ids: &[NodeId],
) -> Result<Vec<DirEntry>, DiffError> {
    let mut entries = Vec::new();
    for id in ids {
        match store.get_node(id)? {
            Node::DirLeaf(leaf) => entries.extend(leaf.into_entries()),
            _ => return Err(DiffError::NotADirectory(*id)),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn join(prefix: &str, name: &Name) -> Result<RelPath, DiffError> {
    let name = std::str::from_utf8(name.as_bytes())
        .map_err(|_| DiffError::Path(format!("{prefix}: a name is not UTF-8")))?;
    let text = if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    };
    RelPath::parse(&text).map_err(|e| DiffError::Path(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cairn_store::dir::{chunk_dir, store_dir};
    use cairn_store::mem::MemBlockStore;
    use cairn_store::node::FileNode;

    use super::*;

    /// Builds a tree from (path, content) pairs; returns its root.
    fn build(store: &MemBlockStore, files: &BTreeMap<String, u8>) -> NodeId {
        fn dir(store: &MemBlockStore, files: &BTreeMap<String, u8>, prefix: &str) -> NodeId {
            let mut entries = Vec::new();
            let mut subdirs: BTreeMap<String, ()> = BTreeMap::new();
            for (path, seed) in files {
                let Some(rest) = path.strip_prefix(prefix) else {
                    continue;
                };
                match rest.split_once('/') {
                    Some((sub, _)) => {
                        subdirs.insert(sub.to_owned(), ());
                    }
                    None => {
                        let node = Node::File(FileNode::new(0o644, 0, Vec::new()).unwrap());
                        let _ = seed;
                        let (id, _) = store.put_node(&node).unwrap();
                        entries.push(DirEntry {
                            name: Name::new(rest.as_bytes().to_vec()).unwrap(),
                            kind: EntryKind::File,
                            size: u64::from(*seed),
                            mtime_ns: 0,
                            mode: 0o644,
                            child: id,
                        });
                    }
                }
            }
            for sub in subdirs.keys() {
                let child = dir(store, files, &format!("{prefix}{sub}/"));
                entries.push(DirEntry {
                    name: Name::new(sub.as_bytes().to_vec()).unwrap(),
                    kind: EntryKind::Dir,
                    size: 0,
                    mtime_ns: 0,
                    mode: 0o755,
                    child,
                });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            let chunked = chunk_dir(entries).unwrap();
            store_dir(store, &chunked).unwrap();
            chunked.root
        }
        dir(store, files, "")
    }

    fn paths(changes: &[Change]) -> Vec<String> {
        changes.iter().map(|c| c.path.to_string()).collect()
    }

    #[test]
    fn reports_exactly_the_changed_paths() {
        let store = MemBlockStore::default();
        let mut files: BTreeMap<String, u8> = [("a/x", 1), ("a/y", 2), ("b/z", 3), ("c", 4)]
            .into_iter()
            .map(|(p, s)| (p.to_owned(), s))
            .collect();
        let old = build(&store, &files);
        assert!(diff(&store, Some(&old), Some(&old)).unwrap().is_empty());
        files.insert("a/y".into(), 9);
        files.remove("b/z");
        files.insert("d/e/f".into(), 5);
        let new = build(&store, &files);
        let changes = diff(&store, Some(&old), Some(&new)).unwrap();
        assert_eq!(paths(&changes), ["a/y", "b", "b/z", "d", "d/e", "d/e/f"]);
        let y = &changes[0];
        assert_eq!(y.old.as_ref().map(|e| e.size), Some(2));
        assert_eq!(y.new.as_ref().map(|e| e.size), Some(9));
        assert!(changes[2].new.is_none(), "b/z was removed");
        // From the empty tree: everything, directories before their contents.
        let all = diff(&store, None, Some(&new)).unwrap();
        assert_eq!(paths(&all), ["a", "a/x", "a/y", "c", "d", "d/e", "d/e/f"]);
    }

    #[test]
    fn huge_directory_reads_only_changed_chunks() {
        let store = MemBlockStore::default();
        let mut files: BTreeMap<String, u8> =
            (0..20_000).map(|i| (format!("big/f{i:06}"), 1)).collect();
        let old = build(&store, &files);
        files.insert("big/f012345".into(), 2);
        let new = build(&store, &files);
        let counting = Counting {
            inner: &store,
            reads: std::cell::Cell::new(0),
        };
        let changes = diff(&counting, Some(&old), Some(&new)).unwrap();
        assert_eq!(paths(&changes), ["big/f012345"]);
        assert!(
            counting.reads.get() < 40,
            "{} node reads for a one-entry change",
            counting.reads.get()
        );
    }

    struct Counting<'a> {
        inner: &'a MemBlockStore,
        reads: std::cell::Cell<u32>,
    }

    impl NodeStore for Counting<'_> {
        fn get_node(&self, id: &NodeId) -> cairn_store::Result<Node> {
            self.reads.set(self.reads.get() + 1);
            self.inner.get_node(id)
        }

        fn put_node(&self, node: &Node) -> cairn_store::Result<(NodeId, cairn_store::Put)> {
            self.inner.put_node(node)
        }
    }
}
