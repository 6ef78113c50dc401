//! Version pruning and garbage collection: old versions go, current data stays, the store
//! stays consistent, and young unreferenced blocks (an upload not yet committed) survive.

use std::time::Duration;

use cairn_server::db;
use cairn_server::jobs::{GC_LEASE_MARK, GcReport, collect_garbage, prune_versions};
use cairn_server::verify::{TreeError, new_objects};
use cairn_store::dir::chunk_dir;
use cairn_store::edit::lookup;
use cairn_store::node::{DirEntry, EntryKind, FileNode, Name, Node};
use cairn_store::{BlockId, BlockStore, NodeId, NodeStore};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Engine, TestServer, assert_error, bytes};

/// The user's id and their default folder as the database has it now.
async fn default_folder(server: &TestServer, username: &str) -> (i64, db::FolderRow) {
    let owner = server.user_id(username).await;
    let folder = db::folder(&server.state.db, owner, "default")
        .await
        .expect("query")
        .expect("default folder");
    (owner, folder)
}

fn name(text: &str) -> Name {
    Name::new(text.as_bytes().to_vec()).expect("name")
}

crate::both_databases!(
    prune_then_collect,
    uploads_never_committed_expire,
    one_collection_at_a_time,
    objects_collected_since_their_commit_are_checked_again,
    a_young_node_keeps_its_old_subtree
);

async fn prune_then_collect(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("ann").await;
    let first = bytes(600_000, 1);
    let second = bytes(600_000, 2);
    let file: Value = server.upload_json(&token, "doc.bin", first).await;
    let id = file["id"].as_i64().expect("id");
    server.upload(&token, "doc.bin", second.clone()).await;
    let gone: Value = server
        .upload_json(&token, "gone.bin", bytes(300_000, 3))
        .await;
    let status = server.delete_file(&token, &gone["id"]).await.status();
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Nothing is collectable while every version is retained.
    let untouched = collect_garbage(&server.state, Duration::ZERO)
        .await
        .expect("gc");
    assert_eq!(untouched.deleted, 0, "{untouched:?}");

    // A block stored by an upload that has not committed yet is young: it survives a grace period.
    let stray = server.state.store.put(&bytes(1000, 4)).expect("put");
    server.state.store.sync().expect("sync");
    let spared = collect_garbage(&server.state, Duration::from_secs(3600))
        .await
        .expect("gc");
    assert_eq!(spared.deleted, 0);
    assert!(spared.young >= 1, "{spared:?}");

    // Expire everything but the current versions and heads, then collect.
    let (versions, commits) = prune_versions(&server.state, Duration::ZERO)
        .await
        .expect("prune");
    assert_eq!(
        versions, 2,
        "doc.bin v1 and gone.bin v1 (gone.bin's deletion is its current version)"
    );
    assert!(commits >= 3, "{commits}");
    let GcReport { deleted, .. } = collect_garbage(&server.state, Duration::ZERO)
        .await
        .expect("gc");
    // doc.bin v1 (3 blocks + node), gone.bin (2 blocks + node), old directory roots, the stray.
    assert!(deleted >= 6, "{deleted}");
    assert!(!server.state.store.has(&stray.id).expect("has"));

    let current = server.get(&token, &format!("/files/{id}/download")).await;
    assert_eq!(
        current.bytes().await.expect("body").as_ref(),
        &second[..],
        "the current version survives"
    );
    assert_error(
        server
            .get(&token, &format!("/files/{id}/download?version=1"))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let report = server.state.store.list().expect("list").len();
    assert!(report > 0);
    let again = collect_garbage(&server.state, Duration::ZERO)
        .await
        .expect("gc");
    assert_eq!(again.deleted, 0, "collection is idempotent");
}

/// Uploads no commit takes up are charged to their owner's pending quota until the collector
/// expires them with their blocks; one the client was told the folder has is kept as long as a
/// fresh upload.
async fn uploads_never_committed_expire(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.user("uma").await;
    let db = &server.state.db;
    let (owner, folder) = default_folder(&server, "uma").await;
    let folder = folder.id;
    let id = |seed: &[u8]| BlockId::of(seed).to_string();
    let now = cairn_server::api::now_ms();
    let two_hours_ago = now - 2 * 3600 * 1000;
    let charged = db::add_uploaded(
        db,
        owner,
        folder,
        &[(id(b"a"), 100), (id(b"b"), 200), (id(b"c"), 400)],
        &[],
        two_hours_ago,
    )
    .await
    .expect("add");
    assert_eq!(charged, 700);
    let again = db::add_uploaded(db, owner, folder, &[(id(b"a"), 100)], &[], now)
        .await
        .expect("add again");
    assert_eq!(again, 0, "an upload the folder already has costs nothing");
    assert_eq!(
        db::pending_uploads(db, owner).await.expect("pending").0,
        700
    );

    // "c" was just confirmed to a client by a lacking answer.
    db::refresh_uploaded(db, folder, &[id(b"c")], now)
        .await
        .expect("refresh");
    let report = collect_garbage(&server.state, Duration::from_secs(3600))
        .await
        .expect("gc");
    assert_eq!((report.uploads_expired, report.pending_released), (2, 300));
    assert_eq!(
        db::pending_uploads(db, owner).await.expect("pending").0,
        400
    );
    let known = db::objects_state(db, folder, &[id(b"a"), id(b"c")])
        .await
        .expect("state");
    assert_eq!(
        known.len(),
        1,
        "only the refreshed upload is still the folder's"
    );

    let report = collect_garbage(&server.state, Duration::ZERO)
        .await
        .expect("gc");
    assert_eq!((report.uploads_expired, report.pending_released), (1, 400));
    assert_eq!(db::pending_uploads(db, owner).await.expect("pending").0, 0);
}

/// A collection that finds another one holding the deployment's lease does nothing; one that
/// finds the lease run out (its holder died) takes it, and gives it back when it ends.
async fn one_collection_at_a_time(engine: Engine) {
    let server = TestServer::start(engine).await;
    let db = &server.state.db;
    let stray = server.state.store.put(&bytes(1000, 5)).expect("put");
    server.state.store.sync().expect("sync");
    let now = cairn_server::api::now_ms();
    let held_until = now + 3600 * 1000;
    assert!(
        db::advance_job_mark(db, GC_LEASE_MARK, 0, held_until)
            .await
            .expect("hold the lease")
    );
    let skipped = collect_garbage(&server.state, Duration::ZERO)
        .await
        .expect("gc");
    assert!(skipped.skipped, "{skipped:?}");
    assert_eq!(skipped.deleted, 0);
    assert!(server.state.store.has(&stray.id).expect("has"));

    // The holder died: its lease runs out.
    assert!(
        db::advance_job_mark(db, GC_LEASE_MARK, held_until, now - 1)
            .await
            .expect("expire the lease")
    );
    let report = collect_garbage(&server.state, Duration::ZERO)
        .await
        .expect("gc");
    assert!(!report.skipped, "{report:?}");
    assert!(report.deleted >= 1, "{report:?}");
    assert!(!server.state.store.has(&stray.id).expect("has"));
    let released = db::job_mark(db, GC_LEASE_MARK).await.expect("mark");
    assert!(
        released <= cairn_server::api::now_ms(),
        "released at the end: {released}"
    );
    let again = collect_garbage(&server.state, Duration::ZERO)
        .await
        .expect("gc");
    assert!(!again.skipped, "{again:?}");
}

/// A client's commit that names objects its folder committed long ago, and that the collector
/// removed once no retained version referenced them, is refused as missing; the same tree is
/// accepted once they are stored again.
async fn objects_collected_since_their_commit_are_checked_again(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("vic").await;
    let state = &server.state;
    let content = bytes(600_000, 6);
    let file: Value = server
        .upload_json(&token, "sub/doc.bin", content.clone())
        .await;
    let (owner, folder) = default_folder(&server, "vic").await;
    let root: NodeId = folder.head_root.parse().expect("root id");
    let sub = lookup(state.store.as_ref(), &root, &[name("sub")])
        .expect("lookup")
        .expect("sub");
    let doc = lookup(state.store.as_ref(), &sub.child, &[name("doc.bin")])
        .expect("lookup")
        .expect("doc.bin");
    let Node::File(node) = state.store.get_node(&doc.child).expect("file node") else {
        panic!("doc.bin is not a file node")
    };
    let blocks = node.blocks().to_vec();
    let sub_node = state.store.get_node(&sub.child).expect("directory node");

    // Deleted, its versions pruned and its objects collected.
    let status = server.delete_file(&token, &file["id"]).await.status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    prune_versions(state, Duration::ZERO).await.expect("prune");
    collect_garbage(state, Duration::ZERO).await.expect("gc");
    assert!(!state.store.has(&BlockId::from(sub.child)).expect("has"));
    assert!(!state.store.has(&blocks[0].id).expect("has"));

    // A tree with a new file node over the collected blocks, and one naming the collected
    // directory: their new nodes are uploaded to the folder, the old objects are not.
    let again = Node::File(FileNode::new(0o600, 7, blocks.clone()).expect("file"));
    let put_tree = |entry: DirEntry| {
        let dir = chunk_dir(vec![entry]).expect("dir");
        for (_, node) in &dir.nodes {
            state.store.put_node(node).expect("put node");
        }
        dir.root
    };
    state.store.put_node(&again).expect("put node");
    let over_blocks = put_tree(DirEntry {
        name: name("again.bin"),
        kind: EntryKind::File,
        size: content.len() as u64,
        mtime_ns: 7,
        mode: 0o600,
        child: again.id(),
    });
    // Under another name: the old root itself would be the same node, stored again here.
    let over_dir = put_tree(DirEntry {
        name: name("moved"),
        ..sub.clone()
    });
    let uploaded: Vec<(String, i64)> = [again.id(), over_blocks, over_dir]
        .iter()
        .map(|id| (id.to_string(), 100))
        .collect();
    db::add_uploaded(
        &state.db,
        owner,
        folder.id,
        &uploaded,
        &[],
        cairn_server::api::now_ms(),
    )
    .await
    .expect("uploaded");
    for tree in [over_blocks, over_dir] {
        match new_objects(state, folder.id, tree, true).await {
            Err(TreeError::Missing(message)) => {
                assert!(message.contains("upload it again"), "{message}");
            }
            other => panic!("a tree naming collected objects was accepted: {other:?}"),
        }
    }

    // Stored again (a client that asked which blocks the server lacks sends them), the same
    // tree is accepted.
    let chunks: Vec<&[u8]> = {
        let mut at = 0;
        blocks
            .iter()
            .map(|b| {
                let chunk = &content[at..at + b.len as usize];
                at += b.len as usize;
                chunk
            })
            .collect()
    };
    state.store.put_many(&chunks).expect("put blocks");
    let objects = new_objects(state, folder.id, over_blocks, true)
        .await
        .expect("a tree over stored blocks is accepted");
    assert!(objects.contains(&again.id().to_string()), "{objects:?}");

    // The collected directory node stored again alone, as a client that re-sends a node but not
    // what lies under it would, recorded as QUIC records an upload: new to the store. Its row
    // still says committed, but the walk goes into it and finds doc.bin's file node missing.
    // Uploaded by another user's folder with the same content, first: this folder's row is
    // marked too.
    let (other_owner, other) = {
        server.user("wes").await;
        default_folder(&server, "wes").await
    };
    let store_again = |node: Node, owner: i64, folder: i64| async move {
        let (id, put) = state.store.put_node(&node).expect("put node");
        assert!(put.new, "it was collected");
        let hex = id.to_string();
        db::add_uploaded(
            &state.db,
            owner,
            folder,
            &[(hex.clone(), 100)],
            &[hex.as_str()],
            cairn_server::api::now_ms(),
        )
        .await
        .expect("uploaded");
        hex
    };
    let sub_hex = store_again(sub_node, other_owner, other.id).await;
    match new_objects(state, folder.id, over_dir, true).await {
        Err(TreeError::Missing(message)) => {
            assert!(message.contains("upload it again"), "{message}");
        }
        other => panic!("a directory stored again without its subtree was trusted: {other:?}"),
    }
    // With the file node stored again too, the tree is whole and accepted.
    store_again(Node::File(node.clone()), owner, folder.id).await;
    let objects = new_objects(state, folder.id, over_dir, true)
        .await
        .expect("a whole tree is accepted");
    assert!(objects.contains(&sub_hex), "{objects:?}");
}

/// An unreferenced node too young to collect keeps everything under it, however old: a client
/// told the server has that node asks nothing about its subtree, and the commit that follows
/// stops at it. Here a client's new directory names a file node whose only version was pruned
/// long ago; the collection between its upload and its commit keeps the file node and blocks.
async fn a_young_node_keeps_its_old_subtree(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("yul").await;
    let state = &server.state;
    let content = bytes(700_000, 7);
    let file: Value = server
        .upload_json(&token, "old/doc.bin", content.clone())
        .await;
    let (owner, folder) = default_folder(&server, "yul").await;
    let root: NodeId = folder.head_root.parse().expect("root id");
    let doc = lookup(state.store.as_ref(), &root, &[name("old"), name("doc.bin")])
        .expect("lookup")
        .expect("doc.bin");
    let Node::File(node) = state.store.get_node(&doc.child).expect("file node") else {
        panic!("doc.bin is not a file node")
    };
    let blocks: Vec<BlockId> = node.blocks().iter().map(|b| b.id).collect();
    assert!(blocks.len() >= 2, "{blocks:?}");
    let status = server.delete_file(&token, &file["id"]).await.status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    prune_versions(state, Duration::ZERO).await.expect("prune");

    // Everything of doc.bin is now older than the grace; then a client uploads a directory
    // naming its file node (it was told the server has it).
    let grace = Duration::from_secs(2);
    tokio::time::sleep(grace + Duration::from_millis(1100)).await;
    let dir = chunk_dir(vec![DirEntry {
        name: name("back.bin"),
        ..doc.clone()
    }])
    .expect("dir");
    for (_, node) in &dir.nodes {
        state.store.put_node(node).expect("put node");
    }
    state.store.sync().expect("sync");
    let uploaded: Vec<(String, i64)> = dir
        .nodes
        .iter()
        .map(|(id, _)| (id.to_string(), 100))
        .collect();
    db::add_uploaded(
        &state.db,
        owner,
        folder.id,
        &uploaded,
        &[],
        cairn_server::api::now_ms(),
    )
    .await
    .expect("uploaded");

    let report = collect_garbage(state, grace).await.expect("gc");
    assert!(report.deleted >= 1, "the old root goes: {report:?}");
    assert!(
        report.sheltered > blocks.len() as u64,
        "the file node and its blocks are kept under the young directory: {report:?}"
    );
    assert!(state.store.has(&BlockId::from(doc.child)).expect("has"));
    for block in &blocks {
        assert!(
            state.store.has(block).expect("has"),
            "block {block} was collected"
        );
    }
    let objects = new_objects(state, folder.id, dir.root, true)
        .await
        .expect("the directory's subtree is whole, so its commit is accepted");
    assert!(objects.contains(&dir.root.to_string()), "{objects:?}");
    let mut restored = Vec::new();
    for block in &blocks {
        restored.extend(state.store.get(block).expect("block"));
    }
    assert_eq!(restored, content, "the file reads back whole");
}
