//! Rebuilding the index log from the packs, for a store whose log was lost or damaged at rest.
//!
//! A pack record names its block (`stored length, id, stored bytes`), so the packs alone say
//! where every block is. The rebuild reads each pack, keeps every record whose bytes decode and
//! hash to the id it names, and writes a new log of those. Damage inside a pack (a hole left by
//! a crash, bytes changed at rest) is stepped over byte by byte until the next record that
//! verifies: only the damaged records are lost, never the ones after them. A record is trusted
//! only by its hash, so a false match is as unlikely as a BLAKE3 collision.
//!
//! What the log alone knew is gone: deletions since a pack was last compacted (those blocks are
//! back until the garbage collector deletes them again) and blocks' ages (all count as stored
//! now, so the collector's grace period starts over: nothing is deleted early).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{
    DELETED, Loc, PACK_MAGIC, RECORD_HEADER_LEN, decode_block, lock_root, now_s, pack_name,
    write_log,
};
use crate::limits::BLOCK_SIZE_MAX;
use crate::{BlockId, Error, Result};

/// What [`super::FsBlockStore::rebuild_index`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Pack files read.
    pub packs: u64,
    /// Blocks in the new index.
    pub blocks: u64,
    /// Records found more than once (a compaction's copies): one of each is indexed.
    pub duplicates: u64,
    /// Stretches of a pack that held no valid record.
    pub damaged_regions: u64,
    /// Bytes in those stretches.
    pub damaged_bytes: u64,
    /// Packs with no valid record at all, renamed to `*.pack.damaged` and left for inspection.
    pub unreadable_packs: Vec<PathBuf>,
    /// Where the previous log was moved, if there was one.
    pub previous_log: Option<PathBuf>,
}

/// One pack's verified records and damage.
#[derive(Debug, Default)]
struct PackScan {
    records: Vec<(BlockId, u32, u32)>,
    damaged_regions: u64,
    damaged_bytes: u64,
    /// Whether it starts with the pack magic.
    magic: bool,
}

/// Rebuilds `root`'s index log from its packs (see the module documentation). Takes the store's
/// lock: the store must not be open elsewhere.
pub(super) fn rebuild(root: &Path) -> Result<RebuildReport> {
    let _lock = lock_root(root)?;
    let packs_dir = root.join("packs");
    let mut packs: Vec<(u32, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&packs_dir).map_err(|e| Error::io("listing", &packs_dir, e))? {
        let entry = entry.map_err(|e| Error::io("listing", &packs_dir, e))?;
        let name = entry.file_name();
        if let Some(no) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".pack"))
            .and_then(|n| u32::from_str_radix(n, 16).ok())
            .filter(|no| *no != DELETED)
        {
            packs.push((no, entry.path()));
        }
    }
    packs.sort_unstable_by_key(|(no, _)| *no);
    let scans: Vec<PackScan> = packs
        .par_iter()
        .map(|(_, path)| {
            fs::read(path)
                .map(|bytes| scan_pack(&bytes))
                .map_err(|e| Error::io("reading", path, e))
        })
        .collect::<Result<_>>()?;

    let mut report = RebuildReport {
        packs: packs.len() as u64,
        ..RebuildReport::default()
    };
    let stored_s = now_s();
    let mut index: HashMap<BlockId, Loc> = HashMap::new();
    for ((no, path), scan) in packs.iter().zip(scans) {
        report.damaged_regions += scan.damaged_regions;
        report.damaged_bytes += scan.damaged_bytes;
        if scan.records.is_empty() {
            // Opening the store removes packs no index record points at; one that is damaged
            // throughout is kept aside instead, for whoever wants to look at it.
            if !scan.magic || scan.damaged_bytes > 0 {
                let aside = packs_dir.join(format!("{}.damaged", pack_name(*no)));
                fs::rename(path, &aside).map_err(|e| Error::io("renaming", path, e))?;
                report.unreadable_packs.push(aside);
            }
            continue;
        }
        for (id, offset, len) in scan.records {
            // Later packs win: a compaction copies live blocks forward.
            let loc = Loc {
                pack: *no,
                offset,
                len,
                stored_s,
                durable: true,
            };
            if index.insert(id, loc).is_some() {
                report.duplicates += 1;
            }
        }
    }
    report.blocks = index.len() as u64;

    let log_path = root.join("index.log");
    if log_path.exists() {
        let aside = root.join(format!("index.log.before-rebuild-{stored_s}"));
        fs::rename(&log_path, &aside).map_err(|e| Error::io("renaming", &log_path, e))?;
        report.previous_log = Some(aside);
    }
    write_log(&log_path, &index)?;
    Ok(report)
}

/// The verified records of one pack's bytes, and the stretches that held none.
fn scan_pack(bytes: &[u8]) -> PackScan {
    let mut scan = PackScan {
        magic: bytes.starts_with(PACK_MAGIC),
        ..PackScan::default()
    };
    let header_len = RECORD_HEADER_LEN as usize;
    let mut at = PACK_MAGIC.len();
    let mut damage_from: Option<usize> = (!scan.magic).then_some(0);
    while at + header_len < bytes.len() {
        match record_at(bytes, at) {
            Some((id, len)) => {
                if let Some(from) = damage_from.take() {
                    scan.damaged_regions += 1;
                    scan.damaged_bytes += (at - from) as u64;
                }
                let offset = at + header_len;
                // Packs stay far under 4 GiB (a record is appended only below the target).
                if let (Ok(offset32), Ok(len32)) = (u32::try_from(offset), u32::try_from(len)) {
                    scan.records.push((id, offset32, len32));
                }
                at = offset + len;
            }
            None => {
                damage_from.get_or_insert(at);
                at += 1;
            }
        }
    }
    // A tail too short for a record: damage unless it is all zeros (a crash's unwritten end).
    let tail = &bytes[at.min(bytes.len())..];
    if let Some(from) = damage_from.or_else(|| tail.iter().any(|b| *b != 0).then_some(at)) {
        scan.damaged_regions += 1;
        scan.damaged_bytes += (bytes.len() - from) as u64;
    }
    scan
}

/// The record at `at` if it is whole and its bytes decode and hash to the id it names:
/// (id, stored length).
fn record_at(bytes: &[u8], at: usize) -> Option<(BlockId, usize)> {
    let header_len = RECORD_HEADER_LEN as usize;
    let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    // The stored bytes: a header byte (raw or zstd) and a payload of at most a block.
    if len == 0 || len > BLOCK_SIZE_MAX as usize + 1 {
        return None;
    }
    let stored = bytes.get(at + header_len..at + header_len + len)?;
    if stored[0] > 1 {
        return None;
    }
    let id = BlockId::from_bytes(bytes.get(at + 4..at + header_len)?.try_into().ok()?);
    let data = decode_block(&id, stored[0], stored[1..].to_vec()).ok()?;
    (BlockId::of(&data) == id).then_some((id, len))
}
