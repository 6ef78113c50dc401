//! The backend: a thread with its own tokio runtime, off the GTK main thread. It logs in, runs
//! (or attaches to) the folder's sync daemon, and answers the window's commands with updates.
//!
//! One path for both cases: when no `cairn sync` daemon serves the folder, the backend starts
//! one in-process ([`cairn_client::daemon::Daemon`], which binds the folder's control socket);
//! either way it then talks to the daemon only through that socket — `status` every second,
//! `subscribe` for the live feed, `pause`/`resume`/`sync` for the buttons. So `cairn sync
//! status` sees the app's sync, and the app sees a daemon started from a terminal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::config::{Config, state_dir_for};
use cairn_client::conflicts::{self, ConflictRecord, Keep};
use cairn_client::control::{self, DaemonStatus, Subscription};
use cairn_client::daemon::{
    self, DOWNLOAD_LIMIT_SETTING, Daemon, DaemonOptions, FeedEvent, UPLOAD_LIMIT_SETTING,
};
use cairn_client::db::StateDb;
use cairn_client::ignores::Ignores;
use cairn_client::rest::{RestClient, RestError, Session};
use cairn_client::state::State;
use cairn_protocol::api::{LoginRequest, Password, RegisterRequest, VersionInfo};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;

use crate::model::{self, FileRow, PathFacts, SetupForm};

/// The setting that names the folder the desktop app syncs.
pub(crate) const FOLDER_SETTING: &str = "desktop_folder";

/// Between status polls of the daemon.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Between heartbeats (connection state and storage use).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

/// Rows a directory listing shows at most.
pub(crate) const LISTING_ROWS_MAX: usize = 2000;

/// What the window asks for.
#[derive(Debug)]
pub(crate) enum Command {
    /// Log in (or register) and start syncing the form's folder.
    Setup(SetupForm),
    /// Stop passes until resumed.
    Pause,
    /// Resume passes.
    Resume,
    /// Pass now.
    SyncNow,
    /// List a directory of the folder ("" for the top).
    Browse(String),
    /// The version history of a file.
    Versions(String),
    /// Put version `version` of `path` back at its path (the next pass uploads it as new).
    Restore {
        /// Path in the folder.
        path: String,
        /// Version number.
        version: u64,
    },
    /// Download version `version` of `path` beside it.
    SaveCopy {
        /// Path in the folder.
        path: String,
        /// Version number.
        version: u64,
    },
    /// Resolve conflict `index`.
    Resolve {
        /// Index in the folder's list.
        index: usize,
        /// What to keep.
        keep: Keep,
    },
    /// Bandwidth limits, KiB/s.
    SetLimits {
        /// Upload.
        up: Option<u64>,
        /// Download.
        down: Option<u64>,
    },
    /// Start at login or not.
    SetAutostart(bool),
    /// Keep conflict losers as copies beside the path (true) or only in the version history.
    SetConflictCopies(bool),
    /// Sync another local folder (the text the user typed; `~` expands): the sync restarts on it.
    ChangeFolder(String),
    /// Use another server: logs out here and shows the setup view for the new server.
    ChangeServer(String),
    /// Save `.cairnignore`.
    SaveIgnore(String),
    /// Forget the session and show the setup view again.
    LogOut,
    /// Stop the sync this app runs, then end.
    Quit,
}

/// What the window is told.
#[derive(Debug)]
pub(crate) enum Update {
    /// No usable login or folder: show the setup view (prefilled).
    NeedsSetup(SetupForm),
    /// The setup did not work (plain words).
    SetupFailed(String),
    /// Syncing: the dashboard can show.
    Started(Started),
    /// The daemon's status.
    Status(DaemonStatus),
    /// A live event.
    Event(FeedEvent),
    /// The server answered a heartbeat with (used, quota), or did not.
    Reachability(Result<(i64, i64), String>),
    /// A directory listing.
    Listing {
        /// The directory.
        dir: String,
        /// Its entries.
        rows: Vec<FileRow>,
        /// Entries left out (over [`LISTING_ROWS_MAX`]).
        more: usize,
    },
    /// A file's versions.
    Versions {
        /// The file.
        path: String,
        /// Newest first, or why not.
        result: Result<Vec<VersionInfo>, String>,
    },
    /// The folder's recorded conflicts.
    Conflicts(Vec<ConflictRecord>),
    /// A short message.
    Toast(String),
    /// The process was asked to end (SIGTERM): close the window as if the user had.
    CloseRequested,
    /// The backend ended (after [`Command::Quit`]).
    Stopped,
}

/// What the window needs once syncing runs.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    /// The synced folder.
    pub(crate) folder: PathBuf,
    /// The server.
    pub(crate) server: String,
    /// The account.
    pub(crate) username: String,
    /// This device.
    pub(crate) device: String,
    /// A `cairn sync` process serves the folder (its pid); `None` when this app does.
    pub(crate) attached_pid: Option<u32>,
    /// `.cairnignore`'s text.
    pub(crate) ignore_text: String,
    /// Bandwidth limits, KiB/s.
    pub(crate) limits: (Option<u64>, Option<u64>),
    /// Whether the app starts at login.
    pub(crate) autostart: bool,
    /// Whether conflict losers are kept as copies (else only in the version history).
    pub(crate) conflict_copies: bool,
}

/// Starts the backend thread; returns where to send commands.
pub(crate) fn spawn(
    config_dir: PathBuf,
    updates: UnboundedSender<Update>,
) -> std::io::Result<UnboundedSender<Command>> {
    let (commands, receiver) = unbounded_channel();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-backend")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("cairn-backend".into())
        .spawn(move || {
            runtime.block_on(run(config_dir, receiver, updates.clone()));
            let _ = updates.send(Update::Stopped);
        })?;
    Ok(commands)
}

/// The sync this app runs in-process.
struct Hosted {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// The backend's state once syncing.
struct Running {
    /// What the window was told when syncing started (sent again after a refused change).
    started: Started,
    dir: PathBuf,
    session: Session,
    folder: PathBuf,
    state_dir: PathBuf,
    device: String,
    hosted: Option<Hosted>,
    updates: UnboundedSender<Update>,
    /// The state snapshot last read for listings, with its file's mtime.
    state_cache: Option<(std::time::SystemTime, Arc<State>)>,
    last_conflicts: Option<Vec<ConflictRecord>>,
}

async fn run(
    dir: PathBuf,
    mut commands: UnboundedReceiver<Command>,
    updates: UnboundedSender<Update>,
) {
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        let updates = updates.clone();
        tokio::spawn(async move {
            if term.recv().await.is_some() {
                let _ = updates.send(Update::CloseRequested);
            }
        });
    }
    loop {
        let Some(mut running) = configure(&dir, &mut commands, &updates).await else {
            return;
        };
        let quit = running.serve(&mut commands).await;
        running.shut_down().await;
        if quit {
            return;
        }
    }
}

/// Waits until the config has a login and a folder (asking the window for them), then starts
/// or attaches to the folder's sync. `None` when the window quit first.
async fn configure(
    dir: &Path,
    commands: &mut UnboundedReceiver<Command>,
    updates: &UnboundedSender<Update>,
) -> Option<Running> {
    loop {
        let config = Config::load(dir).ok();
        if let Some(config) = config.as_ref().filter(|c| c.is_logged_in())
            && let Some(folder) = config.settings.get(FOLDER_SETTING)
        {
            match Running::start(dir, config, Path::new(folder), updates.clone()).await {
                Ok(running) => return Some(running),
                Err(message) => {
                    let _ = updates.send(Update::SetupFailed(message));
                }
            }
        }
        let prefill = SetupForm {
            server: config
                .as_ref()
                .and_then(|c| c.server.clone())
                .unwrap_or_else(|| "http://127.0.0.1:8000".to_owned()),
            username: config
                .as_ref()
                .and_then(|c| c.username.clone())
                .unwrap_or_default(),
            folder: config
                .as_ref()
                .and_then(|c| c.settings.get(FOLDER_SETTING).cloned())
                .unwrap_or_else(|| "~/Cairn".to_owned()),
            ..SetupForm::default()
        };
        let _ = updates.send(Update::NeedsSetup(prefill));
        loop {
            match commands.recv().await {
                None | Some(Command::Quit) => return None,
                Some(Command::Setup(form)) => match set_up(dir, &form).await {
                    Ok(()) => break,
                    Err(message) => {
                        let _ = updates.send(Update::SetupFailed(message));
                    }
                },
                Some(_) => {}
            }
        }
    }
}

/// Registers (if asked), logs in, pins the server's certificate, creates the folder and saves
/// it all in the config.
async fn set_up(dir: &Path, form: &SetupForm) -> Result<(), String> {
    if let Some((_, problem)) = form.problems(true).first() {
        return Err(problem.clone());
    }
    let explain = |e: RestError| model::explain_login_error(e.code(), &e.to_string());
    let rest = RestClient::new(form.server.trim()).map_err(explain)?;
    if form.register {
        rest.register(&RegisterRequest {
            username: form.username.clone(),
            email: form.email.trim().to_owned(),
            password: Password(form.password.clone()),
        })
        .await
        .map_err(explain)?;
    }
    let tokens = rest
        .login(&LoginRequest {
            username: form.username.clone(),
            password: Password(form.password.clone()),
        })
        .await
        .map_err(explain)?;
    let folder = form.folder_path();
    std::fs::create_dir_all(&folder)
        .map_err(|e| format!("The folder {} cannot be created: {e}", folder.display()))?;
    let server = rest.server().to_owned();
    let username = form.username.clone();
    let folder_text = folder.display().to_string();
    Config::update(dir, move |config| {
        if config.server.as_deref() != Some(server.as_str()) {
            config.quic = None;
        }
        config.server = Some(server);
        config.username = Some(username);
        config.refresh_token = Some(tokens.refresh_token);
        config.settings.insert(FOLDER_SETTING.into(), folder_text);
    })
    .map_err(|e| e.to_string())?;
    daemon::pin_now(dir, &rest)
        .await
        .map_err(|e| format!("Logged in, but the sync endpoint is not usable: {e}"))?;
    Ok(())
}

impl Running {
    async fn start(
        dir: &Path,
        config: &Config,
        folder: &Path,
        updates: UnboundedSender<Update>,
    ) -> Result<Running, String> {
        let session = Session::new(dir, config).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(folder)
            .map_err(|e| format!("The folder {} cannot be used: {e}", folder.display()))?;
        let folder = folder
            .canonicalize()
            .map_err(|e| format!("The folder {} cannot be used: {e}", folder.display()))?;
        let state_dir = state_dir_for(&folder).map_err(|e| e.to_string())?;
        let (hosted, attached_pid) = match control::status(&state_dir).await {
            Some(status) => (None, Some(status.pid)),
            None => (Some(host(dir, config, &session, &folder).await?), None),
        };
        let started = Started {
            folder: folder.clone(),
            server: session.rest().server().to_owned(),
            username: config.username.clone().unwrap_or_default(),
            device: config.device.clone(),
            attached_pid,
            ignore_text: std::fs::read_to_string(folder.join(".cairnignore")).unwrap_or_default(),
            limits: limits_of(config),
            autostart: autostart_path().is_some_and(|p| p.exists()),
            conflict_copies: daemon::conflict_copies(config),
        };
        let _ = updates.send(Update::Started(started.clone()));
        Ok(Running {
            started,
            dir: dir.to_path_buf(),
            session,
            folder,
            state_dir,
            device: config.device.clone(),
            hosted,
            updates,
            state_cache: None,
            last_conflicts: None,
        })
    }

    fn send(&self, update: Update) {
        let _ = self.updates.send(update);
    }

    /// Answers commands until quit (true) or log-out (false).
    async fn serve(&mut self, commands: &mut UnboundedReceiver<Command>) -> bool {
        let (events_tx, mut events) = unbounded_channel();
        let feed = tokio::spawn(follow(self.state_dir.clone(), events_tx));
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        let mut heartbeat_tick = tokio::time::interval(HEARTBEAT_EVERY);
        let quit = loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Quit) => break true,
                    Some(Command::LogOut) => {
                        self.log_out().await;
                        break false;
                    }
                    Some(Command::ChangeFolder(text)) => match self.change_folder(&text) {
                        // The run loop starts the sync again, on the new folder.
                        Ok(()) => break false,
                        Err(message) => {
                            self.send(Update::Started(self.started.clone()));
                            self.send(Update::Toast(message));
                        }
                    },
                    Some(Command::ChangeServer(text)) => {
                        match cairn_client::rest::normalize_server_url(text.trim()) {
                            Ok(server) => {
                                self.log_out().await;
                                let _ = Config::update(&self.dir, |config| {
                                    config.server = Some(server);
                                    config.quic = None;
                                });
                                break false;
                            }
                            Err(e) => {
                                self.send(Update::Started(self.started.clone()));
                                self.send(Update::Toast(format!(
                                    "That is not a server address: {}",
                                    daemon::one_line(&e.to_string())
                                )));
                            }
                        }
                    }
                    Some(command) => self.handle(command).await,
                },
                Some(event) = events.recv() => {
                    let ends_pass = matches!(event, FeedEvent::Summary(_) | FeedEvent::Conflict { .. });
                    self.send(Update::Event(event));
                    if ends_pass {
                        self.refresh_conflicts(true);
                        self.heartbeat().await;
                    }
                }
                _ = status_tick.tick() => self.poll_status().await,
                _ = heartbeat_tick.tick() => self.heartbeat().await,
            }
        };
        feed.abort();
        quit
    }

    async fn poll_status(&mut self) {
        match control::status(&self.state_dir).await {
            Some(status) => self.send(Update::Status(status)),
            None => {
                // The daemon went away (a `cairn sync` that was stopped, or ours failed):
                // take over the folder.
                if self.hosted.is_none()
                    && let Ok(config) = Config::load(&self.dir)
                {
                    match host(&self.dir, &config, &self.session, &self.folder).await {
                        Ok(hosted) => {
                            self.hosted = Some(hosted);
                            self.send(Update::Toast(
                                "The other sync process stopped; this app syncs the folder now"
                                    .into(),
                            ));
                        }
                        Err(message) => self.send(Update::Toast(message)),
                    }
                }
            }
        }
        self.refresh_conflicts(false);
    }

    async fn heartbeat(&self) {
        let state = control::status(&self.state_dir)
            .await
            .map_or_else(|| "offline".to_owned(), |s| s.state);
        let outcome = self
            .session
            .heartbeat(&self.device, &state)
            .await
            .map(|beat| (beat.used_bytes, beat.quota_bytes))
            .map_err(|e| daemon::one_line(&e.to_string()));
        self.send(Update::Reachability(outcome));
    }

    /// Sends the conflicts when they changed (or always, when `force`).
    fn refresh_conflicts(&mut self, force: bool) {
        let mut list = conflicts::load(&self.state_dir)
            .ok()
            .flatten()
            .unwrap_or_default();
        if conflicts::prune_handled(&mut list) {
            let _ = conflicts::save(&self.state_dir, &list);
        }
        if force || self.last_conflicts.as_ref() != Some(&list.conflicts) {
            self.last_conflicts = Some(list.conflicts.clone());
            self.send(Update::Conflicts(list.conflicts));
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Pause => self.ask("pause").await,
            Command::Resume => self.ask("resume").await,
            Command::SyncNow => self.ask("sync").await,
            Command::Browse(dir) => {
                let listing = self.list(&dir);
                match listing {
                    Ok((rows, more)) => self.send(Update::Listing { dir, rows, more }),
                    Err(message) => self.send(Update::Toast(message)),
                }
            }
            Command::Versions(path) => {
                let result = self.versions(&path).await;
                self.send(Update::Versions { path, result });
            }
            Command::Restore { path, version } => {
                let message = match self.fetch(&path, version, &path).await {
                    Ok(()) => format!(
                        "Restored version {version} of {path}; it syncs as the newest version"
                    ),
                    Err(e) => format!("Could not restore {path}: {e}"),
                };
                self.send(Update::Toast(message));
                self.ask("sync").await;
            }
            Command::SaveCopy { path, version } => {
                let copy = model::copy_name(&path, version);
                let message = match self.fetch(&path, version, &copy).await {
                    Ok(()) => format!("Saved version {version} of {path} as {copy}"),
                    Err(e) => format!("Could not download {path}: {e}"),
                };
                self.send(Update::Toast(message));
            }
            Command::Resolve { index, keep } => {
                let mut list = conflicts::load(&self.state_dir)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let path = list.conflicts.get(index).map(|c| c.path.clone());
                let resolved = conflicts::resolve_fetching(
                    &self.session,
                    &self.state_dir,
                    &mut list,
                    index,
                    keep,
                    &self.device,
                )
                .await;
                let message = match resolved {
                    Ok(kept) => format!(
                        "Resolved {}: kept {}",
                        path.unwrap_or_default(),
                        match kept {
                            "local" => "your version",
                            "remote" => "their version",
                            "both" => "both versions",
                            _ => "the edit",
                        }
                    ),
                    Err(e) => format!("Could not resolve: {e}"),
                };
                self.send(Update::Toast(message));
                self.refresh_conflicts(true);
                self.ask("sync").await;
            }
            Command::SetLimits { up, down } => {
                let saved = Config::update(&self.dir, |config| {
                    for (key, value) in [(UPLOAD_LIMIT_SETTING, up), (DOWNLOAD_LIMIT_SETTING, down)]
                    {
                        match value {
                            Some(kib) => config.settings.insert(key.into(), kib.to_string()),
                            None => config.settings.remove(key),
                        };
                    }
                });
                if let Err(e) = saved {
                    self.send(Update::Toast(format!("Could not save the limits: {e}")));
                }
            }
            Command::SetConflictCopies(on) => {
                let saved = Config::update(&self.dir, |config| {
                    config
                        .settings
                        .insert(daemon::CONFLICT_COPIES_SETTING.into(), on.to_string());
                });
                if let Err(e) = saved {
                    self.send(Update::Toast(format!("Could not save the setting: {e}")));
                }
            }
            Command::SetAutostart(on) => {
                let outcome = set_autostart(on);
                if let Err(e) = outcome {
                    self.send(Update::Toast(format!(
                        "Could not change start at login: {e}"
                    )));
                }
            }
            Command::SaveIgnore(text) => {
                let path = self.folder.join(".cairnignore");
                let outcome = if text.trim().is_empty() {
                    std::fs::remove_file(&path).or_else(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                } else {
                    cairn_client::state::write_atomic(&path, text.as_bytes())
                        .map_err(std::io::Error::other)
                };
                self.send(Update::Toast(match outcome {
                    Ok(()) => "Saved .cairnignore; it applies from the next sync".to_owned(),
                    Err(e) => format!("Could not save .cairnignore: {e}"),
                }));
            }
            Command::Setup(_)
            | Command::LogOut
            | Command::Quit
            | Command::ChangeFolder(_)
            | Command::ChangeServer(_) => {}
        }
    }

    async fn ask(&self, request: &str) {
        if control::ask(&self.state_dir, request).await.is_none() {
            self.send(Update::Toast(
                "The sync is not answering; it restarts by itself".into(),
            ));
        }
    }

    async fn versions(&self, path: &str) -> Result<Vec<VersionInfo>, String> {
        let file = self
            .session
            .file_at(path)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{path} is not on the server yet"))?;
        Ok(self
            .session
            .versions(file.id)
            .await
            .map_err(|e| e.to_string())?
            .versions)
    }

    /// Downloads version `version` of `path` to `target` in the folder (atomically: temp file,
    /// rename), never outside it: the paths come from the server, and a parent directory may
    /// have been swapped for a link.
    async fn fetch(&self, path: &str, version: u64, target: &str) -> Result<(), String> {
        let file = self
            .session
            .file_at(path)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not on the server".to_owned())?;
        let target = cairn_client::engine::confined_creating(&self.folder, target)?;
        self.session
            .download(file.id, Some(version), &target, &mut |_, _| {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The entries of `dir` with what is known about their sync.
    fn list(&mut self, dir: &str) -> Result<(Vec<FileRow>, usize), String> {
        let state = self.state();
        let ignores = Ignores::load(&self.folder);
        let full = self.folder.join(dir);
        let entries =
            std::fs::read_dir(&full).map_err(|e| format!("Cannot list {}: {e}", full.display()))?;
        let mut rows = Vec::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(cairn_client::engine::TEMP_PREFIX) {
                continue;
            }
            let path = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            rows.push(FileRow {
                facts: facts(&state, &ignores, &path, &meta),
                name,
                path,
            });
        }
        model::sort_rows(&mut rows);
        let more = rows.len().saturating_sub(LISTING_ROWS_MAX);
        rows.truncate(LISTING_ROWS_MAX);
        Ok((rows, more))
    }

    /// The folder's sync state, re-read only when its database changed (a save lands in the
    /// write-ahead log first, so both files' times count).
    fn state(&mut self) -> Arc<State> {
        let db = self.state_dir.join("state.db");
        let modified = ["state.db", "state.db-wal"]
            .iter()
            .filter_map(|name| {
                std::fs::metadata(self.state_dir.join(name))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .max();
        if let (Some(modified), Some((at, state))) = (modified, &self.state_cache)
            && *at == modified
        {
            return Arc::clone(state);
        }
        let loaded = if db.exists() {
            StateDb::open(&self.state_dir).and_then(|(db, _)| State::load(&db))
        } else {
            Ok(State::default())
        };
        let state = Arc::new(loaded.unwrap_or_default());
        if let Some(modified) = modified {
            self.state_cache = Some((modified, Arc::clone(&state)));
        }
        state
    }

    /// Saves `text` as the folder to sync, after checking it can be used: a directory (created
    /// when missing) that is not inside the current folder or holding it.
    fn change_folder(&self, text: &str) -> Result<(), String> {
        if text.trim().is_empty() {
            return Err("Type the folder to sync".into());
        }
        let folder = model::expand_home(text.trim());
        std::fs::create_dir_all(&folder)
            .map_err(|e| format!("The folder {} cannot be used: {e}", folder.display()))?;
        let folder = folder
            .canonicalize()
            .map_err(|e| format!("The folder {} cannot be used: {e}", folder.display()))?;
        if folder == self.folder {
            return Err(format!("{} is already the synced folder", folder.display()));
        }
        if folder.starts_with(&self.folder) || self.folder.starts_with(&folder) {
            return Err(format!(
                "{} and {} contain one another; choose a folder outside the synced one",
                folder.display(),
                self.folder.display()
            ));
        }
        let text = folder.display().to_string();
        Config::update(&self.dir, |config| {
            config.settings.insert(FOLDER_SETTING.into(), text);
        })
        .map_err(|e| format!("Could not save the folder: {e}"))
    }

    async fn log_out(&mut self) {
        self.shut_down().await;
        if let Ok(config) = Config::load(&self.dir)
            && let (Some(server), Some(token)) = (&config.server, &config.refresh_token)
            && let Ok(rest) = RestClient::new(server)
        {
            let _ = rest.logout(token).await;
        }
        let _ = Config::update(&self.dir, |config| {
            config.refresh_token = None;
        });
    }

    /// Stops the sync this app runs (a `cairn sync` daemon it attached to keeps running).
    async fn shut_down(&mut self) {
        if let Some(hosted) = self.hosted.take() {
            let _ = hosted.stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(20), hosted.task).await;
        }
    }
}

/// Starts the folder's daemon in this process.
async fn host(
    dir: &Path,
    config: &Config,
    session: &Session,
    folder: &Path,
) -> Result<Hosted, String> {
    let pin = match config.quic.clone() {
        Some(pin) => pin,
        None => daemon::pin_now(dir, session.rest())
            .await
            .map_err(|e| e.to_string())?,
    };
    let session = Session::new(dir, config).map_err(|e| e.to_string())?;
    let options = DaemonOptions {
        folder: folder.to_path_buf(),
        remote: "default".into(),
        interval: None,
        allow_mass_delete: false,
    };
    let syncer = Daemon::open(config, session, pin, options, daemon::feed())
        .await
        .map_err(|e| format!("Cannot start syncing {}: {e}", folder.display()))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = syncer
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    // The daemon binds its control socket as it starts running.
    for _ in 0..100 {
        if control::status(&state_dir_for(folder).map_err(|e| e.to_string())?)
            .await
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Hosted { stop, task })
}

/// Forwards the daemon's feed, resubscribing when it goes away (a restarted daemon).
async fn follow(state_dir: PathBuf, events: UnboundedSender<FeedEvent>) {
    loop {
        if let Ok(mut subscription) = Subscription::open(&state_dir).await {
            while let Some(event) = subscription.next().await {
                if events.send(event).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What is known about one path for its status.
fn facts(state: &State, ignores: &Ignores, path: &str, meta: &std::fs::Metadata) -> PathFacts {
    use std::os::unix::fs::MetadataExt as _;
    let is_dir = meta.is_dir();
    let on_disk = (meta.len(), meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
    let base = cairn_protocol::path::RelPath::parse(path)
        .ok()
        .and_then(|rel| state.base.get(&rel).cloned());
    let synced_as = if is_dir {
        base.map(|_| (0, 0))
    } else {
        state.scan.get(path).and_then(|record| {
            let scanned = record.entry.entry();
            base.filter(|b| b.content == scanned.content)
                .map(|_| (record.size, record.mtime_ns))
        })
    };
    let dir_has_pending = is_dir && {
        let prefix = format!("{path}/");
        state
            .scan
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix))
            .any(|(p, record)| {
                cairn_protocol::path::RelPath::parse(p)
                    .ok()
                    .and_then(|rel| state.base.get(&rel))
                    .is_none_or(|b| b.content != record.entry.entry().content)
            })
    };
    PathFacts {
        ignored: ignores.is_ignored(path, is_dir),
        is_dir,
        synced_as,
        on_disk: if is_dir { (0, 0) } else { on_disk },
        dir_has_pending,
    }
}

fn limits_of(config: &Config) -> (Option<u64>, Option<u64>) {
    let (up, down) = daemon::bandwidth_limits(config);
    (up.map(|b| b / 1024), down.map(|b| b / 1024))
}

/// `$XDG_CONFIG_HOME/autostart/cairn-desktop.desktop`.
pub(crate) fn autostart_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("autostart").join("cairn-desktop.desktop"))
}

fn set_autostart(on: bool) -> Result<(), String> {
    let path = autostart_path().ok_or("no home directory")?;
    if on {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        cairn_client::state::write_atomic(&path, model::autostart_entry(&exe).as_bytes())
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        }
    }
}
