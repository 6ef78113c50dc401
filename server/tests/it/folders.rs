//! `/folders`: listing, creating, and a folder's commits (snapshots) with paging.

use cairn_protocol::path::RelPath;
use cairn_server::commit::commit_path;
use cairn_store::NodeStore;
use cairn_store::node::{DirEntry, EntryKind, FileNode, Name, Node};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Engine, TestServer, assert_error, bytes};

crate::both_databases!(
    folders_and_commits,
    list_filters,
    a_file_is_deleted_in_its_own_folder
);

async fn folders_and_commits(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("fay").await;
    let (other, _) = server.user("gus").await;

    let listed: Value = server
        .get(&token, "/folders")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["folders"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["folders"][0]["name"], "default");
    assert_eq!(listed["folders"][0]["head"]["seq"], 0);

    let create = |name: &'static str, token: String| {
        let server = &server;
        async move {
            server
                .client
                .post(server.url("/folders"))
                .bearer_auth(token)
                .json(&json!({ "name": name }))
                .send()
                .await
                .expect("request")
        }
    };
    let created = create("backup-host1", token.clone()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("json");
    assert_eq!(
        (created["name"].as_str(), created["head"]["seq"].as_u64()),
        (Some("backup-host1"), Some(0))
    );
    assert_error(
        create("backup-host1", token.clone()).await,
        StatusCode::CONFLICT,
        "folder_exists",
    )
    .await;
    for bad in ["", ".hidden", "a/b", "sp ace", "x".repeat(65).leak()] {
        let bad: &'static str = bad;
        assert_error(
            create(bad, token.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid_folder_name",
        )
        .await;
    }
    // The same name is free for another user, and is another folder.
    let theirs = create("backup-host1", other.clone()).await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    let theirs: Value = theirs.json().await.expect("json");
    let unauthenticated = server
        .client
        .get(server.url("/folders"))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    // Three commits to `default`: two uploads and a replacement.
    for (path, len, seed) in [("a.bin", 1000, 1), ("b.bin", 2000, 2), ("a.bin", 500, 3)] {
        let uploaded = server.upload(&token, path, bytes(len, seed)).await;
        assert_eq!(uploaded.status(), StatusCode::CREATED);
    }
    let commits: Value = server
        .get(&token, "/folders/default/commits")
        .await
        .json()
        .await
        .expect("json");
    let list = commits["commits"].as_array().expect("commits");
    let seen: Vec<(u64, u64, u64, u64)> = list
        .iter()
        .map(|c| {
            (
                c["seq"].as_u64().unwrap_or(99),
                c["parent_seq"].as_u64().unwrap_or(99),
                c["files"].as_u64().unwrap_or(99),
                c["bytes"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![(3, 2, 2, 2500), (2, 1, 2, 3000), (1, 0, 1, 1000)]
    );
    assert_eq!(commits["more"], false);
    assert_eq!(list[0]["device"], "rest");
    assert_eq!(list[0]["root"].as_str().map(str::len), Some(64));

    let page: Value = server
        .get(&token, "/folders/default/commits?limit=1&before=3")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["commits"][0]["seq"], 2);
    assert_eq!(page["more"], true);

    let listed: Value = server
        .get(&token, "/folders")
        .await
        .json()
        .await
        .expect("json");
    let default = &listed["folders"][1];
    assert_eq!(
        (
            default["name"].as_str(),
            default["head"]["seq"].as_u64(),
            default["files"].as_u64(),
            default["bytes"].as_u64()
        ),
        (Some("default"), Some(3), Some(2), Some(2500)),
        "{listed}"
    );
    assert_eq!(listed["folders"][0]["name"], "backup-host1");

    // Each folder has its own identity, the same in every listing as at its creation.
    let uid = |folder: &Value| folder["uid"].as_str().unwrap_or_default().to_owned();
    let uids = [
        uid(&listed["folders"][0]),
        uid(&listed["folders"][1]),
        uid(&theirs),
    ];
    for one in &uids {
        assert!(
            one.len() == 32 && one.bytes().all(|b| b.is_ascii_hexdigit()),
            "{listed} {theirs}"
        );
    }
    assert_eq!(uids[0], uid(&created));
    assert!(uids[0] != uids[1] && uids[0] != uids[2] && uids[1] != uids[2]);

    // Names are per user: the other user sees their own (empty) history, and a folder only
    // the first user has is not found.
    let theirs: Value = server
        .get(&other, "/folders/default/commits")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["commits"].as_array().map(Vec::len), Some(0));
    assert_error(
        server.get(&other, "/folders/nope/commits").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

async fn list_filters(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("hal").await;
    for path in ["dir/c.bin", "dir/sub/d.bin", "dirx.bin", "dir.bin", "e.bin"] {
        assert_eq!(
            server.upload(&token, path, bytes(10, 1)).await.status(),
            StatusCode::CREATED
        );
    }
    let paths = |list: &Value| -> Vec<String> {
        list["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f["path"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let under: Value = server
        .get(&token, "/files/?prefix=dir")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(paths(&under), ["dir/c.bin", "dir/sub/d.bin"]);
    let under: Value = server
        .get(&token, "/files/?prefix=dir/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(paths(&under), ["dir/c.bin", "dir/sub/d.bin"]);
    let one: Value = server
        .get(&token, "/files/?prefix=e.bin")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(paths(&one), ["e.bin"]);

    let id = one["files"][0]["id"].as_i64().expect("id");
    let deleted = server.delete_file(&token, id).await;
    assert!(deleted.status().is_success());
    let gone: Value = server
        .get(&token, "/files/?prefix=e.bin")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(paths(&gone), Vec::<String>::new());
    let exact: Value = server
        .get(&token, "/files/?path=e.bin")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(paths(&exact), ["e.bin"]);
    assert_eq!(exact["files"][0]["deleted"], true);
    assert_eq!(exact["files"][0]["version"], 2);
    assert_error(
        server.get(&token, "/files/?path=e.bin&prefix=dir").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}

/// `DELETE /files/{id}` takes an id from any of the owner's folders (their change events carry
/// them): the file is deleted in its own folder, and a file at the same path in `default` stays.
async fn a_file_is_deleted_in_its_own_folder(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, _) = server.user("hal").await;
    let owner = server.user_id("hal").await;
    let created = server
        .client
        .post(server.url("/folders"))
        .bearer_auth(&token)
        .json(&json!({ "name": "photos" }))
        .send()
        .await
        .expect("request");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        server
            .upload(&token, "a.bin", bytes(1000, 1))
            .await
            .status(),
        StatusCode::CREATED
    );
    let node = Node::File(FileNode::new(0o644, 0, Vec::new()).expect("empty file"));
    let (child, _) = server.state.store.put_node(&node).expect("put node");
    let entry = DirEntry {
        name: Name::new(b"a.bin".to_vec()).expect("name"),
        kind: EntryKind::File,
        size: 0,
        mtime_ns: 0,
        mode: 0o644,
        child,
    };
    let path = RelPath::parse("a.bin").expect("path");
    let in_photos = commit_path(&server.state, owner, "photos", &path, Some(entry), "test")
        .await
        .expect("commit");

    let deleted = server.delete_file(&token, in_photos.file.id).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let listed: Value = server
        .get(&token, "/folders")
        .await
        .json()
        .await
        .expect("json");
    let files = |name: &str| {
        listed["folders"]
            .as_array()
            .expect("folders")
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| (f["head"]["seq"].as_u64(), f["files"].as_u64()))
    };
    assert_eq!(files("photos"), Some((Some(2), Some(0))), "{listed}");
    assert_eq!(files("default"), Some((Some(1), Some(1))), "{listed}");
    let default: Value = server
        .get(&token, "/files/?path=a.bin")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(default["files"][0]["size"], 1000, "{default}");
    // Deleted once; a second time it is gone.
    assert_eq!(
        server.delete_file(&token, in_photos.file.id).await.status(),
        StatusCode::NOT_FOUND
    );
}
