//! `fsck`: checks that trees in a store are whole and sound.
//!
//! From each root it walks every directory, file and symlink node. Every node must load (so it
//! exists and hashes to its id) and decode to the kind its parent says; every file's size must
//! match its entry; every data block must exist and, with [`FsckOptions::verify_data`], hash to
//! its id and have the length the file node gives. Optionally it also re-hashes the blocks no tree
//! references. Problems are collected, not fatal: one report lists them all.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::dir::read_dir_with_nodes;
use crate::node::{DirEntry, EntryKind, Node};
use crate::{BlockId, BlockStore, Error, NodeId, NodeStore, Result};

/// What [`fsck`] checks.
#[derive(Debug, Clone, Copy)]
pub struct FsckOptions {
    /// Read and re-hash every data block (slow: reads all data) instead of checking existence.
    pub verify_data: bool,
    /// Also list the store and check the blocks no tree references.
    pub scan_unreferenced: bool,
}

/// One thing found wrong.
#[derive(Debug)]
pub struct FsckProblem {
    /// Where in the tree it was found (`/`-joined names from the root), or `(unreferenced)`.
    pub location: String,
    /// The block or node concerned.
    pub id: BlockId,
    /// What is wrong with it.
    pub error: Error,
}

/// The findings of [`fsck`].
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Distinct tree nodes checked.
    pub nodes: u64,
    /// Distinct data blocks checked.
    pub data_blocks: u64,
    /// Bytes of distinct data blocks (as the file nodes give them).
    pub data_size: u64,
    /// Blocks in the store that no checked tree references.
    pub unreferenced_blocks: u64,
    /// Everything found wrong.
    pub problems: Vec<FsckProblem>,
}

impl FsckReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the trees rooted at `roots` (directory node ids), and the file or symlink nodes
/// `files` that no tree may hold (versions kept only in a folder's history).
///
/// # Errors
/// Only when the store cannot be listed for [`FsckOptions::scan_unreferenced`]; everything
/// else is reported in [`FsckReport::problems`].
pub fn fsck(
    store: &(impl BlockStore + ?Sized),
    roots: &[NodeId],
    files: &[NodeId],
    opts: &FsckOptions,
) -> Result<FsckReport> {
    let Walked {
        nodes: seen_nodes,
        data,
        problems,
    } = walk(store, roots, files, true);
    let mut report = FsckReport {
        problems,
        ..FsckReport::default()
    };
    report.nodes = seen_nodes.len() as u64;
    report.data_blocks = data.len() as u64;
    report.data_size = data.values().map(|(len, _)| u64::from(*len)).sum();

    let blocks: Vec<(&BlockId, &(u32, String))> = data.iter().collect();
    let block_problems: Vec<FsckProblem> = blocks
        .par_iter()
        .filter_map(|(id, (len, path))| {
            check_block(store, id, Some(*len), opts.verify_data).map(|error| FsckProblem {
                location: path.clone(),
                id: **id,
                error,
            })
        })
        .collect();
    report.problems.extend(block_problems);

    if opts.scan_unreferenced {
        let unreferenced: Vec<BlockId> = store
            .list()?
            .into_iter()
            .filter(|id| !data.contains_key(id) && !seen_nodes.contains(&NodeId::from(*id)))
            .collect();
        report.unreferenced_blocks = unreferenced.len() as u64;
        let stray: Vec<FsckProblem> = unreferenced
            .par_iter()
            .filter_map(|id| {
                check_block(store, id, None, opts.verify_data).map(|error| FsckProblem {
                    location: "(unreferenced)".to_owned(),
                    id: *id,
                    error,
                })
            })
            .collect();
        report.problems.extend(stray);
    }
    Ok(report)
}

/// Everything reachable from some roots, as found by [`walk`].
struct Walked {
    nodes: HashSet<NodeId>,
    /// Data blocks with the length a file node gives and the first path that uses them.
    data: HashMap<BlockId, (u32, String)>,
    problems: Vec<FsckProblem>,
}

/// Walks every tree from `roots`, loading every node (which re-hashes it) but no data block.
/// With `strict`, a directory's chunks are read as a reader reads them (levels and name order
/// checked, see [`read_dir_with_nodes`]); without, as the collector must: everything a chunk
/// references is reached, whatever its order. A tree a client got committed with its chunks
/// out of order must not stop every collection for everyone (it is the fsck's to report).
fn walk(
    store: &(impl BlockStore + ?Sized),
    roots: &[NodeId],
    files: &[NodeId],
    strict: bool,
) -> Walked {
    let mut problems = Vec::new();
    let mut seen_nodes: HashSet<NodeId> = HashSet::new();
    let mut data: HashMap<BlockId, (u32, String)> = HashMap::new();
    let mut dirs: Vec<(NodeId, String)> = roots.iter().map(|r| (*r, String::new())).collect();
    let mut problem = |location: &str, id: BlockId, error: Error| {
        report_problem(&mut problems, location, id, error);
    };
    while let Some((dir_id, location)) = dirs.pop() {
        if !seen_nodes.insert(dir_id) {
            continue;
        }
        let read = if strict {
            read_dir_with_nodes(store, &dir_id)
        } else {
            read_dir_lenient(store, &dir_id)
        };
        let (entries, nodes) = match read {
            Ok(found) => found,
            Err(error) => {
                problem(&location, dir_id.into(), error);
                continue;
            }
        };
        seen_nodes.extend(nodes);
        for entry in entries {
            let path = join(&location, &entry.name.to_string_lossy());
            match entry.kind {
                EntryKind::Dir => dirs.push((entry.child, path)),
                EntryKind::File | EntryKind::Symlink => {
                    if !seen_nodes.insert(entry.child) {
                        continue;
                    }
                    match store.get_node(&entry.child) {
                        Ok(Node::File(file)) if entry.kind == EntryKind::File => {
                            if file.size() != entry.size {
                                let error = Error::Limit {
                                    what: "file size in its directory entry",
                                    actual: entry.size,
                                    max: file.size(),
                                };
                                problem(&path, entry.child.into(), error);
                            }
                            for block in file.blocks() {
                                data.entry(block.id)
                                    .or_insert_with(|| (block.len, path.clone()));
                            }
                        }
                        Ok(Node::Symlink(_)) if entry.kind == EntryKind::Symlink => {}
                        Ok(other) => {
                            let error = Error::NodeKind {
                                id: entry.child,
                                found: other.kind_str(),
                                expected: entry.kind.as_str(),
                            };
                            problem(&path, entry.child.into(), error);
                        }
                        Err(error) => problem(&path, entry.child.into(), error),
                    }
                }
            }
        }
    }
    // Then the versions no tree holds, each found by its id (no path names it); one a tree
    // holds was checked there, with its path. The collector skips a version whose node is gone
    // (collected before versions were roots): nothing below it can be read any more, and one
    // such row must not stop every collection.
    for &file in files {
        if !seen_nodes.insert(file) {
            continue;
        }
        let location = format!("(version {file})");
        match store.get_node(&file) {
            Ok(Node::File(node)) => {
                for block in node.blocks() {
                    data.entry(block.id)
                        .or_insert_with(|| (block.len, location.clone()));
                }
            }
            Ok(Node::Symlink(_)) => {}
            Ok(other) => {
                let error = Error::NodeKind {
                    id: file,
                    found: other.kind_str(),
                    expected: "file",
                };
                problem(&location, file.into(), error);
            }
            Err(Error::BlockMissing(_)) if !strict => {
                seen_nodes.remove(&file);
            }
            Err(error) => problem(&location, file.into(), error),
        }
    }
    Walked {
        nodes: seen_nodes,
        data,
        problems,
    }
}

/// Every block (tree node or data) reachable from `roots`, for garbage collection.
///
/// # Errors
/// The first problem found (a missing or damaged node): a collector must not delete anything
/// when it cannot see the whole tree, since the blocks below a missing node would look unused.
///
/// `roots` are directory nodes; `files` are file or symlink nodes that no tree may hold
/// (versions kept only in a folder's history), kept with their blocks.
pub fn reachable(
    store: &(impl BlockStore + ?Sized),
    roots: &[NodeId],
    files: &[NodeId],
) -> Result<HashSet<BlockId>> {
    let walked = walk(store, roots, files, false);
    if let Some(problem) = walked.problems.into_iter().next() {
        return Err(problem.error);
    }
    let mut live: HashSet<BlockId> = walked.nodes.into_iter().map(BlockId::from).collect();
    live.extend(walked.data.into_keys());
    Ok(live)
}

/// A directory's entries and chunk nodes, reached through every index child whatever its level
/// or the name it gives (see [`walk`]).
fn read_dir_lenient(
    store: &(impl BlockStore + ?Sized),
    root: &NodeId,
) -> Result<(Vec<DirEntry>, Vec<NodeId>)> {
    let mut entries = Vec::new();
    let mut nodes = Vec::new();
    let mut stack = vec![*root];
    while let Some(id) = stack.pop() {
        nodes.push(id);
        match store.get_node(&id)? {
            Node::DirLeaf(leaf) => entries.extend(leaf.into_entries()),
            Node::DirIndex(index) => stack.extend(index.children().iter().map(|c| c.child)),
            other => {
                return Err(Error::NodeKind {
                    id,
                    found: other.kind_str(),
                    expected: "directory",
                });
            }
        }
    }
    Ok((entries, nodes))
}

fn report_problem(problems: &mut Vec<FsckProblem>, location: &str, id: BlockId, error: Error) {
    let location = if location.is_empty() {
        "/".to_owned()
    } else {
        location.to_owned()
    };
    problems.push(FsckProblem {
        location,
        id,
        error,
    });
}

/// Checks one block; `None` when it is sound.
fn check_block(
    store: &(impl BlockStore + ?Sized),
    id: &BlockId,
    expected_len: Option<u32>,
    verify_data: bool,
) -> Option<Error> {
    if !verify_data {
        return match store.has(id) {
            Ok(true) => None,
            Ok(false) => Some(Error::BlockMissing(*id)),
            Err(error) => Some(error),
        };
    }
    match store.get(id) {
        Ok(bytes) => match expected_len {
            Some(len) if bytes.len() as u64 != u64::from(len) => Some(Error::Limit {
                what: "block length in its file node",
                actual: u64::from(len),
                max: bytes.len() as u64,
            }),
            _ => None,
        },
        Err(error) => Some(error),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}
