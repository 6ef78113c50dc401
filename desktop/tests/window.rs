//! The real `cairn-desktop` binary under Xvfb, against a real server: the setup view of a fresh
//! config dir; then, logged in, the dashboard during an upload, the file browser, the activity
//! feed, a file's history and the conflicts view, driven by keyboard shortcuts (xdotool), each
//! screenshotted (ImageMagick `import`); the upload must reach the server and Ctrl+Q must end
//! the process with status 0.
//!
//! Needs `Xvfb`, `xdotool` and `import` (Debian: xvfb xdotool imagemagick). Without them the
//! test fails under `CI=true` and is skipped, with the reason printed, elsewhere. Screenshots go
//! to `CAIRN_SCREENSHOT_DIR` when set (the README's pictures in `docs/` come from there), else
//! to a temp dir.

#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::config::Config;
use cairn_client::rest::RestClient;
use cairn_protocol::api::{LoginRequest, Password, RegisterRequest};
use cairn_server::Server;
use cairn_server::config::ServerConfig;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the display tools are here; fails under CI when they are not.
fn display_tools() -> bool {
    let missing: Vec<&str> = ["Xvfb", "xdotool", "import"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the desktop window test needs {missing:?} (apt install xvfb xdotool imagemagick)"
    );
    eprintln!("skipped: the desktop window test needs {missing:?}");
    false
}

/// An Xvfb display, stopped on drop.
struct Display {
    name: String,
    child: Child,
}

impl Display {
    /// Lets Xvfb pick a free display itself (`-displayfd`): picking one here by looking for
    /// free sockets raced when the tests of this file started theirs at the same moment, and
    /// two tests then shared one server that the first to finish killed. `-noreset`: by
    /// default the server resets when its last client leaves, and an app started again at
    /// that moment failed to open the display.
    fn start() -> Display {
        use std::io::BufRead;
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1100x760x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .map(|out| std::io::BufReader::new(out).read_line(&mut line));
        match (read, line.trim().parse::<u32>()) {
            (Some(Ok(_)), Ok(number)) => Display {
                name: format!(":{number}"),
                child,
            },
            _ => {
                let _ = child.kill();
                let status = child.wait();
                panic!("Xvfb did not report a display ({status:?})");
            }
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app, killed on drop if still running.
struct App {
    child: Child,
    display: String,
}

impl App {
    fn start(display: &Display, config_dir: &Path, home: &Path) -> App {
        App::start_on_bus(display, config_dir, home, None)
    }

    /// Starts the app; with `bus` (a session bus address) it runs with accessibility on, so
    /// its widgets are on that bus's AT-SPI registry.
    fn start_on_bus(display: &Display, config_dir: &Path, home: &Path, bus: Option<&str>) -> App {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cairn-desktop"));
        command
            .env("DISPLAY", &display.name)
            .env("CAIRN_CONFIG_DIR", config_dir)
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_RUNTIME_DIR", home)
            .env("GSETTINGS_BACKEND", "memory")
            .env_remove("WAYLAND_DISPLAY");
        match bus {
            Some(address) => {
                command
                    .env("DBUS_SESSION_BUS_ADDRESS", address)
                    .env_remove("GTK_A11Y")
                    .env_remove("NO_AT_BRIDGE");
            }
            None => {
                command
                    .env("GTK_A11Y", "none")
                    .env("NO_AT_BRIDGE", "1")
                    .env_remove("DBUS_SESSION_BUS_ADDRESS");
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cairn-desktop starts");
        App {
            child,
            display: display.name.clone(),
        }
    }

    fn xdotool(&self, args: &[&str]) -> String {
        let out = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", &self.display)
            .output()
            .expect("xdotool runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits for the window named Cairn and gives it the keyboard.
    fn window(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.xdotool(&["search", "--onlyvisible", "--name", "^Cairn$"]);
            if let Some(id) = found.lines().next() {
                let id = id.to_owned();
                self.xdotool(&["windowfocus", "--sync", &id]);
                return id;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
                }
                panic!(
                    "cairn-desktop exited before showing its window: {status}: {}",
                    err.trim()
                );
            }
            assert!(Instant::now() < deadline, "no Cairn window within 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn key(&self, window: &str, keys: &str) {
        self.xdotool(&["windowfocus", "--sync", window]);
        self.xdotool(&["key", "--clearmodifiers", keys]);
    }

    fn screenshot(&self, path: &Path) {
        // Let GTK finish drawing what the last input changed.
        std::thread::sleep(Duration::from_millis(900));
        let status = Command::new("import")
            .args(["-window", "root"])
            .arg(path)
            .env("DISPLAY", &self.display)
            .status()
            .expect("import runs");
        assert!(status.success(), "screenshot {}", path.display());
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 2_000,
            "{} is too small to show a window",
            path.display()
        );
    }

    /// Ctrl+Q, then the process must end by itself with status 0.
    fn close(mut self, window: &str) {
        self.key(window, "ctrl+q");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                assert!(status.success(), "exit {status}; stderr:\n{stderr}");
                assert!(!stderr.contains("panicked"), "the app panicked:\n{stderr}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cairn-desktop did not exit within 30 s of Ctrl+Q"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private D-Bus session bus (for AT-SPI), stopped on drop.
struct SessionBus {
    address: String,
    pid: u32,
}

impl SessionBus {
    fn start() -> SessionBus {
        let out = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .output()
            .expect("dbus-daemon runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let address = lines.next().unwrap_or_default().trim().to_owned();
        let pid = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("dbus-daemon printed no pid: {text:?}"));
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon address {address:?}"
        );
        SessionBus { address, pid }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

/// Whether AT-SPI can be read (Debian's python3-pyatspi and dbus-daemon); fails under CI when
/// not.
fn accessibility_tools() -> bool {
    let pyatspi = Command::new("/usr/bin/python3")
        .args(["-c", "import pyatspi"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if pyatspi && have("dbus-daemon") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the accessibility test needs python3-pyatspi and dbus-daemon (apt install python3-pyatspi dbus)"
    );
    eprintln!("skipped: the accessibility test needs python3-pyatspi and dbus-daemon");
    false
}

/// What a screen reader sees of the app now: (controls showing, those without a name, names).
fn accessible_controls(bus: &SessionBus) -> (u64, Vec<String>, Vec<String>) {
    let out = Command::new("/usr/bin/python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/a11y.py"))
        .args(["cairn", "20"])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .output()
        .expect("a11y.py runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "a11y.py: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(report.get("error").is_none(), "{report}");
    let strings = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    (
        report["controls"].as_u64().unwrap_or(0),
        strings("unnamed"),
        strings("names"),
    )
}

fn shots_dir(keep: &tempfile::TempDir) -> PathBuf {
    let dir = std::env::var_os("CAIRN_SCREENSHOT_DIR")
        .map_or_else(|| keep.path().join("shots"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

struct TestServer {
    http: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_server() -> TestServer {
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
        jwt_secret: b"desktop-window-test-secret-32-b!".to_vec(),
        quota_default: 10 << 30,
        upload_size_max: 1 << 30,
        version_retention: None,
        quic_listen: Some("127.0.0.1:0".parse().expect("addr")),
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
    TestServer {
        http: format!("http://{addr}"),
        _dir: dir,
        _stop: stop,
    }
}

/// Registers `user`, logs in and pins the server into `config_dir`, as `cairn user login`
/// would, and names `folder` as the app's folder.
async fn log_in(server: &TestServer, config_dir: &Path, user: &str, folder: &Path) {
    let rest = RestClient::new(&server.http).expect("client");
    rest.register(&RegisterRequest {
        username: user.into(),
        email: format!("{user}@example.com"),
        password: Password("correct horse battery".into()),
    })
    .await
    .expect("register");
    let tokens = rest
        .login(&LoginRequest {
            username: user.into(),
            password: Password("correct horse battery".into()),
        })
        .await
        .expect("login");
    let server_url = rest.server().to_owned();
    let folder = folder.display().to_string();
    Config::update(config_dir, move |c| {
        c.server = Some(server_url);
        c.username = Some(user.to_owned());
        c.refresh_token = Some(tokens.refresh_token);
        c.settings.insert("desktop_folder".into(), folder);
        // Slow enough that the dashboard shows the upload for a screenshot.
        c.settings.insert("upload_limit_kib".into(), "6000".into());
    })
    .expect("config");
    cairn_client::daemon::pin_now(config_dir, &rest)
        .await
        .expect("pin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_sets_up_syncs_and_closes_cleanly() {
    if !display_tools() {
        return;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let shots = shots_dir(&temp);
    let display = Display::start();
    let server = start_server().await;

    // A fresh config dir: the setup view.
    let home = temp.path().join("home");
    let fresh = temp.path().join("fresh-config");
    std::fs::create_dir_all(&home).expect("home");
    let mut app = App::start(&display, &fresh, &home);
    let window = tokio::task::block_in_place(|| app.window());
    // Type a username so the form shows live validation.
    tokio::task::block_in_place(|| {
        app.xdotool(&["type", "--delay", "20", "al"]);
        app.screenshot(&shots.join("setup.png"));
        app.close(&window);
    });

    // Logged in, with a folder holding a file to upload.
    let config_dir = temp.path().join("config");
    let folder = temp.path().join("Cairn");
    std::fs::create_dir_all(folder.join("Projects")).expect("folder");
    std::fs::write(folder.join("notes.txt"), "first draft\n").expect("write");
    // Incompressible and without repeats, so nothing deduplicates (xorshift64).
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let big: Vec<u8> = (0..60usize << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect();
    std::fs::write(folder.join("Projects/video.bin"), &big).expect("write");
    log_in(&server, &config_dir, "alice", &folder).await;
    std::fs::write(folder.join("plan.txt"), "the plan\n").expect("write");
    let canonical = folder.canonicalize().expect("canonical");
    let state_dir = cairn_client::config::state_dir_in(&config_dir, &canonical).expect("state dir");

    let mut app = App::start(&display, &config_dir, &home);
    let window = tokio::task::block_in_place(|| app.window());
    tokio::task::block_in_place(|| {
        // The upload runs at 6 MB/s: mid-transfer within a few seconds.
        std::thread::sleep(Duration::from_secs(4));
        app.screenshot(&shots.join("dashboard.png"));
    });
    // Wait until the server has everything.
    let rest = RestClient::new(&server.http).expect("client");
    let tokens = rest
        .login(&LoginRequest {
            username: "alice".into(),
            password: Password("correct horse battery".into()),
        })
        .await
        .expect("login");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let files: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/files/", server.http))
            .bearer_auth(&tokens.access_token.0)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let paths: Vec<&str> = files["files"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["path"].as_str()).collect())
            .unwrap_or_default();
        if paths.contains(&"Projects/video.bin") && paths.contains(&"notes.txt") {
            let video = files["files"]
                .as_array()
                .and_then(|a| a.iter().find(|f| f["path"] == "Projects/video.bin"))
                .and_then(|f| f["size"].as_u64());
            assert_eq!(video, Some(big.len() as u64));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the app did not upload: {paths:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A second version of notes.txt, for the history.
    std::fs::write(folder.join("notes.txt"), "second draft, longer\n").expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A real conflict: with the app's sync paused, plan.txt changes here and, through the
    // REST API, on the server; resumed, the app keeps this device's version as a copy.
    assert!(
        cairn_client::control::ask(&state_dir, "pause")
            .await
            .is_some(),
        "the app's sync answers on its control socket"
    );
    std::fs::write(folder.join("plan.txt"), "my plan\n").expect("write");
    let form = reqwest::multipart::Form::new()
        .text("path", "plan.txt")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"their plan\n".to_vec()).file_name("plan.txt"),
        );
    let uploaded = reqwest::Client::new()
        .post(format!("{}/files/upload", server.http))
        .bearer_auth(&tokens.access_token.0)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status(), reqwest::StatusCode::CREATED);
    assert!(
        cairn_client::control::ask(&state_dir, "resume")
            .await
            .is_some()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        if let Some(list) = cairn_client::conflicts::load(&state_dir).expect("conflicts")
            && let Some(record) = list.conflicts.into_iter().find(|c| c.path == "plan.txt")
        {
            break record;
        }
        assert!(Instant::now() < deadline, "no conflict was recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let copy = record.copy.expect("a conflict copy");
    assert!(copy.starts_with("plan (conflict from "), "{copy}");
    assert_eq!(
        std::fs::read_to_string(folder.join(&copy)).expect("copy"),
        "my plan\n"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("plan.txt")).expect("winner"),
        "their plan\n"
    );
    // A file that cannot be synced (its name is not UTF-8) is named on the status page.
    {
        use std::os::unix::ffi::OsStrExt as _;
        let bad = std::ffi::OsStr::from_bytes(b"r\xe9sum\xe9.txt");
        std::fs::write(folder.join(bad), "latin-1\n").expect("write");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cairn_client::control::ask(&state_dir, "status").await;
        if status
            .as_ref()
            .is_some_and(|s| s["problem_count"] == 1 && s["state"] == "idle")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the problem was never reported: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| {
        app.screenshot(&shots.join("status.png"));
        app.key(&window, "alt+2");
        app.screenshot(&shots.join("files.png"));
        app.key(&window, "alt+3");
        app.screenshot(&shots.join("activity.png"));
        app.key(&window, "alt+4");
        app.screenshot(&shots.join("conflicts.png"));
        // The history of the first file of the top folder (notes.txt).
        app.key(&window, "alt+2");
        std::thread::sleep(Duration::from_millis(500));
        app.key(&window, "ctrl+h");
        std::thread::sleep(Duration::from_secs(1));
        app.screenshot(&shots.join("history.png"));
        app.xdotool(&["key", "Escape"]);
        app.close(&window);
    });
    // The app's sync is stopped with the app: its control socket is gone.
    assert!(
        !state_dir.join("control.sock").exists(),
        "the app left its control socket behind"
    );
    eprintln!("screenshots in {}", shots.display());
    drop(display);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_has_a_name_a_screen_reader_can_read() {
    if !display_tools() || !accessibility_tools() {
        return;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let bus = SessionBus::start();
    let display = Display::start();
    let server = start_server().await;
    let home = temp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut seen: Vec<String> = Vec::new();
    let mut check = |app: &App, window: &str, keys: Option<&str>, view: &str, min: u64| {
        if let Some(keys) = keys {
            app.key(window, keys);
            std::thread::sleep(Duration::from_millis(800));
        }
        let (controls, unnamed, names) = accessible_controls(&bus);
        assert!(
            controls >= min,
            "{view}: only {controls} controls on the accessibility bus: {names:?}"
        );
        assert!(
            unnamed.is_empty(),
            "{view}: controls without an accessible name: {unnamed:#?}"
        );
        eprintln!("{view}: {controls} controls, all named: {names:?}");
        seen.extend(names);
    };

    // The setup view of a fresh config dir.
    let fresh = temp.path().join("fresh-config");
    let mut app = App::start_on_bus(&display, &fresh, &home, Some(&bus.address));
    let window = tokio::task::block_in_place(|| app.window());
    tokio::task::block_in_place(|| {
        check(&app, &window, None, "setup", 4);
        app.close(&window);
    });

    // Logged in: every page and the preferences.
    let config_dir = temp.path().join("config");
    let folder = temp.path().join("Cairn");
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::write(folder.join("notes.txt"), "hello\n").expect("write");
    log_in(&server, &config_dir, "dana", &folder).await;
    let mut app = App::start_on_bus(&display, &config_dir, &home, Some(&bus.address));
    let window = tokio::task::block_in_place(|| app.window());
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| {
        check(&app, &window, None, "status", 3);
        check(&app, &window, Some("alt+2"), "files", 3);
        check(&app, &window, Some("alt+3"), "activity", 3);
        check(&app, &window, Some("alt+4"), "conflicts", 3);
        check(&app, &window, Some("ctrl+comma"), "preferences", 6);
        app.xdotool(&["key", "Escape"]);
        std::thread::sleep(Duration::from_millis(500));
        app.close(&window);
    });
    // Icon-only buttons are named too (their names come from the app, not from a label).
    for name in ["Preferences (Ctrl+,)", "Keep conflict copies"] {
        assert!(
            seen.iter().any(|n| n.contains(name)),
            "no control named {name:?} among {seen:?}"
        );
    }
}
