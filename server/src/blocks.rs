//! The server's block store: the local filesystem (the embedded default) or S3-compatible object
//! storage shared by every instance of a deployment ([`crate::s3`]).

use std::collections::HashSet;
use std::time::SystemTime;

use cairn_store::fs::FsBlockStore;
use cairn_store::{BlockId, BlockStore, Put, Result};

use crate::s3::{S3BlockStore, TrashReport};

/// Where this server keeps blocks.
#[derive(Debug)]
pub enum Blocks {
    /// A local directory (`STORAGE_PATH`), used by this process alone.
    Local(FsBlockStore),
    /// A bucket (`CAIRN_S3_URL`), shared by all instances.
    S3(Box<S3BlockStore>),
}

impl Blocks {
    /// When a block was written or last refreshed by a deduplicating put; `None` if absent.
    ///
    /// # Errors
    /// Store errors.
    pub fn modified(&self, id: &BlockId) -> Result<Option<SystemTime>> {
        match self {
            Blocks::Local(store) => store.modified(id),
            Blocks::S3(store) => store.modified(id),
        }
    }

    /// Which of `ids` are stored, refreshing their time so the garbage collector keeps them for
    /// its grace period (an answer of "stored" is relied on by the commit that follows): local
    /// blocks always, a bucket's objects when older than half the grace (rewritten, as a
    /// deduplicating put does). A bucket's collector checks, then moves to the trash, in two
    /// steps (see [`Blocks::delete_if_older`]).
    ///
    /// # Errors
    /// Store errors.
    pub fn keep_many(&self, ids: &[BlockId]) -> Result<Vec<bool>> {
        match self {
            Blocks::Local(store) => store.keep_many(ids),
            Blocks::S3(store) => store.keep_many(ids),
        }
    }

    /// Which of `ids` are stored, for a commit about to rely on them (objects its folder
    /// committed long ago included): local blocks are refreshed as by [`Blocks::keep_many`], under
    /// the index lock, so a collection running now cannot delete one after this answer. A
    /// bucket's objects are only looked up (with its trash): rewriting old ones would cost a
    /// copy each, and a collection that moves one to the trash meanwhile puts it back in its next
    /// run, since the commit made it referenced, while reads find it in the trash until then.
    ///
    /// # Errors
    /// Store errors.
    pub fn confirm_many(&self, ids: &[BlockId]) -> Result<Vec<bool>> {
        match self {
            Blocks::Local(store) => store.keep_many(ids),
            Blocks::S3(store) => store.has_many(ids),
        }
    }

    /// Deletes a block written or last refreshed at or before `cutoff`: `None` if it is not
    /// stored, else whether it was deleted. Locally the check and the delete are one step, so a
    /// refresh meanwhile keeps the block. A bucket cannot delete on a condition, so its block
    /// goes to the trash instead, where a read still finds it ([`Blocks::empty_trash`]).
    ///
    /// # Errors
    /// Store errors.
    pub fn delete_if_older(&self, id: &BlockId, cutoff: SystemTime) -> Result<Option<bool>> {
        match self {
            Blocks::Local(store) => store.delete_if_older(id, cutoff),
            Blocks::S3(store) => store.retire_if_older(id, cutoff),
        }
    }

    /// Empties a bucket's trash: referenced blocks go back, the others are deleted once trashed
    /// at or before `cutoff`, nodes first, waiting `settle` after each wave (see
    /// [`crate::s3::S3BlockStore::empty_trash`]; a local store deletes at once and has no
    /// trash).
    ///
    /// # Errors
    /// Store errors.
    pub fn empty_trash(
        &self,
        live: &HashSet<BlockId>,
        cutoff: SystemTime,
        settle: std::time::Duration,
    ) -> Result<TrashReport> {
        match self {
            Blocks::Local(_) => Ok(TrashReport::default()),
            Blocks::S3(store) => store.empty_trash(live, cutoff, settle),
        }
    }

    /// Gives back the disk space of deleted blocks (local packs; a bucket frees it on delete);
    /// returns the bytes given back.
    ///
    /// # Errors
    /// Store errors.
    pub fn compact(&self) -> Result<u64> {
        match self {
            Blocks::Local(store) => store.compact().map(|r| r.bytes_reclaimed),
            Blocks::S3(_) => Ok(0),
        }
    }

    fn inner(&self) -> &dyn BlockStore {
        match self {
            Blocks::Local(store) => store,
            Blocks::S3(store) => store.as_ref(),
        }
    }
}

impl BlockStore for Blocks {
    fn has(&self, id: &BlockId) -> Result<bool> {
        self.inner().has(id)
    }

    fn has_many(&self, ids: &[BlockId]) -> Result<Vec<bool>> {
        self.inner().has_many(ids)
    }

    fn put(&self, data: &[u8]) -> Result<Put> {
        self.inner().put(data)
    }

    fn put_many(&self, blocks: &[&[u8]]) -> Result<Vec<Put>> {
        self.inner().put_many(blocks)
    }

    fn put_claimed(&self, claimed: &BlockId, data: &[u8]) -> Result<Put> {
        self.inner().put_claimed(claimed, data)
    }

    fn get(&self, id: &BlockId) -> Result<Vec<u8>> {
        self.inner().get(id)
    }

    fn peek(&self, id: &BlockId, len: usize) -> Result<Vec<u8>> {
        self.inner().peek(id, len)
    }

    fn delete(&self, id: &BlockId) -> Result<bool> {
        self.inner().delete(id)
    }

    fn list(&self) -> Result<Vec<BlockId>> {
        self.inner().list()
    }

    fn sync(&self) -> Result<()> {
        self.inner().sync()
    }
}
