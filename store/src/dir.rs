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
//! [`chunk_dir`] is pure; [`read_dir`] and [`store_dir`] are the IO around it.

use crate::limits::{
    DIR_CHUNK_BOUNDARY_ODDS, DIR_CHUNK_SIZE_MAX, DIR_CHUNK_SIZE_MIN, DIR_INDEX_LEVEL_MAX,
};
use crate::node::{
    DirEntry, DirIndex, DirLeaf, IndexEntry, Name, Node, entry_encoded_len, index_entry_encoded_len,
};
use crate::{Error, NodeId, NodeStore, Put, Result};

/// The nodes of one directory, produced by [`chunk_dir`].
#[derive(Debug, Clone)]
pub struct ChunkedDir {
    /// The directory's root node: a lone leaf for small directories, else the top index.
    pub root: NodeId,
    /// Every node of the directory with its id, leaves first and the root last.
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
    let mut level_entries: Vec<IndexEntry> = leaves
        .into_iter()
        .map(|run| {
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
        })
        .collect();
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
            let root = level_entries[0].child;
            return Ok(ChunkedDir {
                root,
                nodes,
                entries: total_entries,
                size: total_size,
            });
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

/// Cuts `items` into runs at content-defined boundaries.
fn cut_runs<T>(
    items: Vec<T>,
    level: u8,
    encoded_len: impl Fn(&T) -> usize,
    name: impl Fn(&T) -> &Name,
) -> Vec<Vec<T>> {
    let min = DIR_CHUNK_SIZE_MIN as usize;
    let max = DIR_CHUNK_SIZE_MAX as usize;
    let mut runs = Vec::new();
    let mut run: Vec<T> = Vec::new();
    let mut run_size = 0;
    for item in items {
        let len = encoded_len(&item);
        if !run.is_empty() && run_size + len > max {
            runs.push(std::mem::take(&mut run));
            run_size = 0;
        }
        run_size += len;
        let boundary = run_size >= min && is_boundary(level, name(&item));
        run.push(item);
        if boundary {
            runs.push(std::mem::take(&mut run));
            run_size = 0;
        }
    }
    if !run.is_empty() || runs.is_empty() {
        runs.push(run);
    }
    runs
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
}
