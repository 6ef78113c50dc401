//! Starting a real server for a test, and a thin client for it.

use std::net::SocketAddr;
use std::time::Duration;

use cairn_server::Server;
use cairn_server::config::ServerConfig;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Which metadata database a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Whether PostgreSQL can be used; panics under `CI=true` when it cannot.
pub(crate) async fn postgres_available() -> bool {
    let reachable = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect("127.0.0.1:5432"),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !reachable {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but PostgreSQL is not reachable on 127.0.0.1:5432; start it (pg_ctlcluster ... main start)"
        );
        #[allow(clippy::print_stderr, reason = "a skipped test says why")]
        {
            eprintln!("skipping: PostgreSQL is not reachable on 127.0.0.1:5432");
        }
    }
    reachable
}

/// A fresh, uniquely named PostgreSQL database for one test server.
pub(crate) async fn fresh_postgres_database() -> String {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let name = format!("cairn_it_{}_{}", std::process::id(), rand_suffix());
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(POSTGRES_ADMIN_URL)
        .await
        .expect("connect to PostgreSQL as postgres");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create a test database");
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

pub(crate) fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{}_{nanos}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The configuration of a test server: everything local, QUIC on a free port.
pub(crate) fn test_config(
    listen: SocketAddr,
    data_dir: &std::path::Path,
    database_url: &str,
) -> ServerConfig {
    ServerConfig {
        listen,
        data_dir: data_dir.to_path_buf(),
        database_url: database_url.to_owned(),
        storage_path: data_dir.join("blocks"),
        jwt_secret: b"integration-test-secret-of-32-bytes!".to_vec(),
        quota_default: 1 << 30,
        upload_size_max: 1 << 30,
        version_retention: None,
        quic_listen: Some("127.0.0.1:0".parse().expect("address")),
        tls: None,
        services: Default::default(),
    }
}

/// A server running on a free loopback port, stopped when dropped.
pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) client: Client,
    pub(crate) database_url: String,
    pub(crate) state: cairn_server::api::AppState,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub(crate) async fn start(engine: Engine) -> TestServer {
        Self::start_with(engine, |_| {}).await
    }

    pub(crate) async fn start_with(
        engine: Engine,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let database_url = match engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(fresh_postgres_database().await),
        };
        Self::start_on(database_url, adjust).await
    }

    /// A second instance of `other`'s deployment: the same database; blocks in its own local
    /// store unless `adjust` sets shared storage.
    pub(crate) async fn start_sharing(
        other: &TestServer,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        Self::start_on(Some(other.database_url.clone()), adjust).await
    }

    async fn start_on(
        database_url: Option<String>,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let database_url = database_url.unwrap_or_else(|| {
            format!("sqlite://{}?mode=rwc", data_dir.join("cairn.db").display())
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let mut config = test_config(addr, &data_dir, &database_url);
        adjust(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let state = server.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        TestServer {
            base: format!("http://{addr}"),
            client: Client::new(),
            database_url,
            state,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has released the store and database.
    pub(crate) async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
        let dir = tempfile::tempdir().expect("placeholder");
        std::mem::replace(&mut self._dir, dir)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn register(&self, username: &str) -> Value {
        let response = self
            .post_json("/auth/register", &json!({"username": username, "email": format!("{username}@example.com"), "password": "correct horse battery"}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json")
    }

    /// Registers and logs in; returns (access, refresh).
    pub(crate) async fn user(&self, username: &str) -> (String, String) {
        self.register(username).await;
        let tokens = self.login(username, "correct horse battery").await;
        assert_eq!(tokens.0, StatusCode::OK);
        (
            tokens.1["access_token"]
                .as_str()
                .expect("access")
                .to_owned(),
            tokens.1["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        )
    }

    pub(crate) async fn login(&self, username: &str, password: &str) -> (StatusCode, Value) {
        let response = self
            .post_json(
                "/auth/login",
                &json!({"username": username, "password": password}),
            )
            .await;
        let status = response.status();
        (status, response.json().await.expect("json"))
    }

    pub(crate) async fn get(&self, token: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn upload(&self, token: &str, path: &str, data: Vec<u8>) -> Response {
        let form = reqwest::multipart::Form::new()
            .text("path", path.to_owned())
            .part(
                "file",
                reqwest::multipart::Part::bytes(data).file_name("upload.bin"),
            );
        self.client
            .post(self.url("/files/upload"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("request")
    }

    /// `DELETE /files/{id}` as the holder of `token`.
    pub(crate) async fn delete_file(&self, token: &str, id: impl std::fmt::Display) -> Response {
        self.client
            .delete(self.url(&format!("/files/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// The id of the user called `name`.
    pub(crate) async fn user_id(&self, name: &str) -> i64 {
        cairn_server::db::user_by_name(&self.state.db, name)
            .await
            .expect("query")
            .unwrap_or_else(|| panic!("no user {name}"))
            .id
    }

    /// Uploads `data` as `path` and returns the answer's JSON (the file's row).
    pub(crate) async fn upload_json(&self, token: &str, path: &str, data: Vec<u8>) -> Value {
        self.upload(token, path, data)
            .await
            .json()
            .await
            .expect("json")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts an error response: status, `{error: {code, message}}`, and the code.
pub(crate) async fn assert_error(response: Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status, "expected {status} {code}");
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "{message:?}"
    );
    message
}

/// Deterministic pseudo-random bytes.
pub(crate) fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}
