//! Golden vectors, round trips and decoder hardening for the node format.

use proptest::prelude::*;

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `node` encodes to the annotated `expected` hex, decodes back to itself and
/// has the pinned id.
///
/// The hex layouts were written by hand from the format in the module doc; the ids pin BLAKE3 over
/// those bytes, recorded when format version 1 was fixed. If one changes, every stored tree's id
/// changes: bump [`NODE_FORMAT_VERSION`] instead.
fn check(node: &Node, expected: &[&str], expected_id: &str) {
    let bytes = node.to_bytes();
    assert_eq!(hex(&bytes), expected.concat(), "encoding of {node:?}");
    assert_eq!(Node::decode(&bytes).as_ref(), Ok(node));
    assert_eq!(node.id().to_string(), expected_id);
}

fn id(fill: u8) -> [u8; 32] {
    [fill; 32]
}

#[test]
fn golden_file_node() {
    let blocks = vec![
        BlockRef {
            id: BlockId::from_bytes(id(0xaa)),
            len: 12,
        },
        BlockRef {
            id: BlockId::from_bytes(id(0xbb)),
            len: 1,
        },
    ];
    let node = Node::File(FileNode::new(0o644, 1_700_000_000_123_456_789, blocks).expect("valid"));
    check(
        &node,
        &[
            "01",                 // format version 1
            "01",                 // tag: file
            "0d",                 // size 13 = 12 + 1
            "a403",               // mode 0o644 = 420
            "aab4aed8c7bfce972f", // mtime 1_700_000_000_123_456_789 ns, zigzag
            "02",                 // two blocks
            &"aa".repeat(32),
            "0c", // length 12
            &"bb".repeat(32),
            "01", // length 1
        ],
        "0f71e25ca8ea453ceb8af5d62bca85f0a431be8951e25e04ecc066aeed14cf90",
    );
}

#[test]
fn golden_dir_leaf_and_symlink() {
    let link = Node::Symlink(SymlinkNode::new(b"../x".to_vec()).expect("valid"));
    check(
        &link,
        &["01", "02", "04", "2e2e2f78"],
        "d52939180784309a3edeedd9dcc54d4a7a9a6ea36b314702d8cd637b8ec8e39a",
    );
    let entries = vec![
        DirEntry {
            name: Name::new(b"a".to_vec()).expect("valid"),
            kind: EntryKind::File,
            size: 13,
            mtime_ns: -1,
            mode: 0o644,
            child: NodeId::from_bytes(id(0x11)),
        },
        DirEntry {
            name: Name::new(b"sub".to_vec()).expect("valid"),
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns: 0,
            mode: 0o755,
            child: NodeId::from_bytes(id(0x22)),
        },
    ];
    let leaf = Node::DirLeaf(DirLeaf::new(entries).expect("sorted"));
    check(
        &leaf,
        &[
            "01",
            "03", // version, tag: dir leaf
            "02", // two entries
            "01",
            "61",
            "01",
            "0d",
            "01",
            "a403",
            &"11".repeat(32), // "a": file, 13 bytes, mtime -1
            "03",
            "737562",
            "02",
            "00",
            "00",
            "ed03",
            &"22".repeat(32), // "sub": dir, mode 0o755
        ],
        "1a8233d8b55b51968106ff7c293fee98acfc9a88a12d93dc6213d4cd36fbca8a",
    );
}

#[test]
fn golden_dir_index() {
    let children = vec![
        IndexEntry {
            first_name: Name::new(b"a".to_vec()).expect("valid"),
            child: NodeId::from_bytes(id(1)),
            entries: 2,
            size: 300,
        },
        IndexEntry {
            first_name: Name::new(b"m".to_vec()).expect("valid"),
            child: NodeId::from_bytes(id(2)),
            entries: 1,
            size: 0,
        },
    ];
    let index = Node::DirIndex(DirIndex::new(1, children).expect("valid"));
    check(
        &index,
        &[
            "01",
            "04",
            "01",
            "02", // version, tag: dir index, level 1, two children
            "01",
            "61",
            &"01".repeat(32),
            "02",
            "ac02", // "a": 2 entries, 300 bytes
            "01",
            "6d",
            &"02".repeat(32),
            "01",
            "00", // "m": 1 entry, 0 bytes
        ],
        "ebf87b2578f9632425b46c0e86f0ec84d0d0a0a2b7ff47f6c3e66954355c43b0",
    );
}

#[test]
fn decoder_refuses_non_canonical_input() {
    let leaf = Node::DirLeaf(DirLeaf::default()).to_bytes();
    assert_eq!(hex(&leaf), "010300");
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", DecodeError::Truncated(0)),
        (&[2, 3, 0], DecodeError::Version(2)),
        (&[1, 9], DecodeError::Tag(9)),
        (&[1, 3, 0, 0], DecodeError::Trailing(1)),
        (&[1, 3, 0x80, 0x00], DecodeError::Varint(2)), // zero encoded in two bytes
        (
            &[1, 2, 0],
            DecodeError::Inconsistent("empty symlink target"),
        ),
        (
            &[1, 4, 0, 0],
            DecodeError::Limit {
                what: "directory index level",
                actual: 0,
                max: 16,
            },
        ),
        // A count of 2^40 entries in a 7-byte node must be refused before any allocation.
        (
            &[1, 3, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20],
            DecodeError::Limit {
                what: "entries in one node",
                actual: 1 << 40,
                max: 0,
            },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(
            Node::decode(bytes).as_ref(),
            Err(expected),
            "input {}",
            hex(bytes)
        );
    }
}

#[test]
fn decoder_refuses_unsorted_names_and_wrong_file_size() {
    let entry = |name: &[u8]| DirEntry {
        name: Name::new(name.to_vec()).expect("valid"),
        kind: EntryKind::File,
        size: 0,
        mtime_ns: 0,
        mode: 0,
        child: NodeId::from_bytes(id(3)),
    };
    let mut bytes = vec![1, 3, 2];
    encode_entry(&entry(b"b"), &mut bytes);
    encode_entry(&entry(b"a"), &mut bytes);
    assert_eq!(Node::decode(&bytes), Err(DecodeError::Order(1)));
    assert!(DirLeaf::new(vec![entry(b"a"), entry(b"a")]).is_err());

    let file = Node::File(
        FileNode::new(
            0,
            0,
            vec![BlockRef {
                id: BlockId::from_bytes(id(4)),
                len: 7,
            }],
        )
        .expect("valid"),
    );
    let mut bytes = file.to_bytes();
    bytes[2] = 8; // claim 8 bytes while the block list totals 7
    assert_eq!(
        Node::decode(&bytes),
        Err(DecodeError::Inconsistent(
            "file size differs from its blocks' total"
        ))
    );
}

#[test]
fn plain_name_rules() {
    for bad in [&b"."[..], b"..", b"a/b", b"a\\b", b"a\0b"] {
        assert!(
            Name::new(bad.to_vec())
                .expect("non-empty")
                .check_plain()
                .is_err(),
            "{bad:?}"
        );
    }
    assert!(Name::new(Vec::new()).is_err());
    assert!(Name::new(vec![b'x'; 1025]).is_err());
    assert!(
        Name::new("café ☕".as_bytes().to_vec())
            .expect("valid")
            .check_plain()
            .is_ok()
    );
}

fn arb_name() -> impl Strategy<Value = Name> {
    proptest::collection::vec(any::<u8>(), 1..24).prop_map(|b| Name::new(b).expect("1..24 bytes"))
}

fn arb_id() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn arb_node() -> impl Strategy<Value = Node> {
    let kind = prop_oneof![
        Just(EntryKind::File),
        Just(EntryKind::Dir),
        Just(EntryKind::Symlink)
    ];
    let entry = (
        arb_name(),
        kind,
        any::<u64>(),
        any::<i64>(),
        any::<u32>(),
        arb_id(),
    )
        .prop_map(|(name, kind, size, mtime_ns, mode, child)| DirEntry {
            name,
            kind,
            size,
            mtime_ns,
            mode,
            child: NodeId::from_bytes(child),
        });
    let leaf = proptest::collection::btree_map(arb_name(), entry, 0..8).prop_map(|map| {
        let entries = map
            .into_iter()
            .map(|(name, e)| DirEntry { name, ..e })
            .collect();
        Node::DirLeaf(DirLeaf::new(entries).expect("btree order"))
    });
    let index_entry = (arb_id(), any::<u64>(), any::<u64>());
    let index = (
        1u8..=16,
        proptest::collection::btree_map(arb_name(), index_entry, 1..8),
    )
        .prop_map(|(level, map)| {
            let children = map
                .into_iter()
                .map(|(first_name, (child, entries, size))| IndexEntry {
                    first_name,
                    child: NodeId::from_bytes(child),
                    entries,
                    size,
                })
                .collect();
            Node::DirIndex(DirIndex::new(level, children).expect("valid"))
        });
    let block = (arb_id(), 1u32..=BLOCK_SIZE_MAX).prop_map(|(id, len)| BlockRef {
        id: BlockId::from_bytes(id),
        len,
    });
    let file = (
        any::<u32>(),
        any::<i64>(),
        proptest::collection::vec(block, 0..8),
    )
        .prop_map(|(mode, mtime, blocks)| {
            Node::File(FileNode::new(mode, mtime, blocks).expect("valid"))
        });
    let link = proptest::collection::vec(any::<u8>(), 1..64)
        .prop_map(|t| Node::Symlink(SymlinkNode::new(t).expect("valid")));
    prop_oneof![file, link, leaf, index]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(node in arb_node()) {
        let bytes = node.to_bytes();
        prop_assert_eq!(Node::decode(&bytes), Ok(node));
    }

    #[test]
    fn decode_never_panics_and_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(node) = Node::decode(&bytes) {
            prop_assert_eq!(node.to_bytes(), bytes);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(node in arb_node(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = node.to_bytes();
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        if let Ok(decoded) = Node::decode(&bytes) {
            prop_assert_eq!(decoded.to_bytes(), bytes);
        }
    }

    #[test]
    fn encoded_lengths_match(node in arb_node()) {
        if let Node::DirLeaf(leaf) = &node {
            let total: usize = leaf.entries().iter().map(entry_encoded_len).sum();
            prop_assert_eq!(total + 2 + uv_len(leaf.entries().len() as u64) + 1, node.to_bytes().len() + 1);
        }
        if let Node::DirIndex(index) = &node {
            let total: usize = index.children().iter().map(index_entry_encoded_len).sum();
            prop_assert_eq!(total + 3 + uv_len(index.children().len() as u64), node.to_bytes().len());
        }
    }
}
