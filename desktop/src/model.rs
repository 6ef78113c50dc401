//! View models: the desktop's state as plain structs, fed by the backend's updates (daemon
//! status, feed events, REST answers). Widgets only render them, so everything here is tested
//! without a display.

use std::collections::{HashMap, HashSet, VecDeque};

use cairn_client::conflicts::ConflictRecord;
use cairn_client::control::DaemonStatus;
use cairn_client::daemon::FeedEvent;
use cairn_client::engine::PathProblem;
use cairn_protocol::api::VersionInfo;

/// Feed items kept (older ones drop off).
pub(crate) const FEED_ITEMS_MAX: usize = 500;

/// Seconds of progress samples the transfer rate is averaged over.
const RATE_WINDOW_SECS: f64 = 5.0;

/// Paths the status page lists of those the last pass could not sync.
const PROBLEMS_SHOWN: usize = 3;

// ----- setup -----

/// A field of the setup form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Field {
    /// Server URL.
    Server,
    /// Login name.
    Username,
    /// Contact address (registering only).
    Email,
    /// Password.
    Password,
    /// The folder to sync.
    Folder,
}

/// The first-run form, validated as the user types.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct SetupForm {
    /// Server base URL.
    pub(crate) server: String,
    /// Login name.
    pub(crate) username: String,
    /// Contact address (registering only).
    pub(crate) email: String,
    /// Password.
    pub(crate) password: String,
    /// The local folder to sync.
    pub(crate) folder: String,
    /// Create an account instead of logging in.
    pub(crate) register: bool,
}

impl std::fmt::Debug for SetupForm {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupForm")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password", &"…")
            .field("folder", &self.folder)
            .field("register", &self.register)
            .finish()
    }
}

impl SetupForm {
    /// What is wrong with each field, in plain words; a field left empty is not reported
    /// until `submitting` (so a fresh form is not all red).
    pub(crate) fn problems(&self, submitting: bool) -> Vec<(Field, String)> {
        let mut problems = Vec::new();
        let mut check = |field: Field, value: &str, verdict: Option<String>| {
            if value.is_empty() {
                if submitting {
                    problems.push((field, "required".to_owned()));
                }
            } else if let Some(problem) = verdict {
                problems.push((field, problem));
            }
        };
        check(
            Field::Server,
            &self.server,
            cairn_client::rest::normalize_server_url(self.server.trim())
                .err()
                .map(|_| {
                    "a server address looks like https://cairn.example.com or http://127.0.0.1:8000"
                        .to_owned()
                }),
        );
        check(
            Field::Username,
            &self.username,
            username_problem(&self.username),
        );
        if self.register {
            check(
                Field::Email,
                &self.email,
                (!looks_like_email(&self.email))
                    .then(|| "an email address looks like name@example.com".to_owned()),
            );
        }
        check(
            Field::Password,
            &self.password,
            (self.register && self.password.chars().count() < 8)
                .then(|| "at least 8 characters".to_owned()),
        );
        check(Field::Folder, &self.folder, folder_problem(&self.folder));
        problems
    }

    /// Whether the form can be sent.
    pub(crate) fn ready(&self) -> bool {
        self.problems(true).is_empty()
    }

    /// The folder as an absolute path (`~/` expanded).
    pub(crate) fn folder_path(&self) -> std::path::PathBuf {
        expand_home(self.folder.trim())
    }
}

fn username_problem(name: &str) -> Option<String> {
    let length = name.chars().count();
    if !(3..=64).contains(&length) {
        return Some("3 to 64 characters".to_owned());
    }
    (!name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    .then(|| "only letters, digits, '.', '_' and '-'".to_owned())
}

fn looks_like_email(text: &str) -> bool {
    text.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }) && !text.chars().any(char::is_whitespace)
}

fn folder_problem(folder: &str) -> Option<String> {
    let path = expand_home(folder.trim());
    if !path.is_absolute() {
        return Some("a full path, like ~/Cairn or /home/me/Cairn".to_owned());
    }
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_dir() => Some("this is a file, not a folder".to_owned()),
        Ok(_) => None,
        // A missing folder is created; its parent must exist.
        Err(_) if path.parent().is_some_and(std::path::Path::is_dir) => None,
        Err(_) => Some("neither this folder nor its parent exists".to_owned()),
    }
}

/// `~/x` → `$HOME/x`.
pub(crate) fn expand_home(text: &str) -> std::path::PathBuf {
    match (text.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ if text == "~" => std::env::var_os("HOME").map_or_else(|| text.into(), Into::into),
        _ => text.into(),
    }
}

/// A server's refusal in plain words, with what to do.
pub(crate) fn explain_login_error(code: &str, message: &str) -> String {
    match code {
        "wrong_credentials" => {
            "That username and password do not match. Check them, or create an account.".to_owned()
        }
        "taken" => "That username is taken. Choose another, or log in if it is yours.".to_owned(),
        "unreachable" | "timeout" | "invalid_url" => format!(
            "Cannot reach the server ({message}). Check the address and that the server is running."
        ),
        "rate_limited" => "Too many attempts. Wait a minute, then try again.".to_owned(),
        _ => message.to_owned(),
    }
}

// ----- dashboard -----

/// The connection to the server as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Connection {
    /// Starting or attaching.
    Connecting,
    /// The server answers.
    Online,
    /// The server does not answer (why).
    Offline(String),
}

/// The running transfer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transfer {
    /// `upload` or `download`.
    pub(crate) direction: String,
    /// Bytes done.
    pub(crate) done: u64,
    /// Bytes in all.
    pub(crate) total: u64,
    /// Files finished in this pass.
    pub(crate) files: u64,
    /// Bytes per second (None until two samples).
    pub(crate) rate: Option<f64>,
}

/// The status dashboard.
#[derive(Debug, Clone)]
pub(crate) struct Dashboard {
    /// The server link.
    pub(crate) connection: Connection,
    /// The daemon's state (`starting`, `idle`, `syncing`, `out_of_sync`, `paused`, `error`).
    pub(crate) state: String,
    /// The pass's phase.
    pub(crate) phase: Option<String>,
    /// The transfer, while one runs.
    pub(crate) transfer: Option<Transfer>,
    /// When the last pass ended, Unix seconds.
    pub(crate) last_sync: Option<u64>,
    /// The last error and what to do about it.
    pub(crate) error: Option<(String, String)>,
    /// Storage (used, quota), bytes.
    pub(crate) usage: Option<(i64, i64)>,
    /// Unresolved conflicts.
    pub(crate) conflicts: usize,
    /// What the last pass could not sync (the first of them), and how many in all.
    pub(crate) problems: (Vec<PathProblem>, u64),
    /// Whether the folder is watched.
    pub(crate) watching: bool,
    /// The synced folder.
    pub(crate) folder: String,
    /// Server URL.
    pub(crate) server: String,
    /// Whether another process (a `cairn sync` daemon) does the syncing.
    pub(crate) attached_pid: Option<u32>,
    /// Files finished in the running pass.
    files_in_pass: u64,
    /// (seconds, bytes done) samples of the running transfer.
    samples: VecDeque<(f64, u64)>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            connection: Connection::Connecting,
            state: "starting".into(),
            phase: None,
            transfer: None,
            last_sync: None,
            error: None,
            usage: None,
            conflicts: 0,
            problems: (Vec::new(), 0),
            watching: false,
            folder: String::new(),
            server: String::new(),
            attached_pid: None,
            files_in_pass: 0,
            samples: VecDeque::new(),
        }
    }
}

impl Dashboard {
    /// Takes in a daemon's status.
    pub(crate) fn apply_status(&mut self, status: &DaemonStatus) {
        if status.state != "syncing" {
            self.transfer = None;
            self.samples.clear();
            self.files_in_pass = 0;
        }
        self.state.clone_from(&status.state);
        self.phase.clone_from(&status.phase);
        self.last_sync = (status.last_pass_unix > 0).then_some(status.last_pass_unix);
        self.error = status
            .last_error
            .as_ref()
            .map(|e| (e.clone(), advice_for(e)));
        self.conflicts = status.conflicts;
        self.problems = (status.problems.clone(), status.problem_count);
        self.watching = status.watching;
        self.folder.clone_from(&status.folder);
        self.server.clone_from(&status.server);
        if status.last_error.is_none() && self.connection == Connection::Connecting {
            self.connection = Connection::Online;
        }
    }

    /// Takes in a feed event seen at `now` (seconds, any monotonic origin).
    pub(crate) fn apply_event(&mut self, event: &FeedEvent, now: f64) {
        match event {
            FeedEvent::Phase { phase } => {
                self.phase = Some(phase.clone());
                self.state = "syncing".into();
                if phase == "scanning" {
                    self.files_in_pass = 0;
                }
                self.samples.clear();
                self.transfer = None;
            }
            FeedEvent::Progress {
                direction,
                done,
                total,
            } => {
                self.samples.push_back((now, *done));
                while self
                    .samples
                    .front()
                    .is_some_and(|(t, _)| now - t > RATE_WINDOW_SECS)
                    && self.samples.len() > 2
                {
                    self.samples.pop_front();
                }
                let rate = match (self.samples.front(), self.samples.back()) {
                    (Some((t0, d0)), Some((t1, d1))) if t1 > t0 && d1 >= d0 =>
                    {
                        #[allow(clippy::cast_precision_loss)]
                        Some((d1 - d0) as f64 / (t1 - t0))
                    }
                    _ => None,
                };
                self.transfer = Some(Transfer {
                    direction: direction.clone(),
                    done: *done,
                    total: *total,
                    files: self.files_in_pass,
                    rate,
                });
            }
            FeedEvent::File { .. } => {
                self.files_in_pass += 1;
                if let Some(transfer) = &mut self.transfer {
                    transfer.files = self.files_in_pass;
                }
            }
            FeedEvent::Summary(report) => {
                self.transfer = None;
                self.samples.clear();
                self.files_in_pass = 0;
                if report.in_sync {
                    self.state = "idle".into();
                }
            }
            FeedEvent::Conflict { .. } => self.conflicts += 1,
            _ => {}
        }
    }

    /// The server answered (or not).
    pub(crate) fn apply_reachability(&mut self, outcome: Result<(i64, i64), String>) {
        match outcome {
            Ok(usage) => {
                self.connection = Connection::Online;
                self.usage = Some(usage);
            }
            Err(reason) => self.connection = Connection::Offline(reason),
        }
    }

    /// The big line at the top.
    pub(crate) fn headline(&self) -> String {
        if let Connection::Offline(_) = self.connection {
            return "Offline — changes are kept and sent when the server is back".to_owned();
        }
        match self.state.as_str() {
            "idle" => "Up to date".to_owned(),
            "paused" => "Paused".to_owned(),
            "error" => "Sync problem".to_owned(),
            "out_of_sync" => match self.problems.1 {
                0 => "Not in sync".to_owned(),
                1 => "Can't sync 1 file".to_owned(),
                n => format!("Can't sync {n} files"),
            },
            "starting" => "Starting…".to_owned(),
            _ => match self.phase.as_deref() {
                Some("uploading") => "Uploading…".to_owned(),
                Some("downloading") => "Downloading…".to_owned(),
                Some("scanning") => "Looking for changes…".to_owned(),
                _ => "Syncing…".to_owned(),
            },
        }
    }

    /// The icon name for the state.
    pub(crate) fn icon(&self) -> &'static str {
        if let Connection::Offline(_) = self.connection {
            return "network-offline-symbolic";
        }
        match self.state.as_str() {
            "idle" => "emblem-ok-symbolic",
            "paused" => "media-playback-pause-symbolic",
            "error" | "out_of_sync" => "dialog-warning-symbolic",
            _ => "emblem-synchronizing-symbolic",
        }
    }

    /// What the last pass could not sync, as a heading and the first few paths with their
    /// reasons (`None` when it synced everything).
    pub(crate) fn problems_text(&self) -> Option<(String, String)> {
        let (kept, count) = &self.problems;
        if *count == 0 {
            return None;
        }
        let heading = if *count == 1 {
            "1 file could not be synced".to_owned()
        } else {
            format!("{count} files could not be synced")
        };
        let mut lines: Vec<String> = kept
            .iter()
            .take(PROBLEMS_SHOWN)
            .map(|p| format!("{} — {}", p.path, p.message))
            .collect();
        let shown = kept.len().min(PROBLEMS_SHOWN) as u64;
        if *count > shown {
            lines.push(format!("…and {} more.", count - shown));
        }
        lines.push(format!(
            "Cairn tries again when {}. The rest of the folder is in sync.",
            if *count == 1 {
                "it changes"
            } else {
                "they change"
            }
        ));
        Some((heading, lines.join("\n")))
    }

    /// The transfer as text ("Uploading 3 files — 1.2 MB of 4.0 MB, 800 kB/s, about 4 s left"),
    /// and its fraction done.
    pub(crate) fn transfer_text(&self) -> Option<(String, f64)> {
        let t = self.transfer.as_ref()?;
        let verb = if t.direction == "upload" {
            "Uploading"
        } else {
            "Downloading"
        };
        let mut text = format!("{verb} — {} of {}", bytes(t.done), bytes(t.total));
        if t.files > 0 {
            text.push_str(&format!(
                ", {} file{} done",
                t.files,
                if t.files == 1 { "" } else { "s" }
            ));
        }
        if let Some(rate) = t.rate.filter(|r| *r > 0.0) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let per_second = rate as u64;
            text.push_str(&format!(", {}/s", bytes(per_second)));
            #[allow(clippy::cast_precision_loss)]
            let left = t.total.saturating_sub(t.done) as f64 / rate;
            if left >= 1.0 {
                text.push_str(&format!(", about {} left", duration(left)));
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let fraction = if t.total == 0 {
            0.0
        } else {
            (t.done as f64 / t.total as f64).clamp(0.0, 1.0)
        };
        Some((text, fraction))
    }

    /// "Last synced 3 minutes ago", given the time now (Unix seconds).
    pub(crate) fn last_sync_text(&self, now: u64) -> String {
        match self.last_sync {
            None => "Not synced yet".to_owned(),
            Some(at) => format!("Last synced {}", ago(now.saturating_sub(at))),
        }
    }

    /// "1.2 GB of 10 GB used", and the fraction.
    pub(crate) fn usage_text(&self) -> Option<(String, f64)> {
        let (used, quota) = self.usage?;
        let used = u64::try_from(used).unwrap_or(0);
        let quota = u64::try_from(quota).unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        let fraction = if quota == 0 {
            1.0
        } else {
            (used as f64 / quota as f64).clamp(0.0, 1.0)
        };
        Some((
            format!("{} of {} used", bytes(used), bytes(quota)),
            fraction,
        ))
    }
}

/// What to do about a daemon's error, in plain words.
pub(crate) fn advice_for(error: &str) -> String {
    let lower = error.to_lowercase();
    if lower.contains("mass") || lower.contains("would delete") {
        "Many files were deleted at once, so syncing stopped to protect them. Restore them, or allow it with `cairn sync start --allow-mass-delete`.".to_owned()
    } else if lower.contains("is not trusted") {
        "The server's HTTPS certificate is not trusted by this computer. If the server uses a private certificate authority, start Cairn with SSL_CERT_FILE set to that authority's certificate.".to_owned()
    } else if lower.contains("certificate") || lower.contains("fingerprint") {
        "The server's identity changed. If you trust the server, log out and log in again to pin its new certificate.".to_owned()
    } else if lower.contains("unauthorized")
        || lower.contains("expired")
        || lower.contains("log in")
        || lower.contains("revoked")
    {
        "Your session ended. Log in again (Preferences → Account).".to_owned()
    } else if lower.contains("quota") {
        "Your storage is full. Delete files or ask your administrator for more space.".to_owned()
    } else if lower.contains("connect")
        || lower.contains("timed out")
        || lower.contains("no answer")
        || lower.contains("refused")
    {
        "The server cannot be reached. Check your network; syncing resumes by itself.".to_owned()
    } else if lower.contains("permission") || lower.contains("denied") {
        "A file or folder cannot be read or written. Check its permissions.".to_owned()
    } else if lower.contains("no space") {
        "This disk is full. Free some space; syncing resumes by itself.".to_owned()
    } else {
        "Syncing is retried by itself. If this stays, check the server and the folder.".to_owned()
    }
}

// ----- feed -----

/// What kind of thing a feed item tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeedKind {
    /// Sent to the server.
    Upload,
    /// Came from the server (another device's change).
    Download,
    /// Deleted here or there.
    Delete,
    /// Both sides changed it.
    Conflict,
    /// Could not be synced, or a warning.
    Problem,
    /// A pass ended.
    Summary,
}

impl FeedKind {
    /// Icon name.
    pub(crate) fn icon(self) -> &'static str {
        match self {
            FeedKind::Upload => "go-up-symbolic",
            FeedKind::Download => "go-down-symbolic",
            FeedKind::Delete => "user-trash-symbolic",
            FeedKind::Conflict => "dialog-warning-symbolic",
            FeedKind::Problem => "dialog-error-symbolic",
            FeedKind::Summary => "emblem-ok-symbolic",
        }
    }
}

/// One line of the live feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FeedItem {
    /// When, Unix seconds.
    pub(crate) at: u64,
    /// What kind.
    pub(crate) kind: FeedKind,
    /// The line.
    pub(crate) text: String,
    /// The path it is about, if one.
    pub(crate) path: Option<String>,
}

/// The live event feed, newest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Feed {
    /// Items, newest first.
    pub(crate) items: VecDeque<FeedItem>,
}

impl Feed {
    /// Adds what `event` means to a person, if anything; returns the new item.
    pub(crate) fn apply(&mut self, event: &FeedEvent, at: u64) -> Option<&FeedItem> {
        let (kind, text, path) = match event {
            FeedEvent::File { path, what } => {
                let kind = match what.as_str() {
                    "uploaded" => FeedKind::Upload,
                    "downloaded" => FeedKind::Download,
                    w if w.starts_with("deleted") => FeedKind::Delete,
                    _ => FeedKind::Summary,
                };
                let text = match what.as_str() {
                    "uploaded" => format!("Uploaded {path}"),
                    "downloaded" => format!("Downloaded {path} (changed on another device)"),
                    "deleted locally" => format!("Deleted {path} here (deleted on another device)"),
                    "deleted remotely" => format!("Deleted {path} on the server"),
                    other => format!("{} {path}", capitalise(other)),
                };
                (kind, text, Some(path.clone()))
            }
            FeedEvent::Conflict { path, copy, .. } => (
                FeedKind::Conflict,
                match copy {
                    Some(copy) => format!(
                        "Conflict: {path} changed here and on another device; yours is kept as {copy}"
                    ),
                    None => format!(
                        "Conflict: {path} was edited on one side and deleted on the other; the edit was kept"
                    ),
                },
                Some(path.clone()),
            ),
            FeedEvent::Collision { paths } => (
                FeedKind::Problem,
                format!(
                    "Names that would collide on other systems: {}",
                    paths.join(", ")
                ),
                paths.first().cloned(),
            ),
            FeedEvent::Problem { path, message } => (
                FeedKind::Problem,
                format!("Not synced: {path}: {message}"),
                Some(path.clone()),
            ),
            FeedEvent::Warning { message } => (FeedKind::Problem, message.clone(), None),
            FeedEvent::Summary(r) => {
                let mut parts = Vec::new();
                for (n, what) in [
                    (r.uploaded, "uploaded"),
                    (r.downloaded, "downloaded"),
                    (r.deleted_local + r.deleted_remote, "deleted"),
                    (r.conflicts, "in conflict"),
                ] {
                    if n > 0 {
                        parts.push(format!("{n} {what}"));
                    }
                }
                if parts.is_empty() {
                    return None;
                }
                (
                    FeedKind::Summary,
                    format!("Synced revision {}: {}", r.seq, parts.join(", ")),
                    None,
                )
            }
            FeedEvent::Phase { .. } | FeedEvent::Progress { .. } | FeedEvent::Missed { .. } => {
                return None;
            }
        };
        self.items.push_front(FeedItem {
            at,
            kind,
            text,
            path,
        });
        self.items.truncate(FEED_ITEMS_MAX);
        self.items.front()
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().collect::<String>() + chars.as_str()
    })
}

// ----- files -----

/// A file's sync status in the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileStatus {
    /// The same here and on the server.
    Synced,
    /// Being sent or fetched by the running pass.
    Syncing,
    /// Changed here; the next pass sends it.
    Pending,
    /// In a recorded conflict (the path or its conflict copy).
    Conflict,
    /// The last pass could not sync it.
    Error,
    /// Excluded by `.cairnignore` or the built-in patterns.
    Ignored,
}

impl FileStatus {
    /// Label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            FileStatus::Synced => "Synced",
            FileStatus::Syncing => "Syncing",
            FileStatus::Pending => "Waiting to sync",
            FileStatus::Conflict => "Conflict",
            FileStatus::Error => "Not synced",
            FileStatus::Ignored => "Ignored",
        }
    }

    /// Icon name.
    pub(crate) fn icon(self) -> &'static str {
        match self {
            FileStatus::Synced => "emblem-ok-symbolic",
            FileStatus::Syncing => "emblem-synchronizing-symbolic",
            FileStatus::Pending => "document-edit-symbolic",
            FileStatus::Conflict => "dialog-warning-symbolic",
            FileStatus::Error => "dialog-error-symbolic",
            FileStatus::Ignored => "action-unavailable-symbolic",
        }
    }

    /// CSS class for the label's colour.
    pub(crate) fn css(self) -> &'static str {
        match self {
            FileStatus::Synced => "success",
            FileStatus::Syncing | FileStatus::Pending => "accent",
            FileStatus::Conflict => "warning",
            FileStatus::Error => "error",
            FileStatus::Ignored => "dim-label",
        }
    }
}

/// What the backend knows about one path when it lists a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PathFacts {
    /// Matched by the ignore rules.
    pub(crate) ignored: bool,
    /// A directory.
    pub(crate) is_dir: bool,
    /// The last sync recorded it with this size and mtime, and its content is in the merge base
    /// (for a directory: the directory is in the base).
    pub(crate) synced_as: Option<(u64, i64)>,
    /// Size and mtime on disk now.
    pub(crate) on_disk: (u64, i64),
    /// Some file under a directory is not synced.
    pub(crate) dir_has_pending: bool,
}

/// What the live events say about paths, on top of what the last sync recorded.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveStatus {
    /// Paths the last passes could not sync, with why.
    pub(crate) problems: HashMap<String, String>,
    /// Paths (and conflict copies) in recorded conflicts.
    pub(crate) conflicts: HashSet<String>,
    /// Whether a pass runs.
    pub(crate) syncing: bool,
}

impl LiveStatus {
    /// Takes in a feed event.
    pub(crate) fn apply(&mut self, event: &FeedEvent) {
        match event {
            FeedEvent::Problem { path, message } => {
                self.problems.insert(path.clone(), message.clone());
            }
            FeedEvent::File { path, .. } => {
                self.problems.remove(path);
            }
            FeedEvent::Phase { .. } => self.syncing = true,
            FeedEvent::Summary(_) => self.syncing = false,
            _ => {}
        }
    }

    /// Takes in the daemon's state.
    pub(crate) fn apply_state(&mut self, state: &str) {
        self.syncing = state == "syncing";
    }

    /// Replaces the recorded conflicts.
    pub(crate) fn set_conflicts(&mut self, records: &[ConflictRecord]) {
        self.conflicts = records
            .iter()
            .flat_map(|c| std::iter::once(c.path.clone()).chain(c.copy.clone()))
            .collect();
    }

    /// The status of `path`.
    pub(crate) fn status(&self, path: &str, facts: &PathFacts) -> FileStatus {
        if facts.ignored {
            return FileStatus::Ignored;
        }
        if self.conflicts.contains(path) {
            return FileStatus::Conflict;
        }
        let prefix = format!("{path}/");
        if self.problems.contains_key(path)
            || (facts.is_dir && self.problems.keys().any(|p| p.starts_with(&prefix)))
        {
            return FileStatus::Error;
        }
        if facts.is_dir && self.conflicts.iter().any(|p| p.starts_with(&prefix)) {
            return FileStatus::Conflict;
        }
        let synced = match facts.synced_as {
            Some(_) if facts.is_dir => !facts.dir_has_pending,
            Some(recorded) => recorded == facts.on_disk,
            None => false,
        };
        match (synced, self.syncing) {
            (true, _) => FileStatus::Synced,
            (false, true) => FileStatus::Syncing,
            (false, false) => FileStatus::Pending,
        }
    }
}

/// One row of the file browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRow {
    /// Name in its directory.
    pub(crate) name: String,
    /// Path relative to the folder.
    pub(crate) path: String,
    /// Facts from the backend.
    pub(crate) facts: PathFacts,
}

/// A directory listing: directories first, then by name (case-insensitive).
pub(crate) fn sort_rows(rows: &mut [FileRow]) {
    rows.sort_by(|a, b| {
        b.facts
            .is_dir
            .cmp(&a.facts.is_dir)
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// The parent of a relative path ("" for the top).
pub(crate) fn parent_of(path: &str) -> String {
    path.rsplit_once('/')
        .map_or_else(String::new, |(parent, _)| parent.to_owned())
}

// ----- history -----

/// One version of a file, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VersionRow {
    /// Version number.
    pub(crate) version: u64,
    /// "Version 3 · 1.2 MB" or "Version 3 · deleted".
    pub(crate) title: String,
    /// "2026-11-24 14:03 UTC · from laptop".
    pub(crate) subtitle: String,
    /// The newest version (restoring it changes nothing).
    pub(crate) current: bool,
    /// A deletion (nothing to restore or download).
    pub(crate) deleted: bool,
}

/// A file's version history, newest first.
pub(crate) fn version_rows(versions: &[VersionInfo]) -> Vec<VersionRow> {
    versions
        .iter()
        .enumerate()
        .map(|(i, v)| VersionRow {
            version: v.version,
            title: if v.deleted {
                format!("Version {} · deleted", v.version)
            } else {
                format!("Version {} · {}", v.version, bytes(v.size))
            },
            subtitle: format!("{} · from {}", when(&v.created_at), v.device),
            current: i == 0,
            deleted: v.deleted,
        })
        .collect()
}

/// An RFC 3339 time as "2026-11-24 14:03 UTC" (unchanged when it does not parse).
fn when(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(time)) if rfc3339.get(10..11) == Some("T") => {
            format!("{date} {time} UTC")
        }
        _ => rfc3339.to_owned(),
    }
}

/// Where "download as copy" puts version `version` of `path`: beside it, named so it sorts
/// next to it and says which version it is.
pub(crate) fn copy_name(path: &str, version: u64) -> String {
    let (dir, name) = match path.rsplit_once('/') {
        Some((dir, name)) => (format!("{dir}/"), name),
        None => (String::new(), path),
    };
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    format!("{dir}{stem} (version {version}){ext}")
}

// ----- conflicts -----

/// One conflict, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConflictRow {
    /// Index in the folder's list (what a resolve names).
    pub(crate) index: usize,
    /// The path.
    pub(crate) title: String,
    /// What happened and where the other content is.
    pub(crate) subtitle: String,
    /// Whether "keep mine" and "keep both" mean anything (false for edit-versus-delete: the
    /// edit was kept, only "done" applies): there is a copy, or a version kept in the history.
    pub(crate) has_copy: bool,
}

/// The conflicts view's rows, oldest first.
pub(crate) fn conflict_rows(records: &[ConflictRecord]) -> Vec<ConflictRow> {
    records
        .iter()
        .enumerate()
        .map(|(index, c)| ConflictRow {
            index,
            title: c.path.clone(),
            subtitle: match (&c.copy, c.reason.as_str()) {
                (Some(copy), "type_clash") => format!(
                    "A folder and a file met at this name; the folder is kept, the file is at {copy}"
                ),
                (Some(copy), _) => format!(
                    "Changed here and on another device. Theirs is at the path, yours at {copy}"
                ),
                (None, _) if c.kept.is_some() => "Changed here and on another device. Theirs is at the path, \
                     yours is in the version history (keep mine or keep both fetches it)"
                    .to_owned(),
                (None, _) => "Edited on one side and deleted on the other; the edit was kept".to_owned(),
            },
            has_copy: c.copy.is_some() || c.kept.is_some(),
        })
        .collect()
}

// ----- settings -----

/// The XDG autostart entry that starts the app at login.
pub(crate) fn autostart_entry(exe: &std::path::Path) -> String {
    format!(
        "[Desktop Entry]\nType=Application\nName=Cairn\nComment=Keep your folder in sync\nExec=\"{}\" --background\nIcon=folder-remote\nTerminal=false\nX-GNOME-Autostart-enabled=true\n",
        exe.display()
    )
}

/// A bandwidth limit field: empty or 0 is unlimited; otherwise whole KiB/s.
pub(crate) fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(kib) => Ok(Some(kib)),
        Err(_) => Err("a whole number of KiB/s, or empty for no limit".to_owned()),
    }
}

// ----- formatting -----

/// Bytes for people: "0 B", "999 B", "1.2 kB", "34 MB", "1.5 GB" (SI units, like GNOME).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// Seconds for people: "4 s", "3 min", "2 h".
pub(crate) fn duration(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = seconds.round().max(0.0) as u64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

/// "just now", "5 minutes ago", "3 hours ago", "2 days ago".
pub(crate) fn ago(seconds: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match seconds {
        0..10 => "just now".to_owned(),
        10..60 => plural(seconds, "second"),
        60..3600 => plural(seconds / 60, "minute"),
        3600..86_400 => plural(seconds / 3600, "hour"),
        _ => plural(seconds / 86_400, "day"),
    }
}

/// A time of day for the feed, "14:03:07" (UTC).
pub(crate) fn clock(unix: u64) -> String {
    let day = unix % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

#[cfg(test)]
mod tests;
