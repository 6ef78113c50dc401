//! Verifying a tree before a folder's head may point at it.
//!
//! [`new_objects`] walks a tree top-down, one level per round, and stops at every node the
//! folder has already committed (its whole subtree was verified then). Every other node must
//! exist, decode, and be of the kind its parent says; every block a file references must exist.
//! For a client's commit, an object the folder committed before must still exist too: once no
//! retained version referenced it, the garbage collector may have removed it since, and a
//! client that commits without asking which blocks the server lacks must not get a tree
//! accepted that names it. (The server's own edits start from the current head, whose objects
//! are live, so they skip that check: on S3 it costs a request per object.)
//! For a client's commit (`require_known`), every new node and block must also have been
//! uploaded *to this folder*: naming someone else's block by its hash gets nothing. The walk's
//! result is the list of objects to record as committed, which is also what the sync protocol
//! lets the folder read back.

use std::collections::HashSet;

use cairn_store::node::{EntryKind, Node};
use cairn_store::{BlockId, BlockStore, NodeId, NodeStore};

use crate::api::AppState;
use crate::db;

/// Most tree levels a walk descends (path depth times directory index levels, with room).
const WALK_LEVELS_MAX: usize = 4096;

/// Why a tree cannot be committed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A node or block is not stored, or (for a client's commit) was not uploaded to the folder.
    #[error("{0}")]
    Missing(String),
    /// A node does not decode, or is of the wrong kind.
    #[error("{0}")]
    Invalid(String),
    /// Database or store failure.
    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A directory's root or chunk (leaf or index).
    Dir,
    File,
    Symlink,
}

/// The hex ids of the nodes and blocks under `root` that the folder has not committed yet,
/// after checking them (see the module doc).
///
/// # Errors
/// [`TreeError`].
pub async fn new_objects(
    state: &AppState,
    folder_id: i64,
    root: NodeId,
    require_known: bool,
) -> Result<Vec<String>, TreeError> {
    new_objects_keeping(state, folder_id, root, &[], require_known).await
}

/// [`new_objects`] of the tree at `root` and of the file nodes `files` (versions a commit keeps
/// in the history without placing them in the tree), checked alike.
///
/// # Errors
/// [`TreeError`]; a node of `files` that is not a file node is [`TreeError::Invalid`].
pub async fn new_objects_keeping(
    state: &AppState,
    folder_id: i64,
    root: NodeId,
    files: &[NodeId],
    require_known: bool,
) -> Result<Vec<String>, TreeError> {
    let internal = |e: &dyn std::fmt::Display| TreeError::Internal(e.to_string());
    let mut out = Vec::new();
    let mut seen: HashSet<NodeId> = HashSet::new();
    let mut frontier = vec![(root, Expect::Dir)];
    frontier.extend(
        files
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|id| (*id, Expect::File)),
    );
    seen.extend(frontier.iter().map(|(id, _)| *id));
    for _ in 0..WALK_LEVELS_MAX {
        if frontier.is_empty() {
            return Ok(out);
        }
        let hex: Vec<String> = frontier.iter().map(|(id, _)| id.to_string()).collect();
        let known = db::objects_state(&state.db, folder_id, &hex)
            .await
            .map_err(|e| internal(&e))?;
        let mut todo = Vec::new();
        // Objects committed before: checked for presence, not descended into.
        let mut recheck: Vec<BlockId> = Vec::new();
        for ((id, expect), hex) in frontier.into_iter().zip(hex) {
            match known.get(&hex) {
                Some(true) => {
                    if require_known {
                        recheck.push(BlockId::from(id));
                    }
                    continue;
                }
                None if require_known => {
                    return Err(TreeError::Missing(format!(
                        "tree node {hex} was not uploaded to this folder"
                    )));
                }
                _ => {}
            }
            out.push(hex);
            todo.push((id, expect));
        }
        // The new nodes are confirmed (so refreshed) with the blocks below: nodes uploaded at
        // the start of a long upload may be older than the grace period by the commit, and the
        // collector deletes what is old and unreferenced, before this commit references it.
        let new_nodes: Vec<BlockId> = todo.iter().map(|(id, _)| BlockId::from(*id)).collect();
        let store = std::sync::Arc::clone(&state.store);
        let (children, blocks) = tokio::task::spawn_blocking(move || read_level(&*store, &todo))
            .await
            .map_err(|e| internal(&e))??;
        let claims = blocks;
        let blocks: Vec<BlockId> = claims
            .iter()
            .map(|(id, _)| *id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let block_hex: Vec<String> = blocks.iter().map(ToString::to_string).collect();
        let known = db::objects_with_sizes(&state.db, folder_id, &block_hex)
            .await
            .map_err(|e| internal(&e))?;
        if require_known {
            check_lengths(&known, &claims)?;
        }
        let mut check = Vec::new();
        for (id, hex) in blocks.into_iter().zip(block_hex) {
            match known.get(&hex).map(|o| o.verified) {
                Some(true) => {
                    if require_known {
                        recheck.push(id);
                    }
                    continue;
                }
                None if require_known => {
                    return Err(TreeError::Missing(format!(
                        "block {hex} was not uploaded to this folder"
                    )));
                }
                _ => {}
            }
            check.push(id);
            out.push(hex);
        }
        check.extend(recheck);
        check.extend(new_nodes);
        let store = std::sync::Arc::clone(&state.store);
        let ids = check.clone();
        let present = tokio::task::spawn_blocking(move || store.confirm_many(&ids))
            .await
            .map_err(|e| internal(&e))?
            .map_err(|e| internal(&e))?;
        if let Some((id, _)) = check.iter().zip(&present).find(|(_, has)| !**has) {
            return Err(TreeError::Missing(format!(
                "object {id} is not stored; upload it again"
            )));
        }
        frontier = children
            .into_iter()
            .filter(|(id, _)| seen.insert(*id))
            .collect();
    }
    Err(TreeError::Invalid(
        "the tree is deeper than any path may be".to_owned(),
    ))
}

/// Every block a new file node names with a length must have been uploaded with that length:
/// usage counts file sizes, which are the sum of these lengths, while the upload was charged
/// what was received. (A block the folder committed before was checked against the node that
/// brought it; one stored again after collection has no recorded length, and is checked when
/// read.)
fn check_lengths(
    known: &std::collections::HashMap<String, db::FolderObject>,
    claims: &[(BlockId, u32)],
) -> Result<(), TreeError> {
    for (id, len) in claims {
        if let Some(size) = known.get(&id.to_string()).and_then(|o| o.uploaded_size)
            && size != i64::from(*len)
        {
            return Err(TreeError::Invalid(format!(
                "a file node says {len} bytes for block {id}, which has {size}"
            )));
        }
    }
    Ok(())
}

/// A level's children to walk next, and the data blocks its file nodes name with their
/// lengths.
type Level = (Vec<(NodeId, Expect)>, Vec<(BlockId, u32)>);

/// Reads and checks one level's nodes; returns their children and the data blocks they name.
fn read_level(
    store: &(impl BlockStore + ?Sized),
    todo: &[(NodeId, Expect)],
) -> Result<Level, TreeError> {
    let mut children = Vec::new();
    let mut blocks = Vec::new();
    for (id, expect) in todo {
        let node = match store.get_node(id) {
            Ok(node) => node,
            Err(cairn_store::Error::BlockMissing(_)) => {
                return Err(TreeError::Missing(format!(
                    "tree node {id} is not stored; upload it again"
                )));
            }
            Err(
                err @ (cairn_store::Error::NodeDecode { .. }
                | cairn_store::Error::BlockCorrupt { .. }),
            ) => {
                return Err(TreeError::Invalid(err.to_string()));
            }
            Err(err) => return Err(TreeError::Internal(err.to_string())),
        };
        let kind_ok = matches!(
            (&node, expect),
            (Node::DirLeaf(_) | Node::DirIndex(_), Expect::Dir)
                | (Node::File(_), Expect::File)
                | (Node::Symlink(_), Expect::Symlink)
        );
        if !kind_ok {
            return Err(TreeError::Invalid(format!(
                "node {id} is a {} where a {expect:?} was expected",
                node.kind_str()
            )));
        }
        match node {
            Node::DirLeaf(leaf) => {
                for entry in leaf.entries() {
                    // Quota and the file index trust entry sizes: check them against the file
                    // node, even when the node itself was committed before.
                    if entry.kind == EntryKind::File {
                        check_size(store, &entry.child, entry.size)?;
                    }
                    let expect = match entry.kind {
                        EntryKind::Dir => Expect::Dir,
                        EntryKind::File => Expect::File,
                        EntryKind::Symlink => Expect::Symlink,
                    };
                    children.push((entry.child, expect));
                }
            }
            Node::DirIndex(index) => {
                children.extend(index.children().iter().map(|c| (c.child, Expect::Dir)));
            }
            Node::File(file) => blocks.extend(file.blocks().iter().map(|b| (b.id, b.len))),
            Node::Symlink(_) => {}
        }
    }
    Ok((children, blocks))
}

fn check_size(store: &(impl BlockStore + ?Sized), id: &NodeId, size: u64) -> Result<(), TreeError> {
    match store.get_node(id) {
        Ok(Node::File(file)) if file.size() == size => Ok(()),
        Ok(Node::File(file)) => Err(TreeError::Invalid(format!(
            "a directory entry says {size} bytes for file node {id} of {} bytes",
            file.size()
        ))),
        Ok(other) => Err(TreeError::Invalid(format!(
            "node {id} is a {} where a file was expected",
            other.kind_str()
        ))),
        Err(cairn_store::Error::BlockMissing(_)) => Err(TreeError::Missing(format!(
            "tree node {id} is not stored; upload it again"
        ))),
        Err(err) => Err(TreeError::Invalid(err.to_string())),
    }
}
