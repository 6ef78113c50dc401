//! The in-process server the client's integration tests run against (SQLite, local blocks,
//! QUIC on loopback with a self-signed certificate), and an account on it.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use cairn_server::Server;
use cairn_server::config::ServerConfig;

/// A running server; dropped, it stops.
pub(crate) struct TestServer {
    pub(crate) http: String,
    pub(crate) quic: SocketAddr,
    pub(crate) fingerprint: String,
    /// The server's state, for its jobs (garbage collection).
    pub(crate) state: cairn_server::api::AppState,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a server with a quota (and upload limit) of `quota` bytes per user.
pub(crate) async fn start_server(quota: u64) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = ServerConfig {
        listen: addr,
        data_dir: dir.path().to_path_buf(),
        database_url: format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("cairn.db").display()
        ),
        storage_path: dir.path().join("blocks"),
        jwt_secret: b"client-tests-secret-of-32-bytes!".to_vec(),
        quota_default: quota,
        upload_size_max: quota.min(1 << 30),
        version_retention: None,
        quic_listen: Some("127.0.0.1:0".parse().expect("addr")),
        tls: None,
        services: Default::default(),
    };
    let server = Server::start(config).await.expect("server starts");
    let quic = server.quic_addr().expect("QUIC runs");
    let state = server.state();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await;
    });
    let http = format!("http://{addr}");
    let info: serde_json::Value = reqwest::get(format!("{http}/sync/info"))
        .await
        .expect("sync info")
        .json()
        .await
        .expect("json");
    TestServer {
        http,
        quic,
        fingerprint: info["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_owned(),
        state,
        _dir: dir,
        _stop: stop,
    }
}

/// Registers `user` (if new) and returns an access token. Each user comes from its own
/// loopback address (127.0.0.2 to 127.0.0.251), so that the server's per-address limit on
/// logins does not stop a test that signs up many users.
pub(crate) async fn token(server: &TestServer, user: &str) -> String {
    let spread = blake3::hash(user.as_bytes()).as_bytes()[0] % 250;
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2 + spread]))
        .build()
        .expect("client");
    let body = serde_json::json!({"username": user, "email": format!("{user}@example.com"), "password": "correct horse battery"});
    let _ = client
        .post(format!("{}/auth/register", server.http))
        .json(&body)
        .send()
        .await
        .expect("register");
    let login: serde_json::Value = client
        .post(format!("{}/auth/login", server.http))
        .json(&serde_json::json!({"username": user, "password": "correct horse battery"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    login["access_token"].as_str().expect("token").to_owned()
}

/// Every file, symlink and directory under `root` by relative path (directories end in `/`),
/// with its content (a symlink's target) and mode.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = item.path();
            let rel = path
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).expect("meta");
            if meta.is_dir() {
                out.insert(format!("{rel}/"), (Vec::new(), 0));
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("link");
                out.insert(rel, (target.to_string_lossy().as_bytes().to_vec(), 0o777));
            } else {
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(&path).expect("read"), mode));
            }
        }
    }
    out
}
