//! The sync engine: one [`Engine::pass`] brings a local folder and a server folder together.
//!
//! A pass:
//! 1. **Scan** the folder (files whose size, mtime, inode and ctime match the scan cache are not
//!    read again; others are chunked and hashed, and re-read if they change meanwhile).
//! 2. **Head**: one round trip. If the head is the one last synced and nothing changed locally,
//!    the pass ends here, whatever the folder's size.
//! 3. **Pull** the remote tree's nodes that are not cached (level by level, batched), and diff
//!    the last-seen remote tree against the new one to update the flattened remote tree.
//! 4. **Plan**: the pure three-way merge of [`crate::plan`].
//! 5. **Push**: build the new remote tree from the plan, upload the blocks and nodes the server
//!    lacks (nodes children-first, a level once the one below is stored, so an interrupted
//!    upload never leaves a node whose children are missing; beside the file blocks, which
//!    the lacking check finds again on the next pass), then commit as compare-and-swap. A
//!    stale head makes the pass start over from the new head (the merge base is unchanged, so
//!    nothing is lost).
//!    Blocks go in 8 MiB requests, several in flight, smallest files first and each file's
//!    blocks in order, read off the async threads; the ids the server computes (it re-hashes
//!    everything) must be the ones the scan found. A long upload also commits the new and
//!    changed files it has finished as it goes (early commits, [`Engine::set_checkpoints`]):
//!    other devices get them while the rest travels, and a cut pass keeps them.
//! 6. **Apply** the plan locally: downloads go to a temp file in the same directory, fsynced,
//!    then renamed over the target, but only if the target is still what the scan saw
//!    (otherwise the path is left for the next pass, which sees a conflict). Blocks the old
//!    version of a file already has are copied locally, not downloaded; the rest of the pass's
//!    blocks stream in ahead of the writer, across files, several requests at once
//!    ([`crate::fetch`]). Temps are fsynced in batches (parallel fsyncs), then renamed, then
//!    their directories fsynced. Every write is recorded in the scan cache, so it never comes
//!    back as a local change.
//! 7. **Save** the state.
//!
//! Paths are confined to the folder: [`RelPath`] has no `..` or absolute forms, and every
//! parent of a path written is checked to be a real directory, not a symlink.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_protocol::diff::diff;
use cairn_protocol::path::RelPath;
use cairn_protocol::wire::KeptVersion;
use cairn_store::chunk::ChunkConfig;
use cairn_store::dir::{chunk_dir, store_dir};
use cairn_store::edit::{Edit, edit_many};
use cairn_store::node::{DirEntry, EntryKind, FileNode, Name, Node, SymlinkNode};
use cairn_store::{BlockId, BlockStore, NodeId, NodeStore, Put};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

use rayon::prelude::*;

use crate::binding::RootStamp;
use crate::db::{NodeDb, StateDb};
use crate::fetch::{self, Prefetch};
use crate::ignores::Ignores;
use crate::plan::{self, Action, Entry, Kind, Tree};
use crate::remote::{CommitResult, Remote, RemoteError};
use crate::state::{SavedEntry, ScanRecord, State};

/// Prefix of the temp files downloads are written to; the scan skips them.
pub const TEMP_PREFIX: &str = ".cairn-tmp-";

/// A download temp file unchanged this long is left from a run that died, and removed.
const STALE_TEMP_SECS: u64 = 3600;

/// Ids per node or lacking request.
const IDS_PER_BATCH: usize = 4096;

/// Bytes of blocks per upload request.
const BYTES_PER_BATCH: usize = 8 * 1024 * 1024;

/// Downloaded files (and bytes of them) finished together: fsynced as one batch, then renamed.
const STAGED_FILES_MAX: usize = 128;
const STAGED_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// A download is written back to disk every this many bytes as it is written ([`Writeback`]).
const WRITEBACK_WINDOW: u64 = 32 * 1024 * 1024;

/// Threads fsyncing one batch at once.
const FSYNC_THREADS: usize = 16;

/// A pass that would delete more than half of a folder's files, and at least this many, stops
/// and asks (`SyncError::MassDelete`) unless allowed.
pub const MASS_DELETE_FILES_MIN: usize = 100;

/// Conflict losers one commit keeps in the history without copies (see
/// [`Engine::set_conflict_copies`]); a pass with more makes copies instead.
const KEPT_PER_COMMIT_MAX: usize = 256;

/// A long upload commits the files it has finished (see [`Engine::set_checkpoints`]) this
/// long after it began, then after a quarter of the time it has run, and so on: other devices
/// see files within seconds, and an hours-long upload makes a few dozen commits, not thousands.
pub const CHECKPOINT_FIRST: Duration = Duration::from_secs(1);

/// Passes that may find a moved head before a pass gives up.
const STALE_RETRIES_MAX: u32 = 5;

/// What the engine tells its user (CLI, desktop) as it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A phase started.
    Phase(&'static str),
    /// Bytes moved so far in this pass, of a known total.
    Progress {
        /// `upload` or `download`.
        direction: &'static str,
        /// Done.
        done: u64,
        /// Total.
        total: u64,
    },
    /// A file was uploaded or downloaded or deleted.
    File {
        /// The path.
        path: String,
        /// `uploaded`, `downloaded`, `deleted locally`, `deleted remotely`, `renamed`.
        what: &'static str,
    },
    /// Both sides changed a path; the loser's content is at `copy` (if a copy was made).
    Conflict {
        /// The path.
        path: String,
        /// Where the other content was kept.
        copy: Option<String>,
        /// Why.
        reason: String,
    },
    /// Names that collide on case-insensitive or normalising filesystems.
    Collision {
        /// The colliding paths.
        paths: Vec<String>,
    },
    /// A path that could not be synced this pass (it is retried next pass).
    Problem {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Something the user should know that is not about one path.
    Warning {
        /// One line.
        message: String,
    },
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The server or the connection.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The local folder or the state dir.
    #[error("{0}")]
    Local(String),
    /// The pass would delete too much; nothing was deleted.
    #[error(
        "this sync would delete {deletes} of {files} files {side}; nothing was deleted. If that is intended, run again with --allow-mass-delete"
    )]
    MassDelete {
        /// Deletions planned.
        deletes: usize,
        /// Files in the base.
        files: usize,
        /// `locally` or `on the server`.
        side: &'static str,
    },
    /// The server kept moving.
    #[error("the folder kept changing on the server during {0} attempts; try again")]
    Busy(u32),
    /// The server sent data that does not hash to what it claimed.
    #[error("the server sent a corrupt {0}; the pass was stopped (nothing was written)")]
    Corrupt(&'static str),
}

impl From<cairn_store::Error> for SyncError {
    fn from(e: cairn_store::Error) -> Self {
        SyncError::Local(e.to_string())
    }
}

/// Problems a pass keeps for its summary; the rest are counted (and were sent as events).
pub const PROBLEMS_KEPT: usize = 100;

/// A path a pass could not sync, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathProblem {
    /// The path, relative to the folder.
    pub path: String,
    /// Why, on one line.
    pub message: String,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassSummary {
    /// Files uploaded (new content committed).
    pub uploaded: u64,
    /// Files downloaded.
    pub downloaded: u64,
    /// Paths deleted locally.
    pub deleted_local: u64,
    /// Paths deleted on the server.
    pub deleted_remote: u64,
    /// Blocks sent.
    pub blocks_up: u64,
    /// Bytes of blocks sent.
    pub bytes_up: u64,
    /// Blocks received.
    pub blocks_down: u64,
    /// Bytes of blocks received.
    pub bytes_down: u64,
    /// Conflicts found.
    pub conflicts: u64,
    /// Paths left for the next pass.
    pub problems: u64,
    /// What the pass reported as problems (each [`Event::Problem`]), the first
    /// [`PROBLEMS_KEPT`] of them: paths it could not sync, and why.
    pub problem_paths: Vec<PathProblem>,
    /// How many problems the pass reported in all (may exceed `problem_paths`).
    pub problem_count: u64,
    /// Files the pass's scan read and hashed (the rest were taken from the scan cache).
    pub files_read: u64,
    /// The head after the pass.
    pub seq: u64,
    /// Whether folder and server agreed at the end of the pass (nothing left to do).
    pub in_sync: bool,
}

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The synced folder.
    pub root: PathBuf,
    /// Where this folder's state lives (not inside `root`).
    pub state_dir: PathBuf,
    /// This device's name.
    pub device: String,
    /// Allow a pass to delete more than half of a folder's files (and at least
    /// [`MASS_DELETE_FILES_MIN`]).
    pub allow_mass_delete: bool,
}

/// The engine of one synced folder.
pub struct Engine {
    options: EngineOptions,
    ignores: Ignores,
    // Held for its lock: one engine per state dir (so per synced folder), across processes.
    _lock: File,
    nodes: Arc<NodeDb>,
    db: Arc<StateDb>,
    state: State,
    events: UnboundedSender<Event>,
    conflict_copies: bool,
    /// When a long upload first commits what it has finished (None: only at its end).
    checkpoints: Option<Duration>,
    clock: Clock,
    /// The filesystem's time just before the last scan began (see [`settle_scan_cache`]).
    scan_stamp: Option<i64>,
    /// Whether the records of the last scan (and the writes since) are still to be checked
    /// against `scan_stamp` ([`Engine::settle_scan_cache`] checks them once).
    scan_unsettled: bool,
    /// Paths this pass wrote and recorded in the scan cache.
    written: Vec<String>,
    /// The problems reported since the pass began (kept, counted).
    problems: std::sync::Mutex<(Vec<PathProblem>, u64)>,
    /// Files the scans read and hashed since the pass began.
    files_read: u64,
}

/// Where an engine reads the time its conflict copies are named after.
pub type Clock = Box<dyn Fn() -> plan::UtcTime + Send + Sync>;

/// Takes the state dir's lock (`engine.lock`, holding the owner's pid), or says who holds it.
fn lock_state(state_dir: &Path, root: &Path) -> Result<File, SyncError> {
    use std::io::{Seek, Write};
    let path = state_dir.join("engine.lock");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| SyncError::Local(format!("opening '{}': {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            return Err(SyncError::Local(format!(
                "another cairn process{} is already syncing '{}'; stop it first (`cairn sync stop`)",
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                },
                root.display()
            )));
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(SyncError::Local(format!(
                "locking '{}': {e}",
                path.display()
            )));
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// Stores nothing: hashing files to find their blocks, without keeping the data.
struct HashOnly;

impl BlockStore for HashOnly {
    fn has(&self, _id: &BlockId) -> cairn_store::Result<bool> {
        Ok(false)
    }
    fn put_many(&self, blocks: &[&[u8]]) -> cairn_store::Result<Vec<Put>> {
        use rayon::prelude::*;
        Ok(blocks
            .par_iter()
            .map(|b| Put {
                id: BlockId::of(b),
                size: b.len() as u64,
                new: false,
                stored_size: 0,
            })
            .collect())
    }
    fn get(&self, id: &BlockId) -> cairn_store::Result<Vec<u8>> {
        Err(cairn_store::Error::BlockMissing(*id))
    }
    fn delete(&self, _id: &BlockId) -> cairn_store::Result<bool> {
        Ok(false)
    }
    fn list(&self) -> cairn_store::Result<Vec<BlockId>> {
        Ok(Vec::new())
    }
    fn sync(&self) -> cairn_store::Result<()> {
        Ok(())
    }
}

/// The content identity of a file: BLAKE3 over its block list (so metadata does not count).
pub fn content_of(file: &FileNode) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cairn file content v1");
    for block in file.blocks() {
        hasher.update(block.id.as_bytes());
        hasher.update(&block.len.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

fn dir_entry_value() -> Entry {
    Entry {
        kind: Kind::Dir,
        content: [0; 32],
        node: NodeId::from_bytes([0; 32]),
        size: 0,
        mode: plan::DIR_MODE_DEFAULT,
        mtime_ns: 0,
    }
}

impl Engine {
    /// Opens (creating) the state of the folder.
    ///
    /// # Errors
    /// The folder is not a directory; the state dir cannot be created or read.
    pub fn open(
        options: EngineOptions,
        events: UnboundedSender<Event>,
    ) -> Result<Engine, SyncError> {
        let meta = fs::metadata(&options.root).map_err(|e| {
            SyncError::Local(format!(
                "the folder '{}' cannot be used: {e}",
                options.root.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(SyncError::Local(format!(
                "'{}' is not a directory",
                options.root.display()
            )));
        }
        // Private: it lists the folder's file names and hashes, and holds the control socket.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&options.state_dir)
            .map_err(|e| {
                SyncError::Local(format!("creating '{}': {e}", options.state_dir.display()))
            })?;
        let lock = lock_state(&options.state_dir, &options.root)?;
        let (db, _) = StateDb::open(&options.state_dir).map_err(SyncError::Local)?;
        let db = Arc::new(db);
        let nodes = NodeDb::new(Arc::clone(&db));
        let state = match crate::state::import_legacy(&options.state_dir, &db, &nodes)
            .map_err(SyncError::Local)?
        {
            Some(state) => state,
            None => State::load(&db).map_err(SyncError::Local)?,
        };
        Ok(Engine {
            _lock: lock,
            ignores: Ignores::load(&options.root),
            options,
            nodes: Arc::new(nodes),
            db,
            state,
            events,
            conflict_copies: true,
            checkpoints: Some(CHECKPOINT_FIRST),
            clock: Box::new(crate::time::utc_now),
            scan_stamp: None,
            scan_unsettled: false,
            written: Vec::new(),
            problems: std::sync::Mutex::default(),
            files_read: 0,
        })
    }

    /// Binds the state to what it syncs (see [`crate::binding`]): the folder's directory, and
    /// the server folder with identity `folder_uid` (`GET /folders`; empty from a server that
    /// has none). A state made in another directory, or against another server folder, keeps
    /// nothing of its base ([`Engine::forget_base`]); a new state, or one saved before
    /// bindings, is bound from now on. Returns whether the base was forgotten.
    ///
    /// A sync daemon binds its engine before the first pass; a backup or a restore does not
    /// (neither takes the base for the server's past).
    ///
    /// # Errors
    /// The state cannot be saved.
    pub fn bind(&mut self, folder_uid: &str) -> Result<bool, SyncError> {
        let mut forgot = false;
        let mut save = false;
        if let Ok(stamp) = RootStamp::of(&self.options.root)
            && self.state.root.as_ref() != Some(&stamp)
        {
            match &self.state.root {
                Some(was) if !was.same_directory(&stamp) => {
                    self.forget_base(self.another_directory());
                    forgot = true;
                }
                // New, or the same directory at another path (it moved): recorded now, so a
                // later move finds it (`binding::adopt_moved`).
                _ => save = true,
            }
            self.state.root = Some(stamp);
        }
        if !folder_uid.is_empty() {
            match &self.state.folder_uid {
                Some(bound) if bound == folder_uid => {}
                Some(_) => {
                    if !forgot {
                        self.forget_base(
                            "this folder was last synced with another server folder (another server or user, or a folder deleted and made again); comparing it with this one from scratch: nothing is deleted on either side, and files that differ keep both versions".to_owned(),
                        );
                    }
                    forgot = true;
                }
                None => save = true,
            }
            self.state.folder_uid = Some(folder_uid.to_owned());
        }
        // A forgotten base is saved by the next pass, with the binding, in one transaction:
        // saved alone, the binding would vouch for the old base after a crash.
        if save && !forgot {
            self.state.save(&self.db).map_err(SyncError::Local)?;
        }
        Ok(forgot)
    }

    fn another_directory(&self) -> String {
        format!(
            "'{}' is not the directory this folder was last synced in (it was deleted and made again, or a drive is not mounted there); comparing it with the server from scratch: nothing is deleted on either side, and files that differ keep both versions",
            self.options.root.display()
        )
    }

    /// Before each pass of a bound engine (see [`Engine::bind`]): the folder must be there, and
    /// be the directory the state was synced in. A folder that went away (an unmounted drive,
    /// a removed directory) fails the pass, and one made anew at the path (or the empty mount
    /// point under an unmounted drive) is compared from scratch, as at start: without this a
    /// running daemon took either for the user deleting every file.
    fn check_root(&mut self) -> Result<(), SyncError> {
        let Some(was) = &self.state.root else {
            return Ok(());
        };
        let stamp = RootStamp::of(&self.options.root).map_err(|e| {
            SyncError::Local(format!(
                "cannot read the folder '{}': {e}; is it there, and is its drive mounted?",
                self.options.root.display()
            ))
        })?;
        if !was.same_directory(&stamp) {
            self.forget_base(self.another_directory());
            // Saved with the base the next pass makes, in one transaction (as in `bind`).
            self.state.root = Some(stamp);
        }
        Ok(())
    }

    /// Drops the merge base and the last-seen remote tree, and says why: the next pass compares
    /// the local folder and the server as on a first sync. A base that belongs to another pair
    /// of trees would turn every path one side lacks into a deletion on the other; without one,
    /// nothing is deleted on either side, and a path whose two sides differ keeps both (the
    /// server's version wins the path, the local one is kept as a conflict copy). The scan and
    /// node caches stay: they describe content, which is still true.
    pub fn forget_base(&mut self, why: String) {
        self.state.base = Arc::default();
        self.state.remote = Arc::clone(&self.state.base);
        self.state.remote_seq = 0;
        self.state.remote_root = None;
        tracing::warn!("{why}");
        self.emit(Event::Warning { message: why });
    }

    /// Saves the state (after the nodes it references), off the async threads.
    async fn save_state(&mut self) -> Result<(), SyncError> {
        let state = std::mem::take(&mut self.state);
        let nodes = Arc::clone(&self.nodes);
        let db = Arc::clone(&self.db);
        let task_db = Arc::clone(&db);
        let joined = tokio::task::spawn_blocking(move || {
            let mut state = state;
            let saved = nodes
                .sync()
                .map_err(|e| e.to_string())
                .and_then(|()| state.save(&task_db));
            (state, saved)
        })
        .await;
        match joined {
            Ok((state, saved)) => {
                self.state = state;
                saved.map_err(SyncError::Local)
            }
            Err(e) => {
                // The state went with the task: continue from what the database holds (one
                // transaction, so the last complete save), as after a crash.
                self.state = State::load(&db).map_err(SyncError::Local)?;
                Err(SyncError::Local(format!("saving the sync state: {e}")))
            }
        }
    }

    /// Replaces the wall clock that names conflict copies (a simulation gives every run the
    /// same names). Nothing else in a pass reads the time to decide anything.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Whether a local file that loses an edit conflict is kept as a copy beside the path (the
    /// default) or only in the server's version history (see [`plan::PlanInput`]).
    pub fn set_conflict_copies(&mut self, copies: bool) {
        self.conflict_copies = copies;
    }

    /// When a long upload first commits the files it has finished, before its end (then again
    /// after a quarter of the time it has run, and so on; [`CHECKPOINT_FIRST`] by default).
    /// Such a commit holds new and changed files only (deletions, renames and kept conflict
    /// losers wait for the pass's own commit), so other devices get them early and an
    /// interrupted upload keeps them. `None` commits only at the end of the upload.
    pub fn set_checkpoints(&mut self, first: Option<Duration>) {
        self.checkpoints = first;
    }

    fn emit(&self, event: Event) {
        if let Event::Problem { path, message } = &event {
            let mut problems = self
                .problems
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if problems.0.len() < PROBLEMS_KEPT {
                problems.0.push(PathProblem {
                    path: path.clone(),
                    message: message.clone(),
                });
            }
            problems.1 += 1;
        }
        let _ = self.events.send(event);
    }

    /// The problems reported since the last call (the pass's, when called at its start and end).
    fn take_problems(&self) -> (Vec<PathProblem>, u64) {
        std::mem::take(
            &mut *self
                .problems
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// One full sync pass (see the module doc). `remote` must be connected and authenticated.
    ///
    /// # Errors
    /// [`SyncError`]; the state is saved only after a pass that completed its commit, so a
    /// failed pass is simply repeated.
    pub async fn pass(&mut self, remote: &Remote) -> Result<PassSummary, SyncError> {
        let started = std::time::Instant::now();
        self.take_problems();
        self.files_read = 0;
        let mut result = self.pass_inner(remote).await;
        let (kept, count) = self.take_problems();
        if let Ok(summary) = &mut result {
            summary.problem_paths = kept;
            summary.problem_count = count;
            summary.files_read = std::mem::take(&mut self.files_read);
        }
        match &result {
            Ok(s) => tracing::debug!(
                seq = s.seq,
                in_sync = s.in_sync,
                uploaded = s.uploaded,
                downloaded = s.downloaded,
                bytes_up = s.bytes_up,
                bytes_down = s.bytes_down,
                elapsed = ?started.elapsed(),
                "pass done"
            ),
            Err(err) => {
                tracing::debug!(error = %err, elapsed = ?started.elapsed(), "pass failed");
                // Not saved, but the next pass of this engine starts from the same cache.
                self.settle_scan_cache();
            }
        }
        result
    }

    async fn pass_inner(&mut self, remote: &Remote) -> Result<PassSummary, SyncError> {
        self.check_root()?;
        self.emit(Event::Phase("scanning"));
        let (scanned, unreadable) = self.scan().await?;
        let mut summary = PassSummary {
            problems: unreadable.len() as u64,
            ..PassSummary::default()
        };
        for _ in 0..STALE_RETRIES_MAX {
            let (seq, root) = remote.head().await?;
            if self.state.remote_root.is_some_and(|seen| {
                seq < self.state.remote_seq || (seq == self.state.remote_seq && root != seen)
            }) {
                // Commits this device saw are gone: the base holds files the server lost.
                self.forget_base(format!(
                    "the server's folder is at revision {seq}, not where this device left it at revision {} (was the server restored from an older backup?); comparing the folder with it from scratch: nothing is deleted on either side, and files the server lost are sent again",
                    self.state.remote_seq
                ));
            }
            // What the scan could not look at stands as the base has it: neither deleted nor
            // changed on this side.
            let local = if unreadable.is_empty() {
                std::borrow::Cow::Borrowed(&scanned)
            } else {
                let mut kept = scanned.clone();
                // The base as the plan sees it: without what the rules ignore.
                keep_unreadable(
                    &mut kept,
                    &self.ignores.filter(&self.state.base),
                    &unreadable,
                );
                std::borrow::Cow::Owned(kept)
            };
            let local = local.as_ref();
            if Some(root) == self.state.remote_root
                && *local == *self.state.base
                && (Arc::ptr_eq(&self.state.base, &self.state.remote)
                    || self.state.base == self.state.remote)
            {
                summary.seq = seq;
                summary.in_sync = unreadable.is_empty();
                return Ok(summary);
            }
            self.emit(Event::Phase("pulling"));
            let remote_tree = self.pull(remote, root).await?;
            self.state.remote_seq = seq;
            self.state.remote_root = Some(root);
            self.state.remote = Arc::new(remote_tree);
            let now = (self.clock)();
            // Ignored paths exist on neither side, so nothing touches them.
            let base = self.ignores.filter(&self.state.base);
            let remote_view = self.ignores.filter(&self.state.remote);
            let input = plan::PlanInput {
                base: &base,
                local,
                remote: &remote_view,
                device: &self.options.device,
                now_utc: now,
                conflict_copies: self.conflict_copies,
            };
            let mut planned = plan::plan(&input);
            let kept = planned
                .conflicts
                .iter()
                .filter(|c| c.kept.is_some())
                .count();
            if kept > KEPT_PER_COMMIT_MAX {
                // One commit carries every kept version; beyond the cap, copies keep them.
                planned = plan::plan(&plan::PlanInput {
                    conflict_copies: true,
                    ..input
                });
            }
            self.guard_mass_delete(&planned)?;
            for group in &planned.collisions {
                self.emit(Event::Collision {
                    paths: group.iter().map(ToString::to_string).collect(),
                });
            }
            let Some(committed) = self
                .commit_plan(remote, (seq, root), &planned, local, &mut summary)
                .await?
            else {
                continue;
            };
            let mut records = Vec::new();
            for conflict in &planned.conflicts {
                summary.conflicts += 1;
                let (reason, winner) = match conflict.reason {
                    plan::ConflictReason::BothEdited => ("both_edited", "remote"),
                    plan::ConflictReason::EditedVsDeleted => ("edited_vs_deleted", "edit"),
                    plan::ConflictReason::TypeClash => ("type_clash", "directory"),
                };
                records.push(crate::conflicts::ConflictRecord {
                    path: conflict.path.to_string(),
                    copy: conflict.copy.as_ref().map(ToString::to_string),
                    kept: conflict.kept.as_ref().map(|e| e.node.to_string()),
                    reason: reason.to_owned(),
                    winner: winner.to_owned(),
                    at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    seq: committed.0,
                });
                self.emit(Event::Conflict {
                    path: conflict.path.to_string(),
                    copy: conflict.copy.as_ref().map(ToString::to_string),
                    reason: reason.to_owned(),
                });
            }
            self.emit(Event::Phase("downloading"));
            let failed = self
                .apply_local(remote, &planned, local, &mut summary)
                .await?;
            let merged = Arc::new(planned.merged);
            let base = if failed.is_empty() {
                Arc::clone(&merged)
            } else {
                let mut base = Tree::clone(&merged);
                for path in &failed {
                    match self.state.base.get(path) {
                        Some(old) => base.insert(path.clone(), old.clone()),
                        None => base.remove(path),
                    };
                }
                Arc::new(base)
            };
            summary.problems += failed.len() as u64;
            self.settle_scan_cache();
            self.state.base = base;
            self.state.remote_seq = committed.0;
            self.state.remote_root = Some(committed.1);
            self.state.remote = merged;
            self.save_state().await?;
            crate::conflicts::add(&self.options.state_dir, &self.options.root, records)
                .map_err(SyncError::Local)?;
            summary.seq = committed.0;
            summary.in_sync = failed.is_empty()
                && unreadable.is_empty()
                && planned.local.is_empty()
                && planned.remote.is_empty()
                && planned.conflicts.is_empty();
            return Ok(summary);
        }
        Err(SyncError::Busy(STALE_RETRIES_MAX))
    }

    /// A one-way push: makes the folder's head exactly the local tree, as a new commit, without
    /// touching local files. Nothing is committed when the head already equals the local tree
    /// (`summary.in_sync` with the current seq). Used by `cairn backup`: deletions are committed
    /// too, and the folder's history keeps every earlier snapshot.
    ///
    /// # Errors
    /// As [`Engine::pass`].
    pub async fn backup(&mut self, remote: &Remote) -> Result<PassSummary, SyncError> {
        // A backup is one snapshot: no early commits.
        let checkpoints = self.checkpoints.take();
        let result = self.backup_inner(remote).await;
        self.checkpoints = checkpoints;
        result
    }

    async fn backup_inner(&mut self, remote: &Remote) -> Result<PassSummary, SyncError> {
        self.emit(Event::Phase("scanning"));
        // A snapshot holds what could be read; the rest was reported (the CLI fails the backup
        // as incomplete).
        let (mut local, _) = self.scan().await?;
        let mut trusted = true;
        let mut summary = PassSummary::default();
        for _ in 0..STALE_RETRIES_MAX {
            let (seq, root) = remote.head().await?;
            self.emit(Event::Phase("comparing"));
            let remote_tree = self.pull(remote, root).await?;
            self.state.remote_seq = seq;
            self.state.remote_root = Some(root);
            self.state.remote = Arc::new(remote_tree);
            // With the remote tree as the base, every difference is a local change: the plan
            // turns the remote tree into the local one, with no conflicts.
            let remote_view = self.ignores.filter(&self.state.remote);
            let planned = plan::plan(&plan::PlanInput {
                base: &remote_view,
                local: &local,
                remote: &remote_view,
                device: &self.options.device,
                now_utc: crate::time::utc_now(),
                conflict_copies: true,
            });
            // Unlike a sync, a backup uploads entries equal to the last-synced base when the
            // remote moved on (another device backed up there). The scan took those from its
            // cache without looking their nodes up; if the node cache lost one (a state
            // database changed from outside), the folder is scanned again trusting nothing,
            // which reads such files again, instead of failing on every backup.
            if trusted && self.lacks_base_nodes(&planned)? {
                self.emit(Event::Phase("scanning"));
                local = self.scan_trusting(false).await?.0;
                trusted = false;
                continue;
            }
            let Some(committed) = self
                .commit_plan(remote, (seq, root), &planned, &local, &mut summary)
                .await?
            else {
                continue;
            };
            let merged = Arc::new(planned.merged);
            self.state.base = Arc::clone(&merged);
            self.state.remote_seq = committed.0;
            self.state.remote_root = Some(committed.1);
            self.state.remote = merged;
            self.settle_scan_cache();
            self.save_state().await?;
            summary.seq = committed.0;
            summary.in_sync = true;
            return Ok(summary);
        }
        Err(SyncError::Busy(STALE_RETRIES_MAX))
    }

    /// Whether an upload of the plan is an entry equal to the last-synced base whose node is
    /// not in the node cache.
    fn lacks_base_nodes(&self, planned: &plan::Plan) -> Result<bool, SyncError> {
        let ids: Vec<BlockId> = planned
            .remote
            .iter()
            .filter_map(|action| match action {
                Action::Put { path, entry }
                    if entry.kind != Kind::Dir && self.state.base.get(path) == Some(entry) =>
                {
                    Some(BlockId::from(entry.node))
                }
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(false);
        }
        Ok(self.nodes.has_many(&ids)?.contains(&false))
    }

    /// Materialises the tree at `root` (a snapshot of the folder) in the local folder: every
    /// file of the snapshot is written (atomically, reusing local blocks where it can); local
    /// files the snapshot does not have stay, unless they stand where the snapshot needs a
    /// directory or a file. Nothing is committed.
    ///
    /// # Errors
    /// As [`Engine::pass`]. Paths that could not be written are counted in `problems`.
    pub async fn restore(
        &mut self,
        remote: &Remote,
        seq: u64,
        root: NodeId,
    ) -> Result<PassSummary, SyncError> {
        self.take_problems();
        self.emit(Event::Phase("scanning"));
        // A path the scan could not look at is not in `local`, so nothing is written over it
        // (see `unchanged_since_scan`).
        let (local, _) = self.scan().await?;
        self.emit(Event::Phase("reading the snapshot"));
        let snapshot = self.pull(remote, root).await?;
        self.state.remote_seq = seq;
        self.state.remote_root = Some(root);
        self.state.remote = Arc::new(snapshot);
        let mut target = Tree::clone(&self.state.remote);
        for (path, entry) in &local {
            let fits = path
                .ancestors()
                .all(|a| target.get(&a).is_none_or(|e| e.kind == Kind::Dir));
            if fits && !target.contains_key(path) {
                target.insert(path.clone(), entry.clone());
            }
        }
        // Only the "remote" side changed from the local base: the plan turns the local tree
        // into the target.
        let planned = plan::plan(&plan::PlanInput {
            base: &local,
            local: &local,
            remote: &target,
            device: &self.options.device,
            now_utc: crate::time::utc_now(),
            conflict_copies: true,
        });
        let mut summary = PassSummary::default();
        self.emit(Event::Phase("downloading"));
        let failed = self
            .apply_local(remote, &planned, &local, &mut summary)
            .await?;
        summary.problems = failed.len() as u64;
        summary.seq = seq;
        summary.in_sync = failed.is_empty();
        (summary.problem_paths, summary.problem_count) = self.take_problems();
        Ok(summary)
    }

    /// Pushes the plan's remote actions, if it has any, onto the head `(seq, root)`: the new
    /// head (the same one when there was nothing to push), or `None` when the head moved first.
    async fn commit_plan(
        &mut self,
        remote: &Remote,
        (seq, root): (u64, NodeId),
        planned: &plan::Plan,
        local: &Tree,
        summary: &mut PassSummary,
    ) -> Result<Option<(u64, NodeId)>, SyncError> {
        if planned.remote.is_empty() && planned.conflicts.iter().all(|c| c.kept.is_none()) {
            return Ok(Some((seq, root)));
        }
        self.emit(Event::Phase("uploading"));
        Ok(
            match self
                .push(remote, seq, root, planned, local, summary)
                .await?
            {
                (CommitResult::Committed(new_seq), new_root) => Some((new_seq, new_root)),
                (CommitResult::Stale(..), _) => None,
            },
        )
    }

    fn guard_mass_delete(&self, planned: &plan::Plan) -> Result<(), SyncError> {
        if self.options.allow_mass_delete {
            return Ok(());
        }
        let files = self
            .state
            .base
            .values()
            .filter(|e| e.kind != Kind::Dir)
            .count();
        let count = |actions: &[Action]| {
            actions
                .iter()
                .filter(|a| match a {
                    Action::Delete { path } => self
                        .state
                        .base
                        .get(path)
                        .is_some_and(|e| e.kind != Kind::Dir),
                    _ => false,
                })
                .count()
        };
        for (actions, side) in [
            (&planned.local, "locally"),
            (&planned.remote, "on the server"),
        ] {
            let deletes = count(actions);
            if deletes >= MASS_DELETE_FILES_MIN && deletes * 2 > files {
                return Err(SyncError::MassDelete {
                    deletes,
                    files,
                    side,
                });
            }
        }
        Ok(())
    }

    // ----- scan -----

    /// Scans the folder: its tree, and the paths it could not look at (see `keep_unreadable`).
    async fn scan(&mut self) -> Result<(Tree, Vec<String>), SyncError> {
        self.scan_trusting(true).await
    }

    /// Scans the folder; with `trust_base`, a cached entry equal to the last-synced base is
    /// taken without looking its node up (see `scan_folder`), else every cached entry's node is
    /// checked.
    async fn scan_trusting(&mut self, trust_base: bool) -> Result<(Tree, Vec<String>), SyncError> {
        let root = self.options.root.clone();
        let nodes = Arc::clone(&self.nodes);
        let mut cache = std::mem::take(&mut self.state.scan);
        self.ignores = Ignores::load(&root);
        let rules = self.ignores.fingerprint();
        if rules != self.state.ignore_rules {
            // The remote tree was kept without what the old rules ignored, and a pull only
            // applies what changed since: read it again whole (from the node cache; every
            // node was fetched when it arrived, ignored or not). Else a path the old rules
            // hid stayed out of it for good: a file deleted here meanwhile never came back,
            // and an older local version was sent over the server's newer one.
            if self.state.remote_root.is_some() {
                self.state.remote = Arc::new(Tree::new());
                self.state.remote_root = None;
            }
            self.state.ignore_rules = rules;
        }
        if let Some(problem) = &self.ignores.problem {
            self.emit(Event::Problem {
                path: crate::ignores::FILE_NAME.to_owned(),
                message: problem.clone(),
            });
        }
        let ignores = self.ignores.clone();
        let base = if trust_base {
            Arc::clone(&self.state.base)
        } else {
            Arc::new(Tree::new())
        };
        // The records of the scan before are checked against that scan's own stamp, whatever
        // came after it (a pass that found nothing to do, a rescan, a failed scan): else a
        // record made in its stamp's tick, never checked, would be checked against this newer
        // stamp and pass, and an edit in that tick would look like it for good.
        if self.scan_unsettled {
            self.state.scan = cache;
            self.settle_scan_cache();
            cache = std::mem::take(&mut self.state.scan);
        }
        // Before any file is looked at: see `settle_scan_cache`.
        self.scan_stamp = fs_now(&self.options.root, &self.options.state_dir);
        self.scan_unsettled = true;
        let (scanned, cache) = blocking(move || {
            let scanned = scan_folder(&root, nodes.as_ref(), &cache, &base, &ignores);
            Ok((scanned, cache))
        })
        .await?;
        let scanned = match scanned {
            Ok(scanned) => scanned,
            Err(message) => {
                // Nothing was looked at: the next scan starts from the same cache.
                self.state.scan = cache;
                return Err(SyncError::Local(message));
            }
        };
        self.state.scan = scanned.cache;
        self.files_read += scanned.read;
        for (path, message) in scanned.problems {
            self.emit(Event::Problem { path, message });
        }
        Ok((scanned.tree, scanned.unreadable))
    }

    // ----- pull -----

    /// Fetches the nodes of the tree at `root` that are not cached, then returns the flattened
    /// tree (the last-seen remote tree updated by the diff).
    ///
    /// The diff trusts the node cache: a cached node has its whole subtree cached, and the last
    /// remote tree's nodes are there. A cache that broke that (a state database changed from
    /// outside) fails the local part of the pull; it is then done again from the whole tree,
    /// every node fetched, instead of failing every pass.
    async fn pull(&mut self, remote: &Remote, root: NodeId) -> Result<Tree, SyncError> {
        match self.pull_with(remote, root, true).await {
            Err(SyncError::Local(message)) => {
                tracing::warn!(%message, "the node cache failed a pull; fetching the whole tree");
                self.pull_with(remote, root, false).await
            }
            other => other,
        }
    }

    /// [`Engine::pull`], trusting the node cache or not (then every node is fetched and the
    /// tree is read whole, not as a diff from the last one).
    async fn pull_with(
        &mut self,
        remote: &Remote,
        root: NodeId,
        trust_cache: bool,
    ) -> Result<Tree, SyncError> {
        let mut levels: Vec<Vec<(NodeId, Vec<u8>)>> = Vec::new();
        let mut frontier = vec![root];
        let mut seen = HashSet::new();
        while !frontier.is_empty() {
            let nodes = Arc::clone(&self.nodes);
            let ids: Vec<BlockId> = frontier.iter().map(|id| BlockId::from(*id)).collect();
            let present = if trust_cache {
                blocking(move || Ok(nodes.has_many(&ids)?)).await?
            } else {
                vec![false; ids.len()]
            };
            let missing: Vec<NodeId> = frontier
                .iter()
                .zip(present)
                .filter(|(_, has)| !has)
                .map(|(id, _)| *id)
                .collect();
            let mut level = Vec::new();
            let mut next = Vec::new();
            for batch in missing.chunks(IDS_PER_BATCH) {
                let fetched = remote.nodes(batch).await?;
                for (id, bytes) in batch.iter().zip(fetched) {
                    if NodeId::of(&bytes) != *id {
                        return Err(SyncError::Corrupt("tree node"));
                    }
                    let node = Node::decode(&bytes).map_err(|_| SyncError::Corrupt("tree node"))?;
                    match &node {
                        Node::DirLeaf(leaf) => next.extend(leaf.entries().iter().map(|e| e.child)),
                        Node::DirIndex(index) => {
                            next.extend(index.children().iter().map(|c| c.child))
                        }
                        Node::File(_) | Node::Symlink(_) => {}
                    }
                    level.push((*id, bytes));
                }
            }
            levels.push(level);
            frontier = next.into_iter().filter(|id| seen.insert(*id)).collect();
        }
        // Children before parents: a cached node always has its whole subtree cached.
        let nodes = Arc::clone(&self.nodes);
        // Until the diff is applied the flattened tree is gone, so no root may claim it: a pull
        // that fails here starts the next one from scratch instead of from a half-empty tree.
        let old_root = self.state.remote_root.take().filter(|_| trust_cache);
        let mut tree = Arc::unwrap_or_clone(std::mem::take(&mut self.state.remote));
        if !trust_cache {
            tree.clear();
        }
        blocking(move || {
            for level in levels.iter().rev() {
                let blocks: Vec<&[u8]> = level.iter().map(|(_, b)| b.as_slice()).collect();
                nodes.put_many(&blocks)?;
            }
            nodes.sync()?;
            // The diff and the entries read the nodes just fetched from memory, not back
            // from the database (two reads of each of 20,000 file nodes in a first sync).
            let view = Fetched {
                db: nodes.as_ref(),
                fetched: levels
                    .iter()
                    .flatten()
                    .map(|(id, bytes)| (*id, bytes.as_slice()))
                    .collect(),
            };
            let changes = diff(&view, old_root.as_ref(), Some(&root))
                .map_err(|e| SyncError::Local(format!("reading the remote tree: {e}")))?;
            for change in changes {
                match change.new {
                    Some(entry) => {
                        let value = entry_of(&view, &entry)?;
                        tree.insert(change.path, value);
                    }
                    None => {
                        tree.remove(&change.path);
                    }
                }
            }
            Ok(tree)
        })
        .await
    }

    // ----- push -----

    fn remote_edits(&self, planned: &plan::Plan) -> Result<Vec<PathEdit>, SyncError> {
        let mut edits = Vec::with_capacity(planned.remote.len());
        for action in &planned.remote {
            match action {
                Action::Put { path, entry } => {
                    let child = self.node_for(entry)?;
                    let (kind, size) = match entry.kind {
                        Kind::File => (EntryKind::File, entry.size),
                        Kind::Symlink => (EntryKind::Symlink, entry.size),
                        Kind::Dir => (EntryKind::Dir, 0),
                    };
                    edits.push((
                        path.names(),
                        Edit::Put(DirEntry {
                            name: path
                                .names()
                                .pop()
                                .ok_or_else(|| SyncError::Local("empty path".into()))?,
                            kind,
                            size,
                            mtime_ns: if kind == EntryKind::Dir {
                                0
                            } else {
                                entry.mtime_ns
                            },
                            mode: entry.mode,
                            child,
                        }),
                    ));
                }
                Action::Delete { path } => edits.push((path.names(), Edit::Remove)),
                Action::Rename { from, to, entry } => {
                    edits.push((from.names(), Edit::Remove));
                    let child = self.node_for(entry)?;
                    edits.push((
                        to.names(),
                        Edit::Put(DirEntry {
                            name: to
                                .names()
                                .pop()
                                .ok_or_else(|| SyncError::Local("empty path".into()))?,
                            kind: if entry.kind == Kind::Symlink {
                                EntryKind::Symlink
                            } else {
                                EntryKind::File
                            },
                            size: entry.size,
                            mtime_ns: entry.mtime_ns,
                            mode: entry.mode,
                            child,
                        }),
                    ));
                }
            }
        }
        Ok(edits)
    }

    /// The node a merged entry stands for: its own, or (when the merge took the mode from the
    /// other side) the same blocks re-encoded with the merged metadata. Directories get the
    /// empty directory (edits fill it).
    fn node_for(&self, entry: &Entry) -> Result<NodeId, SyncError> {
        match entry.kind {
            Kind::Dir => {
                let empty = chunk_dir(Vec::new())?;
                store_dir(self.nodes.as_ref(), &empty)?;
                Ok(empty.root)
            }
            Kind::Symlink => Ok(entry.node),
            Kind::File => match self.nodes.get_node(&entry.node)? {
                Node::File(file) if file.mode == entry.mode && file.mtime_ns == entry.mtime_ns => {
                    Ok(entry.node)
                }
                Node::File(file) => {
                    let node = FileNode::new(entry.mode, entry.mtime_ns, file.blocks().to_vec())?;
                    Ok(self.nodes.put_node(&Node::File(node))?.0)
                }
                _ => Err(SyncError::Local(format!(
                    "node {} is not a file",
                    entry.node
                ))),
            },
        }
    }

    async fn push(
        &mut self,
        remote: &Remote,
        seq: u64,
        root: NodeId,
        planned: &plan::Plan,
        local: &Tree,
        summary: &mut PassSummary,
    ) -> Result<(CommitResult, NodeId), SyncError> {
        let edits = self.remote_edits(planned)?;
        // (action, its edit), in action order.
        let early = self.early_puts(planned);
        let nodes = Arc::clone(&self.nodes);
        let (new_root, edits) = blocking(move || {
            let new_root = edit_many(nodes.as_ref(), &root, &edits)?;
            Ok((new_root, edits))
        })
        .await?;
        let early_index = |action: usize| early.binary_search_by_key(&action, |e| e.0).ok();
        // Data blocks of new file content, with where to read them locally, smallest files
        // first (so most files reach the server, and other devices, soonest) and each file's
        // blocks in order (so reads are sequential).
        let mut sources: Vec<(BlockId, RelPath, u64, u32)> = Vec::new();
        let mut listed: HashSet<BlockId> = HashSet::new();
        // Conflict losers kept in the history without a copy: still at their path locally.
        let kept: Vec<(&RelPath, &Entry)> = planned
            .conflicts
            .iter()
            .filter_map(|c| c.kept.as_ref().map(|e| (&c.path, e)))
            .collect();
        let mut puts: Vec<(usize, &RelPath, &Entry)> = planned
            .remote
            .iter()
            .enumerate()
            .filter_map(|(i, action)| match action {
                Action::Put { path, entry } => Some((i, path, entry)),
                _ => None,
            })
            .collect();
        puts.sort_by_key(|(_, _, entry)| entry.size);
        // The blocks of each put that may go in an early commit (by its place in `early`), if
        // it has a local source: a range of `early_blocks`.
        let mut early_blocks: Vec<BlockId> = Vec::new();
        let mut blocks_of: Vec<Option<std::ops::Range<usize>>> = vec![None; early.len()];
        let kept_puts = kept.iter().map(|(path, entry)| (usize::MAX, *path, *entry));
        for (action, path, entry) in puts.into_iter().chain(kept_puts) {
            if entry.kind == Kind::File {
                let Node::File(file) = self.nodes.get_node(&entry.node)? else {
                    continue;
                };
                let Some(source) = local_source(local, planned, path, entry) else {
                    continue;
                };
                if let Some(k) = early_index(action) {
                    let start = early_blocks.len();
                    early_blocks.extend(file.blocks().iter().map(|b| b.id));
                    blocks_of[k] = Some(start..early_blocks.len());
                }
                let mut offset = 0u64;
                for block in file.blocks() {
                    if listed.insert(block.id) {
                        sources.push((block.id, source.clone(), offset, block.len));
                    }
                    offset += u64::from(block.len);
                }
            } else if let Some(k) = early_index(action) {
                blocks_of[k] = Some(0..0);
            }
        }
        let ids: Vec<BlockId> = sources.iter().map(|s| s.0).collect();
        let mut lacking = Vec::new();
        for batch in ids.chunks(IDS_PER_BATCH) {
            lacking.extend(remote.lacking(batch).await?.into_iter().map(|i| batch[i]));
        }
        let lacking: HashSet<BlockId> = lacking.into_iter().collect();
        sources.retain(|s| lacking.contains(&s.0));
        drop((listed, ids, lacking));
        // An early commit may hold a put once the sources before its last lacking block are
        // stored.
        let position: HashMap<BlockId, usize> =
            sources.iter().enumerate().map(|(i, s)| (s.0, i)).collect();
        let mut ready: Vec<Early> = early
            .into_iter()
            .zip(blocks_of)
            .filter(|((_, edit), _)| *edit < edits.len())
            .filter_map(|((action, edit), blocks)| {
                let blocks = &early_blocks[blocks?];
                let after = blocks
                    .iter()
                    .filter_map(|id| position.get(id).map(|i| i + 1))
                    .max()
                    .unwrap_or(0);
                Some(Early {
                    action,
                    edit,
                    after,
                })
            })
            .collect();
        drop((early_blocks, position));
        ready.sort_by_key(|e| (e.after, e.action));
        // The server checks a tree only when it is committed, so its nodes travel beside the
        // file blocks instead of after them.
        let mut roots = vec![new_root];
        roots.extend(kept.iter().map(|(_, e)| e.node));
        let (stored, watermark) = watch::channel(0usize);
        let upload_end = sources.len();
        let ((), (), (seq, early_done)) = tokio::try_join!(
            self.upload_blocks(remote, sources, &stored, summary),
            self.upload_nodes(remote, roots),
            self.checkpoint(
                remote,
                (seq, root),
                (ready, &planned.remote, &edits),
                watermark,
                upload_end
            ),
        )?;
        let kept_versions: Vec<KeptVersion> = kept
            .iter()
            .map(|(path, entry)| KeptVersion {
                path: path.to_string(),
                node: entry.node,
            })
            .collect();
        let result = remote.commit_keeping(seq, new_root, &kept_versions).await?;
        summary.uploaded += early_done.len() as u64;
        if let CommitResult::Committed(_) = result {
            for (i, action) in planned.remote.iter().enumerate() {
                let (path, what) = match action {
                    Action::Put { path, entry } if entry.kind != Kind::Dir => {
                        if early_done.contains(&i) {
                            continue;
                        }
                        summary.uploaded += 1;
                        (path, "uploaded")
                    }
                    Action::Delete { path } => {
                        summary.deleted_remote += 1;
                        (path, "deleted remotely")
                    }
                    _ => continue,
                };
                self.emit(Event::File {
                    path: path.to_string(),
                    what,
                });
            }
        }
        Ok((result, new_root))
    }

    /// The puts of `planned.remote` that an early commit may hold, as (action, its place in
    /// [`Engine::remote_edits`] of the same plan) in action order: files and symlinks whose
    /// path, and every parent of it, the remote tree does not hold as the other kind (a
    /// directory becoming a file, or the reverse, waits for the pass's own commit). Empty
    /// when early commits are off.
    fn early_puts(&self, planned: &plan::Plan) -> Vec<(usize, usize)> {
        let mut early = Vec::new();
        if self.checkpoints.is_none() {
            return early;
        }
        let remote = &self.state.remote;
        let mut at = 0usize;
        for (i, action) in planned.remote.iter().enumerate() {
            let this = at;
            at += match action {
                Action::Rename { .. } => 2,
                Action::Put { .. } | Action::Delete { .. } => 1,
            };
            let Action::Put { path, entry } = action else {
                continue;
            };
            let fits = entry.kind != Kind::Dir
                && remote.get(path).is_none_or(|e| e.kind != Kind::Dir)
                && path
                    .ancestors()
                    .all(|a| remote.get(&a).is_none_or(|e| e.kind == Kind::Dir));
            if fits {
                early.push((i, this));
            }
        }
        early
    }

    /// Early commits of a long upload (see [`Engine::set_checkpoints`]): once the time has
    /// come and more files are whole on the server (`stored` counts the upload's leading
    /// sources stored), their puts are applied to the last committed tree, its nodes sent,
    /// and the result committed on the last seq. Ends when the upload's last source is
    /// stored, or at a moved head (the pass's own commit then finds it too); returns the seq
    /// to commit on and the actions committed.
    async fn checkpoint(
        &self,
        remote: &Remote,
        (mut seq, mut root): (u64, NodeId),
        (ready, actions, all_edits): (Vec<Early>, &[Action], &[PathEdit]),
        mut stored: watch::Receiver<usize>,
        end: usize,
    ) -> Result<(u64, HashSet<usize>), SyncError> {
        let mut done = HashSet::new();
        let Some(first) = self.checkpoints else {
            return Ok((seq, done));
        };
        let began = Instant::now();
        let mut due = began + first;
        let mut taken = 0usize;
        while taken < ready.len() {
            // Wait for the time, then for more whole files; stop when the upload is over.
            let mut upto;
            loop {
                upto = *stored.borrow_and_update();
                if upto >= end {
                    return Ok((seq, done));
                }
                let more = ready[taken..].partition_point(|e| e.after <= upto);
                if more > 0 && Instant::now() >= due {
                    break;
                }
                tokio::select! {
                    changed = stored.changed() => {
                        if changed.is_err() {
                            return Ok((seq, done));
                        }
                    }
                    () = tokio::time::sleep_until(due.into()), if Instant::now() < due => {}
                }
            }
            let count = ready[taken..].partition_point(|e| e.after <= upto);
            let batch = &ready[taken..taken + count];
            // Each `e.edit` is in range: `push` keeps only those.
            let edits: Vec<_> = batch.iter().map(|e| all_edits[e.edit].clone()).collect();
            let nodes = Arc::clone(&self.nodes);
            let base = root;
            let partial = blocking(move || Ok(edit_many(nodes.as_ref(), &base, &edits)?)).await?;
            self.upload_nodes(remote, vec![partial]).await?;
            match remote.checkpoint(seq, partial).await? {
                CommitResult::Committed(new_seq) => {
                    tracing::debug!(seq = new_seq, files = count, "early commit");
                    seq = new_seq;
                    root = partial;
                    for early in batch {
                        done.insert(early.action);
                        if let Some(Action::Put { path, .. }) = actions.get(early.action) {
                            self.emit(Event::File {
                                path: path.to_string(),
                                what: "uploaded",
                            });
                        }
                    }
                    taken += count;
                }
                CommitResult::Stale(..) => return Ok((seq, done)),
            }
            due = Instant::now() + first.max(began.elapsed() / 4);
        }
        Ok((seq, done))
    }

    /// Sends the tree nodes the server lacks under `roots`: found top-down (a subtree the
    /// server has is not descended into), sent bottom-up, a level's batches several at a time.
    /// A level goes only once the one below it is stored, so an interrupted upload never
    /// leaves a directory node without its children (the next pass would not descend into
    /// it). The ids the server computed must be the nodes' own, else the node cache is damaged.
    async fn upload_nodes(&self, remote: &Remote, roots: Vec<NodeId>) -> Result<(), SyncError> {
        let mut levels: Vec<Vec<NodeId>> = Vec::new();
        let mut seen: HashSet<NodeId> = roots.iter().copied().collect();
        let mut frontier = roots;
        while !frontier.is_empty() {
            let ids: Vec<BlockId> = frontier.iter().map(|id| BlockId::from(*id)).collect();
            let mut missing = Vec::new();
            for batch in ids.chunks(IDS_PER_BATCH) {
                missing.extend(
                    remote
                        .lacking_nodes(batch)
                        .await?
                        .into_iter()
                        .map(|i| NodeId::from(batch[i])),
                );
            }
            let mut next = Vec::new();
            for id in &missing {
                match self.nodes.get_node(id)? {
                    Node::DirLeaf(leaf) => next.extend(leaf.entries().iter().map(|e| e.child)),
                    Node::DirIndex(index) => next.extend(index.children().iter().map(|c| c.child)),
                    Node::File(_) | Node::Symlink(_) => {}
                }
            }
            levels.push(missing);
            frontier = next.into_iter().filter(|id| seen.insert(*id)).collect();
        }
        let streams = remote.upload_streams(fetch::STREAMS);
        let mut in_flight: tokio::task::JoinSet<Result<(), SyncError>> =
            tokio::task::JoinSet::new();
        let settle = |answer: Option<Result<Result<(), SyncError>, tokio::task::JoinError>>| {
            answer.map_or(Ok(()), |a| {
                a.map_err(|e| SyncError::Local(e.to_string()))?
            })
        };
        for level in levels.iter().rev() {
            for batch in level.chunks(IDS_PER_BATCH) {
                let ids: Vec<BlockId> = batch.iter().map(|id| BlockId::from(*id)).collect();
                let blocks = ids
                    .iter()
                    .map(|id| self.nodes.get(id))
                    .collect::<Result<Vec<_>, _>>()?;
                while in_flight.len() >= streams {
                    settle(in_flight.join_next().await)?;
                }
                let remote = remote.clone();
                in_flight.spawn(async move {
                    let stored = remote.put_nodes(blocks).await?;
                    if stored != ids {
                        return Err(SyncError::Local(
                            "the local tree node cache is damaged (a node does not hash to its id); move the folder's sync state away to rebuild it".into(),
                        ));
                    }
                    Ok(())
                });
            }
            while let Some(answer) = in_flight.join_next().await {
                settle(Some(answer))?;
            }
        }
        Ok(())
    }

    /// Uploads the blocks at `sources` (id, path, offset, length), in batches of up to
    /// [`BYTES_PER_BATCH`] with several requests in flight: each batch is read off the async
    /// threads while the ones before it travel, and the ids the server computed are checked
    /// against the scan's.
    async fn upload_blocks(
        &self,
        remote: &Remote,
        sources: Vec<(BlockId, RelPath, u64, u32)>,
        stored: &watch::Sender<usize>,
        summary: &mut PassSummary,
    ) -> Result<(), SyncError> {
        let total: u64 = sources.iter().map(|s| u64::from(s.3)).sum();
        let batch_max = remote.upload_batch_bytes(BYTES_PER_BATCH) as u64;
        let mut batches: Vec<Vec<(BlockId, RelPath, u64, u32)>> = Vec::new();
        let mut batch_bytes = 0u64;
        for source in sources {
            let starts_new = batches.last().is_none_or(|b| {
                batch_bytes + u64::from(source.3) > batch_max || b.len() >= IDS_PER_BATCH
            });
            if starts_new {
                batches.push(Vec::new());
                batch_bytes = 0;
            }
            batch_bytes += u64::from(source.3);
            if let Some(batch) = batches.last_mut() {
                batch.push(source);
            }
        }
        let streams = remote.upload_streams(fetch::STREAMS);
        type Answer = Result<(Range<usize>, u64, u64), SyncError>;
        let mut in_flight: tokio::task::JoinSet<Answer> = tokio::task::JoinSet::new();
        let mut done = 0u64;
        // Batches answered beyond the stored prefix, by start: the prefix grows over them.
        let mut ahead: BTreeMap<usize, usize> = BTreeMap::new();
        let mut settle = |answer: Option<Result<Answer, tokio::task::JoinError>>,
                          summary: &mut PassSummary|
         -> Result<(), SyncError> {
            let Some(answer) = answer else {
                return Ok(());
            };
            let (range, blocks, bytes) = answer.map_err(|e| SyncError::Local(e.to_string()))??;
            summary.blocks_up += blocks;
            summary.bytes_up += bytes;
            done += bytes;
            self.emit(Event::Progress {
                direction: "upload",
                done,
                total,
            });
            ahead.insert(range.start, range.end);
            let mut prefix = *stored.borrow();
            while let Some(end) = ahead.remove(&prefix) {
                prefix = end;
            }
            stored.send_replace(prefix);
            Ok(())
        };
        let mut next = 0usize;
        for batch in batches {
            let range = next..next + batch.len();
            next = range.end;
            let root = self.options.root.clone();
            // Not hashed here: the server hashes every block it gets and answers the ids, which
            // must be the ones the scan found (else the file changed since, and nothing is
            // committed from it).
            let (batch, data) = blocking(move || {
                let data = batch
                    .iter()
                    .map(|(_, path, offset, len)| read_block(&root, path, *offset, *len))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((batch, data))
            })
            .await?;
            while in_flight.len() >= streams {
                settle(in_flight.join_next().await, summary)?;
            }
            let remote = remote.clone();
            in_flight.spawn(async move {
                let bytes: usize = data.iter().map(Vec::len).sum();
                let stored = remote.put_blocks(data).await?;
                if let Some((_, path, ..)) = batch
                    .iter()
                    .zip(&stored)
                    .find(|((id, ..), got)| id != *got)
                    .map(|(source, _)| source)
                {
                    return Err(SyncError::Local(format!(
                        "'{path}' changed while it was being uploaded; it will be read again on the next pass"
                    )));
                }
                Ok((range, stored.len() as u64, bytes as u64))
            });
        }
        while let Some(answer) = in_flight.join_next().await {
            settle(Some(answer), summary)?;
        }
        Ok(())
    }

    // ----- apply locally -----

    /// Runs the plan's local actions; returns the paths left for the next pass.
    ///
    /// Downloads are pipelined ([`Prefetch`]) and finished in batches ([`Self::finish_staged`]):
    /// each file is written to its temp, then a batch's temps are fsynced together, renamed
    /// into place and their directories fsynced, which costs one round of parallel fsyncs per
    /// batch instead of two sequential fsyncs per file. Any other action finishes the batch
    /// first, so it always sees the files before it in place.
    async fn apply_local(
        &mut self,
        remote: &Remote,
        planned: &plan::Plan,
        local: &Tree,
        summary: &mut PassSummary,
    ) -> Result<Vec<RelPath>, SyncError> {
        let mut fetch = Prefetch::start(remote, &self.downloads_of(planned, local));
        let mut staged = Vec::new();
        let result = self
            .apply_actions(&mut fetch, &mut staged, planned, local, summary)
            .await;
        // A fatal error leaves staged files unfinished: their temps go.
        for s in staged {
            let _ = fs::remove_file(&s.temp);
        }
        summary.blocks_down += fetch.received_blocks;
        summary.bytes_down += fetch.received_bytes;
        result
    }

    /// Every block use the plan's downloads will ask [`Prefetch`] for, in order: the blocks of
    /// each file not found in the version of it the scan saw.
    fn downloads_of(&self, planned: &plan::Plan, local: &Tree) -> Vec<(BlockId, u32)> {
        let mut wanted = Vec::new();
        for action in &planned.local {
            let Action::Put { path, entry } = action else {
                continue;
            };
            if entry.kind != Kind::File {
                continue;
            }
            let current = local.get(path).filter(|e| e.kind == Kind::File);
            if current.is_some_and(|c| c.content == entry.content) {
                continue;
            }
            let Ok(Node::File(file)) = self.nodes.get_node(&entry.node) else {
                continue;
            };
            let have: HashSet<BlockId> = match current.map(|c| self.nodes.get_node(&c.node)) {
                Some(Ok(Node::File(old))) => old.blocks().iter().map(|b| b.id).collect(),
                _ => HashSet::new(),
            };
            wanted.extend(
                file.blocks()
                    .iter()
                    .filter(|b| !have.contains(&b.id))
                    .map(|b| (b.id, b.len)),
            );
        }
        wanted
    }

    async fn apply_actions(
        &mut self,
        fetch: &mut Prefetch,
        staged: &mut Vec<Staged>,
        planned: &plan::Plan,
        local: &Tree,
        summary: &mut PassSummary,
    ) -> Result<Vec<RelPath>, SyncError> {
        let mut failed = Vec::new();
        let total: u64 = planned
            .local
            .iter()
            .filter_map(|a| match a {
                Action::Put { entry, .. } if entry.kind == Kind::File => Some(entry.size),
                _ => None,
            })
            .sum();
        let mut done = 0u64;
        let mut staged_bytes = 0u64;
        // The local tree as this pass's own actions leave it, so a later action expects what an
        // earlier one did (a conflict loser renamed away, then the winner written in its place).
        let mut view = local.clone();
        for action in &planned.local {
            if let Action::Put { path, entry } = action
                && entry.kind == Kind::File
            {
                let result = self.stage_file(fetch, path, entry, &view).await;
                done += entry.size;
                self.emit(Event::Progress {
                    direction: "download",
                    done,
                    total,
                });
                match result {
                    Ok(Some(file)) => {
                        staged.push(file);
                        staged_bytes += entry.size;
                        if staged.len() >= STAGED_FILES_MAX || staged_bytes >= STAGED_BYTES_MAX {
                            self.finish_staged(staged, &mut view, &mut failed, summary)
                                .await?;
                            staged_bytes = 0;
                        }
                    }
                    // Only the mode changed, and it is set.
                    Ok(None) => {
                        view.insert(path.clone(), entry.clone());
                    }
                    Err(LocalFailure::Retry(path, message)) => {
                        self.emit(Event::Problem {
                            path: path.to_string(),
                            message,
                        });
                        failed.push(path);
                    }
                    Err(LocalFailure::Fatal(e)) => return Err(e),
                }
                continue;
            }
            // A new directory cannot be in the way of a staged file; anything else may be.
            if !matches!(action, Action::Put { entry, .. } if entry.kind == Kind::Dir) {
                self.finish_staged(staged, &mut view, &mut failed, summary)
                    .await?;
                staged_bytes = 0;
            }
            let local = &view;
            let outcome = match action {
                Action::Put { path, entry } => self
                    .put_local(path, entry, local)
                    .map(|wrote| (path, wrote.then_some("downloaded"))),
                Action::Delete { path } => self.delete_local(path, local).map(|()| {
                    summary.deleted_local += 1;
                    (path, Some("deleted locally"))
                }),
                Action::Rename { from, to, entry } => self
                    .rename_local(from, to, entry, local)
                    .map(|()| (to, Some("renamed"))),
            };
            if outcome.is_ok() {
                match action {
                    Action::Put { path, entry } => {
                        view.insert(path.clone(), entry.clone());
                    }
                    Action::Delete { path } => {
                        view.remove(path);
                    }
                    Action::Rename { from, to, entry } => {
                        view.remove(from);
                        view.insert(to.clone(), entry.clone());
                    }
                }
            }
            match outcome {
                Ok((path, Some(what))) => {
                    if what == "downloaded" {
                        summary.downloaded += 1;
                    }
                    self.emit(Event::File {
                        path: path.to_string(),
                        what,
                    });
                }
                Ok((_, None)) => {}
                Err(LocalFailure::Retry(path, message)) => {
                    self.emit(Event::Problem {
                        path: path.to_string(),
                        message,
                    });
                    // A rename that did not happen left its destination as it was too (a
                    // conflict copy not made locally must not look deleted locally next pass).
                    if let Action::Rename { from, to, .. } = action {
                        failed.extend([from.clone(), to.clone()]);
                    } else {
                        failed.push(path);
                    }
                }
                Err(LocalFailure::Fatal(e)) => return Err(e),
            }
        }
        self.finish_staged(staged, &mut view, &mut failed, summary)
            .await?;
        Ok(failed)
    }

    /// Makes the staged files durable and puts them in place: fsyncs the temps (in parallel),
    /// renames each over its target if the target is still what the scan saw (otherwise the
    /// path is left for the next pass), then fsyncs the directories of the renames.
    async fn finish_staged(
        &mut self,
        staged: &mut Vec<Staged>,
        view: &mut Tree,
        failed: &mut Vec<RelPath>,
        summary: &mut PassSummary,
    ) -> Result<(), SyncError> {
        if staged.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(staged);
        // The handles go to the fsync threads and are closed there.
        let outs: Vec<File> = batch.iter_mut().filter_map(|s| s.out.take()).collect();
        if outs.len() != batch.len() {
            *staged = batch;
            return Err(SyncError::Local(
                "a staged download lost its file handle".into(),
            ));
        }
        let synced = blocking(move || Ok(fsync_all(&outs))).await?;
        let mut dirs = HashSet::new();
        for (file, synced) in batch.into_iter().zip(synced) {
            let placed = synced.and_then(|()| {
                if !self.unchanged_since_scan(&file.path, view) {
                    return Err("changed during the sync; retried next pass".to_owned());
                }
                fs::rename(&file.temp, &file.full).map_err(|e| e.to_string())
            });
            match placed {
                Ok(()) => {
                    self.record(&file.path, &file.entry, file.entry.mtime_ns);
                    if let Some(dir) = file.full.parent() {
                        dirs.insert(dir.to_path_buf());
                    }
                    summary.downloaded += 1;
                    self.emit(Event::File {
                        path: file.path.to_string(),
                        what: "downloaded",
                    });
                    view.insert(file.path, file.entry);
                }
                Err(message) => {
                    let _ = fs::remove_file(&file.temp);
                    self.emit(Event::Problem {
                        path: file.path.to_string(),
                        message,
                    });
                    failed.push(file.path);
                }
            }
        }
        blocking(move || {
            // A directory that cannot be synced is not an error of any one file: the renames
            // are done, and the state is saved after them either way.
            let dirs: Vec<File> = dirs.iter().filter_map(|d| File::open(d).ok()).collect();
            let _ = fsync_all(&dirs);
            Ok(())
        })
        .await
    }

    /// Whether the path still is what the scan saw (`None`: absent).
    fn unchanged_since_scan(&self, path: &RelPath, local: &Tree) -> bool {
        let full = self.options.root.join(path.as_str());
        match (fs::symlink_metadata(&full), local.get(path)) {
            (Err(e), None) => e.kind() == std::io::ErrorKind::NotFound,
            (Ok(meta), Some(entry)) if entry.kind == Kind::Dir => meta.is_dir(),
            (Ok(meta), Some(_)) => self
                .state
                .scan
                .get(path.as_str())
                .is_some_and(|r| same_stat(r, &meta)),
            _ => false,
        }
    }

    /// Creates a directory or writes a symlink (files go through [`Self::stage_file`]).
    fn put_local(
        &mut self,
        path: &RelPath,
        entry: &Entry,
        local: &Tree,
    ) -> Result<bool, LocalFailure> {
        let root = self.options.root.clone();
        let full = confined(&root, path).map_err(|m| LocalFailure::Retry(path.clone(), m))?;
        let retry = |m: String| LocalFailure::Retry(path.clone(), m);
        match entry.kind {
            Kind::Dir => {
                match fs::symlink_metadata(&full) {
                    Ok(meta) if meta.is_dir() => {}
                    _ => fs::create_dir(&full)
                        .map_err(|e| retry(format!("creating the directory: {e}")))?,
                }
                Ok(false)
            }
            Kind::Symlink => {
                if !self.unchanged_since_scan(path, local) {
                    return Err(retry("changed during the sync; retried next pass".into()));
                }
                let Node::Symlink(link) = self
                    .nodes
                    .get_node(&entry.node)
                    .map_err(|e| retry(e.to_string()))?
                else {
                    return Err(retry("the remote entry is not a symlink".into()));
                };
                let target = std::ffi::OsStr::from_bytes_compat(link.target());
                let temp = temp_path(&full);
                std::os::unix::fs::symlink(target, &temp).map_err(|e| retry(e.to_string()))?;
                fs::rename(&temp, &full).map_err(|e| retry(e.to_string()))?;
                sync_parent(&full);
                self.record(path, entry, entry.mtime_ns);
                Ok(true)
            }
            Kind::File => Err(retry("a file is written by stage_file".into())),
        }
    }

    /// Writes a downloaded file to its temp, with its mode and mtime, ready for
    /// [`Self::finish_staged`]; `None` when only its mode changed (set here, in place).
    async fn stage_file(
        &mut self,
        fetch: &mut Prefetch,
        path: &RelPath,
        entry: &Entry,
        local: &Tree,
    ) -> Result<Option<Staged>, LocalFailure> {
        let retry = |m: String| LocalFailure::Retry(path.clone(), m);
        let full = confined(&self.options.root, path).map_err(retry)?;
        let current = local.get(path).filter(|c| c.kind == Kind::File);
        // A mode-only change of the same content: chmod.
        if current.is_some_and(|c| c.content == entry.content) {
            if !self.unchanged_since_scan(path, local) {
                return Err(retry("changed during the sync; retried next pass".into()));
            }
            fs::set_permissions(&full, fs::Permissions::from_mode(entry.mode))
                .map_err(|e| retry(e.to_string()))?;
            // Its content and modification time stay the local file's.
            let mtime = current.map_or(entry.mtime_ns, |c| c.mtime_ns);
            self.record(path, entry, mtime);
            return Ok(None);
        }
        let Node::File(file) = self
            .nodes
            .get_node(&entry.node)
            .map_err(|e| retry(e.to_string()))?
        else {
            return Err(retry("the remote entry is not a file".into()));
        };
        // Blocks the current local version has, to copy instead of download.
        let mut have: HashMap<BlockId, (u64, u32)> = HashMap::new();
        if let Some(current) = current
            && let Ok(Node::File(old)) = self.nodes.get_node(&current.node)
        {
            let mut offset = 0;
            for b in old.blocks() {
                have.entry(b.id).or_insert((offset, b.len));
                offset += u64::from(b.len);
            }
        }
        let temp = temp_path(&full);
        let written = match write_file(fetch, &temp, &full, &file, &have).await {
            Ok(out) => set_meta(&out, entry).map(|()| out).map_err(retry),
            Err(e) => Err(e.into_failure(path)),
        };
        match written {
            Ok(out) => Ok(Some(Staged {
                path: path.clone(),
                entry: entry.clone(),
                temp,
                full,
                out: Some(out),
            })),
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    fn delete_local(&mut self, path: &RelPath, local: &Tree) -> Result<(), LocalFailure> {
        let retry = |m: String| LocalFailure::Retry(path.clone(), m);
        let full = confined(&self.options.root, path).map_err(retry)?;
        if !self.unchanged_since_scan(path, local) {
            return Err(retry("changed during the sync; retried next pass".into()));
        }
        let result = match local.get(path).map(|e| e.kind) {
            Some(Kind::Dir) => remove_synced_dir(&full),
            Some(_) => fs::remove_file(&full).map_err(|e| format!("deleting: {e}")),
            None => Ok(()),
        };
        result.map_err(retry)?;
        self.state.scan.remove(path.as_str());
        sync_parent(&full);
        Ok(())
    }

    fn rename_local(
        &mut self,
        from: &RelPath,
        to: &RelPath,
        entry: &Entry,
        local: &Tree,
    ) -> Result<(), LocalFailure> {
        let retry = |m: String| LocalFailure::Retry(from.clone(), m);
        let src = confined(&self.options.root, from).map_err(retry)?;
        let dst = confined(&self.options.root, to).map_err(retry)?;
        if !self.unchanged_since_scan(from, local) || fs::symlink_metadata(&dst).is_ok() {
            return Err(retry("changed during the sync; retried next pass".into()));
        }
        fs::rename(&src, &dst).map_err(|e| retry(format!("renaming to '{to}': {e}")))?;
        if entry.kind == Kind::File {
            let _ = fs::set_permissions(&dst, fs::Permissions::from_mode(entry.mode));
        }
        self.state.scan.remove(from.as_str());
        // The file keeps the modification time it had at its old path.
        let mtime = local.get(from).map_or(entry.mtime_ns, |e| e.mtime_ns);
        self.record(to, entry, mtime);
        sync_parent(&dst);
        Ok(())
    }

    /// Keeps only the scan records a later change cannot hide behind, before the cache is
    /// saved (see [`cacheable`]): a record the scan made must have changed before the scan
    /// began, a record of a file this pass wrote must still match the file when looked at again
    /// after a fresh stamp. A dropped record costs one more read of that file next scan.
    ///
    /// A scan's records are checked once: checked again against the same stamp, the records
    /// of files this pass wrote (whose change time is after it) would be dropped, and each
    /// download read again by the next scan.
    fn settle_scan_cache(&mut self) {
        let written: HashSet<String> = std::mem::take(&mut self.written).into_iter().collect();
        let unsettled = std::mem::take(&mut self.scan_unsettled);
        if !unsettled && written.is_empty() {
            return;
        }
        let now = fs_now(&self.options.root, &self.options.state_dir);
        let (Some(before), Some(now)) = (self.scan_stamp, now) else {
            self.state.scan.clear();
            return;
        };
        let root = &self.options.root;
        self.state.scan.retain(|path, record| {
            if written.contains(path) {
                // Looked at after `now` was taken: any change since has a later change time.
                written_cacheable(record, now)
                    && fs::symlink_metadata(root.join(path)).is_ok_and(|m| same_stat(record, &m))
            } else if !unsettled {
                // Checked already, by the settle that ended the scan's pass.
                true
            } else {
                cacheable(record, before)
            }
        });
    }

    /// Records a path the engine wrote, so the next scan does not see it as a local change.
    ///
    /// The stat is taken after the write: a file someone rewrote in between (the user saving
    /// the file a download just replaced) is not recorded as the entry, unless it still has the
    /// entry's size and the modification time `mtime_ns` the engine left it with (a coarse
    /// filesystem may have cut it to its granularity). Unrecorded, it is read again by the next
    /// scan.
    fn record(&mut self, path: &RelPath, entry: &Entry, mtime_ns: i64) {
        self.written.push(path.as_str().to_owned());
        let full = self.options.root.join(path.as_str());
        if let Ok(meta) = fs::symlink_metadata(&full)
            && (!meta.is_file() || looks_written(&meta, entry.size, mtime_ns))
        {
            self.state
                .scan
                .insert(path.as_str().to_owned(), scan_record(&meta, entry));
        }
    }
}

/// A local action's failure: retried next pass, or fatal for the pass.
enum LocalFailure {
    Retry(RelPath, String),
    Fatal(SyncError),
}

enum WriteError {
    Local(String),
    Remote(RemoteError),
}

impl WriteError {
    fn into_failure(self, path: &RelPath) -> LocalFailure {
        match self {
            WriteError::Local(m) => LocalFailure::Retry(path.clone(), m),
            WriteError::Remote(e) => LocalFailure::Fatal(SyncError::Remote(e)),
        }
    }
}

/// A downloaded file written to its temp, waiting for its batch's fsync and its rename.
struct Staged {
    path: RelPath,
    entry: Entry,
    temp: PathBuf,
    full: PathBuf,
    /// The temp, still open until its batch is fsynced through it (no second open).
    out: Option<File>,
}

/// Writes `file` to `temp`: blocks the old version at `full` has (checked against their ids)
/// are copied, the others come from `fetch`. Not fsynced: its batch is. Returns the open temp.
async fn write_file(
    fetch: &mut Prefetch,
    temp: &Path,
    full: &Path,
    file: &FileNode,
    have: &HashMap<BlockId, (u64, u32)>,
) -> Result<File, WriteError> {
    // A new file, readable by its owner alone until its mode is set at the end: another
    // local user must not open a private file's temp while it fills. Never through a link.
    let out = {
        use std::os::unix::fs::OpenOptionsExt as _;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(temp)
    }
    .map_err(|e| WriteError::Local(e.to_string()))?;
    let old = if have.is_empty() {
        None
    } else {
        File::open(full).ok()
    };
    if let Some(old) = &old {
        // Read front to back: a larger readahead.
        let _ = rustix::fs::fadvise(old, 0, None, rustix::fs::Advice::Sequential);
    }
    // Blocks copied from the old version go through one buffer, not a new one each.
    let mut copy = Vec::new();
    let mut offset = 0u64;
    let mut writeback = Writeback::default();
    for b in file.blocks() {
        let copied = match (have.get(&b.id), old.as_ref()) {
            (Some((off, len)), Some(old)) => {
                copy.resize(*len as usize, 0);
                old.read_exact_at(&mut copy, *off).is_ok() && BlockId::of(&copy) == b.id
            }
            _ => false,
        };
        let fetched;
        let bytes = if copied {
            &copy
        } else {
            fetched = fetch.take(&b.id).await.map_err(WriteError::Remote)?;
            &fetched
        };
        out.write_all_at(bytes, offset)
            .map_err(|e| WriteError::Local(e.to_string()))?;
        offset += u64::from(b.len);
        writeback.wrote(&out, offset).await?;
    }
    // The temp was created empty and written front to back, so its length is `offset`
    // already (no truncate: each one costs a metadata update).
    writeback.finish().await?;
    Ok(out)
}

/// Writes a large download back to disk while it is still being written: every
/// [`WRITEBACK_WINDOW`] bytes, a `fdatasync` on another thread (one at a time). The kernel
/// would otherwise hold all of it in the page cache until the batch's fsync (its background
/// writeback starts only at a tenth of memory), which then writes hundreds of MiB while the
/// pass waits. A failed early sync fails the file: its handle shares the temp's open file, and
/// Linux reports a writeback error to an open file once, so the batch's fsync would not.
#[derive(Default)]
struct Writeback {
    synced_to: u64,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Writeback {
    async fn wrote(&mut self, out: &File, written: u64) -> Result<(), WriteError> {
        if written - self.synced_to < WRITEBACK_WINDOW
            || self.running.as_ref().is_some_and(|r| !r.is_finished())
        {
            return Ok(());
        }
        // Finished, if any: this does not wait.
        self.finish().await?;
        let handle = out.try_clone().map_err(durable)?;
        self.synced_to = written;
        self.running = Some(tokio::task::spawn_blocking(move || handle.sync_data()));
        Ok(())
    }

    /// Waits for the sync running, if any, and gives its result.
    async fn finish(&mut self) -> Result<(), WriteError> {
        match self.running.take() {
            Some(running) => running
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                .map_err(durable),
            None => Ok(()),
        }
    }
}

fn durable(e: std::io::Error) -> WriteError {
    WriteError::Local(format!("making it durable: {e}"))
}

/// Fsyncs every file (or directory) handle, several at a time: the filesystem commits
/// concurrent fsyncs together, so a batch costs about what a few sequential ones do.
fn fsync_all(files: &[File]) -> Vec<Result<(), String>> {
    let sync = |file: &File| {
        file.sync_all()
            .map_err(|e| format!("making it durable: {e}"))
    };
    if files.len() <= 1 {
        return files.iter().map(sync).collect();
    }
    let per_thread = files.len().div_ceil(FSYNC_THREADS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(sync).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| vec![Err("the fsync thread failed".to_owned()); per_thread])
            })
            .collect()
    })
}

trait OsStrCompat {
    fn from_bytes_compat(bytes: &[u8]) -> &std::ffi::OsStr;
}

impl OsStrCompat for std::ffi::OsStr {
    fn from_bytes_compat(bytes: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(bytes)
    }
}

/// Where the content of a file being uploaded can be read: its own path when the local side
/// has it with that content.
fn local_source(
    local: &Tree,
    _planned: &plan::Plan,
    path: &RelPath,
    entry: &Entry,
) -> Option<RelPath> {
    if local.get(path).is_some_and(|e| e.content == entry.content) {
        return Some(path.clone());
    }
    local
        .iter()
        .find(|(_, e)| e.kind == Kind::File && e.content == entry.content)
        .map(|(p, _)| p.clone())
}

fn read_block(root: &Path, path: &RelPath, offset: u64, len: u32) -> Result<Vec<u8>, SyncError> {
    let full = root.join(path.as_str());
    let file = File::open(&full).map_err(|e| SyncError::Local(format!("reading '{path}': {e}")))?;
    cairn_store::read::read_exact_at(&file, len as usize, offset).map_err(|_| {
        SyncError::Local(format!(
            "'{path}' changed while it was being uploaded; it will be read again on the next pass"
        ))
    })
}

/// The absolute path for `path` under `root`, after checking that every parent is a real
/// directory (never a symlink that could lead outside the folder).
pub(crate) fn confined(root: &Path, path: &RelPath) -> Result<PathBuf, String> {
    walk_confined(root, path, false)
}

/// The full path of `path` (a relative path as the server or the state gives it) under
/// `root`, creating the directories it needs one by one: `..`, absolute paths and a parent that
/// is a symlink or a file are refused, so nothing is written outside `root` (see [`confined`]).
/// For writers outside the engine (the desktop's restore and save-copy).
///
/// # Errors
/// An invalid path, a parent that is not a real directory, or a directory that cannot be made:
/// one line.
pub fn confined_creating(root: &Path, path: &str) -> Result<PathBuf, String> {
    let rel = RelPath::parse(path).map_err(|e| format!("'{path}': {e}"))?;
    walk_confined(root, &rel, true)
}

/// [`confined`], making a missing parent directory when `create`.
fn walk_confined(root: &Path, path: &RelPath, create: bool) -> Result<PathBuf, String> {
    let mut full = root.to_path_buf();
    let names: Vec<&str> = path.as_str().split('/').collect();
    for (i, name) in names.iter().enumerate() {
        full.push(name);
        if i + 1 == names.len() {
            break;
        }
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "'{}' is not a directory (a symlink or file); nothing is written through it",
                    full.display()
                ));
            }
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&full).map_err(|e| format!("'{}': {e}", full.display()))?;
            }
            Err(e) => return Err(format!("'{}': {e}", full.display())),
        }
    }
    Ok(full)
}

fn temp_path(full: &Path) -> PathBuf {
    let name = format!("{TEMP_PREFIX}{:016x}", rand_u64());
    full.parent()
        .map_or_else(|| PathBuf::from(&name), |p| p.join(&name))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn set_meta(file: &File, entry: &Entry) -> Result<(), String> {
    file.set_permissions(fs::Permissions::from_mode(entry.mode & 0o7777))
        .map_err(|e| format!("setting the mode: {e}"))?;
    let mtime = if entry.mtime_ns >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(entry.mtime_ns.unsigned_abs())
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_nanos(entry.mtime_ns.unsigned_abs())
    };
    file.set_modified(mtime)
        .map_err(|e| format!("setting the modification time: {e}"))
}

fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent()
        && let Ok(dir) = File::open(parent)
    {
        let _ = dir.sync_all();
    }
}

fn mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

fn ctime_ns(meta: &fs::Metadata) -> i64 {
    meta.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec())
}

/// How the stamp files [`fs_now`] makes (and removes at once) in a synced folder on another
/// filesystem than its state dir begin (never synced: they have the temp prefix; the watcher
/// ignores them).
pub const STAMP_FILE: &str = ".cairn-tmp-stamp";

/// The folder's filesystem's own "now": the change time of a stamp file rewritten in
/// `state_dir`, or in `root` when that is on another filesystem (or where the folder cannot be
/// written, in `state_dir` after all). Not the wall clock, which a skewed client (or
/// `faketime`) may set anywhere; and not the clock of another filesystem: the stamp must have
/// the clock and granularity of the files it is compared with. A folder on a filesystem with
/// 1 s or 2 s timestamps (FAT, HFS+, small ext4 inodes), or on a server whose clock runs
/// behind (NFS, SMB), compared with a nanosecond stamp of the config dir's filesystem, had its
/// records trusted when the file changed after the stamp within the same second.
fn fs_now(root: &Path, state_dir: &Path) -> Option<i64> {
    let in_state_dir = || {
        let mut file = File::create(state_dir.join("scan.stamp")).ok()?;
        std::io::Write::write_all(&mut file, b"1").ok()?;
        file.metadata().ok().map(|meta| ctime_ns(&meta))
    };
    // In the folder: a new file of a random name (never a link another user planted there),
    // removed at once.
    let in_root = || {
        let file = tempfile::Builder::new()
            .prefix(STAMP_FILE)
            .tempfile_in(root)
            .ok()?;
        file.as_file().metadata().ok().map(|meta| ctime_ns(&meta))
    };
    let device = |path: &Path| fs::metadata(path).map(|m| m.dev()).ok();
    match (device(root), device(state_dir)) {
        (Some(a), Some(b)) if a == b => in_state_dir(),
        _ => in_root().or_else(in_state_dir),
    }
}

/// Whether a scan record can be trusted, given a stamp of the filesystem's time taken before
/// the file was looked at. A file changed twice within one tick of the timestamp clock, with the
/// same size, looks unchanged ("racily clean", as git calls it); but when its last change came
/// before the stamp, and so before the look, any later change has a later change time.
fn cacheable(record: &ScanRecord, stamp_ns: i64) -> bool {
    // Only the change time: it cannot be set by hand, while an mtime may be anywhere.
    record.ctime_ns < stamp_ns
}

/// [`cacheable`] for a file this engine wrote. Its modification time is the entry's own, set
/// by the engine and older than the write (a download keeps the remote one): anyone writing the
/// file later moves it to the time of that write, so even a change within the stamp's own tick
/// cannot look like the record. Without this, a download that ends in the tick its pass settles
/// in (on a coarse clock, the usual case for the last one) was read and hashed again by the
/// next scan: 500 MiB for a big file.
fn written_cacheable(record: &ScanRecord, stamp_ns: i64) -> bool {
    cacheable(record, stamp_ns) || record.mtime_ns < record.ctime_ns
}

/// Whether a file has the size and modification time the engine left it with: that mtime, or
/// that mtime cut to a coarser granularity (at most 2 s, FAT's).
fn looks_written(meta: &fs::Metadata, size: u64, mtime: i64) -> bool {
    let behind = mtime.saturating_sub(mtime_ns(meta));
    meta.len() == size && (0..2_000_000_000).contains(&behind)
}

fn same_stat(record: &ScanRecord, meta: &fs::Metadata) -> bool {
    record.size == meta.len()
        && record.mtime_ns == mtime_ns(meta)
        && record.inode == meta.ino()
        && record.ctime_ns == ctime_ns(meta)
}

/// One edit of a commit: the path's names, and what to do there.
type PathEdit = (Vec<Name>, Edit);

/// A put an early commit may hold (see [`Engine::checkpoint`]).
struct Early {
    /// Its place in the plan's remote actions.
    action: usize,
    /// Its place in [`Engine::remote_edits`] of the plan.
    edit: usize,
    /// The upload's leading sources that must be stored first.
    after: usize,
}

/// The node cache with the nodes a pull just fetched (their ids checked) in front of it.
struct Fetched<'a> {
    db: &'a NodeDb,
    fetched: HashMap<NodeId, &'a [u8]>,
}

impl NodeStore for Fetched<'_> {
    fn get_node(&self, id: &NodeId) -> cairn_store::Result<Node> {
        match self.fetched.get(id) {
            Some(bytes) => Node::decode(bytes)
                .map_err(|source| cairn_store::Error::NodeDecode { id: *id, source }),
            None => self.db.get_node(id),
        }
    }

    fn put_node(&self, node: &Node) -> cairn_store::Result<(NodeId, Put)> {
        self.db.put_node(node)
    }
}

/// The planner's entry for a tree entry (reading file nodes for their content identity).
fn entry_of(nodes: &(impl NodeStore + ?Sized), entry: &DirEntry) -> Result<Entry, SyncError> {
    Ok(match entry.kind {
        EntryKind::Dir => dir_entry_value(),
        EntryKind::Symlink => Entry {
            kind: Kind::Symlink,
            content: *entry.child.as_bytes(),
            node: entry.child,
            size: entry.size,
            mode: entry.mode,
            mtime_ns: entry.mtime_ns,
        },
        EntryKind::File => {
            let Node::File(file) = nodes.get_node(&entry.child)? else {
                return Err(SyncError::Corrupt("file node"));
            };
            Entry {
                kind: Kind::File,
                content: content_of(&file),
                node: entry.child,
                size: file.size(),
                mode: file.mode,
                mtime_ns: file.mtime_ns,
            }
        }
    })
}

/// Removes a download temp file left by a run that died (the state lock keeps any live run of
/// this folder out of the scan): one unchanged for [`STALE_TEMP_SECS`], so a temp of another
/// tool or copy of Cairn that is still being written is never touched.
fn remove_if_stale(path: &Path, now: u64) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let changed = u64::try_from(meta.ctime()).unwrap_or(u64::MAX);
    if meta.is_file() && now.saturating_sub(changed) >= STALE_TEMP_SECS {
        let _ = fs::remove_file(path);
    }
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a scan found.
struct Scanned {
    tree: Tree,
    /// The scan cache for the next scan.
    cache: HashMap<String, ScanRecord>,
    /// (path, message) to report.
    problems: Vec<(String, String)>,
    /// Paths the scan could not look at (a directory it could not list, a file it could not
    /// read or stat): whatever they hold now is unknown, which is not the same as gone.
    unreadable: Vec<String>,
    /// Files read and hashed (the others came from the scan cache).
    read: u64,
}

/// Walks the folder; reuses cache records whose stat matches, hashes the rest.
///
/// A cached entry is used only while the node cache holds its node (a pass that uploads it
/// reads it from there). The node was stored before the record (see `Engine::save_state`), so
/// that is checked only for entries that differ from the merge base `base`: an entry equal to
/// its base entry is not uploaded, and a lookup per file was half of a no-change pass.
///
/// # Errors
/// The folder itself cannot be listed (gone, not mounted, no permission): one line.
fn scan_folder(
    root: &Path,
    nodes: &NodeDb,
    cache: &HashMap<String, ScanRecord>,
    base: &Tree,
    ignores: &Ignores,
) -> Result<Scanned, String> {
    let mut tree = Tree::new();
    let mut fresh = HashMap::with_capacity(cache.len());
    let mut problems = Vec::new();
    let mut unreadable = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    let cfg = ChunkConfig::DEFAULT;
    let mut to_hash: Vec<(RelPath, String, PathBuf, fs::Metadata)> = Vec::new();
    while let Some((dir, prefix)) = stack.pop() {
        let read = match fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if prefix.is_empty() => {
                return Err(format!(
                    "cannot read the folder '{}': {e}; is it there, and is its drive mounted?",
                    root.display()
                ));
            }
            Err(e) => {
                let dir_path = prefix.trim_end_matches('/').to_owned();
                problems.push((
                    dir_path.clone(),
                    format!("cannot read the directory: {e}; its files are left as they were"),
                ));
                unreadable.push(dir_path);
                continue;
            }
        };
        for item in read {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    // The listing broke off: what it did not list is unknown.
                    let dir_path = prefix.trim_end_matches('/').to_owned();
                    if dir_path.is_empty() {
                        return Err(format!("cannot read the folder '{}': {e}", root.display()));
                    }
                    problems.push((
                        dir_path.clone(),
                        format!("cannot read the directory: {e}; its files are left as they were"),
                    ));
                    unreadable.push(dir_path);
                    break;
                }
            };
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                problems.push((
                    format!("{prefix}{}", name.to_string_lossy()),
                    "the name is not UTF-8; it is not synced".into(),
                ));
                continue;
            };
            if name.starts_with(TEMP_PREFIX) {
                remove_if_stale(&item.path(), unix_now_s());
                continue;
            }
            let rel_text = format!("{prefix}{name}");
            let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
            if ignores.is_ignored(&rel_text, is_dir) {
                continue;
            }
            let Ok(rel) = RelPath::parse(&rel_text) else {
                problems.push((
                    rel_text,
                    "the name cannot be synced (reserved or too long)".into(),
                ));
                continue;
            };
            let full = item.path();
            // Relative to the open directory (not followed, like `symlink_metadata`): no walk
            // of the whole path per file.
            let meta = match item.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    problems.push((
                        rel_text.clone(),
                        format!("cannot read its metadata: {e}; left as it was"),
                    ));
                    unreadable.push(rel_text);
                    continue;
                }
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                tree.insert(rel, dir_entry_value());
                stack.push((full, format!("{rel_text}/")));
                continue;
            }
            if let Some(record) = cache.get(&rel_text)
                && same_stat(record, &meta)
                && let entry = record.entry.entry()
                && entry.mode == meta.permissions().mode() & 0o7777
                && (base.get(&rel) == Some(&entry)
                    || nodes.has(&BlockId::from(entry.node)).unwrap_or(false))
            {
                tree.insert(rel, entry);
                fresh.insert(rel_text, record.clone());
                continue;
            }
            let entry = if kind.is_symlink() {
                let target = match fs::read_link(&full) {
                    Ok(target) => target,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        problems.push((
                            rel_text.clone(),
                            format!("cannot read the symlink: {e}; left as it was"),
                        ));
                        unreadable.push(rel_text);
                        continue;
                    }
                };
                let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec();
                let len = bytes.len() as u64;
                let Ok(link) = SymlinkNode::new(bytes) else {
                    problems.push((rel_text, "the symlink target is too long".into()));
                    continue;
                };
                let (node, _) = match nodes.put_node(&Node::Symlink(link)) {
                    Ok(stored) => stored,
                    Err(e) => {
                        problems.push((rel_text.clone(), format!("{e}; retried next pass")));
                        unreadable.push(rel_text);
                        continue;
                    }
                };
                Entry {
                    kind: Kind::Symlink,
                    content: *node.as_bytes(),
                    node,
                    size: len,
                    mode: 0o777,
                    mtime_ns: 0,
                }
            } else if kind.is_file() {
                // Hashed after the walk, several files at once.
                to_hash.push((rel, rel_text, full, meta));
                continue;
            } else {
                problems.push((
                    rel_text,
                    "not a file, directory or symlink; not synced".into(),
                ));
                continue;
            };
            // Recorded under the stat taken before the link was read: a change since shows.
            fresh.insert(rel_text, scan_record(&meta, &entry));
            tree.insert(rel, entry);
        }
    }
    let read = to_hash.len() as u64;
    let hashed: Vec<_> = to_hash
        .into_par_iter()
        .map(|(rel, rel_text, full, _)| {
            let entry = hash_file(nodes, &full, &cfg);
            (rel, rel_text, entry)
        })
        .collect();
    if !hashed.is_empty() {
        // Between scans the daemon idles: no 8 MiB chunk buffer kept per core.
        rayon::broadcast(|_| cairn_store::ingest::release_buffer());
    }
    for (rel, rel_text, entry) in hashed {
        let (entry, meta) = match entry {
            Ok(Some(read)) => read,
            Ok(None) => continue,
            Err(message) => {
                problems.push((rel_text.clone(), message));
                unreadable.push(rel_text);
                continue;
            }
        };
        // Recorded under the stat the content was read under, not one taken now: an edit
        // made since the read must not look like the content read (it would be overwritten
        // as unchanged).
        fresh.insert(rel_text, scan_record(&meta, &entry));
        tree.insert(rel, entry);
    }
    if !unreadable.is_empty() {
        // What was read under a path the scan could not finish (a listing that broke off
        // part-way) must not vouch for the base's entries that stand in for it: with no record,
        // a download or delete there is refused as "changed during the sync".
        let under: Vec<String> = unreadable.iter().map(|u| format!("{u}/")).collect();
        fresh.retain(|path, _| {
            !unreadable
                .iter()
                .zip(&under)
                .any(|(u, prefix)| path == u || path.starts_with(prefix.as_str()))
        });
    }
    let _ = nodes.sync();
    Ok(Scanned {
        tree,
        cache: fresh,
        problems,
        unreadable,
        read,
    })
}

/// Removes a directory whose synced contents are gone (deleted on another device): what is
/// left in it is files the scan never syncs. Desktop metadata and stale download temps go with
/// it; anything else (a file an ignore rule keeps local, an editor's swap file) keeps it, and
/// the error says which file.
fn remove_synced_dir(full: &Path) -> Result<(), String> {
    match fs::remove_dir(full) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() != std::io::ErrorKind::DirectoryNotEmpty => {
            return Err(format!("deleting: {e}"));
        }
        Err(_) => {}
    }
    let left: Vec<(PathBuf, String, bool)> = fs::read_dir(full)
        .map_err(|e| format!("deleting: {e}"))?
        .flatten()
        .map(|item| {
            let name = item.file_name().to_string_lossy().into_owned();
            let file = item.file_type().is_ok_and(|t| t.is_file());
            (item.path(), name, file)
        })
        .collect();
    if let Some((_, name, _)) = left.iter().find(|(_, name, file)| {
        !*file || !(crate::ignores::is_disposable(name) || name.starts_with(TEMP_PREFIX))
    }) {
        return Err(format!(
            "deleted on the server, but it still holds '{name}', which is not synced (ignored); the directory is kept"
        ));
    }
    for (path, ..) in &left {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("deleting: {e}")),
        }
    }
    match fs::remove_dir(full) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("deleting: {e}")),
    }
}

/// Puts back into the scanned tree `local` what the base held at the paths the scan could not
/// look at (and under them): unknown is not deleted. Without this, a directory that could not
/// be listed or a file that could not be read was missing from the scan, and its deletion
/// went to the server and every other device.
fn keep_unreadable(local: &mut Tree, base: &Tree, unreadable: &[String]) {
    for path in unreadable {
        let Ok(rel) = RelPath::parse(path) else {
            continue;
        };
        for gone in subtree(local, &rel) {
            local.remove(&gone);
        }
        for path in subtree(base, &rel) {
            if let Some(entry) = base.get(&path) {
                local.insert(path, entry.clone());
            }
        }
    }
}

/// The paths of `tree` at `path` and under it.
fn subtree(tree: &Tree, path: &RelPath) -> Vec<RelPath> {
    let under = format!("{}/", path.as_str());
    // In string order, the paths under `path` follow it, after names that only start alike
    // ("a-b" sorts between "a" and "a/").
    tree.range(path.clone()..)
        .map(|(p, _)| p)
        .take_while(|p| {
            p.as_str() == path.as_str()
                || p.as_str() <= under.as_str()
                || p.as_str().starts_with(&under)
        })
        .filter(|p| p.as_str() == path.as_str() || p.as_str().starts_with(&under))
        .cloned()
        .collect()
}

/// What the scan cache keeps of a path read (or written) as `entry` under the stat `meta`.
fn scan_record(meta: &fs::Metadata, entry: &Entry) -> ScanRecord {
    ScanRecord {
        size: meta.len(),
        mtime_ns: mtime_ns(meta),
        inode: meta.ino(),
        ctime_ns: ctime_ns(meta),
        entry: SavedEntry::from(entry),
    }
}

/// Chunks and hashes one file and stores its node: its entry and the stat it was read under,
/// `None` when it vanished, or the problem to report.
fn hash_file(
    nodes: &NodeDb,
    full: &Path,
    cfg: &ChunkConfig,
) -> Result<Option<(Entry, fs::Metadata)>, String> {
    match cairn_store::ingest::ingest_file(full, &HashOnly, cfg) {
        Ok(ingested) => {
            let content = content_of(&ingested.node);
            let size = ingested.node.size();
            let (mode, mtime) = (ingested.node.mode, ingested.node.mtime_ns);
            let (node, _) = nodes
                .put_node(&Node::File(ingested.node))
                .map_err(|e| e.to_string())?;
            let entry = Entry {
                kind: Kind::File,
                content,
                node,
                size,
                mode,
                mtime_ns: mtime,
            };
            Ok(Some((entry, ingested.metadata)))
        }
        Err(e) if cairn_store::tree::is_vanished(&e) => Ok(None),
        Err(e) => Err(format!("{e}; retried next pass")),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Local(format!("internal: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ctime_ns: i64) -> ScanRecord {
        ScanRecord {
            size: 1,
            mtime_ns: 0,
            inode: 1,
            ctime_ns,
            entry: SavedEntry::from(&dir_entry_value()),
        }
    }

    #[test]
    fn a_download_temp_goes_only_once_it_is_stale() {
        let dir = tempfile::tempdir().expect("dir");
        let temp = dir.path().join(format!("{TEMP_PREFIX}0123456789abcdef"));
        fs::write(&temp, b"half a download").expect("write");
        let now = unix_now_s();
        remove_if_stale(&temp, now);
        assert!(temp.exists(), "a fresh temp may belong to a live writer");
        remove_if_stale(&temp, now + STALE_TEMP_SECS + 1);
        assert!(!temp.exists(), "an hour-old temp is from a run that died");
    }

    #[test]
    fn a_cached_entry_whose_node_is_gone_is_read_again_unless_it_is_the_base_entry() {
        let folder = tempfile::tempdir().expect("folder");
        fs::create_dir(folder.path().join("d")).expect("mkdir");
        fs::write(folder.path().join("d/f.txt"), b"the content").expect("write");
        let ignores = Ignores::load(folder.path());
        let node_cache = || {
            let dir = tempfile::tempdir().expect("state dir");
            let (db, _) = crate::db::StateDb::open(dir.path()).expect("state db");
            (dir, NodeDb::new(Arc::new(db)))
        };
        let (_first_dir, first) = node_cache();
        let scanned = scan_folder(
            folder.path(),
            &first,
            &HashMap::new(),
            &Tree::new(),
            &ignores,
        )
        .expect("scan");
        assert!(scanned.problems.is_empty(), "{:?}", scanned.problems);
        let (tree, cache) = (scanned.tree, scanned.cache);
        let path = RelPath::parse("d/f.txt").expect("path");
        let node = BlockId::from(tree[&path].node);
        assert!(first.has(&node).expect("has"));

        // A node cache without the node: an entry the base does not hold is read again, so
        // its node is there for the upload.
        let (_dir, empty) = node_cache();
        let again = scan_folder(folder.path(), &empty, &cache, &Tree::new(), &ignores)
            .expect("scan")
            .tree;
        assert_eq!(again, tree);
        assert!(empty.has(&node).expect("has"), "the file was read again");

        // An entry equal to the base's is taken from the scan cache as it is: nothing reads it.
        let (_dir, untouched) = node_cache();
        let same = scan_folder(folder.path(), &untouched, &cache, &tree, &ignores).expect("scan");
        assert_eq!(same.tree, tree);
        assert_eq!(same.cache, cache);
        assert!(!untouched.has(&node).expect("has"), "the file was not read");
    }

    #[test]
    fn what_the_scan_could_not_read_stands_as_the_base_has_it() {
        let file = |n: u8| Entry {
            kind: Kind::File,
            content: [n; 32],
            node: NodeId::from_bytes([n; 32]),
            size: u64::from(n),
            mode: 0o644,
            mtime_ns: 0,
        };
        let tree = |entries: &[(&str, Entry)]| -> Tree {
            entries
                .iter()
                .map(|(p, e)| (RelPath::parse(p).expect("path"), e.clone()))
                .collect()
        };
        let base = tree(&[
            ("d", dir_entry_value()),
            ("d/x", file(1)),
            ("d/y", file(2)),
            ("d-e", file(3)),
            ("da", file(4)),
            ("f", file(5)),
            ("g", file(6)),
        ]);
        // The scan listed d but not what is in it (a half-read listing), and could not read f.
        let mut local = tree(&[("d", dir_entry_value()), ("d/new", file(9)), ("g", file(7))]);
        keep_unreadable(&mut local, &base, &["d".to_owned(), "f".to_owned()]);
        assert_eq!(
            local,
            tree(&[
                ("d", dir_entry_value()),
                ("d/x", file(1)),
                ("d/y", file(2)),
                ("f", file(5)),
                ("g", file(7)),
            ]),
            "d's subtree and f as the base had them; names that only start alike untouched"
        );
    }

    #[test]
    fn a_hashed_file_is_recorded_under_the_stat_it_was_read_under() {
        let folder = tempfile::tempdir().expect("folder");
        let dir = tempfile::tempdir().expect("state dir");
        let (db, _) = crate::db::StateDb::open(dir.path()).expect("state db");
        let nodes = NodeDb::new(Arc::new(db));
        let path = folder.path().join("f.txt");
        fs::write(&path, b"read").expect("write");
        let (entry, read_under) = hash_file(&nodes, &path, &ChunkConfig::DEFAULT)
            .expect("hash")
            .expect("there");
        // An edit after the read (and before the scan records the file) must not look like
        // the content read.
        fs::write(&path, b"edited").expect("edit");
        let record = scan_record(&read_under, &entry);
        let now = fs::symlink_metadata(&path).expect("stat");
        assert!(!same_stat(&record, &now), "the edit shows");
        assert_eq!(record.size, 4);
    }

    #[test]
    fn only_records_changed_before_the_stamp_are_trusted() {
        assert!(cacheable(&record(5), 6));
        // Changed in the stamp's own tick: a second change in that tick would look the same.
        assert!(!cacheable(&record(6), 6));
        assert!(!cacheable(&record(7), 6));
    }

    #[test]
    fn a_written_file_with_its_old_mtime_is_trusted_even_in_the_stamps_tick() {
        let written = |mtime_ns, ctime_ns| ScanRecord {
            mtime_ns,
            ..record(ctime_ns)
        };
        // A download of a file last modified at 2, renamed into place at 6.
        assert!(written_cacheable(&written(2, 6), 6));
        assert!(written_cacheable(&written(2, 5), 6));
        // Written in the stamp's tick with a current mtime: a second write would look the same.
        assert!(!written_cacheable(&written(6, 6), 6));
        assert!(written_cacheable(&written(5, 5), 6));
    }

    #[test]
    fn the_stamp_orders_changes_before_and_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"one").expect("write");
        let before = ctime_ns(&fs::metadata(&file).expect("stat"));
        let state_dir = tempfile::tempdir().expect("tempdir");
        let stamp = fs_now(dir.path(), state_dir.path()).expect("stamp");
        assert!(before <= stamp, "a change before the stamp is not after it");
        fs::write(&file, b"two").expect("write");
        let after = ctime_ns(&fs::metadata(&file).expect("stat"));
        assert!(
            after >= stamp,
            "a change after the stamp has a change time at or after it"
        );
        // So a record of the file as first written is trusted only if that came in an earlier
        // tick, and a record made after the second write never is against this stamp.
        assert_eq!(cacheable(&record(before), stamp), before < stamp);
        assert!(!cacheable(&record(after), stamp));
    }

    #[test]
    fn the_stamp_is_taken_on_the_folders_own_filesystem() {
        use std::os::unix::fs::MetadataExt as _;
        let folder = tempfile::tempdir().expect("tempdir");
        let same = tempfile::tempdir().expect("tempdir");
        fs_now(folder.path(), same.path()).expect("stamp");
        assert!(same.path().join("scan.stamp").exists());
        let folder_ctime = ctime_ns(&fs::metadata(folder.path()).expect("stat"));
        fs_now(folder.path(), same.path()).expect("stamp");
        assert_eq!(
            ctime_ns(&fs::metadata(folder.path()).expect("stat")),
            folder_ctime,
            "nothing is written in a folder on the state dir's filesystem"
        );
        // tmpfs: another filesystem than the temp dir's on these machines.
        let other = tempfile::tempdir_in("/dev/shm").expect("a dir in /dev/shm");
        let dev = |p: &Path| fs::metadata(p).expect("stat").dev();
        assert_ne!(
            dev(other.path()),
            dev(same.path()),
            "/dev/shm is its own filesystem"
        );
        let before = fs::metadata(other.path()).expect("stat");
        let stamp = fs_now(other.path(), same.path()).expect("stamp");
        // Made and removed in the folder: the folder changed at the stamp's time, on its own
        // clock, and nothing is left behind.
        let after = fs::metadata(other.path()).expect("stat");
        assert!(ctime_ns(&after) >= stamp && ctime_ns(&before) <= stamp);
        assert_eq!(fs::read_dir(other.path()).expect("list").count(), 0);
        // A folder that cannot be written falls back to the state dir.
        let gone = other.path().join("gone");
        assert!(fs_now(&gone, same.path()).is_some());
    }

    #[test]
    fn confined_creating_makes_directories_but_never_leaves_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let full = confined_creating(root.path(), "a/b/c.txt").expect("inside");
        assert_eq!(full, root.path().join("a/b/c.txt"));
        assert!(root.path().join("a/b").is_dir());
        for bad in ["../x", "/etc/passwd", "a/../../x"] {
            assert!(confined_creating(root.path(), bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).expect("link");
        let err = confined_creating(root.path(), "link/new/x.txt").expect_err("through a link");
        assert!(err.contains("not a directory"), "{err}");
        assert_eq!(fs::read_dir(outside.path()).expect("list").count(), 0);
    }

    #[test]
    fn a_file_rewritten_after_the_engine_wrote_it_does_not_look_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"downloaded").expect("write");
        let mtime = 1_700_000_000_123_456_789;
        let at = std::time::UNIX_EPOCH + Duration::from_nanos(mtime as u64);
        File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(at))
            .expect("set mtime");
        let meta = fs::metadata(&file).expect("stat");
        assert!(looks_written(&meta, 10, mtime));
        // A coarse filesystem's cut of it (down, by less than 2 s) still does.
        assert!(looks_written(&meta, 10, mtime + 999_000_000));
        // Another size, or a later write's time, does not.
        assert!(!looks_written(&meta, 11, mtime));
        fs::write(&file, b"edited!!!!").expect("rewrite");
        let meta = fs::metadata(&file).expect("stat");
        assert!(!looks_written(&meta, 10, mtime));
    }
}
