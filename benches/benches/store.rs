//! Criterion micro-benchmarks of the store's hot paths: cutting, hashing, node encoding and
//! directory chunking. End-to-end figures come from the `cairn-bench` binary instead.

// Criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::hint::black_box;

use cairn_store::chunk::cut;
use cairn_store::dir::chunk_dir;
use cairn_store::node::{DirEntry, DirLeaf, EntryKind, Name, Node};
use cairn_store::{BlockId, ChunkConfig, NodeId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng, rngs::SmallRng};

fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    SmallRng::seed_from_u64(1).fill_bytes(&mut data);
    data
}

fn entries(len: u32) -> Vec<DirEntry> {
    (0..len)
        .map(|idx| DirEntry {
            name: Name::new(format!("file-{idx:07}.txt").into_bytes()).expect("valid name"),
            kind: EntryKind::File,
            size: u64::from(idx),
            mtime_ns: i64::from(idx),
            mode: 0o644,
            child: NodeId::of(&idx.to_le_bytes()),
        })
        .collect()
}

fn chunking(c: &mut Criterion) {
    let data = random(16 << 20);
    let mut group = c.benchmark_group("chunk");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("cut 16 MiB (FastCDC 64K/256K/1M)", |b| {
        b.iter(|| cut(black_box(&data), &ChunkConfig::DEFAULT).count())
    });
    group.bench_function("BLAKE3 16 MiB in 256 KiB blocks", |b| {
        b.iter(|| data.chunks(256 << 10).map(BlockId::of).count())
    });
    group.finish();
}

fn nodes(c: &mut Criterion) {
    let leaf = Node::DirLeaf(DirLeaf::new(entries(1000)).expect("sorted"));
    let bytes = leaf.to_bytes();
    let mut group = c.benchmark_group("node");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode 1000-entry leaf", |b| {
        b.iter(|| black_box(&leaf).to_bytes())
    });
    group.bench_function("decode 1000-entry leaf", |b| {
        b.iter(|| Node::decode(black_box(&bytes)))
    });
    group.finish();
    let big = entries(100_000);
    c.bench_function("chunk_dir 100k entries", |b| {
        b.iter(|| chunk_dir(black_box(big.clone())))
    });
}

criterion_group!(benches, chunking, nodes);
criterion_main!(benches);
