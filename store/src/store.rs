//! The storage traits: [`BlockStore`] for immutable content-addressed blocks, [`NodeStore`] for
//! tree nodes kept as blocks of their encoding.
//!
//! The traits are synchronous: this crate has no runtime. Async callers (the server) run them on
//! blocking threads.

use crate::node::Node;
use crate::{BlockId, Error, NodeId, Result};

/// What one [`BlockStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put {
    /// The block's id, computed by the store from the bytes.
    pub id: BlockId,
    /// The block's length in bytes.
    pub size: u64,
    /// Whether this put added the block (false: it was already stored, deduplicated).
    pub new: bool,
    /// Bytes this put added to the store (after compression and the storage header); 0 when the
    /// block was already there.
    pub stored_size: u64,
}

/// A set of immutable blocks addressed by their BLAKE3 hash.
///
/// **Invariant:** a store never trusts an id it is given with bytes: `put` computes the id, and
/// `get` re-hashes what it read, so a damaged block is an [`Error::BlockCorrupt`], never data.
pub trait BlockStore: Send + Sync {
    /// Whether the block is stored.
    ///
    /// # Errors
    /// IO errors of the backend.
    fn has(&self, id: &BlockId) -> Result<bool>;

    /// [`BlockStore::has`] for many ids, in order.
    ///
    /// # Errors
    /// IO errors of the backend.
    fn has_many(&self, ids: &[BlockId]) -> Result<Vec<bool>> {
        ids.iter().map(|id| self.has(id)).collect()
    }

    /// Stores `data` under its BLAKE3 id (computed here) unless it is already stored.
    ///
    /// The block is visible to `has`/`get` on return, and durable after the next
    /// [`BlockStore::sync`].
    ///
    /// # Errors
    /// [`Error::BlockTooLarge`] over [`crate::limits::BLOCK_SIZE_MAX`]; IO errors.
    fn put(&self, data: &[u8]) -> Result<Put> {
        let mut puts = self.put_many(&[data])?;
        Ok(puts.pop().expect("put_many returns one Put per block"))
    }

    /// [`BlockStore::put`] for many blocks, hashed in parallel; returns one [`Put`] per block.
    ///
    /// # Errors
    /// As for `put`; blocks before the failing one may have been stored.
    fn put_many(&self, blocks: &[&[u8]]) -> Result<Vec<Put>>;

    /// Stores `data` only if it hashes to `claimed`: the entry point for bytes from elsewhere.
    ///
    /// # Errors
    /// [`Error::BlockMismatch`] when the bytes hash to another id; as for `put` otherwise.
    fn put_claimed(&self, claimed: &BlockId, data: &[u8]) -> Result<Put> {
        let put = self.put(data)?;
        if put.id != *claimed {
            // The block is stored under its true id (harmless: it is content-addressed), but the
            // caller's claim is refused.
            return Err(Error::BlockMismatch {
                claimed: *claimed,
                actual: put.id,
            });
        }
        Ok(put)
    }

    /// The block's bytes, re-hashed against `id`.
    ///
    /// # Errors
    /// [`Error::BlockMissing`], [`Error::BlockCorrupt`], IO errors.
    fn get(&self, id: &BlockId) -> Result<Vec<u8>>;

    /// Up to `len` of the block's first bytes, not checked against its id: a cheap look at what
    /// a block holds (the garbage collector's question "could this be a node?"). Stores that can
    /// read part of a block do; the default reads it whole.
    ///
    /// # Errors
    /// [`Error::BlockMissing`], IO errors.
    fn peek(&self, id: &BlockId, len: usize) -> Result<Vec<u8>> {
        let mut data = self.get(id)?;
        data.truncate(len);
        Ok(data)
    }

    /// Removes a block; returns whether it was there. Deleting is the garbage collector's job:
    /// the store does not know which blocks trees still reference.
    ///
    /// # Errors
    /// IO errors.
    fn delete(&self, id: &BlockId) -> Result<bool>;

    /// Every stored block id, in no particular order.
    ///
    /// # Errors
    /// IO errors, or a file in the store whose name is not an id.
    fn list(&self) -> Result<Vec<BlockId>>;

    /// Makes every block put so far durable (fsynced, renamed into place, directories fsynced).
    ///
    /// Callers sync before they publish anything that references the blocks (a commit).
    ///
    /// # Errors
    /// IO errors; after an error, the unsynced blocks are not guaranteed to be stored.
    fn sync(&self) -> Result<()>;
}

/// Tree nodes kept in a block store as blocks of their canonical encoding.
pub trait NodeStore {
    /// Loads and decodes a node.
    ///
    /// # Errors
    /// [`Error::BlockMissing`], [`Error::BlockCorrupt`], [`Error::NodeDecode`].
    fn get_node(&self, id: &NodeId) -> Result<Node>;

    /// Encodes and stores a node; returns its id and the [`Put`] of its block.
    ///
    /// # Errors
    /// As for [`BlockStore::put`].
    fn put_node(&self, node: &Node) -> Result<(NodeId, Put)>;
}

impl<S: BlockStore + ?Sized> NodeStore for S {
    fn get_node(&self, id: &NodeId) -> Result<Node> {
        let bytes = self.get(&BlockId::from(*id))?;
        Node::decode(&bytes).map_err(|source| Error::NodeDecode { id: *id, source })
    }

    fn put_node(&self, node: &Node) -> Result<(NodeId, Put)> {
        let put = self.put(&node.to_bytes())?;
        Ok((NodeId::from(put.id), put))
    }
}

/// Checks a block's length against [`crate::limits::BLOCK_SIZE_MAX`].
pub(crate) fn check_block_size(data: &[u8]) -> Result<()> {
    let max = u64::from(crate::limits::BLOCK_SIZE_MAX);
    if data.len() as u64 > max {
        return Err(Error::BlockTooLarge {
            actual: data.len() as u64,
            max,
        });
    }
    Ok(())
}
