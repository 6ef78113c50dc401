//! Upload, list, download (whole, ranges, versions), delete, versions, changes, heartbeat,
//! health, the OpenAPI document and `cairn-server check`.

use std::time::Duration;

use cairn_protocol::path::RelPath;
use cairn_server::commit::commit_path;
use cairn_server::db;
use cairn_server::jobs::collect_garbage;
use cairn_store::node::{DirEntry, EntryKind, FileNode, Name, Node};
use cairn_store::{BlockStore, NodeStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Engine, TestServer, assert_error, bytes};

crate::both_databases!(
    file_lifecycle,
    listing_pages,
    quota_is_enforced,
    failed_uploads_are_charged_until_collected,
    callers_gone_mid_commit_strand_no_one,
    changes_heartbeat_health_openapi,
    check_command_finds_corruption
);

async fn file_lifecycle(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("ann").await;
    let data = bytes(3_000_000, 1);
    let uploaded = server.upload(&token, "docs/report.bin", data.clone()).await;
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let file: Value = uploaded.json().await.expect("json");
    let id = file["id"].as_i64().expect("id");
    assert_eq!(
        (
            file["path"].as_str(),
            file["size"].as_u64(),
            file["version"].as_u64()
        ),
        (Some("docs/report.bin"), Some(3_000_000), Some(1))
    );
    assert_eq!(file["hash"].as_str().map(str::len), Some(64));
    assert!(
        file["modified_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let download = server.get(&token, &format!("/files/{id}/download")).await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.headers()["content-length"], "3000000");
    assert_eq!(download.bytes().await.expect("body").as_ref(), &data[..]);

    let ranged = server
        .client
        .get(server.url(&format!("/files/{id}/download")))
        .bearer_auth(&token)
        .header("Range", "bytes=262000-262999")
        .send()
        .await
        .expect("request");
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        ranged.headers()["content-range"],
        "bytes 262000-262999/3000000"
    );
    assert_eq!(
        ranged.bytes().await.expect("body").as_ref(),
        &data[262_000..263_000]
    );
    let bad_range = server
        .client
        .get(server.url(&format!("/files/{id}/download")))
        .bearer_auth(&token)
        .header("Range", "bytes=5000000-")
        .send()
        .await
        .expect("request");
    assert_eq!(bad_range.headers()["content-range"], "bytes */3000000");
    assert_error(
        bad_range,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
    )
    .await;

    // A second version keeps the id; the first stays downloadable.
    let edited = bytes(1_000, 2);
    let second: Value = server
        .upload(&token, "docs/report.bin", edited.clone())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (second["id"].as_i64(), second["version"].as_u64()),
        (Some(id), Some(2))
    );
    let old = server
        .get(&token, &format!("/files/{id}/download?version=1"))
        .await;
    assert_eq!(old.bytes().await.expect("body").as_ref(), &data[..]);

    assert_eq!(
        server.delete_file(&token, id).await.status(),
        StatusCode::NO_CONTENT
    );
    let listing: Value = server
        .get(&token, "/files/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listing["files"], json!([]));
    assert_error(
        server.get(&token, &format!("/files/{id}/download")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let versions: Value = server
        .get(&token, &format!("/files/{id}/versions"))
        .await
        .json()
        .await
        .expect("json");
    let list = versions["versions"].as_array().expect("versions");
    assert_eq!(list.len(), 3);
    assert_eq!(
        (list[0]["version"].as_u64(), list[0]["deleted"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(
        (list[2]["version"].as_u64(), list[2]["size"].as_u64()),
        (Some(1), Some(3_000_000))
    );
    let restored = server
        .get(&token, &format!("/files/{id}/download?version=2"))
        .await;
    assert_eq!(
        restored.bytes().await.expect("body").as_ref(),
        &edited[..],
        "deleted files stay in history"
    );
    assert_error(
        server.delete_file(&token, id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Uploading the same content twice stores it once; empty files work.
    let empty: Value = server
        .upload(&token, "empty.txt", Vec::new())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(empty["size"], 0);
    let body = server
        .get(&token, &format!("/files/{}/download", empty["id"]))
        .await
        .bytes()
        .await
        .expect("body");
    assert!(body.is_empty());
}

async fn listing_pages(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("ann").await;
    for idx in 0..7 {
        assert_eq!(
            server
                .upload(&token, &format!("dir/f{idx}.txt"), vec![b'x'; idx])
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/files/?limit=3&cursor={c}"),
            None => "/files/?limit=3".to_owned(),
        };
        let page: Value = server.get(&token, &query).await.json().await.expect("json");
        seen.extend(
            page["files"]
                .as_array()
                .expect("files")
                .iter()
                .map(|f| f["path"].as_str().expect("path").to_owned()),
        );
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("dir/f{i}.txt")).collect();
    assert_eq!(seen, expected);
    assert_error(
        server.get(&token, "/files/?limit=abc").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}

async fn quota_is_enforced(engine: Engine) {
    let server = TestServer::start_with(engine, |config| config.quota_default = 100_000).await;
    let (token, _) = server.user("ann").await;
    assert_eq!(
        server
            .upload(&token, "a.bin", bytes(60_000, 1))
            .await
            .status(),
        StatusCode::CREATED
    );
    let over = server.upload(&token, "b.bin", bytes(60_000, 2)).await;
    assert_error(over, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    // An upload far over the quota is turned away once it outgrows the free space, not after
    // the server stored all of it.
    let stored_before = stored_bytes(&server);
    let huge = server.upload(&token, "c.bin", bytes(4_000_000, 4)).await;
    assert_error(huge, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    let stored = stored_bytes(&server) - stored_before;
    assert!(
        stored < 1_000_000,
        "the refused upload stored {stored} bytes of its 4,000,000"
    );
    // Replacing a file counts only the difference.
    assert_eq!(
        server
            .upload(&token, "a.bin", bytes(90_000, 3))
            .await
            .status(),
        StatusCode::CREATED
    );
    let listing: Value = server
        .get(&token, "/files/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        listing["files"].as_array().map(Vec::len),
        Some(1),
        "the refused upload left nothing behind"
    );
}

/// Sends `data` as an upload of `path` whose body then breaks off (the client died): the
/// server never sees the end of the file.
async fn broken_upload(server: &TestServer, token: &str, path: &str, data: Vec<u8>) {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = data
        .chunks(256 * 1024)
        .map(|c| Ok(c.to_vec()))
        .chain([Err(std::io::Error::other("the client died"))])
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let form = reqwest::multipart::Form::new()
        .text("path", path.to_owned())
        .part("file", reqwest::multipart::Part::stream(body));
    let sent = server
        .client
        .post(server.url("/files/upload"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await;
    assert!(sent.is_err(), "a broken-off upload got an answer: {sent:?}");
}

/// Blocks a REST upload stored and no commit took up (the body broke off) are charged to the
/// owner's quota for uploads not yet committed, as QUIC uploads are, until the collector
/// expires them: failed uploads cannot fill the disk. A committed upload costs nothing there,
/// and one refused for going over that quota says why.
async fn failed_uploads_are_charged_until_collected(engine: Engine) {
    const MIB: usize = 1 << 20;
    let server = TestServer::start_with(engine, |config| config.quota_default = 12 << 20).await;
    let (token, _) = server.user("ann").await;
    let db = &server.state.db;
    let owner = server.user_id("ann").await;
    let pending = || async { db::pending_uploads(db, owner).await.expect("pending").0 };

    // 10 MiB sent, then the client dies: the first chunk buffer's blocks (7 to 8 MiB) were
    // stored, the rest was held back and not.
    let stored_before = stored_bytes(&server);
    broken_upload(&server, &token, "broken.bin", bytes(10 * MIB, 1)).await;
    // The server notices the broken body on its own time.
    let mut charged = 0;
    for _ in 0..100 {
        charged = pending().await;
        if charged > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = i64::try_from(stored_bytes(&server) - stored_before).expect("size");
    assert!(
        (7 * MIB as i64..=8 * MIB as i64).contains(&charged),
        "charged {charged} bytes"
    );
    assert_eq!(charged, stored, "every stored byte is charged");

    // A small upload that commits is never charged (its one batch is recorded by the commit).
    assert_eq!(
        server
            .upload(&token, "small.bin", bytes(3 * MIB, 2))
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(pending().await, charged);

    // 8.5 MiB fit the free space (9 MiB), but not beside the 7-8 MiB not yet committed: refused
    // once the bytes received outgrow the rest of the quota, before a batch is stored.
    let refused = server
        .upload(&token, "next.bin", bytes(17 * MIB / 2, 3))
        .await;
    let message = assert_error(refused, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded").await;
    assert!(message.contains("not yet committed"), "{message}");
    assert_eq!(
        pending().await,
        charged,
        "the refused upload stored nothing"
    );

    // Kept while young; expired with their blocks once the grace period is over.
    let young = collect_garbage(&server.state, Duration::from_secs(3600))
        .await
        .expect("gc");
    assert_eq!(young.uploads_expired, 0, "{young:?}");
    assert_eq!(pending().await, charged);
    let report = collect_garbage(&server.state, Duration::ZERO)
        .await
        .expect("gc");
    assert_eq!(
        i64::try_from(report.pending_released).expect("size"),
        charged,
        "{report:?}"
    );
    assert_eq!(pending().await, 0);
    assert_eq!(
        server
            .upload(&token, "next.bin", bytes(17 * MIB / 2, 3))
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        pending().await,
        0,
        "an upload of two batches, the first charged while the second was stored, committed"
    );
    let listing: Value = server
        .get(&token, "/files/")
        .await
        .json()
        .await
        .expect("json");
    let paths: Vec<&str> = listing["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths, ["next.bin", "small.bin"]);
}

/// Changes queued for one folder are committed in batches led by one of their callers. A caller
/// dropped while it leads (the server drops a request whose client went away) must not take the
/// other callers' changes with it: each of them is still committed and answered.
async fn callers_gone_mid_commit_strand_no_one(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.user("ann").await;
    let owner = server.user_id("ann").await;
    let file = Node::File(FileNode::new(0o644, 0, Vec::new()).expect("empty file"));
    let (child, _) = server.state.store.put_node(&file).expect("put node");
    for round in 0..12 {
        let mut callers = Vec::new();
        for i in 0..30 {
            let state = server.state.clone();
            let path = RelPath::parse(&format!("r{round}/f{i}.txt")).expect("path");
            let entry = DirEntry {
                name: Name::new(path.file_name().as_bytes().to_vec()).expect("name"),
                kind: EntryKind::File,
                size: 0,
                mtime_ns: 0,
                mode: 0o644,
                child,
            };
            callers.push(tokio::spawn(async move {
                commit_path(&state, owner, "default", &path, Some(entry), "test").await
            }));
        }
        tokio::time::sleep(Duration::from_millis(round)).await;
        for (i, caller) in callers.iter().enumerate() {
            if i % 3 == 0 {
                caller.abort();
            }
        }
        for (i, caller) in callers.into_iter().enumerate() {
            let joined = tokio::time::timeout(Duration::from_secs(30), caller)
                .await
                .unwrap_or_else(|_| panic!("round {round}: caller {i} was stranded"));
            match joined {
                Ok(committed) => {
                    committed.unwrap_or_else(|e| panic!("round {round}: caller {i}: {e:?}"));
                }
                Err(err) => assert!(err.is_cancelled() && i % 3 == 0, "{err}"),
            }
        }
    }
}

/// The bytes of every block in the server's store.
fn stored_bytes(server: &TestServer) -> usize {
    let store = &server.state.store;
    store
        .list()
        .expect("list")
        .iter()
        .map(|id| store.get(id).expect("get").len())
        .sum()
}

async fn changes_heartbeat_health_openapi(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("ann").await;
    let empty: Value = server
        .get(&token, "/sync/changes?since=0")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(empty["head"]["seq"], 0);
    assert_eq!(empty["changes"], json!([]));
    server.upload(&token, "a.txt", b"one".to_vec()).await;
    server.upload(&token, "b.txt", b"two".to_vec()).await;
    let changes: Value = server
        .get(&token, "/sync/changes?since=1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(changes["head"]["seq"], 2);
    assert_eq!(changes["changes"].as_array().map(Vec::len), Some(1));
    assert_eq!(changes["changes"][0]["path"], "b.txt");
    assert_eq!(changes["more"], false);

    let beat = server
        .client
        .post(server.url("/sync/heartbeat"))
        .bearer_auth(&token)
        .json(&json!({"client_id": "laptop-1", "status": "idle"}))
        .send()
        .await
        .expect("request");
    assert_eq!(beat.status(), StatusCode::OK);
    let beat: Value = beat.json().await.expect("json");
    assert_eq!(beat["head"], changes["head"]);
    assert!(
        beat["used_bytes"].as_i64().is_some_and(|used| used > 0),
        "{beat}"
    );
    assert!(
        beat["quota_bytes"].as_i64() > beat["used_bytes"].as_i64(),
        "{beat}"
    );
    let bad = server
        .client
        .post(server.url("/sync/heartbeat"))
        .bearer_auth(&token)
        .json(&json!({"client_id": "../etc"}))
        .send()
        .await
        .expect("request");
    assert_error(bad, StatusCode::BAD_REQUEST, "invalid_client_id").await;

    let health: Value = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            health["status"].as_str(),
            health["database"].as_str(),
            health["store"].as_str()
        ),
        (Some("ok"), Some("ok"), Some("ok"))
    );

    let doc: Value = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    for path in [
        "/auth/register",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/files/",
        "/files/upload",
        "/files/{file_id}/download",
        "/files/{file_id}",
        "/files/{file_id}/versions",
        "/sync/changes",
        "/sync/heartbeat",
        "/health",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    for schema in [
        "FileInfo",
        "TokenResponse",
        "ErrorBody",
        "ChangeList",
        "Event",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "OpenAPI lacks schema {schema}"
        );
    }
}

async fn check_command_finds_corruption(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("ann").await;
    server.upload(&token, "a.bin", bytes(500_000, 9)).await;
    server.upload(&token, "b/c.bin", bytes(10_000, 8)).await;
    let database_url = server.database_url.clone();
    let dir = server.stop().await;
    let server_command = |command: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn-server"))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--database-url")
            .arg(&database_url)
            .arg(command)
            .output()
            .unwrap_or_else(|e| panic!("run cairn-server {command}: {e}"))
    };
    let check = || server_command("check");
    let clean = check();
    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert!(
        clean.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(stdout.contains("; 0 problems"), "{stdout}");
    // Damage one stored block (the last byte of a pack is the last byte of its last block):
    // check must name it and fail.
    let block = std::fs::read_dir(dir.path().join("blocks/packs"))
        .expect("packs")
        .next()
        .expect("a pack")
        .expect("entry")
        .path();
    let mut stored = std::fs::read(&block).expect("read");
    let last = stored.len() - 1;
    stored[last] ^= 0xff;
    std::fs::write(&block, stored).expect("damage");
    let damaged = check();
    let stdout = String::from_utf8_lossy(&damaged.stdout);
    assert_eq!(damaged.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("problem:") && stdout.contains("; 1 problems"),
        "{stdout}"
    );

    // A lost index log: the server refuses to start, in one line that says what to do...
    std::fs::remove_file(dir.path().join("blocks/index.log")).expect("lose the log");
    let refused = check();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("index log is missing") && stderr.contains("cairn-server rebuild-index"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("index log is missing").count(),
        1,
        "said once: {stderr}"
    );
    // ...and `rebuild-index` brings every block back but the damaged one.
    let rebuilt = server_command("rebuild-index");
    let stdout = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(
        rebuilt.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(stdout.contains("rebuilt the index"), "{stdout}");
    // No stored node vouches for its subtree any more: what was committed is walked again.
    let distrusted: u64 = stdout
        .lines()
        .find_map(|l| {
            l.strip_suffix(
                " committed objects will be checked again by the next commit naming them",
            )
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of distrusted objects: {stdout}"));
    assert!(
        distrusted >= 4,
        "two files, their blocks and directories: {stdout}"
    );
    let after = check();
    let stdout = String::from_utf8_lossy(&after.stdout);
    assert_eq!(after.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("missing") && stdout.contains("; 1 problems"),
        "only the damaged block is gone: {stdout}"
    );
}
