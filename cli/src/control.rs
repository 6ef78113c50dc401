//! The sync daemon's control socket: `control.sock` in the synced folder's state dir. One line in
//! (`status` or `stop`), one JSON line out. `cairn sync status` and `cairn sync stop` find every
//! daemon of a config dir by its socket, so each folder has its own daemon and status.
//!
//! The socket is bound only after the engine's lock is held, so a leftover socket file of a
//! crashed daemon can be removed safely; a socket nobody answers is such a leftover.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

/// The socket's file name in the state dir.
const SOCKET: &str = "control.sock";

/// How long a client waits for a daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Bytes of a request line read at most.
const REQUEST_LEN_MAX: u64 = 64;

/// Transfer progress of the running pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub(crate) direction: String,
    pub(crate) done: u64,
    pub(crate) total: u64,
}

/// What `cairn sync status` shows of one daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DaemonStatus {
    pub(crate) pid: u32,
    pub(crate) folder: String,
    pub(crate) server: String,
    /// `starting`, `idle`, `syncing` or `error`.
    pub(crate) state: String,
    /// The running pass's phase (scanning, pulling, uploading, downloading).
    pub(crate) phase: Option<String>,
    pub(crate) progress: Option<Progress>,
    pub(crate) seq: u64,
    pub(crate) in_sync: bool,
    pub(crate) last_pass_unix: u64,
    pub(crate) last_error: Option<String>,
    /// Unresolved conflicts of the folder (filled in when asked).
    #[serde(default)]
    pub(crate) conflicts: usize,
    /// Whether the folder is watched (false: timed scans only).
    pub(crate) watching: bool,
}

/// The status a daemon shares with its socket.
pub(crate) type Shared = Arc<Mutex<DaemonStatus>>;

/// Locks the shared status (a poisoned lock still holds a usable status).
pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, DaemonStatus> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A bound control socket; dropping it stops answering and removes the file.
pub(crate) struct Control {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Control {
    /// Binds `state_dir/control.sock` and answers on it: `status` with the shared status (and
    /// the folder's conflict count), `stop` by notifying `stop`.
    pub(crate) fn start(
        state_dir: &Path,
        status: Shared,
        stop: Arc<Notify>,
    ) -> std::io::Result<Control> {
        let path = state_dir.join(SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let conflicts_dir = state_dir.to_path_buf();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let status = Arc::clone(&status);
                let stop = Arc::clone(&stop);
                let conflicts_dir = conflicts_dir.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, &status, &stop, &conflicts_dir).await;
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

async fn answer(
    stream: UnixStream,
    status: &Shared,
    stop: &Notify,
    state_dir: &Path,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, REQUEST_LEN_MAX));
    tokio::time::timeout(ANSWER_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let reply = match line.trim() {
        "status" => {
            let mut current = lock(status).clone();
            current.conflicts = cairn_client::conflicts::load(state_dir)
                .ok()
                .flatten()
                .map_or(0, |c| c.conflicts.len());
            serde_json::to_string(&current).unwrap_or_default()
        }
        "stop" => {
            stop.notify_one();
            r#"{"stopping":true}"#.to_owned()
        }
        _ => r#"{"error":"unknown request; send status or stop"}"#.to_owned(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// Sends `request` to the daemon of `state_dir`; `None` when no daemon answers.
pub(crate) async fn ask(state_dir: &Path, request: &str) -> Option<serde_json::Value> {
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

/// The state dirs of this config dir that have a control socket.
pub(crate) fn sockets(config_dir: &Path) -> Vec<PathBuf> {
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
