//! Large directories as prolly trees: the entries are cut into content-defined chunks.
//!
//! A directory of 100,000 entries encoded as one node would be ~8 MB, rewritten whole on every
//! change. Instead [`chunk_dir`] cuts the sorted entries into [`DirLeaf`] chunks where an entry's
//! name hashes to a boundary (one in [`DIR_CHUNK_BOUNDARY_ODDS`], once a chunk holds
//! [`DIR_CHUNK_SIZE_MIN`] bytes; always before [`DIR_CHUNK_SIZE_MAX`]), then indexes the chunks
//! with [`DirIndex`] nodes, cut the same way, level by level until one root remains. Boundaries
//! depend on names only, so editing an entry rewrites its leaf and the index path above it, and
//! inserting or removing a name moves at most the boundaries next to it. The shape is a function
//! of the entries alone (history independent): equal directories have equal root ids.
//!
//! [`chunk_dir`] is pure; [`read_dir`] and [`store_dir`] are the IO around it. [`edit_dir`]
//! and [`find_entry`] change or find entries through the index, touching only the chunks they
//! need, with the same result as rebuilding the whole directory.

use crate::limits::{
    DIR_CHUNK_BOUNDARY_ODDS, DIR_CHUNK_SIZE_MAX, DIR_CHUNK_SIZE_MIN, DIR_INDEX_LEVEL_MAX,
};
use crate::node::{
    DirEntry, DirIndex, DirLeaf, IndexEntry, Name, Node, entry_encoded_len, index_entry_encoded_len,
};
use crate::{Error, NodeId, NodeStore, Put, Result};
use std::collections::HashSet;

/// The nodes of one directory, produced by [`chunk_dir`].
#[derive(Debug, Clone)]
pub struct ChunkedDir {
    /// The directory's root node: a lone leaf for small directories, else the top index.
    pub root: NodeId,
    /// The nodes to store with their ids, leaves first and the root last: every node of the
    /// directory from [`chunk_dir`], only the rewritten ones from [`edit_dir`].
    pub nodes: Vec<(NodeId, Node)>,
    /// Number of entries.
    pub entries: u64,
    /// Sum of the entries' sizes.
    pub size: u64,
}

/// Cuts a directory's entries into leaf and index nodes.
///
/// # Errors
/// [`Error::Limit`] if names are unsorted or repeated.
pub fn chunk_dir(entries: Vec<DirEntry>) -> Result<ChunkedDir> {
    let total_entries = entries.len() as u64;
    let total_size = entries
        .iter()
        .map(|e| e.size)
        .fold(0u64, u64::saturating_add);
    // Validates the global order once; the chunks inherit it.
    let entries = DirLeaf::new(entries)?.into_entries();
    let mut nodes = Vec::new();

    let leaves = cut_runs(entries, 0, entry_encoded_len, |e| &e.name);
    if leaves.len() <= 1 {
        let leaf = Node::DirLeaf(DirLeaf::new(leaves.into_iter().flatten().collect())?);
        let root = leaf.id();
        nodes.push((root, leaf));
        return Ok(ChunkedDir {
            root,
            nodes,
            entries: total_entries,
            size: total_size,
        });
    }
    let level_entries: Vec<IndexEntry> = leaves
        .into_iter()
        .map(|run| leaf_node(run, &mut nodes))
        .collect();
    let root = index_levels(level_entries, &mut nodes)?;
    Ok(ChunkedDir {
        root,
        nodes,
        entries: total_entries,
        size: total_size,
    })
}

/// Applies `changes` to the directory rooted at `root`: each name (strictly ascending) gets the
/// entry given (its `name` replaced by the key) or, for `None`, loses its entry. The result is
/// the directory [`chunk_dir`] would build from the edited entries, but only the index nodes and
/// the leaves the changes touch are read, and only rewritten nodes are returned in `nodes` (the
/// caller stores them): editing one entry of a 100,000-entry directory reads and writes a few
/// chunks, not the whole directory.
///
/// Re-chunking starts at the first touched leaf and runs on through the following leaves until
/// a chunk ends where an old leaf ended; from there the old leaves are what chunking would
/// produce again (boundaries depend only on the entries since the last boundary). A directory
/// some other program chunked differently stays valid; only the touched part is re-cut.
///
/// # Errors
/// [`Error::Limit`] for unsorted changes, store errors, and damaged directory nodes.
pub fn edit_dir(
    store: &(impl NodeStore + ?Sized),
    root: &NodeId,
    changes: &[(Name, Option<DirEntry>)],
) -> Result<ChunkedDir> {
    if let Some(idx) = changes.windows(2).position(|w| w[0].0 >= w[1].0) {
        return Err(Error::Limit {
            what: "unsorted or repeated name in directory changes at",
            actual: idx as u64 + 1,
            max: 0,
        });
    }
    let index = match store.get_node(root)? {
        Node::DirLeaf(leaf) => return chunk_dir(merge(leaf.into_entries(), changes)),
        Node::DirIndex(index) => index,
        other => {
            return Err(Error::NodeKind {
                id: *root,
                found: other.kind_str(),
                expected: "directory",
            });
        }
    };
    let mut old_nodes = HashSet::from([*root]);
    let mut leaves = Vec::new();
    collect_leaves(store, root, index, &mut leaves, &mut old_nodes)?;
    old_nodes.extend(leaves.iter().map(|l| l.child));

    let mut nodes = Vec::new();
    let mut level_entries: Vec<IndexEntry> = Vec::with_capacity(leaves.len() + 1);
    let mut cutter = Cutter::new(0);
    let mut runs = Vec::new();
    let mut next_change = 0;
    // Whether the last entry of `level_entries` is an old leaf kept as it was.
    let mut last_kept = false;
    for (idx, leaf) in leaves.iter().enumerate() {
        // Changes up to the next leaf's first name land here (before the first leaf too).
        let end = leaves.get(idx + 1).map_or(changes.len(), |next| {
            next_change + changes[next_change..].partition_point(|(n, _)| *n < next.first_name)
        });
        let here = &changes[next_change..end];
        next_change = end;
        if here.is_empty() && cutter.is_fresh() {
            level_entries.push(leaf.clone());
            last_kept = true;
            continue;
        }
        // A kept leaf may have ended only because the first entry of this one did not fit
        // after it (a size cut, decided by the next entry): its end moves when this leaf's
        // start changes, so it is cut again together with this leaf.
        if last_kept && let Some(previous) = level_entries.pop() {
            for entry in leaf_entries(store, &previous)? {
                cutter.push(entry, entry_encoded_len, |e| &e.name, &mut runs);
            }
        }
        last_kept = false;
        let entries = leaf_entries(store, leaf)?;
        for entry in merge(entries, here) {
            cutter.push(entry, entry_encoded_len, |e| &e.name, &mut runs);
        }
        level_entries.extend(runs.drain(..).map(|run| leaf_node(run, &mut nodes)));
    }
    cutter.finish(&mut runs);
    level_entries.extend(runs.drain(..).map(|run| leaf_node(run, &mut nodes)));

    let entries = level_entries.iter().map(|e| e.entries).sum();
    let size = level_entries
        .iter()
        .map(|e| e.size)
        .fold(0u64, u64::saturating_add);
    let root = match level_entries.len() {
        0 => return chunk_dir(Vec::new()),
        1 => level_entries[0].child,
        _ => index_levels(level_entries, &mut nodes)?,
    };
    nodes.retain(|(id, _)| !old_nodes.contains(id));
    Ok(ChunkedDir {
        root,
        nodes,
        entries,
        size,
    })
}

/// The entries of the leaf an index entry names (checked to start with its first name).
fn leaf_entries(store: &(impl NodeStore + ?Sized), leaf: &IndexEntry) -> Result<Vec<DirEntry>> {
    match store.get_node(&leaf.child)? {
        Node::DirLeaf(found)
            if found.entries().first().map(|e| &e.name) == Some(&leaf.first_name) =>
        {
            Ok(found.into_entries())
        }
        _ => Err(inconsistent(
            &leaf.child,
            "an index names a chunk that does not fit",
        )),
    }
}

/// The entry named `name` in the directory rooted at `root`, reading one node per index level.
///
/// # Errors
/// Store errors and damaged directory nodes.
pub fn find_entry(
    store: &(impl NodeStore + ?Sized),
    root: &NodeId,
    name: &Name,
) -> Result<Option<DirEntry>> {
    let mut id = *root;
    let mut expected_level = None;
    loop {
        match store.get_node(&id)? {
            Node::DirLeaf(leaf) => {
                if expected_level.is_some_and(|level| level != 0) {
                    return Err(inconsistent(&id, "a leaf where an index was expected"));
                }
                let entries = leaf.entries();
                return Ok(entries
                    .binary_search_by(|e| e.name.cmp(name))
                    .ok()
                    .map(|idx| entries[idx].clone()));
            }
            Node::DirIndex(index) => {
                if expected_level.is_some_and(|level| level != index.level()) {
                    return Err(inconsistent(&id, "an index at the wrong level"));
                }
                let children = index.children();
                let pos = children.partition_point(|c| c.first_name <= *name);
                let Some(child) = pos.checked_sub(1).map(|pos| &children[pos]) else {
                    return Ok(None);
                };
                id = child.child;
                expected_level = Some(index.level() - 1);
            }
            other => {
                return Err(Error::NodeKind {
                    id,
                    found: other.kind_str(),
                    expected: "directory",
                });
            }
        }
    }
}

/// The leaves (as level-1 index entries, in order) under `index`; records the index nodes read.
fn collect_leaves(
    store: &(impl NodeStore + ?Sized),
    id: &NodeId,
    index: DirIndex,
    leaves: &mut Vec<IndexEntry>,
    seen: &mut HashSet<NodeId>,
) -> Result<()> {
    seen.insert(*id);
    if index.level() == 1 {
        leaves.extend_from_slice(index.children());
        return Ok(());
    }
    for child in index.children() {
        match store.get_node(&child.child)? {
            Node::DirIndex(inner)
                if inner.level() + 1 == index.level()
                    && inner.children().first().map(|c| &c.first_name)
                        == Some(&child.first_name) =>
            {
                collect_leaves(store, &child.child, inner, leaves, seen)?;
            }
            _ => {
                return Err(inconsistent(
                    &child.child,
                    "an index names a chunk that does not fit",
                ));
            }
        }
    }
    Ok(())
}

/// `entries` (sorted) with `changes` (sorted) applied.
fn merge(entries: Vec<DirEntry>, changes: &[(Name, Option<DirEntry>)]) -> Vec<DirEntry> {
    let mut out = Vec::with_capacity(entries.len() + changes.len());
    let mut old = entries.into_iter().peekable();
    for (name, change) in changes {
        while let Some(entry) = old.next_if(|e| e.name < *name) {
            out.push(entry);
        }
        old.next_if(|e| e.name == *name);
        if let Some(entry) = change {
            out.push(DirEntry {
                name: name.clone(),
                ..entry.clone()
            });
        }
    }
    out.extend(old);
    out
}

fn inconsistent(id: &NodeId, what: &'static str) -> Error {
    Error::NodeDecode {
        id: *id,
        source: crate::node::DecodeError::Inconsistent(what),
    }
}

/// A leaf node from a run of entries; pushes it to `nodes` and returns its index entry.
fn leaf_node(run: Vec<DirEntry>, nodes: &mut Vec<(NodeId, Node)>) -> IndexEntry {
    let first_name = run[0].name.clone();
    let entries = run.len() as u64;
    let size = run.iter().map(|e| e.size).fold(0u64, u64::saturating_add);
    let node = Node::DirLeaf(DirLeaf::new(run).expect("a run of sorted entries"));
    let child = node.id();
    nodes.push((child, node));
    IndexEntry {
        first_name,
        child,
        entries,
        size,
    }
}

/// Builds index levels over at least two leaves, pushing the index nodes; returns the root.
fn index_levels(
    mut level_entries: Vec<IndexEntry>,
    nodes: &mut Vec<(NodeId, Node)>,
) -> Result<NodeId> {
    for level in 1..=DIR_INDEX_LEVEL_MAX {
        let runs = cut_runs(level_entries, level, index_entry_encoded_len, |e| {
            &e.first_name
        });
        let single = runs.len() == 1;
        level_entries = runs
            .into_iter()
            .map(|run| {
                let first_name = run[0].first_name.clone();
                let entries = run.iter().map(|c| c.entries).sum();
                let size = run.iter().map(|c| c.size).fold(0u64, u64::saturating_add);
                let node = Node::DirIndex(DirIndex::new(level, run).expect("sorted runs"));
                let child = node.id();
                nodes.push((child, node));
                IndexEntry {
                    first_name,
                    child,
                    entries,
                    size,
                }
            })
            .collect();
        if single {
            return Ok(level_entries[0].child);
        }
    }
    Err(Error::Limit {
        what: "directory index levels",
        actual: u64::from(DIR_INDEX_LEVEL_MAX) + 1,
        max: u64::from(DIR_INDEX_LEVEL_MAX),
    })
}

/// Stores every node of a chunked directory; returns the puts (new nodes have `new == true`).
///
/// # Errors
/// Store errors.
pub fn store_dir(store: &(impl NodeStore + ?Sized), dir: &ChunkedDir) -> Result<Vec<Put>> {
    dir.nodes
        .iter()
        .map(|(_, node)| store.put_node(node).map(|(_, put)| put))
        .collect()
}

/// All entries of the directory rooted at `root`, in name order.
///
/// # Errors
/// Store errors, a node that is not a directory node, or chunks whose levels or name order
/// do not fit together.
pub fn read_dir(store: &(impl NodeStore + ?Sized), root: &NodeId) -> Result<Vec<DirEntry>> {
    Ok(read_dir_with_nodes(store, root)?.0)
}

/// [`read_dir`], plus the ids of the directory's own nodes (root first, then depth-first).
///
/// # Errors
/// As for [`read_dir`].
pub fn read_dir_with_nodes(
    store: &(impl NodeStore + ?Sized),
    root: &NodeId,
) -> Result<(Vec<DirEntry>, Vec<NodeId>)> {
    let mut entries = Vec::new();
    let mut nodes = Vec::new();
    read_into(store, root, None, &mut entries, &mut nodes)?;
    Ok((entries, nodes))
}

fn read_into(
    store: &(impl NodeStore + ?Sized),
    id: &NodeId,
    expected_level: Option<u8>,
    out: &mut Vec<DirEntry>,
    nodes: &mut Vec<NodeId>,
) -> Result<()> {
    nodes.push(*id);
    let inconsistent = |what: &'static str| Error::NodeDecode {
        id: *id,
        source: crate::node::DecodeError::Inconsistent(what),
    };
    match store.get_node(id)? {
        Node::DirLeaf(leaf) => {
            if expected_level.is_some_and(|level| level != 0) {
                return Err(inconsistent("a leaf where an index was expected"));
            }
            let first = leaf.entries().first().map(|e| &e.name);
            if let (Some(prev), Some(first)) = (out.last(), first)
                && prev.name >= *first
            {
                return Err(inconsistent("directory chunks out of name order"));
            }
            out.extend(leaf.into_entries());
        }
        Node::DirIndex(index) => {
            if expected_level.is_some_and(|level| level != index.level()) {
                return Err(inconsistent("an index at the wrong level"));
            }
            for child in index.children() {
                let start = out.len();
                read_into(store, &child.child, Some(index.level() - 1), out, nodes)?;
                if out.get(start).map(|e| &e.name) != Some(&child.first_name) {
                    return Err(inconsistent("an index names the wrong first entry"));
                }
            }
        }
        other => {
            return Err(Error::NodeKind {
                id: *id,
                found: other.kind_str(),
                expected: "directory",
            });
        }
    }
    Ok(())
}

/// Cuts `items` into runs at content-defined boundaries (one empty run for no items).
fn cut_runs<T>(
    items: Vec<T>,
    level: u8,
    encoded_len: impl Fn(&T) -> usize,
    name: impl Fn(&T) -> &Name,
) -> Vec<Vec<T>> {
    let mut cutter = Cutter::new(level);
    let mut runs = Vec::new();
    for item in items {
        cutter.push(item, &encoded_len, &name, &mut runs);
    }
    cutter.finish(&mut runs);
    if runs.is_empty() {
        runs.push(Vec::new());
    }
    runs
}

/// The chunking state machine: a chunk ends after an item whose name is a boundary once the
/// chunk holds [`DIR_CHUNK_SIZE_MIN`] bytes, or before an item that would take it past
/// [`DIR_CHUNK_SIZE_MAX`]. Its only state is the open run, so two cutters that are both fresh
/// at the same item cut the rest identically.
struct Cutter<T> {
    level: u8,
    run: Vec<T>,
    run_size: usize,
}

impl<T> Cutter<T> {
    fn new(level: u8) -> Self {
        Cutter {
            level,
            run: Vec::new(),
            run_size: 0,
        }
    }

    /// Whether no run is open (the last item ended a chunk).
    fn is_fresh(&self) -> bool {
        self.run.is_empty()
    }

    /// Adds an item; pushes the runs it closes to `runs`.
    fn push(
        &mut self,
        item: T,
        encoded_len: impl Fn(&T) -> usize,
        name: impl Fn(&T) -> &Name,
        runs: &mut Vec<Vec<T>>,
    ) {
        let len = encoded_len(&item);
        if !self.run.is_empty() && self.run_size + len > DIR_CHUNK_SIZE_MAX as usize {
            runs.push(std::mem::take(&mut self.run));
            self.run_size = 0;
        }
        self.run_size += len;
        let boundary =
            self.run_size >= DIR_CHUNK_SIZE_MIN as usize && is_boundary(self.level, name(&item));
        self.run.push(item);
        if boundary {
            runs.push(std::mem::take(&mut self.run));
            self.run_size = 0;
        }
    }

    /// Closes the open run, if any.
    fn finish(&mut self, runs: &mut Vec<Vec<T>>) {
        if !self.run.is_empty() {
            runs.push(std::mem::take(&mut self.run));
            self.run_size = 0;
        }
    }
}

/// Whether a chunk ends after the entry with this name, at this level. Part of the format:
/// changing it changes every chunked directory's id.
fn is_boundary(level: u8, name: &Name) -> bool {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cairn dir chunk boundary v1");
    hasher.update(&[level]);
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let word = u32::from_le_bytes(
        digest.as_bytes()[..4]
            .try_into()
            .expect("a digest has 32 bytes"),
    );
    word % DIR_CHUNK_BOUNDARY_ODDS == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemBlockStore;
    use crate::node::EntryKind;

    fn entry(idx: u32, seed: u8) -> DirEntry {
        DirEntry {
            name: Name::new(format!("file-{idx:06}.txt").into_bytes()).expect("valid"),
            kind: EntryKind::File,
            size: u64::from(idx),
            mtime_ns: 1_700_000_000_000_000_000 + i64::from(idx),
            mode: 0o644,
            child: NodeId::from_bytes([seed; 32]),
        }
    }

    fn entries(len: u32) -> Vec<DirEntry> {
        (0..len).map(|idx| entry(idx, 1)).collect()
    }

    /// Stores `before`, then `after`, and returns the bytes of new nodes `after` needed.
    fn new_bytes_for_change(before: Vec<DirEntry>, after: Vec<DirEntry>) -> u64 {
        let store = MemBlockStore::new();
        let dir = chunk_dir(before).expect("chunk");
        store_dir(&store, &dir).expect("store");
        let changed = chunk_dir(after.clone()).expect("chunk");
        let puts = store_dir(&store, &changed).expect("store");
        assert_eq!(read_dir(&store, &changed.root).expect("read"), after);
        puts.iter().filter(|p| p.new).map(|p| p.size).sum()
    }

    #[test]
    fn small_directory_is_one_leaf() {
        let dir = chunk_dir(entries(10)).expect("chunk");
        assert_eq!(dir.nodes.len(), 1);
        assert!(matches!(dir.nodes[0].1, Node::DirLeaf(_)));
        let empty = chunk_dir(Vec::new()).expect("chunk");
        assert_eq!(empty.nodes.len(), 1);
        assert_eq!(empty.entries, 0);
    }

    #[test]
    fn huge_directory_change_writes_under_64_kib() {
        // Goal: changing, adding or removing one entry of a 100,000-entry directory writes
        // under 64 KiB of new tree nodes (the whole directory encodes to ~7 MB).
        let base = entries(100_000);
        let dir = chunk_dir(base.clone()).expect("chunk");
        assert!(
            dir.nodes.len() > 100,
            "chunked into {} nodes",
            dir.nodes.len()
        );
        assert!(
            dir.nodes
                .iter()
                .all(|(_, n)| n.to_bytes().len() <= DIR_CHUNK_SIZE_MAX as usize)
        );

        let mut edited = base.clone();
        edited[54_321] = entry(54_321, 2);
        let edit = new_bytes_for_change(base.clone(), edited);

        let mut inserted = base.clone();
        let mut extra = entry(70_000, 3);
        extra.name = Name::new(b"file-070000.txt-copy".to_vec()).expect("valid");
        inserted.insert(70_001, extra);
        let insert = new_bytes_for_change(base.clone(), inserted);

        let mut removed = base.clone();
        removed.remove(12_345);
        let remove = new_bytes_for_change(base, removed);

        for (what, bytes) in [("edit", edit), ("insert", insert), ("remove", remove)] {
            assert!(bytes > 0, "{what} wrote nothing");
            assert!(bytes < 64 * 1024, "{what} wrote {bytes} bytes of new nodes");
        }
    }

    #[test]
    fn shape_depends_only_on_entries() {
        // Building the same directory twice, or reaching it by edits, gives the same root.
        let mut grown = entries(20_000);
        grown.remove(500);
        let direct = chunk_dir(grown.clone()).expect("chunk").root;
        assert_eq!(direct, chunk_dir(grown).expect("chunk").root);
        assert_ne!(direct, chunk_dir(entries(20_000)).expect("chunk").root);
    }

    #[test]
    fn read_dir_rejects_misordered_chunks() {
        let store = MemBlockStore::new();
        let leaf_a = Node::DirLeaf(DirLeaf::new(vec![entry(5, 1)]).expect("valid"));
        let leaf_b = Node::DirLeaf(DirLeaf::new(vec![entry(1, 1)]).expect("valid"));
        let (id_a, _) = store.put_node(&leaf_a).expect("put");
        let (id_b, _) = store.put_node(&leaf_b).expect("put");
        let index = Node::DirIndex(
            DirIndex::new(
                1,
                vec![
                    IndexEntry {
                        first_name: entry(0, 1).name,
                        child: id_a,
                        entries: 1,
                        size: 5,
                    },
                    IndexEntry {
                        first_name: entry(1, 1).name,
                        child: id_b,
                        entries: 1,
                        size: 1,
                    },
                ],
            )
            .expect("valid"),
        );
        let (root, _) = store.put_node(&index).expect("put");
        let err = read_dir(&store, &root).expect_err("inconsistent");
        assert!(err.to_string().contains("wrong first entry"), "{err}");
        let file = Node::Symlink(crate::node::SymlinkNode::new(b"x".to_vec()).expect("valid"));
        let (link, _) = store.put_node(&file).expect("put");
        assert!(matches!(
            read_dir(&store, &link),
            Err(Error::NodeKind { .. })
        ));
    }

    /// A name of 9 to 1000 bytes drawn from `key`: long names give deep indexes with few
    /// entries, and chunks cut at the size limit rather than at a boundary.
    fn varied_entry(key: u32, len: usize, seed: u8) -> DirEntry {
        let mut name = format!("{key:08}-").into_bytes();
        name.resize(len.clamp(9, 1000), b'x');
        DirEntry {
            name: Name::new(name).expect("valid"),
            kind: EntryKind::File,
            size: u64::from(key % 1000),
            mtime_ns: i64::from(key),
            mode: 0o644,
            child: NodeId::from_bytes([seed; 32]),
        }
    }

    fn check_edit(base: &[(u32, usize)], changes: &[(u32, Option<(usize, u8)>)]) {
        let store = MemBlockStore::new();
        let before: std::collections::BTreeMap<Name, DirEntry> = base
            .iter()
            .map(|&(key, len)| {
                let e = varied_entry(key, len, 1);
                (e.name.clone(), e)
            })
            .collect();
        let dir = chunk_dir(before.values().cloned().collect()).expect("chunk");
        store_dir(&store, &dir).expect("store");
        // Changes keyed by name; a key already in the directory edits that entry by name.
        let names: std::collections::HashMap<u32, Name> = base
            .iter()
            .map(|&(key, len)| (key, varied_entry(key, len, 1).name))
            .collect();
        let mut after = before.clone();
        let mut by_name = std::collections::BTreeMap::new();
        for &(key, change) in changes {
            let name = names
                .get(&key)
                .cloned()
                .unwrap_or_else(|| varied_entry(key, 20, 0).name);
            let entry = change.map(|(len, seed)| DirEntry {
                name: name.clone(),
                ..varied_entry(key, len, seed)
            });
            match &entry {
                Some(e) => after.insert(name.clone(), e.clone()),
                None => after.remove(&name),
            };
            by_name.insert(name, entry);
        }
        let changes: Vec<(Name, Option<DirEntry>)> = by_name.into_iter().collect();
        let edited = edit_dir(&store, &dir.root, &changes).expect("edit");
        let rebuilt = chunk_dir(after.values().cloned().collect()).expect("chunk");
        assert_eq!(edited.root, rebuilt.root, "edit differs from a rebuild");
        assert_eq!(edited.entries, rebuilt.entries);
        assert_eq!(edited.size, rebuilt.size);
        // The returned nodes are exactly what the store lacked.
        store_dir(&store, &edited).expect("store");
        let expected: Vec<DirEntry> = after.into_values().collect();
        assert_eq!(read_dir(&store, &edited.root).expect("complete"), expected);
        for (name, entry) in &changes {
            assert_eq!(
                &find_entry(&store, &edited.root, name).expect("find"),
                entry
            );
        }
    }

    #[test]
    fn edit_touches_a_few_chunks_of_a_huge_directory() {
        // Reads and writes of one edit in a 100,000-entry directory stay in the tens of nodes.
        let store = crate::mem::MemBlockStore::new();
        let dir = chunk_dir(entries(100_000)).expect("chunk");
        store_dir(&store, &dir).expect("store");
        let changed = entry(54_321, 9);
        let edited = edit_dir(
            &store,
            &dir.root,
            &[(changed.name.clone(), Some(changed.clone()))],
        )
        .expect("edit");
        assert!(
            edited.nodes.len() <= 8,
            "rewrote {} nodes",
            edited.nodes.len()
        );
        let mut all = entries(100_000);
        all[54_321] = changed;
        assert_eq!(edited.root, chunk_dir(all).expect("chunk").root);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn edit_dir_equals_rebuilding(
            base in proptest::collection::vec(
                (0u32..5000, proptest::prop_oneof![1usize..64, 1usize..1000]),
                0..1500,
            ),
            changes in proptest::collection::vec(
                (0u32..5000, proptest::option::of((1usize..1000, 2u8..5))),
                0..40,
            ),
        ) {
            check_edit(&base, &changes);
        }
    }

    #[test]
    fn edits_of_a_three_level_directory_equal_rebuilding() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let base: Vec<(u32, usize)> = (0..60_000).map(|k| (k * 2, 12)).collect();
        for _ in 0..20 {
            // A run of neighbours (crossing chunk ends) plus a few scattered keys.
            let start = rng.random_range(0..120_000u32);
            let mut changes: Vec<(u32, Option<(usize, u8)>)> = (start..start + 300)
                .map(|k| (k, rng.random_bool(0.5).then_some((12, 3))))
                .collect();
            changes.extend((0..5).map(|_| (rng.random_range(0..120_000), Some((40, 4)))));
            check_edit(&base, &changes);
        }
    }

    #[test]
    fn edit_dir_to_empty_and_from_one_leaf() {
        let keys: Vec<(u32, usize)> = (0..800).map(|k| (k, 200)).collect();
        let remove_all: Vec<(u32, Option<(usize, u8)>)> = (0..800).map(|k| (k, None)).collect();
        check_edit(&keys, &remove_all);
        check_edit(&[(1, 10)], &[(2, Some((250, 3)))]);
        check_edit(&[], &[(7, Some((20, 3)))]);
        let grow: Vec<(u32, Option<(usize, u8)>)> = (0..800).map(|k| (k, Some((250, 2)))).collect();
        check_edit(&[(5000, 10)], &grow);
    }

    #[test]
    fn edit_dir_rejects_unsorted_changes() {
        let store = MemBlockStore::new();
        let dir = chunk_dir(entries(3)).expect("chunk");
        store_dir(&store, &dir).expect("store");
        let (a, b) = (entry(1, 1), entry(2, 1));
        let err = edit_dir(
            &store,
            &dir.root,
            &[(b.name.clone(), None), (a.name.clone(), None)],
        )
        .expect_err("unsorted");
        assert!(matches!(err, Error::Limit { .. }), "{err}");
    }
}
