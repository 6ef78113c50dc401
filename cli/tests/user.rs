//! End-to-end tests of `cairn user` and `cairn config`: the real `cairn` binary against a real
//! in-process server on SQLite, each test with its own server and config directory.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cairn_server::Server;
use cairn_server::config::ServerConfig;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

const PASSWORD: &str = "correct horse battery";

/// A server on a free loopback port.
struct TestServer {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _data: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server; `quic` turns its QUIC endpoint (and so `/sync/info`) on.
    async fn start(quic: bool) -> TestServer {
        let data = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let config = ServerConfig {
            listen: addr,
            data_dir: data.path().to_path_buf(),
            database_url: format!(
                "sqlite://{}?mode=rwc",
                data.path().join("cairn.db").display()
            ),
            storage_path: data.path().join("blocks"),
            jwt_secret: b"cli-test-secret-of-at-least-32-bytes".to_vec(),
            quota_default: 1 << 30,
            upload_size_max: 1 << 30,
            version_retention: None,
            quic_listen: quic.then(|| "127.0.0.1:0".parse().expect("address")),
            tls: None,
            services: Default::default(),
        };
        let server = Server::start(config).await.expect("server starts");
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
            stop: Some(stop),
            task: Some(task),
            _data: data,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }
}

/// One client: a config directory of its own.
struct Client {
    dir: tempfile::TempDir,
}

/// What a run of `cairn` did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Client {
    fn new() -> Client {
        Client {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn config_file(&self) -> PathBuf {
        self.config_dir().join("config.json")
    }

    fn saved(&self) -> Value {
        let text = std::fs::read_to_string(self.config_file()).expect("config file");
        serde_json::from_str(&text).expect("config is JSON")
    }

    /// Runs `cairn args...` with `stdin` as its input and `env` added.
    async fn run_with(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
        command
            .args(args)
            .env("CAIRN_CONFIG_DIR", self.config_dir())
            .env_remove("CAIRN_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn cairn");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("write stdin");
        drop(input);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("cairn finishes in time")
            .expect("cairn output");
        Run {
            code: output
                .status
                .code()
                .expect("exited, not killed by a signal"),
            stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, "", &[]).await
    }

    async fn register(&self, server: &TestServer, username: &str) -> Run {
        let email = format!("{username}@example.com");
        self.run_with(
            &[
                "user",
                "register",
                "--server",
                &server.base,
                "--username",
                username,
                "--email",
                &email,
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
            &[],
        )
        .await
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// Asserts a failed run: status 1 and exactly `cairn: <message>` on stderr.
fn assert_fails_with(run: &Run, message: &str) {
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, format!("cairn: {message}\n"), "{run:?}");
}

/// The status `POST /auth/refresh` answers for `token`.
async fn refresh_status(server: &TestServer, token: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{}/auth/refresh", server.base))
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .expect("refresh request")
        .status()
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_saves_a_private_session_and_whoami_reads_it() {
    // Goal: register logs in at once and keeps the session in a 0600 file in a 0700 directory.
    let server = TestServer::start(true).await;
    let client = Client::new();
    let run = client.register(&server, "ann").await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("registered ann at"), "{run:?}");

    assert_eq!(mode(&client.config_dir()), 0o700);
    assert_eq!(mode(&client.config_file()), 0o600);
    let saved = client.saved();
    assert_eq!(saved["server"], json!(server.base));
    assert_eq!(saved["username"], json!("ann"));
    let token = saved["refresh_token"]
        .as_str()
        .expect("a refresh token is kept");
    assert!(token.len() >= 32, "{token}");
    let device = saved["device"].as_str().expect("device").to_owned();
    assert!(!device.is_empty());

    // The server's QUIC certificate is pinned, at a concrete address.
    assert!(run.stderr.is_empty(), "{run:?}");
    let pin = &saved["quic"];
    let fingerprint = pin["fingerprint"].as_str().expect("fingerprint");
    assert!(fingerprint.starts_with("blake3:"), "{pin}");
    assert_eq!(fingerprint.len(), "blake3:".len() + 64, "{pin}");
    let addr: SocketAddr = pin["addr"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("socket address");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let run = client.run(&["user", "whoami", "--json"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        parse_json(&run.stdout),
        json!({"username": "ann", "server": server.base, "device": device})
    );
    let run = client.run(&["user", "whoami"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        format!("ann at {} (device {device})\n", server.base)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_quic_on_the_server_warns_and_continues() {
    // Goal: a server whose QUIC endpoint is off still lets a user log in; the missing pin is a
    // one-line warning, not a failure.
    let server = TestServer::start(false).await;
    let client = Client::new();
    let run = client.register(&server, "quin").await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .starts_with("cairn: warning: could not pin the server's QUIC certificate: "),
        "{run:?}"
    );
    assert!(
        run.stderr.ends_with("; continuing without a pin\n"),
        "{run:?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    let saved = client.saved();
    assert!(saved["quic"].is_null(), "{saved}");
    assert!(saved["refresh_token"].is_string(), "{saved}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_json_output_and_taken_names() {
    // Goal: `--json` register describes the user and session; a second register of the same
    // name fails with the server's one-line message.
    let server = TestServer::start(true).await;
    let client = Client::new();
    let run = client
        .run_with(
            &[
                "--json",
                "user",
                "register",
                "--server",
                &server.base,
                "--username",
                "bob",
                "--email",
                "bob@example.com",
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let body = parse_json(&run.stdout);
    assert_eq!(body["username"], json!("bob"));
    assert_eq!(body["email"], json!("bob@example.com"));
    assert_eq!(body["server"], json!(server.base));
    assert!(body["id"].is_i64(), "{body}");
    assert_eq!(body["device"], client.saved()["device"]);

    let again = Client::new().register(&server, "bob").await;
    assert_fails_with(
        &again,
        "that username or email is already registered; log in instead",
    );
    assert!(again.stdout.is_empty(), "{again:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_a_wrong_password_fails_with_one_line() {
    // Goal: a refused login is one line on stderr, status 1, and leaves no session behind; with
    // `--json` the same failure is `{"error": {code, message}}` on stdout.
    let server = TestServer::start(true).await;
    let registered = Client::new();
    assert_eq!(registered.register(&server, "cat").await.code, 0);

    let client = Client::new();
    let login = [
        "user",
        "login",
        "--server",
        &server.base,
        "--username",
        "cat",
        "--password-stdin",
    ];
    let run = client.run_with(&login, "wrong password\n", &[]).await;
    assert_fails_with(&run, "wrong username or password");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        !client.config_file().exists() || client.saved()["refresh_token"].is_null(),
        "no session kept"
    );

    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(&login);
    let run = client.run_with(&with_json, "wrong password\n", &[]).await;
    assert_fails_with(&run, "wrong username or password");
    assert_eq!(
        parse_json(&run.stdout),
        json!({"error": {"code": "wrong_credentials", "message": "wrong username or password"}})
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_session_and_login_uses_the_saved_server() {
    // Goal: logout ends the session at the server (the old refresh token is refused) and here
    // (whoami fails); a later login needs no --server, and takes the password from
    // CAIRN_PASSWORD; a login over a live session ends that one at the server.
    let server = TestServer::start(true).await;
    let client = Client::new();
    assert_eq!(client.register(&server, "dan").await.code, 0);
    let token = client.saved()["refresh_token"]
        .as_str()
        .expect("token")
        .to_owned();

    let run = client.run(&["user", "logout"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, format!("logged out of {}\n", server.base));
    assert!(run.stderr.is_empty(), "{run:?}");
    assert!(client.saved()["refresh_token"].is_null());
    let refreshed = refresh_status(&server, &token).await;
    assert_eq!(refreshed, reqwest::StatusCode::UNAUTHORIZED);

    let run = client.run(&["user", "whoami"]).await;
    assert_fails_with(
        &run,
        "not logged in; run `cairn user login --server URL --username U`",
    );
    let run = client.run(&["--json", "user", "whoami"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        parse_json(&run.stdout)["error"]["code"],
        json!("not_logged_in")
    );

    // Login by the saved server: no --server.
    let log_in = async || {
        client
            .run_with(
                &["user", "login", "--username", "dan"],
                "",
                &[("CAIRN_PASSWORD", PASSWORD)],
            )
            .await
    };
    let run = log_in().await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = client.run(&["--json", "user", "whoami"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(parse_json(&run.stdout)["username"], json!("dan"));
    let new_token = client.saved()["refresh_token"].as_str().map(str::to_owned);
    assert!(new_token.is_some_and(|t| t != token), "a new session");

    // Logging in again while logged in ends the session it replaces at the server.
    let replaced = client.saved()["refresh_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let run = log_in().await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    let refreshed = refresh_status(&server, &replaced).await;
    assert_eq!(refreshed, reqwest::StatusCode::UNAUTHORIZED);
    let current = client.saved()["refresh_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let refreshed = refresh_status(&server, &current).await;
    assert_eq!(refreshed, reqwest::StatusCode::OK, "the new session works");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_with_the_server_down_still_forgets_the_session() {
    // Goal: logout works offline: it forgets the session here, succeeds, and says the server
    // was not told.
    let server = TestServer::start(true).await;
    let client = Client::new();
    assert_eq!(client.register(&server, "eve").await.code, 0);
    let base = server.base.clone();
    server.stop().await;

    let run = client.run(&["--json", "user", "logout"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        parse_json(&run.stdout),
        json!({"server": base, "revoked": false})
    );
    assert!(
        run.stderr.starts_with(&format!(
            "cairn: warning: could not end the session at the server: cannot reach the server at {base}: "
        )),
        "{run:?}"
    );
    assert!(client.saved()["refresh_token"].is_null());
    assert_eq!(client.run(&["user", "whoami"]).await.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_and_usage_errors_are_one_line() {
    // Goal: failures before any server answers are still one line with a hint.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = Client::new();
    let url = format!("http://{addr}");
    let run = client
        .run_with(
            &[
                "user",
                "login",
                "--server",
                &url,
                "--username",
                "x",
                "--password-stdin",
            ],
            "pw\n",
            &[],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with(&format!("cairn: cannot reach the server at {url}: ")),
        "{run:?}"
    );
    assert!(run.stderr.ends_with("; is it running?\n"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");

    let run = client
        .run(&["--json", "user", "register", "--server", &url])
        .await;
    assert_eq!(run.code, 2, "usage errors exit 2: {run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    let body = parse_json(&run.stdout);
    assert_eq!(body["error"]["code"], json!("usage"));
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("--username"), "{message}");
    assert_eq!(run.stderr, format!("cairn: {message}\n"));

    let run = client
        .run_with(
            &[
                "user",
                "login",
                "--server",
                "ftp://example.com",
                "--username",
                "x",
            ],
            "",
            &[("CAIRN_PASSWORD", "pw")],
        )
        .await;
    assert_fails_with(
        &run,
        "invalid server URL 'ftp://example.com'; write it like https://HOST or http://HOST:PORT",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_and_get() {
    // Goal: settings round-trip through the config file; named keys are checked; secrets are
    // never shown.
    let client = Client::new();
    let run = client
        .run(&["config", "set", "conflict_copies", "true"])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = client.run(&["config", "get", "conflict_copies"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "true\n"), "{run:?}");
    let run = client
        .run(&["--json", "config", "get", "conflict_copies"])
        .await;
    assert_eq!(
        parse_json(&run.stdout),
        json!({"key": "conflict_copies", "value": "true"})
    );
    assert_eq!(
        client.saved()["settings"],
        json!({"conflict_copies": "true"})
    );
    assert_eq!(mode(&client.config_file()), 0o600);

    let run = client
        .run(&["config", "set", "server", "http://127.0.0.1:9/"])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = client.run(&["config", "get", "server"]).await;
    assert_eq!(
        run.stdout, "http://127.0.0.1:9\n",
        "the trailing / is dropped"
    );
    let run = client.run(&["config", "set", "server", "not a url"]).await;
    assert_eq!(run.code, 1, "{run:?}");

    let run = client.run(&["config", "set", "device", "laptop-2"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = client.run(&["config", "get", "device"]).await;
    assert_eq!(run.stdout, "laptop-2\n");
    let run = client.run(&["config", "set", "device", "a/b"]).await;
    assert_fails_with(
        &run,
        "invalid device name 'a/b'; use 1 to 64 letters, digits, '.', '_' or '-'",
    );
    assert_eq!(client.saved()["device"], json!("laptop-2"), "unchanged");

    let run = client.run(&["config", "get", "missing_key"]).await;
    assert_fails_with(
        &run,
        "'missing_key' is not set; run `cairn config set missing_key VALUE`",
    );
    let run = client
        .run(&["--json", "config", "get", "refresh_token"])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        parse_json(&run.stdout)["error"]["code"],
        json!("reserved_key")
    );
    let run = client.run(&["config", "set", "Bad Key", "x"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_start_arguments_are_wired() {
    // Goal: the contract's `sync start` flags exist (the engine behind them comes later).
    let client = Client::new();
    let run = client.run(&["sync", "start", "--help"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    for flag in [
        "--server <URL>",
        "--folder <DIR>",
        "--username <U>",
        "--remote <NAME>",
        "--once",
        "--json",
    ] {
        assert!(run.stdout.contains(flag), "{flag} missing: {run:?}");
    }
    let run = client.run(&["sync", "start", "--once"]).await;
    assert_eq!(run.code, 2, "--folder is required (a usage error): {run:?}");
    assert!(run.stderr.contains("--folder"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_saves_each_rotated_token_and_is_reuse_safe() {
    // Goal: `Session` (the library behind later commands) saves every rotated refresh token at
    // once, two sessions refreshing at the same time never present one token twice (which the
    // server would punish by revoking the family), and a dead session says to log in again.
    use cairn_client::config::Config;
    use cairn_client::rest::{RestError, Session};

    let server = TestServer::start(false).await;
    let client = Client::new();
    assert_eq!(client.register(&server, "fay").await.code, 0);
    let dir = client.config_dir();
    let first = client.saved()["refresh_token"]
        .as_str()
        .expect("token")
        .to_owned();

    let config = Config::load(&dir).expect("config");
    let one = Session::new(&dir, &config).expect("session");
    let two = Session::new(&dir, &config).expect("session");
    let (a, b) = tokio::join!(one.access_token(), two.access_token());
    a.expect("first session refreshes");
    b.expect("second session refreshes after the first, with the token it saved");
    let saved = client.saved()["refresh_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_ne!(saved, first, "the rotated token is saved");
    let cached = one.access_token().await.expect("cached");
    assert_eq!(
        client.saved()["refresh_token"].as_str(),
        Some(saved.as_str()),
        "a cached access token spends no refresh token"
    );
    let run = client.run(&["user", "whoami"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    drop(cached);

    // Presenting an already used token revokes the family; the next refresh finds out.
    let reused = reqwest::Client::new()
        .post(format!("{}/auth/refresh", server.base))
        .json(&json!({"refresh_token": first}))
        .send()
        .await
        .expect("refresh request");
    assert_eq!(reused.status(), reqwest::StatusCode::UNAUTHORIZED);
    let three = Session::new(&dir, &Config::load(&dir).expect("config")).expect("session");
    let err = three
        .access_token()
        .await
        .expect_err("the family is revoked");
    assert!(matches!(err, RestError::SessionEnded), "{err:?}");
    assert_eq!(
        err.to_string(),
        "your session has ended; run `cairn user login` again"
    );
    assert!(
        client.saved()["refresh_token"].is_null(),
        "the dead token is forgotten"
    );
    server.stop().await;
}
