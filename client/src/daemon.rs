//! The sync daemon: one folder kept in sync with one server folder until stopped. `cairn sync
//! start` and the desktop app both run this loop.
//!
//! A pass runs whenever the folder changes (watched with `notify`, debounced), whenever the
//! server's head moves (announced over the server's WebSocket, see [`crate::push`]; while that
//! is down, checked every second, one small round trip, and once after it opens), when asked
//! over the control socket (`sync`, `resume`), and every `interval` as a safety net. A pass that
//! moved something is followed at once by a confirming pass. A failed pass is reported, the
//! connection renewed, and the next trigger tries again. While paused, no pass runs and the
//! server is not polled.
//!
//! What happens is published as [`FeedEvent`]s on a broadcast channel: to the daemon's owner
//! and to every control-socket subscriber alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::wire::ErrorCode;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::config::{Config, ConfigError, QuicPin, state_dir_for};
use crate::control::{Commands, Control, DaemonStatus, Progress, Shared, lock};
use crate::engine::{Engine, EngineOptions, Event, PassSummary, SyncError};
use crate::remote::{Remote, RemoteError, Trust};
use crate::rest::{RestClient, RestError, Session, quic_addr_for};
use crate::watch::FolderWatcher;

/// Between two head checks while the push channel is up (it announces every head change; the
/// check only covers an announcement lost on the way).
pub const HEAD_POLL_PUSHED: Duration = Duration::from_secs(30);

/// Seconds between safety-net scans while the folder is watched.
pub const SAFETY_SCAN: Duration = Duration::from_secs(600);

/// Seconds between scans when the folder cannot be watched.
pub const FALLBACK_SCAN: Duration = Duration::from_secs(5);

/// Events a subscriber may fall behind by before it is told it missed some.
const FEED_CAPACITY: usize = 4096;

/// How long publishing waits in all for subscribers that fell behind, before it lets the
/// oldest events go (see [`publish`]); refilled once they catch up.
pub const FEED_PATIENCE: Duration = Duration::from_secs(2);

/// Publishes `event` on a feed. A full feed would push its oldest event out from under a
/// subscriber still reading it, so publishing first waits for the subscribers to catch up,
/// drawing on `patience`: a pass announcing thousands of files reaches every subscriber that
/// keeps reading, and one that stopped reading costs at most [`FEED_PATIENCE`] until the
/// feed drains again (it is then told how many events it missed).
pub async fn publish(
    feed: &broadcast::Sender<FeedEvent>,
    event: FeedEvent,
    patience: &mut Duration,
) {
    if feed.len() < FEED_CAPACITY / 2 {
        *patience = FEED_PATIENCE;
    }
    while feed.len() >= FEED_CAPACITY && !patience.is_zero() {
        let waited = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(1).min(*patience)).await;
        *patience = patience.saturating_sub(waited.elapsed());
    }
    let _ = feed.send(event);
}

/// What a daemon publishes. As JSON (`kind` plus fields) it is the line format of
/// `cairn sync start --json` and of the control socket's `subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedEvent {
    /// A pass's phase started (scanning, pulling, uploading, downloading, ...).
    Phase {
        /// The phase.
        phase: String,
    },
    /// Bytes moved so far in this pass.
    Progress {
        /// `upload` or `download`.
        direction: String,
        /// Done.
        done: u64,
        /// Total.
        total: u64,
    },
    /// A file was uploaded, downloaded, deleted or renamed.
    File {
        /// The path, relative to the folder.
        path: String,
        /// `uploaded`, `downloaded`, `deleted locally`, `deleted remotely`, `renamed`.
        what: String,
    },
    /// Both sides changed a path; the other content was kept at `copy` (if a copy was made).
    Conflict {
        /// The path.
        path: String,
        /// Where the other content was kept.
        copy: Option<String>,
        /// Why.
        reason: String,
    },
    /// Names that collide on case-insensitive or normalising filesystems.
    Collision {
        /// The colliding paths.
        paths: Vec<String>,
    },
    /// A path that could not be synced this pass (retried next pass).
    Problem {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A pass that moved something ended.
    Summary(PassReport),
    /// Something the user should know that is not about one path (a failed pass, no watching).
    Warning {
        /// One line.
        message: String,
    },
    /// The subscriber fell behind and missed this many events.
    Missed {
        /// How many.
        missed: u64,
    },
}

impl From<Event> for FeedEvent {
    fn from(event: Event) -> FeedEvent {
        match event {
            Event::Phase(phase) => FeedEvent::Phase {
                phase: phase.to_owned(),
            },
            Event::Progress {
                direction,
                done,
                total,
            } => FeedEvent::Progress {
                direction: direction.to_owned(),
                done,
                total,
            },
            Event::File { path, what } => FeedEvent::File {
                path,
                what: what.to_owned(),
            },
            Event::Conflict { path, copy, reason } => FeedEvent::Conflict { path, copy, reason },
            Event::Collision { paths } => FeedEvent::Collision { paths },
            Event::Problem { path, message } => FeedEvent::Problem { path, message },
            Event::Warning { message } => FeedEvent::Warning { message },
        }
    }
}

/// A pass's figures, as published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassReport {
    /// The folder's revision after the pass.
    pub seq: u64,
    /// Whether folder and server agreed at the end.
    pub in_sync: bool,
    /// Files uploaded.
    pub uploaded: u64,
    /// Files downloaded.
    pub downloaded: u64,
    /// Paths deleted locally.
    pub deleted_local: u64,
    /// Paths deleted on the server.
    pub deleted_remote: u64,
    /// Conflicts found.
    pub conflicts: u64,
    /// Paths left for the next pass.
    pub problems: u64,
    /// Blocks sent.
    pub blocks_up: u64,
    /// Bytes of blocks sent.
    pub bytes_up: u64,
    /// Blocks received.
    pub blocks_down: u64,
    /// Bytes of blocks received.
    pub bytes_down: u64,
}

impl From<&PassSummary> for PassReport {
    fn from(s: &PassSummary) -> PassReport {
        PassReport {
            seq: s.seq,
            in_sync: s.in_sync,
            uploaded: s.uploaded,
            downloaded: s.downloaded,
            deleted_local: s.deleted_local,
            deleted_remote: s.deleted_remote,
            conflicts: s.conflicts,
            problems: s.problems,
            blocks_up: s.blocks_up,
            bytes_up: s.bytes_up,
            blocks_down: s.blocks_down,
            bytes_down: s.bytes_down,
        }
    }
}

/// A new feed for a daemon; subscribe before [`Daemon::open`] to see everything.
pub fn feed() -> broadcast::Sender<FeedEvent> {
    broadcast::channel(FEED_CAPACITY).0
}

/// Why a daemon could not start or a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The sync engine.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The REST API (login, tokens, folders).
    #[error(transparent)]
    Rest(#[from] RestError),
    /// The QUIC connection.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The config dir.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The folder or the daemon's own plumbing.
    #[error("{0}")]
    Local(String),
}

/// What to sync, and how.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The local folder (any form; it is made canonical).
    pub folder: PathBuf,
    /// The server-side folder.
    pub remote: String,
    /// Between safety-net scans (default [`SAFETY_SCAN`], or [`FALLBACK_SCAN`] unwatched).
    pub interval: Option<Duration>,
    /// Let a pass delete more than half of the folder's files.
    pub allow_mass_delete: bool,
}

/// Trust on first use: fetches the server's certificate fingerprint and saves it in the config
/// of `config_dir`. The caller should tell the user it pinned it.
///
/// # Errors
/// The server cannot be asked, or the config not saved.
pub async fn pin_now(config_dir: &Path, rest: &RestClient) -> Result<QuicPin, DaemonError> {
    let info = rest.sync_info().await?;
    let pin = QuicPin {
        addr: quic_addr_for(rest.server(), &info),
        fingerprint: info.fingerprint,
    };
    let saved = pin.clone();
    Config::update(config_dir, move |c| c.quic = Some(saved))?;
    Ok(pin)
}

/// Opens a QUIC connection to the pinned endpoint, authenticated as the session's user, for
/// server folder `folder`.
///
/// # Errors
/// The endpoint does not resolve or answer, the certificate is not the pinned one, the session
/// has lapsed.
pub async fn connect(
    session: &Session,
    pin: &QuicPin,
    device: &str,
    folder: &str,
) -> Result<Remote, DaemonError> {
    let addr = tokio::net::lookup_host(&pin.addr)
        .await
        .map_err(|e| DaemonError::Local(format!("resolving the sync endpoint {}: {e}", pin.addr)))?
        .next()
        .ok_or_else(|| DaemonError::Local(format!("{} resolves to no address", pin.addr)))?;
    let host = pin.addr.rsplit_once(':').map_or("localhost", |(h, _)| h);
    let token = session.access_token().await?;
    let trust = Trust::Pinned(pin.fingerprint.clone());
    Ok(Remote::connect(addr, host, &trust, &token.0, device, folder).await?)
}

/// A folder's sync: its engine, connection and published status.
pub struct Daemon {
    engine: Engine,
    remote: Remote,
    session: Arc<Session>,
    pin: QuicPin,
    device: String,
    remote_name: String,
    folder: PathBuf,
    state_dir: PathBuf,
    interval: Option<Duration>,
    shared: Shared,
    commands: Arc<Commands>,
    feed: broadcast::Sender<FeedEvent>,
    own: tokio::sync::mpsc::UnboundedSender<FeedEvent>,
    pump: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Takes the folder's engine lock, creates the server folder if needed and connects.
    ///
    /// # Errors
    /// The folder is unusable or synced by another process, the server cannot be reached.
    pub async fn open(
        config: &Config,
        session: Session,
        pin: QuicPin,
        options: DaemonOptions,
        feed: broadcast::Sender<FeedEvent>,
    ) -> Result<Daemon, DaemonError> {
        let folder = options.folder.canonicalize().map_err(|e| {
            DaemonError::Local(format!(
                "the folder '{}' cannot be used: {e}",
                options.folder.display()
            ))
        })?;
        // A folder that moved takes its state along (see `binding`).
        let moved_from = crate::binding::adopt_moved(&crate::config::config_dir()?, &folder)?;
        let state_dir = state_dir_for(&folder)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut engine = Engine::open(
            EngineOptions {
                root: folder.clone(),
                state_dir: state_dir.clone(),
                device: config.device.clone(),
                allow_mass_delete: options.allow_mass_delete,
            },
            tx,
        )?;
        let shared: Shared = Arc::new(std::sync::Mutex::new(DaemonStatus::starting(
            &folder,
            session.rest().server(),
        )));
        // The daemon's own events (summaries, warnings) go through the same task as the
        // engine's, engine first: a pass's file events are queued before its summary, so they
        // are published before it.
        let (own, mut own_rx) = tokio::sync::mpsc::unbounded_channel::<FeedEvent>();
        let pump = {
            let shared = Arc::clone(&shared);
            let feed = feed.clone();
            tokio::spawn(async move {
                let mut patience = FEED_PATIENCE;
                loop {
                    let event = tokio::select! {
                        biased;
                        Some(event) = rx.recv() => {
                            track(&shared, &event);
                            FeedEvent::from(event)
                        }
                        Some(event) = own_rx.recv() => event,
                        else => return,
                    };
                    publish(&feed, event, &mut patience).await;
                }
            })
        };
        if let Some(old) = moved_from {
            let _ = own.send(FeedEvent::Warning {
                message: format!(
                    "'{}' was synced at '{}' before; its sync state moved with it",
                    folder.display(),
                    old.display()
                ),
            });
        }
        let server_folder = session.ensure_folder(&options.remote).await?;
        engine.bind(&server_folder.uid)?;
        let remote = connect(&session, &pin, &config.device, &options.remote).await?;
        Ok(Daemon {
            engine,
            remote,
            session: Arc::new(session),
            pin,
            device: config.device.clone(),
            remote_name: options.remote,
            folder,
            state_dir,
            interval: options.interval,
            shared,
            commands: Arc::new(Commands::default()),
            feed,
            own,
            pump,
        })
    }

    /// The synced folder (canonical).
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// The folder's state dir (where its control socket is bound while [`Daemon::run`] runs).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The status the daemon publishes.
    pub fn status(&self) -> Shared {
        Arc::clone(&self.shared)
    }

    /// Stop, pause, resume and wake the daemon from outside.
    pub fn commands(&self) -> Arc<Commands> {
        Arc::clone(&self.commands)
    }

    /// One pass, renewing the token or the connection once if they lapsed. The bandwidth
    /// limits are read from the config first, so a changed setting applies from the next pass.
    ///
    /// # Errors
    /// The pass failed.
    pub async fn pass(&mut self) -> Result<PassSummary, DaemonError> {
        if let Ok(config) = crate::config::config_dir().and_then(|dir| Config::load(&dir)) {
            let (up, down) = bandwidth_limits(&config);
            self.remote.set_limits(up, down);
            self.engine.set_conflict_copies(conflict_copies(&config));
        }
        match self.engine.pass(&self.remote).await {
            Err(SyncError::Remote(err)) if err.code() == Some(ErrorCode::Unauthorized) => {
                self.session.invalidate().await;
                let token = self.session.access_token().await?;
                self.remote.hello(&token.0, &self.device).await?;
            }
            Err(SyncError::Remote(
                err @ (RemoteError::Stream(_)
                | RemoteError::Connect { .. }
                | RemoteError::Stalled { .. }),
            )) => {
                self.warn(format!(
                    "the connection to the server was lost ({}); reconnecting",
                    one_line(&err.to_string())
                ));
                self.reconnect().await?;
            }
            other => return Ok(other?),
        }
        Ok(self.engine.pass(&self.remote).await?)
    }

    async fn reconnect(&mut self) -> Result<(), DaemonError> {
        let remote = connect(&self.session, &self.pin, &self.device, &self.remote_name).await?;
        if let Ok(config) = crate::config::config_dir().and_then(|dir| Config::load(&dir)) {
            let (up, down) = bandwidth_limits(&config);
            remote.set_limits(up, down);
        }
        self.remote.close();
        self.remote = remote;
        Ok(())
    }

    fn warn(&self, message: String) {
        let _ = self.own.send(FeedEvent::Warning { message });
    }

    /// Keeps the folder in sync until `stop` completes or a `stop` request arrives on the
    /// control socket (bound here; a daemon that cannot bind it still syncs, and says so).
    ///
    /// # Errors
    /// Only a failure to start; failed passes are published and retried.
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let control = match Control::start(
            &self.state_dir,
            Arc::clone(&self.shared),
            Arc::clone(&self.commands),
            self.feed.clone(),
        ) {
            Ok(control) => Some(control),
            Err(err) => {
                self.warn(format!(
                    "no control socket in {} ({err}); `cairn sync status|stop` and the desktop app will not see this sync",
                    self.state_dir.display()
                ));
                None
            }
        };
        let commands = Arc::clone(&self.commands);
        let mut stop = std::pin::pin!(async move {
            tokio::select! {
                () = stop => {}
                () = commands.stop.notified() => {}
            }
        });
        self.serve(&mut stop).await;
        drop(control);
        self.remote.close();
        let Daemon {
            engine, pump, own, ..
        } = self;
        drop(engine);
        drop(own);
        let _ = pump.await;
        Ok(())
    }

    async fn serve(&mut self, stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>) {
        let mut watcher = match FolderWatcher::start(&self.folder) {
            Ok(watcher) => Some(watcher),
            Err(reason) => {
                self.warn(format!(
                    "cannot watch {} for changes ({reason}); scanning every {} s instead",
                    self.folder.display(),
                    self.interval.unwrap_or(FALLBACK_SCAN).as_secs()
                ));
                None
            }
        };
        lock(&self.shared).watching = watcher.is_some();
        let interval = self
            .interval
            .unwrap_or(if watcher.is_some() {
                SAFETY_SCAN
            } else {
                FALLBACK_SCAN
            })
            .max(Duration::from_secs(1));
        let mut push = crate::push::Push::start(
            Arc::clone(&self.session),
            self.remote_name.clone(),
            crate::push::client_id(&self.device),
        );
        let mut last_seq = None;
        let mut last_poll = tokio::time::Instant::now();
        // The socket openings the head was checked after (see `Push::opens`).
        let mut polled_opens = 0;
        loop {
            if self.commands.paused() {
                lock(&self.shared).state = "paused".into();
                lock(&self.shared).paused = true;
                tokio::select! {
                    () = &mut *stop => return,
                    () = self.commands.wake.notified() => continue,
                }
            }
            {
                let mut status = lock(&self.shared);
                status.paused = false;
                status.state = "syncing".into();
            }
            // The pass scans the whole folder first: what the watcher saw so far (this daemon's
            // own downloads, mostly) is in that scan, and would only wake it for another.
            if let Some(watcher) = watcher.as_mut() {
                watcher.forget_pending();
            }
            let outcome = self.pass().await;
            let worked = self.record(&outcome);
            match outcome {
                Ok(summary) => {
                    last_seq = Some(summary.seq);
                    if worked {
                        let _ = self
                            .own
                            .send(FeedEvent::Summary(PassReport::from(&summary)));
                    }
                    // A pass that moved something ends before it can see the result agree: the
                    // next pass confirms it (or finds what changed meanwhile) at once. A pass
                    // that could not finish some paths waits for a trigger instead.
                    if worked && !summary.in_sync {
                        continue;
                    }
                }
                Err(err) => {
                    self.warn(format!(
                        "sync pass failed: {}; retrying",
                        one_line(&err.to_string())
                    ));
                    if self.reconnect().await.is_err() {
                        // The next pass tries again.
                    }
                }
            }
            // Wait for a local change, a moved head (pushed, or one round trip a second while the
            // push channel is down), a request, the safety-net interval, or a stop.
            let deadline = tokio::time::Instant::now() + interval;
            loop {
                tokio::select! {
                    () = &mut *stop => return,
                    () = self.commands.wake.notified() => break,
                    () = push.moved_past(last_seq), if !self.commands.paused() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    changed = local_change(&mut watcher) => {
                        if changed {
                            break;
                        }
                        self.warn("the folder watcher stopped; scanning on the interval only".into());
                        watcher = None;
                    }
                }
                if self.commands.paused() {
                    break;
                }
                lock(&self.shared).pushed = push.connected();
                if push.connected()
                    && push.opens() == polled_opens
                    && last_poll.elapsed() < HEAD_POLL_PUSHED
                {
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    continue;
                }
                polled_opens = push.opens();
                last_poll = tokio::time::Instant::now();
                match self.remote.head().await {
                    // Someone committed since this daemon's last pass.
                    Ok((seq, _)) if Some(seq) != last_seq => break,
                    Ok(_) => {}
                    // The connection or the session lapsed: the pass reconnects.
                    Err(_) => break,
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }

    /// Puts a pass's outcome into the shared status; returns whether the pass moved something.
    fn record(&self, outcome: &Result<PassSummary, DaemonError>) -> bool {
        let mut status = lock(&self.shared);
        status.phase = None;
        status.progress = None;
        status.last_pass_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match outcome {
            Ok(summary) => {
                let (state, worked) = state_after(summary);
                status.state = state.into();
                status.seq = summary.seq;
                status.in_sync = summary.in_sync;
                status.last_error = None;
                status.problems.clone_from(&summary.problem_paths);
                status.problem_count = summary.problem_count;
                worked
            }
            Err(err) => {
                status.state = "error".into();
                status.last_error = Some(one_line(&err.to_string()));
                false
            }
        }
    }
}

/// The setting holding the upload limit, KiB/s (absent or 0: unlimited).
pub const UPLOAD_LIMIT_SETTING: &str = "upload_limit_kib";

/// The setting holding the download limit, KiB/s (absent or 0: unlimited).
pub const DOWNLOAD_LIMIT_SETTING: &str = "download_limit_kib";

/// The bandwidth limits a config asks for, bytes per second (up, down). A value that is not a
/// whole number of KiB/s is ignored (unlimited) rather than guessed at.
pub fn bandwidth_limits(config: &Config) -> (Option<u64>, Option<u64>) {
    let limit = |key: &str| {
        config
            .settings
            .get(key)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&kib| kib > 0)
            .map(|kib| kib.saturating_mul(1024))
    };
    (limit(UPLOAD_LIMIT_SETTING), limit(DOWNLOAD_LIMIT_SETTING))
}

/// The setting that turns conflict copies off (`false`, `off`, `no` or `0`); on otherwise.
pub const CONFLICT_COPIES_SETTING: &str = "conflict_copies";

/// Whether a config asks for conflict copies (the default) or for losers kept only in the
/// version history.
pub fn conflict_copies(config: &Config) -> bool {
    !config
        .settings
        .get(CONFLICT_COPIES_SETTING)
        .is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "false" | "off" | "no" | "0"
            )
        })
}

/// The state a pass leaves the daemon in, and whether it moved something.
///
/// A pass that moved something is followed by another at once (see [`Daemon::run`]); one that
/// moved nothing and left paths it could not sync waits for a change: the folder is then
/// `out_of_sync` (its problems say why), not `syncing`. (A pass whose only work the counts
/// leave out, a rename or a new directory, is still `syncing` until the next pass confirms it.)
fn state_after(summary: &PassSummary) -> (&'static str, bool) {
    let worked = summary.uploaded
        + summary.downloaded
        + summary.deleted_local
        + summary.deleted_remote
        + summary.conflicts
        > 0;
    let state = if summary.in_sync {
        "idle"
    } else if !worked && (summary.problems > 0 || summary.problem_count > 0) {
        "out_of_sync"
    } else {
        "syncing"
    };
    (state, worked)
}

/// Keeps the shared status's phase and progress up to date from the engine's events.
fn track(shared: &Shared, event: &Event) {
    match event {
        Event::Phase(phase) => {
            let mut status = lock(shared);
            status.phase = Some((*phase).to_owned());
            status.progress = None;
        }
        Event::Progress {
            direction,
            done,
            total,
        } => {
            lock(shared).progress = Some(Progress {
                direction: (*direction).to_owned(),
                done: *done,
                total: *total,
            });
        }
        _ => {}
    }
}

/// Waits for a debounced change of the watched folder (forever when it is not watched).
async fn local_change(watcher: &mut Option<FolderWatcher>) -> bool {
    match watcher {
        Some(watcher) => watcher.changed().await,
        None => std::future::pending().await,
    }
}

/// `text` on one line (newlines and runs of spaces folded).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_that_moved_nothing_and_disagrees_is_out_of_sync_not_syncing() {
        let stuck = PassSummary {
            in_sync: false,
            problems: 1,
            ..PassSummary::default()
        };
        assert_eq!(state_after(&stuck), ("out_of_sync", false));
        // Not in sync with nothing counted and no problem (a rename committed): syncing.
        let renamed = PassSummary {
            problems: 0,
            ..stuck.clone()
        };
        assert_eq!(state_after(&renamed), ("syncing", false));
        let moving = PassSummary {
            downloaded: 3,
            ..stuck.clone()
        };
        assert_eq!(state_after(&moving), ("syncing", true));
        let done = PassSummary {
            in_sync: true,
            ..moving
        };
        assert_eq!(state_after(&done), ("idle", true));
        assert_eq!(
            state_after(&PassSummary {
                in_sync: true,
                ..PassSummary::default()
            }),
            ("idle", false)
        );
    }

    #[test]
    fn feed_events_keep_the_cli_json_shapes() {
        let file = FeedEvent::File {
            path: "a/b.txt".into(),
            what: "uploaded".into(),
        };
        assert_eq!(
            serde_json::to_value(&file).expect("json"),
            serde_json::json!({"kind": "file", "path": "a/b.txt", "what": "uploaded"})
        );
        let summary = FeedEvent::Summary(PassReport {
            seq: 7,
            in_sync: true,
            uploaded: 1,
            ..PassReport::default()
        });
        let value = serde_json::to_value(&summary).expect("json");
        assert_eq!(value["kind"], "summary");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["uploaded"], 1);
        let back: FeedEvent = serde_json::from_value(value).expect("parse");
        assert_eq!(back, summary);
    }

    #[test]
    fn bandwidth_limits_come_from_settings_in_kib() {
        let mut config = Config::new_device();
        assert_eq!(bandwidth_limits(&config), (None, None));
        config
            .settings
            .insert(UPLOAD_LIMIT_SETTING.into(), "512".into());
        config
            .settings
            .insert(DOWNLOAD_LIMIT_SETTING.into(), "0".into());
        assert_eq!(bandwidth_limits(&config), (Some(512 * 1024), None));
        config
            .settings
            .insert(DOWNLOAD_LIMIT_SETTING.into(), "fast".into());
        assert_eq!(bandwidth_limits(&config), (Some(512 * 1024), None));
    }

    #[test]
    fn conflict_copies_are_on_unless_turned_off() {
        let mut config = Config::new_device();
        assert!(conflict_copies(&config));
        for (value, on) in [
            ("false", false),
            ("Off", false),
            ("0", false),
            ("true", true),
        ] {
            config
                .settings
                .insert(CONFLICT_COPIES_SETTING.into(), value.into());
            assert_eq!(conflict_copies(&config), on, "{value}");
        }
    }

    #[test]
    fn one_line_folds_whitespace() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
