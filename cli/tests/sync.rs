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
    start_server_with_quota(1 << 30).await
}

/// A server whose users may store `quota` bytes each.
async fn start_server_with_quota(
    quota: u64,
) -> (String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
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
        quota_default: quota,
        upload_size_max: 1 << 30,
        version_retention: None,
        quic_listen: Some("127.0.0.1:0".parse().expect("address")),
        tls: None,
        services: Default::default(),
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

/// A TLS front on a free loopback port for the plain HTTP server at `http`, as a reverse proxy
/// (Caddy, nginx) would be: a certificate for `localhost` signed by a CA made here. Returns the
/// `https://` URL and the CA's PEM file, which a device trusts through `SSL_CERT_FILE`.
async fn https_front(http: &str, dir: &Path) -> (String, PathBuf) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let http: SocketAddr = http
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .expect("http address");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Cairn test CA");
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("CA");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("CA file");
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .expect("certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(http).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (format!("https://localhost:{port}"), ca_file)
}

struct Device {
    home: tempfile::TempDir,
    /// A libfaketime offset (`-3d`): the device's clock is that far off.
    skew: Option<&'static str>,
    /// The certificates the device trusts instead of the system's (`SSL_CERT_FILE`).
    roots: Option<PathBuf>,
}

impl Device {
    fn new() -> Device {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(home.path().join("folder")).expect("folder");
        Device {
            home,
            skew: None,
            roots: None,
        }
    }

    /// A device whose every `cairn` runs under `faketime` with its clock `offset` off.
    fn skewed(offset: &'static str) -> Device {
        Device {
            skew: Some(offset),
            ..Device::new()
        }
    }

    fn folder(&self) -> PathBuf {
        self.home.path().join("folder")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = match self.skew {
            Some(offset) => {
                let mut command = tokio::process::Command::new("faketime");
                command
                    .args(["-f", offset, env!("CARGO_BIN_EXE_cairn")])
                    // Timers and timeouts keep the real pace; only the calendar is off.
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
                command
            }
            None => tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn")),
        };
        if let Some(roots) = &self.roots {
            command.env("SSL_CERT_FILE", roots);
        }
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

    /// The stdout of a successful `--json sync start --once` of this device's folder (to
    /// `server`, or to the saved one).
    async fn sync_once_stdout(&self, server: Option<&str>) -> String {
        let out = self.sync_once_output(server, &["--json"]).await;
        assert!(
            out.status.success(),
            "cairn sync start --once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What `cairn FLAGS sync start --folder F --once` (to `server`, or to the saved one) gave.
    async fn sync_once_output(&self, server: Option<&str>, flags: &[&str]) -> Output {
        let folder = self.folder();
        let mut args = flags.to_vec();
        args.extend(["sync", "start"]);
        if let Some(server) = server {
            args.extend(["--server", server]);
        }
        args.extend(["--folder", folder.to_str().expect("utf-8"), "--once"]);
        self.run(&args).await
    }

    async fn sync_once(&self, server: &str) -> Value {
        let stdout = self.sync_once_stdout(Some(server)).await;
        let last = stdout.lines().last().expect("a summary line");
        let summary: Value = serde_json::from_str(last).expect("JSON");
        assert_eq!(summary["kind"], "summary", "{stdout}");
        summary
    }
}

/// Registers `user` on device `a` and logs device `b` in as the same user.
async fn sign_up_both(a: &Device, b: &Device, server: &str, user: &str) {
    let email = format!("{user}@example.com");
    a.ok(&[
        "user",
        "register",
        "--server",
        server,
        "--username",
        user,
        "--email",
        &email,
    ])
    .await;
    b.ok(&["user", "login", "--server", server, "--username", user])
        .await;
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
    sign_up_both(&a, &b, &server, "gina").await;

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
    let out = b
        .run(&[
            "--json",
            "sync",
            "start",
            "--folder",
            folder.to_str().expect("utf-8"),
            "--once",
        ])
        .await;
    // In sync, but the user must hear about it: exit 3, one line, the event on stdout.
    assert_one_line_failure(&out, 3, "see `cairn conflicts`");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"kind\":\"conflict\""), "{stdout}");
    let listed = run_json(&b.run(&["--json", "conflicts"]).await);
    let conflict = &listed["conflicts"][0];
    assert_eq!(
        (conflict["path"].as_str(), conflict["reason"].as_str()),
        (Some("docs/a.txt"), Some("both_edited")),
        "{listed}"
    );
    let copy = conflict["copy"].as_str().expect("a copy").to_owned();
    assert!(copy.contains("conflict from"), "{copy}");
    // Keep the local content: the copy moves back over the path.
    let resolved = run_json(
        &b.run(&[
            "--json",
            "conflicts",
            "--resolve",
            "docs/a.txt",
            "--keep",
            "local",
        ])
        .await,
    );
    assert_eq!(resolved["kept"], "local");
    assert_eq!(
        std::fs::read(b.folder().join("docs/a.txt")).expect("read"),
        b"alpha from b"
    );
    assert!(!b.folder().join(&copy).exists());
    let none = run_json(&b.run(&["--json", "conflicts"]).await);
    assert_eq!(none["conflicts"].as_array().map(Vec::len), Some(0));
    let unknown = b
        .run(&["conflicts", "--resolve", "nope.txt", "--keep", "remote"])
        .await;
    assert_one_line_failure(&unknown, 1, "no conflict is recorded");
    b.sync_once(&server).await;
    a.sync_once(&server).await;
    assert_eq!(tree(&a.folder()), tree(&b.folder()));
    assert_eq!(
        std::fs::read(a.folder().join("docs/a.txt")).expect("read"),
        b"alpha from b"
    );

    // Conflict copies off on b: its losing version goes to the version history only, and
    // keeping it fetches it back from there.
    b.ok(&["config", "set", "conflict_copies", "false"]).await;
    std::fs::write(a.folder().join("docs/a.txt"), b"third from a").expect("write");
    std::fs::write(b.folder().join("docs/a.txt"), b"third from b").expect("write");
    a.sync_once(&server).await;
    let out = b
        .run(&[
            "--json",
            "sync",
            "start",
            "--folder",
            folder.to_str().expect("utf-8"),
            "--once",
        ])
        .await;
    assert_one_line_failure(&out, 3, "see `cairn conflicts`");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"kind\":\"conflict\""), "{stdout}");
    assert_eq!(
        std::fs::read(b.folder().join("docs/a.txt")).expect("read"),
        b"third from a"
    );
    assert_eq!(tree(&a.folder()), tree(&b.folder()), "no copy was made");
    let listed = run_json(&b.run(&["--json", "conflicts"]).await);
    let conflict = &listed["conflicts"][0];
    assert_eq!(conflict["copy"], Value::Null, "{listed}");
    assert_eq!(conflict["in_history"], true, "{listed}");
    let human = b.run(&["conflicts"]).await;
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("yours is in the version history"),
        "{human:?}"
    );
    let resolved = run_json(
        &b.run(&[
            "--json",
            "conflicts",
            "--resolve",
            "docs/a.txt",
            "--keep",
            "local",
        ])
        .await,
    );
    assert_eq!(resolved["kept"], "local");
    assert_eq!(
        std::fs::read(b.folder().join("docs/a.txt")).expect("read"),
        b"third from b"
    );
    b.sync_once(&server).await;
    a.sync_once(&server).await;
    assert_eq!(
        std::fs::read(a.folder().join("docs/a.txt")).expect("read"),
        b"third from b"
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

/// `--json` prints a line for every file, however many a pass announces at once (the feed
/// holds 4,096 events; a printer that wrote a line at a time fell behind and dropped some).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_of_a_large_pass_gets_its_json_line() {
    const FILES: usize = 12_000;
    let (server, _data, _stop) = start_server().await;
    let a = Device::new();
    let b = Device::new();
    sign_up_both(&a, &b, &server, "lena").await;
    for i in 0..FILES {
        let dir = a.folder().join(format!("d{}", i % 12));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("f{i}.txt")), format!("{i}")).expect("write");
    }
    for (device, what) in [(&a, "uploaded"), (&b, "downloaded")] {
        let stdout = device.sync_once_stdout(None).await;
        let mut files = std::collections::HashSet::new();
        for line in stdout.lines() {
            let event: Value = serde_json::from_str(line).expect("a JSON line");
            assert_ne!(event["kind"], "missed", "{line}");
            if event["kind"] == "file" && event["what"] == what {
                files.insert(event["path"].as_str().expect("path").to_owned());
            }
        }
        assert_eq!(files.len(), FILES, "{what}");
    }
    assert_eq!(tree(&a.folder()), tree(&b.folder()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_daemons_carry_a_change_across_and_stop_on_request() {
    let (server, _data, _stop) = start_server().await;
    let a = Device::new();
    let b = Device::new();
    sign_up_both(&a, &b, &server, "hank").await;
    let mut daemons = Vec::new();
    for device in [&a, &b] {
        let folder = device.folder();
        let child = device
            .command(&[
                "sync",
                "start",
                "--folder",
                folder.to_str().expect("utf-8"),
                // Far beyond the test's deadline: only the filesystem watcher can pick up A's
                // change in time.
                "--interval",
                "600",
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
    // One engine per folder: a second sync of A's folder names the running one.
    let folder = a.folder();
    let second = a
        .run(&[
            "sync",
            "start",
            "--folder",
            folder.to_str().expect("utf-8"),
            "--once",
        ])
        .await;
    assert_one_line_failure(&second, 1, "is already syncing");
    std::fs::write(a.folder().join("hello.txt"), b"from a, live").expect("write");
    let started = Instant::now();
    let target = b.folder().join("hello.txt");
    while std::fs::read(&target).ok().as_deref() != Some(b"from a, live".as_slice()) {
        // A's watcher and B's push channel carry it at once; B's head check runs only every
        // 30 s while its push channel is up.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the change never reached B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both settle to idle at once (a pass that moved something is confirmed by the next), not
    // at the 600 s rescan.
    for device in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status: Value =
                serde_json::from_str(device.ok(&["--json", "sync", "status"]).await.trim())
                    .expect("JSON");
            // Idle, with the server's push channel open (so B learnt of A's commit from it).
            if status["status"]["state"] == "idle"
                && status["status"]["seq"] == 1
                && status["status"]["pushed"] == true
            {
                assert_eq!(status["status"]["watching"], true, "{status}");
                break;
            }
            assert!(Instant::now() < deadline, "never idle: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A file the daemon cannot sync is named in its status, not silently left out.
    {
        use std::os::unix::ffi::OsStrExt as _;
        let bad = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        std::fs::write(a.folder().join(bad), b"latin-1 name").expect("write");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: Value =
            serde_json::from_str(a.ok(&["--json", "sync", "status"]).await.trim()).expect("JSON");
        if status["status"]["problem_count"] == 1 {
            assert_eq!(
                status["status"]["problems"][0]["path"], "caf\u{fffd}.txt",
                "{status}"
            );
            // Everything else is in sync: the folder is idle, with the problem listed.
            assert_eq!(status["status"]["state"], "idle", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "problem never listed: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = a.ok(&["sync", "status"]).await;
    assert!(
        text.contains("1 path could not be synced")
            && text.contains("caf\u{fffd}.txt: the name is not UTF-8"),
        "{text}"
    );
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

fn run_json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("not one JSON document ({err}): {stdout:?}"))
}

/// Asserts a failure: the given status, one line on stderr containing `needle`, no panic.
fn assert_one_line_failure(out: &Output, status: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(status), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("cairn: ") && stderr.contains(needle),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_sync_prints_nothing_but_problems() {
    let (server, _data, _stop) = start_server().await;
    let (a, b) = (Device::new(), Device::new());
    sign_up_both(&a, &b, &server, "quinta").await;
    std::fs::write(a.folder().join("a.txt"), b"one").expect("write");
    let quiet = a.sync_once_output(Some(&server), &["-q"]).await;
    assert!(quiet.status.success(), "{quiet:?}");
    assert_eq!(
        (quiet.stdout.as_slice(), quiet.stderr.as_slice()),
        (&b""[..], &b""[..]),
        "-q prints only errors"
    );
    // Without it, each file and the summary.
    std::fs::write(a.folder().join("b.txt"), b"two").expect("write");
    let plain = a.sync_once_output(None, &[]).await;
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(plain.status.success(), "{stderr}");
    assert!(
        stderr.contains("uploaded: b.txt") && stderr.contains("in sync at revision"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_over_the_quota_fails_in_one_line_and_keeps_every_file() {
    let (server, _data, _stop) = start_server_with_quota(1 << 20).await;
    let (a, b) = (Device::new(), Device::new());
    sign_up_both(&a, &b, &server, "quentin").await;
    // 3 MiB that do not compress, against a quota of 1 MiB.
    let mut big = vec![0u8; 3 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut big {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state.to_le_bytes()[0];
    }
    std::fs::write(a.folder().join("big.bin"), &big).expect("write");
    std::fs::write(a.folder().join("note.txt"), b"small").expect("write");
    let before = tree(&a.folder());
    let out = a.sync_once_output(Some(&server), &[]).await;
    assert_one_line_failure(&out, 1, "storage quota");
    assert_eq!(
        tree(&a.folder()),
        before,
        "every local file is left as it was"
    );
    // A second try fails the same way, without piling up uploads.
    let again = a.sync_once_output(None, &[]).await;
    assert_one_line_failure(&again, 1, "storage quota");
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_reads_files_again_when_its_node_cache_was_damaged() {
    let (server, _data, _stop) = start_server().await;
    let (a, b) = (Device::new(), Device::new());
    sign_up_both(&a, &b, &server, "rosa").await;
    std::fs::write(a.folder().join("notes.txt"), b"from a").expect("write");
    std::fs::write(a.folder().join("keep.txt"), b"kept").expect("write");
    std::fs::write(b.folder().join("notes.txt"), b"from b, longer").expect("write");
    std::fs::write(b.folder().join("keep.txt"), b"kept").expect("write");
    // Older than the scan's stamp by more than a clock tick: the scan cache keeps them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (src_a, src_b) = (a.folder(), b.folder());
    let (src_a, src_b) = (
        src_a.to_str().expect("utf-8"),
        src_b.to_str().expect("utf-8"),
    );
    a.ok(&["backup", src_a, "--remote", "bk"]).await;
    // Another device backs up over the same remote: its notes.txt is the remote's now.
    b.ok(&["backup", src_b, "--remote", "bk"]).await;
    // A's node cache loses every node (its state database changed from outside).
    let mut state_dbs: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![a.home.path().join("config")];
    while let Some(dir) = dirs.pop() {
        for item in std::fs::read_dir(&dir).expect("config dir").flatten() {
            let path = item.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "state.db") {
                state_dbs.push(path);
            }
        }
    }
    assert_eq!(state_dbs.len(), 1, "{state_dbs:?}");
    let removed = rusqlite::Connection::open(&state_dbs[0])
        .and_then(|db| db.execute("DELETE FROM nodes", []))
        .expect("empty the node cache");
    assert!(removed > 0);

    // A's next backup reads its files again and makes the remote A's folder once more.
    let backed_up = run_json(&a.run(&["--json", "backup", src_a, "--remote", "bk"]).await);
    assert_eq!(backed_up["new_snapshot"], true, "{backed_up}");
    let check = a.home.path().join("check");
    a.ok(&["restore", check.to_str().expect("utf-8"), "--remote", "bk"])
        .await;
    assert_eq!(tree(&check), tree(&a.folder()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_snapshots_and_restore() {
    let (server, _data, _stop) = start_server().await;
    let device = Device::new();
    device
        .ok(&[
            "user",
            "register",
            "--server",
            &server,
            "--username",
            "hugo",
            "--email",
            "hugo@example.com",
        ])
        .await;
    let source = device.home.path().join("source");
    std::fs::create_dir_all(source.join("photos/2026")).expect("mkdir");
    std::fs::write(source.join("notes.txt"), b"first notes").expect("write");
    std::fs::write(source.join("photos/2026/big.raw"), vec![42u8; 3_000_000]).expect("write");
    std::fs::write(source.join("photos/2026/small.jpg"), b"jpeg").expect("write");
    std::fs::create_dir_all(source.join("empty")).expect("mkdir");
    std::fs::write(source.join(".cairnignore"), b"*.log\n").expect("write");
    let first_tree = tree(&source);
    // Ignored by .cairnignore and by the built-in editor patterns: never in a snapshot.
    std::fs::write(source.join("debug.log"), b"noise").expect("write");
    std::fs::write(source.join("photos/.small.jpg.swp"), b"vim").expect("write");
    let without_ignored = |mut t: Vec<(String, Vec<u8>)>| {
        t.retain(|(p, _)| !p.ends_with(".log") && !p.ends_with(".swp"));
        t
    };
    let src = source.to_str().expect("utf-8");

    let first = run_json(
        &device
            .run(&["--json", "backup", src, "--remote", "bk"])
            .await,
    );
    assert_eq!(
        (
            &first["seq"],
            &first["new_snapshot"],
            &first["files_changed"]
        ),
        (&Value::from(1), &Value::from(true), &Value::from(4)),
        "{first}"
    );
    // Nothing changed: no new snapshot, nothing sent.
    let again = run_json(
        &device
            .run(&["--json", "backup", src, "--remote", "bk"])
            .await,
    );
    assert_eq!(
        (&again["seq"], &again["new_snapshot"], &again["bytes_sent"]),
        (&Value::from(1), &Value::from(false), &Value::from(0)),
        "{again}"
    );
    // Edit, delete, add: snapshot 2 sends only the new content.
    std::fs::write(source.join("notes.txt"), b"second notes").expect("write");
    std::fs::remove_file(source.join("photos/2026/small.jpg")).expect("rm");
    std::fs::write(source.join("todo.md"), b"- restore").expect("write");
    let second = run_json(
        &device
            .run(&["--json", "backup", src, "--remote", "bk"])
            .await,
    );
    assert_eq!(
        (
            &second["seq"],
            &second["files_changed"],
            &second["files_removed"]
        ),
        (&Value::from(2), &Value::from(2), &Value::from(1)),
        "{second}"
    );
    assert!(
        second["bytes_sent"].as_u64().is_some_and(|b| b < 100),
        "{second}"
    );
    let second_tree = without_ignored(tree(&source));

    let listed = run_json(&device.run(&["--json", "snapshots", "--remote", "bk"]).await);
    let snapshots = listed["snapshots"].as_array().expect("snapshots");
    let seen: Vec<(u64, u64)> = snapshots
        .iter()
        .map(|s| {
            (
                s["seq"].as_u64().unwrap_or(0),
                s["files"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(seen, [(2, 4), (1, 4)], "{listed}");
    let human = device.ok(&["snapshots", "--remote", "bk"]).await;
    assert!(human.contains("2 snapshots of 'bk'"), "{human}");

    // Snapshot 1 comes back exactly, mtimes included; the latest is the default.
    let old = device.home.path().join("restore-1");
    let restored = run_json(
        &device
            .run(&[
                "--json",
                "restore",
                old.to_str().expect("utf-8"),
                "--remote",
                "bk",
                "--at",
                "1",
            ])
            .await,
    );
    assert_eq!(restored["files_written"], 4, "{restored}");
    assert_eq!(tree(&old), first_tree);
    let latest = device.home.path().join("restore-latest");
    device
        .ok(&["restore", latest.to_str().expect("utf-8"), "--remote", "bk"])
        .await;
    assert_eq!(tree(&latest), second_tree);
    assert_eq!(
        mtime(&latest.join("todo.md")),
        mtime(&source.join("todo.md"))
    );

    // A non-empty destination needs --force; then files the snapshot has are replaced and
    // others stay.
    std::fs::write(latest.join("notes.txt"), b"scribbled").expect("write");
    std::fs::write(latest.join("mine.txt"), b"keep me").expect("write");
    let refused = device
        .run(&["restore", latest.to_str().expect("utf-8"), "--remote", "bk"])
        .await;
    assert_one_line_failure(&refused, 1, "is not empty");
    device
        .ok(&[
            "restore",
            latest.to_str().expect("utf-8"),
            "--remote",
            "bk",
            "--force",
        ])
        .await;
    assert_eq!(
        std::fs::read(latest.join("notes.txt")).expect("read"),
        b"second notes"
    );
    assert_eq!(
        std::fs::read(latest.join("mine.txt")).expect("read"),
        b"keep me"
    );

    // Errors are one line each.
    let missing = device
        .run(&[
            "restore",
            old.join("x").to_str().expect("utf-8"),
            "--remote",
            "bk",
            "--at",
            "99",
        ])
        .await;
    assert_one_line_failure(&missing, 1, "has no snapshot 99");
    let nowhere = device.run(&["snapshots", "--remote", "nope"]).await;
    assert_one_line_failure(&nowhere, 1, "no folder 'nope'");
    let bad = device.run(&["backup", src, "--remote", "a/b"]).await;
    assert_one_line_failure(&bad, 1, "cannot be a folder name");
    let not_dir = device
        .run(&["backup", source.join("todo.md").to_str().expect("utf-8")])
        .await;
    assert_one_line_failure(&not_dir, 1, "not a directory");

    // Without --remote: the folder `backup-<device>`.
    let default = run_json(&device.run(&["--json", "backup", src]).await);
    let folder = default["folder"].as_str().expect("folder");
    assert!(folder.starts_with("backup-"), "{default}");
    let listed = run_json(&device.run(&["--json", "snapshots"]).await);
    assert_eq!(listed["folder"], folder);
    assert_eq!(listed["snapshots"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_commands() {
    let (server, _data, _stop) = start_server().await;
    let device = Device::new();
    device
        .ok(&[
            "user",
            "register",
            "--server",
            &server,
            "--username",
            "iris",
            "--email",
            "iris@example.com",
        ])
        .await;
    let home = device.home.path();
    let local = home.join("report.txt");
    std::fs::write(&local, b"version one").expect("write");
    let local_str = local.to_str().expect("utf-8");

    let added = run_json(
        &device
            .run(&["--json", "files", "add", local_str, "docs/"])
            .await,
    );
    assert_eq!(
        (&added["path"], &added["version"]),
        (&Value::from("docs/report.txt"), &Value::from(1))
    );
    std::fs::write(&local, b"version two, longer").expect("write");
    device
        .ok(&["files", "add", local_str, "docs/report.txt"])
        .await;

    let listed = run_json(&device.run(&["--json", "files", "ls"]).await);
    assert_eq!(listed["files"][0]["path"], "docs/report.txt");
    assert_eq!(listed["files"][0]["size"], 19);
    let human = device.ok(&["files", "ls", "docs"]).await;
    assert!(
        human.contains("docs/report.txt") && human.contains("1 files"),
        "{human}"
    );

    let out_dir = home.join("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let out_str = out_dir.to_str().expect("utf-8");
    device
        .ok(&["files", "get", "docs/report.txt", out_str])
        .await;
    assert_eq!(
        std::fs::read(out_dir.join("report.txt")).expect("read"),
        b"version two, longer"
    );
    let exists = device
        .run(&["files", "get", "docs/report.txt", out_str])
        .await;
    assert_one_line_failure(&exists, 1, "pass --force");
    device
        .ok(&[
            "files",
            "get",
            "docs/report.txt",
            out_str,
            "--force",
            "--version",
            "1",
        ])
        .await;
    assert_eq!(
        std::fs::read(out_dir.join("report.txt")).expect("read"),
        b"version one"
    );

    let removed = run_json(
        &device
            .run(&["--json", "files", "rm", "docs/report.txt"])
            .await,
    );
    assert_eq!(removed["deleted"], "docs/report.txt");
    let empty = run_json(&device.run(&["--json", "files", "ls"]).await);
    assert_eq!(empty["files"].as_array().map(Vec::len), Some(0));
    let gone = device
        .run(&["files", "get", "docs/report.txt", out_str, "--force"])
        .await;
    assert_one_line_failure(&gone, 1, "no file 'docs/report.txt'");

    let versions = run_json(
        &device
            .run(&["--json", "files", "versions", "docs/report.txt"])
            .await,
    );
    let list: Vec<(u64, bool)> = versions["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap_or(0),
                v["deleted"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(list, [(3, true), (2, false), (1, false)], "{versions}");

    // The deleted file comes back with version 1's content, as version 4.
    let restored = run_json(
        &device
            .run(&[
                "--json",
                "files",
                "restore",
                "docs/report.txt",
                "--version",
                "1",
            ])
            .await,
    );
    assert_eq!(restored["file"]["version"], 4, "{restored}");
    device
        .ok(&["files", "get", "docs/report.txt", out_str, "--force"])
        .await;
    assert_eq!(
        std::fs::read(out_dir.join("report.txt")).expect("read"),
        b"version one"
    );
    let deletion = device
        .run(&["files", "restore", "docs/report.txt", "--version", "3"])
        .await;
    assert_one_line_failure(&deletion, 1, "is its deletion");

    let dir = device
        .run(&["files", "add", home.to_str().expect("utf-8")])
        .await;
    assert_one_line_failure(&dir, 1, "is a directory");
    let usage = device.run(&["files", "restore", "docs/report.txt"]).await;
    assert_one_line_failure(&usage, 2, "--version");

    let completions = device.ok(&["completions", "bash"]).await;
    assert!(
        completions.contains("_cairn()") && completions.contains("backup"),
        "completions"
    );
}

/// Whether `faketime` (Debian's package of the same name) can run here. CI installs it; a
/// local run without it skips the skewed-clock scenario and says why.
fn faketime_available() -> bool {
    let found = std::process::Command::new("faketime")
        .args(["-f", "-3d", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "faketime is missing under CI (apt install faketime)"
        );
        #[allow(clippy::print_stderr, reason = "a skipped test says why")]
        {
            eprintln!("skipped: faketime is not installed (apt install faketime)");
        }
    }
    found
}

/// The UTC date (`YYYY-MM-DD`) `offset_secs` from now.
fn utc_date(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (y, m, d, ..) =
        cairn_client::time::utc_from_unix(i64::try_from(now).expect("secs") + offset_secs);
    format!("{y:04}-{m:02}-{d:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_a_skewed_clock_neither_wins_nor_loses_by_it() {
    if !faketime_available() {
        return;
    }
    const THREE_DAYS: i64 = 3 * 86_400;
    let (server, _data, _stop) = start_server().await;
    // A's clock is three days behind, for every `cairn` it runs.
    let a = Device::skewed("-3d");
    let b = Device::new();
    sign_up_both(&a, &b, &server, "kim").await;
    // The clock really is off in A's processes: its token expiry, computed by the server, is
    // fine, and so is everything the pinned certificate check does.
    std::fs::write(b.folder().join("notes.txt"), b"v1 from b").expect("write");
    b.sync_once(&server).await;
    a.sync_once(&server).await;
    assert_eq!(
        std::fs::read(a.folder().join("notes.txt")).expect("read"),
        b"v1 from b"
    );

    // An edit saved on A carries A's clock: its mtime is three days older than v1's. It still
    // is the newer version: the server's order decides, never file times.
    let edited = a.folder().join("notes.txt");
    std::fs::write(&edited, b"v2 from a, whose clock is behind").expect("write");
    let old = std::time::SystemTime::now() - Duration::from_secs(THREE_DAYS as u64);
    std::fs::File::options()
        .write(true)
        .open(&edited)
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");
    a.sync_once(&server).await;
    b.sync_once(&server).await;
    assert_eq!(
        std::fs::read(b.folder().join("notes.txt")).expect("read"),
        b"v2 from a, whose clock is behind"
    );

    // Both edit; B's commit reaches the server first, so B's content wins on both devices,
    // whatever the clocks say. A keeps its own as a copy named by A's (skewed) clock.
    std::fs::write(b.folder().join("notes.txt"), b"v3 from b").expect("write");
    std::fs::write(a.folder().join("notes.txt"), b"v3 from a").expect("write");
    b.sync_once(&server).await;
    let before = utc_date(-THREE_DAYS);
    let folder = a.folder();
    let out = a
        .run(&[
            "--json",
            "sync",
            "start",
            "--server",
            &server,
            "--folder",
            folder.to_str().expect("utf-8"),
            "--once",
        ])
        .await;
    let after = utc_date(-THREE_DAYS);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a conflict: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(a.folder().join("notes.txt")).expect("read"),
        b"v3 from b"
    );
    let copies: Vec<String> = tree(&a.folder())
        .into_iter()
        .filter(|(_, bytes)| bytes == b"v3 from a")
        .map(|(path, _)| path)
        .collect();
    assert_eq!(copies.len(), 1, "A's content is kept: {copies:?}");
    assert!(
        copies[0].starts_with("notes (conflict from ")
            && (copies[0].contains(&before) || copies[0].contains(&after)),
        "the copy is named by A's clock, three days back ({before}): {}",
        copies[0]
    );
    b.sync_once(&server).await;
    assert_eq!(tree(&a.folder()), tree(&b.folder()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_saves_through_a_running_daemon_are_one_change_each() {
    let (server, _data, _stop) = start_server().await;
    let a = Device::new();
    let b = Device::new();
    sign_up_both(&a, &b, &server, "lee").await;
    let notes = a.folder().join("notes.txt");
    std::fs::write(&notes, b"v1").expect("write");
    let folder = a.folder();
    let mut daemon = a
        .command(&[
            "sync",
            "start",
            "--folder",
            folder.to_str().expect("utf-8"),
            "--interval",
            "600",
        ])
        .spawn()
        .expect("daemon starts");
    let wait_for_seq = |seq: u64| {
        let a = &a;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let status: Value =
                    serde_json::from_str(a.ok(&["--json", "sync", "status"]).await.trim())
                        .unwrap_or(Value::Null);
                if status["status"]["state"] == "idle" && status["status"]["seq"] == seq {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the daemon never reached seq {seq}: {status}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for_seq(1).await;

    // vim: the file is renamed to its backup name, the new content written, the backup removed.
    let backup = a.folder().join("notes.txt~");
    std::fs::rename(&notes, &backup).expect("rename away");
    std::fs::write(&notes, b"v2, saved by vim").expect("write");
    std::fs::remove_file(&backup).expect("remove backup");
    wait_for_seq(2).await;

    // A safe save: a temp file beside it, fsynced, renamed over it.
    let temp = a.folder().join(".goutputstream-X1Y2Z3");
    std::fs::write(&temp, b"v3, saved through a temp file").expect("temp");
    std::fs::File::open(&temp)
        .and_then(|f| f.sync_all())
        .expect("fsync");
    std::fs::rename(&temp, &notes).expect("rename over");
    wait_for_seq(3).await;

    // Each save is one new version: no delete in between, no temp file or backup on the server.
    let versions = run_json(&a.run(&["--json", "files", "versions", "notes.txt"]).await);
    let list: Vec<(u64, bool)> = versions["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| (v["version"].as_u64().expect("n"), v["deleted"] == true))
        .collect();
    assert_eq!(list, [(3, false), (2, false), (1, false)], "{versions}");
    b.sync_once(&server).await;
    assert_eq!(
        tree(&b.folder()),
        [(
            "notes.txt".to_owned(),
            b"v3, saved through a temp file".to_vec()
        )]
    );
    a.ok(&["sync", "stop"]).await;
    let status = tokio::time::timeout(Duration::from_secs(20), daemon.wait())
        .await
        .expect("daemon exits")
        .expect("wait");
    assert!(status.success(), "daemon exit: {status}");
}

/// A folder moved (renamed) while its device was off keeps its sync state: a deletion made
/// elsewhere meanwhile is carried out, not undone, and nothing is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_folder_goes_on_syncing_where_it_was() {
    let (server, _data, _stop) = start_server().await;
    let a = Device::new();
    let b = Device::new();
    sign_up_both(&a, &b, &server, "mona").await;
    std::fs::create_dir_all(a.folder().join("docs")).expect("mkdir");
    for (path, text) in [
        ("keep.txt", "kept"),
        ("gone.txt", "deleted on b"),
        ("docs/x.txt", "x"),
    ] {
        std::fs::write(a.folder().join(path), text).expect("write");
    }
    a.sync_once(&server).await;
    b.sync_once(&server).await;

    let moved = a.home.path().join("Moved Cairn");
    std::fs::rename(a.folder(), &moved).expect("mv");
    std::fs::remove_file(b.folder().join("gone.txt")).expect("rm");
    assert_eq!(b.sync_once(&server).await["deleted_remote"], 1);

    let moved_arg = moved.to_str().expect("utf-8");
    let out = a
        .run(&["--json", "sync", "start", "--folder", moved_arg, "--once"])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("its sync state moved with it"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value =
        serde_json::from_str(stdout.lines().last().expect("summary")).expect("JSON");
    assert_eq!(
        (
            &summary["deleted_local"],
            &summary["uploaded"],
            &summary["in_sync"]
        ),
        (&Value::from(1), &Value::from(0), &Value::from(true)),
        "{stdout}"
    );
    assert!(
        !moved.join("gone.txt").exists(),
        "the deletion was carried out"
    );
    assert_eq!(
        std::fs::read_to_string(moved.join("keep.txt")).expect("kept"),
        "kept"
    );
    b.sync_once(&server).await;
    assert!(!b.folder().join("gone.txt").exists(), "not brought back");
    assert_eq!(tree(&moved), tree(&b.folder()));

    // The next run of the moved folder finds its state where it is now, quietly.
    let out = a
        .run(&["-q", "sync", "start", "--folder", moved_arg, "--once"])
        .await;
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// A server behind HTTPS (a TLS reverse proxy): register, log in and sync over `https://`,
/// with the QUIC certificate pinned from the answer of the TLS connection. A device that does
/// not trust the proxy's certificate is refused in one line, before any password is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sync_through_an_https_server() {
    let (http, _data, _stop) = start_server().await;
    let certs = tempfile::tempdir().expect("tempdir");
    let (https, ca) = https_front(&http, certs.path()).await;
    let stranger = Device::new();
    let refused = stranger
        .run(&[
            "user",
            "register",
            "--server",
            &https,
            "--username",
            "ivy",
            "--email",
            "ivy@example.com",
        ])
        .await;
    assert_one_line_failure(&refused, 1, "is not trusted: invalid peer certificate");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("SSL_CERT_FILE"),
        "says what to do: {refused:?}"
    );
    let mut a = Device::new();
    let mut b = Device::new();
    a.roots = Some(ca.clone());
    b.roots = Some(ca);
    sign_up_both(&a, &b, &https, "ivy").await;
    std::fs::write(a.folder().join("over-tls.txt"), b"sealed").expect("write");
    let up = a.sync_once(&https).await;
    assert_eq!(up["uploaded"], 1, "{up}");
    let down = b.sync_once(&https).await;
    assert_eq!(down["downloaded"], 1, "{down}");
    assert_eq!(tree(&a.folder()), tree(&b.folder()));
}
