//! End-to-end tests of `cairn sync`: two devices (two config dirs, two folders), each a real
//! `cairn` process, against a real in-process server with its QUIC endpoint on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use cairn_server::Server;
use cairn_server::config::ServerConfig;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

async fn start_server() -> (String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
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
        jwt_secret: b"cli-sync-test-secret-of-32-bytes".to_vec(),
        quota_default: 1 << 30,
        upload_size_max: 1 << 30,
        version_retention: None,
        quic_listen: Some("127.0.0.1:0".parse().expect("address")),
        tls: None,
    };
    let server = Server::start(config).await.expect("server starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await;
    });
    (format!("http://{addr}"), data, stop)
}

struct Device {
    home: tempfile::TempDir,
}

impl Device {
    fn new() -> Device {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(home.path().join("folder")).expect("folder");
        Device { home }
    }

    fn folder(&self) -> PathBuf {
        self.home.path().join("folder")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
        command
            .args(args)
            .env("CAIRN_CONFIG_DIR", self.home.path().join("config"))
            .env("CAIRN_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(120), self.command(args).output())
            .await
            .expect("cairn finishes")
            .expect("cairn runs")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "cairn {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn sync_once(&self, server: &str) -> Value {
        let folder = self.folder();
        let stdout = self
            .ok(&[
                "--json",
                "sync",
                "start",
                "--server",
                server,
                "--folder",
                folder.to_str().expect("utf-8"),
                "--once",
            ])
            .await;
        let last = stdout.lines().last().expect("a summary line");
        let summary: Value = serde_json::from_str(last).expect("JSON");
        assert_eq!(summary["kind"], "summary", "{stdout}");
        summary
    }
}

fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).expect("read").flatten() {
            let path = item.path();
            let rel = path
                .strip_prefix(root)
                .expect("prefix")
                .display()
                .to_string();
            if path.is_dir() {
                stack.push(path);
                out.push((format!("{rel}/"), Vec::new()));
            } else {
                out.push((rel, std::fs::read(&path).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_sync_through_the_cli() {
    let (server, _data, _stop) = start_server().await;
    let a = Device::new();
    let b = Device::new();
    a.ok(&[
        "user",
        "register",
        "--server",
        &server,
        "--username",
        "gina",
        "--email",
        "gina@example.com",
    ])
    .await;
    b.ok(&["user", "login", "--server", &server, "--username", "gina"])
        .await;

    std::fs::create_dir_all(a.folder().join("docs")).expect("mkdir");
    std::fs::write(a.folder().join("docs/a.txt"), b"alpha").expect("write");
    std::fs::write(a.folder().join("b.bin"), vec![7u8; 300_000]).expect("write");
    let up = a.sync_once(&server).await;
    assert_eq!(up["uploaded"], 2, "{up}");
    assert_eq!(up["in_sync"], true);
    let down = b.sync_once(&server).await;
    assert_eq!(down["downloaded"], 2, "{down}");
    assert_eq!(tree(&a.folder()), tree(&b.folder()));

    // Edit/edit through the CLI: both versions survive, and the conflict is reported.
    std::fs::write(a.folder().join("docs/a.txt"), b"alpha from a").expect("write");
    std::fs::write(b.folder().join("docs/a.txt"), b"alpha from b").expect("write");
    a.sync_once(&server).await;
    let folder = b.folder();
    let stdout = b
        .ok(&[
            "--json",
            "sync",
            "start",
            "--folder",
            folder.to_str().expect("utf-8"),
            "--once",
        ])
        .await;
    assert!(stdout.contains("\"kind\":\"conflict\""), "{stdout}");
    a.sync_once(&server).await;
    assert_eq!(tree(&a.folder()), tree(&b.folder()));
    let contents: Vec<Vec<u8>> = tree(&a.folder()).into_iter().map(|(_, c)| c).collect();
    assert!(
        contents.contains(&b"alpha from a".to_vec())
            && contents.contains(&b"alpha from b".to_vec())
    );

    // Not logged in there: a one-line error and a non-zero exit.
    let c = Device::new();
    let folder = c.folder();
    let out = c
        .run(&[
            "sync",
            "start",
            "--server",
            &server,
            "--folder",
            folder.to_str().expect("utf-8"),
            "--once",
        ])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cairn user login"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_daemons_carry_a_change_across_and_stop_on_request() {
    let (server, _data, _stop) = start_server().await;
    let a = Device::new();
    let b = Device::new();
    a.ok(&[
        "user",
        "register",
        "--server",
        &server,
        "--username",
        "hank",
        "--email",
        "hank@example.com",
    ])
    .await;
    b.ok(&["user", "login", "--server", &server, "--username", "hank"])
        .await;
    let mut daemons = Vec::new();
    for device in [&a, &b] {
        let folder = device.folder();
        let child = device
            .command(&[
                "sync",
                "start",
                "--folder",
                folder.to_str().expect("utf-8"),
                "--interval",
                "1",
            ])
            .spawn()
            .expect("daemon starts");
        daemons.push(child);
    }
    // Both daemons are up once `status` says so.
    for device in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status: Value =
                serde_json::from_str(device.ok(&["--json", "sync", "status"]).await.trim())
                    .expect("JSON");
            if status["running"] == true && status["status"]["state"] != "starting" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {status}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    std::fs::write(a.folder().join("hello.txt"), b"from a, live").expect("write");
    let started = Instant::now();
    let target = b.folder().join("hello.txt");
    while std::fs::read(&target).ok().as_deref() != Some(b"from a, live".as_slice()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the change never reached B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (device, mut child) in [&a, &b].into_iter().zip(daemons) {
        device.ok(&["sync", "stop"]).await;
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("daemon exits")
            .expect("wait");
        assert!(status.success(), "daemon exit: {status}");
    }
    let out = a.run(&["sync", "stop"]).await;
    assert!(!out.status.success(), "stop with nothing running fails");
}
