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
//! Writes are atomic and batched: `put` writes the block to `tmp/` and returns. Every
//! [`PENDING_BLOCKS_MAX`] blocks (or [`PENDING_SIZE_MAX`] bytes), and on [`BlockStore::sync`], the
//! batch is flushed by a background thread: one `syncfs(2)` makes all their contents durable, then they are renamed into
//! their shards. [`BlockStore::sync`] ends with a second `syncfs` that makes the renames durable.
//! So a block file in `blocks/` always has complete content, and a batch of blocks costs two
//! filesystem syncs instead of one `fsync` per block and per shard directory (measured: 46,000
//! fsyncs took 4.9 s of a 1 GiB ingest; see BENCHMARKS.md). The price: `syncfs` also flushes
//! other programs' dirty data on the same filesystem, so give the store its own filesystem where
//! other heavy writers share the disk.
//!
//! It does not know which blocks are referenced (the garbage collector above it decides).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::limits::{BLOCK_SIZE_MAX, PENDING_BLOCKS_MAX, PENDING_SIZE_MAX};
use crate::store::check_block_size;
use crate::{BlockId, BlockStore, Error, Put, Result};

const HEADER_RAW: u8 = 0;
const HEADER_ZSTD: u8 = 1;
/// Hex digits of the id that name a block's shard directory: 256 shards (as git does), so ten
/// million blocks (~2.4 TiB at 256 KiB) is ~39,000 files per directory, which ext4 and XFS index
/// well. More shards would cost more directory metadata to sync per batch.
const SHARD_HEX_LEN: usize = 2;
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
    shared: Arc<Shared>,
    /// Flushes full batches in the background, so hashing and compressing go on while the disk
    /// syncs (measured: a worker waiting in `syncfs` idled one of two cores for ~1 s per GiB).
    flusher: Option<JoinHandle<()>>,
}

/// The store's state, shared with the flusher thread.
#[derive(Debug)]
struct Shared {
    root: PathBuf,
    blocks_dir: PathBuf,
    tmp_dir: PathBuf,
    options: FsStoreOptions,
    pending: Mutex<Pending>,
    tmp_counter: AtomicU64,
    /// Set when renames were made that no `syncfs` has covered yet.
    renames_unsynced: AtomicBool,
    /// The root directory, open, for `syncfs`.
    root_dir: File,
    /// Held for the store's lifetime: a second process cannot open the same store.
    _lock: File,
    /// Signalled when a batch is ready to flush, or at shutdown.
    work: Condvar,
    /// Signalled when a flush ends.
    done: Condvar,
}

/// Blocks written to `tmp/` and not yet renamed into place.
#[derive(Debug, Default)]
struct Pending {
    /// Where each pending block's bytes are until it is flushed.
    staged: HashMap<BlockId, PathBuf>,
    /// Pending blocks not yet taken by a flush, in put order.
    queue: Vec<BlockId>,
    queued_size: u64,
    /// Batches taken from the queue and not yet renamed into place.
    in_flight: usize,
    /// The last background flush failure, reported by the next put or sync.
    error: Option<Error>,
    /// Tells the flusher thread to stop.
    shutdown: bool,
}

impl Pending {
    fn batch_ready(&self) -> bool {
        self.queue.len() >= PENDING_BLOCKS_MAX || self.queued_size >= PENDING_SIZE_MAX
    }

    /// Puts stall while this much is waiting, so a slow disk bounds memory and temp space.
    fn backlogged(&self) -> bool {
        self.queue.len() >= 2 * PENDING_BLOCKS_MAX || self.queued_size >= 2 * PENDING_SIZE_MAX
    }
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
        remove_tree_contents(&tmp_dir)?;
        let root_dir = File::open(&root).map_err(|e| Error::io("opening", &root, e))?;
        let shared = Arc::new(Shared {
            work: Condvar::new(),
            done: Condvar::new(),
            root_dir,
            renames_unsynced: AtomicBool::new(false),
            root,
            blocks_dir,
            tmp_dir,
            options,
            pending: Mutex::new(Pending::default()),
            tmp_counter: AtomicU64::new(0),
            _lock: lock,
        });
        let worker = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("cairn-store-flush".to_owned())
            .spawn(move || worker.flusher_loop())
            .map_err(|e| Error::io("starting the flusher for", &shared.root, e))?;
        Ok(FsBlockStore {
            shared,
            flusher: Some(flusher),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Where a block lives once durable.
    pub fn block_path(&self, id: &BlockId) -> PathBuf {
        self.shared.block_path(id)
    }

    /// When a block was stored or last deduplicated against; `None` if it is not stored.
    /// Pending blocks count as new. A garbage collector deletes only blocks older than a grace
    /// period, so it never races an upload that has not committed yet.
    ///
    /// # Errors
    /// IO errors other than the block being absent.
    pub fn modified(&self, id: &BlockId) -> Result<Option<std::time::SystemTime>> {
        if self.shared.lock_pending().staged.contains_key(id) {
            return Ok(Some(std::time::SystemTime::now()));
        }
        let path = self.block_path(id);
        match fs::metadata(&path).and_then(|meta| meta.modified()) {
            Ok(time) => Ok(Some(time)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Error::io("reading metadata of", path, err)),
        }
    }
}

impl Shared {
    fn flusher_loop(&self) {
        let mut pending = self.lock_pending();
        loop {
            if pending.shutdown {
                return;
            }
            if !pending.batch_ready() {
                pending = self
                    .work
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            drop(pending);
            let result = self.flush();
            pending = self.lock_pending();
            if let Err(err) = result {
                pending.error = Some(err);
                // Wait for a put or sync to come by before trying again, not in a hot loop.
                pending = self
                    .work
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    /// Waits until no batch is being flushed.
    fn wait_idle(&self) -> MutexGuard<'_, Pending> {
        let mut pending = self.lock_pending();
        while pending.in_flight > 0 {
            pending = self
                .done
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        pending
    }

    fn block_path(&self, id: &BlockId) -> PathBuf {
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
        {
            let mut pending = self.lock_pending();
            if let Some(err) = pending.error.take() {
                return Err(err);
            }
            while pending.backlogged() && pending.error.is_none() {
                pending = self
                    .done
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if pending.staged.contains_key(&id) {
                return Ok(dedup);
            }
        }
        if self.final_exists(&id)? {
            // A deduplicated block is in use again: refresh its mtime so a garbage collector
            // that only deletes old unreferenced blocks spares it until the new use commits.
            self.touch(&id)?;
            return Ok(dedup);
        }
        let encoded = encode_block(data, self.options.compression);
        // Temp files are sharded like blocks: one shared tmp/ directory made every create contend
        // on its inode lock (10% of an ingest's time, measured with perf).
        let hex = id.to_string();
        let tmp_shard = self.tmp_dir.join(&hex[..SHARD_HEX_LEN]);
        let tmp = tmp_shard.join(format!(
            "{hex}.{}",
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(err) = write_new_file(&tmp, &encoded) {
            if !matches!(&err, Error::Io { source, .. } if source.kind() == ErrorKind::NotFound) {
                return Err(err);
            }
            fs::create_dir_all(&tmp_shard).map_err(|e| Error::io("creating", &tmp_shard, e))?;
            write_new_file(&tmp, &encoded)?;
        }
        {
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
            if pending.batch_ready() {
                self.work.notify_one();
            }
        }
        Ok(Put {
            id,
            size,
            new: true,
            stored_size: encoded.len() as u64,
        })
    }

    fn touch(&self, id: &BlockId) -> Result<()> {
        let path = self.block_path(id);
        let touched = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()));
        match touched {
            Ok(()) => Ok(()),
            // Deleted meanwhile by a collector: the caller's put must write it again.
            Err(err) => Err(Error::io("touching", path, err)),
        }
    }

    fn final_exists(&self, id: &BlockId) -> Result<bool> {
        let path = self.block_path(id);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(Error::io("checking", path, err)),
        }
    }

    /// Flushes the queued blocks: one `syncfs` makes their contents durable, then they are
    /// renamed into their shards (durable at the next `syncfs`, which [`BlockStore::sync`] does).
    fn flush(&self) -> Result<()> {
        let batch: Vec<(BlockId, PathBuf)> = {
            let mut pending = self.lock_pending();
            pending.queued_size = 0;
            let queue = std::mem::take(&mut pending.queue);
            let batch: Vec<_> = queue
                .into_iter()
                .filter_map(|id| pending.staged.get(&id).map(|tmp| (id, tmp.clone())))
                .collect();
            if batch.is_empty() {
                return Ok(());
            }
            pending.in_flight += 1;
            batch
        };
        let result = self.publish(&batch);
        let mut pending = self.lock_pending();
        pending.in_flight -= 1;
        match &result {
            Ok(()) => {
                for (id, _) in &batch {
                    pending.staged.remove(id);
                }
            }
            // The blocks stay staged and go back in the queue for the next flush.
            Err(_) => {
                for (id, tmp) in &batch {
                    if let Ok(meta) = fs::metadata(tmp) {
                        pending.queued_size += meta.len();
                        pending.queue.push(*id);
                    }
                }
            }
        }
        self.done.notify_all();
        result
    }

    /// Makes a batch's contents durable, then renames each block into its shard.
    fn publish(&self, batch: &[(BlockId, PathBuf)]) -> Result<()> {
        self.sync_filesystem()?;
        let mut shards = HashSet::new();
        for (id, tmp) in batch {
            let dest = self.block_path(id);
            let shard = dest.parent().expect("a block path has a shard directory");
            if !shards.contains(shard) {
                fs::create_dir_all(shard).map_err(|e| Error::io("creating", shard, e))?;
                shards.insert(shard.to_path_buf());
            }
            match fs::rename(tmp, &dest) {
                Ok(()) => {}
                // A concurrent delete removed this pending block: nothing left to store.
                Err(err)
                    if err.kind() == ErrorKind::NotFound
                        && !self.lock_pending().staged.contains_key(id) => {}
                Err(err) => return Err(Error::io("renaming", tmp, err)),
            }
        }
        self.renames_unsynced.store(true, Ordering::Release);
        Ok(())
    }

    fn sync_filesystem(&self) -> Result<()> {
        rustix::fs::syncfs(&self.root_dir)
            .map_err(|e| Error::io("syncing the filesystem of", &self.root, e.into()))
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

impl Shared {
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
        drop(self.wait_idle());
        self.flush()?;
        // A batch the flusher took before this call may still be on its way.
        if let Some(err) = self.wait_idle().error.take() {
            return Err(err);
        }
        if self.renames_unsynced.swap(false, Ordering::AcqRel)
            && let Err(err) = self.sync_filesystem()
        {
            self.renames_unsynced.store(true, Ordering::Release);
            return Err(err);
        }
        Ok(())
    }
}

impl BlockStore for FsBlockStore {
    fn has(&self, id: &BlockId) -> Result<bool> {
        self.shared.has(id)
    }

    fn put_many(&self, blocks: &[&[u8]]) -> Result<Vec<Put>> {
        self.shared.put_many(blocks)
    }

    fn get(&self, id: &BlockId) -> Result<Vec<u8>> {
        self.shared.get(id)
    }

    fn delete(&self, id: &BlockId) -> Result<bool> {
        self.shared.delete(id)
    }

    fn list(&self) -> Result<Vec<BlockId>> {
        self.shared.list()
    }

    fn sync(&self) -> Result<()> {
        self.shared.sync()
    }
}

impl Drop for FsBlockStore {
    fn drop(&mut self) {
        self.shared.lock_pending().shutdown = true;
        self.shared.work.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        // Best effort: callers that need durability call `sync` and see its errors. Anything
        // left in tmp/ is unreferenced and is removed at the next open.
        let _ = self.shared.sync();
    }
}

/// Removes everything below `dir`, keeping `dir` itself.
fn remove_tree_contents(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| Error::io("listing", &path, e))?
            .is_dir();
        let removed = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io("removing", &path, e))?;
    }
    Ok(())
}

thread_local! {
    /// One zstd context per thread and level: creating a context per block cost 2% of ingest.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(have, _)| *have != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = slot.as_mut()?;
        compressor.compress(data).ok()
    })
}

/// The stored form of a block: a header byte and the payload, compressed where it pays.
fn encode_block(data: &[u8], compression: Compression) -> Vec<u8> {
    if let Compression::Zstd { level } = compression
        && worth_compressing(data, level)
        && let Some(packed) = compress(data, level)
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
    compress(sample, level).is_some_and(|packed| packed.len() < sample.len() * 15 / 16)
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

#[cfg(test)]
mod tests;
