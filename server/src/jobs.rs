//! Background jobs: garbage collection of unreferenced blocks and version pruning, behind
//! [`JobQueue`] so a deployment can run them from RabbitMQ (later); [`LocalQueue`] is the
//! in-process default, one worker draining a bounded channel.
//!
//! Both jobs are idempotent: running one twice, or after a crash halfway, is harmless.
//!
//! - [`prune_versions`] forgets commits and file versions older than the retention, except each
//!   folder's head and each file's current version.
//! - [`collect_garbage`] marks every block reachable from the retained commits and deletes the
//!   rest, but only blocks older than a grace period: an upload stores blocks before it commits,
//!   and a deduplicated block gets its mtime refreshed, so no block an upload is about to
//!   reference can be deleted under it. If any tree cannot be walked it deletes nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn_store::fsck::reachable;
use cairn_store::{BlockStore, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::api::AppState;
use crate::db;

/// A unit of background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Job {
    /// Delete blocks no retained commit references and older than `grace`.
    CollectGarbage {
        /// Blocks younger than this are kept.
        grace: Duration,
    },
    /// Forget versions older than `retention` (except current ones and heads).
    PruneVersions {
        /// How long versions stay restorable.
        retention: Duration,
    },
}

/// Where jobs are submitted.
pub trait JobQueue: Send + Sync + 'static {
    /// Queues a job; `false` when the queue is full (the job is dropped, and the next periodic
    /// round submits it again).
    fn submit(&self, job: Job) -> bool;
}

/// The in-process queue: a bounded channel drained by one worker task.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    sender: mpsc::Sender<Job>,
}

/// Jobs waiting in the local queue at most: 16 (two kinds, submitted hourly).
const LOCAL_QUEUE_LEN_MAX: usize = 16;

impl LocalQueue {
    /// A queue and the receiver its worker drains.
    pub fn new() -> (LocalQueue, mpsc::Receiver<Job>) {
        let (sender, receiver) = mpsc::channel(LOCAL_QUEUE_LEN_MAX);
        (LocalQueue { sender }, receiver)
    }
}

impl JobQueue for LocalQueue {
    fn submit(&self, job: Job) -> bool {
        self.sender.try_send(job).is_ok()
    }
}

/// Runs jobs from `receiver` until it closes.
pub async fn worker(state: AppState, mut receiver: mpsc::Receiver<Job>) {
    while let Some(job) = receiver.recv().await {
        match run(&state, job).await {
            Ok(summary) => tracing::info!(?job, %summary, "job done"),
            Err(err) => tracing::error!(?job, error = %err, "job failed; it runs again next round"),
        }
    }
}

/// Runs one job; returns a one-line summary.
///
/// # Errors
/// Database or store errors (nothing is half-done in a way a rerun cannot finish).
pub async fn run(state: &AppState, job: Job) -> Result<String, String> {
    match job {
        Job::CollectGarbage { grace } => collect_garbage(state, grace).await.map(|r| {
            format!(
                "{} live blocks, {} deleted, {} unreferenced kept as young",
                r.live, r.deleted, r.young
            )
        }),
        Job::PruneVersions { retention } => prune_versions(state, retention)
            .await
            .map(|(versions, commits)| format!("pruned {versions} versions and {commits} commits")),
    }
}

/// What a collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blocks reachable from retained commits.
    pub live: u64,
    /// Blocks deleted.
    pub deleted: u64,
    /// Unreferenced blocks kept because they are younger than the grace period.
    pub young: u64,
}

/// Deletes unreferenced blocks older than `grace`.
///
/// # Errors
/// Database or store errors; a tree that cannot be walked aborts the collection untouched.
pub async fn collect_garbage(state: &AppState, grace: Duration) -> Result<GcReport, String> {
    // Roots are read before the walk: a commit made during the walk references only blocks that
    // are either reachable from an older root or young, so neither is deleted.
    let started = SystemTime::now();
    let mut roots: Vec<NodeId> = db::all_roots(&state.db)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| {
            r.parse()
                .map_err(|e: cairn_store::IdParseError| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    roots.push(state.empty_root);
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || {
        let live = reachable(store.as_ref(), &roots).map_err(|e| format!("not collecting: {e}"))?;
        let cutoff = started.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = GcReport {
            live: live.len() as u64,
            ..GcReport::default()
        };
        for id in store.list().map_err(|e| e.to_string())? {
            if live.contains(&id) {
                continue;
            }
            let Some(modified) = store.modified(&id).map_err(|e| e.to_string())? else {
                continue;
            };
            if modified > cutoff {
                report.young += 1;
            } else if store.delete(&id).map_err(|e| e.to_string())? {
                report.deleted += 1;
            }
        }
        Ok(report)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Forgets commits and versions older than `retention`; returns (versions, commits) removed.
///
/// # Errors
/// Database errors.
pub async fn prune_versions(state: &AppState, retention: Duration) -> Result<(u64, u64), String> {
    let cutoff = crate::api::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    db::prune(&state.db, cutoff)
        .await
        .map_err(|e| e.to_string())
}
