//! Blocks in S3-compatible object storage (`CAIRN_S3_URL`), shared by every server instance.
//!
//! One object per block at `blocks/ABC/ABC…(64 hex)`, holding the block's bytes as they are
//! (no compression: most data reaching a deployment is already compressed or will be encrypted).
//! Every read is re-hashed, so a damaged or substituted object is an error, never data. S3 puts
//! are durable when answered, so [`BlockStore::sync`] has nothing to do.
//!
//! Garbage collection deletes unreferenced blocks older than a grace period, judged by the
//! object's last-modified time. A put of a block that already exists rewrites it when its
//! last-modified time is older than `refresh_after` (half the grace), so a block an upload has
//! just deduplicated against can never look old enough to collect before the upload commits.
//!
//! S3 has no conditional delete, so the collector's check of a block's age and its delete are
//! two requests, and an upload may rewrite the block between them. A collected block is
//! therefore not deleted but moved to `trash/` ([`S3BlockStore::retire_if_older`]). A read or
//! an existence check (a commit's verification, `check`) that misses in `blocks/` finds it
//! there and puts it back; only the "lacking" answer ([`S3BlockStore::keep_many`]) does not
//! look, so a client is told to send such a block again. Each collection puts back every
//! trashed block a commit references and deletes the others once they have been in the trash
//! for two grace periods ([`S3BlockStore::empty_trash`]). Only the collector writes to `trash/`.
//!
//! Objects up to 64 KiB (tree nodes, small files) are cached in memory after a read or a put
//! (64 MiB, first in first out): a commit reads and rewrites the same directory nodes again and
//! again, and an id names its bytes forever. Existence checks always ask the bucket.
//!
//! The [`BlockStore`] trait is synchronous (the store crate has no runtime) and the server calls
//! it from blocking threads; this store runs its requests on its own small runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn_store::{BlockId, BlockStore, Error, Put, Result};
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

/// Requests in flight at once for batch operations.
const S3_CONCURRENCY: usize = 32;

/// Objects up to this size (tree nodes, small files) are kept in memory after a read or a put.
const CACHE_OBJECT_SIZE_MAX: usize = 64 * 1024;

/// Bytes the object cache holds at most: 64 MiB.
const CACHE_BYTES_MAX: usize = 64 << 20;

/// Recently read or written small objects, first in first out. An id names its bytes forever,
/// so a cached copy is never stale; only `get` uses it (`has` always asks the bucket, because
/// another instance's garbage collector may have deleted an unreferenced object).
#[derive(Default)]
struct ObjectCache {
    objects: std::collections::HashMap<BlockId, Arc<[u8]>>,
    order: std::collections::VecDeque<BlockId>,
    bytes: usize,
}

impl ObjectCache {
    fn get(&self, id: &BlockId) -> Option<Arc<[u8]>> {
        self.objects.get(id).cloned()
    }

    fn insert(&mut self, id: BlockId, data: &[u8]) {
        if data.len() > CACHE_OBJECT_SIZE_MAX || self.objects.contains_key(&id) {
            return;
        }
        self.bytes += data.len();
        self.objects.insert(id, Arc::from(data));
        self.order.push_back(id);
        while self.bytes > CACHE_BYTES_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.objects.remove(&old) {
                self.bytes -= gone.len();
            }
        }
    }

    fn remove(&mut self, id: &BlockId) {
        if let Some(gone) = self.objects.remove(id) {
            self.bytes -= gone.len();
            self.order.retain(|kept| kept != id);
        }
    }
}

/// A bucket (with an optional key prefix) as a block store.
pub struct S3BlockStore {
    store: Arc<dyn ObjectStore>,
    /// Where blocks live: `PREFIX/blocks`.
    prefix: String,
    /// Where collected blocks wait before they are gone: `PREFIX/trash`.
    trash: String,
    /// The deployment's prefix in the bucket (may be empty): exports go beside `blocks/`.
    root: String,
    refresh_after: Duration,
    cache: std::sync::Mutex<ObjectCache>,
    /// Always `Some` until dropped (a runtime must be shut down, not dropped, on async threads).
    runtime: Option<tokio::runtime::Runtime>,
    description: String,
}

impl Drop for S3BlockStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for S3BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl S3BlockStore {
    /// Opens `url`: `http(s)://HOST:PORT/BUCKET[/PREFIX]` (path-style, any S3-compatible
    /// server) or `s3://BUCKET[/PREFIX]` (the endpoint from `AWS_ENDPOINT_URL`, else AWS).
    /// Credentials (unless given) and region come from the standard `AWS_*` variables.
    ///
    /// # Errors
    /// A one-line reason for a malformed URL or a client that cannot be built.
    pub fn open(
        url: &str,
        credentials: Option<(String, String)>,
        refresh_after: Duration,
    ) -> std::result::Result<Self, String> {
        let (endpoint, rest) = if let Some(rest) = url.strip_prefix("s3://") {
            (None, rest)
        } else if let Some(scheme_end) = url.find("://") {
            let after = &url[scheme_end + 3..];
            let slash = after
                .find('/')
                .ok_or_else(|| format!("CAIRN_S3_URL '{url}' names no bucket (…/BUCKET)"))?;
            (
                Some(format!("{}{}", &url[..scheme_end + 3], &after[..slash])),
                &after[slash + 1..],
            )
        } else {
            return Err(format!(
                "CAIRN_S3_URL '{url}' is not like http://host:port/bucket or s3://bucket"
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("CAIRN_S3_URL '{url}' names no bucket"));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some((key_id, secret)) = credentials {
            builder = builder
                .with_access_key_id(key_id)
                .with_secret_access_key(secret);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| format!("CAIRN_S3_URL '{url}': {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the S3 client runtime: {e}"))?;
        let prefix = prefix.trim_matches('/');
        Ok(S3BlockStore {
            store: Arc::new(store),
            prefix: if prefix.is_empty() {
                "blocks".to_owned()
            } else {
                format!("{prefix}/blocks")
            },
            trash: if prefix.is_empty() {
                "trash".to_owned()
            } else {
                format!("{prefix}/trash")
            },
            root: prefix.to_owned(),
            refresh_after,
            cache: std::sync::Mutex::default(),
            runtime: Some(runtime),
            description: format!("S3 block store {url}"),
        })
    }

    fn block_on<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .block_on(work)
    }

    fn path(&self, id: &BlockId) -> ObjectPath {
        let hex = id.to_string();
        ObjectPath::from(format!("{}/{}/{hex}", self.prefix, &hex[..3]))
    }

    fn trash_path(&self, id: &BlockId) -> ObjectPath {
        let hex = id.to_string();
        ObjectPath::from(format!("{}/{}/{hex}", self.trash, &hex[..3]))
    }

    fn error(&self, op: &'static str, id: Option<&BlockId>, err: object_store::Error) -> Error {
        let what = id.map_or_else(|| self.prefix.clone(), |id| self.path(id).to_string());
        Error::Io {
            op,
            path: PathBuf::from(what),
            source: std::io::Error::other(err.to_string()),
        }
    }

    /// The block's last-modified time, `None` when it is absent.
    async fn head(&self, id: &BlockId) -> Result<Option<SystemTime>> {
        match self.store.head(&self.path(id)).await {
            Ok(meta) => Ok(Some(SystemTime::from(meta.last_modified))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.error("checking", Some(id), err)),
        }
    }

    async fn put_one(&self, data: &[u8]) -> Result<Put> {
        let id = BlockId::of(data);
        let size = data.len() as u64;
        let existing = self.head(&id).await?;
        let fresh = existing.is_some_and(|modified| {
            SystemTime::now()
                .duration_since(modified)
                .is_ok_and(|age| age < self.refresh_after)
        });
        if fresh {
            self.cache_insert(id, data);
            return Ok(Put {
                id,
                size,
                new: false,
                stored_size: 0,
            });
        }
        self.store
            .put(&self.path(&id), PutPayload::from(data.to_vec()))
            .await
            .map_err(|e| self.error("writing", Some(&id), e))?;
        self.cache_insert(id, data);
        let new = existing.is_none();
        Ok(Put {
            id,
            size,
            new,
            stored_size: if new { size } else { 0 },
        })
    }

    /// Writes one whole object at `NAME` under the deployment's prefix (beside `blocks/`),
    /// replacing what was there: used for exports, which are rewritten identically on a retry.
    ///
    /// # Errors
    /// S3 errors.
    pub fn put_object(&self, name: &str, data: Vec<u8>) -> Result<()> {
        let key = if self.root.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.root)
        };
        self.block_on(
            self.store
                .put(&ObjectPath::from(key.as_str()), PutPayload::from(data)),
        )
        .map(|_| ())
        .map_err(|e| Error::Io {
            op: "writing",
            path: PathBuf::from(key),
            source: std::io::Error::other(e.to_string()),
        })
    }

    fn cache_insert(&self, id: BlockId, data: &[u8]) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, data);
    }

    /// Which of `ids` are stored, rewriting those last modified longer ago than `refresh_after`
    /// (as a deduplicating put does): an answer "the bucket has it" keeps the block from the
    /// garbage collector for at least half its grace period, so the commit that relies on the
    /// answer finds it. A block whose bytes no longer verify counts as absent, so the client
    /// uploads it again.
    ///
    /// # Errors
    /// S3 errors.
    pub fn keep_many(&self, ids: &[BlockId]) -> Result<Vec<bool>> {
        self.block_on(
            futures_util::stream::iter(ids)
                .map(|id| self.keep_one(id))
                .buffered(S3_CONCURRENCY)
                .try_collect(),
        )
    }

    async fn keep_one(&self, id: &BlockId) -> Result<bool> {
        let Some(modified) = self.head(id).await? else {
            return Ok(false);
        };
        let fresh = SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age < self.refresh_after);
        if fresh {
            return Ok(true);
        }
        let data = match self.fetch(id).await {
            Ok(data) => data,
            Err(Error::BlockCorrupt { .. } | Error::BlockMissing(_)) => return Ok(false),
            Err(err) => return Err(err),
        };
        self.store
            .put(&self.path(id), PutPayload::from(data))
            .await
            .map_err(|e| self.error("refreshing", Some(id), e))?;
        Ok(true)
    }

    /// Reads a block from the bucket (not the cache) and checks its hash.
    async fn fetch(&self, id: &BlockId) -> Result<Vec<u8>> {
        self.fetch_at(id, &self.path(id)).await
    }

    /// Reads block `id` from the object at `path` and checks its hash.
    async fn fetch_at(&self, id: &BlockId, path: &ObjectPath) -> Result<Vec<u8>> {
        let data = match self.store.get(path).await {
            Ok(found) => found
                .bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| self.error("reading", Some(id), e))?,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::BlockMissing(*id)),
            Err(err) => return Err(self.error("reading", Some(id), err)),
        };
        let actual = BlockId::of(&data);
        if actual != *id {
            return Err(Error::BlockCorrupt { id: *id, actual });
        }
        Ok(data)
    }

    /// The block's last-modified time (for the garbage collector's grace period).
    ///
    /// # Errors
    /// S3 errors.
    pub fn modified(&self, id: &BlockId) -> Result<Option<SystemTime>> {
        self.block_on(self.head(id))
    }

    /// Moves a block last modified at or before `cutoff` to the trash: `None` if it is not
    /// stored, else whether it was moved. The age check and the move are separate requests; an
    /// upload that rewrites the block between them loses its object, and the trashed copy (the
    /// same bytes) stands in for it until it is put back (see the module doc).
    ///
    /// # Errors
    /// S3 errors; a block whose copy to the trash failed is left where it was.
    pub fn retire_if_older(&self, id: &BlockId, cutoff: SystemTime) -> Result<Option<bool>> {
        self.cache_remove(id);
        self.block_on(async {
            match self.head(id).await? {
                None => return Ok(None),
                Some(modified) if modified > cutoff => return Ok(Some(false)),
                Some(_) => {}
            }
            match self.store.copy(&self.path(id), &self.trash_path(id)).await {
                Ok(()) => {}
                // Gone since the check (another collector): nothing to move.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(err) => return Err(self.error("moving to the trash", Some(id), err)),
            }
            match self.store.delete(&self.path(id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(Some(true)),
                Err(err) => Err(self.error("deleting", Some(id), err)),
            }
        })
    }

    /// Empties the trash: a block in `live` is put back (unless `blocks/` has it again), and so
    /// is everything under a trashed node put back; any other one is deleted for good once it
    /// was trashed at or before `cutoff`, and the rest wait.
    ///
    /// The purge keeps the rule of [`cairn_store::gc`]: no stored node without its subtree. A
    /// read or an existence check puts a trashed object back in `blocks/` on its own, without
    /// its children, so a node put back while its children were purged (or after a purge cut
    /// short between them) would break it. So the trashed nodes are read first: nothing under
    /// a node not yet due goes, and the due ones are purged in waves, parents first; after each
    /// wave, once `settle` has passed (longer than a put-back under way takes), a node found
    /// back in `blocks/` keeps everything under it in the trash. The collector passes in `live`
    /// what lies under the unreferenced nodes it kept in `blocks/` (such a node put back), so
    /// the next runs put that back rather than purge it. Data, which references nothing, goes
    /// last.
    ///
    /// # Errors
    /// S3 errors.
    pub fn empty_trash(
        &self,
        live: &std::collections::HashSet<BlockId>,
        cutoff: SystemTime,
        settle: Duration,
    ) -> Result<TrashReport> {
        let prefix = ObjectPath::from(self.trash.as_str());
        let mut report = TrashReport::default();
        let trashed: Vec<(BlockId, SystemTime)> = self.block_on(async {
            self.store
                .list(Some(&prefix))
                .map_err(|e| self.error("listing the trash", None, e))
                .try_filter_map(|meta| async move {
                    Ok(meta
                        .location
                        .filename()
                        .and_then(|name| name.parse().ok())
                        .map(|id| (id, SystemTime::from(meta.last_modified))))
                })
                .try_collect()
                .await
        })?;
        if trashed.is_empty() {
            return Ok(report);
        }
        let ids: Vec<BlockId> = trashed.iter().map(|(id, _)| *id).collect();
        let in_trash: std::collections::HashSet<BlockId> = ids.iter().copied().collect();
        let nodes = self.block_on(self.trashed_nodes(&ids))?;
        // Back: the live, and what lies under a trashed node that goes back.
        let mut back: std::collections::HashSet<BlockId> = std::collections::HashSet::new();
        for id in ids.iter().filter(|id| live.contains(id)) {
            if back.insert(*id) {
                shelter(&nodes, id, &mut back);
            }
        }
        // Kept in the trash this run: what lies under a node not yet due, under a node a read
        // put back, or under (and in) an unplaced one (a reference cycle, which hashing rules
        // out).
        let mut kept: std::collections::HashSet<BlockId> = std::collections::HashSet::new();
        let mut due = Vec::new();
        for (id, trashed_at) in &trashed {
            if back.contains(id) {
                continue;
            }
            if *trashed_at <= cutoff {
                due.push(*id);
            } else {
                kept.insert(*id);
                shelter(&nodes, id, &mut kept);
            }
        }
        let due_nodes: std::collections::HashMap<BlockId, Vec<BlockId>> = due
            .iter()
            .filter_map(|id| nodes.get(id).map(|refs| (*id, refs.clone())))
            .collect();
        let (waves, unplaced) = cairn_store::gc::waves(&due_nodes);
        for id in &unplaced {
            kept.insert(*id);
            shelter(&nodes, id, &mut kept);
        }
        self.block_on(async {
            let back: Vec<&BlockId> = back.iter().filter(|id| in_trash.contains(id)).collect();
            let outcomes: Vec<TrashOutcome> = futures_util::stream::iter(back)
                .map(|id| self.put_back(id))
                .buffered(S3_CONCURRENCY)
                .try_collect()
                .await?;
            report.restored += outcomes
                .iter()
                .filter(|o| matches!(o, TrashOutcome::Restored))
                .count() as u64;
            for wave in waves {
                let wave: Vec<BlockId> = wave.into_iter().filter(|id| !kept.contains(id)).collect();
                futures_util::stream::iter(&wave)
                    .map(|id| self.delete_trashed(id))
                    .buffered(S3_CONCURRENCY)
                    .try_collect::<Vec<()>>()
                    .await?;
                // No put-back of these can begin now; one under way has ended by then.
                tokio::time::sleep(settle).await;
                let found: Vec<bool> = futures_util::stream::iter(&wave)
                    .map(|id| async move { Ok::<_, Error>(self.head(id).await?.is_some()) })
                    .buffered(S3_CONCURRENCY)
                    .try_collect()
                    .await?;
                for (id, found) in wave.iter().zip(found) {
                    if found {
                        shelter(&nodes, id, &mut kept);
                    } else {
                        report.purged += 1;
                    }
                }
            }
            let data: Vec<&BlockId> = due
                .iter()
                .filter(|id| !nodes.contains_key(id) && !kept.contains(id))
                .collect();
            futures_util::stream::iter(&data)
                .map(|id| self.delete_trashed(id))
                .buffered(S3_CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await?;
            report.purged += data.len() as u64;
            report.waiting += trashed.iter().filter(|(id, _)| kept.contains(id)).count() as u64;
            Ok(report)
        })
    }

    /// Which of the trashed objects `ids` are nodes, with what each references (read from the
    /// trash: two bytes each, the whole object where they could start a node).
    async fn trashed_nodes(
        &self,
        ids: &[BlockId],
    ) -> Result<std::collections::HashMap<BlockId, Vec<BlockId>>> {
        let found: Vec<Option<(BlockId, Vec<BlockId>)>> = futures_util::stream::iter(ids)
            .map(|id| async move {
                let path = self.trash_path(id);
                let prefix = match self.store.get_range(&path, 0..2).await {
                    Ok(bytes) => bytes.to_vec(),
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    // A server that refuses a range past a short object's end.
                    Err(_) => match self.fetch_at(id, &path).await {
                        Ok(mut data) => {
                            data.truncate(2);
                            data
                        }
                        Err(Error::BlockMissing(_) | Error::BlockCorrupt { .. }) => {
                            return Ok(None);
                        }
                        Err(err) => return Err(err),
                    },
                };
                if !cairn_store::node::Node::may_start(&prefix) {
                    return Ok(None);
                }
                match self.fetch_at(id, &path).await {
                    Ok(bytes) => Ok(cairn_store::node::Node::decode(&bytes)
                        .ok()
                        .map(|node| (*id, node.references()))),
                    Err(Error::BlockMissing(_) | Error::BlockCorrupt { .. }) => Ok(None),
                    Err(err) => Err(err),
                }
            })
            .buffered(S3_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Puts a trashed block that is referenced back in `blocks/` (if an upload has not), then
    /// deletes it from the trash.
    async fn put_back(&self, id: &BlockId) -> Result<TrashOutcome> {
        let outcome = if self.head(id).await?.is_some() {
            TrashOutcome::Redundant
        } else {
            self.store
                .copy(&self.trash_path(id), &self.path(id))
                .await
                .map_err(|e| self.error("putting back from the trash", Some(id), e))?;
            TrashOutcome::Restored
        };
        self.delete_trashed(id).await?;
        Ok(outcome)
    }

    async fn delete_trashed(&self, id: &BlockId) -> Result<()> {
        match self.store.delete(&self.trash_path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(Error::Io {
                op: "deleting",
                path: PathBuf::from(self.trash_path(id).to_string()),
                source: std::io::Error::other(err.to_string()),
            }),
        }
    }

    /// A block missing from `blocks/` read from the trash (a block collected while an upload
    /// rewrote it), and put back; `None` if the trash has no such object either.
    async fn fetch_trashed(&self, id: &BlockId) -> Result<Option<Vec<u8>>> {
        let data = match self.fetch_at(id, &self.trash_path(id)).await {
            Ok(data) => data,
            Err(Error::BlockMissing(_)) => return Ok(None),
            Err(err) => return Err(err),
        };
        if let Err(err) = self
            .store
            .put(&self.path(id), PutPayload::from(data.clone()))
            .await
        {
            // The read is answered either way; the next collection puts it back.
            tracing::warn!(%id, %err, "a block read from the trash could not be put back");
        }
        Ok(Some(data))
    }

    /// Whether the block is stored: in `blocks/`, or in the trash (then put back).
    async fn has_one(&self, id: &BlockId) -> Result<bool> {
        if self.head(id).await?.is_some() {
            return Ok(true);
        }
        match self.fetch_trashed(id).await {
            Ok(found) => Ok(found.is_some()),
            // A damaged copy is no copy: the client is asked for the block again.
            Err(Error::BlockCorrupt { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn cache_remove(&self, id: &BlockId) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

/// What emptying the trash did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrashReport {
    /// Referenced blocks found in the trash and put back.
    pub restored: u64,
    /// Unreferenced blocks deleted for good.
    pub purged: u64,
    /// Unreferenced blocks trashed too recently to delete.
    pub waiting: u64,
}

enum TrashOutcome {
    Restored,
    /// Referenced, but `blocks/` had it again: only the trashed copy went.
    Redundant,
}

/// Adds everything under the trashed node `id` (through trashed nodes) to `kept`.
fn shelter(
    nodes: &std::collections::HashMap<BlockId, Vec<BlockId>>,
    id: &BlockId,
    kept: &mut std::collections::HashSet<BlockId>,
) {
    let mut stack = vec![*id];
    while let Some(node) = stack.pop() {
        for child in nodes.get(&node).into_iter().flatten() {
            if kept.insert(*child) {
                stack.push(*child);
            }
        }
    }
}

impl BlockStore for S3BlockStore {
    fn has(&self, id: &BlockId) -> Result<bool> {
        self.block_on(self.has_one(id))
    }

    fn has_many(&self, ids: &[BlockId]) -> Result<Vec<bool>> {
        self.block_on(
            futures_util::stream::iter(ids)
                .map(|id| self.has_one(id))
                .buffered(S3_CONCURRENCY)
                .try_collect(),
        )
    }

    fn put_many(&self, blocks: &[&[u8]]) -> Result<Vec<Put>> {
        let max = u64::from(cairn_store::limits::BLOCK_SIZE_MAX);
        if let Some(block) = blocks.iter().find(|b| b.len() as u64 > max) {
            return Err(Error::BlockTooLarge {
                actual: block.len() as u64,
                max,
            });
        }
        self.block_on(
            futures_util::stream::iter(blocks)
                .map(|data| self.put_one(data))
                .buffered(S3_CONCURRENCY)
                .try_collect(),
        )
    }

    fn get(&self, id: &BlockId) -> Result<Vec<u8>> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id);
        if let Some(data) = cached {
            return Ok(data.to_vec());
        }
        let data = self.block_on(async {
            match self.fetch(id).await {
                Err(Error::BlockMissing(_)) => self
                    .fetch_trashed(id)
                    .await?
                    .ok_or(Error::BlockMissing(*id)),
                read => read,
            }
        })?;
        self.cache_insert(*id, &data);
        Ok(data)
    }

    fn peek(&self, id: &BlockId, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        // A range past the object's end gets what there is; a server that refuses such a range
        // (an object shorter than `len`) is asked for the whole object.
        self.block_on(async {
            match self.store.get_range(&self.path(id), 0..len as u64).await {
                Ok(bytes) => Ok(bytes.to_vec()),
                Err(object_store::Error::NotFound { .. }) => Err(Error::BlockMissing(*id)),
                Err(_) => self.fetch(id).await.map(|mut data| {
                    data.truncate(len);
                    data
                }),
            }
        })
    }

    fn delete(&self, id: &BlockId) -> Result<bool> {
        self.cache_remove(id);
        self.block_on(async {
            if self.head(id).await?.is_none() {
                return Ok(false);
            }
            self.store
                .delete(&self.path(id))
                .await
                .map_err(|e| self.error("deleting", Some(id), e))?;
            Ok(true)
        })
    }

    fn list(&self) -> Result<Vec<BlockId>> {
        let prefix = ObjectPath::from(self.prefix.as_str());
        self.block_on(async {
            let metas: Vec<object_store::ObjectMeta> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| self.error("listing", None, e))?;
            Ok(metas
                .iter()
                .filter_map(|m| m.location.filename().and_then(|name| name.parse().ok()))
                .collect())
        })
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
