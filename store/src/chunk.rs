//! Content-defined chunking: where a byte stream is cut into blocks.
//!
//! Cuts are FastCDC (2020 algorithm, normalisation level 1, the `fastcdc` crate's default gear
//! table), so they depend only on the bytes near them: inserting bytes into a file moves the
//! boundaries next to the insertion and no others, and the blocks after it keep their ids.
//!
//! [`cut`] is the pure decision over a slice. [`ChunkReader`] is the streaming shell: it reads any
//! [`Read`] through one fixed buffer ([`crate::limits::CHUNK_BUFFER_SIZE`]) and hands out batches
//! of complete blocks, so memory stays flat whatever the file size. It does not hash or store.

use std::io::{self, Read};
use std::ops::Range;

use fastcdc::v2020;

use crate::limits::CHUNK_BUFFER_SIZE;
use crate::{Error, Result};

/// Smallest `min_size` fastcdc accepts.
pub const CHUNK_SIZE_MIN_LIMIT: u32 = 64;
/// Largest `max_size` Cairn accepts: 4 MiB, so a [`ChunkReader`] buffer holds two maximal blocks.
pub const CHUNK_SIZE_MAX_LIMIT: u32 = 4 * 1024 * 1024;

/// Block size parameters of FastCDC.
///
/// The fields are private: [`ChunkConfig::new`] checks them once, so every `ChunkConfig` is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    min_size: u32,
    avg_size: u32,
    max_size: u32,
}

impl ChunkConfig {
    /// Cairn's chunking: min 64 KiB, average 256 KiB, max 1 MiB.
    ///
    /// Measured by `cairn-bench` (see BENCHMARKS.md): larger blocks cost dedup on small edits,
    /// smaller ones cost per-block overhead (ids in file nodes, files in the store).
    pub const DEFAULT: ChunkConfig = ChunkConfig {
        min_size: 64 * 1024,
        avg_size: 256 * 1024,
        max_size: 1024 * 1024,
    };

    /// A configuration with the given sizes in bytes.
    ///
    /// # Errors
    /// [`Error::ChunkConfig`] unless `64 <= min < avg < max <= 4 MiB`, all even, and
    /// `avg >= 256` (fastcdc's smallest average).
    pub fn new(min_size: u32, avg_size: u32, max_size: u32) -> Result<Self> {
        let fail = |why: String| Err(Error::ChunkConfig(why));
        if min_size < CHUNK_SIZE_MIN_LIMIT || avg_size < 256 || max_size > CHUNK_SIZE_MAX_LIMIT {
            return fail(format!(
                "sizes {min_size}/{avg_size}/{max_size} out of range; need min >= {CHUNK_SIZE_MIN_LIMIT}, avg >= 256, max <= {CHUNK_SIZE_MAX_LIMIT}"
            ));
        }
        if !(min_size < avg_size && avg_size < max_size) {
            return fail(format!(
                "sizes {min_size}/{avg_size}/{max_size} must satisfy min < avg < max"
            ));
        }
        if ![min_size, avg_size, max_size]
            .iter()
            .all(|s| s.is_multiple_of(2))
        {
            return fail(format!(
                "sizes {min_size}/{avg_size}/{max_size} must be even"
            ));
        }
        Ok(ChunkConfig {
            min_size,
            avg_size,
            max_size,
        })
    }

    /// Smallest block, in bytes (only the last block of a stream may be smaller).
    pub fn min_size(&self) -> u32 {
        self.min_size
    }

    /// Target average block, in bytes.
    pub fn avg_size(&self) -> u32 {
        self.avg_size
    }

    /// Largest block, in bytes.
    pub fn max_size(&self) -> u32 {
        self.max_size
    }
}

/// Precomputed FastCDC masks for one [`ChunkConfig`].
#[derive(Debug, Clone, Copy)]
struct Masks {
    small: u64,
    large: u64,
}

impl Masks {
    fn new(cfg: &ChunkConfig) -> Self {
        let (small, large) =
            v2020::select_masks(usize_of(cfg.avg_size), v2020::Normalization::Level1);
        Masks { small, large }
    }
}

fn usize_of(value: u32) -> usize {
    usize::try_from(value).expect("u32 fits in usize on every supported target")
}

/// Length of the next block at the start of `window`, or `None` if more bytes are needed.
///
/// `at_eof` says the window holds the end of the stream; then the remainder of the window is a
/// block even when shorter than `min_size`. Without it, a cut is only decided once the window
/// holds `max_size` bytes, so a streaming cut equals the cut over the whole input.
fn next_cut(window: &[u8], cfg: &ChunkConfig, masks: Masks, at_eof: bool) -> Option<usize> {
    if window.is_empty() || (!at_eof && window.len() < usize_of(cfg.max_size)) {
        return None;
    }
    let (_, len) = v2020::cut(
        window,
        usize_of(cfg.min_size),
        usize_of(cfg.avg_size),
        usize_of(cfg.max_size),
        masks.small,
        masks.large,
        masks.small << 1,
        masks.large << 1,
    );
    debug_assert!(len > 0 && len <= window.len());
    Some(len)
}

/// The block boundaries of a complete input, as byte ranges in order.
///
/// The ranges cover `data` exactly, without gaps; every range is within
/// `[min_size, max_size]` except the last, which may be shorter.
pub fn cut<'a>(data: &'a [u8], cfg: &ChunkConfig) -> impl Iterator<Item = Range<usize>> + 'a {
    let cfg = *cfg;
    let masks = Masks::new(&cfg);
    let mut start = 0;
    std::iter::from_fn(move || {
        let len = next_cut(&data[start..], &cfg, masks, true)?;
        let range = start..start + len;
        start += len;
        Some(range)
    })
}

/// A streaming chunker over any reader, with one fixed buffer.
///
/// Call [`ChunkReader::next_batch`] until it returns `None`; each batch is a run of complete
/// blocks that are valid until the next call.
#[derive(Debug)]
pub struct ChunkReader<R> {
    reader: R,
    cfg: ChunkConfig,
    masks: Masks,
    buf: Box<[u8]>,
    /// Bytes `start..end` of `buf` are read but not yet handed out.
    start: usize,
    end: usize,
    eof: bool,
    cuts: Vec<Range<usize>>,
}

/// Complete blocks handed out by [`ChunkReader::next_batch`].
#[derive(Debug)]
pub struct Batch<'a> {
    data: &'a [u8],
    cuts: &'a [Range<usize>],
}

impl<'a> Batch<'a> {
    /// The blocks of this batch, in stream order.
    pub fn blocks(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.cuts.iter().map(move |range| &data[range.clone()])
    }

    /// The blocks as a vector of slices (for batch APIs such as [`crate::BlockStore::put_many`]).
    pub fn to_vec(&self) -> Vec<&'a [u8]> {
        self.blocks().collect()
    }

    /// Total bytes in the batch.
    pub fn size(&self) -> u64 {
        self.cuts.iter().map(|r| (r.end - r.start) as u64).sum()
    }
}

impl<R: Read> ChunkReader<R> {
    /// A chunker reading from `reader` with a new buffer.
    pub fn new(reader: R, cfg: &ChunkConfig) -> Self {
        Self::with_buffer(reader, cfg, new_buffer())
    }

    /// A chunker reading from `reader` into `buf` (from [`new_buffer`] or
    /// [`ChunkReader::into_buffer`]): reusing buffers saves zeroing 8 MiB per file.
    ///
    /// # Panics
    /// If `buf` is not [`CHUNK_BUFFER_SIZE`] bytes long (a programming error).
    pub fn with_buffer(reader: R, cfg: &ChunkConfig, buf: Box<[u8]>) -> Self {
        assert_eq!(
            buf.len(),
            CHUNK_BUFFER_SIZE,
            "chunk buffers are CHUNK_BUFFER_SIZE bytes"
        );
        ChunkReader {
            reader,
            cfg: *cfg,
            masks: Masks::new(cfg),
            buf,
            start: 0,
            end: 0,
            eof: false,
            cuts: Vec::new(),
        }
    }

    /// The next run of complete blocks, or `None` at the end of the stream.
    ///
    /// # Errors
    /// Any error of the underlying reader (`Interrupted` is retried).
    pub fn next_batch(&mut self) -> io::Result<Option<Batch<'_>>> {
        self.refill()?;
        self.cuts.clear();
        let mut pos = self.start;
        while let Some(len) = next_cut(&self.buf[pos..self.end], &self.cfg, self.masks, self.eof) {
            self.cuts.push(pos..pos + len);
            pos += len;
        }
        if self.cuts.is_empty() {
            debug_assert!(self.eof && self.start == self.end);
            return Ok(None);
        }
        let data_start = self.start;
        self.start = pos;
        Ok(Some(Batch {
            data: &self.buf,
            cuts: {
                debug_assert!(self.cuts[0].start == data_start);
                &self.cuts
            },
        }))
    }

    /// Moves the unconsumed tail to the front and reads until the buffer is full or at EOF.
    fn refill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Gives the buffer back for reuse.
    pub fn into_buffer(self) -> Box<[u8]> {
        self.buf
    }
}

/// A zeroed buffer of [`CHUNK_BUFFER_SIZE`] bytes for [`ChunkReader::with_buffer`].
pub fn new_buffer() -> Box<[u8]> {
    vec![0; CHUNK_BUFFER_SIZE].into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng, rngs::SmallRng};

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0; len];
        SmallRng::seed_from_u64(seed).fill_bytes(&mut data);
        data
    }

    fn small_cfg() -> ChunkConfig {
        ChunkConfig::new(256, 1024, 4096).expect("valid")
    }

    /// A reader that returns at most `step` bytes per call, to exercise refills.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream_blocks(data: &[u8], cfg: &ChunkConfig, step: usize) -> Vec<Vec<u8>> {
        let mut reader = ChunkReader::new(Trickle { data, step }, cfg);
        let mut out = Vec::new();
        while let Some(batch) = reader.next_batch().expect("in-memory read") {
            out.extend(batch.blocks().map(<[u8]>::to_vec));
        }
        out
    }

    #[test]
    fn config_validation() {
        assert!(ChunkConfig::new(64 * 1024, 256 * 1024, 1024 * 1024).is_ok());
        for (min, avg, max) in [
            (32, 256, 1024),
            (1024, 512, 4096),
            (256, 1024, 8 << 20),
            (257, 1024, 4096),
        ] {
            let err = ChunkConfig::new(min, avg, max).expect_err("must be refused");
            assert!(
                err.to_string().starts_with("invalid chunk configuration"),
                "{err}"
            );
        }
    }

    #[test]
    fn empty_input_has_no_blocks() {
        assert_eq!(cut(&[], &ChunkConfig::DEFAULT).count(), 0);
        assert!(stream_blocks(&[], &small_cfg(), 7).is_empty());
    }

    #[test]
    fn streaming_matches_whole_input_across_buffer_refills() {
        // 3x the buffer so the stream wraps several times.
        let data = random_bytes(3 * CHUNK_BUFFER_SIZE + 12345, 7);
        let cfg = ChunkConfig::DEFAULT;
        let whole: Vec<Vec<u8>> = cut(&data, &cfg).map(|r| data[r].to_vec()).collect();
        let streamed = stream_blocks(&data, &cfg, 1 << 20);
        assert_eq!(whole.len(), streamed.len());
        assert!(
            whole == streamed,
            "streamed blocks differ from whole-input blocks"
        );
    }

    #[test]
    fn insert_moves_only_nearby_boundaries() {
        // Goal: a 100-byte insert into a 64 MiB file adds at most 2 average-size blocks of new
        // data. Which block the insert lands in is chance (large blocks are likelier targets), so
        // the figure is the mean over 8 insert positions.
        let cfg = ChunkConfig::DEFAULT;
        let original = random_bytes(64 << 20, 42);
        let old: std::collections::HashSet<&[u8]> =
            cut(&original, &cfg).map(|r| &original[r]).collect();
        let mut total_new = 0;
        for (idx, at) in (0..8).map(|i| (i, (i * 8 + 3) << 20)) {
            let mut edited = original.clone();
            edited.splice(at..at, random_bytes(100, idx as u64));
            let new_bytes: usize = cut(&edited, &cfg)
                .map(|r| &edited[r])
                .filter(|block| !old.contains(block))
                .map(<[u8]>::len)
                .sum();
            assert!(new_bytes > 0, "the insert at {at} must show up somewhere");
            assert!(
                new_bytes <= 3 * cfg.max_size() as usize,
                "{new_bytes} new bytes for one insert"
            );
            total_new += new_bytes;
        }
        let mean = total_new / 8;
        assert!(
            mean <= 2 * cfg.avg_size() as usize,
            "mean of {mean} new bytes per insert"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn blocks_cover_input_and_respect_sizes(len in 0usize..40_000, seed: u64, step in 1usize..9000) {
            let cfg = small_cfg();
            let data = random_bytes(len, seed);
            let ranges: Vec<_> = cut(&data, &cfg).collect();
            let mut pos = 0;
            for (idx, range) in ranges.iter().enumerate() {
                prop_assert_eq!(range.start, pos);
                let size = range.end - range.start;
                prop_assert!(size <= cfg.max_size() as usize);
                if idx + 1 < ranges.len() {
                    prop_assert!(size >= cfg.min_size() as usize);
                }
                pos = range.end;
            }
            prop_assert_eq!(pos, data.len());
            let streamed = stream_blocks(&data, &cfg, step);
            prop_assert_eq!(streamed.concat(), data.clone());
            prop_assert_eq!(streamed.len(), ranges.len());
        }

        #[test]
        fn edits_keep_distant_blocks(seed: u64, at_frac in 0.0f64..1.0, insert_len in 1usize..64) {
            // Chunking stability: blocks well before and well after an insertion survive it.
            let cfg = small_cfg();
            let data = random_bytes(60_000, seed);
            let at = (at_frac * data.len() as f64) as usize;
            let mut edited = data.clone();
            edited.splice(at..at, random_bytes(insert_len, seed ^ 1));
            let new: std::collections::HashSet<&[u8]> = cut(&edited, &cfg).map(|r| &edited[r]).collect();
            let max = cfg.max_size() as usize;
            for range in cut(&data, &cfg) {
                let far_before = range.end + max < at;
                let far_after = range.start > at + 8 * max;
                if far_before || far_after {
                    prop_assert!(new.contains(&data[range.clone()]), "block {:?} lost (insert at {})", range, at);
                }
            }
        }
    }
}
