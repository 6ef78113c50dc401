//! An in-memory [`BlockStore`], for tests and for callers that want a scratch store.
//!
//! It keeps the same contract as the filesystem store (ids computed on put, re-hashed on get) and
//! can damage a block on purpose so corruption handling can be tested.

use std::collections::HashMap;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::store::check_block_size;
use crate::{BlockId, BlockStore, Error, Put, Result};

/// Blocks in a `HashMap` behind a mutex.
#[derive(Debug, Default)]
pub struct MemBlockStore {
    blocks: Mutex<HashMap<BlockId, Vec<u8>>>,
}

impl MemBlockStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces a stored block's bytes without changing its id, as bit rot would.
    /// Returns false when the block is not stored.
    pub fn corrupt(&self, id: &BlockId, bytes: Vec<u8>) -> bool {
        match self.lock().get_mut(id) {
            Some(slot) => {
                *slot = bytes;
                true
            }
            None => false,
        }
    }

    /// Total bytes stored.
    pub fn stored_size(&self) -> u64 {
        self.lock().values().map(|b| b.len() as u64).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlockId, Vec<u8>>> {
        // A panic while holding this lock cannot leave the map half-updated (every critical
        // section is a single map operation), so a poisoned lock is still consistent.
        self.blocks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl BlockStore for MemBlockStore {
    fn has(&self, id: &BlockId) -> Result<bool> {
        Ok(self.lock().contains_key(id))
    }

    fn put_many(&self, blocks: &[&[u8]]) -> Result<Vec<Put>> {
        for data in blocks {
            check_block_size(data)?;
        }
        let ids: Vec<BlockId> = blocks.par_iter().map(|data| BlockId::of(data)).collect();
        let mut map = self.lock();
        Ok(ids
            .into_iter()
            .zip(blocks)
            .map(|(id, data)| {
                let size = data.len() as u64;
                let new = !map.contains_key(&id);
                if new {
                    map.insert(id, data.to_vec());
                }
                let stored_size = if new { size } else { 0 };
                Put {
                    id,
                    size,
                    new,
                    stored_size,
                }
            })
            .collect())
    }

    fn get(&self, id: &BlockId) -> Result<Vec<u8>> {
        let data = self
            .lock()
            .get(id)
            .cloned()
            .ok_or(Error::BlockMissing(*id))?;
        let actual = BlockId::of(&data);
        if actual != *id {
            return Err(Error::BlockCorrupt { id: *id, actual });
        }
        Ok(data)
    }

    fn delete(&self, id: &BlockId) -> Result<bool> {
        Ok(self.lock().remove(id).is_some())
    }

    fn list(&self) -> Result<Vec<BlockId>> {
        Ok(self.lock().keys().copied().collect())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
