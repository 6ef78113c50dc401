//! The crate's one error type.

use std::path::PathBuf;

use crate::{BlockId, NodeId, node::DecodeError};

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `cairn-store`.
///
/// Variants carry what a user needs to act: the path, the id, the limit and the actual value.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An IO operation on a path failed.
    #[error("{op} '{path}': {source}")]
    Io {
        /// What was being done ("reading", "renaming", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A block the caller asked for is not in the store.
    #[error("block {0} is missing from the store")]
    BlockMissing(BlockId),
    /// A stored block no longer hashes to its id: its bytes were damaged at rest.
    #[error("block {id} is corrupt: its content hashes to {actual}; restore it from a replica")]
    BlockCorrupt {
        /// The id the block is stored under.
        id: BlockId,
        /// What its bytes hash to now.
        actual: BlockId,
    },
    /// A caller claimed an id for some bytes, and the bytes hash to something else.
    #[error("block claimed to be {claimed} hashes to {actual}; refusing it")]
    BlockMismatch {
        /// The id the caller claimed.
        claimed: BlockId,
        /// What the bytes hash to.
        actual: BlockId,
    },
    /// A block is larger than the store accepts.
    #[error("block is {actual} bytes; the limit is {max}")]
    BlockTooLarge {
        /// Its size in bytes.
        actual: u64,
        /// The limit ([`crate::limits::BLOCK_SIZE_MAX`]).
        max: u64,
    },
    /// A stored block file has a header this version does not know.
    #[error(
        "block {id} has an unknown storage header {header:#04x}; was it written by a newer cairn?"
    )]
    BlockFormat {
        /// The block.
        id: BlockId,
        /// The header byte found.
        header: u8,
    },
    /// A tree node could not be decoded.
    #[error("node {id} does not decode: {source}")]
    NodeDecode {
        /// The node.
        id: NodeId,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A node was found where a different kind was expected.
    #[error("node {id} is a {found} node; expected a {expected} node")]
    NodeKind {
        /// The node.
        id: NodeId,
        /// What it is.
        found: &'static str,
        /// What the caller needed.
        expected: &'static str,
    },
    /// A value broke one of the format's limits.
    #[error("{what} is {actual}; the limit is {max}")]
    Limit {
        /// What was measured.
        what: &'static str,
        /// The measured value.
        actual: u64,
        /// The limit.
        max: u64,
    },
    /// A chunking configuration is out of range.
    #[error("invalid chunk configuration: {0}")]
    ChunkConfig(String),
    /// A name cannot be stored in a tree.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name, lossily decoded for display.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A file kept changing while it was read, so no consistent copy could be taken.
    #[error(
        "'{path}' changed while it was read ({attempts} attempts); it is still being written, try again when it is done"
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// How many reads were tried.
        attempts: u32,
    },
    /// A directory entry is of a kind that cannot be stored (socket, FIFO, device).
    #[error(
        "'{0}' is a socket, FIFO or device file; only files, directories and symlinks are stored"
    )]
    Unsupported(PathBuf),
    /// Directories nest deeper than [`crate::limits::TREE_DEPTH_MAX`].
    #[error("'{0}' is nested more than 256 directories deep")]
    TooDeep(PathBuf),
    /// The root given to a tree walk is not a directory.
    #[error("'{0}' is not a directory; give the folder to store")]
    NotADirectory(PathBuf),
}

impl Error {
    /// Builds an [`Error::Io`] from an operation name, a path and the IO error.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
