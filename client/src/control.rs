//! A sync daemon's control socket: `control.sock` in the synced folder's state dir. One request
//! line in; one JSON line out, except `subscribe`, which keeps the connection and streams the
//! daemon's [`FeedEvent`]s as JSON lines. `cairn sync status|stop` and the desktop app find
//! every daemon of a config dir by its socket, so each folder has one daemon, whoever started
//! it.
//!
//! Requests: `status`, `stop`, `pause`, `resume`, `sync` (a pass now), `subscribe`.
//!
//! The socket is bound only after the engine's lock is held, so a leftover socket file of a
//! crashed daemon can be removed safely; a socket nobody answers is such a leftover.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, broadcast};

use crate::daemon::FeedEvent;

/// The socket's file name in the state dir.
pub const SOCKET: &str = "control.sock";

/// How long a client waits for a daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Bytes of a request line read at most.
const REQUEST_LEN_MAX: u64 = 64;

/// Bytes of feed lines a subscriber's stream gathers before it writes them.
const FEED_WRITE_BYTES: usize = 256 * 1024;

/// Transfer progress of the running pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// `upload` or `download`.
    pub direction: String,
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// What a daemon tells about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The daemon's process.
    pub pid: u32,
    /// The synced folder (absolute).
    pub folder: String,
    /// The server's base URL.
    pub server: String,
    /// `starting`, `idle`, `syncing`, `out_of_sync` (the last pass left paths it could not
    /// sync, listed in `problems`; the daemon waits for a change to try them again), `paused`
    /// or `error`.
    pub state: String,
    /// The running pass's phase (scanning, pulling, uploading, downloading).
    pub phase: Option<String>,
    /// The running transfer.
    pub progress: Option<Progress>,
    /// The folder's revision after the last pass.
    pub seq: u64,
    /// Whether the last pass ended with folder and server agreeing.
    pub in_sync: bool,
    /// When the last pass ended, Unix seconds (0: none yet).
    pub last_pass_unix: u64,
    /// Why the last pass failed.
    pub last_error: Option<String>,
    /// Unresolved conflicts of the folder (filled in when asked).
    #[serde(default)]
    pub conflicts: usize,
    /// Whether the folder is watched (false: timed scans only).
    pub watching: bool,
    /// Whether syncing is paused (by `pause`, until `resume`).
    #[serde(default)]
    pub paused: bool,
    /// Whether the server's push channel is open (false: the head is polled every second).
    #[serde(default)]
    pub pushed: bool,
    /// What the last pass could not sync (the first [`crate::engine::PROBLEMS_KEPT`]).
    #[serde(default)]
    pub problems: Vec<crate::engine::PathProblem>,
    /// How many problems the last pass reported in all.
    #[serde(default)]
    pub problem_count: u64,
}

impl DaemonStatus {
    /// The status of a daemon that has not passed yet.
    pub fn starting(folder: &Path, server: &str) -> DaemonStatus {
        DaemonStatus {
            pid: std::process::id(),
            folder: folder.display().to_string(),
            server: server.to_owned(),
            state: "starting".into(),
            phase: None,
            progress: None,
            seq: 0,
            in_sync: false,
            last_pass_unix: 0,
            last_error: None,
            conflicts: 0,
            pushed: false,
            watching: false,
            paused: false,
            problems: Vec::new(),
            problem_count: 0,
        }
    }
}

/// The status a daemon shares with its socket.
pub type Shared = Arc<Mutex<DaemonStatus>>;

/// Locks the shared status (a poisoned lock still holds a usable status).
pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, DaemonStatus> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the socket's users may ask a daemon to do.
#[derive(Debug, Default)]
pub struct Commands {
    /// Stop the daemon.
    pub stop: Notify,
    /// Something changed (a `sync` or `resume` request): pass now.
    pub wake: Notify,
    paused: AtomicBool,
}

impl Commands {
    /// Whether syncing is paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pauses or resumes syncing (a resume also wakes the daemon).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if !paused {
            self.wake.notify_one();
        }
    }
}

/// A bound control socket; dropping it stops answering and removes the file.
pub struct Control {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

/// What a bound socket answers with.
#[derive(Clone)]
struct Answerer {
    status: Shared,
    commands: Arc<Commands>,
    feed: broadcast::Sender<FeedEvent>,
    state_dir: PathBuf,
}

impl Control {
    /// Binds `state_dir/control.sock` and answers on it until dropped.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn start(
        state_dir: &Path,
        status: Shared,
        commands: Arc<Commands>,
        feed: broadcast::Sender<FeedEvent>,
    ) -> std::io::Result<Control> {
        let path = state_dir.join(SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        // The owner's alone, whatever the umask: it can stop and pause the sync and streams the
        // folder's file names.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let answerer = Answerer {
            status,
            commands,
            feed,
            state_dir: state_dir.to_path_buf(),
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answerer = answerer.clone();
                tokio::spawn(async move {
                    let _ = answerer.answer(stream).await;
                });
            }
        });
        Ok(Control { path, task })
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Answerer {
    async fn answer(&self, stream: UnixStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, REQUEST_LEN_MAX));
        tokio::time::timeout(ANSWER_TIMEOUT, reader.read_line(&mut line))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let reply = match line.trim() {
            "status" => {
                let mut current = lock(&self.status).clone();
                current.conflicts = crate::conflicts::load(&self.state_dir)
                    .ok()
                    .flatten()
                    .map_or(0, |c| c.conflicts.len());
                serde_json::to_string(&current).unwrap_or_default()
            }
            "stop" => {
                self.commands.stop.notify_one();
                r#"{"stopping":true}"#.to_owned()
            }
            "pause" => {
                self.commands.set_paused(true);
                r#"{"paused":true}"#.to_owned()
            }
            "resume" => {
                self.commands.set_paused(false);
                r#"{"paused":false}"#.to_owned()
            }
            "sync" => {
                self.commands.wake.notify_one();
                r#"{"syncing":true}"#.to_owned()
            }
            "subscribe" => return self.stream_feed(write).await,
            _ => r#"{"error":"unknown request; send status, stop, pause, resume, sync or subscribe"}"#
                .to_owned(),
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\n").await?;
        write.shutdown().await
    }

    /// Streams the feed until the subscriber goes away. A subscriber too slow to keep up is
    /// told how many events it missed (and should ask for `status`).
    async fn stream_feed(
        &self,
        mut write: tokio::net::unix::OwnedWriteHalf,
    ) -> std::io::Result<()> {
        let mut feed = self.feed.subscribe();
        write.write_all(b"{\"kind\":\"subscribed\"}\n").await?;
        let push = |lines: &mut String, event: &FeedEvent| {
            lines.push_str(&serde_json::to_string(event).unwrap_or_default());
            lines.push('\n');
        };
        loop {
            // What has queued up goes in one write: a pass announces thousands of files at
            // once, and a write per line fell behind the feed.
            let mut lines = String::new();
            match feed.recv().await {
                Ok(event) => push(&mut lines, &event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    push(&mut lines, &FeedEvent::Missed { missed });
                }
                Err(broadcast::error::RecvError::Closed) => return write.shutdown().await,
            }
            let mut closed = false;
            while lines.len() < FEED_WRITE_BYTES {
                match feed.try_recv() {
                    Ok(event) => push(&mut lines, &event),
                    Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                        push(&mut lines, &FeedEvent::Missed { missed });
                    }
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Closed) => {
                        closed = true;
                        break;
                    }
                }
            }
            write.write_all(lines.as_bytes()).await?;
            if closed {
                return write.shutdown().await;
            }
        }
    }
}

/// Sends `request` to the daemon of `state_dir`; `None` when no daemon answers.
pub async fn ask(state_dir: &Path, request: &str) -> Option<serde_json::Value> {
    let path = state_dir.join(SOCKET);
    let exchange = async {
        let mut stream = UnixStream::connect(&path).await.ok()?;
        stream
            .write_all(format!("{request}\n").as_bytes())
            .await
            .ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        serde_json::from_str(&line).ok()
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// The status of the daemon of `state_dir`; `None` when none answers.
pub async fn status(state_dir: &Path) -> Option<DaemonStatus> {
    ask(state_dir, "status")
        .await
        .and_then(|v| serde_json::from_value(v).ok())
}

/// A subscription to a daemon's feed.
pub struct Subscription {
    lines: tokio::io::Lines<BufReader<UnixStream>>,
}

impl Subscription {
    /// Subscribes to the feed of the daemon of `state_dir`.
    ///
    /// # Errors
    /// No daemon answers there.
    pub async fn open(state_dir: &Path) -> std::io::Result<Subscription> {
        let mut stream =
            tokio::time::timeout(ANSWER_TIMEOUT, UnixStream::connect(state_dir.join(SOCKET)))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        stream.write_all(b"subscribe\n").await?;
        let mut lines = BufReader::new(stream).lines();
        let first = tokio::time::timeout(ANSWER_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if first.as_deref() != Some(r#"{"kind":"subscribed"}"#) {
            return Err(std::io::Error::other(
                "the daemon does not stream events (an older cairn?)",
            ));
        }
        Ok(Subscription { lines })
    }

    /// The next event; `None` when the daemon stopped.
    pub async fn next(&mut self) -> Option<FeedEvent> {
        loop {
            let line = self.lines.next_line().await.ok()??;
            if let Ok(event) = serde_json::from_str(&line) {
                return Some(event);
            }
        }
    }
}

/// The state dirs of this config dir that have a control socket.
pub fn sockets(config_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(config_dir.join("folders"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.join(SOCKET).exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The statuses of the daemons of this config dir, one per synced folder, as each answers.
pub async fn running(config_dir: &Path) -> Vec<(PathBuf, DaemonStatus)> {
    let mut found = Vec::new();
    for state_dir in sockets(config_dir) {
        if let Some(status) = status(&state_dir).await {
            found.push((state_dir, status));
        }
    }
    found.sort_by(|a, b| a.1.folder.cmp(&b.1.folder));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{FEED_PATIENCE, feed, publish};

    fn file(i: usize) -> FeedEvent {
        FeedEvent::File {
            path: format!("photos/{i:05}.jpg"),
            what: "downloaded".into(),
        }
    }

    /// A pass announcing 20,000 files at once, published as fast as the daemon's pump can:
    /// a subscriber on the socket that keeps reading gets every one, in order; one that never
    /// reads holds publishing up for at most the patience, not for every event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_events_reaches_a_reading_subscriber_whole() {
        const EVENTS: usize = 20_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let sender = feed();
        let status: Shared = Arc::new(Mutex::new(DaemonStatus::starting(dir.path(), "test")));
        let _control = Control::start(
            dir.path(),
            status,
            Arc::new(Commands::default()),
            sender.clone(),
        )
        .expect("control");
        let mut subscription = Subscription::open(dir.path()).await.expect("subscribe");
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(event) = subscription.next().await {
                match event {
                    FeedEvent::File { path, .. } => seen.push(path),
                    FeedEvent::Summary(_) => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            seen
        });
        // The socket's stream subscribes once the request is read; wait until it has.
        while sender.receiver_count() < 1 {
            tokio::task::yield_now().await;
        }
        let mut patience = FEED_PATIENCE;
        for i in 0..EVENTS {
            publish(&sender, file(i), &mut patience).await;
        }
        publish(
            &sender,
            FeedEvent::Summary(crate::daemon::PassReport::default()),
            &mut patience,
        )
        .await;
        let seen = reader.await.expect("reader");
        assert_eq!(seen.len(), EVENTS, "no event missed");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order");

        let _stalled = sender.subscribe();
        let started = std::time::Instant::now();
        let mut patience = FEED_PATIENCE;
        for i in 0..EVENTS {
            publish(&sender, file(i), &mut patience).await;
        }
        let took = started.elapsed();
        assert!(
            took >= FEED_PATIENCE && took < FEED_PATIENCE * 3,
            "a stalled subscriber held publishing for {took:?}"
        );
    }
}
