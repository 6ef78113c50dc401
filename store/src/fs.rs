//! The local filesystem [`BlockStore`]: blocks appended to pack files, found through an
//! in-memory index that an append-only log keeps durable.
//!
//! ```text
//! ROOT/lock                   held (flock) by the one process using the store
//! ROOT/packs/00000001.pack    "CAIRNPK1", then records: stored length (u32 LE), id, stored bytes
//! ROOT/index.log              one 56-byte record per block put, refreshed or deleted
//! ROOT/blocks/abc/abc…        blocks of the earlier one-file-per-block layout: read, never written
//! ```
//!
//! A block's stored bytes are a header byte and the payload: header 0 means the payload is the
//! block itself; 1 means it is zstd-compressed. A block is compressed only when that saves at
//! least 1/16 of its size, and incompressible data is detected on a sample first so it costs
//! almost nothing.
//!
//! **Why packs.** One file per block cost an inode, a directory entry and a rename per block:
//! profiling a 1 GiB upload of 20,000 small files showed ~45% of the server's CPU time in file
//! creation (see BENCHMARKS.md). Appending to a few large files costs a `pwrite` per block.
//!
//! **Durability.** `put` appends the record to the active pack and returns; the block is readable
//! at once. Every [`PENDING_BLOCKS_MAX`] blocks (or [`PENDING_SIZE_MAX`] bytes), and on
//! [`BlockStore::sync`], a flush `fdatasync`s the packs written to, and only then appends the
//! blocks' index records to the log and `fdatasync`s it. So the log never points at bytes that
//! are not on disk, and a crash loses only blocks no [`BlockStore::sync`] covered: their bytes are
//! dead space in a pack, dropped at the next compaction. Each index record carries a checksum;
//! a torn record at the log's end (a crash mid-append) is cut off at open.
//!
//! **Deletion** writes a tombstone record and counts the block's bytes as dead in its pack.
//! [`FsBlockStore::compact`] copies the live blocks of packs that are more than half dead into
//! the active pack, makes their new places durable, then removes the old packs.
//!
//! The index holds ~50 bytes per block in memory (50 MB per million blocks) and is read from
//! the log at open. It does not know which blocks are referenced (the garbage collector above it
//! decides).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use crate::limits::{BLOCK_SIZE_MAX, PACK_SIZE_TARGET, PENDING_BLOCKS_MAX, PENDING_SIZE_MAX};
use crate::store::check_block_size;
use crate::{BlockId, BlockStore, Error, Put, Result};

const HEADER_RAW: u8 = 0;
const HEADER_ZSTD: u8 = 1;
/// The first bytes of every pack file.
const PACK_MAGIC: &[u8; 8] = b"CAIRNPK1";
/// A pack record's stored length (4 bytes) and id (32 bytes), before its stored bytes.
const RECORD_HEADER_LEN: u64 = 36;
/// An index record: id (32), pack (4), offset (4), length (4), stored at (4, Unix seconds),
/// then the first 8 bytes of the BLAKE3 hash of those 48 bytes.
const LOG_RECORD_LEN: usize = 56;
/// The pack number of a tombstone record.
const DELETED: u32 = u32::MAX;
/// Pack files kept open for reading.
const OPEN_PACKS_MAX: usize = 64;
/// A deduplicating put refreshes a block's time (for the garbage collector's grace period) when
/// it is older than this.
const REFRESH_AFTER_S: u32 = 60;
/// Hex digits of a legacy block's shard directory.
const SHARD_HEX_LEN: usize = 2;
/// Most bytes sampled to decide whether a block is worth compressing.
const COMPRESS_SAMPLE_SIZE: usize = 16 * 1024;
/// Fewest bytes sampled; a block under twice this is compressed whole.
const COMPRESS_SAMPLE_MIN: usize = 4 * 1024;

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

/// What [`FsBlockStore::compact`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Packs removed.
    pub packs: u64,
    /// Live blocks copied out of them.
    pub blocks_moved: u64,
    /// Bytes of disk space given back.
    pub bytes_reclaimed: u64,
}

/// A block store in a local directory.
#[derive(Debug)]
pub struct FsBlockStore {
    shared: Arc<Shared>,
    /// Flushes full batches in the background, so hashing and compressing go on while the disk
    /// syncs.
    flusher: Option<JoinHandle<()>>,
}

/// The store's state, shared with the flusher thread.
#[derive(Debug)]
struct Shared {
    root: PathBuf,
    packs_dir: PathBuf,
    legacy_dir: PathBuf,
    /// Whether the legacy one-file-per-block directory holds anything.
    legacy: bool,
    options: FsStoreOptions,
    state: Mutex<State>,
    /// The index log; held for a whole flush or compaction, so records are appended in order.
    log: Mutex<Log>,
    /// Pack files open for reading.
    readers: Mutex<HashMap<u32, Arc<File>>>,
    /// Held while a record is written. Writes to one pack serialize on its inode lock anyway,
    /// where the kernel spins for them (a tenth of the server's CPU time in a 1 GiB upload);
    /// waiting here sleeps instead.
    writing: Mutex<()>,
    /// Held for the store's lifetime: a second process cannot open the same store.
    _lock: File,
    /// Signalled when a batch is ready to flush, or at shutdown.
    work: Condvar,
    /// Signalled when a flush ends.
    done: Condvar,
}

#[derive(Debug)]
struct Log {
    file: File,
    path: PathBuf,
    /// Bytes of valid records.
    len: u64,
    /// Records in the file.
    records: u64,
}

/// Where a block's stored bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    pack: u32,
    /// Offset of the stored bytes (after the record header).
    offset: u32,
    len: u32,
    /// When it was stored or last refreshed, Unix seconds.
    stored_s: u32,
    /// Whether its index record is durable.
    durable: bool,
}

impl Loc {
    fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN + u64::from(self.len)
    }

    fn same_place(&self, other: &Loc) -> bool {
        self.pack == other.pack && self.offset == other.offset
    }
}

#[derive(Debug)]
struct Active {
    no: u32,
    file: Arc<File>,
    size: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct PackStats {
    /// Bytes in the file, holes and dead records included.
    size: u64,
    /// Bytes of records the index points at.
    live: u64,
}

#[derive(Debug, Default)]
struct State {
    index: HashMap<BlockId, Loc>,
    packs: HashMap<u32, PackStats>,
    active: Option<Active>,
    next_pack: u32,
    /// Index records not yet in the log, in order; `None` is a tombstone.
    unlogged: Vec<(BlockId, Option<Loc>)>,
    /// Bytes appended to packs since the last flush took its batch.
    unlogged_bytes: u64,
    /// Packs written to since the last flush took its batch.
    dirty_packs: HashMap<u32, Arc<File>>,
    /// Whether a pack file was created since the last flush (the directory needs a sync).
    new_packs: bool,
    /// Appends reserved in each pack and not yet indexed: a compaction leaves such packs alone.
    appending: HashMap<u32, usize>,
    /// The last background flush failure, reported by the next put.
    error: Option<Error>,
    /// A pack that failed to sync (its path, and why): once set, nothing more is logged or
    /// stored until the store is opened again (see [`Shared::flush_locked`]).
    failed: Option<(PathBuf, String)>,
    /// Tests: the next flush's pack sync fails.
    #[cfg(test)]
    fail_pack_sync: bool,
    /// Tells the flusher thread to stop.
    shutdown: bool,
}

impl State {
    fn batch_ready(&self) -> bool {
        self.unlogged.len() >= PENDING_BLOCKS_MAX || self.unlogged_bytes >= PENDING_SIZE_MAX
    }

    /// Puts stall while this much is waiting, so a slow disk bounds the unsynced data.
    fn backlogged(&self) -> bool {
        self.unlogged.len() >= 2 * PENDING_BLOCKS_MAX || self.unlogged_bytes >= 2 * PENDING_SIZE_MAX
    }

    fn add_live(&mut self, pack: u32, bytes: u64) {
        let stats = self.packs.entry(pack).or_default();
        stats.live += bytes;
    }

    fn end_append(&mut self, pack: u32) {
        if let Some(count) = self.appending.get_mut(&pack) {
            *count -= 1;
            if *count == 0 {
                self.appending.remove(&pack);
            }
        }
    }

    fn remove_live(&mut self, pack: u32, bytes: u64) {
        if let Some(stats) = self.packs.get_mut(&pack) {
            stats.live = stats.live.saturating_sub(bytes);
        }
    }
}

impl FsBlockStore {
    /// Opens (creating if needed) the store at `root`.
    ///
    /// The index is read from the log; a torn record at its end (a crash mid-append) is cut off,
    /// and packs no index record points at (written, but never made durable) are removed.
    ///
    /// # Errors
    /// IO errors, or the store being in use by another process.
    pub fn open(root: impl Into<PathBuf>, options: FsStoreOptions) -> Result<Self> {
        let root = root.into();
        let packs_dir = root.join("packs");
        let legacy_dir = root.join("blocks");
        for dir in [&root, &packs_dir] {
            fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        let lock = lock_root(&root)?;
        // Temp files of the one-file-per-block layout: never referenced.
        let legacy_tmp = root.join("tmp");
        if legacy_tmp.exists() {
            fs::remove_dir_all(&legacy_tmp).map_err(|e| Error::io("removing", &legacy_tmp, e))?;
        }
        let legacy = fs::read_dir(&legacy_dir).is_ok_and(|mut dir| dir.next().is_some());
        let (log, mut state) = load_index(&root.join("index.log"), &packs_dir)?;
        state.next_pack = state.packs.keys().max().map_or(1, |no| no + 1);
        let shared = Arc::new(Shared {
            work: Condvar::new(),
            done: Condvar::new(),
            root,
            packs_dir,
            legacy_dir,
            legacy,
            options,
            state: Mutex::new(state),
            log: Mutex::new(log),
            readers: Mutex::new(HashMap::new()),
            writing: Mutex::new(()),
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

    /// Rebuilds the index log of the store at `root` from its packs, for a store that refuses
    /// to open because its log is missing or damaged. The store must not be open (this takes
    /// its lock). Every pack record whose bytes hash to its id is indexed; damaged stretches
    /// are stepped over. The previous log is kept beside the new one. What only the log knew is
    /// lost: blocks deleted since their pack was last compacted come back (the next collection
    /// deletes them again), and every block counts as stored now.
    ///
    /// # Errors
    /// IO errors, or the store being in use.
    pub fn rebuild_index(root: impl AsRef<Path>) -> Result<RebuildReport> {
        rebuild::rebuild(root.as_ref())
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Where a block's stored bytes (header byte and payload) are: the file, the offset and the
    /// length. `None` if it is not stored. For tools and tests that inspect the store on disk.
    pub fn location(&self, id: &BlockId) -> Option<(PathBuf, u64, u64)> {
        if let Some(loc) = self.shared.lock_state().index.get(id).copied() {
            return Some((
                self.shared.pack_path(loc.pack),
                u64::from(loc.offset),
                u64::from(loc.len),
            ));
        }
        let path = self.shared.legacy_path(id);
        let len = fs::metadata(&path).ok()?.len();
        Some((path, 0, len))
    }

    /// When a block was stored or last deduplicated against; `None` if it is not stored.
    /// A garbage collector deletes only blocks older than a grace period, so it never races an
    /// upload that has not committed yet.
    ///
    /// # Errors
    /// IO errors reading a legacy block's metadata.
    pub fn modified(&self, id: &BlockId) -> Result<Option<SystemTime>> {
        if let Some(loc) = self.shared.lock_state().index.get(id) {
            return Ok(Some(
                UNIX_EPOCH + Duration::from_secs(u64::from(loc.stored_s)),
            ));
        }
        if !self.shared.legacy {
            return Ok(None);
        }
        let path = self.shared.legacy_path(id);
        match fs::metadata(&path).and_then(|meta| meta.modified()) {
            Ok(time) => Ok(Some(time)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Error::io("reading metadata of", path, err)),
        }
    }

    /// Which of `ids` are stored, refreshing the time of those that are (as a deduplicating put
    /// does): a server that answers "I have it" keeps the block from the garbage collector for
    /// its grace period, so the commit that relies on the answer finds the block.
    ///
    /// # Errors
    /// IO errors on legacy blocks.
    pub fn keep_many(&self, ids: &[BlockId]) -> Result<Vec<bool>> {
        let mut kept = {
            let mut state = self.shared.lock_state();
            ids.iter()
                .map(|id| self.shared.dedup(&mut state, id))
                .collect::<Vec<bool>>()
        };
        if self.shared.legacy {
            for (id, kept) in ids.iter().zip(kept.iter_mut()) {
                if !*kept && self.shared.legacy_exists(id)? {
                    self.shared.touch_legacy(id)?;
                    *kept = true;
                }
            }
        }
        Ok(kept)
    }

    /// Deletes a block only if it was stored or last refreshed at or before `cutoff`, checked
    /// and deleted in one step under the index lock: a put or [`FsBlockStore::keep_many`] that
    /// refreshes it meanwhile keeps it, where a check then a delete could lose it. `None` if
    /// it is not stored, else whether it was deleted. (A legacy block's check and delete are
    /// two steps, on its file's mtime.)
    ///
    /// # Errors
    /// IO errors.
    pub fn delete_if_older(&self, id: &BlockId, cutoff: SystemTime) -> Result<Option<bool>> {
        let cutoff_s = cutoff.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        {
            let mut state = self.shared.lock_state();
            if let Some(loc) = state.index.get(id).copied() {
                if u64::from(loc.stored_s) > cutoff_s {
                    return Ok(Some(false));
                }
                state.index.remove(id);
                state.remove_live(loc.pack, loc.record_len());
                state.unlogged.push((*id, None));
                drop(state);
                if self.shared.legacy {
                    // A copy in the old layout goes too, or the block would still be listed.
                    let path = self.shared.legacy_path(id);
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(err) if err.kind() == ErrorKind::NotFound => {}
                        Err(err) => return Err(Error::io("removing", path, err)),
                    }
                }
                return Ok(Some(true));
            }
        }
        if !self.shared.legacy {
            return Ok(None);
        }
        match self.modified(id)? {
            None => Ok(None),
            Some(time) if time > cutoff => Ok(Some(false)),
            Some(_) => self.shared.delete(id).map(Some),
        }
    }

    /// Gives back the space of deleted blocks: every pack more than half dead has its live
    /// blocks copied into the active pack, their new places made durable, and is then removed.
    ///
    /// # Errors
    /// IO errors; a failed compaction leaves every block readable where the index says.
    pub fn compact(&self) -> Result<CompactReport> {
        self.shared.compact()
    }
}

/// Reads the index log (cutting off a torn end) and the pack directory; removes packs with no
/// live block.
fn load_index(log_path: &Path, packs_dir: &Path) -> Result<(Log, State)> {
    let (bytes, log_existed) = match fs::read(log_path) {
        Ok(bytes) => (bytes, true),
        Err(err) if err.kind() == ErrorKind::NotFound => (Vec::new(), false),
        Err(err) => return Err(Error::io("reading", log_path, err)),
    };
    let refuse = |why: String| {
        Error::io(
            "opening",
            log_path,
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "{why}; the store is left untouched: rebuild the index from the packs \
                     (`cairn-server rebuild-index` for a server) or restore the file from a backup"
                ),
            ),
        )
    };
    let mut state = State::default();
    let mut valid = 0usize;
    let mut records = 0u64;
    // Damaged records at the end are a crash's torn last batch (never acknowledged by a sync):
    // cut off. A damaged record with valid ones after it is damage at rest: refused, because
    // going on would drop every block indexed after it.
    let mut damaged_at = None;
    for (i, record) in bytes.chunks_exact(LOG_RECORD_LEN).enumerate() {
        match (decode_log_record(record), damaged_at) {
            (None, _) => {
                damaged_at.get_or_insert(i);
            }
            (Some(_), Some(first)) => {
                return Err(refuse(format!(
                    "the index log is damaged at record {first} of {}",
                    bytes.len() / LOG_RECORD_LEN
                )));
            }
            (Some((id, loc)), None) => {
                match loc {
                    Some(loc) => state.index.insert(id, loc),
                    None => state.index.remove(&id),
                };
                valid += LOG_RECORD_LEN;
                records += 1;
            }
        }
    }
    for entry in fs::read_dir(packs_dir).map_err(|e| Error::io("listing", packs_dir, e))? {
        let entry = entry.map_err(|e| Error::io("listing", packs_dir, e))?;
        let name = entry.file_name();
        let Some(no) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".pack"))
            .and_then(|n| u32::from_str_radix(n, 16).ok())
        else {
            continue;
        };
        let size = entry
            .metadata()
            .map_err(|e| Error::io("reading metadata of", entry.path(), e))?
            .len();
        state.packs.insert(no, PackStats { size, live: 0 });
    }
    // The log is created with the first pack: without it, every block would look unindexed.
    if !log_existed && !state.packs.is_empty() {
        return Err(refuse(format!(
            "the index log is missing while {} holds {} pack files",
            packs_dir.display(),
            state.packs.len()
        )));
    }
    // Records pointing at a pack that is gone cannot be read: they were compacted away by a
    // run that crashed before its tombstones were durable, so they were dead already.
    state
        .index
        .retain(|_, loc| state.packs.contains_key(&loc.pack));
    let lives: Vec<(u32, u64)> = state
        .index
        .values()
        .map(|loc| (loc.pack, loc.record_len()))
        .collect();
    for (pack, bytes) in lives {
        state.add_live(pack, bytes);
    }
    // A pack no record points at holds what no sync acknowledged (a crash before its records
    // reached the log), or what a compaction had copied already; or, when the end of the log was
    // damaged at rest rather than torn, blocks whose records were cut off with it. Only empty
    // ones go now: the others are left for the next compaction, so `rebuild-index` can still
    // find such blocks until then.
    let magic = PACK_MAGIC.len() as u64;
    let dead: Vec<u32> = state
        .packs
        .iter()
        .filter(|(_, stats)| stats.live == 0 && stats.size <= magic)
        .map(|(no, _)| *no)
        .collect();
    for no in dead {
        let path = packs_dir.join(pack_name(no));
        fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
        state.packs.remove(&no);
    }
    let mut log = Log {
        file: OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(log_path)
            .map_err(|e| Error::io("opening", log_path, e))?,
        path: log_path.to_path_buf(),
        len: valid as u64,
        records,
    };
    if valid < bytes.len() {
        log.file
            .set_len(log.len)
            .map_err(|e| Error::io("cutting the torn end of", log_path, e))?;
    }
    // A log mostly of superseded records is rewritten with one record per live block.
    if log.records > 2 * state.index.len() as u64 + 4096 {
        rewrite_log(&mut log, &state.index)?;
    }
    Ok((log, state))
}

fn pack_name(no: u32) -> String {
    format!("{no:08x}.pack")
}

fn encode_log_record(id: &BlockId, loc: Option<&Loc>) -> [u8; LOG_RECORD_LEN] {
    let mut out = [0u8; LOG_RECORD_LEN];
    out[..32].copy_from_slice(id.as_bytes());
    let (pack, offset, len, stored_s) = loc.map_or((DELETED, 0, 0, 0), |l| {
        (l.pack, l.offset, l.len, l.stored_s)
    });
    out[32..36].copy_from_slice(&pack.to_le_bytes());
    out[36..40].copy_from_slice(&offset.to_le_bytes());
    out[40..44].copy_from_slice(&len.to_le_bytes());
    out[44..48].copy_from_slice(&stored_s.to_le_bytes());
    let check = blake3::hash(&out[..48]);
    out[48..].copy_from_slice(&check.as_bytes()[..8]);
    out
}

/// An index record: the id and its place, or `None` for a tombstone; `None` overall if the
/// record is damaged.
fn decode_log_record(record: &[u8]) -> Option<(BlockId, Option<Loc>)> {
    let check = blake3::hash(record.get(..48)?);
    if record.get(48..56)? != &check.as_bytes()[..8] {
        return None;
    }
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(record.get(at..at + 4)?.try_into().ok()?))
    };
    let id = BlockId::from_bytes(record.get(..32)?.try_into().ok()?);
    let pack = word(32)?;
    if pack == DELETED {
        return Some((id, None));
    }
    Some((
        id,
        Some(Loc {
            pack,
            offset: word(36)?,
            len: word(40)?,
            stored_s: word(44)?,
            durable: true,
        }),
    ))
}

/// Replaces the log with one record per durable block: written beside it, synced, renamed over.
fn rewrite_log(log: &mut Log, index: &HashMap<BlockId, Loc>) -> Result<()> {
    let (file, len, records) = write_log(&log.path, index)?;
    log.file = file;
    log.len = len;
    log.records = records;
    Ok(())
}

/// Writes a log of one record per durable block at `path`: beside it, synced, renamed over,
/// and the directory synced. Returns the open file, its length and its record count.
fn write_log(path: &Path, index: &HashMap<BlockId, Loc>) -> Result<(File, u64, u64)> {
    let tmp = path.with_extension("log.new");
    let mut bytes = Vec::with_capacity(index.len() * LOG_RECORD_LEN);
    let mut records = 0u64;
    for (id, loc) in index.iter().filter(|(_, loc)| loc.durable) {
        bytes.extend_from_slice(&encode_log_record(id, Some(loc)));
        records += 1;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all_at(&bytes, 0)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming", &tmp, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok((file, bytes.len() as u64, records))
}

/// Opens and locks `root/lock`, held for as long as the file is: one process per store.
fn lock_root(root: &Path) -> Result<File> {
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
    Ok(lock)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

fn now_s() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// The operation name of a pack's sync, which [`Shared::flush_locked`] tells from other errors.
const PACK_SYNC_OP: &str = "syncing pack";

/// The error every store operation that writes returns after a pack failed to sync.
fn failed_error((path, reason): &(PathBuf, String)) -> Error {
    Error::io(
        "writing to the store (a pack failed to sync, so nothing more is stored until the store is opened again; check the disk, then restart)",
        path.clone(),
        std::io::Error::other(reason.clone()),
    )
}

impl Shared {
    fn flusher_loop(&self) {
        let mut state = self.lock_state();
        loop {
            if state.shutdown {
                return;
            }
            if !state.batch_ready() {
                state = self
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            drop(state);
            let result = self.flush();
            state = self.lock_state();
            if let Err(err) = result {
                state.error = Some(err);
                // Wait for a put or sync to come by before trying again, not in a hot loop.
                state = self
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves `State` consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pack_path(&self, no: u32) -> PathBuf {
        self.packs_dir.join(pack_name(no))
    }

    fn legacy_path(&self, id: &BlockId) -> PathBuf {
        let hex = id.to_string();
        self.legacy_dir.join(&hex[..SHARD_HEX_LEN]).join(hex)
    }

    /// A deduplicating put: true if the block is stored (its time refreshed if old). A refresh
    /// is an index record to log like a put's, so it wakes the flusher once a batch is ready:
    /// puts wait while too many records are unlogged, and refreshes alone can make them so.
    fn dedup(&self, state: &mut State, id: &BlockId) -> bool {
        let Some(loc) = state.index.get_mut(id) else {
            return false;
        };
        let now = now_s();
        if loc.durable && now.saturating_sub(loc.stored_s) >= REFRESH_AFTER_S {
            loc.stored_s = now;
            let loc = *loc;
            state.unlogged.push((*id, Some(loc)));
            if state.batch_ready() {
                self.work.notify_one();
            }
        }
        true
    }

    fn put_one(&self, id: BlockId, data: &[u8]) -> Result<Put> {
        let dedup = Put {
            id,
            size: data.len() as u64,
            new: false,
            stored_size: 0,
        };
        {
            let mut state = self.lock_state();
            if let Some(err) = state.error.take() {
                return Err(err);
            }
            while state.backlogged() && state.error.is_none() && !state.shutdown {
                // A backlog is a ready batch: the flusher is at it, or is told to be now.
                self.work.notify_one();
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            // After the wait: the flush it waited for may have been the one that failed.
            if let Some(failed) = &state.failed {
                return Err(failed_error(failed));
            }
            if self.dedup(&mut state, &id) {
                return Ok(dedup);
            }
        }
        if self.legacy && self.legacy_exists(&id)? {
            self.touch_legacy(&id)?;
            return Ok(dedup);
        }
        let (head, raw) = encode_record(&id, data, self.options.compression);
        let tail: &[u8] = if raw { data } else { &[] };
        let stored_size = (head.len() + tail.len()) as u64 - RECORD_HEADER_LEN;
        match self.append(&id, &head, tail)? {
            true => Ok(Put {
                id,
                size: data.len() as u64,
                new: true,
                stored_size,
            }),
            false => Ok(dedup),
        }
    }

    /// Appends a pack record and indexes it (not yet durable); false if another put indexed the
    /// same block meanwhile (this copy is then dead space).
    fn append(&self, id: &BlockId, head: &[u8], tail: &[u8]) -> Result<bool> {
        let record_len = (head.len() + tail.len()) as u64;
        let (pack, file, offset) = self.reserve(record_len)?;
        let written = {
            let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
            file.write_all_at(head, offset)
                .and_then(|()| file.write_all_at(tail, offset + head.len() as u64))
        };
        if let Err(err) = written {
            // Start a new pack: this one has a hole where the record should be.
            let mut state = self.lock_state();
            state.end_append(pack);
            if state.active.as_ref().is_some_and(|a| a.no == pack) {
                state.active = None;
            }
            return Err(Error::io("writing", self.pack_path(pack), err));
        }
        let too_big = || {
            Error::io(
                "writing",
                self.pack_path(pack),
                std::io::Error::other("pack offset out of range"),
            )
        };
        let loc = Loc {
            pack,
            offset: u32::try_from(offset + RECORD_HEADER_LEN).map_err(|_| too_big())?,
            len: u32::try_from(record_len - RECORD_HEADER_LEN).map_err(|_| too_big())?,
            stored_s: now_s(),
            durable: false,
        };
        let mut state = self.lock_state();
        state.end_append(pack);
        state.dirty_packs.entry(pack).or_insert(file);
        state.unlogged_bytes += record_len;
        if state.index.contains_key(id) {
            return Ok(false);
        }
        state.index.insert(*id, loc);
        state.add_live(pack, loc.record_len());
        state.unlogged.push((*id, Some(loc)));
        if state.batch_ready() {
            self.work.notify_one();
        }
        Ok(true)
    }

    /// Reserves `len` bytes at the end of the active pack, starting a new pack when it is full.
    fn reserve(&self, len: u64) -> Result<(u32, Arc<File>, u64)> {
        let mut state = self.lock_state();
        let magic = PACK_MAGIC.len() as u64;
        let full = |a: &Active| a.size > magic && a.size + len > PACK_SIZE_TARGET;
        if state.active.as_ref().is_none_or(full) {
            let no = state.next_pack;
            let path = self.pack_path(no);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|file| file.write_all_at(PACK_MAGIC, 0).map(|()| file))
                .map_err(|e| Error::io("creating", &path, e))?;
            state.next_pack = no + 1;
            state.new_packs = true;
            state.packs.insert(
                no,
                PackStats {
                    size: magic,
                    live: 0,
                },
            );
            state.active = Some(Active {
                no,
                file: Arc::new(file),
                size: magic,
            });
        }
        let Some(active) = state.active.as_mut() else {
            return Err(Error::io(
                "writing",
                &self.packs_dir,
                std::io::Error::other("no active pack"),
            ));
        };
        let offset = active.size;
        active.size += len;
        let reserved = (active.no, Arc::clone(&active.file), offset);
        *state.appending.entry(reserved.0).or_default() += 1;
        if let Some(stats) = state.packs.get_mut(&reserved.0) {
            stats.size += len;
        }
        Ok(reserved)
    }

    /// Makes every block appended so far durable: syncs the packs written to, then appends their
    /// index records to the log and syncs it.
    fn flush(&self) -> Result<()> {
        let mut log = self.lock_log();
        self.flush_locked(&mut log)
    }

    fn flush_locked(&self, log: &mut Log) -> Result<()> {
        let (entries, packs, new_packs) = {
            let mut state = self.lock_state();
            if let Some(failed) = &state.failed {
                return Err(failed_error(failed));
            }
            if state.unlogged.is_empty() && state.dirty_packs.is_empty() {
                return Ok(());
            }
            state.unlogged_bytes = 0;
            (
                std::mem::take(&mut state.unlogged),
                std::mem::take(&mut state.dirty_packs),
                std::mem::replace(&mut state.new_packs, false),
            )
        };
        #[cfg(test)]
        let injected = std::mem::take(&mut self.lock_state().fail_pack_sync) && !packs.is_empty();
        #[cfg(not(test))]
        let injected = false;
        let result = if injected {
            Err(Error::io(
                PACK_SYNC_OP,
                self.packs_dir.clone(),
                std::io::Error::other("injected"),
            ))
        } else {
            self.write_batch(log, &entries, &packs, new_packs)
        };
        let mut state = self.lock_state();
        match &result {
            Ok(()) => {
                for (id, loc) in &entries {
                    if let Some(loc) = loc
                        && let Some(indexed) = state.index.get_mut(id)
                        && indexed.same_place(loc)
                    {
                        indexed.durable = true;
                    }
                }
                state.error = None;
            }
            // A pack's data did not reach the disk. The kernel may have dropped the pages it
            // could not write, and a second sync would then succeed without them: logging the
            // batch after a retry would index bytes that are not there, under blocks a commit
            // was told are durable. So nothing more is logged or stored; the log, without the
            // batch, is the truth when the store is opened again (a compaction's source packs
            // are still there: they go only after their blocks' new places are logged).
            Err(Error::Io {
                op: PACK_SYNC_OP,
                path,
                source,
            }) => {
                state.failed = Some((path.clone(), source.to_string()));
            }
            // Everything goes back, in order, for the next flush.
            Err(_) => {
                let mut back = entries;
                back.append(&mut state.unlogged);
                state.unlogged = back;
                for (no, file) in packs {
                    state.dirty_packs.entry(no).or_insert(file);
                }
                state.new_packs |= new_packs;
            }
        }
        self.done.notify_all();
        result
    }

    fn write_batch(
        &self,
        log: &mut Log,
        entries: &[(BlockId, Option<Loc>)],
        packs: &HashMap<u32, Arc<File>>,
        new_packs: bool,
    ) -> Result<()> {
        for (no, file) in packs {
            file.sync_data()
                .map_err(|e| Error::io(PACK_SYNC_OP, self.pack_path(*no), e))?;
        }
        if new_packs {
            sync_dir(&self.packs_dir)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(entries.len() * LOG_RECORD_LEN);
        for (id, loc) in entries {
            bytes.extend_from_slice(&encode_log_record(id, loc.as_ref()));
        }
        // Written at the end of the valid records: a failed write is overwritten by the retry.
        log.file
            .write_all_at(&bytes, log.len)
            .and_then(|()| log.file.sync_data())
            .map_err(|e| Error::io("writing", &log.path, e))?;
        log.len += bytes.len() as u64;
        log.records += entries.len() as u64;
        Ok(())
    }

    fn reader(&self, no: u32) -> std::io::Result<Arc<File>> {
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = readers.get(&no) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(self.pack_path(no))?);
        if readers.len() >= OPEN_PACKS_MAX {
            readers.clear();
        }
        readers.insert(no, Arc::clone(&file));
        Ok(file)
    }

    /// A block's stored header byte and payload. They are read apart (two `pread`s), so a raw
    /// block's payload is the block, with no copy to take the header off.
    fn read_stored(&self, id: &BlockId) -> Result<(u8, Vec<u8>)> {
        // A compaction may move the block between the lookup and the read.
        for _ in 0..3 {
            let Some(loc) = self.lock_state().index.get(id).copied() else {
                break;
            };
            let read = self
                .reader(loc.pack)
                .and_then(|file| read_record(&file, u64::from(loc.offset), loc.len as usize));
            match read {
                Ok(stored) => return Ok(stored),
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) if err.kind() == ErrorKind::UnexpectedEof => {
                    return Err(Error::BlockCorrupt {
                        id: *id,
                        actual: BlockId::of(&[]),
                    });
                }
                Err(err) => return Err(Error::io("reading", self.pack_path(loc.pack), err)),
            }
        }
        if !self.legacy {
            return Err(Error::BlockMissing(*id));
        }
        let path = self.legacy_path(id);
        let mut stored = fs::read(&path).map_err(|err| match err.kind() {
            ErrorKind::NotFound => Error::BlockMissing(*id),
            _ => Error::io("reading", path, err),
        })?;
        if stored.is_empty() {
            return Err(Error::BlockCorrupt {
                id: *id,
                actual: BlockId::of(&[]),
            });
        }
        let header = stored.remove(0);
        Ok((header, stored))
    }

    fn legacy_exists(&self, id: &BlockId) -> Result<bool> {
        let path = self.legacy_path(id);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(Error::io("checking", path, err)),
        }
    }

    fn touch_legacy(&self, id: &BlockId) -> Result<()> {
        let path = self.legacy_path(id);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(SystemTime::now()))
            .map_err(|e| Error::io("touching", path, e))
    }

    fn has(&self, id: &BlockId) -> Result<bool> {
        if self.lock_state().index.contains_key(id) {
            return Ok(true);
        }
        Ok(self.legacy && self.legacy_exists(id)?)
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
        let (header, payload) = self.read_stored(id)?;
        let data = decode_block(id, header, payload)?;
        let actual = BlockId::of(&data);
        if actual != *id {
            return Err(Error::BlockCorrupt { id: *id, actual });
        }
        Ok(data)
    }

    fn peek(&self, id: &BlockId, len: usize) -> Result<Vec<u8>> {
        // A raw block's first bytes are read alone; a compressed one is read whole but
        // decompressed only as far as `len` (one zstd block at most); one a compaction moved
        // meanwhile, or one in the legacy layout, is read and decoded whole.
        let loc = self.lock_state().index.get(id).copied();
        if let Some(loc) = loc.filter(|loc| loc.len > 0) {
            let offset = u64::from(loc.offset);
            let raw = self.reader(loc.pack).and_then(|file| {
                let mut header = [0u8; 1];
                file.read_exact_at(&mut header, offset)?;
                if header[0] != HEADER_RAW {
                    return Ok(None);
                }
                let take = len.min(loc.len as usize - 1);
                crate::read::read_exact_at(&file, take, offset + 1).map(Some)
            });
            if let Ok(Some(bytes)) = raw {
                return Ok(bytes);
            }
        }
        let (header, payload) = self.read_stored(id)?;
        if header == HEADER_ZSTD {
            let mut data = Vec::with_capacity(len);
            let decoder = zstd::stream::read::Decoder::with_buffer(payload.as_slice());
            let read = decoder.and_then(|d| {
                use std::io::Read as _;
                d.take(len as u64).read_to_end(&mut data)
            });
            return match read {
                Ok(_) => Ok(data),
                Err(_) => Err(Error::BlockCorrupt {
                    id: *id,
                    actual: BlockId::of(&payload),
                }),
            };
        }
        let mut data = decode_block(id, header, payload)?;
        data.truncate(len);
        Ok(data)
    }

    fn delete(&self, id: &BlockId) -> Result<bool> {
        let removed = {
            let mut state = self.lock_state();
            match state.index.remove(id) {
                Some(loc) => {
                    state.remove_live(loc.pack, loc.record_len());
                    state.unlogged.push((*id, None));
                    true
                }
                None => false,
            }
        };
        if !self.legacy {
            return Ok(removed);
        }
        let path = self.legacy_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(removed),
            Err(err) => Err(Error::io("removing", path, err)),
        }
    }

    fn list(&self) -> Result<Vec<BlockId>> {
        let mut ids: Vec<BlockId> = self.lock_state().index.keys().copied().collect();
        if self.legacy {
            self.list_legacy(&mut ids)?;
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn list_legacy(&self, ids: &mut Vec<BlockId>) -> Result<()> {
        let read = |dir: &Path| fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e));
        for shard in read(&self.legacy_dir)? {
            let shard = shard
                .map_err(|e| Error::io("listing", &self.legacy_dir, e))?
                .path();
            if !shard.is_dir() {
                continue;
            }
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
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.flush()
    }

    fn compact(&self) -> Result<CompactReport> {
        let magic = PACK_MAGIC.len() as u64;
        let mostly_dead = |stats: &PackStats| 2 * stats.live < stats.size.saturating_sub(magic);
        // Tombstones first: a pack is removed only once nothing durable points into it.
        self.flush()?;
        let victims: Vec<u32> = self
            .lock_state()
            .packs
            .iter()
            .filter(|(_, stats)| mostly_dead(stats))
            .map(|(no, _)| *no)
            .collect();
        let mut report = CompactReport::default();
        // One pack at a time, so flushes (and the commits waiting on them) wait for one pack's
        // copy at most.
        for no in victims {
            let mut log = self.lock_log();
            self.flush_locked(&mut log)?;
            {
                let mut state = self.lock_state();
                // A pack with appends under way is left for the next compaction; the active pack,
                // once chosen, takes no new appends.
                if !state.packs.get(&no).is_some_and(mostly_dead)
                    || state.appending.contains_key(&no)
                {
                    continue;
                }
                if state.active.as_ref().is_some_and(|a| a.no == no) {
                    state.active = None;
                }
            }
            report.blocks_moved += self.move_live_blocks(no)?;
            self.flush_locked(&mut log)?;
            let path = self.pack_path(no);
            let size = {
                let mut state = self.lock_state();
                if state.index.values().any(|loc| loc.pack == no) {
                    // Indexed again since (cannot happen while the log is held); keep it.
                    continue;
                }
                state.packs.remove(&no).map_or(0, |stats| stats.size)
            };
            self.readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&no);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io("removing", &path, err)),
            }
            report.packs += 1;
            report.bytes_reclaimed += size;
        }
        if report.packs > 0 {
            sync_dir(&self.packs_dir)?;
        }
        let mut log = self.lock_log();
        let state = self.lock_state();
        if log.records > 2 * state.index.len() as u64 + 4096 {
            rewrite_log(&mut log, &state.index)?;
        }
        Ok(report)
    }

    /// Copies the live blocks of pack `no` to the active pack and points the index at the copies
    /// (durable at the next flush); returns how many moved.
    fn move_live_blocks(&self, no: u32) -> Result<u64> {
        let moving: Vec<(BlockId, Loc)> = self
            .lock_state()
            .index
            .iter()
            .filter(|(_, loc)| loc.pack == no)
            .map(|(id, loc)| (*id, *loc))
            .collect();
        let mut moved = 0;
        for (id, old) in moving {
            let mut record = Vec::with_capacity(old.record_len() as usize);
            record.extend_from_slice(&old.len.to_le_bytes());
            record.extend_from_slice(id.as_bytes());
            record.resize(old.record_len() as usize, 0);
            self.reader(old.pack)
                .and_then(|file| {
                    file.read_exact_at(
                        &mut record[RECORD_HEADER_LEN as usize..],
                        u64::from(old.offset),
                    )
                })
                .map_err(|e| Error::io("reading", self.pack_path(old.pack), e))?;
            let (pack, file, offset) = self.reserve(record.len() as u64)?;
            let written = {
                let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
                file.write_all_at(&record, offset)
            };
            let mut state = self.lock_state();
            state.end_append(pack);
            if let Err(err) = written {
                if state.active.as_ref().is_some_and(|a| a.no == pack) {
                    state.active = None;
                }
                return Err(Error::io("writing", self.pack_path(pack), err));
            }
            state.dirty_packs.entry(pack).or_insert(file);
            // Deleted or replaced meanwhile: the copy is dead space.
            let Some(indexed) = state.index.get_mut(&id) else {
                continue;
            };
            if !indexed.same_place(&old) {
                continue;
            }
            let new = Loc {
                pack,
                offset: u32::try_from(offset + RECORD_HEADER_LEN).unwrap_or(u32::MAX),
                durable: false,
                // Refreshed while it was copied (a deduplicating put, a commit's confirm): the
                // refresh stands, or the collector could take it for old.
                stored_s: indexed.stored_s,
                ..old
            };
            *indexed = new;
            state.remove_live(old.pack, old.record_len());
            state.add_live(pack, new.record_len());
            state.unlogged.push((id, Some(new)));
            moved += 1;
        }
        Ok(moved)
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

    fn peek(&self, id: &BlockId, len: usize) -> Result<Vec<u8>> {
        self.shared.peek(id, len)
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
        self.shared.lock_state().shutdown = true;
        self.shared.work.notify_all();
        self.shared.done.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        // Best effort: callers that need durability call `sync` and see its errors. Blocks not
        // made durable are dead space in their pack, dropped at the next compaction.
        let _ = self.shared.sync();
    }
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

/// A block's pack record: its stored length (u32 LE), its id, then its stored form (a header
/// byte and the payload, compressed where it pays). Returns the record and whether the block
/// itself must follow it (stored raw: not copied here, written straight from the caller's bytes).
fn encode_record(id: &BlockId, data: &[u8], compression: Compression) -> (Vec<u8>, bool) {
    let packed = match compression {
        Compression::Zstd { level } if worth_compressing(data, level) => {
            compress(data, level).filter(|packed| packed.len() + packed.len() / 15 < data.len())
        }
        _ => None,
    };
    let (header, payload) = match &packed {
        Some(packed) => (HEADER_ZSTD, packed.as_slice()),
        None => (HEADER_RAW, data),
    };
    let stored_len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
    let raw = packed.is_none();
    let mut out =
        Vec::with_capacity(RECORD_HEADER_LEN as usize + 1 + if raw { 0 } else { payload.len() });
    out.extend_from_slice(&stored_len.to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.push(header);
    if !raw {
        out.extend_from_slice(payload);
    }
    (out, raw)
}

/// Compresses a sample from the middle of a block (a quarter of it, between
/// [`COMPRESS_SAMPLE_MIN`] and [`COMPRESS_SAMPLE_SIZE`]); already-compressed data (media,
/// archives) fails fast here and skips the full compression. Blocks too small for a sample are
/// compressed whole. Small files are one block each, so sampling them too takes most of the
/// zstd time out of an upload of many small incompressible files.
fn worth_compressing(data: &[u8], level: i32) -> bool {
    if data.len() < 2 * COMPRESS_SAMPLE_MIN {
        return true;
    }
    let len = (data.len() / 4).clamp(COMPRESS_SAMPLE_MIN, COMPRESS_SAMPLE_SIZE);
    let start = (data.len() - len) / 2;
    let sample = &data[start..start + len];
    compress(sample, level).is_some_and(|packed| packed.len() < sample.len() * 15 / 16)
}

fn decode_block(id: &BlockId, header: u8, payload: Vec<u8>) -> Result<Vec<u8>> {
    match header {
        HEADER_RAW => Ok(payload),
        // The capacity bounds decompression: a damaged or hostile payload cannot expand past
        // the largest block.
        HEADER_ZSTD => zstd::bulk::decompress(&payload, BLOCK_SIZE_MAX as usize).map_err(|_| {
            Error::BlockCorrupt {
                id: *id,
                actual: BlockId::of(&payload),
            }
        }),
        header => Err(Error::BlockFormat { id: *id, header }),
    }
}

/// Reads the `len` stored bytes at `offset`: the header byte and the payload, into their own
/// buffers (the payload's never zero-filled: see [`crate::read`]).
fn read_record(file: &File, offset: u64, len: usize) -> std::io::Result<(u8, Vec<u8>)> {
    if len == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let mut header = [0u8; 1];
    file.read_exact_at(&mut header, offset)?;
    let payload = crate::read::read_exact_at(file, len - 1, offset + 1)?;
    Ok((header[0], payload))
}

mod rebuild;
pub use rebuild::RebuildReport;

#[cfg(test)]
mod tests;
