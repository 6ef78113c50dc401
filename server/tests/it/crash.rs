//! The real `cairn-server` binary on PostgreSQL, killed with SIGKILL in the middle of a 100 MiB
//! upload: `cairn-server check` finds the store and metadata consistent, the restarted server
//! serves what was committed before, and the same upload then succeeds byte-exact.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::support::{bytes, fresh_postgres_database, postgres_available};

const UPLOAD_SIZE: usize = 100 << 20;
const PIECE: usize = 1 << 20;

/// A server process, killed on drop.
struct ServerProcess {
    child: Child,
    base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(data_dir: &std::path::Path, database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn-server"));
    command
        .env("CAIRN_DATA_DIR", data_dir)
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", "crash-test-secret-of-at-least-32-bytes")
        .env("CAIRN_QUIC_LISTEN", "off")
        .env("CAIRN_LOG_FORMAT", "text")
        .env_remove("REDIS_URL")
        .env_remove("RABBITMQ_URL")
        .env_remove("CAIRN_S3_URL")
        .env_remove("STORAGE_PATH")
        .stdin(Stdio::null());
    command
}

async fn start(data_dir: &std::path::Path, database_url: &str) -> ServerProcess {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("addr").port()
    };
    let child = command(data_dir, database_url)
        .env("CAIRN_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairn-server");
    let server = ServerProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(response) = client.get(format!("{}/ready", server.base)).send().await
            && response.status() == StatusCode::OK
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("cairn-server did not become ready on port {port}");
}

/// Runs `cairn-server check`; returns (exit success, stdout).
fn check(data_dir: &std::path::Path, database_url: &str) -> (bool, String) {
    let output = command(data_dir, database_url)
        .arg("check")
        .output()
        .expect("run cairn-server check");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn form(path: &str, body: reqwest::Body) -> Form {
    Form::new()
        .text("path", path.to_owned())
        .part("file", Part::stream(body).file_name("upload"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_100_mib_upload_loses_nothing() {
    if !postgres_available().await {
        return;
    }
    let database_url = fresh_postgres_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let server = start(dir.path(), &database_url).await;

    let created = client
        .post(format!("{}/auth/register", server.base))
        .json(&json!({
            "username": "ann",
            "email": "ann@example.com",
            "password": "correct horse battery"
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(created.status(), StatusCode::CREATED);
    let login = |base: String| {
        let client = client.clone();
        async move {
            let body: Value = client
                .post(format!("{base}/auth/login"))
                .json(&json!({"username": "ann", "password": "correct horse battery"}))
                .send()
                .await
                .expect("login")
                .json()
                .await
                .expect("json");
            body["access_token"].as_str().expect("token").to_owned()
        }
    };
    let token = login(server.base.clone()).await;

    // A file committed before the crash.
    let before = bytes(2_000_000, 21);
    let kept = client
        .post(format!("{}/files/upload", server.base))
        .bearer_auth(&token)
        .multipart(form("kept.bin", reqwest::Body::from(before.clone())))
        .send()
        .await
        .expect("upload");
    assert_eq!(kept.status(), StatusCode::CREATED);

    // The 100 MiB upload streams piece by piece; the server is killed once 40 MiB are out.
    let data = bytes(UPLOAD_SIZE, 22);
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel::<usize>(1);
    let pieces: Vec<bytes::Bytes> = data
        .chunks(PIECE)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let stream =
        futures_util::stream::iter(pieces.into_iter().enumerate()).then(move |(i, piece)| {
            let sent_tx = sent_tx.clone();
            async move {
                let _ = sent_tx.try_send(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, std::io::Error>(piece)
            }
        });
    let upload = tokio::spawn({
        let client = client.clone();
        let url = format!("{}/files/upload", server.base);
        let token = token.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .multipart(form("big.bin", reqwest::Body::wrap_stream(stream)))
                .send()
                .await
        }
    });
    let mut server = server;
    loop {
        let piece = tokio::time::timeout(Duration::from_secs(30), sent_rx.recv())
            .await
            .expect("the upload makes progress")
            .expect("the upload is running");
        if piece >= 40 {
            break;
        }
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    let cut = upload.await.expect("join");
    assert!(
        cut.as_ref()
            .map_or(true, |r| r.status() != StatusCode::CREATED),
        "the upload cannot have completed: {cut:?}"
    );

    // The store and the metadata agree after the crash.
    let (clean, report) = check(dir.path(), &database_url);
    assert!(clean, "check after kill -9: {report}");
    assert!(report.contains("0 problems"), "{report}");

    // Restarted: what was committed is there; the interrupted file is not half there.
    let server = start(dir.path(), &database_url).await;
    let token = login(server.base.clone()).await;
    let list: Value = client
        .get(format!("{}/files/", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let paths: Vec<&str> = list["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths, ["kept.bin"], "{list}");

    // The same upload now succeeds and downloads byte-exact.
    let done = client
        .post(format!("{}/files/upload", server.base))
        .bearer_auth(&token)
        .multipart(form("big.bin", reqwest::Body::from(data.clone())))
        .send()
        .await
        .expect("upload");
    assert_eq!(done.status(), StatusCode::CREATED);
    let file: Value = done.json().await.expect("json");
    assert_eq!(file["size"], UPLOAD_SIZE);
    let downloaded = client
        .get(format!("{}/files/{}/download", server.base, file["id"]))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    assert!(downloaded.as_ref() == data.as_slice(), "byte-exact");
    drop(server);

    let (clean, report) = check(dir.path(), &database_url);
    assert!(clean, "check after the re-upload: {report}");
}
