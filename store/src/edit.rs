//! Editing a stored tree at one path: the new root after putting or removing one entry.
//!
//! Used where a change is known by path (a REST upload or delete) rather than found by
//! comparing trees. Only the directories on the path are rebuilt; every other subtree keeps its
//! node ids, so an edit writes a handful of nodes whatever the tree's size.

use crate::dir::{chunk_dir, read_dir, store_dir};
use crate::node::{DirEntry, EntryKind, Name};
use crate::{Error, NodeId, NodeStore, Result};

/// What to do at the path.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Put this entry at the path (its `name` is replaced by the path's last component), creating
    /// missing parent directories.
    Put(DirEntry),
    /// Remove the entry at the path.
    Remove,
}

/// The outcome of [`edit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The new root directory node.
    pub root: NodeId,
    /// The entry that was at the path before, if any.
    pub previous: Option<DirEntry>,
}

/// Applies `edit` at `path` (non-empty, validated names) in the tree rooted at `root`.
///
/// # Errors
/// [`Error::InvalidName`] when a parent on the path is a file or symlink, [`Error::NodeKind`]
/// for damaged trees, store errors. Removing a path that does not exist is not an error:
/// `previous` is `None` and the root is unchanged.
pub fn edit(
    store: &(impl NodeStore + ?Sized),
    root: &NodeId,
    path: &[Name],
    edit: &Edit,
) -> Result<Edited> {
    let (first, rest) = path.split_first().ok_or_else(|| Error::InvalidName {
        name: String::new(),
        reason: "a path needs at least one name",
    })?;
    let mut entries = read_dir(store, root)?;
    let found = entries.binary_search_by(|e| e.name.cmp(first));
    let previous;
    if rest.is_empty() {
        previous = found.ok().map(|idx| entries[idx].clone());
        match (edit, found) {
            (Edit::Put(entry), Ok(idx)) => {
                entries[idx] = DirEntry {
                    name: first.clone(),
                    ..entry.clone()
                }
            }
            (Edit::Put(entry), Err(idx)) => entries.insert(
                idx,
                DirEntry {
                    name: first.clone(),
                    ..entry.clone()
                },
            ),
            (Edit::Remove, Ok(idx)) => {
                entries.remove(idx);
            }
            (Edit::Remove, Err(_)) => {
                return Ok(Edited {
                    root: *root,
                    previous: None,
                });
            }
        }
    } else {
        let child_root = match found {
            Ok(idx) if entries[idx].kind == EntryKind::Dir => entries[idx].child,
            Ok(_) => {
                return Err(Error::InvalidName {
                    name: first.to_string_lossy(),
                    reason: "is a file, so it cannot hold other files",
                });
            }
            Err(_) if matches!(edit, Edit::Remove) => {
                return Ok(Edited {
                    root: *root,
                    previous: None,
                });
            }
            Err(_) => {
                let empty = chunk_dir(Vec::new())?;
                store_dir(store, &empty)?;
                empty.root
            }
        };
        let inner = self::edit(store, &child_root, rest, edit)?;
        previous = inner.previous;
        if inner.root == child_root && found.is_ok() {
            return Ok(Edited {
                root: *root,
                previous,
            });
        }
        let size = read_dir(store, &inner.root)?
            .iter()
            .map(|e| e.size)
            .fold(0u64, u64::saturating_add);
        let dir_entry = DirEntry {
            name: first.clone(),
            kind: EntryKind::Dir,
            size,
            mtime_ns: 0,
            mode: 0o755,
            child: inner.root,
        };
        match found {
            Ok(idx) => {
                entries[idx] = DirEntry {
                    mode: entries[idx].mode,
                    ..dir_entry
                }
            }
            Err(idx) => entries.insert(idx, dir_entry),
        }
    }
    let chunked = chunk_dir(entries)?;
    store_dir(store, &chunked)?;
    Ok(Edited {
        root: chunked.root,
        previous,
    })
}

/// Looks up the entry at `path` in the tree rooted at `root`.
///
/// # Errors
/// Store errors; a missing path is `Ok(None)`.
pub fn lookup(
    store: &(impl NodeStore + ?Sized),
    root: &NodeId,
    path: &[Name],
) -> Result<Option<DirEntry>> {
    let mut dir = *root;
    for (idx, name) in path.iter().enumerate() {
        let entries = read_dir(store, &dir)?;
        let Ok(pos) = entries.binary_search_by(|e| e.name.cmp(name)) else {
            return Ok(None);
        };
        let entry = &entries[pos];
        if idx + 1 == path.len() {
            return Ok(Some(entry.clone()));
        }
        if entry.kind != EntryKind::Dir {
            return Ok(None);
        }
        dir = entry.child;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemBlockStore;

    fn name(text: &str) -> Name {
        Name::new(text.as_bytes().to_vec()).expect("valid")
    }

    fn path(text: &str) -> Vec<Name> {
        text.split('/').map(name).collect()
    }

    fn file(size: u64, seed: u8) -> DirEntry {
        DirEntry {
            name: name("x"),
            kind: EntryKind::File,
            size,
            mtime_ns: 1,
            mode: 0o644,
            child: NodeId::from_bytes([seed; 32]),
        }
    }

    fn empty_root(store: &MemBlockStore) -> NodeId {
        let empty = chunk_dir(Vec::new()).expect("chunk");
        store_dir(store, &empty).expect("store");
        empty.root
    }

    #[test]
    fn put_creates_parents_and_replaces() {
        let store = MemBlockStore::new();
        let root = empty_root(&store);
        let one = edit(&store, &root, &path("a/b/c.txt"), &Edit::Put(file(10, 1))).expect("put");
        assert_eq!(one.previous, None);
        let found = lookup(&store, &one.root, &path("a/b/c.txt"))
            .expect("lookup")
            .expect("present");
        assert_eq!((found.size, found.name.as_bytes()), (10, &b"c.txt"[..]));
        assert_eq!(
            lookup(&store, &one.root, &path("a"))
                .expect("lookup")
                .map(|e| e.size),
            Some(10)
        );
        let two = edit(
            &store,
            &one.root,
            &path("a/b/c.txt"),
            &Edit::Put(file(20, 2)),
        )
        .expect("replace");
        assert_eq!(two.previous.map(|e| e.size), Some(10));
        let three = edit(&store, &two.root, &path("a/d.txt"), &Edit::Put(file(5, 3))).expect("put");
        assert_eq!(
            lookup(&store, &three.root, &path("a"))
                .expect("lookup")
                .map(|e| e.size),
            Some(25)
        );
    }

    #[test]
    fn remove_and_same_content_same_root() {
        let store = MemBlockStore::new();
        let root = empty_root(&store);
        let one = edit(&store, &root, &path("docs/x"), &Edit::Put(file(1, 1))).expect("put");
        let two = edit(&store, &one.root, &path("docs/y"), &Edit::Put(file(2, 2))).expect("put");
        let back = edit(&store, &two.root, &path("docs/y"), &Edit::Remove).expect("remove");
        assert_eq!(
            back.root, one.root,
            "removing what was added restores the same tree"
        );
        assert_eq!(back.previous.map(|e| e.size), Some(2));
        let missing =
            edit(&store, &back.root, &path("nope/z"), &Edit::Remove).expect("remove missing");
        assert_eq!((missing.root, missing.previous), (back.root, None));
    }

    #[test]
    fn a_file_cannot_be_a_parent() {
        let store = MemBlockStore::new();
        let root = empty_root(&store);
        let one = edit(&store, &root, &path("f"), &Edit::Put(file(1, 1))).expect("put");
        let err = edit(&store, &one.root, &path("f/g"), &Edit::Put(file(1, 1)))
            .expect_err("parent is a file");
        assert!(err.to_string().contains("is a file"), "{err}");
    }
}
