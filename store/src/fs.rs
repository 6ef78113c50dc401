//! The local filesystem [`BlockStore`]: one immutable file per block in sharded directories.
//!
//! ```text
//! ROOT/lock                      held (flock) by the one process using the store
//! ROOT/blocks/abc/abc…(64 hex)   a block: header byte, then the payload
//! ROOT/tmp/                      blocks written but not yet durable; emptied at open
//! ```
//!
//! Header byte 0 means the payload is the block itself; 1 means it is zstd-compressed. A block is
//! compressed only when that saves at least 1/16 of its size, and incompressible data is detected
//! on a sample first so it costs almost nothing.
//!
//! Writes are atomic and batched: `put` writes the block to `tmp/` and returns; every
//! [`PENDING_BLOCKS_MAX`] blocks (or [`PENDING_SIZE_MAX`] bytes), and on
//! [`BlockStore::sync`], the pending files are fsynced together, renamed into their shard, and each
//! touched shard directory is fsynced once. So a block file in `blocks/` is always complete, and
//! many small blocks cost one flush rather than one fsync each.
//!
//! It does not know which blocks are referenced (the garbage collector above it decides).

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rayon::prelude::*;

use crate::limits::{BLOCK_SIZE_MAX, PENDING_BLOCKS_MAX, PENDING_SIZE_MAX};
use crate::store::check_block_size;
use crate::{BlockId, BlockStore, Error, Put, Result};

const HEADER_RAW: u8 = 0;
const HEADER_ZSTD: u8 = 1;
/// Hex digits of the id that name a block's shard directory: 4,096 shards, so ten million blocks
/// (~2.4 TiB at 256 KiB) is ~2,400 files per directory.
const SHARD_HEX_LEN: usize = 3;
/// Bytes sampled to decide whether a block is worth compressing.
const COMPRESS_SAMPLE_SIZE: usize = 16 * 1024;

/// Whether and how blocks are compressed at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Store every block as is.
    None,
    /// zstd at this level, kept only where it saves at least 1/16 of the block.
    Zstd {
        /// zstd level (1 is fast; 3 is zstd's default).
        level: i32,
    },
}

/// How an [`FsBlockStore`] stores blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStoreOptions {
    /// Compression at rest.
    pub compression: Compression,
}

impl FsStoreOptions {
    /// Cairn's default: zstd level 1 where it pays.
    pub const DEFAULT: FsStoreOptions = FsStoreOptions {
        compression: Compression::Zstd { level: 1 },
    };
}

/// A block store in a local directory.
#[derive(Debug)]
pub struct FsBlockStore {
    root: PathBuf,
    blocks_dir: PathBuf,
    tmp_dir: PathBuf,
    options: FsStoreOptions,
    pending: Mutex<Pending>,
    tmp_counter: AtomicU64,
    /// Held for the store's lifetime: a second process cannot open the same store.
    _lock: File,
}

/// Blocks written to `tmp/` and not yet renamed into place.
#[derive(Debug, Default)]
struct Pending {
    /// Where each pending block's bytes are until it is flushed.
    staged: HashMap<BlockId, PathBuf>,
    /// Pending blocks not yet taken by a flush, in put order.
    queue: Vec<BlockId>,
    queued_size: u64,
}

impl FsBlockStore {
    /// Opens (creating if needed) the store at `root`.
    ///
    /// Leftovers of a crash in `tmp/` are removed: nothing can reference them, because blocks
    /// are only referenced after a [`BlockStore::sync`] made them durable.
    ///
    /// # Errors
    /// IO errors, or the store being in use by another process.
    pub fn open(root: impl Into<PathBuf>, options: FsStoreOptions) -> Result<Self> {
        let root = root.into();
        let blocks_dir = root.join("blocks");
        let tmp_dir = root.join("tmp");
        for dir in [&root, &blocks_dir, &tmp_dir] {
            fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("opening", &lock_path, e))?;
        lock.try_lock().map_err(|_| {
            Error::io(
                "locking",
                &lock_path,
                std::io::Error::new(
                    ErrorKind::WouldBlock,
                    "the block store is in use by another process; stop it first",
                ),
            )
        })?;
        for entry in fs::read_dir(&tmp_dir).map_err(|e| Error::io("listing", &tmp_dir, e))? {
            let path = entry.map_err(|e| Error::io("listing", &tmp_dir, e))?.path();
            fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
        }
        Ok(FsBlockStore {
            root,
            blocks_dir,
            tmp_dir,
            options,
            pending: Mutex::new(Pending::default()),
            tmp_counter: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a block lives once durable.
    pub fn block_path(&self, id: &BlockId) -> PathBuf {
        let hex = id.to_string();
        self.blocks_dir.join(&hex[..SHARD_HEX_LEN]).join(hex)
    }

    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        // Every critical section leaves `Pending` consistent before it can panic.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put_one(&self, id: BlockId, data: &[u8]) -> Result<Put> {
        let size = data.len() as u64;
        let dedup = Put {
            id,
            size,
            new: false,
            stored_size: 0,
        };
        if self.lock_pending().staged.contains_key(&id) || self.final_exists(&id)? {
            return Ok(dedup);
        }
        let encoded = encode_block(data, self.options.compression);
        let tmp = self.tmp_dir.join(format!(
            "{}.{}",
            id,
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        write_new_file(&tmp, &encoded)?;
        let flush = {
            let mut pending = self.lock_pending();
            if pending.staged.contains_key(&id) {
                // Another thread put the same block meanwhile: keep theirs.
                drop(pending);
                fs::remove_file(&tmp).map_err(|e| Error::io("removing", &tmp, e))?;
                return Ok(dedup);
            }
            pending.staged.insert(id, tmp);
            pending.queue.push(id);
            pending.queued_size += encoded.len() as u64;
            pending.queue.len() >= PENDING_BLOCKS_MAX || pending.queued_size >= PENDING_SIZE_MAX
        };
        if flush {
            self.flush()?;
        }
        Ok(Put {
            id,
            size,
            new: true,
            stored_size: encoded.len() as u64,
        })
    }

    fn final_exists(&self, id: &BlockId) -> Result<bool> {
        let path = self.block_path(id);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(Error::io("checking", path, err)),
        }
    }

    /// Makes the queued blocks durable: fsync the files (in parallel, so the journal commits
    /// them together), rename them into place, fsync each touched shard directory once.
    fn flush(&self) -> Result<()> {
        let batch: Vec<(BlockId, PathBuf)> = {
            let mut pending = self.lock_pending();
            pending.queued_size = 0;
            let queue = std::mem::take(&mut pending.queue);
            queue
                .into_iter()
                .filter_map(|id| pending.staged.get(&id).map(|tmp| (id, tmp.clone())))
                .collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        batch.par_iter().try_for_each(|(_, tmp)| {
            File::open(tmp)
                .and_then(|file| file.sync_all())
                .map_err(|e| Error::io("syncing", tmp, e))
        })?;
        let mut shards = BTreeSet::new();
        let mut created_shard = false;
        for (id, tmp) in &batch {
            let dest = self.block_path(id);
            let shard = dest
                .parent()
                .expect("a block path has a shard directory")
                .to_path_buf();
            if !shards.contains(&shard) && !shard.exists() {
                fs::create_dir_all(&shard).map_err(|e| Error::io("creating", &shard, e))?;
                created_shard = true;
            }
            match fs::rename(tmp, &dest) {
                Ok(()) => {}
                // A concurrent delete removed this pending block: nothing left to make durable.
                Err(err)
                    if err.kind() == ErrorKind::NotFound
                        && !self.lock_pending().staged.contains_key(id) => {}
                Err(err) => return Err(Error::io("renaming", tmp, err)),
            }
            shards.insert(shard);
        }
        if created_shard {
            shards.insert(self.blocks_dir.clone());
        }
        shards.par_iter().try_for_each(|dir| sync_dir(dir))?;
        let mut pending = self.lock_pending();
        for (id, _) in &batch {
            pending.staged.remove(id);
        }
        Ok(())
    }

    fn read_block_file(&self, id: &BlockId) -> Result<Vec<u8>> {
        let staged = self.lock_pending().staged.get(id).cloned();
        if let Some(tmp) = staged {
            match fs::read(&tmp) {
                Ok(bytes) => return Ok(bytes),
                // A flush renamed it meanwhile: read it from its final place.
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io("reading", tmp, err)),
            }
        }
        let path = self.block_path(id);
        fs::read(&path).map_err(|err| match err.kind() {
            ErrorKind::NotFound => Error::BlockMissing(*id),
            _ => Error::io("reading", path, err),
        })
    }
}

impl BlockStore for FsBlockStore {
    fn has(&self, id: &BlockId) -> Result<bool> {
        Ok(self.lock_pending().staged.contains_key(id) || self.final_exists(id)?)
    }

    fn put_many(&self, blocks: &[&[u8]]) -> Result<Vec<Put>> {
        for data in blocks {
            check_block_size(data)?;
        }
        blocks
            .par_iter()
            .map(|data| self.put_one(BlockId::of(data), data))
            .collect()
    }

    fn get(&self, id: &BlockId) -> Result<Vec<u8>> {
        let stored = self.read_block_file(id)?;
        let data = decode_block(id, &stored)?;
        let actual = BlockId::of(&data);
        if actual != *id {
            return Err(Error::BlockCorrupt { id: *id, actual });
        }
        Ok(data)
    }

    fn delete(&self, id: &BlockId) -> Result<bool> {
        let staged = {
            let mut pending = self.lock_pending();
            pending.queue.retain(|queued| queued != id);
            pending.staged.remove(id)
        };
        let was_staged = staged.is_some();
        if let Some(tmp) = staged {
            match fs::remove_file(&tmp) {
                Ok(()) => return Ok(true),
                // A flush renamed it meanwhile: remove it from its final place below.
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io("removing", tmp, err)),
            }
        }
        let path = self.block_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(was_staged),
            Err(err) => Err(Error::io("removing", path, err)),
        }
    }

    fn list(&self) -> Result<Vec<BlockId>> {
        let mut ids: Vec<BlockId> = self.lock_pending().staged.keys().copied().collect();
        let read = |dir: &Path| fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e));
        for shard in read(&self.blocks_dir)? {
            let shard = shard
                .map_err(|e| Error::io("listing", &self.blocks_dir, e))?
                .path();
            for entry in read(&shard)? {
                let path = entry.map_err(|e| Error::io("listing", &shard, e))?.path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let id = name.parse::<BlockId>().map_err(|e| {
                    Error::io(
                        "listing",
                        &path,
                        std::io::Error::new(ErrorKind::InvalidData, e),
                    )
                })?;
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn sync(&self) -> Result<()> {
        self.flush()
    }
}

impl Drop for FsBlockStore {
    fn drop(&mut self) {
        // Best effort: callers that need durability call `sync` and see its errors. Anything
        // left in tmp/ is unreferenced and is removed at the next open.
        let _ = self.flush();
    }
}

/// The stored form of a block: a header byte and the payload, compressed where it pays.
fn encode_block(data: &[u8], compression: Compression) -> Vec<u8> {
    if let Compression::Zstd { level } = compression
        && worth_compressing(data, level)
        && let Ok(packed) = zstd::bulk::compress(data, level)
        && packed.len() + packed.len() / 15 < data.len()
    {
        let mut out = Vec::with_capacity(packed.len() + 1);
        out.push(HEADER_ZSTD);
        out.extend_from_slice(&packed);
        return out;
    }
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(HEADER_RAW);
    out.extend_from_slice(data);
    out
}

/// Compresses a sample from the middle of a large block; already-compressed data (media,
/// archives) fails fast here and skips the full compression.
fn worth_compressing(data: &[u8], level: i32) -> bool {
    if data.len() < 4 * COMPRESS_SAMPLE_SIZE {
        return true;
    }
    let mid = data.len() / 2;
    let sample = &data[mid - COMPRESS_SAMPLE_SIZE / 2..mid + COMPRESS_SAMPLE_SIZE / 2];
    zstd::bulk::compress(sample, level).is_ok_and(|packed| packed.len() < sample.len() * 15 / 16)
}

fn decode_block(id: &BlockId, stored: &[u8]) -> Result<Vec<u8>> {
    let corrupt = || Error::BlockCorrupt {
        id: *id,
        actual: BlockId::of(stored),
    };
    let (&header, payload) = stored.split_first().ok_or_else(corrupt)?;
    match header {
        HEADER_RAW => Ok(payload.to_vec()),
        // The capacity bounds decompression: a damaged or hostile payload cannot expand past
        // the largest block.
        HEADER_ZSTD => {
            zstd::bulk::decompress(payload, BLOCK_SIZE_MAX as usize).map_err(|_| corrupt())
        }
        header => Err(Error::BlockFormat { id: *id, header }),
    }
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("creating", path, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("writing", path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

#[cfg(test)]
mod tests;
