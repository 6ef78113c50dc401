//! Background jobs: garbage collection of unreferenced blocks, version pruning and audit-log
//! export, submitted to [`Jobs`]: the in-process queue (the embedded default) or RabbitMQ
//! ([`crate::rabbit`]) when `RABBITMQ_URL` is set.
//!
//! Every job is idempotent: running one twice, or again after a crash halfway, is harmless.
//!
//! - [`prune_versions`] forgets commits and file versions older than the retention, except each
//!   folder's head and each file's current version.
//! - [`collect_garbage`] marks every block reachable from the retained commits and deletes the
//!   rest, but only blocks older than a grace period: an upload stores blocks before it commits,
//!   and a deduplicated block gets its mtime refreshed, so no block an upload is about to
//!   reference can be deleted under it. If any tree cannot be walked it deletes nothing. It
//!   first expires uploads no commit took up within the same grace period, releasing the
//!   quota they were charged ([`db::expire_uploads`]). One collection runs at a time per
//!   deployment: it holds a lease in the shared database while it runs.
//! - [`export_audit`] writes audit-log rows past the last export to JSON-lines files named by
//!   their id range (`audit/audit-FIRST-LAST.jsonl`, in the data dir or the S3 bucket), then
//!   advances a mark in the database: a rerun rewrites the same file with the same bytes.
//!
//! [`scheduler`] submits each periodic job once per round across all instances: an instance
//! submits only after moving the job's `next_at` forward in the shared database.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cairn_store::fsck::reachable;
use cairn_store::gc::{Garbage, garbage_nodes};
use cairn_store::{BlockStore, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, now_ms};
use crate::blocks::Blocks;
use crate::db;
use crate::limits;
use crate::rabbit::RabbitQueue;

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
    /// Write audit-log rows past the last export to files.
    ExportAudit,
}

impl Job {
    /// The job's kind, as scheduled and counted in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::CollectGarbage { .. } => "collect_garbage",
            Job::PruneVersions { .. } => "prune_versions",
            Job::ExportAudit => "export_audit",
        }
    }
}

/// Where jobs are submitted and who runs them.
#[derive(Debug)]
pub enum Jobs {
    /// The in-process queue: a bounded channel drained by one worker task of this instance.
    Local {
        /// Submits.
        sender: mpsc::Sender<Job>,
        /// Taken by the worker when the server starts serving.
        receiver: Mutex<Option<mpsc::Receiver<Job>>>,
    },
    /// RabbitMQ, shared by every instance.
    Rabbit(RabbitQueue),
}

/// Jobs waiting in the local queue at most: 16 (three kinds, submitted hourly).
const LOCAL_QUEUE_LEN_MAX: usize = 16;

impl Jobs {
    /// The in-process queue.
    pub fn local() -> Jobs {
        let (sender, receiver) = mpsc::channel(LOCAL_QUEUE_LEN_MAX);
        Jobs::Local {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// Queues a job.
    ///
    /// # Errors
    /// The queue is full (local) or the broker did not confirm the message (RabbitMQ).
    pub async fn submit(&self, job: Job) -> Result<(), String> {
        match self {
            Jobs::Local { sender, .. } => sender
                .try_send(job)
                .map_err(|e| format!("the local job queue refused {job:?}: {e}")),
            Jobs::Rabbit(queue) => queue.submit(&job).await,
        }
    }

    /// Jobs waiting to run (for `/metrics`); `None` when it cannot be read now.
    pub async fn depth(&self) -> Option<u64> {
        match self {
            Jobs::Local { sender, .. } => Some((sender.max_capacity() - sender.capacity()) as u64),
            Jobs::Rabbit(queue) => queue.depth().await,
        }
    }

    /// `ok` or what is wrong with the link to RabbitMQ; `None` for the local queue.
    pub fn health(&self) -> Option<String> {
        match self {
            Jobs::Local { .. } => None,
            Jobs::Rabbit(queue) => Some(queue.health()),
        }
    }

    /// Starts this instance's worker; it ends after its current job once `shutdown` fires.
    pub fn start_worker(
        &self,
        state: AppState,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        match self {
            Jobs::Local { receiver, .. } => {
                let receiver = receiver.lock().expect("job receiver lock").take();
                tokio::spawn(async move {
                    let Some(mut receiver) = receiver else {
                        return;
                    };
                    loop {
                        let job = tokio::select! {
                            () = shutdown.cancelled() => return,
                            job = receiver.recv() => job,
                        };
                        let Some(job) = job else { return };
                        match run(&state, job).await {
                            Ok(summary) => tracing::info!(?job, %summary, "job done"),
                            Err(err) => tracing::error!(
                                ?job,
                                error = %err,
                                "job failed; it runs again next round"
                            ),
                        }
                    }
                })
            }
            Jobs::Rabbit(queue) => queue.start_consumer(state, shutdown),
        }
    }
}

/// The periodic jobs and their intervals, given the version retention.
pub fn periodic(retention: Option<Duration>) -> Vec<(Job, Duration)> {
    let mut jobs = Vec::new();
    if let Some(retention) = retention {
        jobs.push((Job::PruneVersions { retention }, limits::JOB_INTERVAL));
    }
    jobs.push((
        Job::CollectGarbage {
            grace: limits::GC_GRACE,
        },
        limits::JOB_INTERVAL,
    ));
    jobs.push((Job::ExportAudit, limits::JOB_INTERVAL));
    jobs
}

/// Every `tick`, submits each periodic job this instance claims (see [`claim_and_submit`])
/// until `shutdown` fires.
pub async fn scheduler(
    state: AppState,
    jobs: Vec<(Job, Duration)>,
    tick: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(tick);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for (job, interval) in &jobs {
            if let Err(err) = claim_and_submit(&state, *job, *interval).await {
                tracing::warn!(?job, error = %err, "job not submitted; trying again next tick");
            }
        }
    }
}

/// Submits `job` if its round is due and this instance claims it first; returns whether it
/// submitted. The first claim of a kind only schedules it (`interval` from now). A failed
/// submission makes the job due again, so the next tick retries.
///
/// # Errors
/// Database errors, or the queue refused the job.
pub async fn claim_and_submit(
    state: &AppState,
    job: Job,
    interval: Duration,
) -> Result<bool, String> {
    let now = now_ms();
    let next = now + i64::try_from(interval.as_millis()).unwrap_or(i64::MAX / 2);
    if !db::claim_job(&state.db, job.kind(), now, next)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(false);
    }
    if let Err(err) = state.jobs.submit(job).await {
        db::reschedule_job(&state.db, job.kind(), now)
            .await
            .map_err(|e| e.to_string())?;
        return Err(err);
    }
    state.metrics.job_submitted(job.kind());
    Ok(true)
}

/// Runs one job; returns a one-line summary.
///
/// # Errors
/// Database or store errors (nothing is half-done in a way a rerun cannot finish).
pub async fn run(state: &AppState, job: Job) -> Result<String, String> {
    let outcome = match job {
        Job::CollectGarbage { grace } => collect_garbage(state, grace).await.map(|r| {
            if r.skipped {
                return "skipped: another garbage collection is running".to_owned();
            }
            format!(
                "{} live blocks, {} deleted, {} unreferenced kept as young and {} more under young \
                 nodes, {} bytes of disk given back; \
                 bucket trash: {} deleted for good, {} referenced put back; \
                 {} uploads never committed expired ({} bytes of pending quota released)",
                r.live,
                r.deleted,
                r.young,
                r.sheltered,
                r.bytes_reclaimed,
                r.purged,
                r.restored,
                r.uploads_expired,
                r.pending_released
            )
        }),
        Job::PruneVersions { retention } => prune_versions(state, retention)
            .await
            .map(|(versions, commits)| format!("pruned {versions} versions and {commits} commits")),
        Job::ExportAudit => export_audit(state).await.map(|r| {
            format!(
                "exported {} audit rows in {} files (up to id {})",
                r.rows, r.files, r.last_id
            )
        }),
    };
    state.metrics.job_finished(job.kind(), outcome.is_ok());
    outcome
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
    /// Unreferenced blocks kept because a young unreferenced node references them (directly or
    /// further down): a stored node keeps its whole subtree (see [`cairn_store::gc`]).
    pub sheltered: u64,
    /// Disk space given back by compacting the local store's packs after the deletions.
    pub bytes_reclaimed: u64,
    /// A bucket's trashed blocks deleted for good (trashed two grace periods or more ago).
    pub purged: u64,
    /// A bucket's trashed blocks found referenced and put back (an upload rewrote one while it
    /// was being collected).
    pub restored: u64,
    /// Uploads no commit took up within the grace period, forgotten by their folders.
    pub uploads_expired: u64,
    /// The bytes those uploads were charged, given back to their owners' pending quota.
    pub pending_released: u64,
    /// Nothing was done: another collection holds the deployment's lease.
    pub skipped: bool,
}

/// Deletes unreferenced blocks older than `grace` (a bucket's go to its trash, emptied of
/// what has waited there two `grace` periods).
///
/// # Errors
/// Database or store errors; a tree that cannot be walked aborts the collection untouched.
pub async fn collect_garbage(state: &AppState, grace: Duration) -> Result<GcReport, String> {
    let Some(lease) = claim_gc_lease(state).await? else {
        return Ok(GcReport {
            skipped: true,
            ..GcReport::default()
        });
    };
    let collected = collect_garbage_leased(state, grace).await;
    // Released either way; if this fails, the lease runs out by itself.
    if let Err(err) = db::advance_job_mark(&state.db, GC_LEASE_MARK, lease, now_ms()).await {
        tracing::warn!(%err, "the garbage collector's lease was not released");
    }
    collected
}

/// The mark naming until when (milliseconds) a garbage collection holds the deployment's lease.
pub const GC_LEASE_MARK: &str = "gc_lease";

/// Takes the deployment's garbage-collection lease for [`limits::GC_LEASE`]; `None` when
/// another collection holds it. Collections are scheduled once per round, but a job can run
/// twice at once (a broker redelivery, an operator's extra run), and two collections of one
/// bucket could each undo the other's trash (see [`crate::s3`]).
async fn claim_gc_lease(state: &AppState) -> Result<Option<i64>, String> {
    let held_until = db::job_mark(&state.db, GC_LEASE_MARK)
        .await
        .map_err(|e| e.to_string())?;
    let now = now_ms();
    if held_until > now {
        tracing::info!(
            seconds_left = (held_until - now) / 1000,
            "another garbage collection is running; this one is skipped"
        );
        return Ok(None);
    }
    let until = now + i64::try_from(limits::GC_LEASE.as_millis()).unwrap_or(i64::MAX / 2);
    let claimed = db::advance_job_mark(&state.db, GC_LEASE_MARK, held_until, until)
        .await
        .map_err(|e| e.to_string())?;
    Ok(claimed.then_some(until))
}

/// Node ids as the database holds them (hex), parsed.
///
/// # Errors
/// SQL errors, or an id that does not parse (nothing is collected then).
fn parse_nodes(rows: Result<Vec<String>, db::DbError>) -> Result<Vec<NodeId>, String> {
    rows.map_err(|e| e.to_string())?
        .iter()
        .map(|r| {
            r.parse()
                .map_err(|e: cairn_store::IdParseError| e.to_string())
        })
        .collect()
}

/// How long the trash's purge waits after each wave of nodes before it looks whether a read
/// put one back (see [`crate::s3::S3BlockStore::empty_trash`]): longer than a read from the
/// trash and its put may take, retries included (the bucket client retries a request for up
/// to 180 s). Garbage trees are a few levels deep, so a purge takes some minutes more; it runs
/// in the background, under the collector's lease.
pub const TRASH_SETTLE: Duration = Duration::from_secs(240);

async fn collect_garbage_leased(state: &AppState, grace: Duration) -> Result<GcReport, String> {
    // Roots are read before the walk: a commit made during the walk references only blocks that
    // are either reachable from an older root or young, so neither is deleted.
    let started = SystemTime::now();
    let mut roots = parse_nodes(db::all_roots(&state.db).await)?;
    roots.push(state.empty_root);
    // And every version's node: a conflict loser kept only in the history is in no tree.
    let versions = parse_nodes(db::version_nodes(&state.db).await)?;
    let cutoff = started.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    // Uploads as old as the blocks about to go stop counting against their owners' quota (and
    // stop being readable by their folders: a commit naming them must upload them again).
    let cutoff_ms = cutoff
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let (uploads_expired, pending_released) = db::expire_uploads(&state.db, cutoff_ms)
        .await
        .map_err(|e| e.to_string())?;
    let settle = state.config.services.trash_settle.unwrap_or(TRASH_SETTLE);
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || {
        let live = reachable(store.as_ref(), &roots, &versions)
            .map_err(|e| format!("not collecting: {e}"))?;
        let mut report = GcReport {
            live: live.len() as u64,
            uploads_expired,
            pending_released: u64::try_from(pending_released).unwrap_or(0),
            ..GcReport::default()
        };
        let candidates: Vec<_> = store
            .list()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|id| !live.contains(id))
            .collect();
        let nodes = garbage_nodes(store.as_ref(), &candidates)
            .map_err(|e| format!("not collecting: {e}"))?;
        // Nodes before what they reference, and a kept node keeps its subtree: a stored node's
        // subtree stays whole after every deletion, wherever this run stops. Locally the age
        // check and the delete are one step: an upload that deduplicates against a block, or a
        // "stored" answer to a client, refreshes it meanwhile and keeps it. A bucket's block goes
        // to the trash, which still serves it (see `crate::s3`).
        let (swept, under_kept) = Garbage::plan(candidates, nodes)
            .sweep_keeping(|id| store.delete_if_older(id, cutoff))
            .map_err(|e| e.to_string())?;
        report.deleted = swept.deleted;
        report.young = swept.young;
        report.sheltered = swept.sheltered;
        if report.deleted > 0 {
            report.bytes_reclaimed = store.compact().map_err(|e| e.to_string())?;
        }
        // A trashed block goes for good after two grace periods in the trash. An upload that
        // rewrote it while it was being moved relies on it until its commit, which comes within
        // one grace (the upload expires after that) and so is among the roots of a run that
        // late; the second grace is margin (a collector stalled between the copy and the
        // delete, uploads expired only by the hourly run).
        let trash_cutoff = cutoff.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        // What lies under an unreferenced node kept in the store (young: a read put it back from
        // the trash, an upload refreshed it) stays too, and goes back if it was trashed.
        let mut keep = live;
        keep.extend(under_kept);
        let trash = store
            .empty_trash(&keep, trash_cutoff, settle)
            .map_err(|e| e.to_string())?;
        report.purged = trash.purged;
        report.restored = trash.restored;
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

/// What an audit export did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditExport {
    /// Rows written.
    pub rows: u64,
    /// Files written.
    pub files: u64,
    /// The last exported row id (the mark).
    pub last_id: i64,
}

/// The progress mark of the audit export.
const AUDIT_MARK: &str = "audit_export";

/// Exports audit rows past the mark (and older than [`limits::AUDIT_EXPORT_LAG`]) in files of
/// [`limits::AUDIT_EXPORT_BATCH`] rows.
///
/// # Errors
/// Database or store errors; what was exported before stays exported.
pub async fn export_audit(state: &AppState) -> Result<AuditExport, String> {
    let before = now_ms() - i64::try_from(limits::AUDIT_EXPORT_LAG.as_millis()).unwrap_or(0);
    let mut report = AuditExport::default();
    loop {
        let mark = db::job_mark(&state.db, AUDIT_MARK)
            .await
            .map_err(|e| e.to_string())?;
        report.last_id = mark;
        let rows = db::audit_after(&state.db, mark, before, limits::AUDIT_EXPORT_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(report);
        };
        let (first, last) = (first.id, last.id);
        let mut body = Vec::with_capacity(rows.len() * 160);
        for row in &rows {
            serde_json::to_writer(&mut body, row).map_err(|e| e.to_string())?;
            body.push(b'\n');
        }
        let name = format!("audit/audit-{first:012}-{last:012}.jsonl");
        let store = Arc::clone(&state.store);
        let data_dir = state.config.data_dir.clone();
        tokio::task::spawn_blocking(move || write_export(&store, &data_dir, &name, body))
            .await
            .map_err(|e| e.to_string())??;
        if !db::advance_job_mark(&state.db, AUDIT_MARK, mark, last)
            .await
            .map_err(|e| e.to_string())?
        {
            // Another run exported the same rows (and wrote the same file): carry on from its mark.
            continue;
        }
        report.rows += rows.len() as u64;
        report.files += 1;
        report.last_id = last;
    }
}

/// Writes an export file durably: to the bucket beside the blocks, or under the data dir
/// (temporary file, fsync, rename, directory fsync).
fn write_export(
    store: &Blocks,
    data_dir: &std::path::Path,
    name: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    use std::io::Write as _;
    match store {
        Blocks::S3(s3) => s3.put_object(name, body).map_err(|e| e.to_string()),
        Blocks::Local(_) => {
            let path = data_dir.join(name);
            let dir = path.parent().expect("export names have a directory");
            let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
            std::fs::create_dir_all(dir).map_err(|e| fail("creating the directory of", e))?;
            let tmp = path.with_extension("jsonl.tmp");
            let mut file = std::fs::File::create(&tmp).map_err(|e| fail("creating", e))?;
            file.write_all(&body).map_err(|e| fail("writing", e))?;
            file.sync_all().map_err(|e| fail("syncing", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| fail("renaming into", e))?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| fail("syncing the directory of", e))
        }
    }
}
