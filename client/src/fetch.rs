//! Pipelined block downloads for one pass: every block the pass's downloads need, across all
//! files, in the order the files are written, fetched in batches with several requests in
//! flight, so a folder of many small files costs a few round trips instead of one per file,
//! and the server's reads, the network and the local writes overlap.
//!
//! The writer takes blocks in the same order with [`Prefetch::take`]. A block the plan did not
//! foresee (a local copy that turned out changed, a batch the server refused) is fetched on its
//! own, so the result never depends on the forecast being right, only the speed does. Memory
//! stays bounded: the channel holds at most a few batches, and blocks that arrived are dropped
//! at their last use (or when the pool outgrows [`POOL_BYTES_MAX`]; they are fetched again if
//! needed).

use std::collections::HashMap;

use cairn_store::BlockId;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use crate::remote::{Remote, RemoteError};

/// Bytes of blocks per request: large enough that a folder of small files needs few round
/// trips, small enough that several in flight overlap well.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Ids per request at most.
const BATCH_IDS: usize = 1024;

/// Requests in flight without a bandwidth limit (one under a limit, so pacing stays smooth).
pub const STREAMS: usize = 4;

/// Arrived blocks kept for later uses, at most (beyond it some are dropped and fetched again).
const POOL_BYTES_MAX: usize = 128 * 1024 * 1024;

/// One batch's answer: its blocks, or why the server would not send them.
type Batch = Result<Vec<(BlockId, Vec<u8>)>, (Vec<BlockId>, RemoteError)>;

/// The download pipeline of one pass (see the module docs).
pub struct Prefetch {
    remote: Remote,
    rx: mpsc::Receiver<Batch>,
    task: tokio::task::JoinHandle<()>,
    /// Blocks the pipeline will still deliver, with the uses each has left.
    coming: HashMap<BlockId, u32>,
    /// Blocks that arrived, with the uses each has left.
    pool: HashMap<BlockId, (Vec<u8>, u32)>,
    pool_bytes: usize,
    /// Blocks fetched on their own (not foreseen, or their batch failed).
    pub unforeseen: u64,
    /// Blocks (and their bytes) that arrived, whether used or not.
    pub received_blocks: u64,
    /// See `received_blocks`.
    pub received_bytes: u64,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prefetch {
    /// Starts fetching `wanted`: (id, length) of every block use the writer will ask for, in
    /// its order (repeats included: a block is fetched once and kept for its later uses).
    pub fn start(remote: &Remote, wanted: &[(BlockId, u32)]) -> Prefetch {
        let mut coming: HashMap<BlockId, u32> = HashMap::new();
        let mut batches: Vec<Vec<BlockId>> = Vec::new();
        let mut batch: Vec<BlockId> = Vec::new();
        let mut batch_bytes = 0usize;
        let batch_max = remote.download_batch_bytes(BATCH_BYTES);
        for (id, len) in wanted {
            let uses = coming.entry(*id).or_insert(0);
            *uses += 1;
            if *uses > 1 {
                continue;
            }
            if !batch.is_empty()
                && (batch_bytes + *len as usize > batch_max || batch.len() >= BATCH_IDS)
            {
                batches.push(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
            batch.push(*id);
            batch_bytes += *len as usize;
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        let streams = remote.download_streams(STREAMS);
        let (tx, rx) = mpsc::channel(streams);
        let fetcher = remote.clone();
        let task = tokio::spawn(async move {
            let mut answers = futures_util::stream::iter(batches)
                .map(|ids| {
                    let remote = fetcher.clone();
                    async move { fetch_batch(&remote, ids).await }
                })
                .buffered(streams);
            while let Some(answer) = answers.next().await {
                let lost = matches!(&answer, Err((_, e)) if e.code().is_none());
                if tx.send(answer).await.is_err() || lost {
                    break;
                }
            }
        });
        Prefetch {
            remote: remote.clone(),
            rx,
            task,
            coming,
            pool: HashMap::new(),
            pool_bytes: 0,
            unforeseen: 0,
            received_blocks: 0,
            received_bytes: 0,
        }
    }

    /// The bytes of block `id` (checked against its id).
    ///
    /// # Errors
    /// The connection failed, the server refused, or it sent a corrupt block.
    pub async fn take(&mut self, id: &BlockId) -> Result<Vec<u8>, RemoteError> {
        loop {
            if let Some((bytes, left)) = self.pool.get_mut(id) {
                if *left > 1 {
                    *left -= 1;
                    return Ok(bytes.clone());
                }
                let (bytes, _) = self.pool.remove(id).unwrap_or_default();
                self.pool_bytes -= bytes.len();
                return Ok(bytes);
            }
            if !self.coming.contains_key(id) {
                break;
            }
            match self.rx.recv().await {
                Some(Ok(blocks)) => {
                    for (got, bytes) in blocks {
                        self.received_blocks += 1;
                        self.received_bytes += bytes.len() as u64;
                        let uses = self.coming.remove(&got).unwrap_or(0);
                        if uses > 0 && !self.pool.contains_key(&got) {
                            self.pool_bytes += bytes.len();
                            self.pool.insert(got, (bytes, uses));
                        }
                    }
                    self.shrink_pool(id);
                }
                // Refused (a block gone since the plan, say): those come one by one, so the
                // refusal lands on the file that needs the block, not on its neighbours.
                Some(Err((ids, e))) if e.code().is_some() => {
                    for got in ids {
                        self.coming.remove(&got);
                    }
                }
                Some(Err((_, e))) => return Err(e),
                None => self.coming.clear(),
            }
        }
        self.unforeseen += 1;
        let mut blocks = fetch_batch(&self.remote, vec![*id])
            .await
            .map_err(|(_, e)| e)?;
        self.received_blocks += 1;
        blocks
            .pop()
            .map(|(_, bytes)| {
                self.received_bytes += bytes.len() as u64;
                bytes
            })
            .ok_or(RemoteError::Protocol {
                request: "get_blocks",
            })
    }

    /// Drops arrived blocks beyond the pool's bound (never `keep`, the one wanted now).
    fn shrink_pool(&mut self, keep: &BlockId) {
        if self.pool_bytes <= POOL_BYTES_MAX {
            return;
        }
        let victims: Vec<BlockId> = self.pool.keys().filter(|id| *id != keep).copied().collect();
        for victim in victims {
            if self.pool_bytes <= POOL_BYTES_MAX / 2 {
                break;
            }
            if let Some((bytes, _)) = self.pool.remove(&victim) {
                self.pool_bytes -= bytes.len();
            }
        }
    }
}

/// One request for `ids`, each block checked against its id.
async fn fetch_batch(remote: &Remote, ids: Vec<BlockId>) -> Batch {
    let blocks = match remote.blocks(&ids).await {
        Ok(blocks) => blocks,
        Err(e) => return Err((ids, e)),
    };
    let mut out = Vec::with_capacity(ids.len());
    for (id, bytes) in ids.iter().zip(blocks) {
        if BlockId::of(&bytes) != *id {
            return Err((
                ids,
                RemoteError::Protocol {
                    request: "get_blocks (corrupt block)",
                },
            ));
        }
        out.push((*id, bytes));
    }
    Ok(out)
}
