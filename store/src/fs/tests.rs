//! Tests of the filesystem block store against a real temporary directory.

use rand::{RngCore, SeedableRng, rngs::SmallRng};

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
    assert!(
        store.block_path(&first.id).is_file(),
        "sync moves blocks into their shard"
    );
    assert_eq!(store.get(&first.id).expect("get synced"), data);
    assert_eq!(store.list().expect("list"), vec![first.id]);
    assert!(store.put(&data).map(|p| !p.new).expect("put after sync"));
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
    store.sync().expect("sync");
    assert_eq!(store.get(&text_put.id).expect("get"), text.as_bytes());
    assert_eq!(store.get(&random_put.id).expect("get"), random);
}

#[test]
fn corrupt_block_is_an_error_never_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = random_block(5000, 3);
    let put = store.put(&data).expect("put");
    store.sync().expect("sync");
    let path = store.block_path(&put.id);
    let mut bytes = fs::read(&path).expect("read block file");
    bytes[100] ^= 0x40;
    fs::write(&path, &bytes).expect("damage block");
    match store.get(&put.id) {
        Err(Error::BlockCorrupt { id, .. }) => assert_eq!(id, put.id),
        other => panic!("expected BlockCorrupt, got {other:?}"),
    }
    fs::write(&path, [9u8, 1, 2]).expect("unknown header");
    assert!(matches!(
        store.get(&put.id),
        Err(Error::BlockFormat { header: 9, .. })
    ));
    fs::write(&path, [HEADER_ZSTD, 1, 2, 3]).expect("garbage zstd");
    assert!(matches!(
        store.get(&put.id),
        Err(Error::BlockCorrupt { .. })
    ));
    fs::write(&path, []).expect("empty file");
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
        fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
        0
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
fn leftover_temp_files_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    fs::create_dir_all(dir.path().join("tmp/ab")).expect("mkdir");
    fs::write(dir.path().join("tmp/ab/leftover.0"), b"half a block").expect("write");
    fs::write(dir.path().join("tmp/leftover.1"), b"half a block").expect("write");
    let store = open(dir.path());
    assert_eq!(
        fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
        0
    );
    assert!(store.list().expect("list").is_empty());
}
