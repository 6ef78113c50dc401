//! The one commit path: REST uploads and deletes (and later QUIC sync) change a folder only here.
//!
//! Changes to a folder are group-committed. A caller queues its change and takes the folder's
//! lock; whoever holds the lock takes every queued change (up to [`COMMIT_BATCH_LEN_MAX`]),
//! applies them to the tree in order (new nodes go to the block store, which is synced once),
//! then compare-and-swaps the folder head in one SQL transaction that records the commit, every
//! file row and version, and the quota. Each caller gets its own answer: a change that cannot
//! apply (a file where a directory is needed, over quota, deleting what is not there) fails
//! alone. A head moved by another instance makes the batch start over from the new head, up to
//! [`COMMIT_ATTEMPTS_MAX`] times. Measured: one commit per upload with a lock gave 90 small
//! uploads/s into one folder; see BENCHMARKS.md for the batched figure.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use cairn_protocol::api::{Change, Event};
use cairn_protocol::path::RelPath;
use cairn_store::edit::{Edit, edit, lookup};
use cairn_store::node::{DirEntry, EntryKind};
use cairn_store::{BlockId, BlockStore, NodeId, NodeStore};
use tokio::sync::oneshot;

use crate::api::error::ApiError;
use crate::api::{AppState, now_ms};
use crate::db::{self, CommitChange, CommitOutcome, CommitRecord, FileRow};
use crate::events::UserEvent;
use crate::limits::COMMIT_ATTEMPTS_MAX;
use crate::verify::{TreeError, new_objects, new_objects_keeping};

/// Changes in one group commit at most: 256, so one transaction stays short.
pub const COMMIT_BATCH_LEN_MAX: usize = 256;

/// A committed change.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The commit's sequence number.
    pub seq: i64,
    /// The file's index row after the change.
    pub file: FileRow,
}

/// Per-folder commit queues of this instance, keyed by (owner, folder name). An entry lives
/// while some caller has a change in it.
#[derive(Debug, Default)]
pub struct FolderLocks {
    queues: Mutex<HashMap<(i64, String), Arc<FolderQueue>>>,
}

impl FolderLocks {
    fn queue(&self, key: &(i64, String)) -> Arc<FolderQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(queues.entry(key.clone()).or_default())
    }

    fn release(&self, key: &(i64, String), queue: Arc<FolderQueue>) {
        drop(queue);
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if queues.get(key).is_some_and(|q| Arc::strong_count(q) == 1) {
            queues.remove(key);
        }
    }
}

#[derive(Debug, Default)]
struct FolderQueue {
    pending: Mutex<VecDeque<Pending>>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug)]
struct Pending {
    path: RelPath,
    entry: Option<DirEntry>,
    device: String,
    reply: oneshot::Sender<Result<Committed, ApiError>>,
}

/// Puts `entry` at `path` (`Some`) or removes the path (`None`) in the user's folder.
///
/// # Errors
/// [`ApiError::NotFound`] removing an absent path, [`ApiError::TooLarge`] over quota,
/// [`ApiError::Conflict`] when a parent on the path is a file or the head keeps moving.
pub async fn commit_path(
    state: &AppState,
    user_id: i64,
    folder_name: &str,
    path: &RelPath,
    entry: Option<DirEntry>,
    device: &str,
) -> Result<Committed, ApiError> {
    let key = (user_id, folder_name.to_owned());
    let queue = state.folder_locks.queue(&key);
    let (reply, mut answer) = oneshot::channel();
    let pending = Pending {
        path: path.clone(),
        entry,
        device: device.to_owned(),
        reply,
    };
    queue
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push_back(pending);
    let result = loop {
        let leader = Arc::clone(&queue.lock).lock_owned().await;
        match answer.try_recv() {
            Ok(result) => break result,
            Err(oneshot::error::TryRecvError::Closed) => {
                // Only a batch task that panicked drops a reply unanswered.
                break Err(ApiError::internal(
                    "the commit batch holding this change failed",
                ));
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let batch: Vec<Pending> = {
            let mut pending = queue.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let len = pending.len().min(COMMIT_BATCH_LEN_MAX);
            pending.drain(..len).collect()
        };
        // The batch runs on a task of its own, holding the folder's lock: when this caller is
        // dropped (its client went away and the server dropped the request), the other callers'
        // changes in the batch are still committed and answered. Run inline, they were dropped
        // with it, and their callers, finding no answer, led empty batches forever.
        let (task_state, folder) = (state.clone(), folder_name.to_owned());
        let run = tokio::spawn(async move {
            commit_batch(&task_state, user_id, &folder, batch).await;
            drop(leader);
        });
        if let Err(err) = run.await {
            break Err(ApiError::internal(err));
        }
    };
    state.folder_locks.release(&key, queue);
    result
}

/// Why one change of a batch was not applied.
#[derive(Debug, Clone)]
enum Rejection {
    NotFound,
    OverQuota,
    PathConflict(String),
}

impl Rejection {
    fn to_error(&self) -> ApiError {
        match self {
            Rejection::NotFound => ApiError::NotFound("file"),
            Rejection::OverQuota => ApiError::TooLarge(
                "quota_exceeded",
                "this change would exceed your storage quota; delete files or ask for more space"
                    .to_owned(),
            ),
            Rejection::PathConflict(message) => {
                ApiError::Conflict("path_conflict", message.clone())
            }
        }
    }
}

/// What applying a batch to the tree produced.
struct Applied {
    root: NodeId,
    /// Per change: its files delta and size delta, or why it was rejected.
    outcomes: Vec<Result<(i64, i64), Rejection>>,
}

/// Whether a change growing use by `delta` fits (pure). Changes that free space always fit.
fn admit(used: i64, quota: i64, delta: i64) -> bool {
    delta <= 0 || used.checked_add(delta).is_some_and(|total| total <= quota)
}

async fn commit_batch(state: &AppState, user_id: i64, folder_name: &str, batch: Vec<Pending>) {
    let reply_all = |batch: Vec<Pending>, error: &dyn Fn() -> ApiError| {
        for pending in batch {
            let _ = pending.reply.send(Err(error()));
        }
    };
    for attempt in 0..COMMIT_ATTEMPTS_MAX {
        if attempt > 0 {
            // Another instance moved the head: back off a random few ms so two instances
            // committing to one folder stop colliding.
            tokio::time::sleep(stale_backoff(attempt)).await;
        }
        let (folder, (used, quota)) = match read_head(state, user_id, folder_name).await {
            Ok(found) => found,
            Err(message) => return reply_all(batch, &|| ApiError::Internal(message.clone())),
        };
        let changes: Vec<(RelPath, Option<DirEntry>)> = batch
            .iter()
            .map(|p| (p.path.clone(), p.entry.clone()))
            .collect();
        let store = Arc::clone(&state.store);
        let base = folder.head_root.clone();
        let applied = tokio::task::spawn_blocking(move || {
            apply(store.as_ref(), &base, &changes, used, quota)
        })
        .await;
        let applied = match applied {
            Ok(Ok(applied)) => applied,
            Ok(Err(message)) => return reply_all(batch, &|| ApiError::Internal(message.clone())),
            Err(err) => {
                let message = err.to_string();
                return reply_all(batch, &|| ApiError::Internal(message.clone()));
            }
        };
        let hashes: Vec<String> = batch
            .iter()
            .map(|p| {
                p.entry
                    .as_ref()
                    .map(|e| e.child.to_string())
                    .unwrap_or_default()
            })
            .collect();
        let mut changes = Vec::new();
        let mut usage_delta = 0;
        for ((pending, outcome), hash) in batch.iter().zip(&applied.outcomes).zip(&hashes) {
            if let Ok((files_delta, size_delta)) = outcome {
                usage_delta += size_delta;
                changes.push(CommitChange {
                    path: pending.path.as_str(),
                    content: pending
                        .entry
                        .as_ref()
                        .map(|e| (i64::try_from(e.size).unwrap_or(i64::MAX), hash.as_str())),
                    device: &pending.device,
                    files_delta: *files_delta,
                });
            }
        }
        if changes.is_empty() {
            for (pending, outcome) in batch.into_iter().zip(applied.outcomes) {
                let error = outcome.err().map_or_else(
                    || ApiError::internal("change neither applied nor rejected"),
                    |r| r.to_error(),
                );
                let _ = pending.reply.send(Err(error));
            }
            return;
        }
        let objects = match new_objects(state, folder.id, applied.root, false).await {
            Ok(objects) => objects,
            Err(err) => {
                let message = err.to_string();
                return reply_all(batch, &|| ApiError::Internal(message.clone()));
            }
        };
        let new_root = applied.root.to_string();
        let device = batch[0].device.clone();
        let record = CommitRecord {
            folder_id: folder.id,
            owner_id: user_id,
            base_seq: folder.head_seq,
            new_root: &new_root,
            device: &device,
            now: now_ms(),
            changes: &changes,
            usage_delta,
            objects: &objects,
        };
        match db::commit(&state.db, &record).await {
            Ok(CommitOutcome::Done { seq, files }) => {
                state.metrics.commit(true);
                publish(state, user_id, folder_name, seq, &new_root, &files);
                let mut files = files.into_iter();
                for (pending, outcome) in batch.into_iter().zip(applied.outcomes) {
                    let result = match outcome {
                        Ok(_) => files
                            .next()
                            .map(|file| Committed { seq, file })
                            .ok_or_else(|| ApiError::internal("missing file row")),
                        Err(rejection) => Err(rejection.to_error()),
                    };
                    let _ = pending.reply.send(result);
                }
                return;
            }
            // Another instance moved the head or the use: start over from the new state.
            Ok(CommitOutcome::Stale | CommitOutcome::OverQuota) => state.metrics.commit(false),
            Err(err) => {
                let message = err.to_string();
                return reply_all(batch, &|| ApiError::Internal(message.clone()));
            }
        }
    }
    reply_all(batch, &|| {
        ApiError::Conflict(
            "busy",
            "the folder changed too often while committing; try again".to_owned(),
        )
    });
}

/// Whether a sync client's `blocks` may be stored as uploads to the folder that no commit has
/// taken up yet: `Ok(Err(reason))` when they would take the owner's uploads not yet committed
/// past their quota. Blocks a client never commits are kept until the garbage collector's grace
/// period ends; without this limit a client could fill the disk with them meanwhile. (A REST
/// upload checks the bytes it receives against the same limit as they arrive.)
///
/// # Errors
/// SQL errors.
pub async fn admit_upload<B: AsRef<[u8]>>(
    state: &AppState,
    owner_id: i64,
    folder_id: i64,
    blocks: &[B],
) -> Result<Result<(), String>, db::DbError> {
    let (pending, quota) = db::pending_uploads(&state.db, owner_id).await?;
    let len = |b: &B| i64::try_from(b.as_ref().len()).unwrap_or(i64::MAX);
    let mut bytes = blocks.iter().map(len).fold(0i64, i64::saturating_add);
    if pending.saturating_add(bytes) <= quota {
        return Ok(Ok(()));
    }
    // Near the limit, what the folder already has is not counted: sending it again costs
    // nothing (a client resending after a lost answer must not be refused for it).
    let ids: Vec<String> = blocks
        .iter()
        .map(|b| BlockId::of(b.as_ref()).to_string())
        .collect();
    let known = db::objects_state(&state.db, folder_id, &ids).await?;
    bytes = blocks
        .iter()
        .zip(&ids)
        .filter(|(_, id)| !known.contains_key(*id))
        .map(|(b, _)| len(b))
        .fold(0i64, i64::saturating_add);
    if pending.saturating_add(bytes) <= quota {
        return Ok(Ok(()));
    }
    Ok(Err(pending_refusal(pending, bytes, quota)))
}

/// Why `bytes` more uploads not yet committed are refused, over `pending` of `quota`: the same
/// words for QUIC and REST uploads.
pub fn pending_refusal(pending: i64, bytes: i64, quota: i64) -> String {
    format!(
        "uploads not yet committed would exceed your storage quota ({} + {} of {} bytes): \
         commit or free space, or ask for more; sending blocks the server already has costs \
         nothing, and uploads never committed are released after {} hours",
        pending.max(0),
        bytes,
        quota,
        crate::limits::GC_GRACE.as_secs() / 3600
    )
}

/// A random wait before commit attempt `attempt` (1-based retries): up to 2^attempt ms,
/// at most 64 ms.
fn stale_backoff(attempt: u32) -> std::time::Duration {
    let cap = 1u64 << attempt.min(6);
    // The clock's nanoseconds are random enough to spread two instances apart.
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    std::time::Duration::from_millis(noise % (cap + 1))
}

async fn read_head(
    state: &AppState,
    user_id: i64,
    folder_name: &str,
) -> Result<(db::FolderRow, (i64, i64)), String> {
    let folder = db::folder(&state.db, user_id, folder_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("folder '{folder_name}' of user {user_id} is missing"))?;
    let usage = db::usage(&state.db, user_id)
        .await
        .map_err(|e| e.to_string())?;
    Ok((folder, usage))
}

/// Applies the changes in order to the tree at `base`; rejects those that cannot apply.
fn apply(
    store: &(impl BlockStore + ?Sized),
    base: &str,
    changes: &[(RelPath, Option<DirEntry>)],
    mut used: i64,
    quota: i64,
) -> Result<Applied, String> {
    let mut root: NodeId = base
        .parse()
        .map_err(|e: cairn_store::IdParseError| e.to_string())?;
    let mut outcomes = Vec::with_capacity(changes.len());
    for (path, entry) in changes {
        let names = path.names();
        let previous = match lookup(store, &root, &names) {
            Ok(previous) => previous,
            Err(cairn_store::Error::InvalidName { .. }) => None,
            Err(err) => return Err(err.to_string()),
        };
        if entry.is_some() && previous.as_ref().is_some_and(|e| e.kind == EntryKind::Dir) {
            // Put in its place, the file would drop the directory's tree while its files
            // stayed listed (and counted) in the index.
            outcomes.push(Err(Rejection::PathConflict(format!(
                "cannot write '{path}': a directory is there; to put the file in it, give a path inside it"
            ))));
            continue;
        }
        let previous_file = previous.as_ref().filter(|e| e.kind == EntryKind::File);
        if entry.is_none() && previous_file.is_none() {
            outcomes.push(Err(Rejection::NotFound));
            continue;
        }
        let previous_size = previous_file.map_or(0, |e| i64::try_from(e.size).unwrap_or(i64::MAX));
        let new_size = entry
            .as_ref()
            .map_or(0, |e| i64::try_from(e.size).unwrap_or(i64::MAX));
        let size_delta = new_size - previous_size;
        if !admit(used, quota, size_delta) {
            outcomes.push(Err(Rejection::OverQuota));
            continue;
        }
        let change = entry.clone().map_or(Edit::Remove, Edit::Put);
        match edit(store, &root, &names, &change) {
            Ok(edited) => {
                root = edited.root;
                used += size_delta;
                let files_delta = i64::from(entry.is_some()) - i64::from(previous_file.is_some());
                outcomes.push(Ok((files_delta, size_delta)));
            }
            Err(cairn_store::Error::InvalidName { reason, .. }) => {
                outcomes.push(Err(Rejection::PathConflict(format!(
                    "cannot write '{path}': a parent {reason}"
                ))));
            }
            Err(err) => return Err(err.to_string()),
        }
    }
    store.sync().map_err(|e| e.to_string())?;
    Ok(Applied { root, outcomes })
}

/// The outcome of [`commit_root`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootOutcome {
    /// The tree is the new head.
    Committed {
        /// Its sequence number.
        seq: i64,
    },
    /// The base is not the head any more.
    Stale {
        /// Current head sequence number.
        seq: i64,
        /// Current head root (hex).
        root: String,
    },
}

/// Why [`commit_root`] refused.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The folder does not exist for this user.
    #[error("no such folder")]
    NotFound,
    /// The tree names nodes or blocks that are not stored or not uploaded to this folder.
    #[error("{0}")]
    Missing(String),
    /// The tree is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The tree would exceed the owner's quota.
    #[error("this commit would exceed your storage quota; delete files or ask for more space")]
    OverQuota,
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl From<TreeError> for RootError {
    fn from(err: TreeError) -> Self {
        match err {
            TreeError::Missing(m) => RootError::Missing(m),
            TreeError::Invalid(m) => RootError::Invalid(m),
            TreeError::Internal(m) => RootError::Internal(m),
        }
    }
}

/// Makes `root` (a whole tree a client built and uploaded) the folder's head, if the head is
/// still `base_seq`: the sync protocol's compare-and-swap. The tree is verified first (see
/// [`crate::verify`]); the REST file index gets one row per changed file, found by diffing the
/// old and new trees. Runs under the folder's commit lock, so it queues with REST changes.
///
/// # Errors
/// [`RootError`].
pub async fn commit_root(
    state: &AppState,
    user_id: i64,
    folder_name: &str,
    base_seq: i64,
    root: NodeId,
    device: &str,
) -> Result<RootOutcome, RootError> {
    commit_root_keeping(state, user_id, folder_name, base_seq, root, &[], device).await
}

/// [`commit_root`] that also keeps conflict losers in the history: each `(path, file node)` of
/// `kept` is recorded as a version of `path` just before the new head's version of it (which is
/// recorded again when the commit does not change the path), so the loser can be restored
/// although no head ever held it. The kept nodes are verified like the tree's.
///
/// # Errors
/// [`RootError`].
pub async fn commit_root_keeping(
    state: &AppState,
    user_id: i64,
    folder_name: &str,
    base_seq: i64,
    root: NodeId,
    kept: &[(RelPath, NodeId)],
    device: &str,
) -> Result<RootOutcome, RootError> {
    let key = (user_id, folder_name.to_owned());
    let queue = state.folder_locks.queue(&key);
    let result = {
        let _lock = queue.lock.lock().await;
        commit_root_locked(state, user_id, folder_name, base_seq, root, kept, device).await
    };
    state.folder_locks.release(&key, queue);
    result
}

async fn commit_root_locked(
    state: &AppState,
    user_id: i64,
    folder_name: &str,
    base_seq: i64,
    root: NodeId,
    kept: &[(RelPath, NodeId)],
    device: &str,
) -> Result<RootOutcome, RootError> {
    let internal = |e: &dyn std::fmt::Display| RootError::Internal(e.to_string());
    let folder = db::folder(&state.db, user_id, folder_name)
        .await
        .map_err(|e| internal(&e))?
        .ok_or(RootError::NotFound)?;
    if folder.head_seq != base_seq {
        return Ok(RootOutcome::Stale {
            seq: folder.head_seq,
            root: folder.head_root,
        });
    }
    if folder.head_root == root.to_string() && kept.is_empty() {
        return Ok(RootOutcome::Committed {
            seq: folder.head_seq,
        });
    }
    let kept_nodes: Vec<NodeId> = kept.iter().map(|(_, node)| *node).collect();
    let objects = new_objects_keeping(state, folder.id, root, &kept_nodes, true).await?;
    let old: NodeId = folder.head_root.parse().map_err(|e| internal(&e))?;
    let store = Arc::clone(&state.store);
    let kept_owned = kept.to_vec();
    let (changes, kept_rows) = tokio::task::spawn_blocking(move || {
        store
            .sync()
            .map_err(|e| RootError::Internal(e.to_string()))?;
        let changes = cairn_protocol::diff::diff(store.as_ref(), Some(&old), Some(&root)).map_err(
            |e| match e {
                cairn_protocol::diff::DiffError::Store(e) => RootError::Internal(e.to_string()),
                other => RootError::Invalid(other.to_string()),
            },
        )?;
        let kept_rows = kept_entries(store.as_ref(), &kept_owned, &root)?;
        Ok::<_, RootError>((changes, kept_rows))
    })
    .await
    .map_err(|e| internal(&e))??;
    let size_of = |e: &DirEntry| i64::try_from(e.size).unwrap_or(i64::MAX);
    let file = |e: &Option<DirEntry>| e.as_ref().filter(|e| e.kind == EntryKind::File).cloned();
    let content = |e: Option<DirEntry>| e.map(|e| (size_of(&e), e.child.to_string()));
    // The head version recorded again after a kept one keeps the device that committed it.
    let mut head_devices: HashMap<&str, String> = HashMap::new();
    for (path, ..) in &kept_rows {
        if let Some(author) = db::current_device(&state.db, folder.id, path.as_str())
            .await
            .map_err(|e| internal(&e))?
        {
            head_devices.insert(path.as_str(), author);
        }
    }
    let mut rows: Vec<Row<'_>> = Vec::new();
    let mut usage_delta = 0i64;
    // Whether each path held a live file before the commit, to count the commit's files.
    let mut live: HashMap<&str, bool> = changes
        .iter()
        .map(|c| (c.path.as_str(), file(&c.old).is_some()))
        .collect();
    // Kept versions first, so each is recorded just before its path's head version (recorded
    // again here when the commit does not change the path).
    for (path, (size, node), head) in &kept_rows {
        let changed = live.contains_key(path.as_str());
        rows.push((path.as_str(), Some((*size, node.to_string())), device));
        if !changed {
            live.insert(path.as_str(), file(head).is_some());
            let author = head_devices
                .get(path.as_str())
                .map_or(device, String::as_str);
            rows.push((path.as_str(), content(file(head)), author));
        }
    }
    let kept_paths: std::collections::HashSet<&str> =
        kept_rows.iter().map(|(path, ..)| path.as_str()).collect();
    for change in &changes {
        let (old, new) = (file(&change.old), file(&change.new));
        // A path with no file on either side has no row, unless a kept version gave it one.
        if old.is_none() && new.is_none() && !kept_paths.contains(change.path.as_str()) {
            continue;
        }
        usage_delta += new.as_ref().map_or(0, size_of) - old.as_ref().map_or(0, size_of);
        rows.push((change.path.as_str(), content(new), device));
    }
    let commit_changes: Vec<CommitChange<'_>> = rows
        .iter()
        .map(|(path, content, device)| {
            let now_live = content.is_some();
            let was_live = live.insert(path, now_live).unwrap_or(false);
            CommitChange {
                path,
                content: content.as_ref().map(|(size, hash)| (*size, hash.as_str())),
                device,
                files_delta: i64::from(now_live) - i64::from(was_live),
            }
        })
        .collect();
    let new_root = root.to_string();
    let record = CommitRecord {
        folder_id: folder.id,
        owner_id: user_id,
        base_seq,
        new_root: &new_root,
        device,
        now: now_ms(),
        changes: &commit_changes,
        usage_delta,
        objects: &objects,
    };
    match db::commit(&state.db, &record)
        .await
        .map_err(|e| internal(&e))?
    {
        CommitOutcome::Done { seq, files } => {
            state.metrics.commit(true);
            publish(state, user_id, folder_name, seq, &new_root, &files);
            Ok(RootOutcome::Committed { seq })
        }
        CommitOutcome::OverQuota => Err(RootError::OverQuota),
        CommitOutcome::Stale => {
            state.metrics.commit(false);
            let folder = db::folder(&state.db, user_id, folder_name)
                .await
                .map_err(|e| internal(&e))?
                .ok_or(RootError::NotFound)?;
            Ok(RootOutcome::Stale {
                seq: folder.head_seq,
                root: folder.head_root,
            })
        }
    }
}

fn publish(state: &AppState, user_id: i64, folder: &str, seq: i64, root: &str, files: &[FileRow]) {
    let seq = u64::try_from(seq).unwrap_or(0);
    state.bus.publish(UserEvent {
        user_id,
        event: Event::HeadChanged {
            folder: folder.to_owned(),
            seq,
            root: root.to_owned(),
        },
    });
    for file in files {
        state.bus.publish(UserEvent {
            user_id,
            event: Event::FileChanged {
                folder: folder.to_owned(),
                change: change_of(seq, file),
            },
        });
    }
}

type KeptRows = Vec<(RelPath, (i64, NodeId), Option<DirEntry>)>;

/// One file-index row of a tree commit: path, content (size, file node hex; `None`: deleted),
/// device.
type Row<'a> = (&'a str, Option<(i64, String)>, &'a str);

/// For each kept version: its path, the loser's size and file node, and what the new tree
/// holds at the path (the head version recorded after the loser).
fn kept_entries(
    store: &(impl BlockStore + ?Sized),
    kept: &[(RelPath, NodeId)],
    root: &NodeId,
) -> Result<KeptRows, RootError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(kept.len());
    for (path, node) in kept {
        if !seen.insert(path) {
            return Err(RootError::Invalid(format!(
                "'{path}' is kept twice in one commit"
            )));
        }
        let size = match store.get_node(node) {
            Ok(cairn_store::node::Node::File(file)) => file.size(),
            Ok(_) => {
                return Err(RootError::Invalid(format!(
                    "the version kept for '{path}' is not a file"
                )));
            }
            Err(e) => return Err(RootError::Internal(e.to_string())),
        };
        let head = match lookup(store, root, &path.names()) {
            Ok(head) => head,
            Err(cairn_store::Error::InvalidName { .. }) => None,
            Err(e) => return Err(RootError::Invalid(e.to_string())),
        };
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        out.push((path.clone(), (size, *node), head));
    }
    Ok(out)
}

/// The change a file row represents after commit `seq`.
pub fn change_of(seq: u64, file: &FileRow) -> Change {
    Change {
        seq,
        id: file.id,
        path: file.path.clone(),
        version: u64::try_from(file.version).unwrap_or(0),
        deleted: file.deleted != 0,
        size: u64::try_from(file.size).unwrap_or(0),
        hash: file.hash.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::admit;

    #[test]
    fn quota_admission_in_both_directions() {
        assert!(admit(90, 100, 10), "exactly at quota fits");
        assert!(!admit(90, 100, 11), "one byte over does not");
        assert!(
            admit(150, 100, -10),
            "freeing space always fits, even over quota"
        );
        assert!(admit(150, 100, 0));
        assert!(!admit(i64::MAX - 1, i64::MAX, 5), "no overflow");
    }
}
