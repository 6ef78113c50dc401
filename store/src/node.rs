//! Merkle tree nodes and their canonical binary encoding (format version 1).
//!
//! A node's id is BLAKE3-256 of its encoding, so the encoding is a contract: the same node must
//! encode to the same bytes forever. It is hand-written (no serde derive) and pinned by hex test
//! vectors below. Decoding is strict: it refuses anything [`Node::encode`] would not produce
//! (non-minimal varints, unsorted names, trailing bytes), so `encode(decode(b)) == b` always.
//!
//! ```text
//! node      = version:u8(=1) tag:u8 body
//! tag 1     file:     size:uv mode:uv mtime:sv count:uv (block_id:[32] len:uv)*count
//! tag 2     symlink:  len:uv target:[len]
//! tag 3     dir leaf: count:uv entry*count
//! tag 4     dir index: level:u8 count:uv (len:uv first_name:[len] child:[32] entries:uv size:uv)*count
//! entry     = len:uv name:[len] kind:u8 size:uv mtime:sv mode:uv child:[32]
//! kind      = 1 file | 2 dir | 3 symlink
//! uv        = unsigned LEB128, minimal length, at most 64 bits
//! sv        = signed value, zigzag-mapped to uv
//! ```
//!
//! A directory is a [`DirLeaf`] when small, or a [`DirIndex`] over leaves when large (see
//! [`crate::dir`]). Names are byte strings, opaque to this module apart from length and order, so
//! an encrypted folder can store encrypted names.

use crate::limits::{
    BLOCK_SIZE_MAX, DIR_INDEX_LEVEL_MAX, NAME_BYTES_MAX, NODE_SIZE_MAX, SYMLINK_TARGET_BYTES_MAX,
};
use crate::{BlockId, NodeId};

/// The version byte every encoded node starts with.
pub const NODE_FORMAT_VERSION: u8 = 1;

const TAG_FILE: u8 = 1;
const TAG_SYMLINK: u8 = 2;
const TAG_DIR_LEAF: u8 = 3;
const TAG_DIR_INDEX: u8 = 4;

/// Why bytes are not a valid node.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("input ends early at byte {0}")]
    Truncated(usize),
    /// The version byte is not one this build reads.
    #[error("unknown node format version {0}")]
    Version(u8),
    /// The tag byte names no node kind.
    #[error("unknown node tag {0}")]
    Tag(u8),
    /// An entry kind byte is not 1, 2 or 3.
    #[error("unknown entry kind {0} at byte {1}")]
    EntryKind(u8, usize),
    /// A varint is longer than needed or overflows 64 bits.
    #[error("non-canonical or overflowing varint at byte {0}")]
    Varint(usize),
    /// Bytes remain after the node.
    #[error("{0} trailing bytes after the node")]
    Trailing(usize),
    /// A length or count is beyond its limit.
    #[error("{what} is {actual}; the limit is {max}")]
    Limit {
        /// What was measured.
        what: &'static str,
        /// The value found.
        actual: u64,
        /// The limit.
        max: u64,
    },
    /// Names are not strictly increasing, or a name is empty.
    #[error("names are empty, unsorted or repeated at entry {0}")]
    Order(usize),
    /// A structural rule is broken (file size vs block lengths, index level).
    #[error("inconsistent node: {0}")]
    Inconsistent(&'static str),
}

/// What a directory entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file; the child is a [`FileNode`].
    File,
    /// A directory; the child is a [`DirLeaf`] or [`DirIndex`].
    Dir,
    /// A symbolic link; the child is a [`SymlinkNode`]. Links are stored, never followed.
    Symlink,
}

impl EntryKind {
    fn to_byte(self) -> u8 {
        match self {
            EntryKind::File => 1,
            EntryKind::Dir => 2,
            EntryKind::Symlink => 3,
        }
    }

    fn from_byte(byte: u8, at: usize) -> Result<Self, DecodeError> {
        match byte {
            1 => Ok(EntryKind::File),
            2 => Ok(EntryKind::Dir),
            3 => Ok(EntryKind::Symlink),
            other => Err(DecodeError::EntryKind(other, at)),
        }
    }

    /// A lowercase word for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
        }
    }
}

/// One entry's name: 1 to [`NAME_BYTES_MAX`] bytes.
///
/// Any bytes are allowed so encrypted names fit; [`Name::check_plain`] is the extra check for
/// names that will become files on disk.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Vec<u8>);

impl Name {
    /// A name from raw bytes.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] if empty or longer than [`NAME_BYTES_MAX`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> crate::Result<Self> {
        let bytes = bytes.into();
        let reason = if bytes.is_empty() {
            Some("a name must not be empty")
        } else if bytes.len() > NAME_BYTES_MAX as usize {
            Some("a name must be at most 1024 bytes")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(crate::Error::InvalidName {
                name: String::from_utf8_lossy(&bytes).chars().take(80).collect(),
                reason,
            }),
            None => Ok(Name(bytes)),
        }
    }

    /// Checks the name can be a plain (unencrypted) path component on disk.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] for `.`, `..`, or a name containing `/`, `\` or NUL.
    pub fn check_plain(&self) -> crate::Result<()> {
        let reason = if self.0 == b"." || self.0 == b".." {
            Some("'.' and '..' cannot be stored")
        } else if self.0.iter().any(|&b| b == b'/' || b == b'\\' || b == 0) {
            Some("a name must not contain '/', '\\' or NUL")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(crate::Error::InvalidName {
                name: self.to_string_lossy(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name for display, with invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

/// One block of a file: its id and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// The block's address.
    pub id: BlockId,
    /// Its length in bytes (1 to [`BLOCK_SIZE_MAX`]).
    pub len: u32,
}

/// A regular file: metadata and the ordered list of its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time in nanoseconds since the Unix epoch. Informational only: sync never
    /// orders edits by it.
    pub mtime_ns: i64,
    blocks: Vec<BlockRef>,
}

impl FileNode {
    /// A file made of `blocks` in order; its size is their total length.
    ///
    /// # Errors
    /// [`crate::Error::Limit`] if a block length is 0 or above [`BLOCK_SIZE_MAX`], or the encoded
    /// node would exceed [`NODE_SIZE_MAX`].
    pub fn new(mode: u32, mtime_ns: i64, blocks: Vec<BlockRef>) -> crate::Result<Self> {
        if let Some(bad) = blocks.iter().find(|b| b.len == 0 || b.len > BLOCK_SIZE_MAX) {
            return Err(crate::Error::Limit {
                what: "block length",
                actual: u64::from(bad.len),
                max: u64::from(BLOCK_SIZE_MAX),
            });
        }
        let max_blocks = u64::from(NODE_SIZE_MAX) / 40;
        if blocks.len() as u64 > max_blocks {
            return Err(crate::Error::Limit {
                what: "blocks in one file",
                actual: blocks.len() as u64,
                max: max_blocks,
            });
        }
        let size = blocks.iter().map(|b| u64::from(b.len)).sum();
        Ok(FileNode {
            size,
            mode,
            mtime_ns,
            blocks,
        })
    }

    /// Size in bytes: the sum of the block lengths.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blocks in file order.
    pub fn blocks(&self) -> &[BlockRef] {
        &self.blocks
    }
}

/// A symbolic link's target, stored as bytes and never followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymlinkNode {
    target: Vec<u8>,
}

impl SymlinkNode {
    /// A link to `target`.
    ///
    /// # Errors
    /// [`crate::Error::Limit`] if the target is empty or over [`SYMLINK_TARGET_BYTES_MAX`].
    pub fn new(target: impl Into<Vec<u8>>) -> crate::Result<Self> {
        let target = target.into();
        if target.is_empty() || target.len() > SYMLINK_TARGET_BYTES_MAX as usize {
            return Err(crate::Error::Limit {
                what: "symlink target length",
                actual: target.len() as u64,
                max: u64::from(SYMLINK_TARGET_BYTES_MAX),
            });
        }
        Ok(SymlinkNode { target })
    }

    /// The target bytes.
    pub fn target(&self) -> &[u8] {
        &self.target
    }
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name within its directory.
    pub name: Name,
    /// What the child is.
    pub kind: EntryKind,
    /// File size, symlink target length, or total file bytes below a directory.
    pub size: u64,
    /// Modification time in ns since the epoch (0 for directories, whose mtimes are not tracked).
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// The child node.
    pub child: NodeId,
}

/// A directory, or one chunk of a large directory's entries, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirLeaf {
    entries: Vec<DirEntry>,
}

impl DirLeaf {
    /// A leaf from entries sorted strictly by name.
    ///
    /// # Errors
    /// [`crate::Error::Limit`] if names are unsorted or repeated (reported as entry position).
    pub fn new(entries: Vec<DirEntry>) -> crate::Result<Self> {
        if let Some(idx) = entries.windows(2).position(|w| w[0].name >= w[1].name) {
            return Err(crate::Error::Limit {
                what: "unsorted or repeated name at entry",
                actual: idx as u64 + 1,
                max: 0,
            });
        }
        Ok(DirLeaf { entries })
    }

    /// The entries, sorted by name.
    pub fn entries(&self) -> &[DirEntry] {
        &self.entries
    }

    /// Takes the entries out.
    pub fn into_entries(self) -> Vec<DirEntry> {
        self.entries
    }
}

/// One child of a [`DirIndex`]: a subtree covering a run of names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The smallest name in the subtree.
    pub first_name: Name,
    /// The subtree's root (a [`DirLeaf`] at level 1, a [`DirIndex`] above).
    pub child: NodeId,
    /// How many directory entries the subtree holds.
    pub entries: u64,
    /// Total `size` of those entries.
    pub size: u64,
}

/// An index over the chunks of a large directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirIndex {
    level: u8,
    children: Vec<IndexEntry>,
}

impl DirIndex {
    /// An index at `level` (1 = over leaves) with children sorted by `first_name`.
    ///
    /// # Errors
    /// [`crate::Error::Limit`] for a level outside 1..=[`DIR_INDEX_LEVEL_MAX`], fewer than one
    /// child, or unsorted children.
    pub fn new(level: u8, children: Vec<IndexEntry>) -> crate::Result<Self> {
        if level == 0 || level > DIR_INDEX_LEVEL_MAX || children.is_empty() {
            return Err(crate::Error::Limit {
                what: "directory index level",
                actual: u64::from(level),
                max: u64::from(DIR_INDEX_LEVEL_MAX),
            });
        }
        if let Some(idx) = children
            .windows(2)
            .position(|w| w[0].first_name >= w[1].first_name)
        {
            return Err(crate::Error::Limit {
                what: "unsorted index child at position",
                actual: idx as u64 + 1,
                max: 0,
            });
        }
        Ok(DirIndex { level, children })
    }

    /// 1 when the children are leaves, n + 1 when they are level-n indexes.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// The children in name order.
    pub fn children(&self) -> &[IndexEntry] {
        &self.children
    }
}

/// Any tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    File(FileNode),
    /// A symbolic link.
    Symlink(SymlinkNode),
    /// A small directory, or a chunk of a large one.
    DirLeaf(DirLeaf),
    /// An index over chunks of a large directory.
    DirIndex(DirIndex),
}

impl Node {
    /// A lowercase word for messages.
    pub fn kind_str(&self) -> &'static str {
        match self {
            Node::File(_) => "file",
            Node::Symlink(_) => "symlink",
            Node::DirLeaf(_) => "dir leaf",
            Node::DirIndex(_) => "dir index",
        }
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(NODE_FORMAT_VERSION);
        match self {
            Node::File(file) => {
                out.push(TAG_FILE);
                put_uv(out, file.size);
                put_uv(out, u64::from(file.mode));
                put_sv(out, file.mtime_ns);
                put_uv(out, file.blocks.len() as u64);
                for block in &file.blocks {
                    out.extend_from_slice(block.id.as_bytes());
                    put_uv(out, u64::from(block.len));
                }
            }
            Node::Symlink(link) => {
                out.push(TAG_SYMLINK);
                put_bytes(out, &link.target);
            }
            Node::DirLeaf(leaf) => {
                out.push(TAG_DIR_LEAF);
                put_uv(out, leaf.entries.len() as u64);
                for entry in &leaf.entries {
                    encode_entry(entry, out);
                }
            }
            Node::DirIndex(index) => {
                out.push(TAG_DIR_INDEX);
                out.push(index.level);
                put_uv(out, index.children.len() as u64);
                for child in &index.children {
                    put_bytes(out, child.first_name.as_bytes());
                    out.extend_from_slice(child.child.as_bytes());
                    put_uv(out, child.entries);
                    put_uv(out, child.size);
                }
            }
        }
    }

    /// Whether bytes starting with `prefix` (at least two bytes of them) could be a node: the
    /// format version and a known tag. Data blocks almost never pass (about 4 in 65,536), so the
    /// garbage collector reads and decodes only the blocks that do.
    pub fn may_start(prefix: &[u8]) -> bool {
        matches!(prefix, [NODE_FORMAT_VERSION, TAG_FILE..=TAG_DIR_INDEX, ..])
    }

    /// Everything the node names: a file's blocks, a directory's children (nodes, as block
    /// ids), an index's subtrees; nothing for a symlink.
    pub fn references(&self) -> Vec<BlockId> {
        match self {
            Node::File(file) => file.blocks.iter().map(|block| block.id).collect(),
            Node::Symlink(_) => Vec::new(),
            Node::DirLeaf(leaf) => leaf
                .entries
                .iter()
                .map(|entry| BlockId::from(entry.child))
                .collect(),
            Node::DirIndex(index) => index
                .children
                .iter()
                .map(|child| BlockId::from(child.child))
                .collect(),
        }
    }

    /// The canonical encoding as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The node's id: BLAKE3 of its encoding.
    pub fn id(&self) -> NodeId {
        NodeId::of(&self.to_bytes())
    }

    /// Decodes one node that fills `bytes` exactly.
    ///
    /// # Errors
    /// A [`DecodeError`] for anything [`Node::encode`] would not have produced. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Node, DecodeError> {
        check_limit("node size", bytes.len() as u64, u64::from(NODE_SIZE_MAX))?;
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != NODE_FORMAT_VERSION {
            return Err(DecodeError::Version(version));
        }
        let node = match r.u8()? {
            TAG_FILE => Node::File(decode_file(&mut r)?),
            TAG_SYMLINK => {
                let target = r.bytes_with_len("symlink target length", SYMLINK_TARGET_BYTES_MAX)?;
                if target.is_empty() {
                    return Err(DecodeError::Inconsistent("empty symlink target"));
                }
                Node::Symlink(SymlinkNode {
                    target: target.to_vec(),
                })
            }
            TAG_DIR_LEAF => Node::DirLeaf(decode_leaf(&mut r)?),
            TAG_DIR_INDEX => Node::DirIndex(decode_index(&mut r)?),
            other => return Err(DecodeError::Tag(other)),
        };
        match bytes.len() - r.pos {
            0 => Ok(node),
            rest => Err(DecodeError::Trailing(rest)),
        }
    }
}

fn encode_entry(entry: &DirEntry, out: &mut Vec<u8>) {
    put_bytes(out, entry.name.as_bytes());
    out.push(entry.kind.to_byte());
    put_uv(out, entry.size);
    put_sv(out, entry.mtime_ns);
    put_uv(out, u64::from(entry.mode));
    out.extend_from_slice(entry.child.as_bytes());
}

/// Encoded size of one leaf entry (used by the directory chunker to size chunks).
pub(crate) fn entry_encoded_len(entry: &DirEntry) -> usize {
    let mut out = Vec::with_capacity(64 + entry.name.as_bytes().len());
    encode_entry(entry, &mut out);
    out.len()
}

/// Encoded size of one index entry.
pub(crate) fn index_entry_encoded_len(entry: &IndexEntry) -> usize {
    let name = entry.first_name.as_bytes().len();
    uv_len(name as u64) + name + 32 + uv_len(entry.entries) + uv_len(entry.size)
}

fn decode_file(r: &mut Reader<'_>) -> Result<FileNode, DecodeError> {
    let size = r.uv()?;
    let mode = r.u32()?;
    let mtime_ns = r.sv()?;
    let count = r.count("blocks in one file", 33)?;
    let mut blocks = Vec::with_capacity(count);
    let mut total: u64 = 0;
    for _ in 0..count {
        let id = BlockId::from_bytes(r.array()?);
        let at = r.pos;
        let len = u32::try_from(r.uv()?).map_err(|_| DecodeError::Varint(at))?;
        if len == 0 || len > BLOCK_SIZE_MAX {
            return Err(DecodeError::Limit {
                what: "block length",
                actual: u64::from(len),
                max: u64::from(BLOCK_SIZE_MAX),
            });
        }
        total = total.saturating_add(u64::from(len));
        blocks.push(BlockRef { id, len });
    }
    if total != size {
        return Err(DecodeError::Inconsistent(
            "file size differs from its blocks' total",
        ));
    }
    Ok(FileNode {
        size,
        mode,
        mtime_ns,
        blocks,
    })
}

fn decode_leaf(r: &mut Reader<'_>) -> Result<DirLeaf, DecodeError> {
    // The smallest entry is 1 (len) + 1 (name) + 1 (kind) + 3 varints + 32 (child) = 38 bytes.
    let count = r.count("entries in one node", 38)?;
    let mut entries: Vec<DirEntry> = Vec::with_capacity(count);
    for idx in 0..count {
        let name = r.bytes_with_len("name length", NAME_BYTES_MAX)?;
        if name.is_empty()
            || entries
                .last()
                .is_some_and(|prev| prev.name.as_bytes() >= name)
        {
            return Err(DecodeError::Order(idx));
        }
        let name = Name(name.to_vec());
        let at = r.pos;
        let kind = EntryKind::from_byte(r.u8()?, at)?;
        let size = r.uv()?;
        let mtime_ns = r.sv()?;
        let mode = r.u32()?;
        let child = NodeId::from_bytes(r.array()?);
        entries.push(DirEntry {
            name,
            kind,
            size,
            mtime_ns,
            mode,
            child,
        });
    }
    Ok(DirLeaf { entries })
}

fn decode_index(r: &mut Reader<'_>) -> Result<DirIndex, DecodeError> {
    let level = r.u8()?;
    if level == 0 || level > DIR_INDEX_LEVEL_MAX {
        return Err(DecodeError::Limit {
            what: "directory index level",
            actual: u64::from(level),
            max: u64::from(DIR_INDEX_LEVEL_MAX),
        });
    }
    let count = r.count("children in one index", 36)?;
    if count == 0 {
        return Err(DecodeError::Inconsistent(
            "directory index without children",
        ));
    }
    let mut children: Vec<IndexEntry> = Vec::with_capacity(count);
    for idx in 0..count {
        let name = r.bytes_with_len("name length", NAME_BYTES_MAX)?;
        if name.is_empty()
            || children
                .last()
                .is_some_and(|prev| prev.first_name.as_bytes() >= name)
        {
            return Err(DecodeError::Order(idx));
        }
        let first_name = Name(name.to_vec());
        let child = NodeId::from_bytes(r.array()?);
        let entries = r.uv()?;
        let size = r.uv()?;
        children.push(IndexEntry {
            first_name,
            child,
            entries,
            size,
        });
    }
    Ok(DirIndex { level, children })
}

fn check_limit(what: &'static str, actual: u64, max: u64) -> Result<(), DecodeError> {
    if actual > max {
        return Err(DecodeError::Limit { what, actual, max });
    }
    Ok(())
}

fn put_uv(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn uv_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

fn put_sv(out: &mut Vec<u8>, value: i64) {
    put_uv(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uv(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A bounds-checked cursor; every read returns `Err` instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or(DecodeError::Truncated(self.bytes.len()))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array(&mut self) -> Result<[u8; 32], DecodeError> {
        let mut out = [0; 32];
        out.copy_from_slice(self.take(32)?);
        Ok(out)
    }

    fn uv(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Varint(start));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                // Minimal: a multi-byte varint never ends in a zero byte.
                if byte == 0 && self.pos - start > 1 {
                    return Err(DecodeError::Varint(start));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Varint(start))
    }

    fn sv(&mut self) -> Result<i64, DecodeError> {
        let raw = self.uv()?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let at = self.pos;
        u32::try_from(self.uv()?).map_err(|_| DecodeError::Varint(at))
    }

    /// A count of items that take at least `min_item_len` bytes each; refuses counts the
    /// remaining input cannot hold, so a hostile count never drives an allocation.
    fn count(&mut self, what: &'static str, min_item_len: usize) -> Result<usize, DecodeError> {
        let count = self.uv()?;
        let room = ((self.bytes.len() - self.pos) / min_item_len) as u64;
        check_limit(what, count, room)?;
        Ok(usize::try_from(count).expect("bounded by the input length"))
    }

    fn bytes_with_len(&mut self, what: &'static str, max: u32) -> Result<&'a [u8], DecodeError> {
        let len = self.uv()?;
        check_limit(what, len, u64::from(max))?;
        self.take(usize::try_from(len).expect("bounded by a u32 limit"))
    }
}

#[cfg(test)]
mod tests;
