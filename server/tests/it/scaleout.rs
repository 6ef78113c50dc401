//! Two server instances sharing PostgreSQL and Redis: a user, a token, an event
//! and a rate limit are the same whichever instance a request reaches.
//!
//! Needs PostgreSQL and Redis on this machine (under `CI=true` their absence fails the test).
//! The shared Redis gets a namespace per test; the restart test runs its own `redis-server`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Engine, TestServer, bytes, postgres_available, rand_suffix};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Whether Redis answers at `addr`; panics under `CI=true` when it does not.
async fn redis_available() -> bool {
    let reachable = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect("127.0.0.1:6379"),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !reachable {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but Redis is not reachable on 127.0.0.1:6379; start redis-server"
        );
        #[allow(clippy::print_stderr, reason = "a skipped test says why")]
        {
            eprintln!("skipping: Redis is not reachable on 127.0.0.1:6379");
        }
    }
    reachable
}

/// Instance A on a fresh PostgreSQL database, and B sharing A's database and blocks.
async fn two_instances(redis_url: &str) -> (TestServer, TestServer) {
    let namespace = format!("cairn-it-{}", rand_suffix());
    let services = |config: &mut cairn_server::config::ServerConfig| {
        config.services.redis_url = Some(redis_url.to_owned());
        config.services.redis_namespace = Some(namespace.clone());
    };
    let a = TestServer::start_with(Engine::Postgres, services).await;
    let b = TestServer::start_sharing(&a, services).await;
    (a, b)
}

async fn ws_connect(
    server: &TestServer,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!(
        "{}/ws/sync/phone-1?token={token}",
        server.base.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    let first = next_file_event(&mut socket, None, Duration::from_secs(5)).await;
    assert!(first.is_none(), "only a heartbeat comes first");
    socket
}

/// The next message on `socket` before `deadline`; `waiting` says for what, when none comes.
async fn next_message<S>(socket: &mut S, deadline: Instant, waiting: &str) -> Message
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, socket.next())
        .await
        .unwrap_or_else(|_| panic!("nothing came in time: {waiting}"))
        .unwrap_or_else(|| panic!("the socket ended: {waiting}"))
        .expect("message")
}

/// The next `file_changed` event for `path` within `wait` (`path` `None`: wait for the
/// connect-time heartbeat and return `None`).
async fn next_file_event<S>(socket: &mut S, path: Option<&str>, wait: Duration) -> Option<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = Instant::now() + wait;
    let waiting = format!("an event for {path:?} within {wait:?}");
    loop {
        let Message::Text(text) = next_message(socket, deadline, &waiting).await else {
            continue;
        };
        let event: Value = serde_json::from_str(&text).expect("event JSON");
        match path {
            None if event["type"] == "heartbeat" => return None,
            Some(path) if event["type"] == "file_changed" && event["change"]["path"] == path => {
                return Some(event);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_users_tokens_events_and_limits() {
    if !(postgres_available().await && redis_available().await) {
        return;
    }
    let (a, b) = two_instances(REDIS_URL).await;
    for server in [&a, &b] {
        let health = health(server).await;
        assert_eq!(
            (health["status"].as_str(), health["redis"].as_str()),
            (Some("ok"), Some("ok")),
            "{health}"
        );
    }

    // Register on A, log in on B.
    a.register("ann").await;
    let (status, tokens) = b.login("ann", "correct horse battery").await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();

    // An upload through A reaches a WebSocket client of B.
    let mut socket = ws_connect(&b, &access).await;
    let data = bytes(300_000, 7);
    let started = Instant::now();
    let uploaded = a.upload(&access, "shared/report.pdf", data.clone()).await;
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let event = next_file_event(
        &mut socket,
        Some("shared/report.pdf"),
        Duration::from_secs(5),
    )
    .await
    .expect("event");
    let latency = started.elapsed();
    assert!(
        latency < Duration::from_secs(1),
        "cross-instance event after {latency:?}"
    );

    // B knows the file (shared metadata). Its blocks are in A's local store: serving them
    // through B needs shared block storage (S3), not part of this setup.
    let id = event["change"]["id"].as_i64().expect("file id");
    let versions = b.get(&access, &format!("/files/{id}/versions")).await;
    assert_eq!(versions.status(), StatusCode::OK);
    let downloaded = a.get(&access, &format!("/files/{id}/download")).await;
    assert_eq!(downloaded.bytes().await.expect("body").to_vec(), data);

    // A refresh token from B's login rotates on A; replaying it on B revokes the family.
    let rotated = a
        .post_json("/auth/refresh", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.expect("json");
    let replay = b
        .post_json("/auth/refresh", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    let after_reuse = a
        .post_json(
            "/auth/refresh",
            &json!({"refresh_token": rotated["refresh_token"]}),
        )
        .await;
    assert_eq!(
        after_reuse.status(),
        StatusCode::UNAUTHORIZED,
        "the family is revoked"
    );

    // The per-user login limit counts attempts on both instances together.
    let limit = cairn_server::limits::AUTH_ATTEMPTS_PER_USER_PER_MINUTE;
    b.register("bob").await;
    for attempt in 0..limit {
        let server = if attempt % 2 == 0 { &a } else { &b };
        let (status, _) = server.login("bob", "wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    for server in [&a, &b] {
        let refused = server
            .post_json(
                "/auth/login",
                &json!({"username": "bob", "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
}

/// A private `redis-server` on a free port, killed when dropped.
struct PrivateRedis {
    port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<PrivateRedis> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(PrivateRedis { port, child }),
            Err(err) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true but redis-server cannot be started: {err}"
                );
                None
            }
        }
    }

    async fn wait_up(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn health(server: &TestServer) -> Value {
    server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json")
}

async fn redis_health(server: &TestServer) -> String {
    health(server).await["redis"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_redis_health(server: &TestServer, ok: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = redis_health(server).await;
        if (health == "ok") == ok {
            return;
        }
        assert!(Instant::now() < deadline, "redis health stayed {health:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The close frame that ends `socket` within `wait`, as (code, reason); events before it are
/// skipped.
async fn close_of<S>(socket: &mut S, wait: Duration) -> (u16, String)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = Instant::now() + wait;
    let waiting = format!("a close frame within {wait:?}");
    loop {
        if let Message::Close(frame) = next_message(socket, deadline, &waiting).await {
            let frame = frame.expect("a close frame with a code");
            return (u16::from(frame.code), frame.reason.to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_again_after_a_redis_restart() {
    if !postgres_available().await {
        return;
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("addr").port()
    };
    let Some(mut redis) = PrivateRedis::start(port) else {
        return;
    };
    redis.wait_up().await;
    let (a, b) = two_instances(&format!("redis://127.0.0.1:{port}")).await;
    let (token, _) = a.user("ann").await;
    let mut socket = ws_connect(&b, &token).await;

    redis.kill();
    wait_redis_health(&b, false).await;
    // A still serves its own clients while Redis is away.
    let during = a
        .upload(&token, "during.txt", b"while redis was down".to_vec())
        .await;
    assert_eq!(during.status(), StatusCode::CREATED);

    let redis = PrivateRedis::start(port).expect("restart redis-server");
    redis.wait_up().await;
    wait_redis_health(&a, true).await;
    wait_redis_health(&b, true).await;
    // What A published while B was cut off may never reach B's clients: B closes their sockets
    // so they resync at once instead of at their next poll.
    let (code, reason) = close_of(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 4009, "{reason}");
    assert!(reason.contains("resync"), "{reason}");
    let mut socket = ws_connect(&b, &token).await;
    let after = a
        .upload(&token, "after.txt", b"after the restart".to_vec())
        .await;
    assert_eq!(after.status(), StatusCode::CREATED);
    let event = next_file_event(&mut socket, Some("after.txt"), Duration::from_secs(5)).await;
    assert!(event.is_some());
    drop(redis);
}

/// A private `s3s-fs` (S3-compatible server over a directory) on a free port, killed on drop.
struct PrivateS3 {
    url: String,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

const S3_KEY: (&str, &str) = ("cairn-test-key", "cairn-test-secret-0123456789");

impl PrivateS3 {
    async fn start() -> Option<PrivateS3> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("cairn-blocks")).expect("bucket directory");
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("addr").port()
        };
        let child = std::process::Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY.0, "--secret-key", S3_KEY.1])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true but s3s-fs cannot be started ({err}); .ci/run installs it"
                );
                #[allow(clippy::print_stderr, reason = "a skipped test says why")]
                {
                    eprintln!("skipping: s3s-fs is not installed ({err})");
                }
                return None;
            }
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(PrivateS3 {
                    url: format!("http://127.0.0.1:{port}/cairn-blocks/deployment-1"),
                    dir,
                    child,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("s3s-fs did not come up on port {port}");
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The block id a bucket object is named by.
fn object_id(path: &std::path::Path) -> cairn_store::BlockId {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("object named by its block id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_blocks_in_s3() {
    if !(postgres_available().await && redis_available().await) {
        return;
    }
    let Some(s3) = PrivateS3::start().await else {
        return;
    };
    let namespace = format!("cairn-it-{}", rand_suffix());
    let services = |config: &mut cairn_server::config::ServerConfig| {
        config.services.redis_url = Some(REDIS_URL.to_owned());
        config.services.redis_namespace = Some(namespace.clone());
        config.services.s3_url = Some(s3.url.clone());
        config.services.s3_credentials = Some((S3_KEY.0.to_owned(), S3_KEY.1.to_owned()));
    };
    let a = TestServer::start_with(Engine::Postgres, services).await;
    let b = TestServer::start_sharing(&a, services).await;
    let (token, _) = a.user("ann").await;

    // Several blocks' worth, uploaded through A, downloaded byte-exact through B.
    let data = bytes(3_000_000, 11);
    let uploaded = a.upload(&token, "video/clip.mp4", data.clone()).await;
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let file: Value = uploaded.json().await.expect("json");
    let id = file["id"].as_i64().expect("id");
    let downloaded = b.get(&token, &format!("/files/{id}/download")).await;
    assert_eq!(downloaded.status(), StatusCode::OK);
    assert_eq!(downloaded.bytes().await.expect("body").to_vec(), data);

    // The objects are in the bucket under the URL's prefix, one per block.
    let blocks_dir = s3.dir.path().join("cairn-blocks/deployment-1/blocks");
    let objects: Vec<std::path::PathBuf> = std::fs::read_dir(&blocks_dir)
        .expect("blocks in the bucket")
        .flatten()
        .flat_map(|shard| std::fs::read_dir(shard.path()).expect("shard").flatten())
        .map(|object| object.path())
        .collect();
    assert!(objects.len() >= 4, "{} objects", objects.len());

    // A damaged object is an error on read, never data.
    let store = cairn_server::s3::S3BlockStore::open(
        &s3.url,
        Some((S3_KEY.0.to_owned(), S3_KEY.1.to_owned())),
        Duration::from_secs(3600),
    )
    .expect("open the bucket");
    let victim = objects
        .iter()
        .find(|path| std::fs::metadata(path).is_ok_and(|m| m.len() > 1000))
        .expect("a data block")
        .clone();
    let id = object_id(&victim);
    std::fs::write(&victim, b"not the block any more").expect("damage the object");
    // A block the bucket is asked to keep (a "lacking" answer of "stored") is rewritten when it
    // is old, so the collector cannot take it before the commit relying on it.
    let old_object = objects
        .iter()
        .find(|path| **path != victim)
        .expect("another block")
        .clone();
    let old_id = object_id(&old_object);
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old_object)
        .and_then(|f| f.set_modified(two_days_ago))
        .expect("age the object");
    let absent = cairn_store::BlockId::of(b"never stored");
    let read = tokio::task::spawn_blocking(move || {
        use cairn_store::BlockStore as _;
        let aged = store.modified(&old_id).expect("modified").expect("stored");
        assert!(
            aged < two_days_ago + Duration::from_secs(60),
            "the bucket reports the age"
        );
        assert_eq!(
            store.keep_many(&[old_id, absent]).expect("keep"),
            vec![true, false]
        );
        let kept = store.modified(&old_id).expect("modified").expect("stored");
        assert!(
            kept > std::time::SystemTime::now() - Duration::from_secs(600),
            "refreshed: {kept:?}"
        );
        assert!(store.get(&old_id).is_ok(), "the same bytes");
        let listed = store.list().expect("list");
        (listed.contains(&id), store.get(&id))
    })
    .await
    .expect("join");
    assert!(read.0, "list names the block");
    assert!(
        matches!(read.1, Err(cairn_store::Error::BlockCorrupt { .. })),
        "{:?}",
        read.1.map(|d| d.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_racing_commits_on_one_folder_lose_none() {
    if !postgres_available().await {
        return;
    }
    let Some(s3) = PrivateS3::start().await else {
        return;
    };
    let services = |config: &mut cairn_server::config::ServerConfig| {
        config.services.s3_url = Some(s3.url.clone());
        config.services.s3_credentials = Some((S3_KEY.0.to_owned(), S3_KEY.1.to_owned()));
    };
    let a = TestServer::start_with(Engine::Postgres, services).await;
    let b = TestServer::start_sharing(&a, services).await;
    let (token, _) = a.user("ann").await;

    // Both instances commit to the one default folder at once; each serialises its own commits,
    // so every collision is between the instances, on the head's compare-and-swap.
    const PER_INSTANCE: usize = 24;
    let uploads = (0..PER_INSTANCE).flat_map(|i| {
        [
            (&a, format!("race/a-{i:02}.txt")),
            (&b, format!("race/b-{i:02}.txt")),
        ]
    });
    let statuses = futures_util::future::join_all(uploads.map(|(server, path)| {
        let token = token.clone();
        async move {
            let data = format!("{path}\n").into_bytes();
            (
                path.clone(),
                server.upload(&token, &path, data).await.status(),
            )
        }
    }))
    .await;
    for (path, status) in &statuses {
        assert_eq!(*status, StatusCode::CREATED, "{path}");
    }

    // Every accepted upload is in the head, seen through either instance.
    for server in [&a, &b] {
        let list: Value = server
            .get(&token, "/files/?limit=1000")
            .await
            .json()
            .await
            .expect("json");
        let mut paths: Vec<&str> = list["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter_map(|f| f["path"].as_str())
            .collect();
        paths.sort_unstable();
        let mut expected: Vec<&str> = statuses.iter().map(|(p, _)| p.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(paths, expected);
    }
    // The history is one chain: each commit's parent is the one before it.
    let history: Value = b
        .get(&token, "/folders/default/commits?limit=1000")
        .await
        .json()
        .await
        .expect("json");
    let commits = history["commits"].as_array().expect("commits");
    assert!(!commits.is_empty());
    for pair in commits.windows(2) {
        assert_eq!(pair[0]["parent_seq"], pair[1]["seq"], "{pair:?}");
    }
    assert_eq!(commits[0]["files"], 2 * PER_INSTANCE);
}

/// The objects under `dir` (`blocks` or `trash`) of the test bucket, by block id.
fn bucket_objects(s3: &PrivateS3, dir: &str) -> std::collections::BTreeSet<cairn_store::BlockId> {
    let root = s3.dir.path().join("cairn-blocks/deployment-1").join(dir);
    let Ok(shards) = std::fs::read_dir(&root) else {
        return std::collections::BTreeSet::new();
    };
    shards
        .flatten()
        .flat_map(|shard| std::fs::read_dir(shard.path()).expect("shard").flatten())
        .map(|object| object_id(&object.path()))
        .collect()
}

/// Moves the objects `ids` of the test bucket from `from` to `to` (`blocks` or `trash`; the
/// same to leave them in place), setting their last-modified time to `modified` when given.
fn move_objects(
    s3: &PrivateS3,
    ids: &std::collections::BTreeSet<cairn_store::BlockId>,
    from: &str,
    to: &str,
    modified: Option<std::time::SystemTime>,
) {
    let root = s3.dir.path().join("cairn-blocks/deployment-1");
    for id in ids {
        let hex = id.to_string();
        let target = root.join(to).join(&hex[..3]).join(&hex);
        std::fs::create_dir_all(target.parent().expect("shard")).expect("shard directory");
        std::fs::rename(root.join(from).join(&hex[..3]).join(&hex), &target).expect("move");
        if let Some(time) = modified {
            std::fs::File::options()
                .write(true)
                .open(&target)
                .and_then(|f| f.set_modified(time))
                .expect("age the object");
        }
    }
}

/// A bucket cannot check a block's age and delete it in one request: an upload may rewrite the
/// block in between. So the collector moves what it collects to the trash. A read still finds a
/// trashed block there and puts it back, the next collection puts back every trashed block a
/// commit references, and the rest is deleted once it has waited another grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_blocks_wait_in_the_bucket_trash() {
    use cairn_server::jobs::{collect_garbage, prune_versions};

    let Some(s3) = PrivateS3::start().await else {
        return;
    };
    let server = TestServer::start_with(Engine::Sqlite, |config| {
        config.services.s3_url = Some(s3.url.clone());
        config.services.s3_credentials = Some((S3_KEY.0.to_owned(), S3_KEY.1.to_owned()));
        // No put-back is under way here: the purge need not wait for one.
        config.services.trash_settle = Some(Duration::ZERO);
    })
    .await;
    let (token, _) = server.user("tia").await;
    let second = bytes(600_000, 22);
    let file: Value = server
        .upload_json(&token, "doc.bin", bytes(600_000, 21))
        .await;
    let id = file["id"].as_i64().expect("id");
    server.upload(&token, "doc.bin", second.clone()).await;
    let download = || async {
        let response = server.get(&token, &format!("/files/{id}/download")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.expect("body").to_vec()
    };

    // Version 1 goes: its blocks (old enough to collect) move to the trash, none is deleted yet.
    let hour = Duration::from_secs(3600);
    let three_hours_ago = std::time::SystemTime::now() - 3 * hour;
    let before = bucket_objects(&s3, "blocks");
    move_objects(&s3, &before, "blocks", "blocks", Some(three_hours_ago));
    prune_versions(&server.state, Duration::ZERO)
        .await
        .expect("prune");
    let report = collect_garbage(&server.state, hour).await.expect("gc");
    let live = bucket_objects(&s3, "blocks");
    let collected: std::collections::BTreeSet<_> = before.difference(&live).copied().collect();
    assert!(report.deleted >= 3, "{report:?}");
    assert_eq!(collected.len() as u64, report.deleted);
    assert_eq!(bucket_objects(&s3, "trash"), collected, "{report:?}");
    assert_eq!((report.purged, report.restored), (0, 0));

    // Blocks too large for the server's object cache: read only from the bucket, and not
    // tree nodes, so the collector's walk does not read (and put back) any of them.
    let blocks_dir = s3.dir.path().join("cairn-blocks/deployment-1/blocks");
    let large: std::collections::BTreeSet<_> = live
        .iter()
        .filter(|id| {
            let hex = id.to_string();
            std::fs::metadata(blocks_dir.join(&hex[..3]).join(&hex))
                .is_ok_and(|m| m.len() > 64 * 1024)
        })
        .copied()
        .collect();
    assert!(!large.is_empty(), "the file has data blocks");

    // As if uploads had rewritten every live block while it was being moved: the collector
    // puts back all of them, and what it collected before waits out its grace period.
    move_objects(&s3, &live, "blocks", "trash", Some(three_hours_ago));
    let report = collect_garbage(&server.state, hour).await.expect("gc");
    assert_eq!(report.deleted, 0, "{report:?}");
    assert!(report.restored >= large.len() as u64, "{report:?}");
    assert_eq!(report.purged, 0, "{report:?}");
    assert_eq!(bucket_objects(&s3, "blocks"), live);
    assert_eq!(bucket_objects(&s3, "trash"), collected);
    assert_eq!(download().await, second);

    // A read finds a trashed block and puts it back; so does an existence check (a commit's
    // verification).
    move_objects(&s3, &live, "blocks", "trash", None);
    assert_eq!(download().await, second);
    assert!(
        large.is_subset(&bucket_objects(&s3, "blocks")),
        "put back on read"
    );
    move_objects(&s3, &large, "blocks", "trash", None);
    let ids: Vec<_> = large.iter().copied().collect();
    let store = std::sync::Arc::clone(&server.state.store);
    let present = tokio::task::spawn_blocking(move || {
        use cairn_store::BlockStore as _;
        store.has_many(&ids)
    })
    .await
    .expect("join")
    .expect("has_many");
    assert!(present.iter().all(|p| *p), "{present:?}");
    assert!(large.is_subset(&bucket_objects(&s3, "blocks")), "put back");

    // Unreferenced blocks go for good once they have been in the trash for two grace periods,
    // not before.
    // The one left waiting is a data block: a node waiting would keep what it references.
    let trash_dir = s3.dir.path().join("cairn-blocks/deployment-1/trash");
    let last = *collected
        .iter()
        .rfind(|id| {
            let hex = id.to_string();
            std::fs::metadata(trash_dir.join(&hex[..3]).join(&hex))
                .is_ok_and(|m| m.len() > 64 * 1024)
        })
        .expect("a collected data block");
    let (last, earlier): (std::collections::BTreeSet<_>, std::collections::BTreeSet<_>) =
        collected.iter().partition(|id| **id == last);
    move_objects(&s3, &earlier, "trash", "trash", Some(three_hours_ago));
    let ninety_minutes_ago = std::time::SystemTime::now() - Duration::from_secs(90 * 60);
    move_objects(&s3, &last, "trash", "trash", Some(ninety_minutes_ago));
    let report = collect_garbage(&server.state, hour).await.expect("gc");
    assert_eq!(report.purged, earlier.len() as u64, "{report:?}");
    assert_eq!(bucket_objects(&s3, "trash"), last);
    assert_eq!(bucket_objects(&s3, "blocks"), live);
    assert_eq!(download().await, second);

    // A node that a read put back while what it references waits in the trash keeps it there:
    // the purge goes parents first and looks for nodes put back, so no stored node is left
    // without its subtree.
    let store = std::sync::Arc::clone(&server.state.store);
    let (node, data) = tokio::task::spawn_blocking(move || {
        use cairn_store::{BlockStore as _, NodeStore as _};
        let data = [bytes(70_000, 31), bytes(70_000, 32)];
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let blocks: Vec<cairn_store::node::BlockRef> = store
            .put_many(&refs)
            .expect("put")
            .iter()
            .map(|p| cairn_store::node::BlockRef {
                id: p.id,
                len: 70_000,
            })
            .collect();
        let file = cairn_store::node::Node::File(
            cairn_store::node::FileNode::new(0o600, 1, blocks.clone()).expect("file node"),
        );
        let (node, _) = store.put_node(&file).expect("put node");
        (
            cairn_store::BlockId::from(node),
            blocks.iter().map(|b| b.id).collect::<Vec<_>>(),
        )
    })
    .await
    .expect("join");
    let orphans: std::collections::BTreeSet<_> = data.iter().copied().chain([node]).collect();
    move_objects(&s3, &orphans, "blocks", "trash", Some(three_hours_ago));
    let store = std::sync::Arc::clone(&server.state.store);
    // An existence check (it always asks the bucket; a read could be answered from the cache).
    let found = tokio::task::spawn_blocking(move || {
        use cairn_store::BlockStore as _;
        store.has(&node).expect("found in the trash")
    })
    .await
    .expect("join");
    assert!(found);
    assert!(bucket_objects(&s3, "blocks").contains(&node), "put back");
    // This run and the next: the node stays (young), and what it references goes back beside
    // it, not away.
    for _ in 0..2 {
        let report = collect_garbage(&server.state, hour).await.expect("gc");
        let stored = bucket_objects(&s3, "blocks");
        assert!(stored.contains(&node), "{report:?}");
        assert!(
            data.iter().all(|id| stored.contains(id)),
            "the blocks under a node put back are not beside it: {report:?}"
        );
    }
    let store = std::sync::Arc::clone(&server.state.store);
    tokio::task::spawn_blocking(move || {
        use cairn_store::BlockStore as _;
        for id in &data {
            store.get(id).expect("the node's blocks are readable");
        }
    })
    .await
    .expect("join");
}
