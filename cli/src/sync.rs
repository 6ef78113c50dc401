//! `cairn sync start|status|stop`: the sync daemon's commands.
//!
//! `start` runs the engine of `cairn-client` in the foreground: with `--once`, passes until the
//! folder and the server agree (exit 0) or a pass cannot get there; without it, a pass whenever
//! the folder changes (watched with `notify`, debounced), whenever the server's head moves
//! (checked every second, one small round trip), and every `--interval` seconds as a safety
//! net, until `cairn sync stop` or a signal. Events go to
//! stderr as lines (or to stdout as JSON lines with `--json`). A running daemon answers `status`
//! and `stop` on the control socket in its folder's state dir (see `control`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_client::config::{Config, QuicPin, config_dir};
use cairn_client::control::{self, DaemonStatus};
use cairn_client::daemon::{self, Daemon, DaemonError, DaemonOptions, FeedEvent, PassReport};
use cairn_client::engine::PassSummary;
use cairn_client::remote::Remote;
use cairn_client::rest::{RestClient, Session, normalize_server_url};
use clap::Args;

use crate::output::{fail, human_bytes, one_line, warn};

/// Passes `--once` tries before it gives up on agreeing with the server.
const ONCE_PASSES_MAX: u32 = 5;

/// `cairn sync start`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SyncStartArgs {
    /// Server base URL, e.g. http://127.0.0.1:8000 [default: the one saved at login]
    #[arg(long, value_name = "URL")]
    pub(crate) server: Option<String>,
    /// The local folder to keep in sync
    #[arg(long, value_name = "DIR")]
    pub(crate) folder: PathBuf,
    /// The account to sync as [default: the one logged in]
    #[arg(long, value_name = "U")]
    pub(crate) username: Option<String>,
    /// The server-side folder to sync with
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub(crate) remote: String,
    /// Do one full sync pass, then exit (0 only when the folder and the server agree)
    #[arg(long)]
    pub(crate) once: bool,
    /// Seconds between full scans for local changes, a safety net beside filesystem watching
    /// [default: 600, or 5 when the folder cannot be watched]
    #[arg(long, value_name = "SECONDS")]
    pub(crate) interval: Option<u64>,
    /// Let a pass delete more than half of the folder's files (otherwise it stops and asks)
    #[arg(long)]
    pub(crate) allow_mass_delete: bool,
}

/// Runs `cairn sync start`. Called outside any async runtime: it builds its own.
///
/// # Errors
/// Not logged in, the folder or server unusable, a pass that failed (with `--once`).
pub(crate) fn start(args: &SyncStartArgs, json: bool, quiet: bool) -> anyhow::Result<()> {
    let dir = config_dir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args, json, quiet, &dir))
}

async fn run(args: &SyncStartArgs, json: bool, quiet: bool, dir: &Path) -> anyhow::Result<()> {
    let config = Config::load(dir)?;
    let logged_in = config
        .server
        .as_deref()
        .and_then(|s| normalize_server_url(s).ok());
    if let Some(server) = &args.server {
        let wanted = normalize_server_url(server)?;
        if logged_in.as_deref() != Some(wanted.as_str()) {
            return Err(fail(
                "not_logged_in",
                format!(
                    "not logged in to {wanted}; run `cairn user login --server {wanted} --username U` first"
                ),
            ));
        }
    }
    if let (Some(wanted), Some(current)) = (&args.username, &config.username)
        && wanted != current
    {
        return Err(fail(
            "not_logged_in",
            format!(
                "logged in as '{current}', not '{wanted}'; run `cairn user login --username {wanted}`"
            ),
        ));
    }
    let session = Session::new(dir, &config)?;
    let pin = match config.quic.clone() {
        Some(pin) => pin,
        None => pin_now(dir, session.rest()).await?,
    };
    let feed = daemon::feed();
    let mut events = feed.subscribe();
    let printer = tokio::spawn(async move {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        loop {
            // Whatever has queued up is printed with one write per stream: a pass announces
            // thousands of files at once, and a line per write fell behind the feed.
            let mut lines = Lines::default();
            match events.recv().await {
                Ok(event) => lines.push(&event, json, quiet),
                Err(RecvError::Lagged(missed)) => {
                    lines.push(&FeedEvent::Missed { missed }, json, quiet)
                }
                Err(RecvError::Closed) => return,
            }
            let mut closed = false;
            while lines.len() < PRINT_BATCH_BYTES {
                match events.try_recv() {
                    Ok(event) => lines.push(&event, json, quiet),
                    Err(TryRecvError::Lagged(missed)) => {
                        lines.push(&FeedEvent::Missed { missed }, json, quiet);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        closed = true;
                        break;
                    }
                }
            }
            lines.write();
            if closed {
                return;
            }
        }
    });
    let options = DaemonOptions {
        folder: args.folder.clone(),
        remote: args.remote.clone(),
        interval: args.interval.map(Duration::from_secs),
        allow_mass_delete: args.allow_mass_delete,
    };
    let result = match Daemon::open(&config, session, pin, options, feed.clone()).await {
        Err(err) => Err(daemon_error(err)),
        Ok(mut syncer) if args.once => {
            let result = once(&mut syncer, json, quiet).await;
            drop(syncer);
            result
        }
        Ok(syncer) => {
            // Registered before the first pass, so a stop during it is not the default (fatal)
            // action.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let stop = async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            syncer.run(stop).await.map_err(daemon_error)
        }
    };
    drop(feed);
    let _ = printer.await;
    result
}

/// A daemon's error as the CLI reports it (keeping the engine's and REST client's errors in
/// the chain, where the exit code and `--json` error code are read from).
pub(crate) fn daemon_error(err: DaemonError) -> anyhow::Error {
    match err {
        DaemonError::Sync(e) => e.into(),
        DaemonError::Rest(e) => e.into(),
        DaemonError::Remote(e) => e.into(),
        DaemonError::Config(e) => e.into(),
        DaemonError::Local(message) => fail("local", message),
    }
}

/// Trust on first use: fetches and saves the server's certificate fingerprint.
pub(crate) async fn pin_now(dir: &Path, rest: &RestClient) -> anyhow::Result<QuicPin> {
    let pin = daemon::pin_now(dir, rest).await.map_err(daemon_error)?;
    warn(&format!(
        "pinning the server's certificate {} (first use)",
        pin.fingerprint
    ));
    Ok(pin)
}

pub(crate) async fn connect(
    session: &Session,
    pin: &QuicPin,
    device: &str,
    folder: &str,
) -> anyhow::Result<Remote> {
    daemon::connect(session, pin, device, folder)
        .await
        .map_err(daemon_error)
}

async fn once(syncer: &mut Daemon, json: bool, quiet: bool) -> anyhow::Result<()> {
    let mut last = PassSummary::default();
    for _ in 0..ONCE_PASSES_MAX {
        let this = syncer.pass().await.map_err(daemon_error)?;
        last = PassSummary {
            uploaded: last.uploaded + this.uploaded,
            downloaded: last.downloaded + this.downloaded,
            deleted_local: last.deleted_local + this.deleted_local,
            deleted_remote: last.deleted_remote + this.deleted_remote,
            blocks_up: last.blocks_up + this.blocks_up,
            bytes_up: last.bytes_up + this.bytes_up,
            blocks_down: last.blocks_down + this.blocks_down,
            bytes_down: last.bytes_down + this.bytes_down,
            conflicts: last.conflicts + this.conflicts,
            ..this
        };
        if last.in_sync {
            print_summary(&PassReport::from(&last), json, quiet);
            if last.conflicts > 0 {
                return Err(fail(
                    "conflicts_pending",
                    format!(
                        "in sync, with {} conflict(s): both versions are kept; see `cairn conflicts`",
                        last.conflicts
                    ),
                ));
            }
            return Ok(());
        }
    }
    print_summary(&PassReport::from(&last), json, quiet);
    Err(fail(
        "not_in_sync",
        format!(
            "the folder and the server still differ after {ONCE_PASSES_MAX} passes ({} paths could not be synced; see above)",
            last.problems
        ),
    ))
}

/// Bytes of feed lines the printer gathers before it writes them.
const PRINT_BATCH_BYTES: usize = 256 * 1024;

/// Feed lines on their way out: JSON lines for stdout, human lines for stderr.
#[derive(Default)]
struct Lines {
    out: String,
    err: String,
}

impl Lines {
    fn len(&self) -> usize {
        self.out.len() + self.err.len()
    }

    fn push(&mut self, event: &FeedEvent, json: bool, quiet: bool) {
        if let Some((to_stdout, line)) = event_line(event, json, quiet) {
            let stream = if to_stdout {
                &mut self.out
            } else {
                &mut self.err
            };
            stream.push_str(&line);
            stream.push('\n');
        }
    }

    fn write(&self) {
        use std::io::Write as _;
        // A closed stdout or stderr has nowhere better to be reported.
        if !self.out.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out
                .write_all(self.out.as_bytes())
                .and_then(|()| out.flush());
        }
        if !self.err.is_empty() {
            let _ = std::io::stderr().lock().write_all(self.err.as_bytes());
        }
    }
}

fn print_summary(s: &PassReport, json: bool, quiet: bool) {
    let mut lines = Lines::default();
    lines.push(&FeedEvent::Summary(s.clone()), json, quiet);
    lines.write();
}

/// What an event prints, and whether on stdout (else stderr), without the newline. `--quiet`
/// leaves out the per-file lines and the summary of human output: what remains is warnings,
/// conflicts and paths not synced.
fn event_line(event: &FeedEvent, json: bool, quiet: bool) -> Option<(bool, String)> {
    match event {
        FeedEvent::Phase { .. } | FeedEvent::Progress { .. } => return None,
        FeedEvent::File { .. } | FeedEvent::Summary(_) if quiet && !json => return None,
        FeedEvent::Warning { message } => {
            return Some((false, format!("cairn: warning: {}", one_line(message))));
        }
        _ => {}
    }
    if json {
        return serde_json::to_string(event).ok().map(|text| (true, text));
    }
    let line = match event {
        FeedEvent::Summary(s) => format!(
            "{} at revision {}: {} uploaded, {} downloaded, {} deleted here, {} deleted on the server, {} conflicts ({} sent, {} received)",
            if s.in_sync { "in sync" } else { "synced" },
            s.seq,
            s.uploaded,
            s.downloaded,
            s.deleted_local,
            s.deleted_remote,
            s.conflicts,
            human_bytes(s.bytes_up),
            human_bytes(s.bytes_down)
        ),
        FeedEvent::File { path, what } => format!("{what}: {path}"),
        FeedEvent::Conflict { path, copy, reason } => match copy {
            Some(copy) => format!(
                "conflict: {path} was changed here and on another device; your version is kept as '{copy}'"
            ),
            None if reason == "both_edited" => format!(
                "conflict: {path} was changed here and on another device; theirs is at the path, yours is in the version history (`cairn conflicts`)"
            ),
            None => format!(
                "conflict: {path} was edited on one side and deleted on the other; the edit was kept"
            ),
        },
        FeedEvent::Collision { paths } => format!(
            "warning: these names differ only in case or Unicode form and would collide on some systems: {}",
            paths.join(", ")
        ),
        FeedEvent::Problem { path, message } => format!("not synced: {path}: {message}"),
        FeedEvent::Missed { missed } => {
            format!("warning: {missed} events were not shown (output too slow)")
        }
        _ => return None,
    };
    Some((false, line))
}

fn small_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Problems `cairn sync status` prints per folder (`--json` has all the daemon kept).
const STATUS_PROBLEMS_SHOWN: usize = 10;

/// Runs `cairn sync status`: every folder this config dir's daemons sync.
///
/// # Errors
/// No config dir.
#[allow(clippy::print_stdout)]
pub(crate) fn status(json: bool) -> anyhow::Result<()> {
    let dir = config_dir()?;
    let daemons = small_runtime()?.block_on(control::running(&dir));
    if json {
        let list: Vec<&DaemonStatus> = daemons.iter().map(|(_, s)| s).collect();
        let value = serde_json::json!({
            "running": !list.is_empty(),
            "status": list.first(),
            "daemons": list,
        });
        println!("{value}");
        return Ok(());
    }
    if daemons.is_empty() {
        println!("not running; start it with `cairn sync start --folder DIR`");
    }
    for (_, s) in daemons {
        let activity = match (&s.phase, &s.progress) {
            (_, Some(p)) if p.total > 0 => format!(
                " ({} {} of {})",
                p.direction,
                human_bytes(p.done),
                human_bytes(p.total)
            ),
            (Some(phase), _) => format!(" ({phase})"),
            _ => String::new(),
        };
        println!(
            "syncing {} with {} (pid {}): {}{activity}{}, revision {}{}{}",
            s.folder,
            s.server,
            s.pid,
            s.state,
            s.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            s.seq,
            if s.conflicts > 0 {
                format!(", {} conflicts (see `cairn conflicts`)", s.conflicts)
            } else {
                String::new()
            },
            if s.watching {
                ""
            } else {
                ", not watching (timed scans)"
            }
        );
        if s.problem_count > 0 {
            println!(
                "  {} {} could not be synced (tried again when {} change):",
                s.problem_count,
                if s.problem_count == 1 {
                    "path"
                } else {
                    "paths"
                },
                if s.problem_count == 1 { "it" } else { "they" },
            );
            for problem in s.problems.iter().take(STATUS_PROBLEMS_SHOWN) {
                println!("    {}: {}", problem.path, problem.message);
            }
            let shown = s.problems.len().min(STATUS_PROBLEMS_SHOWN) as u64;
            if s.problem_count > shown {
                println!(
                    "    … and {} more (`cairn sync status --json` lists up to {})",
                    s.problem_count - shown,
                    cairn_client::engine::PROBLEMS_KEPT
                );
            }
        }
    }
    Ok(())
}

/// Runs `cairn sync stop`: asks every daemon of this config dir to stop, over its control
/// socket, and waits for them to exit.
///
/// # Errors
/// Nothing running; a daemon did not stop in 20 s.
#[allow(clippy::print_stdout)]
pub(crate) fn stop(json: bool) -> anyhow::Result<()> {
    let dir = config_dir()?;
    let runtime = small_runtime()?;
    let daemons = runtime.block_on(control::running(&dir));
    if daemons.is_empty() {
        return Err(fail(
            "not_running",
            "no sync is running for this config dir",
        ));
    }
    for (state_dir, _) in &daemons {
        runtime.block_on(control::ask(state_dir, "stop"));
    }
    for _ in 0..200 {
        if daemons.iter().all(|(_, s)| !alive(s.pid)) {
            if json {
                let pids: Vec<u32> = daemons.iter().map(|(_, s)| s.pid).collect();
                println!(
                    "{}",
                    serde_json::json!({"stopped": true, "pid": pids[0], "pids": pids})
                );
            } else {
                for (_, s) in &daemons {
                    println!("stopped the sync of {} (pid {})", s.folder, s.pid);
                }
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stuck: Vec<String> = daemons
        .iter()
        .filter(|(_, s)| alive(s.pid))
        .map(|(_, s)| s.pid.to_string())
        .collect();
    Err(fail(
        "stop",
        format!("pid {} did not stop within 20 s", stuck.join(", ")),
    ))
}

/// Whether the process runs (a zombie that has exited but not been reaped does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X'))
    })
}
