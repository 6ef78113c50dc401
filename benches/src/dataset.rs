//! Deterministic data sets for the benchmarks.
//!
//! The `mixed` set imitates a user's folder: a large incompressible file (media), compressible
//! text files, a duplicated file, partly-zero binaries and many small files. Everything comes
//! from one seed, so every run and every tool sees the same bytes.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng};

use crate::PathArg;

/// Arguments of `cairn-bench gen`.
#[derive(Debug, clap::Args)]
pub(crate) struct GenArgs {
    /// Directory to create.
    path: PathArg,
    /// Approximate total size.
    #[arg(long, value_parser = crate::parse_size, default_value = "1GiB")]
    size: u64,
    /// What to generate.
    #[arg(long, value_enum, default_value = "mixed")]
    kind: Kind,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of files for `small-files`.
    #[arg(long, default_value_t = 20_000)]
    files: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    /// Media, text, duplicates, sparse binaries and small files.
    Mixed,
    /// One file of random bytes.
    BigFile,
    /// `--files` small files sharing `--size`, in 100 directories.
    SmallFiles,
}

const WORDS: &[&str] = &[
    "cairn", "block", "merkle", "sync", "folder", "the", "of", "and", "server", "client", "quic",
    "commit", "version", "a", "to", "in", "file", "hash", "tree", "node", "data", "store", "is",
    "it", "with", "chunk", "delta", "remote", "local", "base",
];

pub(crate) fn generate(args: &GenArgs) -> Result<()> {
    if args.path.exists() {
        bail!(
            "'{}' already exists; give a new directory",
            args.path.display()
        );
    }
    fs::create_dir_all(&args.path)
        .with_context(|| format!("creating '{}'", args.path.display()))?;
    let mut rng = SmallRng::seed_from_u64(args.seed);
    match args.kind {
        Kind::BigFile => write_random(&args.path.join("big.bin"), args.size, &mut rng),
        Kind::SmallFiles => small_files(&args.path, args.files, args.size, &mut rng),
        Kind::Mixed => mixed(&args.path, args.size, &mut rng),
    }
}

fn mixed(root: &Path, size: u64, rng: &mut SmallRng) -> Result<()> {
    let part = size / 10;
    // 30%: one large incompressible file, plus a 10% duplicate of another.
    write_random(&root.join("media/movie.mkv"), 3 * part, rng)?;
    write_random(&root.join("media/album.flac"), part, rng)?;
    fs::create_dir_all(root.join("backup")).context("creating backup/")?;
    fs::copy(
        root.join("media/album.flac"),
        root.join("backup/album-copy.flac"),
    )
    .context("copying the duplicate")?;
    // 20%: text documents of 1-8 MiB.
    let mut written = 0;
    let mut idx = 0;
    while written < 2 * part {
        let len = rng.random_range(1 << 20..8 << 20).min(2 * part - written);
        write_text(&root.join(format!("docs/report-{idx:03}.txt")), len, rng)?;
        written += len;
        idx += 1;
    }
    // 20%: binaries that are half zero runs (databases, VM images).
    written = 0;
    idx = 0;
    while written < 2 * part {
        let len = rng.random_range(4 << 20..32 << 20).min(2 * part - written);
        write_sparse(&root.join(format!("vm/disk-{idx:02}.img")), len, rng)?;
        written += len;
        idx += 1;
    }
    // 20%: small files (source trees, photos' sidecars, notes).
    small_files(
        &root.join("projects"),
        (2 * part / (20 << 10)).max(1),
        2 * part,
        rng,
    )
}

fn small_files(root: &Path, files: u64, size: u64, rng: &mut SmallRng) -> Result<()> {
    let avg = (size / files.max(1)).max(1);
    for idx in 0..files {
        let len = rng.random_range(avg / 2..=avg + avg / 2);
        let path = root.join(format!("d{:02}/file-{idx:06}.dat", idx % 100));
        if idx % 2 == 0 {
            write_text(&path, len, rng)?;
        } else {
            write_random(&path, len, rng)?;
        }
    }
    Ok(())
}

fn create(path: &Path) -> Result<BufWriter<fs::File>> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating '{}'", parent.display()))?;
    }
    let file = fs::File::create(path).with_context(|| format!("creating '{}'", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

fn write_random(path: &Path, len: u64, rng: &mut SmallRng) -> Result<()> {
    let mut out = create(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("writing '{}'", path.display()))?;
        left -= n as u64;
    }
    out.flush()
        .with_context(|| format!("writing '{}'", path.display()))
}

fn write_text(path: &Path, len: u64, rng: &mut SmallRng) -> Result<()> {
    let mut out = create(path)?;
    let mut written = 0u64;
    let mut line = String::new();
    while written < len {
        line.clear();
        for _ in 0..rng.random_range(5..15) {
            line.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            line.push(' ');
        }
        line.push_str(&rng.random::<u32>().to_string());
        line.push('\n');
        let take = (len - written).min(line.len() as u64) as usize;
        out.write_all(&line.as_bytes()[..take])
            .with_context(|| format!("writing '{}'", path.display()))?;
        written += take as u64;
    }
    out.flush()
        .with_context(|| format!("writing '{}'", path.display()))
}

fn write_sparse(path: &Path, len: u64, rng: &mut SmallRng) -> Result<()> {
    let mut out = create(path)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut written = 0u64;
    while written < len {
        let n = (len - written).min(buf.len() as u64) as usize;
        if rng.random_bool(0.5) {
            rng.fill_bytes(&mut buf[..n]);
        } else {
            buf[..n].fill(0);
        }
        out.write_all(&buf[..n])
            .with_context(|| format!("writing '{}'", path.display()))?;
        written += n as u64;
    }
    out.flush()
        .with_context(|| format!("writing '{}'", path.display()))
}
