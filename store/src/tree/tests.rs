//! Tree building and fsck against real directories.

use std::os::unix::fs::{FileExt, symlink};

use super::*;
use crate::dir::read_dir;
use crate::fs::{FsBlockStore, FsStoreOptions};
use crate::fsck::{FsckOptions, fsck};
use crate::mem::MemBlockStore;
use crate::node::Node;

const OPTS: BuildOptions = BuildOptions {
    chunk: ChunkConfig::DEFAULT,
};

fn sample_tree(root: &Path) {
    let big: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    fs::create_dir_all(root.join("docs/deep/er")).expect("mkdir");
    fs::write(root.join("a.txt"), b"hello\n").expect("write");
    fs::write(root.join("docs/big.bin"), &big).expect("write");
    fs::write(root.join("docs/deep/er/copy.bin"), &big).expect("write");
    fs::write(root.join("empty"), b"").expect("write");
    fs::create_dir(root.join("empty-dir")).expect("mkdir");
    symlink("../../etc/passwd", root.join("docs/link")).expect("symlink");
    fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o750)).expect("chmod");
}

fn entry_names(store: &MemBlockStore, dir: &NodeId) -> Vec<String> {
    read_dir(store, dir)
        .expect("read")
        .iter()
        .map(|e| e.name.to_string_lossy())
        .collect()
}

#[test]
fn builds_files_dirs_and_symlinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_tree(dir.path());
    let store = MemBlockStore::new();
    let built = build_tree(dir.path(), &store, &OPTS).expect("build");
    assert!(built.problems.is_empty(), "{:?}", built.problems);
    assert_eq!(built.stats.files, 4);
    assert_eq!(built.stats.symlinks, 1);
    assert_eq!(built.stats.dirs, 5);
    assert_eq!(built.stats.bytes, 6 + 2 * 1_500_000);
    assert_eq!(
        entry_names(&store, &built.root),
        ["a.txt", "docs", "empty", "empty-dir"]
    );

    let root = read_dir(&store, &built.root).expect("read");
    assert_eq!(root[0].mode, 0o750);
    assert_eq!(
        root[1].size,
        2 * 1_500_000 + "../../etc/passwd".len() as u64
    );
    let docs = read_dir(&store, &root[1].child).expect("read docs");
    let link = docs
        .iter()
        .find(|e| e.name.as_bytes() == b"link")
        .expect("link entry");
    assert_eq!(link.kind, EntryKind::Symlink);
    match store.get_node(&link.child).expect("link node") {
        Node::Symlink(node) => assert_eq!(node.target(), b"../../etc/passwd"),
        other => panic!("expected a symlink node, got {other:?}"),
    }
    // a.txt is one block; big.bin and its copy share all of theirs, stored once.
    assert!(built.stats.new_blocks >= 3);
    assert_eq!(built.stats.blocks - 1, 2 * (built.stats.new_blocks - 1));
}

#[test]
fn same_content_gives_same_root() {
    let one = tempfile::tempdir().expect("tempdir");
    let two = tempfile::tempdir().expect("tempdir");
    sample_tree(one.path());
    sample_tree(two.path());
    let mtime = fs::metadata(one.path().join("a.txt"))
        .expect("stat")
        .modified()
        .expect("mtime");
    for path in ["a.txt", "docs/big.bin", "docs/deep/er/copy.bin", "empty"] {
        let file = fs::File::options()
            .write(true)
            .open(two.path().join(path))
            .expect("open");
        file.set_modified(mtime).expect("set mtime");
        let file = fs::File::options()
            .write(true)
            .open(one.path().join(path))
            .expect("open");
        file.set_modified(mtime).expect("set mtime");
    }
    let store = MemBlockStore::new();
    let a = build_tree(one.path(), &store, &OPTS).expect("build");
    let b = build_tree(two.path(), &store, &OPTS).expect("build");
    // Symlink mtimes differ between the two copies; everything else is equal.
    let a_root = read_dir(&store, &a.root).expect("read");
    let b_root = read_dir(&store, &b.root).expect("read");
    assert_eq!(a_root[0], b_root[0]);
    assert_eq!(a_root[2..], b_root[2..]);
    assert_eq!(b.stats.new_blocks, 0);
}

#[test]
fn unstorable_entries_are_problems_with_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("fine"), b"ok").expect("write");
    fs::write(dir.path().join("back\\slash"), b"x").expect("write");
    let fifo = dir.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let store = MemBlockStore::new();
    let built = build_tree(dir.path(), &store, &OPTS).expect("build");
    assert_eq!(entry_names(&store, &built.root), ["fine"]);
    let mut problems: Vec<String> = built.problems.iter().map(|p| p.error.to_string()).collect();
    problems.sort();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("'") && problems[0].contains("pipe' is a socket, FIFO"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("invalid name \"back\\\\slash\""),
        "{problems:?}"
    );
}

#[test]
fn root_must_be_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f");
    fs::write(&file, b"x").expect("write");
    let store = MemBlockStore::new();
    assert!(matches!(
        build_tree(&file, &store, &OPTS),
        Err(Error::NotADirectory(_))
    ));
    let missing = build_tree(&dir.path().join("nope"), &store, &OPTS).expect_err("missing");
    assert!(is_vanished(&missing), "{missing}");
}

#[test]
fn fsck_finds_missing_corrupt_and_stray_blocks() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let store_dir = tempfile::tempdir().expect("tempdir");
    sample_tree(data_dir.path());
    let store = FsBlockStore::open(store_dir.path(), FsStoreOptions::DEFAULT).expect("open");
    let built = build_tree(data_dir.path(), &store, &OPTS).expect("build");
    let full = FsckOptions {
        verify_data: true,
        scan_unreferenced: true,
    };
    let clean = fsck(&store, &[built.root], &[], &full).expect("fsck");
    assert!(clean.is_clean(), "{:?}", clean.problems);
    assert_eq!(clean.unreferenced_blocks, 0);
    assert_eq!(clean.data_size, 6 + 1_500_000);

    // Damage one data block of docs/big.bin, delete the block of a.txt, add a stray block.
    let root = read_dir(&store, &built.root).expect("read");
    let docs = read_dir(&store, &root[1].child).expect("read");
    let big = docs
        .iter()
        .find(|e| e.name.as_bytes() == b"big.bin")
        .expect("big.bin");
    let Node::File(big) = store.get_node(&big.child).expect("node") else {
        panic!("not a file")
    };
    let damaged = big.blocks()[0].id;
    let (path, offset, len) = store.location(&damaged).expect("located");
    let pack = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open pack");
    let mut last = [0u8; 1];
    pack.read_exact_at(&mut last, offset + len - 1)
        .expect("read");
    pack.write_all_at(&[last[0] ^ 1], offset + len - 1)
        .expect("damage");
    let Node::File(small) = store.get_node(&root[0].child).expect("node") else {
        panic!("not a file")
    };
    store.delete(&small.blocks()[0].id).expect("delete");
    store.put(b"stray").expect("stray");
    store.sync().expect("sync");

    let quick = fsck(
        &store,
        &[built.root],
        &[],
        &FsckOptions {
            verify_data: false,
            scan_unreferenced: false,
        },
    )
    .expect("fsck");
    assert_eq!(
        quick.problems.len(),
        1,
        "existence check finds only the missing block"
    );
    let report = fsck(&store, &[built.root], &[], &full).expect("fsck");
    assert_eq!(report.unreferenced_blocks, 1);
    let mut found: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.location, p.error))
        .collect();
    found.sort();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("a.txt: block ") && found[0].ends_with("is missing from the store"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("docs/big.bin: block ") && found[1].contains("is corrupt"),
        "{found:?}"
    );
}

#[test]
fn fsck_reports_a_missing_directory_node() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    sample_tree(data_dir.path());
    let store = MemBlockStore::new();
    let built = build_tree(data_dir.path(), &store, &OPTS).expect("build");
    let root = read_dir(&store, &built.root).expect("read");
    store
        .delete(&root[1].child.into())
        .expect("delete docs node");
    let report = fsck(
        &store,
        &[built.root],
        &[],
        &FsckOptions {
            verify_data: true,
            scan_unreferenced: false,
        },
    )
    .expect("fsck");
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].location, "docs");
    assert!(matches!(report.problems[0].error, Error::BlockMissing(_)));
}

/// A directory index that names the wrong first entry of a chunk decodes (its own names are
/// sorted), and a client could get a server to commit one: readers and the fsck refuse it, but
/// the collector must still see everything it references, or one such tree stops every
/// collection. Version nodes no tree holds are reached too.
#[test]
fn the_collector_reaches_through_a_misnamed_index_and_kept_versions() {
    use crate::fsck::reachable;
    use crate::node::{DirEntry, DirIndex, DirLeaf, EntryKind, FileNode, IndexEntry, Name};

    let store = MemBlockStore::new();
    let file = |store: &MemBlockStore, text: &[u8]| {
        let put = store.put(text).expect("put");
        let node = Node::File(
            FileNode::new(
                0o644,
                0,
                vec![crate::node::BlockRef {
                    id: put.id,
                    len: u32::try_from(text.len()).expect("small"),
                }],
            )
            .expect("file"),
        );
        store.put_node(&node).expect("put node").0
    };
    let entry = |name: &str, child: NodeId, size: u64| DirEntry {
        name: Name::new(name.as_bytes().to_vec()).expect("name"),
        kind: EntryKind::File,
        size,
        mtime_ns: 0,
        mode: 0o644,
        child,
    };
    let a = file(&store, b"aa");
    let b = file(&store, b"bbb");
    let leaf = |e: DirEntry| {
        let node = Node::DirLeaf(DirLeaf::new(vec![e]).expect("leaf"));
        store.put_node(&node).expect("put leaf").0
    };
    let (leaf_a, leaf_b) = (leaf(entry("a", a, 2)), leaf(entry("b", b, 3)));
    let index_child = |first: &str, child: NodeId, size: u64| IndexEntry {
        first_name: Name::new(first.as_bytes().to_vec()).expect("name"),
        child,
        entries: 1,
        size,
    };
    // The second chunk's first entry is "b", not "c".
    let index = Node::DirIndex(
        DirIndex::new(
            1,
            vec![index_child("a", leaf_a, 2), index_child("c", leaf_b, 3)],
        )
        .expect("index"),
    );
    let (root, _) = store.put_node(&index).expect("put index");
    assert!(read_dir(&store, &root).is_err(), "readers refuse it");
    let full = FsckOptions {
        verify_data: true,
        scan_unreferenced: false,
    };
    assert!(
        !fsck(&store, &[root], &[], &full).expect("fsck").is_clean(),
        "the fsck reports it"
    );
    let kept = file(&store, b"a kept version");
    let live = reachable(&store, &[root], &[kept]).expect("the collector walks it");
    let everything: std::collections::HashSet<crate::BlockId> =
        store.list().expect("list").into_iter().collect();
    assert_eq!(live, everything, "every node and block is reached");
    let without_versions = reachable(&store, &[root], &[]).expect("walk");
    assert_eq!(
        everything.len() - without_versions.len(),
        2,
        "the version and its block"
    );
    // A version whose node is gone (collected before versions were roots) is skipped by the
    // collector, and reported by the fsck.
    let gone = NodeId::from_bytes([7; 32]);
    let live = reachable(&store, &[root], &[kept, gone]).expect("a lost version stops nothing");
    assert_eq!(live, everything);
    let report = fsck(&store, &[], &[gone], &full).expect("fsck");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.location.starts_with("(version")),
        "{:?}",
        report.problems
    );
}
