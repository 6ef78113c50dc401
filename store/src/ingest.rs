//! Ingest: a byte stream or a file on disk becomes stored blocks and a [`FileNode`].
//!
//! This is the shell around [`crate::chunk`]: it reads through a [`ChunkReader`] and hands each
//! batch to [`BlockStore::put_many`], which hashes the batch's blocks in parallel. Memory is one
//! chunk buffer per file being read. A file that changes while it is read is read again, so a
//! stored file is never a mix of old and new bytes.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::chunk::{ChunkReader, new_buffer};
use crate::limits::READ_RETRIES_MAX;
use crate::node::{BlockRef, FileNode};
use crate::{BlockStore, ChunkConfig, Error, Put, Result};

/// Blocks and figures of one ingested stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ingested {
    /// The stream's blocks, in order.
    pub blocks: Vec<BlockRef>,
    /// Bytes read.
    pub size: u64,
    /// Blocks that were new to the store.
    pub new_blocks: u64,
    /// Bytes added to the store (after compression).
    pub stored_size: u64,
}

/// Chunks `reader` and stores every block.
///
/// `label` names the stream in errors (a path, or an upload's name).
///
/// # Errors
/// [`Error::Io`] when reading fails; store errors.
pub fn ingest_reader(
    reader: impl Read,
    label: &Path,
    store: &(impl BlockStore + ?Sized),
    cfg: &ChunkConfig,
) -> Result<Ingested> {
    ingest_reader_by(reader, label, cfg, |blocks| store.put_many(blocks))
}

/// [`ingest_reader`] with `store_batch` doing the storing: it is given each batch of blocks in
/// order and returns their [`Put`]s, as [`BlockStore::put_many`] does. A caller wraps the store
/// in what it must do around each batch (admission before, bookkeeping after); an error from it
/// stops the ingest, the batches before it stored.
///
/// # Errors
/// [`Error::Io`] when reading fails; what `store_batch` returns.
pub fn ingest_reader_by<E: From<Error>>(
    reader: impl Read,
    label: &Path,
    cfg: &ChunkConfig,
    store_batch: impl FnMut(&[&[u8]]) -> std::result::Result<Vec<Put>, E>,
) -> std::result::Result<Ingested, E> {
    let buf = BUFFER.take().unwrap_or_else(new_buffer);
    let mut chunks = ChunkReader::with_buffer(reader, cfg, buf);
    let result = store_batches(&mut chunks, label, store_batch);
    BUFFER.set(Some(chunks.into_buffer()));
    result
}

fn store_batches<E: From<Error>>(
    chunks: &mut ChunkReader<impl Read>,
    label: &Path,
    mut store_batch: impl FnMut(&[&[u8]]) -> std::result::Result<Vec<Put>, E>,
) -> std::result::Result<Ingested, E> {
    let mut out = Ingested::default();
    while let Some(batch) = chunks
        .next_batch()
        .map_err(|e| Error::io("reading", label, e))?
    {
        let puts = store_batch(&batch.to_vec())?;
        for put in puts {
            out.size += put.size;
            out.new_blocks += u64::from(put.new);
            out.stored_size += put.stored_size;
            out.blocks.push(BlockRef {
                id: put.id,
                len: u32::try_from(put.size).expect("blocks are at most BLOCK_SIZE_MAX"),
            });
        }
    }
    Ok(out)
}

/// A stored file and what storing it cost.
#[derive(Debug, Clone)]
pub struct IngestedFile {
    /// The file's node (not yet stored itself).
    pub node: FileNode,
    /// Blocks new to the store.
    pub new_blocks: u64,
    /// Bytes added to the store.
    pub stored_size: u64,
    /// The stat the content was read under (the same before and after the read): a change to
    /// the file since shows in its size, mtime or ctime.
    pub metadata: Metadata,
}

// Each thread keeps one chunk buffer: a fresh 8 MiB buffer per file was 20% of an ingest of
// many small files, spent zeroing memory.
thread_local! {
    static BUFFER: std::cell::Cell<Option<Box<[u8]>>> = const { std::cell::Cell::new(None) };
}

/// Frees the calling thread's chunk buffer (8 MiB, kept between files). A long-lived process
/// calls it on each worker after a burst of work, e.g. `rayon::broadcast(|_| release_buffer())`,
/// so an idle sync daemon does not hold 8 MiB per core.
pub fn release_buffer() {
    drop(BUFFER.take());
}

/// Chunks and stores the regular file at `path`, re-reading it if it changes meanwhile.
///
/// # Errors
/// [`Error::Io`] (including `NotFound` for a file that vanished), [`Error::Changed`] when it
/// changed on every one of [`READ_RETRIES_MAX`] reads, store errors.
pub fn ingest_file(
    path: &Path,
    store: &(impl BlockStore + ?Sized),
    cfg: &ChunkConfig,
) -> Result<IngestedFile> {
    for _ in 0..READ_RETRIES_MAX {
        let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
        let before = file
            .metadata()
            .map_err(|e| Error::io("reading metadata of", path, e))?;
        let ingested = ingest_reader(&file, path, store, cfg)?;
        let after = file
            .metadata()
            .map_err(|e| Error::io("reading metadata of", path, e))?;
        if unchanged(&before, &after) && ingested.size == after.len() {
            let node = FileNode::new(
                before.permissions().mode() & 0o7777,
                mtime_ns(&before),
                ingested.blocks,
            )?;
            return Ok(IngestedFile {
                node,
                new_blocks: ingested.new_blocks,
                stored_size: ingested.stored_size,
                metadata: before,
            });
        }
    }
    Err(Error::Changed {
        path: path.to_path_buf(),
        attempts: READ_RETRIES_MAX,
    })
}

/// Same size, mtime and ctime: the file was not written between the two looks.
fn unchanged(before: &Metadata, after: &Metadata) -> bool {
    before.len() == after.len()
        && before.mtime() == after.mtime()
        && before.mtime_nsec() == after.mtime_nsec()
        && before.ctime() == after.ctime()
        && before.ctime_nsec() == after.ctime_nsec()
}

/// Modification time in nanoseconds since the epoch (saturating far outside ±292 years).
pub fn mtime_ns(metadata: &Metadata) -> i64 {
    metadata
        .mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(metadata.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemBlockStore;

    #[test]
    fn identical_files_are_stored_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.path().join("a"), &data).expect("write");
        std::fs::write(dir.path().join("b"), &data).expect("write");
        let store = MemBlockStore::new();
        let cfg = ChunkConfig::DEFAULT;
        let a = ingest_file(&dir.path().join("a"), &store, &cfg).expect("ingest a");
        let b = ingest_file(&dir.path().join("b"), &store, &cfg).expect("ingest b");
        assert_eq!(a.node.size(), data.len() as u64);
        assert!(a.new_blocks >= 3);
        assert_eq!(b.new_blocks, 0, "the second copy adds no blocks");
        assert_eq!(b.stored_size, 0);
        assert_eq!(
            store.stored_size(),
            data.len() as u64,
            "the bytes are stored exactly once"
        );
        assert_eq!(a.node.blocks(), b.node.blocks());
    }

    #[test]
    fn missing_file_is_an_error_with_its_path() {
        let store = MemBlockStore::new();
        let err = ingest_file(
            Path::new("/nonexistent/cairn/x"),
            &store,
            &ChunkConfig::DEFAULT,
        )
        .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "opening '/nonexistent/cairn/x': No such file or directory (os error 2)"
        );
    }

    #[test]
    fn read_errors_carry_the_label() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let store = MemBlockStore::new();
        let err = ingest_reader(
            Failing,
            Path::new("upload.bin"),
            &store,
            &ChunkConfig::DEFAULT,
        )
        .expect_err("fails");
        assert_eq!(err.to_string(), "reading 'upload.bin': disk on fire");
    }
}
