//! Tests of the filesystem block store against a real temporary directory.

use rand::{RngCore, SeedableRng, rngs::SmallRng};

use std::collections::HashSet;

use super::*;

fn random_block(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn open(dir: &Path) -> FsBlockStore {
    FsBlockStore::open(dir, FsStoreOptions::DEFAULT).expect("open store")
}

#[test]
fn put_get_round_trip_and_dedup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = random_block(100_000, 1);
    let first = store.put(&data).expect("put");
    assert!(first.new);
    assert_eq!(first.id, BlockId::of(&data));
    let again = store.put(&data).expect("put again");
    assert!(!again.new, "the same bytes are stored once");
    assert_eq!(again.stored_size, 0);
    assert_eq!(store.get(&first.id).expect("get staged"), data);
    store.sync().expect("sync");
    let (pack, _, len) = store.location(&first.id).expect("located");
    assert!(pack.starts_with(dir.path().join("packs")), "{pack:?}");
    assert_eq!(len, first.stored_size);
    assert_eq!(store.get(&first.id).expect("get synced"), data);
    assert_eq!(store.list().expect("list"), vec![first.id]);
    assert!(store.put(&data).map(|p| !p.new).expect("put after sync"));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.get(&first.id).expect("get after reopen"), data);
    assert_eq!(store.list().expect("list"), vec![first.id]);
}

#[test]
fn compressible_blocks_are_compressed_and_random_ones_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let text = "the quick brown fox jumps over the lazy dog\n".repeat(5000);
    let text_put = store.put(text.as_bytes()).expect("put text");
    assert!(text_put.stored_size < text_put.size / 4, "{text_put:?}");
    let random = random_block(300_000, 2);
    let random_put = store.put(&random).expect("put random");
    assert_eq!(
        random_put.stored_size,
        random_put.size + 1,
        "raw plus the header byte"
    );
    // Small blocks (a small file is one): decided on a sample too, or whole when tiny.
    let small_text = "a small file of text, repeating itself\n".repeat(800);
    let small_text_put = store.put(small_text.as_bytes()).expect("put small text");
    assert!(
        small_text_put.stored_size < small_text_put.size / 4,
        "{small_text_put:?}"
    );
    let tiny_text = "tiny, repetitive\n".repeat(100);
    let tiny_text_put = store.put(tiny_text.as_bytes()).expect("put tiny text");
    assert!(
        tiny_text_put.stored_size < tiny_text_put.size / 4,
        "{tiny_text_put:?}"
    );
    let small_random = random_block(30_000, 3);
    let small_random_put = store.put(&small_random).expect("put small random");
    assert_eq!(small_random_put.stored_size, small_random_put.size + 1);
    store.sync().expect("sync");
    assert_eq!(store.get(&text_put.id).expect("get"), text.as_bytes());
    assert_eq!(store.get(&random_put.id).expect("get"), random);
    assert_eq!(
        store.get(&small_text_put.id).expect("get"),
        small_text.as_bytes()
    );
    assert_eq!(
        store.get(&tiny_text_put.id).expect("get"),
        tiny_text.as_bytes()
    );
    assert_eq!(store.get(&small_random_put.id).expect("get"), small_random);
}

/// `peek` reads a block's first bytes whether it is stored raw or compressed, staged or
/// synced; a block shorter than asked is given whole, a missing one is an error.
#[test]
fn peek_reads_the_first_bytes_of_raw_and_compressed_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let raw = random_block(200_000, 7);
    let mut text = Vec::new();
    while text.len() < 200_000 {
        text.extend_from_slice(b"\x01\x03 a compressible node-like line of text\n");
    }
    let tiny = vec![0x01];
    let ids: Vec<BlockId> = [&raw, &text, &tiny]
        .iter()
        .map(|data| store.put(data).expect("put").id)
        .collect();
    for synced in [false, true] {
        if synced {
            store.sync().expect("sync");
        }
        assert_eq!(store.peek(&ids[0], 2).expect("raw"), raw[..2]);
        assert_eq!(store.peek(&ids[1], 5).expect("compressed"), text[..5]);
        assert_eq!(store.peek(&ids[2], 2).expect("tiny"), tiny);
        assert_eq!(store.peek(&ids[0], 0).expect("nothing"), b"");
    }
    let (_, _, stored) = store.location(&ids[1]).expect("located");
    assert!(stored < 100_000, "the text block is compressed: {stored}");
    match store.peek(&BlockId::of(b"never stored"), 2) {
        Err(Error::BlockMissing(_)) => {}
        other => panic!("expected BlockMissing, got {other:?}"),
    }
}

#[test]
fn corrupt_block_is_an_error_never_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = random_block(5000, 3);
    let put = store.put(&data).expect("put");
    store.sync().expect("sync");
    let (path, offset, len) = store.location(&put.id).expect("located");
    let pack = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open pack");
    let damage = |at: u64, bytes: &[u8]| pack.write_all_at(bytes, offset + at).expect("damage");
    let mut byte = [0u8; 1];
    File::open(&path)
        .and_then(|f| f.read_exact_at(&mut byte, offset + 100))
        .expect("read");
    damage(100, &[byte[0] ^ 0x40]);
    match store.get(&put.id) {
        Err(Error::BlockCorrupt { id, .. }) => assert_eq!(id, put.id),
        other => panic!("expected BlockCorrupt, got {other:?}"),
    }
    damage(0, &[9u8]);
    assert!(matches!(
        store.get(&put.id),
        Err(Error::BlockFormat { header: 9, .. })
    ));
    damage(0, &[HEADER_ZSTD, 1, 2, 3]);
    assert!(matches!(
        store.get(&put.id),
        Err(Error::BlockCorrupt { .. })
    ));
    pack.set_len(offset + len / 2).expect("cut the pack short");
    assert!(matches!(
        store.get(&put.id),
        Err(Error::BlockCorrupt { .. })
    ));
}

#[test]
fn claimed_ids_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = b"some bytes".to_vec();
    let wrong = BlockId::of(b"other bytes");
    match store.put_claimed(&wrong, &data) {
        Err(Error::BlockMismatch { claimed, actual }) => {
            assert_eq!(claimed, wrong);
            assert_eq!(actual, BlockId::of(&data));
        }
        other => panic!("expected BlockMismatch, got {other:?}"),
    }
    assert!(
        !store.has(&wrong).expect("has"),
        "nothing is stored under a false claim"
    );
    assert!(store.put_claimed(&BlockId::of(&data), &data).is_ok());
}

#[test]
fn missing_delete_and_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let absent = BlockId::of(b"absent");
    assert!(matches!(store.get(&absent), Err(Error::BlockMissing(id)) if id == absent));
    let put = store.put(b"x").expect("put");
    assert!(store.delete(&put.id).expect("delete staged"));
    assert!(!store.has(&put.id).expect("has"));
    let put = store.put(b"y").expect("put");
    store.sync().expect("sync");
    assert!(store.delete(&put.id).expect("delete synced"));
    assert!(!store.delete(&put.id).expect("delete twice"));
    let huge = vec![0u8; BLOCK_SIZE_MAX as usize + 1];
    assert!(matches!(store.put(&huge), Err(Error::BlockTooLarge { .. })));
}

#[test]
fn many_small_blocks_flush_in_batches_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ids: Vec<BlockId> = {
        let store = open(dir.path());
        let blocks: Vec<Vec<u8>> = (0..(PENDING_BLOCKS_MAX as u64 + 100))
            .map(|seed| random_block(64, seed))
            .collect();
        let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
        let puts = store.put_many(&refs).expect("put many");
        assert!(puts.iter().all(|p| p.new));
        store.sync().expect("sync");
        puts.iter().map(|p| p.id).collect()
    };
    let store = open(dir.path());
    let mut listed = store.list().expect("list");
    let mut expected = ids.clone();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(
        store
            .has_many(&ids)
            .expect("has many")
            .into_iter()
            .all(|b| b)
    );
    assert_eq!(
        fs::read_dir(dir.path().join("packs"))
            .expect("packs")
            .count(),
        1,
        "{} small blocks share one pack file",
        ids.len()
    );
}

#[test]
fn second_process_cannot_open_the_same_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = open(dir.path());
    let err = FsBlockStore::open(dir.path(), FsStoreOptions::DEFAULT).expect_err("locked");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}

#[test]
fn a_crash_loses_only_what_no_sync_covered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let kept = random_block(70_000, 10);
    let unsynced = random_block(70_000, 11);
    {
        let store = open(dir.path());
        assert!(store.put(&kept).expect("put").new);
        store.sync().expect("sync");
        assert!(store.put(&unsynced).expect("put").new);
        // The disk as a crash would leave it: the unsynced block's bytes may be in its pack,
        // but its index record is not in the log.
        for name in ["index.log", "packs"] {
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(dir.path().join(name))
                .arg(crashed.path())
                .status()
                .expect("cp");
            assert!(status.success());
        }
    }
    // A torn record at the end of the log, and a pack no record points at.
    let log = crashed.path().join("index.log");
    let before = fs::metadata(&log).expect("log").len();
    let mut torn = fs::read(&log).expect("read log");
    torn.extend_from_slice(&[7u8; LOG_RECORD_LEN / 2]);
    fs::write(&log, torn).expect("tear");
    let stray = crashed.path().join("packs").join(pack_name(0x99));
    fs::write(&stray, b"CAIRNPK1 half a block").expect("stray pack");

    let store = open(crashed.path());
    assert_eq!(
        fs::metadata(&log).expect("log").len(),
        before,
        "torn end cut off"
    );
    assert!(
        stray.exists(),
        "a pack with no indexed block waits for the next compaction"
    );
    assert_eq!(store.get(&BlockId::of(&kept)).expect("synced block"), kept);
    assert!(!store.has(&BlockId::of(&unsynced)).expect("has"));
    // The store goes on from there: new blocks are indexed after the cut.
    let later = random_block(1000, 12);
    assert!(store.put(&later).expect("put").new);
    assert!(store.put(&unsynced).expect("put again").new);
    store.sync().expect("sync");
    drop(store);
    let store = open(crashed.path());
    let mut expected = vec![
        BlockId::of(&kept),
        BlockId::of(&later),
        BlockId::of(&unsynced),
    ];
    expected.sort();
    assert_eq!(store.list().expect("list"), expected);
    for data in [&kept, &later, &unsynced] {
        assert_eq!(&store.get(&BlockId::of(data)).expect("get"), data);
    }
    // A compaction gives its space back.
    store.compact().expect("compact");
    assert!(!stray.exists(), "the stray pack is compacted away");
    for data in [&kept, &later, &unsynced] {
        assert_eq!(&store.get(&BlockId::of(data)).expect("get"), data);
    }
}

#[test]
fn a_damaged_or_missing_index_log_is_refused_not_repaired_by_dropping_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        for seed in 0..3 {
            store.put(&random_block(1000, seed)).expect("put");
            store.sync().expect("sync");
        }
    }
    let log = dir.path().join("index.log");
    let good = fs::read(&log).expect("log");
    assert_eq!(good.len(), 3 * LOG_RECORD_LEN);
    let mut damaged = good.clone();
    damaged[LOG_RECORD_LEN + 5] ^= 1;
    fs::write(&log, &damaged).expect("damage");
    let err = FsBlockStore::open(dir.path(), FsStoreOptions::DEFAULT).expect_err("refused");
    assert!(
        err.to_string().contains("damaged at record 1 of 3"),
        "{err}"
    );
    assert_eq!(fs::read(&log).expect("log"), damaged, "left untouched");
    fs::remove_file(&log).expect("remove log");
    let err = FsBlockStore::open(dir.path(), FsStoreOptions::DEFAULT).expect_err("refused");
    assert!(err.to_string().contains("index log is missing"), "{err}");
    assert_eq!(
        fs::read_dir(dir.path().join("packs"))
            .expect("packs")
            .count(),
        1,
        "no pack removed"
    );
    // A damaged last record is a torn batch: cut off.
    let mut torn = good.clone();
    torn[2 * LOG_RECORD_LEN + 5] ^= 1;
    fs::write(&log, &torn).expect("tear");
    let store = open(dir.path());
    assert_eq!(store.list().expect("list").len(), 2);
}

#[test]
fn a_lost_or_damaged_index_is_rebuilt_from_the_packs_around_damage_inside_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Compressible and incompressible blocks, in two packs' worth of syncs.
    let blocks: Vec<Vec<u8>> = (0..40)
        .map(|seed| {
            if seed % 2 == 0 {
                random_block(20_000 + seed as usize, seed)
            } else {
                format!("block {seed} ").repeat(3000).into_bytes()
            }
        })
        .collect();
    let deleted = random_block(5_000, 99);
    let damaged_id = BlockId::of(&blocks[10]);
    let (pack, damaged_at) = {
        let store = open(dir.path());
        for data in &blocks {
            store.put(data).expect("put");
        }
        store.put(&deleted).expect("put");
        store.sync().expect("sync");
        store.delete(&BlockId::of(&deleted)).expect("delete");
        store.sync().expect("sync");
        let (pack, offset, _) = store.location(&damaged_id).expect("located");
        (pack, offset)
    };
    // Damage at rest inside one record of the pack, and a lost log.
    let mut bytes = fs::read(&pack).expect("pack");
    let middle = usize::try_from(damaged_at).expect("small") + 100;
    bytes[middle] ^= 0xff;
    fs::write(&pack, &bytes).expect("damage");
    fs::remove_file(dir.path().join("index.log")).expect("lose the log");
    let refused = FsBlockStore::open(dir.path(), FsStoreOptions::DEFAULT).expect_err("refused");
    assert!(refused.to_string().contains("rebuild-index"), "{refused}");

    // The rebuild takes the store's lock like an open does.
    let holder = lock_root(dir.path()).expect("lock");
    assert!(
        FsBlockStore::rebuild_index(dir.path()).is_err(),
        "store in use"
    );
    drop(holder);

    let report = FsBlockStore::rebuild_index(dir.path()).expect("rebuild");
    assert_eq!(
        report.blocks, 40,
        "39 good blocks and the deleted one: {report:?}"
    );
    assert_eq!(report.damaged_regions, 1, "{report:?}");
    assert!(report.previous_log.is_none());
    let store = open(dir.path());
    for data in &blocks {
        let id = BlockId::of(data);
        if id == damaged_id {
            assert!(
                !store.has(&id).expect("has"),
                "the damaged record is not indexed"
            );
        } else {
            assert_eq!(&store.get(&id).expect("every other block reads"), data);
        }
    }
    // The log alone knew of the deletion: the block is back, as young as the rest, for the
    // garbage collector to delete again.
    assert_eq!(store.get(&BlockId::of(&deleted)).expect("back"), deleted);
    let young = store
        .delete_if_older(
            &BlockId::of(&deleted),
            SystemTime::now() - Duration::from_secs(60),
        )
        .expect("gc");
    assert_eq!(young, Some(false), "its age starts over");
    drop(store);

    // A second rebuild keeps the log it replaces, and finds the same.
    let again = FsBlockStore::rebuild_index(dir.path()).expect("rebuild again");
    assert_eq!(again.blocks, 40);
    let previous = again.previous_log.expect("previous log kept");
    assert!(previous.exists(), "{previous:?}");
}

#[test]
fn a_pack_without_one_readable_record_is_set_aside_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = random_block(10_000, 7);
    let pack = {
        let store = open(dir.path());
        let put = store.put(&data).expect("put");
        store.sync().expect("sync");
        store.location(&put.id).expect("located").0
    };
    let mut bytes = fs::read(&pack).expect("pack");
    for b in &mut bytes[..100] {
        *b = 0x5a;
    }
    fs::write(&pack, &bytes).expect("damage");
    let report = FsBlockStore::rebuild_index(dir.path()).expect("rebuild");
    assert_eq!(report.blocks, 0);
    assert_eq!(report.unreadable_packs.len(), 1, "{report:?}");
    assert!(report.unreadable_packs[0].exists());
    assert!(!pack.exists());
    let store = open(dir.path());
    assert!(store.list().expect("list").is_empty());
}

#[test]
fn compaction_gives_back_deleted_space_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlockStore::open(
        dir.path(),
        FsStoreOptions {
            compression: Compression::None,
        },
    )
    .expect("open");
    let blocks: Vec<Vec<u8>> = (0..100).map(|seed| random_block(50_000, seed)).collect();
    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    store.put_many(&refs).expect("put many");
    store.sync().expect("sync");
    let packs_size = || -> u64 {
        fs::read_dir(dir.path().join("packs"))
            .expect("packs")
            .map(|e| e.expect("entry").metadata().expect("meta").len())
            .sum()
    };
    let full = packs_size();
    assert!(full > 100 * 50_000, "{full}");
    assert_eq!(
        store.compact().expect("compact"),
        CompactReport::default(),
        "nothing dead, nothing to do"
    );
    for data in &blocks[..80] {
        assert!(store.delete(&BlockId::of(data)).expect("delete"));
    }
    let report = store.compact().expect("compact");
    assert_eq!(report.packs, 1);
    assert_eq!(report.blocks_moved, 20);
    assert!(report.bytes_reclaimed >= full, "{report:?}");
    assert!(packs_size() < full / 4, "{} of {full}", packs_size());
    let check = |store: &FsBlockStore| {
        for (i, data) in blocks.iter().enumerate() {
            let id = BlockId::of(data);
            if i < 80 {
                assert!(!store.has(&id).expect("has"), "block {i} was deleted");
            } else {
                assert_eq!(&store.get(&id).expect("kept block"), data);
            }
        }
        assert_eq!(store.list().expect("list").len(), 20);
    };
    check(&store);
    drop(store);
    let store = open(dir.path());
    check(&store);
}

/// Random puts, deletes, syncs, compactions and reopens against a model of what the store
/// must hold.
#[test]
fn random_operations_match_a_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = SmallRng::seed_from_u64(42);
    let pool: Vec<Vec<u8>> = (0..40)
        .map(|seed| random_block(1 + (seed as usize * 7919) % 90_000, 100 + seed))
        .collect();
    let mut store = open(dir.path());
    let mut model: HashSet<usize> = HashSet::new();
    for step in 0..400 {
        let pick = (rng.next_u32() as usize) % pool.len();
        match rng.next_u32() % 10 {
            0..=4 => {
                let put = store.put(&pool[pick]).expect("put");
                assert_eq!(put.new, model.insert(pick), "step {step}: put {pick}");
            }
            5 | 6 => {
                let deleted = store.delete(&BlockId::of(&pool[pick])).expect("delete");
                assert_eq!(deleted, model.remove(&pick), "step {step}: delete {pick}");
            }
            7 => store.sync().expect("sync"),
            8 => {
                store.compact().expect("compact");
            }
            _ => {
                store.sync().expect("sync");
                drop(store);
                store = open(dir.path());
            }
        }
        let id = BlockId::of(&pool[pick]);
        if model.contains(&pick) {
            assert_eq!(store.get(&id).expect("get"), pool[pick], "step {step}");
        } else {
            assert!(matches!(store.get(&id), Err(Error::BlockMissing(_))));
        }
    }
    let mut expected: Vec<BlockId> = model.iter().map(|i| BlockId::of(&pool[*i])).collect();
    expected.sort();
    assert_eq!(store.list().expect("list"), expected);
}

#[test]
fn blocks_of_the_one_file_per_block_layout_are_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = b"stored by an older Cairn".to_vec();
    let id = BlockId::of(&data);
    let hex = id.to_string();
    let shard = dir.path().join("blocks").join(&hex[..2]);
    fs::create_dir_all(&shard).expect("mkdir");
    let mut stored = vec![HEADER_RAW];
    stored.extend_from_slice(&data);
    fs::write(shard.join(&hex), stored).expect("write legacy block");
    fs::create_dir_all(dir.path().join("tmp/ab")).expect("mkdir");
    fs::write(dir.path().join("tmp/ab/leftover.0"), b"half a block").expect("write");

    let store = open(dir.path());
    assert!(
        !dir.path().join("tmp").exists(),
        "old temp files are removed"
    );
    assert!(store.has(&id).expect("has"));
    assert_eq!(store.get(&id).expect("get"), data);
    assert_eq!(store.list().expect("list"), vec![id]);
    assert!(store.modified(&id).expect("modified").is_some());
    assert!(
        !store.put(&data).expect("put").new,
        "deduplicated against it"
    );
    assert!(store.delete(&id).expect("delete"));
    assert!(!store.has(&id).expect("has"));
}

/// The garbage collector's check and delete are one step: a block deduplicated against, or
/// answered "stored" (`keep_many`), after the collector set its cutoff is kept; an old one is
/// deleted; the refreshed times survive a reopen.
#[test]
fn the_collector_deletes_only_blocks_not_refreshed_since_its_cutoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let (a, b, c) = (
        random_block(3000, 1),
        random_block(3000, 2),
        random_block(3000, 3),
    );
    let ids: Vec<BlockId> = [&a, &b, &c]
        .iter()
        .map(|data| store.put(data).expect("put").id)
        .collect();
    store.sync().expect("sync");
    {
        let mut state = store.shared.lock_state();
        for id in &ids {
            let loc = state.index.get_mut(id).expect("stored");
            assert!(loc.durable);
            loc.stored_s -= 3600;
        }
    }
    let cutoff = SystemTime::now() - Duration::from_secs(600);
    let missing = BlockId::of(b"never stored");
    assert!(!store.put(&b).expect("put").new, "deduplicated");
    assert_eq!(
        store.keep_many(&[ids[2], missing]).expect("keep"),
        vec![true, false]
    );
    let delete = |id: &BlockId| store.delete_if_older(id, cutoff).expect("delete");
    assert_eq!(delete(&ids[0]), Some(true), "old and untouched");
    assert_eq!(delete(&ids[1]), Some(false), "deduplicated since");
    assert_eq!(delete(&ids[2]), Some(false), "answered stored since");
    assert_eq!(delete(&missing), None);
    assert!(!store.has(&ids[0]).expect("has"));
    store.sync().expect("sync");
    drop(store);
    let store = open(dir.path());
    assert!(!store.has(&ids[0]).expect("has"), "stays deleted");
    for id in &ids[1..] {
        assert_eq!(
            store.delete_if_older(id, cutoff).expect("delete"),
            Some(false)
        );
        assert!(store.modified(id).expect("modified").expect("stored") > cutoff);
    }
}

/// Refreshes alone (deduplicated puts and `keep_many` answers for blocks stored over a minute
/// ago) used to fill the unlogged backlog without waking the flusher: the next put then waited
/// for a flush that never came, and a sync client's incremental upload hung for good after the
/// server answered which of 1,024 old blocks it lacked.
#[test]
fn refreshes_alone_never_stall_the_next_put() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let count = 2 * PENDING_BLOCKS_MAX + 10;
    let blocks: Vec<Vec<u8>> = (0..count).map(|i| random_block(64, i as u64)).collect();
    let ids: Vec<BlockId> = blocks
        .iter()
        .map(|data| store.put(data).expect("put").id)
        .collect();
    store.sync().expect("sync");
    let age = |store: &FsBlockStore| {
        let mut state = store.shared.lock_state();
        for loc in state.index.values_mut() {
            loc.stored_s -= 3600;
        }
    };
    age(&store);
    assert!(
        store
            .keep_many(&ids)
            .expect("keep")
            .iter()
            .all(|&kept| kept)
    );
    age(&store);
    // The same again through deduplicated puts, then a new block (on a thread: a stalled put
    // waits forever).
    let (done, finished) = std::sync::mpsc::channel();
    let writer = Arc::clone(&store);
    std::thread::spawn(move || {
        let put = blocks
            .iter()
            .map(|data| writer.put(data).map(|p| !p.new))
            .chain([writer.put(&random_block(64, 1_000_000)).map(|p| p.new)])
            .collect::<Result<Vec<bool>>>();
        let _ = done.send(put);
    });
    let put = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("puts after many refreshes finish");
    assert!(
        put.expect("puts").iter().all(|&ok| ok),
        "deduplicated, then a new block"
    );
    store.sync().expect("sync");
    drop(store);
    let store = open(dir.path());
    let cutoff = SystemTime::now() - Duration::from_secs(600);
    assert!(
        ids.iter()
            .all(|id| store.modified(id).expect("modified").expect("stored") > cutoff),
        "the refreshes were logged"
    );
}

#[test]
fn a_failed_pack_sync_stops_the_store_instead_of_logging_lost_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let kept = random_block(50_000, 31);
    let kept_id = store.put(&kept).expect("put").id;
    store.sync().expect("sync");
    let lost = random_block(50_000, 32);
    let lost_id = store.put(&lost).expect("put").id;
    store.shared.lock_state().fail_pack_sync = true;
    let err = store.sync().expect_err("the sync fails");
    assert!(err.to_string().contains("injected"), "{err}");
    // A retry would succeed on a disk that dropped the pages: it is refused, and so is any
    // new write, with what to do.
    let again = store.sync().expect_err("no retry succeeds");
    assert!(again.to_string().contains("restart"), "{again}");
    let put = store
        .put(&random_block(1000, 33))
        .expect_err("no new write");
    assert!(put.to_string().contains("check the disk"), "{put}");
    // Reads of what was durable go on.
    assert_eq!(store.get(&kept_id).expect("durable block"), kept);
    drop(store);
    // Opened again, the log is the truth: the unlogged block is not there, the rest is, and
    // the store takes writes.
    let store = open(dir.path());
    assert_eq!(store.get(&kept_id).expect("durable block"), kept);
    assert!(!store.has(&lost_id).expect("has"), "never logged");
    let id = store.put(&lost).expect("put").id;
    store.sync().expect("sync");
    assert_eq!(store.get(&id).expect("get"), lost);
}
