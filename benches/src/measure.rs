//! The measurements behind `cairn-bench ingest`, `edit-cost` and `dir-change`.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_store::chunk::cut;
use cairn_store::dir::{chunk_dir, store_dir};
use cairn_store::fs::{Compression, FsBlockStore, FsStoreOptions};
use cairn_store::mem::MemBlockStore;
use cairn_store::node::{DirEntry, EntryKind, Name};
use cairn_store::tree::{BuildOptions, build_tree};
use cairn_store::{BlockId, BlockStore, ChunkConfig, NodeId, Put};
use rand::{RngCore, SeedableRng, rngs::SmallRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::PathArg;

/// Arguments of `cairn-bench ingest`.
#[derive(Debug, clap::Args)]
pub(crate) struct IngestArgs {
    /// Directory whose files are ingested.
    path: PathArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Where the temporary block store is created (default: the system temp directory).
    #[arg(long)]
    store_parent: Option<PathBuf>,
    /// Store blocks uncompressed.
    #[arg(long)]
    no_compress: bool,
    /// zstd level when compressing (negative levels are zstd's fast modes).
    #[arg(long, allow_hyphen_values = true, default_value_t = default_zstd_level())]
    zstd_level: i32,
    /// Where blocks go: `fs` (the real store) or `null` (chunk and hash only, to separate CPU
    /// cost from storage cost).
    #[arg(long, value_enum, default_value = "fs")]
    sink: Sink,
    /// Smallest block.
    #[arg(long, value_parser = crate::parse_size, default_value = "64KiB")]
    min: u64,
    /// Average block.
    #[arg(long, value_parser = crate::parse_size, default_value = "256KiB")]
    avg: u64,
    /// Largest block.
    #[arg(long, value_parser = crate::parse_size, default_value = "1MiB")]
    max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Sink {
    Fs,
    Null,
}

/// A block store that hashes and forgets: ingest through it measures chunking and hashing alone.
struct NullStore;

impl BlockStore for NullStore {
    fn has(&self, _: &BlockId) -> cairn_store::Result<bool> {
        Ok(false)
    }

    fn put_many(&self, blocks: &[&[u8]]) -> cairn_store::Result<Vec<Put>> {
        Ok(blocks
            .par_iter()
            .map(|data| Put {
                id: BlockId::of(data),
                size: data.len() as u64,
                new: true,
                stored_size: data.len() as u64,
            })
            .collect())
    }

    fn get(&self, id: &BlockId) -> cairn_store::Result<Vec<u8>> {
        Err(cairn_store::Error::BlockMissing(*id))
    }

    fn delete(&self, _: &BlockId) -> cairn_store::Result<bool> {
        Ok(false)
    }

    fn list(&self) -> cairn_store::Result<Vec<BlockId>> {
        Ok(Vec::new())
    }

    fn sync(&self) -> cairn_store::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Serialize)]
struct IngestReport {
    sink: &'static str,
    files: u64,
    bytes: u64,
    blocks: u64,
    unique_blocks: u64,
    stored_bytes: u64,
    node_bytes: u64,
    seconds: f64,
    hash_only_seconds: f64,
    ingest_mib_s: f64,
    hash_only_mib_s: f64,
    ratio_to_hash_only: f64,
    peak_rss_bytes: u64,
    problems: u64,
    threads: usize,
    chunk_min: u32,
    chunk_avg: u32,
    chunk_max: u32,
    compression: bool,
}

pub(crate) fn ingest(args: &IngestArgs) -> Result<()> {
    let chunk = ChunkConfig::new(to_u32(args.min)?, to_u32(args.avg)?, to_u32(args.max)?)?;
    let files = list_files(&args.path)?;
    // A first pass warms the page cache so both timed passes read from memory.
    hash_only(&files)?;
    let store_dir = match &args.store_parent {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .context("creating the temporary store")?;
    let options = FsStoreOptions {
        compression: if args.no_compress {
            Compression::None
        } else {
            Compression::Zstd {
                level: args.zstd_level,
            }
        },
    };
    reset_peak_rss();
    let started = Instant::now();
    let built = match args.sink {
        Sink::Fs => {
            let store = FsBlockStore::open(store_dir.path(), options)?;
            let built = build_tree(&args.path, &store, &BuildOptions { chunk })?;
            drop(store);
            built
        }
        Sink::Null => build_tree(&args.path, &NullStore, &BuildOptions { chunk })?,
    };
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_bytes = peak_rss()?;
    let (hashed, hash_time) = hash_only(&files)?;
    if hashed != built.stats.bytes {
        bail!(
            "hash-only read {hashed} bytes but ingest read {}; did the data change?",
            built.stats.bytes
        );
    }
    let mib = built.stats.bytes as f64 / (1 << 20) as f64;
    let hash_only_seconds = hash_time.as_secs_f64();
    let report = IngestReport {
        sink: match args.sink {
            Sink::Fs => "fs",
            Sink::Null => "null",
        },
        files: built.stats.files,
        bytes: built.stats.bytes,
        blocks: built.stats.blocks,
        unique_blocks: built.stats.new_blocks,
        stored_bytes: built.stats.stored_size + built.stats.node_size,
        node_bytes: built.stats.node_size,
        seconds,
        hash_only_seconds,
        ingest_mib_s: mib / seconds,
        hash_only_mib_s: mib / hash_only_seconds,
        ratio_to_hash_only: hash_only_seconds / seconds,
        peak_rss_bytes,
        problems: built.problems.len() as u64,
        threads: rayon::current_num_threads(),
        chunk_min: chunk.min_size(),
        chunk_avg: chunk.avg_size(),
        chunk_max: chunk.max_size(),
        compression: !args.no_compress,
    };
    for problem in &built.problems {
        tracing_free_warn(&format!(
            "skipped '{}': {}",
            problem.path.display(),
            problem.error
        ));
    }
    if args.json {
        print_json(&report)
    } else {
        print_lines(&[
            format!("files            {}", report.files),
            format!("bytes            {} ({mib:.1} MiB)", report.bytes),
            format!(
                "blocks           {} ({} unique)",
                report.blocks, report.unique_blocks
            ),
            format!(
                "stored           {} bytes ({} in tree nodes)",
                report.stored_bytes, report.node_bytes
            ),
            format!(
                "ingest           {seconds:.3} s, {:.0} MiB/s",
                report.ingest_mib_s
            ),
            format!(
                "hash only        {hash_only_seconds:.3} s, {:.0} MiB/s",
                report.hash_only_mib_s
            ),
            format!("ingest/hash-only {:.2}x", report.ratio_to_hash_only),
            format!(
                "peak RSS         {:.1} MiB",
                report.peak_rss_bytes as f64 / (1 << 20) as f64
            ),
        ])
    }
}

/// Regular files under `root`, not following symlinks.
fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing '{}'", dir.display()))? {
            let entry = entry.with_context(|| format!("listing '{}'", dir.display()))?;
            let kind = entry
                .file_type()
                .with_context(|| format!("reading '{}'", entry.path().display()))?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// BLAKE3 over every file with the same thread pool as ingest: files in parallel, and large
/// buffers hashed with BLAKE3's own rayon parallelism, so one large file also uses every core.
/// Each thread reuses one read buffer, as a tuned hasher would.
fn hash_only(files: &[PathBuf]) -> Result<(u64, Duration)> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 8 << 20]);
    }
    let started = Instant::now();
    let bytes = files
        .par_iter()
        .map(|path| -> Result<u64> {
            let mut file =
                fs::File::open(path).with_context(|| format!("opening '{}'", path.display()))?;
            let mut hasher = blake3::Hasher::new();
            let mut total = 0u64;
            BUFFER.with_borrow_mut(|buf| -> Result<()> {
                loop {
                    let n = file
                        .read(buf)
                        .with_context(|| format!("reading '{}'", path.display()))?;
                    if n == 0 {
                        return Ok(());
                    }
                    if n >= 1 << 20 {
                        hasher.update_rayon(&buf[..n]);
                    } else {
                        hasher.update(&buf[..n]);
                    }
                    total += n as u64;
                }
            })?;
            std::hint::black_box(hasher.finalize());
            Ok(total)
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    Ok((bytes, started.elapsed()))
}

/// Arguments of `cairn-bench edit-cost`.
#[derive(Debug, clap::Args)]
pub(crate) struct EditCostArgs {
    /// Size of the file.
    #[arg(long, value_parser = crate::parse_size, default_value = "64MiB")]
    size: u64,
    /// Bytes inserted.
    #[arg(long, default_value_t = 100)]
    insert: usize,
    /// Insert positions tried (spread evenly over the file).
    #[arg(long, default_value_t = 32)]
    positions: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct EditCostReport {
    file_bytes: u64,
    insert_bytes: usize,
    positions: u64,
    avg_block_bytes: u32,
    new_bytes_median: u64,
    new_bytes_mean: u64,
    new_bytes_max: u64,
    median_in_avg_blocks: f64,
    mean_in_avg_blocks: f64,
}

pub(crate) fn edit_cost(args: &EditCostArgs) -> Result<()> {
    let cfg = ChunkConfig::DEFAULT;
    let mut data = vec![0u8; usize::try_from(args.size)?];
    SmallRng::seed_from_u64(7).fill_bytes(&mut data);
    let old: HashSet<BlockId> = cut(&data, &cfg).map(|r| BlockId::of(&data[r])).collect();
    let mut costs: Vec<u64> = (0..args.positions)
        .into_par_iter()
        .map(|idx| {
            let at =
                usize::try_from(args.size * (2 * idx + 1) / (2 * args.positions)).expect("fits");
            let mut edited = Vec::with_capacity(data.len() + args.insert);
            edited.extend_from_slice(&data[..at]);
            let mut insert = vec![0u8; args.insert];
            SmallRng::seed_from_u64(idx).fill_bytes(&mut insert);
            edited.extend_from_slice(&insert);
            edited.extend_from_slice(&data[at..]);
            cut(&edited, &cfg)
                .filter(|r| !old.contains(&BlockId::of(&edited[r.clone()])))
                .map(|r| (r.end - r.start) as u64)
                .sum()
        })
        .collect();
    costs.sort_unstable();
    let avg = f64::from(cfg.avg_size());
    let mean = costs.iter().sum::<u64>() / costs.len().max(1) as u64;
    let median = costs.get(costs.len() / 2).copied().unwrap_or(0);
    let report = EditCostReport {
        file_bytes: args.size,
        insert_bytes: args.insert,
        positions: args.positions,
        avg_block_bytes: cfg.avg_size(),
        new_bytes_median: median,
        new_bytes_mean: mean,
        new_bytes_max: costs.last().copied().unwrap_or(0),
        median_in_avg_blocks: median as f64 / avg,
        mean_in_avg_blocks: mean as f64 / avg,
    };
    if args.json {
        print_json(&report)
    } else {
        print_lines(&[format!(
            "{}-byte insert into {} bytes: new data median {} ({:.2} avg blocks), mean {} ({:.2}), max {}",
            report.insert_bytes,
            report.file_bytes,
            report.new_bytes_median,
            report.median_in_avg_blocks,
            report.new_bytes_mean,
            report.mean_in_avg_blocks,
            report.new_bytes_max
        )])
    }
}

/// Arguments of `cairn-bench dir-change`.
#[derive(Debug, clap::Args)]
pub(crate) struct DirChangeArgs {
    /// Entries in the directory.
    #[arg(long, default_value_t = 100_000)]
    entries: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct DirChangeReport {
    entries: u32,
    nodes: usize,
    whole_dir_bytes: u64,
    edit_new_bytes: u64,
    insert_new_bytes: u64,
    remove_new_bytes: u64,
    rechunk_seconds: f64,
}

pub(crate) fn dir_change(args: &DirChangeArgs) -> Result<()> {
    let entry = |idx: u32, seed: u8| -> Result<DirEntry> {
        Ok(DirEntry {
            name: Name::new(format!("IMG_{idx:07}.jpg").into_bytes())?,
            kind: EntryKind::File,
            size: 3_000_000 + u64::from(idx),
            mtime_ns: 1_700_000_000_000_000_000 + i64::from(idx) * 1_000_000_007,
            mode: 0o644,
            child: NodeId::of(&[seed, (idx % 251) as u8, (idx / 251) as u8]),
        })
    };
    let base: Vec<DirEntry> = (0..args.entries)
        .map(|i| entry(i, 0))
        .collect::<Result<_>>()?;
    let store = MemBlockStore::new();
    let dir = chunk_dir(base.clone())?;
    store_dir(&store, &dir)?;
    let whole_dir_bytes = store.stored_size();
    let cost = |entries: Vec<DirEntry>| -> Result<(u64, Duration)> {
        let started = Instant::now();
        let chunked = chunk_dir(entries)?;
        let elapsed = started.elapsed();
        let puts = store_dir(&store, &chunked)?;
        Ok((puts.iter().filter(|p| p.new).map(|p| p.size).sum(), elapsed))
    };
    let mid = (args.entries / 2) as usize;
    let mut edited = base.clone();
    edited[mid] = entry(mid as u32, 1)?;
    let (edit_new_bytes, rechunk) = cost(edited)?;
    let mut inserted = base.clone();
    let mut extra = entry(mid as u32, 2)?;
    extra.name = Name::new(format!("IMG_{mid:07}.jpg.edited").into_bytes())?;
    inserted.insert(mid + 1, extra);
    let (insert_new_bytes, _) = cost(inserted)?;
    let mut removed = base;
    removed.remove(mid / 2);
    let (remove_new_bytes, _) = cost(removed)?;
    let report = DirChangeReport {
        entries: args.entries,
        nodes: dir.nodes.len(),
        whole_dir_bytes,
        edit_new_bytes,
        insert_new_bytes,
        remove_new_bytes,
        rechunk_seconds: rechunk.as_secs_f64(),
    };
    if args.json {
        print_json(&report)
    } else {
        print_lines(&[
            format!(
                "{} entries in {} nodes, {} bytes",
                report.entries, report.nodes, report.whole_dir_bytes
            ),
            format!(
                "new node bytes: edit {}, insert {}, remove {}",
                edit_new_bytes, insert_new_bytes, remove_new_bytes
            ),
            format!(
                "re-chunking the directory took {:.1} ms",
                report.rechunk_seconds * 1000.0
            ),
        ])
    }
}

fn default_zstd_level() -> i32 {
    match FsStoreOptions::DEFAULT.compression {
        Compression::Zstd { level } => level,
        Compression::None => 1,
    }
}

fn to_u32(value: u64) -> Result<u32> {
    u32::try_from(value).with_context(|| format!("{value} is too large for a block size"))
}

/// Resets the kernel's peak-RSS mark (VmHWM) so the next reading covers only what follows.
fn reset_peak_rss() {
    // Writing "5" to clear_refs resets VmHWM (Linux >= 4.0). If it fails, the reading covers the
    // whole process, which only overstates the figure.
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process, from /proc/self/status.
fn peak_rss() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmHWM line")?
        .parse()
        .context("malformed VmHWM value")?;
    Ok(kib * 1024)
}

#[allow(clippy::print_stdout, reason = "the harness's output is its product")]
fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the harness's output is its product")]
fn print_lines(lines: &[String]) -> Result<()> {
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

#[allow(
    clippy::print_stderr,
    reason = "problems go to stderr so --json stays one object"
)]
fn tracing_free_warn(message: &str) {
    eprintln!("cairn-bench: warning: {message}");
}

/// Prints a report as one JSON object, or as the text lines `text` gives.
pub(crate) fn emit<T: Serialize>(
    report: &T,
    json: bool,
    text: impl FnOnce() -> Vec<String>,
) -> Result<()> {
    if json {
        print_json(report)
    } else {
        print_lines(&text())
    }
}

/// Arguments of `cairn-bench gc-cost`.
#[derive(Debug, clap::Args)]
pub(crate) struct GcCostArgs {
    /// Directory whose files are stored twice, then collected as garbage.
    path: PathArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Where the temporary block stores are created (default: the system temp directory).
    #[arg(long)]
    store_parent: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct GcCostReport {
    objects: u64,
    nodes: u64,
    /// Baseline: every object deleted in list order (the collector before nodes were ordered).
    list_order_seconds: f64,
    /// Finding the nodes among the objects (a two-byte peek each, node-like ones read whole).
    classify_seconds: f64,
    /// Ordering them, parents first.
    plan_seconds: f64,
    /// Deleting in that order.
    sweep_seconds: f64,
    /// (classify + plan + sweep) / list order.
    ratio_to_list_order: f64,
}

/// What ordering the collector's sweep costs: the same tree is stored in two fresh stores with
/// nothing referencing it; one is swept in list order, the other classified, planned and swept
/// parents first. Both delete everything.
pub(crate) fn gc_cost(args: &GcCostArgs) -> Result<()> {
    let parent = || match &args.store_parent {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    };
    let (a, b) = (parent()?, parent()?);
    let options = BuildOptions {
        chunk: ChunkConfig::DEFAULT,
    };
    let cutoff = std::time::SystemTime::now() + Duration::from_secs(3600);
    let mut stores = Vec::new();
    for dir in [&a, &b] {
        let store = FsBlockStore::open(dir.path(), FsStoreOptions::DEFAULT)?;
        build_tree(&args.path, &store, &options)?;
        store.sync()?;
        stores.push(store);
    }

    let started = Instant::now();
    let listed = stores[0].list()?;
    for id in &listed {
        stores[0].delete_if_older(id, cutoff)?;
    }
    let list_order_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let candidates = stores[1].list()?;
    let nodes = cairn_store::gc::garbage_nodes(&stores[1], &candidates)?;
    let node_count = nodes.len() as u64;
    let classify_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let garbage = cairn_store::gc::Garbage::plan(candidates, nodes);
    let plan_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let swept = garbage.sweep(|id| stores[1].delete_if_older(id, cutoff))?;
    let sweep_seconds = started.elapsed().as_secs_f64();
    if swept.deleted != listed.len() as u64 || !stores[1].list()?.is_empty() {
        bail!(
            "the ordered sweep deleted {} of {} objects",
            swept.deleted,
            listed.len()
        );
    }
    let report = GcCostReport {
        objects: listed.len() as u64,
        nodes: node_count,
        list_order_seconds,
        classify_seconds,
        plan_seconds,
        sweep_seconds,
        ratio_to_list_order: (classify_seconds + plan_seconds + sweep_seconds) / list_order_seconds,
    };
    if args.json {
        print_json(&report)
    } else {
        print_lines(&[
            format!(
                "objects          {} ({} nodes)",
                report.objects, report.nodes
            ),
            format!("list order       {:.3} s", report.list_order_seconds),
            format!(
                "ordered          {:.3} s (classify {:.3}, plan {:.3}, sweep {:.3}) = {:.2}x",
                report.classify_seconds + report.plan_seconds + report.sweep_seconds,
                report.classify_seconds,
                report.plan_seconds,
                report.sweep_seconds,
                report.ratio_to_list_order
            ),
        ])
    }
}
