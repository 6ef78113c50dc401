//! Every bound of the store's formats, in one place, with its reasoning in numbers.
//!
//! Other crates and the docs name these constants rather than repeating the numbers.

/// Largest block the store accepts: 16 MiB.
///
/// The chunker's largest allowed `max_size` is fastcdc's own ceiling (16 MiB); tree nodes are
/// stored as blocks too and are bounded by [`NODE_SIZE_MAX`], which is the same figure.
pub const BLOCK_SIZE_MAX: u32 = 16 * 1024 * 1024;

/// Largest encoded tree node: 16 MiB.
///
/// A file node costs ~34 bytes per block, so this admits ~490,000 blocks: ~120 GiB at the default
/// 256 KiB average block size. Directory nodes are split long before this (see
/// [`DIR_CHUNK_SIZE_MAX`]).
pub const NODE_SIZE_MAX: u32 = BLOCK_SIZE_MAX;

/// Longest name of one directory entry: 1,024 bytes.
///
/// Plain names on Linux stop at 255 bytes; the headroom is for encrypted names (ciphertext plus
/// a 16-byte tag, then an encoding), which are stored as opaque bytes.
pub const NAME_BYTES_MAX: u32 = 1024;

/// Longest symlink target: 4,096 bytes, Linux's `PATH_MAX`.
pub const SYMLINK_TARGET_BYTES_MAX: u32 = 4096;

/// A directory chunk is not cut before it holds this many encoded bytes: 2 KiB.
///
/// Keeps chunks from degenerating into single entries when several names in a row happen to
/// hash to a boundary.
pub const DIR_CHUNK_SIZE_MIN: u32 = 2 * 1024;

/// A directory chunk is always cut before it would exceed this many bytes: 32 KiB.
///
/// With [`DIR_CHUNK_BOUNDARY_ODDS`] the average chunk is ~ 2 KiB + 64 entries (~6-8 KiB), so
/// changing one entry of a 100,000-entry directory rewrites one leaf, one index node per level
/// (two levels at 100k entries) and nothing else: well under the 64 KiB the design allows, even when
/// the cap forces a cut.
pub const DIR_CHUNK_SIZE_MAX: u32 = 32 * 1024;

/// One entry in this many ends a directory chunk (content-defined, decided by its name's hash).
pub const DIR_CHUNK_BOUNDARY_ODDS: u32 = 64;

/// Deepest index level of a chunked directory: 16.
///
/// Each level multiplies fan-out by ~64, so 4 levels already cover 10^7 entries; 16 is a bound
/// for decoders, not a size anyone reaches.
pub const DIR_INDEX_LEVEL_MAX: u8 = 16;

/// Deepest directory nesting a tree walk follows: 256 levels.
///
/// Recursion depth is bounded so a hostile or looping tree cannot exhaust a thread's stack.
pub const TREE_DEPTH_MAX: u32 = 256;

/// How often a file that changed while it was read is read again before it is reported: 3 times.
pub const READ_RETRIES_MAX: u32 = 3;

/// Size of the read buffer of a streaming chunker: 8 MiB.
///
/// Big enough for ~32 average blocks per batch (so the blocks of one large file hash in parallel),
/// small enough that memory stays flat: one buffer per file being read, at most one per thread.
pub const CHUNK_BUFFER_SIZE: usize = 8 * 1024 * 1024;

/// Blocks written but not yet made durable before the store flushes them: 512.
///
/// Flushing fsyncs the whole batch together, so many small blocks cost one flush instead of one
/// fsync each; 512 average blocks is 128 MiB of unflushed data at most.
pub const PENDING_BLOCKS_MAX: usize = 512;

/// Bytes written but not yet made durable before the store flushes them: 128 MiB.
pub const PENDING_SIZE_MAX: u64 = 128 * 1024 * 1024;

/// Size at which the local store starts a new pack file: 64 MiB.
///
/// Big enough that a terabyte is ~16,000 files, small enough that compacting a pack after
/// deletions copies little.
pub const PACK_SIZE_TARGET: u64 = 64 * 1024 * 1024;

const _: () = assert!(CHUNK_BUFFER_SIZE >= 2 * (crate::chunk::CHUNK_SIZE_MAX_LIMIT as usize));
const _: () = assert!(DIR_CHUNK_SIZE_MAX >= 4 * DIR_CHUNK_SIZE_MIN);
const _: () = assert!(DIR_CHUNK_SIZE_MAX >= 2 * NAME_BYTES_MAX + 128);
const _: () = assert!(NODE_SIZE_MAX >= DIR_CHUNK_SIZE_MAX);
