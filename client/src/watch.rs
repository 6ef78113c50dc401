//! Filesystem watching for the sync daemon (`notify`: inotify on Linux), debounced: a burst of
//! events (an editor's save, an unpacked archive) becomes one wake-up once the folder has been
//! quiet for [`QUIET_PERIOD`]. The daemon still scans on a timer as a safety net, and only on
//! the timer when watching is impossible (e.g. inotify's watch limit is reached).

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// How long the folder must be quiet before a burst of changes wakes the daemon.
pub const QUIET_PERIOD: Duration = Duration::from_millis(200);

/// The longest a continuous stream of changes delays a wake-up.
pub const BURST_MAX: Duration = Duration::from_secs(2);

/// Watches one folder, recursively.
pub struct FolderWatcher {
    _watcher: notify::RecommendedWatcher,
    events: UnboundedReceiver<()>,
    /// The burst being waited out: when its first and its latest event came.
    burst: Option<(tokio::time::Instant, tokio::time::Instant)>,
}

impl FolderWatcher {
    /// Starts watching `root` and everything under it.
    ///
    /// # Errors
    /// A one-line reason (for example the inotify watch limit), to be announced before falling
    /// back to timed scans.
    pub fn start(root: &Path) -> Result<FolderWatcher, String> {
        let (tx, events) = unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Access events (a file was read) change nothing, nor does the engine's stamp
                // (rewritten after every pass, it would wake the daemon for the next); an error
                // (an overflowed queue, a lost watch) wakes the daemon to rescan.
                let wake = match &event {
                    Ok(event) => {
                        let only_stamp =
                            !event.paths.is_empty() && event.paths.iter().all(|p| is_stamp(p));
                        !matches!(event.kind, notify::EventKind::Access(_)) && !only_stamp
                    }
                    Err(_) => true,
                };
                if wake {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| reason(&e))?;
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|e| reason(&e))?;
        Ok(FolderWatcher {
            _watcher: watcher,
            events,
            burst: None,
        })
    }

    /// Waits for a change, then for the folder to be quiet (or [`BURST_MAX`] to pass).
    /// Returns `false` when the watcher stopped.
    ///
    /// Cancel-safe: the burst being waited out is kept in `self`, so a caller that drops this
    /// future (a `select!` whose other branch won) loses no change; the next call goes on.
    pub async fn changed(&mut self) -> bool {
        loop {
            let Some((first, last)) = self.burst else {
                if self.events.recv().await.is_none() {
                    return false;
                }
                let now = tokio::time::Instant::now();
                self.burst = Some((now, now));
                continue;
            };
            let deadline = (first + BURST_MAX).min(last + QUIET_PERIOD);
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(())) => self.burst = Some((first, tokio::time::Instant::now())),
                Ok(None) => return false,
                Err(_) => {
                    self.burst = None;
                    return true;
                }
            }
        }
    }

    /// Forgets the changes seen so far. For a caller about to scan the whole folder: the scan
    /// sees every change made before it starts, so their events would only wake it for a second
    /// look at the same thing (a download's own writes, say).
    pub fn forget_pending(&mut self) {
        while self.events.try_recv().is_ok() {}
        self.burst = None;
    }
}

fn is_stamp(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(crate::engine::STAMP_FILE))
}

fn reason(err: &notify::Error) -> String {
    match &err.kind {
        notify::ErrorKind::MaxFilesWatch => {
            "the system's limit of watched directories is reached (raise fs.inotify.max_user_watches)"
                .to_owned()
        }
        _ => err.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_writes_is_one_wake_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let mut watcher = FolderWatcher::start(dir.path()).expect("watch");
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("sub/f{i}")), b"x").expect("write");
        }
        let woke = tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("a change is seen");
        assert!(woke);
        // Cancelled mid-burst (as a `select!` does), the change is still reported next time.
        std::fs::write(dir.path().join("sub/again"), b"z").expect("write");
        let cancelled = tokio::time::timeout(Duration::from_millis(100), async {
            // Long enough to take the event, too short for the quiet period.
            watcher.changed().await
        })
        .await;
        assert!(cancelled.is_err(), "still inside the quiet period");
        let woke = tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("the change survives a cancelled wait");
        assert!(woke);
        // The burst was absorbed: no second wake-up without a new change.
        let again = tokio::time::timeout(Duration::from_millis(600), watcher.changed()).await;
        assert!(again.is_err(), "one burst, one wake-up");
        // Changes made before a full scan need no wake-up after it.
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("sub/scanned{i}")), b"s").expect("write");
        }
        // inotify delivers through a thread: give it the time to pass the events on.
        tokio::time::sleep(Duration::from_millis(300)).await;
        watcher.forget_pending();
        let quiet = tokio::time::timeout(Duration::from_millis(600), watcher.changed()).await;
        assert!(quiet.is_err(), "changes before the scan were forgotten");
        std::fs::write(dir.path().join("sub/after"), b"a").expect("write");
        let woke = tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("a change after the scan is seen");
        assert!(woke);
        // A change in a directory created after the watch started is seen too.
        std::fs::create_dir(dir.path().join("new")).expect("mkdir");
        let woke = tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("the new directory is seen");
        assert!(woke);
        std::fs::write(dir.path().join("new/late.txt"), b"y").expect("write");
        let woke = tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("a change in a new directory is seen");
        assert!(woke);
        // The engine's stamp, rewritten after each pass, wakes nobody.
        for i in 0..3 {
            let stamp = dir
                .path()
                .join(format!("{}{i}x7Qz", crate::engine::STAMP_FILE));
            std::fs::write(&stamp, b"").expect("write");
            std::fs::remove_file(&stamp).expect("remove");
        }
        let quiet = tokio::time::timeout(Duration::from_millis(600), watcher.changed()).await;
        assert!(quiet.is_err(), "the stamp woke the watcher");
    }
}
