//! Building a Merkle tree from a directory on disk.
//!
//! [`build_tree`] walks the directory in parallel (rayon), ingests every regular file, stores
//! symlinks as links (never following them), chunks every directory with [`crate::dir`] and
//! stores all nodes. Entries that cannot be stored (unreadable, vanished mid-walk, still being
//! written, sockets and devices, names that cannot be synced) are left out of the tree and
//! returned as [`Problem`]s with their path; nothing is skipped silently.
//!
//! It does not apply ignore rules or keep a scan cache: those belong to the sync client.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dir::{chunk_dir, store_dir};
use crate::ingest::{ingest_file, mtime_ns};
use crate::limits::TREE_DEPTH_MAX;
use crate::node::{DirEntry, EntryKind, Name, Node, SymlinkNode};
use crate::{BlockStore, ChunkConfig, Error, NodeId, NodeStore, Put, Result};

/// How [`build_tree`] stores a directory.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// How files are cut into blocks.
    pub chunk: ChunkConfig,
}

/// Counts of what a tree build read and stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Regular files stored.
    pub files: u64,
    /// Directories stored (including the root).
    pub dirs: u64,
    /// Symlinks stored.
    pub symlinks: u64,
    /// Bytes of file content read.
    pub bytes: u64,
    /// Data blocks referenced by files (with repeats).
    pub blocks: u64,
    /// Data blocks new to the store.
    pub new_blocks: u64,
    /// Bytes added to the store for data blocks.
    pub stored_size: u64,
    /// Tree nodes new to the store.
    pub new_nodes: u64,
    /// Bytes added to the store for tree nodes.
    pub node_size: u64,
}

impl TreeStats {
    fn add(&mut self, other: &TreeStats) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.bytes += other.bytes;
        self.blocks += other.blocks;
        self.new_blocks += other.new_blocks;
        self.stored_size += other.stored_size;
        self.new_nodes += other.new_nodes;
        self.node_size += other.node_size;
    }

    fn add_nodes(&mut self, puts: &[Put]) {
        for put in puts.iter().filter(|p| p.new) {
            self.new_nodes += 1;
            self.node_size += put.stored_size;
        }
    }
}

/// An entry left out of the tree, and why.
///
/// Callers comparing trees must treat a problem path as unknown, never as deleted.
#[derive(Debug)]
pub struct Problem {
    /// The entry's path on disk.
    pub path: PathBuf,
    /// What went wrong.
    pub error: Error,
}

/// The result of [`build_tree`].
#[derive(Debug)]
pub struct BuiltTree {
    /// The root directory node.
    pub root: NodeId,
    /// What was read and stored.
    pub stats: TreeStats,
    /// Entries left out, with their reasons.
    pub problems: Vec<Problem>,
}

/// Stores the directory at `root` and everything below it; syncs the store before returning.
///
/// # Errors
/// [`Error::NotADirectory`], an unreadable root, or store errors. Problems with entries below
/// the root are returned in [`BuiltTree::problems`] instead.
pub fn build_tree(
    root: &Path,
    store: &(impl BlockStore + ?Sized),
    opts: &BuildOptions,
) -> Result<BuiltTree> {
    let meta = fs::metadata(root).map_err(|e| Error::io("reading metadata of", root, e))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(root.to_path_buf()));
    }
    let mut walk = Walk::default();
    let (root_id, _) = build_dir(root, 0, store, opts, &mut walk)?;
    store.sync()?;
    Ok(BuiltTree {
        root: root_id,
        stats: walk.stats,
        problems: walk.problems,
    })
}

/// What a subtree walk found, merged upwards.
#[derive(Debug, Default)]
struct Walk {
    stats: TreeStats,
    problems: Vec<Problem>,
}

impl Walk {
    fn merge(&mut self, other: Walk) {
        self.stats.add(&other.stats);
        self.problems.extend(other.problems);
    }
}

/// Stores one directory; returns its root node id and total size. Errors here are fatal for
/// the directory (its caller turns them into a problem, or fails the build at the root).
fn build_dir(
    path: &Path,
    depth: u32,
    store: &(impl BlockStore + ?Sized),
    opts: &BuildOptions,
    walk: &mut Walk,
) -> Result<(NodeId, u64)> {
    if depth > TREE_DEPTH_MAX {
        return Err(Error::TooDeep(path.to_path_buf()));
    }
    let mut children = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| Error::io("listing", path, e))? {
        let entry = entry.map_err(|e| Error::io("listing", path, e))?;
        children.push(entry.path());
    }
    let outcomes: Vec<(Option<DirEntry>, Walk)> = children
        .par_iter()
        .map(|child| {
            let mut child_walk = Walk::default();
            let entry = match build_entry(child, depth, store, opts, &mut child_walk) {
                Ok(entry) => entry,
                Err(error) => {
                    child_walk.problems.push(Problem {
                        path: child.clone(),
                        error,
                    });
                    None
                }
            };
            (entry, child_walk)
        })
        .collect();
    let mut entries = Vec::with_capacity(outcomes.len());
    for (entry, child_walk) in outcomes {
        walk.merge(child_walk);
        entries.extend(entry);
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let chunked = chunk_dir(entries)?;
    let puts = store_dir(store, &chunked)?;
    walk.stats.add_nodes(&puts);
    walk.stats.dirs += 1;
    Ok((chunked.root, chunked.size))
}

/// Stores one entry; `Ok(None)` for entries that are not errors but not stored either.
fn build_entry(
    path: &Path,
    depth: u32,
    store: &(impl BlockStore + ?Sized),
    opts: &BuildOptions,
    walk: &mut Walk,
) -> Result<Option<DirEntry>> {
    let name = entry_name(path)?;
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) => return Err(Error::io("reading metadata of", path, err)),
    };
    let mode = meta.permissions().mode() & 0o7777;
    let file_type = meta.file_type();
    let (kind, size, mtime, child) = if file_type.is_dir() {
        let (child, size) = build_dir(path, depth + 1, store, opts, walk)?;
        (EntryKind::Dir, size, 0, child)
    } else if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(|e| Error::io("reading link", path, e))?;
        let node = Node::Symlink(SymlinkNode::new(target.as_os_str().as_bytes().to_vec())?);
        let (child, put) = store.put_node(&node)?;
        walk.stats.add_nodes(&[put]);
        walk.stats.symlinks += 1;
        let size = target.as_os_str().len() as u64;
        (EntryKind::Symlink, size, mtime_ns(&meta), child)
    } else if file_type.is_file() {
        let file = ingest_file(path, store, &opts.chunk)?;
        let size = file.node.size();
        let mtime = file.node.mtime_ns;
        walk.stats.files += 1;
        walk.stats.bytes += size;
        walk.stats.blocks += file.node.blocks().len() as u64;
        walk.stats.new_blocks += file.new_blocks;
        walk.stats.stored_size += file.stored_size;
        let (child, put) = store.put_node(&Node::File(file.node))?;
        walk.stats.add_nodes(&[put]);
        (EntryKind::File, size, mtime, child)
    } else {
        return Err(Error::Unsupported(path.to_path_buf()));
    };
    Ok(Some(DirEntry {
        name,
        kind,
        size,
        mtime_ns: mtime,
        mode,
        child,
    }))
}

fn entry_name(path: &Path) -> Result<Name> {
    let raw = path.file_name().map(OsStr::as_bytes).unwrap_or_default();
    let name = Name::new(raw.to_vec())?;
    name.check_plain()?;
    Ok(name)
}

/// True when an IO error means the entry disappeared while the walk ran.
pub fn is_vanished(error: &Error) -> bool {
    matches!(error, Error::Io { source, .. } if source.kind() == ErrorKind::NotFound)
}

#[cfg(test)]
mod tests;
