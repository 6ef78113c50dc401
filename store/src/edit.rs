//! Editing a stored tree at one path: the new root after putting or removing one entry.
//!
//! Used where a change is known by path (a REST upload or delete) rather than found by
//! comparing trees. Only the directories on the path are rebuilt; every other subtree keeps its
//! node ids, so an edit writes a handful of nodes whatever the tree's size.

use std::collections::BTreeMap;

use crate::dir::{chunk_dir, edit_dir, find_entry, store_dir};
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
    Ok(edit_in(store, root, path, edit)?.0)
}

/// [`edit`], plus the directory's new total size when it changed (`None`: unchanged).
fn edit_in(
    store: &(impl NodeStore + ?Sized),
    root: &NodeId,
    path: &[Name],
    edit: &Edit,
) -> Result<(Edited, Option<u64>)> {
    let (first, rest) = path.split_first().ok_or_else(|| Error::InvalidName {
        name: String::new(),
        reason: "a path needs at least one name",
    })?;
    let unchanged = |previous| {
        Ok((
            Edited {
                root: *root,
                previous,
            },
            None,
        ))
    };
    let found = find_entry(store, root, first)?;
    let previous;
    let change = if rest.is_empty() {
        previous = found;
        match edit {
            Edit::Put(entry) => Some(entry.clone()),
            Edit::Remove if previous.is_none() => return unchanged(None),
            Edit::Remove => None,
        }
    } else {
        let child_root = match &found {
            Some(entry) if entry.kind == EntryKind::Dir => entry.child,
            Some(_) => {
                return Err(Error::InvalidName {
                    name: first.to_string_lossy(),
                    reason: "is a file, so it cannot hold other files",
                });
            }
            None if matches!(edit, Edit::Remove) => return unchanged(None),
            None => {
                let empty = chunk_dir(Vec::new())?;
                store_dir(store, &empty)?;
                empty.root
            }
        };
        let (inner, size) = edit_in(store, &child_root, rest, edit)?;
        previous = inner.previous;
        let Some(size) = size.filter(|_| inner.root != child_root || found.is_none()) else {
            return unchanged(previous);
        };
        Some(DirEntry {
            name: first.clone(),
            kind: EntryKind::Dir,
            size,
            mtime_ns: 0,
            mode: found.as_ref().map_or(0o755, |e| e.mode),
            child: inner.root,
        })
    };
    let edited = edit_dir(store, root, &[(first.clone(), change)])?;
    store_dir(store, &edited)?;
    Ok((
        Edited {
            root: edited.root,
            previous,
        },
        Some(edited.size),
    ))
}

/// Applies many edits at once (each path non-empty, validated names): every directory on the
/// way is edited once, however many of its entries change, so applying a sync's worth of
/// changes costs what the touched chunks cost, not one rewrite per change.
///
/// For one name, an edit of the name itself applies before edits below it (so a file can be
/// replaced by a directory in one call); removals below a name that is not a directory are
/// no-ops. Missing parents are created; later edits of the same path win.
///
/// # Errors
/// [`Error::InvalidName`] when a put needs a parent that is a file; store errors.
pub fn edit_many(
    store: &(impl NodeStore + ?Sized),
    root: &NodeId,
    edits: &[(Vec<Name>, Edit)],
) -> Result<NodeId> {
    let refs: Vec<(&[Name], &Edit)> = edits
        .iter()
        .filter(|(path, _)| !path.is_empty())
        .map(|(path, edit)| (path.as_slice(), edit))
        .collect();
    Ok(rewrite_dir(store, Some(root), &refs)?.0)
}

/// Rewrites one directory with `edits` (paths relative to it); returns its new root and size.
fn rewrite_dir(
    store: &(impl NodeStore + ?Sized),
    dir: Option<&NodeId>,
    edits: &[(&[Name], &Edit)],
) -> Result<(NodeId, u64)> {
    let mut groups: BTreeMap<&Name, Vec<(&[Name], &Edit)>> = BTreeMap::new();
    for (path, edit) in edits {
        if let Some((first, rest)) = path.split_first() {
            groups.entry(first).or_default().push((rest, edit));
        }
    }
    let mut changes: Vec<(Name, Option<DirEntry>)> = Vec::new();
    for (name, group) in groups {
        // The name's own put or remove, if it has one (it needs no lookup).
        let mut change: Option<Option<DirEntry>> = None;
        for (rest, edit) in &group {
            if rest.is_empty() {
                change = Some(match edit {
                    Edit::Put(entry) => Some(DirEntry {
                        name: name.clone(),
                        ..entry.clone()
                    }),
                    Edit::Remove => None,
                });
            }
        }
        let deeper: Vec<(&[Name], &Edit)> = group
            .into_iter()
            .filter(|(rest, _)| !rest.is_empty())
            .collect();
        if !deeper.is_empty() {
            let existing = match (&change, dir) {
                (Some(set), _) => set.clone(),
                (None, Some(id)) => find_entry(store, id, name)?,
                (None, None) => None,
            };
            let is_dir = existing.as_ref().is_some_and(|e| e.kind == EntryKind::Dir);
            let only_removes = deeper.iter().all(|(_, e)| matches!(e, Edit::Remove));
            if existing.is_some() && !is_dir && !only_removes {
                return Err(Error::InvalidName {
                    name: name.to_string_lossy(),
                    reason: "is a file, so it cannot hold other files",
                });
            }
            if is_dir || !only_removes {
                let child = existing.as_ref().filter(|_| is_dir).map(|e| e.child);
                let (child, size) = rewrite_dir(store, child.as_ref(), &deeper)?;
                change = Some(Some(DirEntry {
                    name: name.clone(),
                    kind: EntryKind::Dir,
                    size,
                    mtime_ns: existing.as_ref().map_or(0, |e| e.mtime_ns),
                    mode: existing.as_ref().map_or(0o755, |e| e.mode),
                    child,
                }));
            }
        }
        if let Some(entry) = change {
            changes.push((name.clone(), entry));
        }
    }
    let edited = match dir {
        Some(id) => edit_dir(store, id, &changes)?,
        None => chunk_dir(changes.into_iter().filter_map(|(_, entry)| entry).collect())?,
    };
    store_dir(store, &edited)?;
    Ok((edited.root, edited.size))
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
        let Some(entry) = find_entry(store, &dir, name)? else {
            return Ok(None);
        };
        if idx + 1 == path.len() {
            return Ok(Some(entry));
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
    use crate::dir::read_dir;
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

    #[test]
    fn edit_many_matches_one_by_one_edits() {
        let store = MemBlockStore::default();
        let root = empty_root(&store);
        let edits = vec![
            (path("a/x"), Edit::Put(file(1, 1))),
            (path("a/y"), Edit::Put(file(2, 2))),
            (path("b"), Edit::Put(file(3, 3))),
            (path("c/d/e"), Edit::Put(file(4, 4))),
        ];
        let mut one_by_one = root;
        for (p, e) in &edits {
            one_by_one = edit(&store, &one_by_one, p, e).unwrap().root;
        }
        let many = edit_many(&store, &root, &edits).unwrap();
        assert_eq!(
            read_dir(&store, &many).unwrap(),
            read_dir(&store, &one_by_one).unwrap()
        );
        // A file replaced by a directory, a removal, and a removal under a file (a no-op).
        let more = vec![
            (path("b"), Edit::Remove),
            (path("b/z"), Edit::Put(file(5, 5))),
            (path("a/x"), Edit::Remove),
            (path("c/d/e/f"), Edit::Remove),
        ];
        let root2 = edit_many(&store, &many, &more).unwrap();
        assert_eq!(
            lookup(&store, &root2, &path("b/z"))
                .unwrap()
                .map(|e| e.size),
            Some(5)
        );
        assert_eq!(lookup(&store, &root2, &path("a/x")).unwrap(), None);
        assert!(lookup(&store, &root2, &path("a/y")).unwrap().is_some());
        assert!(lookup(&store, &root2, &path("c/d/e")).unwrap().is_some());
        // A put under a file is refused.
        let bad = vec![(path("a/y/q"), Edit::Put(file(6, 6)))];
        assert!(edit_many(&store, &root2, &bad).is_err());
    }
}
