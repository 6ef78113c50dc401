//! Version pruning and garbage collection: old versions go, current data stays, the store
//! stays consistent, and young unreferenced blocks (an upload not yet committed) survive.

use std::time::Duration;

use cairn_server::db;
use cairn_server::jobs::{GC_LEASE_MARK, GcReport, collect_garbage, prune_versions};
use cairn_store::{BlockId, BlockStore};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Engine, TestServer, assert_error, bytes};

crate::both_databases!(
    prune_then_collect,
    uploads_never_committed_expire,
    one_collection_at_a_time
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
    let status = server
        .client
        .delete(server.url(&format!("/files/{}", gone["id"])))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request")
        .status();
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
    let owner = db::user_by_name(db, "uma")
        .await
        .expect("query")
        .expect("uma")
        .id;
    let folder = db::folder(db, owner, "default")
        .await
        .expect("query")
        .expect("default folder")
        .id;
    let id = |seed: &[u8]| BlockId::of(seed).to_string();
    let now = cairn_server::api::now_ms();
    let two_hours_ago = now - 2 * 3600 * 1000;
    let charged = db::add_uploaded(
        db,
        owner,
        folder,
        &[(id(b"a"), 100), (id(b"b"), 200), (id(b"c"), 400)],
        two_hours_ago,
    )
    .await
    .expect("add");
    assert_eq!(charged, 700);
    let again = db::add_uploaded(db, owner, folder, &[(id(b"a"), 100)], now)
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
